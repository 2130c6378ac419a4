//! Acceptance: differential privacy of the whole release path — a neighbour audit,
//! selection leakage, a differencing attack to budget exhaustion, and averaging.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use veil_pipeline::window;
use veil_policy::{Policy, Window};
use veil_release::{noisy_groups, plan, public_domain, release, Plan, Query, ReleaseError};
use veil_store::seal::{aggregate, Bounds, ContribRow};
use veil_store::{AggRow, SqliteStore, Store};

const POLICY: &str = include_str!("../../../examples/policy.yaml");

struct Env {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    policy: Policy,
    now: i64,
    week: i64,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    let store = SqliteStore::init(dir.path(), now, "test").unwrap();
    let policy = veil_policy::load_str(POLICY, "policy.yaml", chrono::Utc::now().date_naive())
        .unwrap()
        .0;
    let week = window::start(Window::Week, now - 8 * 86_400);
    for m in ["builds", "build_outcomes"] {
        store
            .connection()
            .execute(
                "INSERT INTO seal_state (metric, sealed_before) VALUES (?1, ?2)",
                rusqlite::params![m, week + 7 * 86_400],
            )
            .unwrap();
    }
    Env {
        _dir: dir,
        store,
        policy,
        now,
        week,
    }
}

/// Writes sealed `team` aggregates for `people` as `veil seal` would.
fn insert_sealed(e: &Env, people: &[(&str, u8, i64)], rng: &mut ChaCha20Rng) {
    for g in seal(&rows(people), e.week, 25, rng) {
        e.store
            .connection()
            .execute(
                "INSERT INTO aggregates (metric, grouping, window_start, grp, contributors, n, total, bins, sealed_at) VALUES ('builds', 'team', ?1, ?2, ?3, ?4, 0, '[]', 0)",
                rusqlite::params![e.week, g.group, g.contributors, g.count],
            )
            .unwrap();
    }
}

fn date(t: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(t, 0).unwrap().date_naive()
}

fn builds_query(e: &Env) -> Query {
    Query {
        metric: "builds".into(),
        by: Some(vec!["team".into()]),
        from: Some(date(e.week)),
        to: Some(date(e.week + 7 * 86_400)),
    }
}

/// Per-contributor rows for one week: `(team, person id, builds)`.
fn rows(people: &[(&str, u8, i64)]) -> Vec<ContribRow> {
    people
        .iter()
        .map(|&(team, id, n)| ContribRow {
            group: team.into(),
            contributor: [id; 16],
            bin: -1,
            n,
            total: 0,
        })
        .collect()
}

/// Seals rows the way the store does (bounding), as aggregate rows for grouping `team`.
fn seal(rows: &[ContribRow], week: i64, linf: u32, rng: &mut ChaCha20Rng) -> Vec<AggRow> {
    aggregate(
        rows,
        &[0],
        Bounds {
            l0: 1,
            linf,
            nbins: 0,
        },
        rng,
    )
    .into_iter()
    .map(|g| AggRow {
        metric: "builds".into(),
        grouping: "team".into(),
        window_start: week,
        group: g.group,
        contributors: g.contributors,
        count: g.count,
        sum: g.sum,
        bins: g.bins,
    })
    .collect()
}

/// Outcome of the `web` group in one release: "S" when suppressed, else a value bucket.
fn outcome(policy: &Policy, p: &Plan, aggs: &[AggRow], rng: &mut ChaCha20Rng) -> String {
    let domain = public_domain(policy, p);
    let (groups, _, _) = noisy_groups(policy, p, aggs, domain.as_deref(), rng);
    let g = groups.iter().find(|g| g.key["team"] == "web").unwrap();
    match &g.value {
        None => "S".into(),
        Some(v) => format!("{}", (v.as_f64().unwrap() / 25.0).floor()),
    }
}

/// δ̂ = Σ_o max(0, P̂_D(o) − e^ε·P̂_D′(o)) over `runs` seeded releases of each dataset.
fn empirical_delta(
    policy: &Policy,
    p: &Plan,
    d: &[AggRow],
    d2: &[AggRow],
    eps: f64,
    runs: usize,
    seed: u64,
) -> f64 {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pd: HashMap<String, f64> = HashMap::new();
    let mut pd2: HashMap<String, f64> = HashMap::new();
    for _ in 0..runs {
        *pd.entry(outcome(policy, p, d, &mut rng)).or_default() += 1.0 / runs as f64;
        *pd2.entry(outcome(policy, p, d2, &mut rng)).or_default() += 1.0 / runs as f64;
    }
    pd.iter()
        .map(|(o, &a)| (a - eps.exp() * pd2.get(o).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

fn neighbours(target_builds: i64) -> (Vec<ContribRow>, Vec<ContribRow>) {
    // web: 35 people with 10 builds each, plus the target; n sits near the selection
    // threshold so both selection and value noise are exercised.
    let mut d: Vec<(&str, u8, i64)> = (0..35).map(|i| ("web", i as u8, 10)).collect();
    d.extend((100..140).map(|i| ("payments", i as u8, 8)));
    let d2 = rows(&d);
    d.push(("web", 250, target_builds));
    (rows(&d), d2)
}

#[test]
fn neighbour_audit_bounds_the_empirical_delta_and_catches_weakened_noise_or_bounding() {
    let e = env();
    let p = plan(&e.store, &e.policy, "auditor", &builds_query(&e), e.now).unwrap();
    assert_eq!(p.windows.len(), 1);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (d, d2) = neighbours(60); // above l∞ = 25: bounding must cap it
    let (a, a2) = (
        seal(&d, e.week, 25, &mut rng),
        seal(&d2, e.week, 25, &mut rng),
    );
    let runs = 40_000;
    // δ̂ is biased upward by sampling error: Σ over ~25 outcome buckets of the positive part
    // of two estimates' noise. Measured on D against an independent sample of D itself.
    let slack = {
        let self_delta = empirical_delta(&e.policy, &p, &a, &a, 0.0, runs, 8);
        eprintln!("sampling error of δ̂ (D against D): {self_delta:.4}");
        (2.0 * self_delta).max(0.005)
    };
    let delta_hat = empirical_delta(&e.policy, &p, &a, &a2, p.epsilon, runs, 7);
    assert!(
        delta_hat <= p.delta + slack,
        "δ̂ = {delta_hat} exceeds δ = {} + {slack}",
        p.delta
    );

    // Halving the noise (both selection and values) must make the same audit fail.
    let mut half = p.clone();
    half.noise.val_t /= 2;
    half.noise.sel_t /= 2;
    half.noise.half_width /= 2;
    let weak = empirical_delta(&e.policy, &half, &a, &a2, p.epsilon, runs, 7);
    assert!(
        weak > p.delta + 2.0 * slack,
        "halved noise went unnoticed: δ̂ = {weak}"
    );

    // Skipping contribution bounding (l∞ = ∞ at seal time) must make it fail too.
    let (u, u2) = (
        seal(&d, e.week, 1_000_000, &mut rng),
        seal(&d2, e.week, 1_000_000, &mut rng),
    );
    let unbounded = empirical_delta(&e.policy, &p, &u, &u2, p.epsilon, runs, 7);
    assert!(
        unbounded > p.delta + 2.0 * slack,
        "unbounded contributions went unnoticed: δ̂ = {unbounded}"
    );
    eprintln!("δ̂: correct {delta_hat:.4}, halved noise {weak:.4}, no bounding {unbounded:.4}");
}

#[test]
fn selection_leaks_no_more_than_epsilon_and_delta() {
    let e = env();
    let p = plan(&e.store, &e.policy, "auditor", &builds_query(&e), e.now).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let released = |n: usize, runs: usize, rng: &mut ChaCha20Rng| -> f64 {
        let people: Vec<(&str, u8, i64)> = (0..n).map(|i| ("web", i as u8, 1)).collect();
        let aggs = seal(&rows(&people), e.week, 25, rng);
        (0..runs)
            .filter(|_| outcome(&e.policy, &p, &aggs, rng) != "S")
            .count() as f64
            / runs as f64
    };
    // A group held by one person is never released (k pre-threshold), nor one of k or k−1:
    // the smallest releasable group is k − 1 + T, and P(release | n = k) = P(Z ≥ T − 1) ≤ δp.
    let k = p.min_group_size as usize;
    for n in [1, k - 1] {
        assert_eq!(
            released(n, 20_000, &mut rng),
            0.0,
            "n = {n} is below k: never released"
        );
    }
    let b = p.selection_scale;
    let q = (-1.0 / b).exp();
    let p_k = q.powi((p.selection_threshold - 1) as i32) / (1.0 + q);
    assert!(
        p_k <= p.delta,
        "analytic P(release | k members) = {p_k} exceeds δ"
    );
    // Empirically: at most what δ allows plus Poisson sampling error (≥ 3 hits in 20,000
    // draws would have probability < 1e-9 at rate δ).
    let hits = released(k, 20_000, &mut rng) * 20_000.0;
    assert!(hits <= 2.0, "n = k released {hits} times in 20,000");
    // Near the threshold, one more member changes the release probability by at most e^ε_sel.
    let n_mid = k - 1 + p.selection_threshold as usize;
    let runs = 40_000;
    let (hi, lo) = (
        released(n_mid, runs, &mut rng),
        released(n_mid - 1, runs, &mut rng),
    );
    let se = (hi * (1.0 - hi) / runs as f64).sqrt() + (lo * (1.0 - lo) / runs as f64).sqrt();
    assert!(
        hi > 0.2 && lo > 0.1,
        "mid-threshold groups are sometimes released: {hi} {lo}"
    );
    assert!(
        hi <= p.epsilon_selection.exp() * lo + p.delta + 4.0 * se,
        "P(n) = {hi}, P(n−1) = {lo}"
    );
    assert!((1.0 - lo) <= p.epsilon_selection.exp() * (1.0 - hi) + p.delta + 4.0 * se);
}

#[test]
fn differencing_attack_learns_no_more_than_the_noise_allows_and_stops_at_the_budget() {
    // A team of 6 contains the target (25 builds, at l∞); `web` is large and released.
    let trials = 30;
    let mut errors = Vec::new();
    for trial in 0..trials {
        let mut e = env();
        let mut rng = ChaCha20Rng::seed_from_u64(1000 + trial);
        let mut people: Vec<(&str, u8, i64)> = (0..40).map(|i| ("web", i as u8, 10)).collect();
        people.extend((100..105).map(|i| ("data", i as u8, 5)));
        people.push(("data", 200, 25));
        // Seal through the store's own tables, as `veil seal` would have written them.
        for g in seal(&rows(&people), e.week, 25, &mut rng) {
            for grouping in ["team", ""] {
                let grp = if grouping.is_empty() {
                    String::new()
                } else {
                    g.group.clone()
                };
                e.store
                    .connection()
                    .execute(
                        "INSERT INTO aggregates (metric, grouping, window_start, grp, contributors, n, total, bins, sealed_at)
                         VALUES ('builds', ?1, ?2, ?3, ?4, ?5, 0, '[]', 0)
                         ON CONFLICT (metric, grouping, window_start, grp) DO UPDATE SET contributors = contributors + excluded.contributors, n = n + excluded.n",
                        rusqlite::params![grouping, e.week, grp, g.contributors, g.count],
                    )
                    .unwrap();
            }
        }
        // The attacker asks every distinct query the API allows (groupings × ranges) until refused.
        let mut estimates = Vec::new();
        let mut answered = 0;
        let mut refusal = None;
        'attack: for back in 0..20i64 {
            let from = Some(date(e.week - back * 7 * 86_400));
            let to = Some(date(e.week + 7 * 86_400));
            let mut pair = (None, None);
            for by in [vec!["team".to_string()], vec![String::new()]] {
                let q = Query {
                    metric: "builds".into(),
                    by: Some(by.clone()),
                    from,
                    to,
                };
                match release(&mut e.store, &e.policy, "attacker", &q, e.now, &mut rng) {
                    Ok(r) => {
                        assert!(!r.cached());
                        answered += 1;
                        let doc: serde_json::Value =
                            serde_json::from_str(&r.record().document).unwrap();
                        let this_week = doc["groups"].as_array().unwrap().iter().filter(|g| {
                            g["window"]
                                == doc["windows"].as_array().unwrap().last().unwrap().clone()
                        });
                        for g in this_week {
                            if g["key"]["team"] == "data" {
                                assert_eq!(
                                    g["suppressed"], true,
                                    "the 6-person team is never released"
                                );
                            }
                            if by[0].is_empty() && g["suppressed"] == false {
                                pair.1 = g["value"].as_f64();
                            } else if g["key"]["team"] == "web" && g["suppressed"] == false {
                                pair.0 = g["value"].as_f64();
                            }
                        }
                    }
                    Err(err @ ReleaseError::BudgetExhausted { .. }) => {
                        refusal = Some(err.to_string());
                        break 'attack;
                    }
                    Err(err) => panic!("{err}"),
                }
            }
            if let (Some(web), Some(total)) = pair {
                estimates.push(total - web); // data team = total − web
            }
        }
        // The refusal comes exactly when the ledger says: ε = 1 per release, budget 10.
        assert_eq!(answered, 10, "trial {trial}");
        let spent = e
            .store
            .spent(
                "attacker",
                "ci.build_finished",
                e.now - e.now.rem_euclid(30 * 86_400),
            )
            .unwrap();
        assert!((spent - 10.0).abs() < 1e-9, "ledger {spent}");
        let msg = refusal.expect("refused");
        assert!(msg.contains("0 is left until"), "{msg}");
        if !estimates.is_empty() {
            let est = estimates.iter().sum::<f64>() / estimates.len() as f64;
            errors.push((est - 50.0, estimates.len())); // truth: 5·5 + 25
        }
    }
    // Each estimate is the difference of two values with Laplace noise of scale b = l∞/ε_val = 50:
    // variance 2·(2b²) per pair, divided by the pairs averaged. The attacker does no better.
    let b: f64 = 50.0;
    let predicted: f64 = errors
        .iter()
        .map(|(_, n)| 4.0 * b * b / *n as f64)
        .sum::<f64>()
        / errors.len() as f64;
    let observed: f64 = errors.iter().map(|(x, _)| x * x).sum::<f64>() / errors.len() as f64;
    assert!(errors.len() >= trials as usize / 2);
    assert!(
        observed >= 0.5 * predicted,
        "attacker's MSE {observed} is below the noise's {predicted}"
    );
    assert!(
        observed.sqrt() > 25.0,
        "the error ({:.1}) exceeds the target's whole contribution (25)",
        observed.sqrt()
    );
}

#[test]
fn the_same_query_a_thousand_times_is_one_answer_and_one_charge() {
    let mut e = env();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let people: Vec<(&str, u8, i64)> = (0..60).map(|i| ("web", i as u8, 10)).collect();
    insert_sealed(&e, &people, &mut rng);
    let q = builds_query(&e);
    let first = release(&mut e.store, &e.policy, "analyst", &q, e.now, &mut rng).unwrap();
    assert!(!first.cached());
    // Equivalent forms share the key: grouping order and a from date inside the same week.
    let q2 = Query {
        by: Some(vec!["team".into(), "team".into()]),
        from: Some(date(e.week + 86_400)),
        ..q.clone()
    };
    for i in 0..1000 {
        let r = release(
            &mut e.store,
            &e.policy,
            "analyst",
            if i % 2 == 0 { &q } else { &q2 },
            e.now,
            &mut rng,
        )
        .unwrap();
        assert!(r.cached());
        assert_eq!(r.record().document, first.record().document);
    }
    assert_eq!(e.store.releases().unwrap().len(), 1);
    let spent = e
        .store
        .spent(
            "analyst",
            "ci.build_finished",
            e.now - e.now.rem_euclid(30 * 86_400),
        )
        .unwrap();
    assert!((spent - 1.0).abs() < 1e-9, "one charge: {spent}");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// No released group ever has fewer than k distinct contributors.
        #[test]
        fn no_group_below_k_is_released(sizes in proptest::collection::vec(0usize..60, 5), seed in any::<u64>()) {
            let e = env();
            let p = plan(&e.store, &e.policy, "prop", &builds_query(&e), e.now).unwrap();
            let teams = ["payments", "web", "search", "data", "infra"];
            let mut people = Vec::new();
            let mut id = 0u8;
            for (t, &n) in teams.iter().zip(&sizes) {
                for _ in 0..n { people.push((*t, id, 3)); id = id.wrapping_add(1); }
            }
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let aggs = seal(&rows(&people), e.week, 25, &mut rng);
            let domain = public_domain(&e.policy, &p);
            let (groups, _, _) = noisy_groups(&e.policy, &p, &aggs, domain.as_deref(), &mut rng);
            for g in groups {
                let n = aggs.iter().find(|a| a.group == g.key["team"]).map(|a| a.contributors).unwrap_or(0);
                if !g.suppressed { prop_assert!(n >= p.min_group_size as i64); prop_assert!(g.value.is_some()); }
                else { prop_assert!(g.value.is_none()); }
            }
        }
    }
}

#[test]
fn two_concurrent_releases_cannot_both_spend_the_last_of_a_budget() {
    let mut e = env();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let people: Vec<(&str, u8, i64)> = (0..60).map(|i| ("web", i as u8, 10)).collect();
    insert_sealed(&e, &people, &mut rng);
    // Spend 9 of 10 with nine distinct queries, leaving room for exactly one more.
    for back in 1..=9i64 {
        let q = Query {
            from: Some(date(e.week - back * 7 * 86_400)),
            ..builds_query(&e)
        };
        release(&mut e.store, &e.policy, "racer", &q, e.now, &mut rng).unwrap();
    }
    // Two processes' worth of connections race for the last ε with different queries.
    let dir = e._dir.path().to_path_buf();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = [10i64, 11]
        .into_iter()
        .map(|back| {
            let (dir, barrier, policy, week, now) = (
                dir.clone(),
                barrier.clone(),
                e.policy.clone(),
                e.week,
                e.now,
            );
            std::thread::spawn(move || {
                let mut store = SqliteStore::open(&dir).unwrap();
                let mut rng = ChaCha20Rng::seed_from_u64(back as u64);
                let q = Query {
                    metric: "builds".into(),
                    by: Some(vec!["team".into()]),
                    from: Some(date(week - back * 7 * 86_400)),
                    to: Some(date(week + 7 * 86_400)),
                };
                barrier.wait();
                release(&mut store, &policy, "racer", &q, now, &mut rng)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ReleaseError::BudgetExhausted { .. })))
        .count();
    assert_eq!(
        (ok, refused),
        (1, 1),
        "exactly one of two racing releases gets the last ε: {results:?}"
    );
    let spent = e
        .store
        .spent(
            "racer",
            "ci.build_finished",
            e.now - e.now.rem_euclid(30 * 86_400),
        )
        .unwrap();
    assert!((spent - 10.0).abs() < 1e-9, "ledger {spent}");
}

#[test]
fn a_discrete_gaussian_metric_releases_with_its_converted_epsilon_delta_and_interval() {
    let mut e = env();
    let text = POLICY.replacen(
        "        max_contributions_per_group: 25\n",
        "        max_contributions_per_group: 25\n        mechanism: discrete_gaussian\n",
        1,
    );
    e.policy = veil_policy::load_str(&text, "policy.yaml", chrono::Utc::now().date_naive())
        .unwrap()
        .0;
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let people: Vec<(&str, u8, i64)> = (0..80).map(|i| ("web", i as u8, 10)).collect();
    insert_sealed(&e, &people, &mut rng);
    let q = builds_query(&e);
    let r = release(&mut e.store, &e.policy, "analyst", &q, e.now, &mut rng).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&r.record().document).unwrap();
    assert_eq!(doc["mechanism"], "discrete_gaussian");
    assert!(
        (doc["delta"].as_f64().unwrap() - 2e-7).abs() < 1e-12,
        "selection δ + Gaussian δ: {}",
        doc["delta"]
    );
    let web = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"]["team"] == "web")
        .unwrap();
    assert_eq!(web["suppressed"], false);
    let hw = doc["interval_half_width"].as_f64().unwrap();
    assert!(hw > 0.0);
    assert!(
        (web["value"].as_f64().unwrap() - 800.0).abs() <= 4.0 * hw,
        "{web}"
    );
}

#[test]
fn a_range_without_sealed_windows_is_refused_and_charges_nothing() {
    let mut e = env();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let future = Query {
        from: Some(date(e.now + 7 * 86_400)),
        to: Some(date(e.now + 21 * 86_400)),
        ..builds_query(&e)
    };
    let err = release(&mut e.store, &e.policy, "analyst", &future, e.now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::AfterNow), "{err}");
    // Today's window is open: a range holding only it has nothing sealed.
    let open = Query {
        from: Some(date(e.now)),
        to: Some(date(e.now + 86_400)),
        ..builds_query(&e)
    };
    let err = release(&mut e.store, &e.policy, "analyst", &open, e.now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::NothingSealed { .. }), "{err}");
    assert_eq!(
        e.store
            .spent(
                "analyst",
                "ci.build_finished",
                e.now - e.now.rem_euclid(30 * 86_400)
            )
            .unwrap(),
        0.0
    );
    assert!(e.store.releases().unwrap().is_empty());
}

#[test]
fn absurd_ranges_are_refused_before_any_work() {
    let mut e = env();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (from, to) in [
        (
            chrono::NaiveDate::from_ymd_opt(1000, 1, 1).unwrap(),
            date(e.now),
        ),
        (
            chrono::NaiveDate::from_ymd_opt(-44, 3, 15).unwrap(),
            date(e.now),
        ),
        (date(e.now - 500 * 86_400), date(e.now)),
    ] {
        let q = Query {
            from: Some(from),
            to: Some(to),
            ..builds_query(&e)
        };
        let t = std::time::Instant::now();
        let err = release(&mut e.store, &e.policy, "analyst", &q, e.now, &mut rng).unwrap_err();
        assert!(matches!(err, ReleaseError::BeforeRetention { .. }), "{err}");
        assert!(
            t.elapsed() < std::time::Duration::from_millis(200),
            "planned windows anyway"
        );
    }
    let q = Query {
        from: Some(date(e.now)),
        to: Some(chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()),
        ..builds_query(&e)
    };
    let err = release(&mut e.store, &e.policy, "analyst", &q, e.now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::AfterNow), "{err}");
    assert!(e.store.releases().unwrap().is_empty());
}
