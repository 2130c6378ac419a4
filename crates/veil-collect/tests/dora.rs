//! The delivery (DORA) metrics of the example policy, computed by Veil from a GitHub export
//! and compared with a hand computation: the facts the collector derives, and the sealed
//! aggregates the release step would add noise to (read here directly, as only tests may).
//!
//! The scenario (`tests/fixtures/github/make.py`), repository acme/shop, team map
//! payments = {alice, bob, carol}, web = {carol, dave, erin}, frank in no team. Weeks:
//! W45 = 2026-11-02..08, W46 = 11-09..15. Production deployments, in the order they finished:
//!
//! | id | commit | finished | outcome | ships (new pull requests) | whose |
//! |---|---|---|---|---|---|
//! | 100 | base0 | 10-20 09:40 | success | #0 | (older than the retention: skipped) |
//! | 101 | m2 | 11-04 18:30 | success | #1 alice, #2 carol | payments (carol), web (carol) |
//! | 102 | m2 | 11-05 09:10 | success | none: a re-deploy | #2's author carol: payments, web |
//! | 103 | s3 | 11-05 15:20 | failure | #3 dave | web |
//! | 104 | s4 | 11-05 17:20 | success, rework, recovers 2.0 h | #3 dave, #4 erin (a revert) | web (erin) |
//! | 105 | m5 | 11-10 12:10 | failure | #5 bob | payments |
//! | 106 | m5 | 11-10 13:00 | error, rework | #5 bob (retry) | payments |
//! | 107 | s6 | 11-10 15:10 | success, rework, recovers 3.0 h (once, from 105) | #5, #6 bob | payments |
//! | 108 | r7 (release-1) | 11-11 11:00 | success | #7 frank only | unassigned |
//! | 110 | s8 | 11-12 10:00 | success | #8 alice (not #7: r7 is not in s8's ancestry) | payments |
//!
//! 109 ran in `staging` (not production); 111 is still queued (pending).

use std::collections::BTreeMap;
use std::path::PathBuf;
use veil_collect::github::{self, Fact};
use veil_pipeline::{Limits, Source};
use veil_store::{SealedAggregates, SqliteStore, Store};

const POLICY: &str = include_str!("../../../examples/policy.yaml");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github")
}

fn at(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

fn policy() -> veil_policy::Policy {
    let teams = std::fs::read_to_string(fixtures().join("teams.yaml")).unwrap();
    veil_policy::load_with_team_map(
        POLICY,
        "policy.yaml",
        chrono::NaiveDate::from_ymd_opt(2026, 11, 16).unwrap(),
        Some(&teams),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
    .0
}

fn derived(p: &veil_policy::Policy) -> github::Derived {
    let ex = github::read_dir(&fixtures(), &["production".to_owned()]).unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].repository, "acme/shop");
    github::derive(&ex[0], p.team_map())
}

/// The facts of one collection as (team, attrs without author/team), in build order.
fn facts(d: &github::Derived, collection: &str) -> Vec<(String, String, serde_json::Value)> {
    d.facts
        .iter()
        .filter(|f| f.collection == collection)
        .map(|f: &Fact| {
            let v: serde_json::Value = serde_json::from_str(&f.line).unwrap();
            let mut a = v["attrs"].clone();
            let team = a["team"].as_str().unwrap().to_owned();
            let who = a["author"].as_str().unwrap().to_owned();
            a.as_object_mut().unwrap().remove("team");
            a.as_object_mut().unwrap().remove("author");
            (team, who, a)
        })
        .collect()
}

#[test]
fn the_collector_derives_each_fact_by_the_documented_rules() {
    let p = policy();
    let d = derived(&p);
    assert_eq!(d.pending_deployments, 1, "111 is only queued");
    for f in &d.facts {
        // No title, body, comment, branch, message, name or email; no repository name.
        for needle in ["SECRET-", "acme/shop", "release-1", "@"] {
            assert!(!f.line.contains(needle), "{needle} in {}", f.line);
        }
    }
    assert_eq!(d.unknown_ancestry, 0);

    // Lead time per change, from the first commit of the pull request.
    let lead: Vec<(String, String, f64)> = facts(&d, "dev.change")
        .into_iter()
        .map(|(t, w, a)| (t, w, a["lead_time_hours"].as_f64().unwrap()))
        .collect();
    let expect = |t: &str, w: &str, h: f64| (t.to_owned(), w.to_owned(), h);
    assert_eq!(
        lead,
        [
            expect("payments", "alice", 25.7), // #0 at 100: first commit 10-19 08:00 → 10-20 09:40
            expect("payments", "alice", 33.5), // #1 squash-merged: its first commit 11-03 09:00, not the squash at 11-04 10:00 (8.5 h)
            expect("payments", "carol", 10.5), // #2 at 101 (18:30), not at the re-deploy 102 (25.2 h): in two teams, counted in both
            expect("web", "carol", 10.5),
            expect("web", "dave", 7.3), // #3 failed at 103, shipped by 104 at 17:20
            expect("web", "erin", 1.3), // #4, the revert: a change of its own
            expect("payments", "bob", 6.2), // #5: failed twice, shipped by 107 at 15:10
            expect("payments", "bob", 1.7), // #6
            expect("unassigned", "frank", 3.0), // #7 by its own deployment 108 from release-1
            expect("payments", "alice", 22.0), // #8 by 110; 110 does not ship #7
        ]
    );

    // Deployments: per team, whose, failed, rework, recovery.
    let deps: Vec<(String, String, u64, u64, Option<f64>)> = facts(&d, "dev.deployment")
        .into_iter()
        .map(|(t, w, a)| {
            (
                t,
                w,
                a["failed"].as_u64().unwrap(),
                a["rework"].as_u64().unwrap(),
                a.get("recovery_hours").map(|h| h.as_f64().unwrap()),
            )
        })
        .collect();
    let e =
        |t: &str, w: &str, f: u64, r: u64, h: Option<f64>| (t.to_owned(), w.to_owned(), f, r, h);
    assert_eq!(
        deps,
        [
            e("payments", "alice", 0, 0, None), // 100
            e("payments", "carol", 0, 0, None), // 101: carol's #2 is the newest change for payments
            e("web", "carol", 0, 0, None),
            e("payments", "carol", 0, 0, None), // 102: a re-deploy counts, for #2's author
            e("web", "carol", 0, 0, None),
            e("web", "dave", 1, 0, None),          // 103
            e("web", "erin", 0, 1, Some(2.0)),     // 104: after a failure, ships a revert
            e("payments", "bob", 1, 0, None),      // 105
            e("payments", "bob", 1, 1, None),      // 106: the retry is rework
            e("payments", "bob", 0, 1, Some(3.0)), // 107: two failures, one recovery from the first
            e("unassigned", "frank", 0, 0, None),  // 108
            e("payments", "alice", 0, 0, None),    // 110
        ]
    );
    let recoveries = deps.iter().filter(|d| d.4.is_some()).count();
    assert_eq!(
        recoveries, 2,
        "a failed deployment followed by a fix counts once"
    );

    // Pull requests: cycle time and the first review by someone else.
    let prs: Vec<(String, f64, Option<f64>)> = facts(&d, "dev.pull_request")
        .into_iter()
        .map(|(t, _, a)| {
            (
                t,
                a["cycle_hours"].as_f64().unwrap(),
                a.get("first_review_hours").map(|h| h.as_f64().unwrap()),
            )
        })
        .collect();
    let pr = |t: &str, c: f64, r: Option<f64>| (t.to_owned(), c, r);
    assert_eq!(
        prs,
        [
            pr("payments", 23.0, None), // #0
            pr("payments", 18.0, Some(2.0)),
            pr("payments", 8.0, Some(1.0)),
            pr("web", 8.0, Some(1.0)),
            pr("web", 3.0, Some(1.0)), // dave's own comment at 11:30 is not a review
            pr("web", 0.4, None),
            pr("payments", 1.0, Some(0.5)),
            pr("payments", 0.3, Some(0.2)),
            pr("unassigned", 1.5, None),
            pr("payments", 20.0, Some(19.0)),
        ]
    );
    // Open and closed-unmerged pull requests are no facts; a pending review is none.
    assert_eq!(
        facts(&d, "dev.review").len(),
        8,
        "7 reviews, carol's in two teams"
    );
    // Runs: cancelled ones carry no `succeeded`; the triggering actor counts.
    let runs: Vec<(String, Option<u64>)> = facts(&d, "dev.ci_run")
        .into_iter()
        .map(|(t, _, a)| (t, a.get("succeeded").map(|s| s.as_u64().unwrap())))
        .collect();
    assert_eq!(runs.len(), 10, "9 finished attempts, carol's in two teams");
    assert!(
        runs.contains(&("web".to_owned(), Some(0))),
        "run 9 counts for dave"
    );
    assert_eq!(runs.iter().filter(|r| r.1.is_none()).count(), 1);
}

/// Sealed aggregates (before noise) of every delivery metric, by team and week.
#[test]
fn each_delivery_metric_aggregates_to_the_hand_computation() {
    let p = policy();
    let d = derived(&p);
    let now = at("2026-11-16T12:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        at("2026-10-01T00:00:00Z"),
        "test",
    )
    .unwrap();
    let keys = store.key_ring().unwrap();
    // As `veil collect github` does: facts older than the staging retention are skipped.
    let cutoff = now - 14 * 86_400;
    let lines: String = d
        .facts
        .iter()
        .filter(|f| f.time >= cutoff)
        .map(|f| format!("{}\n", f.line))
        .collect();
    let source = Source {
        name: "collector:github".into(),
        collections: None,
        consent: None,
    };
    let o = veil_ingest::ingest_stream(
        &mut store,
        &p,
        &keys,
        Limits::default(),
        &source,
        &mut lines.as_bytes(),
        now,
        &mut |r| panic!("rejected: {}", r.1.reason()),
    )
    .unwrap();
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    assert_eq!(o.accepted as usize, lines.lines().count());
    store
        .seal(&p, &keys, at("2026-11-18T00:00:00Z"), "test")
        .unwrap();

    let w45 = at("2026-11-02T00:00:00Z");
    let w46 = at("2026-11-09T00:00:00Z");
    // metric → (week, team) → (contributors, count, sum, bins)
    let agg = |metric: &str| -> BTreeMap<(i64, String), (i64, i64, i64, Vec<i64>)> {
        store
            .exact_aggregates(metric, "team", w45, w46 + 7 * 86_400)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    (r.window_start, r.group),
                    (r.contributors, r.count, r.sum, r.bins),
                )
            })
            .collect()
    };
    let key = |w: i64, t: &str| (w, t.to_owned());

    // Deployment frequency: deployments per team (l∞ = 2 per person and week: bob's
    // three in W46 count as two).
    let f = agg("deployment_frequency");
    assert_eq!(f[&key(w45, "payments")].1, 2); // 101, 102
    assert_eq!(f[&key(w45, "web")].1, 4); // 101, 102, 103, 104
    assert_eq!(f[&key(w46, "payments")].1, 3); // bob 105-107 (bounded to 2), alice 110
    assert_eq!(f[&key(w46, "unassigned")].1, 1); // 108
    assert_eq!(f.len(), 4);

    // (rows, sum) of a mean's group; sums in hundredths (the fields have two decimals, so
    // a bounded person's share of failures is kept, not rounded away).
    let rows_sum = |m: &BTreeMap<(i64, String), (i64, i64, i64, Vec<i64>)>, w: i64, t: &str| {
        let g = &m[&key(w, t)];
        (g.1, g.2)
    };
    // Change failure rate = sum / rows of `failed`, at most one deployment per person and
    // week (the example's l∞ = 1, so the rate is over the team's people): carol's two in
    // W45 are one row; bob's [1, 1, 0] in W46 one row worth 2/3.
    let cfr = agg("change_failure_rate");
    assert_eq!(rows_sum(&cfr, w45, "payments"), (1, 0));
    assert_eq!(rows_sum(&cfr, w45, "web"), (3, 100)); // carol 0, dave 1, erin 0
    assert_eq!(rows_sum(&cfr, w46, "payments"), (2, 66)); // bob 2/3, alice 0
    assert_eq!(rows_sum(&cfr, w46, "unassigned"), (1, 0));

    // Rework rate = sum / rows of `rework`, bounded the same way.
    let rw = agg("deployment_rework_rate");
    assert_eq!(rows_sum(&rw, w45, "payments"), (1, 0));
    assert_eq!(rows_sum(&rw, w45, "web"), (3, 100)); // erin's 104
    assert_eq!(rows_sum(&rw, w46, "payments"), (2, 66)); // bob [0, 1, 1] → one row of 2/3
    assert_eq!(rows_sum(&rw, w46, "unassigned"), (1, 0));

    // Recovery time: one value per failure streak; bins [0,1,4,24,72,168,720] h.
    let rec = agg("failed_deployment_recovery_time");
    assert_eq!(rec[&key(w45, "web")].3, [0, 1, 0, 0, 0, 0]); // 2.0 h
    assert_eq!(rec[&key(w46, "payments")].3, [0, 1, 0, 0, 0, 0]); // 3.0 h, once
    assert_eq!(rec.len(), 2);

    // Lead time for changes, by week of deployment; l∞ = 1 change per person and week.
    let lt = agg("lead_time_for_changes");
    assert_eq!(lt[&key(w45, "payments")].3, [0, 0, 1, 1, 0, 0]); // carol 10.5, alice 33.5
    assert_eq!(lt[&key(w45, "web")].3, [0, 1, 2, 0, 0, 0]); // erin 1.3, carol 10.5, dave 7.3
                                                            // bob 6.2 and 1.7 bounded to one row (largest remainder, last bin on a tie: [4, 24)),
                                                            // alice 22.0.
    assert_eq!(lt[&key(w46, "payments")].3, [0, 0, 2, 0, 0, 0]);
    assert_eq!(lt[&key(w46, "unassigned")].3, [0, 1, 0, 0, 0, 0]); // frank 3.0
    assert_eq!(lt[&key(w45, "web")].0, 3, "three people");

    // PR cycle time and time to first review, by week of merge; bins [0,1,4,24,72,168] h.
    let ct = agg("pull_request_cycle_time");
    assert_eq!(ct[&key(w45, "payments")].3, [0, 0, 2, 0, 0]); // alice 18, carol 8
    assert_eq!(ct[&key(w45, "web")].3, [1, 1, 1, 0, 0]); // erin 0.4, dave 3, carol 8
    assert_eq!(ct[&key(w46, "payments")].3, [0, 1, 1, 0, 0]); // bob {1.0, 0.3} → [1, 4); alice 20
    assert_eq!(ct[&key(w46, "unassigned")].3, [0, 1, 0, 0, 0]); // frank 1.5
    let fr = agg("time_to_first_review");
    assert_eq!(fr[&key(w45, "payments")].3, [0, 2, 0, 0, 0]); // alice 2, carol 1
    assert_eq!(fr[&key(w45, "web")].3, [0, 2, 0, 0, 0]); // carol 1, dave 1; erin's #4 had none
    assert_eq!(fr[&key(w46, "payments")].3, [1, 0, 1, 0, 0]); // bob {0.5, 0.2} → [0, 1); alice 19
    assert!(
        !fr.contains_key(&key(w46, "unassigned")),
        "#7 was never reviewed"
    );

    // Reviews per reviewer's team.
    let rv = agg("reviews");
    assert_eq!(rv[&key(w45, "payments")].1, 3); // bob on #1, alice twice on #2
    assert_eq!(rv[&key(w45, "web")].1, 1); // erin on #3 (dave's own comment is none)
    assert_eq!(rv[&key(w46, "payments")].1, 3); // carol, alice, bob
    assert_eq!(rv[&key(w46, "web")].1, 1); // carol, in both teams

    // Build success rate = sum / count of `succeeded`; cancelled runs are left out.
    let bs = agg("build_success_rate");
    assert_eq!(rows_sum(&bs, w45, "payments"), (3, 200)); // alice s f, carol s
    assert_eq!(rows_sum(&bs, w45, "web"), (2, 200)); // carol s, dave s; erin's cancelled: none
    assert_eq!(rows_sum(&bs, w46, "payments"), (2, 100)); // bob's two attempts
    assert_eq!(rows_sum(&bs, w46, "web"), (1, 0)); // run 9, triggered by dave
    assert_eq!(rows_sum(&bs, w46, "unassigned"), (1, 100));

    // Nothing of the export's text, and no login, reached the data directory.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [
            "SECRET-",
            "alice",
            "carol",
            "frank",
            "acme/shop",
            "release-1",
        ] {
            assert!(
                !bytes
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle.as_bytes())),
                "{needle} in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Commit activity and change size (from `veil collect git`'s envelopes) aggregate to the
/// hand count: one commit per team of its author, bounded per person and week.
#[test]
fn commit_activity_aggregates_to_the_hand_count() {
    let p = policy();
    let now = at("2026-11-16T12:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        at("2026-10-01T00:00:00Z"),
        "test",
    )
    .unwrap();
    let keys = store.key_ring().unwrap();
    // (author, day of November, lines added)
    let commits = [
        ("alice", 3, 5),
        ("alice", 4, 120),
        ("carol", 4, 30), // payments and web
        ("dave", 5, 2000),
        ("frank", 5, 0), // unassigned
    ];
    let mut lines = String::new();
    for (i, (who, day, added)) in commits.iter().enumerate() {
        let c = veil_collect::Commit {
            id: format!("{i:040x}"),
            author_email: who.to_string(),
            author_time: at(&format!("2026-11-{day:02}T10:00:00Z")),
            parents: 1,
            files_changed: 1,
            lines_added: *added,
            lines_deleted: 0,
        };
        for l in veil_collect::commit_envelopes(&c, "shop", p.team_map()) {
            lines.push_str(&l);
            lines.push('\n');
        }
    }
    let source = Source {
        name: "collector:git".into(),
        collections: None,
        consent: None,
    };
    let o = veil_ingest::ingest_stream(
        &mut store,
        &p,
        &keys,
        Limits::default(),
        &source,
        &mut lines.as_bytes(),
        now,
        &mut |r| panic!("rejected: {}", r.1.reason()),
    )
    .unwrap();
    assert_eq!(o.accepted, 6);
    store
        .seal(&p, &keys, at("2026-11-18T00:00:00Z"), "test")
        .unwrap();
    let w45 = at("2026-11-02T00:00:00Z");
    let agg = |metric: &str| -> BTreeMap<String, (i64, i64, Vec<i64>)> {
        store
            .exact_aggregates(metric, "team", w45, w45 + 7 * 86_400)
            .unwrap()
            .into_iter()
            .map(|r| (r.group, (r.contributors, r.count, r.bins)))
            .collect()
    };
    let ca = agg("commit_activity");
    assert_eq!(ca["payments"].1, 3); // alice 2, carol 1
    assert_eq!(ca["payments"].0, 2);
    assert_eq!(ca["web"].1, 2); // carol, dave
    assert_eq!(ca["unassigned"].1, 1);
    // bins [0, 10, 50, 200, 1000, 1000000): l∞ = 2 per person and week.
    let cs = agg("change_size");
    assert_eq!(cs["payments"].2, [1, 1, 1, 0, 0]); // alice 5, 120; carol 30
    assert_eq!(cs["web"].2, [0, 1, 0, 0, 1]); // carol 30, dave 2000
    assert_eq!(cs["unassigned"].2, [1, 0, 0, 0, 0]);
}
