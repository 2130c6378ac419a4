//! Acceptance (issue 14): the budget and the per-window release store — an honest
//! ledger, reuse across periods, new groupings charged to the data's period, exhaustion,
//! repeated and concurrent queries, refused ranges, windows before the first data, and
//! the dry-run plan's reuse and cost.

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
fn periods_of(start: i64, end: i64) -> Vec<i64> {
    veil_policy::Budget {
        epsilon: 0.0,
        period: 30 * DAY,
    }
    .periods_of(start, end)
}

use veil_release::{
    answer, commit, draw, lookup, plan, release, Lookup, Query, ReleaseError, Released,
};
use veil_store::{SqliteStore, Store};

/// ε the collection's data of every period in `periods` has spent.
fn spent(store: &SqliteStore, periods: impl IntoIterator<Item = i64>) -> BTreeMap<i64, f64> {
    periods
        .into_iter()
        .map(|p| (p, store.spent(COLLECTION, p, p + 30 * DAY).unwrap()))
        .collect()
}

/// Seals `weeks` consecutive weeks of the organization from `first` on.
fn seal_weeks(e: &Env, first: i64, weeks: i64, rng: &mut ChaCha20Rng) {
    for wk in 0..weeks {
        e.seal("builds", first + wk * WEEK, &org_week(rng), rng);
    }
}

fn fresh(r: Result<Lookup, ReleaseError>) -> Box<veil_release::Draft> {
    match r.unwrap() {
        Lookup::Fresh(d) => d,
        Lookup::Stored(_) => panic!("expected windows to release"),
    }
}

fn stored(r: Result<Released, ReleaseError>) -> Released {
    let r = r.unwrap();
    assert!(r.cached(), "answered from stored windows");
    r
}

#[test]
fn the_ledger_charges_at_least_what_a_person_active_in_every_window_loses() {
    let first = ts(2021, 1, 4);
    let weeks = 5;
    let mut e = Env::new(20.0, 30, "discrete_laplace", first);
    let mut rng = ChaCha20Rng::seed_from_u64(31);
    // The target: in `mid`, active every week with 50 builds (bounded to l∞ = 10).
    for wk in 0..weeks {
        let mut rows = org_week(&mut rng);
        rows.retain(|r| r.contributor != person(2, 0));
        rows.push(row("mid", person(2, 0), 50, 0));
        e.seal("builds", first + wk * WEEK, &rows, &mut rng);
    }
    let now = first + weeks * WEEK + 2 * DAY;
    let q = by_team(first, first + weeks * WEEK);
    let p = plan(&e.store, &e.policy, &q, now).unwrap();
    // The mechanism's worst case, from the plan's own scales and the declared bounds: per
    // window the noisy count moves by at most l0 (one per group the person is in) at scale
    // b_count, and the value by at most l0·l∞ at scale b_value.
    let (_, m) = e.policy.metric("builds").unwrap();
    let (l0, linf) = (
        m.max_groups_per_contributor as f64,
        m.max_contributions_per_group as f64,
    );
    let per_window = l0 / p.count_scale + l0 * linf / p.value_scale;
    let loss = weeks as f64 * per_window;
    let r = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    let doc = r.document().clone();
    assert_eq!(doc.windows.len(), weeks as usize);
    eprintln!(
        "ledger: per-window loss {per_window:.4} (ε_count {} + ε_value {}), over {weeks} windows {loss:.4}; document ε {}, charged {}",
        p.epsilon_count, p.epsilon_value, doc.epsilon, doc.charged
    );
    assert!(
        doc.epsilon >= loss - 1e-9,
        "document ε {} < loss {loss}",
        doc.epsilon
    );
    // Each window is charged ε to every period its data lies in (35 days span ≥ 2 periods).
    let mut expected: BTreeMap<i64, f64> = BTreeMap::new();
    for wk in 0..weeks {
        let w = first + wk * WEEK;
        for p in periods_of(w, w + WEEK) {
            *expected.entry(p).or_default() += 1.0;
        }
    }
    assert!(expected.len() >= 2);
    let ledger = spent(&e.store, expected.keys().copied());
    for (period, n) in &expected {
        assert!(
            (ledger[period] - n).abs() < 1e-9,
            "{period}: {} vs {n}",
            ledger[period]
        );
        // What the target's data of this period loses: the windows that touch it.
        assert!(ledger[period] >= n * per_window - 1e-9);
    }
    let total: f64 = ledger.values().sum();
    assert!(total >= loss - 1e-9 && (total - doc.charged).abs() < 1e-9);
    // The audit chain's charges say the same.
    let chain: i64 = e
        .store
        .audit_log(0, 10_000)
        .unwrap()
        .iter()
        .filter(|a| a.action == "release")
        .flat_map(|a| {
            let d: serde_json::Value = serde_json::from_str(&a.detail).unwrap();
            d["charges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["epsilon_micro"].as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(chain, (total * 1e6).round() as i64);

    // Asked again three periods later: nothing charged, the same stored numbers.
    let later = now + 90 * DAY;
    let later_period = period_of(later, 30);
    assert!(!expected.contains_key(&later_period));
    let again = stored(release(
        &mut e.store,
        &e.policy,
        "someone-else",
        &q,
        later,
        &mut rng,
    ));
    assert_eq!(again.document().charged, 0.0);
    assert_eq!(again.document().groups, doc.groups);
    assert_eq!(again.document().release_id, doc.release_id);
    assert_eq!(spent(&e.store, expected.keys().copied()), ledger);
    assert_eq!(
        e.store
            .spent(COLLECTION, later_period, later_period + 30 * DAY)
            .unwrap(),
        0.0
    );

    // A new grouping of the old windows (the total) is charged to the old windows'
    // periods, by whoever asks it; the period it is asked in is untouched.
    let total_q = Query {
        by: Some(vec![]),
        ..q.clone()
    };
    let t = release(&mut e.store, &e.policy, "other", &total_q, later, &mut rng).unwrap();
    assert!(!t.cached());
    assert_eq!(t.document().charged, doc.charged);
    assert_eq!(
        t.document().groups.len(),
        weeks as usize,
        "one total per window"
    );
    for (period, now_spent) in spent(&e.store, expected.keys().copied()) {
        assert!(
            (now_spent - 2.0 * expected[&period]).abs() < 1e-9,
            "{period}"
        );
    }
    assert_eq!(
        e.store
            .spent(COLLECTION, later_period, later_period + 30 * DAY)
            .unwrap(),
        0.0
    );
    assert!(e.store.audit_verify(&[]).unwrap().ok);
}

#[test]
fn budget_exhaustion_refuses_and_charges_nothing() {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 4);
    let mut e = Env::new(3.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    seal_weeks(&e, monday, 4, &mut rng);
    let now = monday + 4 * WEEK + 2 * DAY;
    // Four windows cost 4 > 3: refused whole, nothing charged or stored.
    let all = by_team(monday, monday + 4 * WEEK);
    match release(&mut e.store, &e.policy, "analyst", &all, now, &mut rng) {
        Err(ReleaseError::BudgetExhausted {
            collection,
            cost,
            left,
            period,
        }) => {
            assert_eq!((collection.as_str(), cost, left), (COLLECTION, 4.0, 3.0));
            assert_eq!(period, date(p0).format("%Y-%m-%d").to_string());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 0.0);
    assert!(e.store.releases().unwrap().is_empty());
    assert!(e.store.last_audit("release_refused").unwrap().is_some());
    // Three single weeks fit; the fourth is refused, whoever asks and for whichever metric
    // of the collection.
    for wk in 0..3 {
        let q = by_team(monday + wk * WEEK, monday + (wk + 1) * WEEK);
        release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    }
    let last = by_team(monday + 3 * WEEK, monday + 4 * WEEK);
    let err = release(&mut e.store, &e.policy, "another", &last, now, &mut rng).unwrap_err();
    assert!(
        matches!(err, ReleaseError::BudgetExhausted { left, .. } if left == 0.0),
        "{err}"
    );
    e.seal(
        "builds_by_branch",
        monday + 3 * WEEK,
        &[row("main", person(1, 1), 1, 0)],
        &mut rng,
    );
    let other_metric = Query {
        metric: "builds_by_branch".into(),
        by: None,
        ..last.clone()
    };
    let err = release(
        &mut e.store,
        &e.policy,
        "another",
        &other_metric,
        now,
        &mut rng,
    )
    .unwrap_err();
    assert!(matches!(err, ReleaseError::BudgetExhausted { .. }), "{err}");
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 3.0);
    assert_eq!(e.store.releases().unwrap().len(), 3);
    // Released windows stay readable.
    let first = by_team(monday, monday + WEEK);
    stored(release(
        &mut e.store,
        &e.policy,
        "analyst",
        &first,
        now,
        &mut rng,
    ));
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 3.0);
}

#[test]
fn the_same_query_a_thousand_times_is_one_answer_and_one_charge() {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 1);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    seal_weeks(&e, monday, 1, &mut rng);
    let now = monday + WEEK + 2 * DAY;
    let q = by_team(monday, monday + WEEK);
    let first = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    assert!(!first.cached());
    // Equivalent forms share the windows: a repeated dimension, a from date inside the week.
    let q2 = Query {
        by: Some(vec!["team".into(), "team".into()]),
        from: Some(date(monday + 3 * DAY)),
        ..q.clone()
    };
    for i in 0..1000 {
        let r = stored(release(
            &mut e.store,
            &e.policy,
            "analyst",
            if i % 2 == 0 { &q } else { &q2 },
            now + i,
            &mut rng,
        ));
        assert_eq!(r.document().groups, first.document().groups);
        assert_eq!(r.document().release_id, first.document().release_id);
    }
    assert_eq!(e.store.releases().unwrap().len(), 1);
    assert_eq!(
        e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(),
        1.0,
        "one charge"
    );
}

/// A store with 1 of 3 left in the period of four sealed weeks (weeks 0 and 1 released).
fn one_left(seed: u64) -> (Env, i64, i64, i64) {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 4);
    let mut e = Env::new(3.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    seal_weeks(&e, monday, 4, &mut rng);
    let now = monday + 4 * WEEK + 2 * DAY;
    for wk in 0..2 {
        let q = by_team(monday + wk * WEEK, monday + (wk + 1) * WEEK);
        release(&mut e.store, &e.policy, "racer", &q, now, &mut rng).unwrap();
    }
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 2.0);
    (e, p0, monday, now)
}

#[test]
fn two_concurrent_releases_cannot_both_spend_the_last_of_a_budget() {
    // Two processes' worth of connections race for the last ε with different windows.
    let (e, p0, monday, now) = one_left(5);
    let dir = e.data_dir();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = [2i64, 3]
        .into_iter()
        .map(|wk| {
            let (dir, barrier, policy) = (dir.clone(), barrier.clone(), e.policy.clone());
            std::thread::spawn(move || {
                let mut store = SqliteStore::open(&dir, &dir.with_file_name("vault")).unwrap();
                let mut rng = ChaCha20Rng::seed_from_u64(wk as u64);
                let q = by_team(monday + wk * WEEK, monday + (wk + 1) * WEEK);
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
    assert_eq!((ok, refused), (1, 1), "{results:?}");
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 3.0);
    assert_eq!(e.store.releases().unwrap().len(), 3);

    // The same race phased by hand, so the interleaving is certain: both plan while 1 is
    // left and draw their noise, then one commits before the other.
    let (e, p0, monday, now) = one_left(6);
    let (mut a, mut b) = (
        SqliteStore::open(&e.data_dir(), &e.vault_dir()).unwrap(),
        SqliteStore::open(&e.data_dir(), &e.vault_dir()).unwrap(),
    );
    let qa = by_team(monday + 2 * WEEK, monday + 3 * WEEK);
    let qb = by_team(monday + 3 * WEEK, monday + 4 * WEEK);
    let da = fresh(lookup(&mut a, &e.policy, "racer", true, &qa, now));
    let db = fresh(lookup(&mut b, &e.policy, "racer", true, &qb, now));
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (da, db) = (draw(&e.policy, da, &mut rng), draw(&e.policy, db, &mut rng));
    commit(&mut a, &e.policy, da).unwrap();
    let err = commit(&mut b, &e.policy, db).unwrap_err();
    assert!(
        matches!(err, ReleaseError::BudgetExhausted { left, .. } if left == 0.0),
        "{err}"
    );
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 3.0);
    assert_eq!(e.store.releases().unwrap().len(), 3);
    // The loser drew noise no one paid for: its refusal entry must not carry the outcome.
    let refusal = e.store.last_audit("release_refused").unwrap().unwrap();
    let d: serde_json::Value = serde_json::from_str(&refusal.detail).unwrap();
    assert_eq!(d["refused"], "budget_exhausted", "{d}");
    assert!(
        d.get("outcome").is_none() && d.get("groups_released").is_none(),
        "{d}"
    );
    let p = plan(&e.store, &e.policy, &qb, now).unwrap();
    assert_eq!(
        p.new_window_labels.len(),
        1,
        "the refused window stays unreleased"
    );
}

#[test]
fn two_releases_of_the_same_window_store_and_charge_it_once() {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 1);
    let e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    seal_weeks(&e, monday, 1, &mut rng);
    let now = monday + WEEK + 2 * DAY;
    let q = by_team(monday, monday + WEEK);
    let dir = e.data_dir();
    let (mut a, mut b) = (
        SqliteStore::open(&dir, &dir.with_file_name("vault")).unwrap(),
        SqliteStore::open(&dir, &dir.with_file_name("vault")).unwrap(),
    );
    // Both look the window up before either stores it, then both draw their own noise.
    let da = fresh(lookup(&mut a, &e.policy, "one", true, &q, now));
    let db = fresh(lookup(&mut b, &e.policy, "two", true, &q, now));
    let (da, db) = (
        draw(&e.policy, da, &mut ChaCha20Rng::seed_from_u64(1)),
        draw(&e.policy, db, &mut ChaCha20Rng::seed_from_u64(2)),
    );
    let ra = commit(&mut a, &e.policy, da).unwrap();
    let rb = commit(&mut b, &e.policy, db).unwrap();
    assert!(
        !ra.cached() && rb.cached(),
        "the second answers with the first's numbers"
    );
    assert_eq!(ra.document().groups, rb.document().groups);
    assert_eq!(e.store.releases().unwrap().len(), 1);
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 1.0);
    // And with threads: the window is already taken, both get the stored numbers.
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let (dir, policy, q) = (dir.clone(), e.policy.clone(), q.clone());
            std::thread::spawn(move || {
                let mut s = SqliteStore::open(&dir, &dir.with_file_name("vault")).unwrap();
                release(
                    &mut s,
                    &policy,
                    "t",
                    &q,
                    now,
                    &mut ChaCha20Rng::seed_from_u64(i),
                )
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().document().groups, ra.document().groups);
    }
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 1.0);
}

#[test]
fn a_range_without_sealed_windows_is_refused_and_charges_nothing() {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 2);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    seal_weeks(&e, monday, 1, &mut rng);
    let now = monday + WEEK + 2 * DAY; // the second week is open
    let future = by_team(now + 7 * DAY, now + 21 * DAY);
    let err = release(&mut e.store, &e.policy, "analyst", &future, now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::AfterNow), "{err}");
    let open = by_team(now, now + DAY);
    let err = release(&mut e.store, &e.policy, "analyst", &open, now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::NothingSealed { .. }), "{err}");
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 0.0);
    assert!(e.store.releases().unwrap().is_empty());
}

#[test]
fn absurd_ranges_are_refused_before_any_work() {
    let monday = ts(2021, 1, 4);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    seal_weeks(&e, monday, 1, &mut rng);
    let now = monday + WEEK + 2 * DAY;
    let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
    for from in [day(1000, 1, 1), day(-44, 3, 15), date(now - 500 * DAY)] {
        let q = Query {
            from: Some(from),
            ..by_team(monday, now)
        };
        let t = std::time::Instant::now();
        let err = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap_err();
        assert!(matches!(err, ReleaseError::BeforeRetention { .. }), "{err}");
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "planned windows anyway"
        );
    }
    let q = Query {
        to: Some(day(9999, 12, 31)),
        ..by_team(monday, now)
    };
    let err = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::AfterNow), "{err}");
    let backwards = by_team(monday + WEEK, monday);
    let err = release(
        &mut e.store,
        &e.policy,
        "analyst",
        &backwards,
        now,
        &mut rng,
    )
    .unwrap_err();
    assert!(matches!(err, ReleaseError::BadRange), "{err}");
    assert!(e.store.releases().unwrap().is_empty());
}

#[test]
fn windows_before_the_first_data_are_not_listed() {
    let monday = ts(2021, 1, 4);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    // Weeks 0–1 sealed without data; data in weeks 2 and 4; week 3 sealed empty.
    for wk in 0..5 {
        let rows = if wk == 2 || wk == 4 {
            org_week(&mut rng)
        } else {
            vec![]
        };
        e.seal("builds", monday + wk * WEEK, &rows, &mut rng);
    }
    let now = monday + 5 * WEEK + 2 * DAY;
    let before = by_team(monday, monday + 2 * WEEK);
    let err = release(&mut e.store, &e.policy, "analyst", &before, now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::NothingSealed { .. }), "{err}");
    assert!(e.store.releases().unwrap().is_empty());
    let q = by_team(monday, monday + 5 * WEEK);
    let p = plan(&e.store, &e.policy, &q, now).unwrap();
    let labels: Vec<String> = (2..5).map(|wk| week_label(monday + wk * WEEK)).collect();
    assert_eq!(p.window_labels, labels);
    assert_eq!(p.epsilon, 3.0);
    let r = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    assert_eq!(r.document().windows, labels);
    assert_eq!(r.document().epsilon, 3.0);
    // The empty week after the first data is listed with every key, like any other.
    let empty: Vec<_> = r
        .document()
        .groups
        .iter()
        .filter(|g| g.window == labels[1])
        .collect();
    assert_eq!(empty.len(), 5);
}

#[test]
fn the_dry_run_plan_reports_reused_and_new_windows_and_their_cost() {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 4);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    seal_weeks(&e, monday, 4, &mut rng);
    let now = monday + 4 * WEEK + 2 * DAY;
    let labels: Vec<String> = (0..4).map(|wk| week_label(monday + wk * WEEK)).collect();
    let first = release(
        &mut e.store,
        &e.policy,
        "analyst",
        &by_team(monday, monday + 2 * WEEK),
        now,
        &mut rng,
    )
    .unwrap();
    let q = by_team(monday, monday + 4 * WEEK);
    let p = plan(&e.store, &e.policy, &q, now).unwrap();
    assert_eq!(p.window_labels, labels);
    assert_eq!(p.reused_windows, labels[..2]);
    assert_eq!(p.new_window_labels, labels[2..]);
    assert_eq!((p.cost, p.epsilon, p.epsilon_per_window), (2.0, 4.0, 1.0));
    assert_eq!(p.charges.len(), 1);
    let c = &p.charges[0];
    assert_eq!(c.period, date(p0).format("%Y-%m-%d").to_string());
    assert_eq!((c.epsilon, c.spent, c.left_after), (2.0, 2.0, 6.0));
    assert_eq!(p.budget_left, 6.0);
    assert_eq!(
        e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(),
        2.0,
        "a plan spends nothing"
    );
    // The release does what the plan said.
    let r = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    let doc = r.document();
    assert_eq!((doc.charged, doc.epsilon), (2.0, 4.0));
    assert_eq!(doc.windows, labels);
    assert_eq!(doc.parts.len(), 2);
    assert_eq!(doc.budget_left, 6.0);
    let old: Vec<_> = doc
        .groups
        .iter()
        .filter(|g| labels[..2].contains(&g.window))
        .cloned()
        .collect();
    assert_eq!(
        old,
        first.document().groups,
        "reused windows keep their numbers"
    );
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 4.0);
}

#[test]
fn reused_windows_of_interleaved_releases_are_listed_once() {
    // Week 1 released alone, then weeks 0–2 (new: 0 and 2, one release around week 1):
    // asking for weeks 0–2 again must list each window's groups once.
    let (_, monday) = period_with_weeks(ts(2021, 1, 1), 30, 3);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    seal_weeks(&e, monday, 3, &mut rng);
    let now = monday + 3 * WEEK + 2 * DAY;
    let middle = by_team(monday + WEEK, monday + 2 * WEEK);
    release(&mut e.store, &e.policy, "analyst", &middle, now, &mut rng).unwrap();
    let q = by_team(monday, monday + 3 * WEEK);
    let second = release(&mut e.store, &e.policy, "analyst", &q, now, &mut rng).unwrap();
    assert_eq!(second.document().charged, 2.0);
    let again = stored(release(
        &mut e.store,
        &e.policy,
        "analyst",
        &q,
        now,
        &mut rng,
    ));
    let doc = again.document();
    assert_eq!(doc.windows.len(), 3);
    let mut seen = std::collections::BTreeSet::new();
    for g in &doc.groups {
        assert!(
            seen.insert((g.window.clone(), g.key.clone())),
            "{} {:?} listed twice",
            g.window,
            g.key
        );
    }
    assert_eq!(doc.groups.len(), 15, "3 windows × 5 keys");
    assert_eq!(doc.parts.len(), 2);
    assert_eq!(doc.groups, second.document().groups);
}

#[test]
fn a_reader_who_may_not_release_sees_released_windows_only() {
    let (p0, monday) = period_with_weeks(ts(2021, 1, 1), 30, 2);
    let mut e = Env::new(10.0, 30, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    seal_weeks(&e, monday, 2, &mut rng);
    let now = monday + 2 * WEEK + 2 * DAY;
    let q = by_team(monday, monday + 2 * WEEK);
    let err = answer(&mut e.store, &e.policy, "viewer", false, &q, now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::NotReleased), "{err}");
    assert!(e.store.last_audit("release_refused").unwrap().is_some());
    let analyst = release(
        &mut e.store,
        &e.policy,
        "analyst",
        &by_team(monday, monday + WEEK),
        now,
        &mut rng,
    )
    .unwrap();
    let r = answer(&mut e.store, &e.policy, "viewer", false, &q, now, &mut rng).unwrap();
    let doc = r.document();
    assert!(r.cached() && doc.charged == 0.0);
    assert_eq!(doc.windows, [week_label(monday)]);
    assert_eq!(doc.not_released, [week_label(monday + WEEK)]);
    assert_eq!(doc.epsilon, 1.0, "ε of the windows listed");
    assert_eq!(doc.groups, analyst.document().groups);
    assert_eq!(r.budget_left(), doc.budget_left);
    let parsed: veil_release::ReleaseDoc = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(&parsed, doc);
    assert_eq!(e.store.spent(COLLECTION, p0, p0 + 30 * DAY).unwrap(), 1.0);
    assert_eq!(
        e.store.last_audit("release_served").unwrap().unwrap().actor,
        "viewer"
    );
}

/// Charges remember the data time they cover: a new `budget.period` (shorter, longer or
/// shifted) sums every charge whose period overlaps its own, so editing the policy never
/// gives data it has already lost its budget back, and the chain still verifies.
#[test]
fn changing_the_budget_period_gives_old_data_no_budget_back() {
    let (_, monday) = period_with_weeks(ts(2021, 1, 1), 28, 2);
    let mut e = Env::new(3.0, 28, "discrete_laplace", monday);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    seal_weeks(&e, monday, 2, &mut rng);
    e.seal("builds_by_branch", monday, &org_week(&mut rng), &mut rng);
    let now = monday + 2 * WEEK + 2 * DAY;
    let week = by_team(monday, monday + WEEK);
    release(&mut e.store, &e.policy, "analyst", &week, now, &mut rng).unwrap();
    release(
        &mut e.store,
        &e.policy,
        "analyst",
        &Query {
            by: Some(vec![]),
            ..week.clone()
        },
        now,
        &mut rng,
    )
    .unwrap();
    // 2 of 3 spent on the first week's data. Under any other period length, the period
    // holding that week still has 2 spent; one more window fits, a second does not.
    for days in [7u32, 30, 29, 365] {
        e.policy = load_policy(e.dir.path(), &policy_text(3.0, days, "discrete_laplace"));
        let budget = e.policy.metric("builds").unwrap().0.budget;
        let p = budget.period_start(monday);
        let spent = e.store.spent(COLLECTION, p, p + budget.period).unwrap();
        assert!(spent >= 2.0, "{days}d: {spent}");
    }
    e.policy = load_policy(e.dir.path(), &policy_text(3.0, 7, "discrete_laplace"));
    let by_branch = Query {
        metric: "builds_by_branch".into(),
        by: Some(vec!["branch".into()]),
        ..week.clone()
    };
    release(
        &mut e.store,
        &e.policy,
        "analyst",
        &by_branch,
        now,
        &mut rng,
    )
    .unwrap();
    e.policy = load_policy(e.dir.path(), &policy_text(3.0, 29, "discrete_laplace"));
    let again = Query {
        by: Some(vec![]),
        metric: "builds_by_branch".into(),
        ..week.clone()
    };
    let err = release(&mut e.store, &e.policy, "analyst", &again, now, &mut rng).unwrap_err();
    assert!(matches!(err, ReleaseError::BudgetExhausted { .. }), "{err}");
    // The second week's data was never charged: it keeps its whole budget.
    let next = by_team(monday + WEEK, monday + 2 * WEEK);
    e.policy = load_policy(e.dir.path(), &policy_text(3.0, 7, "discrete_laplace"));
    release(&mut e.store, &e.policy, "analyst", &next, now, &mut rng).unwrap();
    let v = e.store.audit_verify(&[]).unwrap();
    assert!(v.ok, "{:?}", v.problem);
}
