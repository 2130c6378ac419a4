//! Acceptance (issue 14): differential privacy of the release path with declared keys —
//! a team dashboard simulated over 200 weeks through the store, a neighbour audit of the
//! noisy threshold and values (and of what breaks it), numbers within their range, the
//! discrete Gaussian's δ and interval, and free-form keys' partition selection.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
fn periods_of(start: i64, end: i64) -> Vec<i64> {
    veil_policy::Budget {
        epsilon: 0.0,
        period: 30 * DAY,
    }
    .periods_of(start, end)
}

use veil_release::{noisy_groups, plan, release, Plan, Query, Rule, Suppressed};
use veil_store::{AggRow, Store};

#[test]
fn team_dashboard_over_200_weeks_shows_big_teams_hides_small_ones_and_covers_the_truth() {
    let first = ts(2021, 1, 4); // a Monday
    let mut e = Env::new(10.0, 30, "discrete_laplace", first);
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let weeks = 200;
    // team -> (shown, value within its interval)
    let mut shown: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut charged_periods: BTreeMap<i64, f64> = BTreeMap::new();
    let mut last_plan = None;
    for wk in 0..weeks {
        let w = first + wk * WEEK;
        let sealed = store_sealed(
            &e.store,
            &e.policy,
            "builds",
            w,
            &org_week(&mut rng),
            &mut rng,
        );
        let now = w + WEEK + 2 * DAY;
        let q = by_team(w, w + WEEK);
        if wk == weeks - 1 {
            last_plan = Some(plan(&e.store, &e.policy, &q, now).unwrap());
        }
        let r = release(&mut e.store, &e.policy, "dashboard", &q, now, &mut rng).unwrap();
        let doc = r.document();
        let periods = periods_of(w, w + WEEK);
        for p in &periods {
            *charged_periods.entry(*p).or_default() += 1.0;
        }
        assert_eq!(doc.windows.len(), 1);
        assert_eq!(doc.rule, Rule::DeclaredKeys);
        assert_eq!(doc.epsilon, 1.0, "one window: ε per window");
        assert_eq!(
            doc.delta, 0.0,
            "declared keys with Laplace noise are pure ε-DP"
        );
        assert_eq!(
            doc.charged,
            periods.len() as f64,
            "ε to every period the window's data lies in"
        );
        // Every declared key is listed: four teams and `unassigned`.
        assert_eq!(doc.groups.len(), 5, "{:?}", doc.groups);
        for g in &doc.groups {
            let team = &g.key["team"];
            if team == "tiny" {
                assert!(g.suppressed);
                assert_eq!(g.reason, Some(Suppressed::RosterBelowK));
                assert_eq!((g.value.is_none(), g.interval.is_none()), (true, true));
                assert_eq!(g.active, None, "no noisy count is drawn or shown");
                continue;
            }
            let s = shown.entry(team.clone()).or_default();
            if g.suppressed {
                assert_eq!(g.reason, Some(Suppressed::TooFewActive));
                assert!(g.value.is_none() && g.active.is_none());
                continue;
            }
            s.0 += 1;
            assert!(
                g.active.unwrap() >= 5,
                "shown iff the noisy count reaches k"
            );
            let exact = sealed
                .iter()
                .find(|a| a.grouping == "team" && &a.group == team)
                .map_or(0, |a| a.count) as f64;
            let v = f(&g.value).unwrap();
            let [lo, hi] = g.interval.clone().unwrap().map(|x| x.as_f64().unwrap());
            assert!(lo <= v && v <= hi && lo >= 0.0);
            if lo <= exact && exact <= hi {
                s.1 += 1;
            }
        }
    }
    let p = last_plan.unwrap();
    let rate = |t: &str| shown.get(t).map_or(0.0, |s| s.0 as f64 / weeks as f64);
    let (shown_total, covered): (u32, u32) =
        shown.values().fold((0, 0), |(a, b), s| (a + s.0, b + s.1));
    let coverage = covered as f64 / shown_total as f64;
    eprintln!(
        "dashboard over {weeks} weeks: shown small(8) {:.3} mid(10) {:.3} big(15) {:.3} unassigned(0) {:.3}; coverage {coverage:.3} of {shown_total}",
        rate("small"),
        rate("mid"),
        rate("big"),
        rate("unassigned")
    );
    assert!(
        !shown.contains_key("tiny"),
        "the 3-person team is never shown"
    );
    assert!(rate("mid") >= 0.95, "10-person team: {}", rate("mid"));
    assert!(rate("big") >= 0.99, "15-person team: {}", rate("big"));
    assert!(coverage >= 0.93, "95% intervals cover the truth {coverage}");
    // The plan's analytic show rate agrees with what happened (everyone active: n = roster).
    for (team, n) in [("small", 8), ("mid", 10), ("big", 15), ("unassigned", 0)] {
        let expected = p.shown_probability(n);
        let se = (expected * (1.0 - expected) / weeks as f64).sqrt();
        eprintln!(
            "  {team}: observed {:.3}, shown_probability({n}) {expected:.4}",
            rate(team)
        );
        assert!(
            (rate(team) - expected).abs() <= 4.0 * se + 1.0 / weeks as f64,
            "{team}: observed {} vs P(shown) {expected}",
            rate(team)
        );
    }
    // The ledger: ε = 1 for each window to each period it touches, never past the budget
    // (a 30-day period holds parts of at most 6 weeks).
    for (period, expected) in &charged_periods {
        let spent = e
            .store
            .spent(COLLECTION, *period, *period + 30 * DAY)
            .unwrap();
        assert!(
            (spent - expected).abs() < 1e-9,
            "{period}: {spent} vs {expected}"
        );
        assert!(spent <= 6.0);
    }
}

#[test]
fn the_roster_floor_reads_no_data_and_draws_no_noise() {
    // Same seed, data differing only in the 3-person team (none, all active, huge
    // counts): every group of the release is identical, so the tiny team's data cannot
    // show through it, not even through the other groups' noise.
    let w = ts(2021, 1, 4);
    let e = Env::new(10.0, 30, "discrete_laplace", w);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let base = org_week(&mut rng);
    e.seal("builds", w, &base, &mut rng);
    let p = plan(
        &e.store,
        &e.policy,
        &by_team(w, w + WEEK),
        w + WEEK + 2 * DAY,
    )
    .unwrap();
    let variants: Vec<Vec<AggRow>> = [0i64, 3, 1000]
        .iter()
        .map(|&builds| {
            let mut rows: Vec<_> = base.iter().filter(|r| r.group != "tiny").cloned().collect();
            if builds > 0 {
                rows.extend((0..3).map(|i| row("tiny", person(0, i), builds, 0)));
            }
            of_grouping(
                &sealed_rows(
                    &e.policy,
                    "builds",
                    w,
                    &rows,
                    bounds(&e.policy, "builds"),
                    &mut rng,
                ),
                "team",
            )
        })
        .collect();
    for seed in 0..50 {
        let outs: Vec<_> = variants
            .iter()
            .map(|rows| {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let out = noisy_groups(&e.policy, &p, &p.windows, rows, &mut rng);
                (out, rng.gen::<u64>())
            })
            .collect();
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
    }
}

/// The outcome of the `mid` group in one release, as an auditor who knows both neighbours
/// would bucket it: suppressed, or (noisy active count at most D′'s or above it) × (value
/// at most D′'s exact count, between, or at least D's) — the buckets in which the
/// likelihood ratio of the two neighbours is extreme.
fn mid_outcome(g: &veil_release::ReleaseGroup, n2: i64, x2: f64, x1: f64) -> usize {
    if g.suppressed {
        return 0;
    }
    let a = usize::from(g.active.unwrap() > n2);
    let v = f(&g.value).unwrap();
    let b = if v <= x2 {
        0
    } else if v >= x1 {
        2
    } else {
        1
    };
    1 + 3 * a + b
}

/// The empirical privacy loss of two outcome histograms over equally many runs: the
/// largest |ln(n_D(o) / n_D′(o))| over outcomes seen at least 200 times in all (rarer ones
/// cannot be estimated; +½ keeps an outcome one neighbour never produced finite but
/// large), with its standard error.
fn max_log_ratio(d: &[f64], d2: &[f64]) -> (f64, f64) {
    let (mut eps_hat, mut se) = (0.0f64, 0.0);
    for (&a, &b) in d.iter().zip(d2) {
        if a + b < 200.0 {
            continue;
        }
        let l = ((a + 0.5) / (b + 0.5)).ln().abs();
        if l > eps_hat {
            (eps_hat, se) = (l, (1.0 / (a + 0.5) + 1.0 / (b + 0.5)).sqrt());
        }
    }
    (eps_hat, se)
}

struct Audit {
    /// max over outcomes of |ln P̂_D(o)/P̂_D′(o)|, and its standard error.
    eps_hat: f64,
    se: f64,
    /// Σ_o max(0, P̂_D(o) − e^ε P̂_D′(o)), the larger of both directions.
    delta_hat: f64,
}

/// Runs `runs` seeded releases of each neighbour through `noisy_groups` and measures the
/// empirical privacy loss of the `mid` group's outcome.
fn audit(
    policy: &veil_policy::Policy,
    p: &Plan,
    d: &[AggRow],
    d2: &[AggRow],
    runs: usize,
    seed: u64,
) -> Audit {
    let exact = |rows: &[AggRow]| {
        rows.iter()
            .find(|a| a.group == "mid")
            .map_or((0, 0.0), |a| (a.contributors, a.count as f64))
    };
    let ((_, x1), (n2, x2)) = (exact(d), exact(d2));
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut counts = [[0f64; 7]; 2];
    for _ in 0..runs {
        for (i, rows) in [d, d2].iter().enumerate() {
            let (groups, _, _) = noisy_groups(policy, p, &p.windows, rows, &mut rng);
            let g = groups.iter().find(|g| g.key["team"] == "mid").unwrap();
            counts[i][mid_outcome(g, n2, x2, x1)] += 1.0;
        }
    }
    let (eps_hat, se) = max_log_ratio(&counts[0], &counts[1]);
    let eps = p.epsilon_per_window;
    let n = runs as f64;
    let one_way = |x: &[f64; 7], y: &[f64; 7]| -> f64 {
        (0..7)
            .map(|o| (x[o] / n - eps.exp() * y[o] / n).max(0.0))
            .sum()
    };
    Audit {
        eps_hat,
        se,
        delta_hat: one_way(&counts[0], &counts[1]).max(one_way(&counts[1], &counts[0])),
    }
}

#[test]
fn neighbour_audit_bounds_the_loss_by_the_documents_epsilon_and_catches_weakened_noise_or_bounding()
{
    let w = ts(2021, 1, 4);
    let e = Env::new(10.0, 30, "discrete_laplace", w);
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    // D′: small (8), mid with 9 people (4 builds each), big (15); D adds a target to mid
    // with 50 builds, so bounding caps it at l∞ = 10 and the value moves by the most one
    // person can move it.
    let mut base = Vec::new();
    for (t, (team, roster)) in TEAMS.iter().enumerate().skip(1) {
        let n = if *team == "mid" { roster - 1 } else { *roster };
        base.extend((0..n).map(|i| row(team, person(t, i), 4, 0)));
    }
    let mut with_target = base.clone();
    with_target.push(row("mid", person(2, 99), 50, 0));
    e.seal("builds", w, &with_target, &mut rng);
    let p = plan(
        &e.store,
        &e.policy,
        &by_team(w, w + WEEK),
        w + WEEK + 2 * DAY,
    )
    .unwrap();
    assert_eq!(
        (p.rule, p.delta, p.windows.len()),
        (Rule::DeclaredKeys, 0.0, 1)
    );
    assert_eq!(
        (p.epsilon, p.epsilon_count, p.epsilon_value),
        (1.0, 0.5, 0.5)
    );
    let seal = |rows: &[veil_store::seal::ContribRow], linf: u32, rng: &mut ChaCha20Rng| {
        let mut b = bounds(&e.policy, "builds");
        b.linf = linf;
        of_grouping(&sealed_rows(&e.policy, "builds", w, rows, b, rng), "team")
    };
    let (d, d2) = (seal(&with_target, 10, &mut rng), seal(&base, 10, &mut rng));

    // The mechanism as planned: the loss reaches the document's ε (the ledger is tight)
    // and never passes it; δ = 0.
    let ok = audit(&e.policy, &p, &d, &d2, 40_000, 7);
    eprintln!(
        "neighbour audit: ε̂ = {:.3} ± {:.3} (document ε = {}), δ̂ at ε = {:.4}",
        ok.eps_hat, ok.se, p.epsilon, ok.delta_hat
    );
    assert!(
        ok.eps_hat <= p.epsilon + 4.0 * ok.se,
        "empirical loss {} exceeds ε = {}",
        ok.eps_hat,
        p.epsilon
    );
    assert!(
        ok.eps_hat >= p.epsilon - 4.0 * ok.se,
        "the audit reaches the bound (it has the power to see a breach): {}",
        ok.eps_hat
    );
    assert!(ok.delta_hat <= 0.01, "δ̂ = {}", ok.delta_hat);

    // The noisy threshold without its noise: the shown/suppressed decision and `active`
    // become the exact count, and one person is seen outright.
    let mut exact_threshold = p.clone();
    exact_threshold.noise.cnt_t = 1;
    exact_threshold.noise.cnt_s = 1 << 40;
    let no_noise = audit(&e.policy, &exact_threshold, &d, &d2, 5_000, 7);
    // Contribution bounding skipped (l∞ = 10⁶ at seal) while the plan assumes l∞ = 10.
    let (u, u2) = (
        seal(&with_target, 1_000_000, &mut rng),
        seal(&base, 1_000_000, &mut rng),
    );
    let unbounded = audit(&e.policy, &p, &u, &u2, 10_000, 7);
    eprintln!(
        "  threshold without noise: ε̂ = {:.3}, δ̂ = {:.3}; no bounding: ε̂ = {:.3}, δ̂ = {:.3}",
        no_noise.eps_hat, no_noise.delta_hat, unbounded.eps_hat, unbounded.delta_hat
    );
    for (what, a) in [("exact threshold", &no_noise), ("no bounding", &unbounded)] {
        assert!(
            a.eps_hat > 2.0 * p.epsilon,
            "{what} went unnoticed: ε̂ = {}",
            a.eps_hat
        );
        assert!(a.delta_hat > 0.3, "{what}: δ̂ = {}", a.delta_hat);
    }
}

/// One simulated week of the example organization for the PR and build metrics: small
/// active teams (5 to the roster, web up to 15), skewed per `scenario`, and every fourth
/// week a large unassigned crowd so means get shown too.
fn example_week(
    rng: &mut ChaCha20Rng,
    scenario: u32,
    crowd: bool,
) -> (
    Vec<veil_store::seal::ContribRow>,
    Vec<veil_store::seal::ContribRow>,
    Vec<veil_store::seal::ContribRow>,
) {
    const BINS: [i64; 6] = [0, 60_000, 300_000, 900_000, 3_600_000, 86_400_000];
    let teams = [
        ("data", 5..=6),
        ("infra", 3..=3),
        ("payments", 5..=12),
        ("search", 5..=8),
        ("web", 5..=15),
    ];
    let (mut prs, mut builds, mut durations) = (Vec::new(), Vec::new(), Vec::new());
    let mut people: Vec<(&str, [u8; 16])> = Vec::new();
    for (t, (team, size)) in teams.iter().enumerate() {
        let n = rng.gen_range(size.clone());
        people.extend((0..n).map(|i| (*team, person(t, i))));
    }
    let crowd_size = if crowd {
        rng.gen_range(200..400)
    } else {
        rng.gen_range(0..=15)
    };
    people.extend((0..crowd_size).map(|i| ("unassigned", person(9, i))));
    for (i, (team, id)) in people.iter().enumerate() {
        // The first person of each run is the huge contributor in scenario 3.
        let huge = scenario == 3 && i == 0;
        let n_pr: i64 = if huge { 10_000 } else { rng.gen_range(1..=8) };
        let hours = |rng: &mut ChaCha20Rng| -> i64 {
            match scenario {
                0 => 0,
                1 => 7_200,
                3 if huge => 7_200,
                3 => 0,
                _ => rng.gen_range(0..=7_200),
            }
        };
        let total: i64 = (0..n_pr.min(50)).map(|_| hours(rng)).sum::<i64>() * n_pr / n_pr.min(50);
        prs.push(row(team, *id, n_pr, total));
        let n_builds: i64 = if huge { 50_000 } else { rng.gen_range(1..=30) };
        builds.push(row(team, *id, n_builds, 0));
        let ms = match scenario {
            0 => 0,
            1 => 86_400_000,
            3 if huge => 86_400_000,
            _ => rng.gen_range(0..=86_400_000),
        };
        // One bin per person (their builds all about as long): the row the door keeps.
        let bin = BINS.windows(2).position(|b| ms < b[1]).unwrap_or(4) as i32;
        durations.push(veil_store::seal::ContribRow {
            group: team.to_string(),
            contributor: *id,
            bin,
            n: n_builds,
            total: ms.saturating_mul(n_builds),
        });
    }
    (prs, builds, durations)
}

#[test]
fn released_means_quantiles_and_intervals_lie_within_the_fields_range() {
    let policy = example_policy();
    let w = ts(2026, 3, 2); // a Monday
    let dir = tempfile::tempdir().unwrap();
    let store = veil_store::SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        w,
        "test",
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (prs, builds, durations) = example_week(&mut rng, 2, true);
    let metrics = [
        ("pr_cycle_time", &prs),
        ("builds", &builds),
        ("build_duration", &durations),
    ];
    let plans: Vec<Plan> = metrics
        .iter()
        .map(|(m, rows)| {
            store_sealed(&store, &policy, m, w, rows, &mut rng);
            let q = Query {
                metric: m.to_string(),
                by: Some(vec!["team".into()]),
                from: Some(date(w)),
                to: Some(date(w + WEEK)),
            };
            plan(&store, &policy, &q, w + WEEK + 2 * DAY).unwrap()
        })
        .collect();
    assert_eq!(plans[0].unit.as_deref(), Some("h"));
    assert_eq!(plans[2].unit.as_deref(), Some("ms"));
    let (mut means, mut hists, mut counts, mut too_few) = (0, 0, 0, 0);
    for i in 0..1000u32 {
        let data = example_week(&mut rng, i % 4, i % 4 == 2);
        for (p, rows) in plans.iter().zip([&data.0, &data.1, &data.2]) {
            let sealed = sealed_rows(
                &policy,
                &p.metric,
                w,
                rows,
                bounds(&policy, &p.metric),
                &mut rng,
            );
            let (groups, _, _) = noisy_groups(
                &policy,
                p,
                &p.windows,
                &of_grouping(&sealed, "team"),
                &mut rng,
            );
            assert_eq!(groups.len(), 6, "five teams and unassigned");
            for g in &groups {
                if g.key["team"] == "infra" {
                    assert_eq!(g.reason, Some(Suppressed::RosterBelowK));
                }
                if g.reason == Some(Suppressed::TooFewValues) {
                    too_few += 1;
                }
                if g.suppressed {
                    assert!(g.value.is_none() && g.interval.is_none() && g.quantiles.is_none());
                    continue;
                }
                assert!(g.active.unwrap() >= 5);
                let v = f(&g.value).unwrap();
                match p.metric.as_str() {
                    "pr_cycle_time" => {
                        means += 1;
                        let [lo, hi] = g.interval.clone().unwrap().map(|x| x.as_f64().unwrap());
                        assert!(
                            0.0 <= lo && lo <= v && v <= hi && hi <= 720.0,
                            "mean {v} in [{lo}, {hi}] outside [0, 720]: {g:?}"
                        );
                    }
                    "builds" => {
                        counts += 1;
                        let [lo, hi] = g.interval.clone().unwrap().map(|x| x.as_f64().unwrap());
                        assert!(0.0 <= lo && lo <= v && v <= hi, "count {v} [{lo}, {hi}]");
                    }
                    _ => {
                        hists += 1;
                        let bins = g.bins.as_ref().unwrap();
                        assert_eq!(bins.len(), 5);
                        assert!(bins.iter().all(|b| b.count >= 0), "{bins:?}");
                        let q = g.quantiles.as_ref().unwrap();
                        let qs: Vec<f64> = ["p50", "p90", "p95"]
                            .map(|k| q[k].as_f64().unwrap())
                            .to_vec();
                        assert_eq!(qs[0], v, "the value is the median");
                        assert!(
                            qs.iter().all(|x| (0.0..=86_400_000.0).contains(x))
                                && qs[0] <= qs[1]
                                && qs[1] <= qs[2],
                            "quantiles {qs:?}"
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "1000 releases × 3 metrics: {means} means, {hists} histograms, {counts} counts shown; {too_few} suppressed as too_few_values"
    );
    assert!(means >= 200 && hists >= 1000 && counts >= 1000 && too_few > 0);
}

#[test]
fn a_discrete_gaussian_metric_reports_its_delta_and_an_interval_that_covers() {
    let w = ts(2021, 1, 4);
    let mut e = Env::new(10.0, 30, "discrete_gaussian", w);
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    // Everyone at l∞ = 10; a crowd of 100 unassigned people keeps clamping at 0 away.
    let mut rows = org_week(&mut rng);
    rows.extend((0..100).map(|i| row("unassigned", person(9, i), 10, 0)));
    e.seal("builds", w, &rows, &mut rng);
    let (q, now) = (by_team(w, w + WEEK), w + WEEK + 2 * DAY);
    let p = plan(&e.store, &e.policy, &q, now).unwrap();
    // zCDP: ρ from (ε_value, δ) with ε = ρ + 2√(ρ ln 1/δ); σ = l∞·√l0 / √(2ρ).
    let l = (1.0f64 / 1e-7).ln();
    let rho = ((l + 0.5).sqrt() - l.sqrt()).powi(2);
    let sigma = (10.0f64 * 10.0 / (2.0 * rho)).sqrt();
    let hw = (1.96 * sigma).ceil();
    assert_eq!(p.mechanism, "discrete_gaussian");
    assert!(
        (p.value_scale - sigma).abs() < 1e-6 * sigma,
        "{} vs {sigma}",
        p.value_scale
    );
    assert_eq!(p.interval_half_width, hw);
    let r = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    let doc = r.document();
    assert_eq!(doc.mechanism, "discrete_gaussian");
    assert_eq!(
        doc.delta, 1e-7,
        "Gaussian values spend δ (declared keys spend none)"
    );
    assert_eq!(doc.interval_half_width, hw);
    let crowd = group(doc, "team", "unassigned", &doc.windows[0]);
    let v = f(&crowd.value).unwrap();
    assert_eq!(
        crowd.interval.clone().unwrap().map(|x| x.as_f64().unwrap()),
        [(v - hw).max(0.0), v + hw]
    );
    // The noise has the σ the document implies and its interval covers 95%.
    let sealed = of_grouping(
        &sealed_rows(
            &e.policy,
            "builds",
            w,
            &rows,
            bounds(&e.policy, "builds"),
            &mut rng,
        ),
        "team",
    );
    let exact = sealed
        .iter()
        .find(|a| a.group == "unassigned")
        .unwrap()
        .count as f64;
    assert_eq!(exact, 1000.0);
    let runs = 3000;
    let (mut sq, mut covered) = (0.0, 0);
    for _ in 0..runs {
        let (groups, _, _) = noisy_groups(&e.policy, &p, &p.windows, &sealed, &mut rng);
        let g = groups
            .iter()
            .find(|g| g.key["team"] == "unassigned")
            .unwrap();
        let v = f(&g.value).unwrap();
        sq += (v - exact).powi(2);
        let [lo, hi] = g.interval.clone().unwrap().map(|x| x.as_f64().unwrap());
        covered += usize::from(lo <= exact && exact <= hi);
    }
    let sd = (sq / runs as f64).sqrt();
    let coverage = covered as f64 / runs as f64;
    eprintln!("discrete Gaussian: σ {sigma:.1}, observed sd {sd:.1}, coverage {coverage:.3}");
    assert!((sd / sigma - 1.0).abs() < 0.06, "sd {sd} vs σ {sigma}");
    assert!((0.93..=0.97).contains(&coverage), "coverage {coverage}");
}

#[test]
fn free_form_keys_pass_selection_and_groups_below_k_are_not_listed() {
    let w = ts(2021, 1, 4);
    let mut e = Env::new(10.0, 30, "discrete_laplace", w);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut rows = Vec::new();
    for (branch, n) in [
        ("main", 80u32),
        ("release", 5),
        ("dev", 3),
        ("feature-x", 1),
    ] {
        rows.extend((0..n).map(|i| row(branch, person(branch.len(), i), 3, 0)));
    }
    e.seal("builds_by_branch", w, &rows, &mut rng);
    let q = Query {
        metric: "builds_by_branch".into(),
        by: None,
        from: Some(date(w)),
        to: Some(date(w + WEEK)),
    };
    let now = w + WEEK + 2 * DAY;
    let p = plan(&e.store, &e.policy, &q, now).unwrap();
    assert_eq!(p.rule, Rule::FreeFormKeys);
    assert_eq!(p.delta, 1e-7, "selection spends δ");
    // T = l∞ + ⌈b·ln(1/((1 + e^(−1/b))·δ))⌉ with b = l0/ε_count = 2 and one partition.
    let b = 2.0f64;
    let t = 1 + (b * (1.0 / ((1.0 + (-1.0 / b).exp()) * 1e-7)).ln()).ceil() as i64;
    assert_eq!(p.selection_threshold, Some(t));
    let r = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    let doc = r.document();
    assert_eq!((doc.rule, doc.delta), (Rule::FreeFormKeys, 1e-7));
    assert!(doc.unlisted_groups_suppressed);
    let listed: Vec<&str> = doc
        .groups
        .iter()
        .map(|g| g.key["branch"].as_str())
        .collect();
    assert_eq!(listed, ["main"], "only the group far past the threshold");
    assert!(!doc.groups[0].suppressed && doc.groups[0].active.unwrap() >= 5);

    // Many releases: under k never listed; at k about as often as δ allows; near the
    // threshold as often as the plan says.
    let k = 5i64;
    let mid = k - 1 + t;
    let sizes = [1, k - 1, k, mid - 3, mid, mid + 3];
    let agg: Vec<AggRow> = sizes
        .iter()
        .map(|&n| AggRow {
            metric: "builds_by_branch".into(),
            grouping: "branch".into(),
            window_start: w,
            group: format!("n{n}"),
            contributors: n,
            count: 3 * n,
            sum: 0,
            bins: vec![],
        })
        .collect();
    let runs = 20_000;
    let mut listed: BTreeMap<i64, u32> = BTreeMap::new();
    for _ in 0..runs {
        let (groups, _, _) = noisy_groups(&e.policy, &p, &p.windows, &agg, &mut rng);
        for g in groups {
            assert!(!g.suppressed, "free-form groups are listed or left out");
            *listed
                .entry(g.key["branch"][1..].parse().unwrap())
                .or_default() += 1;
        }
    }
    let rate = |n: i64| *listed.get(&n).unwrap_or(&0) as f64 / runs as f64;
    eprintln!("free-form selection (T = {t}): listed rates {listed:?} of {runs}");
    assert_eq!(rate(1) + rate(k - 1), 0.0, "under k: never");
    assert!(rate(k) * runs as f64 <= 2.0, "n = k: {}", rate(k));
    for n in [mid - 3, mid, mid + 3] {
        let expected = p.shown_probability(n);
        let se = (expected * (1.0 - expected) / runs as f64).sqrt();
        assert!(
            (rate(n) - expected).abs() <= 4.0 * se,
            "n = {n}: {} vs {expected}",
            rate(n)
        );
    }
}

#[test]
fn a_value_that_is_the_active_count_gets_the_whole_epsilon_and_loses_no_more() {
    // `active_users` (distinct users per region and day, l0 = 1): the released value is
    // the noisy active count itself, so that one count carries all of ε.
    let policy = example_policy();
    let day = ts(2026, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let store = veil_store::SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        day,
        "test",
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let people = |n: u32| -> Vec<veil_store::seal::ContribRow> {
        (0..n).map(|i| row("eu", person(0, i), 3, 0)).collect()
    };
    store_sealed(&store, &policy, "active_users", day, &people(10), &mut rng);
    let q = Query {
        metric: "active_users".into(),
        by: None,
        from: Some(date(day)),
        to: Some(date(day + DAY)),
    };
    let p = plan(&store, &policy, &q, day + 3 * DAY).unwrap();
    assert_eq!((p.rule, p.delta), (Rule::DeclaredKeys, 0.0));
    assert_eq!((p.epsilon_count, p.epsilon_value), (1.0, 0.0));
    assert_eq!(p.count_scale, 1.0, "b = l0/ε");
    let seal = |n: u32, rng: &mut ChaCha20Rng| {
        of_grouping(
            &sealed_rows(
                &policy,
                "active_users",
                day,
                &people(n),
                bounds(&policy, "active_users"),
                rng,
            ),
            "region",
        )
    };
    let (d, d2) = (seal(10, &mut rng), seal(9, &mut rng));
    // Outcome of `eu`: suppressed, or the released value at most 9 or at least 10 (the
    // buckets where the two neighbours' likelihood ratio is e^±ε).
    let runs = 20_000;
    let mut counts = [[0f64; 3]; 2];
    for _ in 0..runs {
        for (i, rows) in [&d, &d2].iter().enumerate() {
            let (groups, _, _) = noisy_groups(&policy, &p, &p.windows, rows, &mut rng);
            let g = groups.iter().find(|g| g.key["region"] == "eu").unwrap();
            let o = if g.suppressed {
                0
            } else {
                let v = f(&g.value).unwrap();
                assert_eq!(Some(v as i64), g.active, "the value is the active count");
                if v <= 9.0 {
                    1
                } else {
                    2
                }
            };
            counts[i][o] += 1.0;
        }
    }
    let (eps_hat, se) = max_log_ratio(&counts[0], &counts[1]);
    eprintln!(
        "active count as value: ε̂ = {eps_hat:.3} ± {se:.3} (ε = {})",
        p.epsilon
    );
    assert!(eps_hat <= p.epsilon + 4.0 * se && eps_hat >= p.epsilon - 4.0 * se);
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// The policy and the two plans (declared `builds`, free-form `builds_by_branch`).
    fn fixture() -> &'static (veil_policy::Policy, Plan, Plan) {
        static F: OnceLock<(veil_policy::Policy, Plan, Plan)> = OnceLock::new();
        F.get_or_init(|| {
            let w = ts(2021, 1, 4);
            let e = Env::new(10.0, 30, "discrete_laplace", w);
            let mut rng = ChaCha20Rng::seed_from_u64(0);
            let plans: Vec<Plan> = [("builds", "tiny"), ("builds_by_branch", "main")]
                .iter()
                .map(|(m, g)| {
                    e.seal(m, w, &[row(g, person(0, 0), 1, 0)], &mut rng);
                    let q = Query {
                        metric: m.to_string(),
                        by: None,
                        from: Some(date(w)),
                        to: Some(date(w + WEEK)),
                    };
                    plan(&e.store, &e.policy, &q, w + WEEK + 2 * DAY).unwrap()
                })
                .collect();
            (e.policy.clone(), plans[0].clone(), plans[1].clone())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        /// Declared keys: every key listed, the small roster always hidden, a shown group
        /// always with a noisy count ≥ k and a value. Free-form keys: no listed group has
        /// fewer than k people.
        #[test]
        fn what_is_shown_follows_the_rule(
            sizes in proptest::collection::vec(0u32..60, 5),
            builds in 1i64..40,
            seed in any::<u64>(),
        ) {
            let (policy, declared, free) = fixture();
            let w = declared.windows[0];
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let names = ["tiny", "small", "mid", "big", "unassigned"];
            let mut rows = Vec::new();
            for (t, (&team, &n)) in names.iter().zip(&sizes).enumerate() {
                rows.extend((0..n).map(|i| row(team, person(t, i), builds, 0)));
            }
            for (p, dim) in [(declared, "team"), (free, "branch")] {
                let sealed = of_grouping(
                    &sealed_rows(policy, &p.metric, w, &rows, bounds(policy, &p.metric), &mut rng),
                    dim,
                );
                let (groups, shown, hidden) = noisy_groups(policy, p, &p.windows, &sealed, &mut rng);
                prop_assert_eq!(shown + hidden, if dim == "team" { 5 } else { sealed.len() });
                if dim == "team" {
                    prop_assert_eq!(groups.len(), 5);
                }
                for g in &groups {
                    let n = sealed.iter().find(|a| a.group == g.key[dim]).map_or(0, |a| a.contributors);
                    if g.key[dim] == "tiny" && dim == "team" {
                        prop_assert_eq!(g.reason, Some(Suppressed::RosterBelowK));
                    }
                    if g.suppressed {
                        prop_assert!(g.value.is_none() && g.active.is_none());
                    } else {
                        prop_assert!(g.active.unwrap() >= 5 && g.value.is_some() && g.interval.is_some());
                        if dim == "branch" {
                            prop_assert!(n >= 5, "a free-form group of {} was listed", n);
                        }
                    }
                }
            }
        }
    }
}
