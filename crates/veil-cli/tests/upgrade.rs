//! Upgrading a data directory made by the Veil before per-window releases (commit
//! 42acfac: one release per query, charged once, `charges` without `period_end`; see
//! tests/fixtures/legacy-13/README.md). The current binary, on first open, indexes every
//! old release's windows in one `window_baseline` audit entry (old windows are served as
//! stored, never drawn again), rebuilds the budget ledger with a `period_end` (0 for old
//! rows) and keeps counting old charges against all data older than their entry.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/legacy-13");

/// The two ISO weeks the old releases cover, 2026-W45 and 2026-W46, as `--from`/`--to`.
const W45: &str = "2026-11-02";
const W46: &str = "2026-11-09";
const END: &str = "2026-11-16";

/// The old policy keeps aggregates 400 days: from this day on 2026-W45 is outside the
/// retention and the binary (on today's clock) refuses to answer for it.
const BINARY_UNTIL: &str = "2027-12-06";
/// The clock of answers made through the library once the binary cannot (see [`Via`]).
const PINNED_NOW: &str = "2026-12-03T12:00:00Z";

fn ts(day: &str) -> i64 {
    day.parse::<chrono::NaiveDate>()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

/// How reports are asked: through the binary, as a person would, or — once the
/// fixture's weeks have left the policy's retention on today's clock — through the
/// library calls the binary makes, at a pinned clock, so the test keeps checking the
/// upgrade rather than the calendar. The store is opened and upgraded by the binary
/// either way.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Via {
    Binary,
    Pinned,
}

impl Via {
    fn today() -> Via {
        if chrono::Utc::now().timestamp() < ts(BINARY_UNTIL) {
            Via::Binary
        } else {
            eprintln!("the fixture's weeks are past retention today: reports at {PINNED_NOW}");
            Via::Pinned
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let name = name.to_str().unwrap();
        assert!(
            !name.ends_with("-wal") && !name.ends_with("-shm"),
            "the fixture was opened in place: {name}"
        );
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(name));
        } else if name != "README.md" {
            std::fs::copy(e.path(), to.join(name)).unwrap();
        }
    }
}

/// A fresh copy of the legacy directory (config, old policy, data), not opened yet.
fn legacy() -> Veil {
    let v = Veil {
        dir: tempfile::tempdir().unwrap(),
        printed: Default::default(),
        init_out: String::new(),
    };
    copy_dir(Path::new(FIXTURE), v.path());
    v
}

/// What the old binary printed for `report-N.json` (also its stored document).
fn old_report(n: u32) -> Value {
    let t = std::fs::read_to_string(Path::new(FIXTURE).join(format!("report-{n}.json"))).unwrap();
    serde_json::from_str(&t).unwrap()
}

fn json(r: &Run) -> Value {
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// `veil report METRIC [--by BY] --from FROM --to TO [--dry-run] --format json`.
fn report(
    v: &Veil,
    via: Via,
    metric: &str,
    by: Option<&str>,
    from: &str,
    to: &str,
    dry: bool,
) -> Value {
    match via {
        Via::Binary => {
            let mut args = vec![
                "report", metric, "--from", from, "--to", to, "--format", "json",
            ];
            if let Some(b) = by {
                args.extend(["--by", b]);
            }
            if dry {
                args.push("--dry-run");
            }
            json(&v.run(&args))
        }
        Via::Pinned => {
            use rand::SeedableRng;
            let now = chrono::DateTime::parse_from_rfc3339(PINNED_NOW)
                .unwrap()
                .timestamp();
            let (policy, _) = veil_policy::load(&v.path().join("policy.yaml")).unwrap();
            let mut store = v.store();
            let q = veil_release::Query {
                metric: metric.to_owned(),
                by: by.map(|b| b.split(',').map(str::to_owned).collect()),
                from: Some(from.parse().unwrap()),
                to: Some(to.parse().unwrap()),
            };
            if dry {
                let p = veil_release::plan(&store, &policy, &q, now).unwrap();
                serde_json::to_value(&p).unwrap()
            } else {
                let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
                let r = veil_release::answer(
                    &mut store,
                    &policy,
                    "local:tester",
                    true,
                    &q,
                    now,
                    &mut rng,
                )
                .unwrap();
                serde_json::from_str(&veil_release::render(&r, veil_release::Format::Json)).unwrap()
            }
        }
    }
}

/// Every audit entry, as `veil audit log --format json` prints them.
fn audit_log(v: &Veil) -> Vec<Value> {
    let r = v.run(&["audit", "log", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn entries(v: &Veil, action: &str) -> Vec<Value> {
    audit_log(v)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

fn verify(v: &Veil) {
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("audit log ok"), "{}", r.stdout);
}

type LedgerRow = (String, String, i64, i64, i64);

fn ledger(v: &Veil) -> Vec<LedgerRow> {
    let c = v.sqlite();
    let mut st = c
        .prepare("SELECT principal, collection, period_start, period_end, spent_micro FROM budget_ledger ORDER BY 1, 2, 3, 4")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn release_windows(v: &Veil) -> Vec<(String, String, i64, String)> {
    let c = v.sqlite();
    let mut st = c
        .prepare("SELECT metric, grouping, window_start, release_id FROM release_windows ORDER BY 1, 2, 3")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// What the fixture holds before any current code opens it.
struct Before {
    /// (principal, collection, period_start, spent_micro) of the old ledger.
    ledger: Vec<(String, String, i64, i64)>,
    /// release id → stored document.
    documents: std::collections::BTreeMap<String, Value>,
    entries: i64,
}

fn before(v: &Veil) -> Before {
    let c = v.sqlite();
    let has = |sql: &str| -> bool { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert!(
        has("SELECT COUNT(*) = 1 FROM sqlite_master WHERE name = 'budget_ledger' AND sql NOT LIKE '%period_end%'"),
        "the fixture's ledger is the old one"
    );
    assert!(
        has("SELECT COUNT(*) = 0 FROM sqlite_master WHERE name = 'release_windows'"),
        "the fixture has no window index"
    );
    let ledger = {
        let mut st = c
            .prepare("SELECT principal, collection, period_start, spent_micro FROM budget_ledger ORDER BY 1, 2, 3")
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let documents = {
        let mut st = c
            .prepare("SELECT release_id, document FROM releases")
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        rows.map(|r| {
            let (id, d) = r.unwrap();
            (id, serde_json::from_str(&d).unwrap())
        })
        .collect()
    };
    let entries = c
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    Before {
        ledger,
        documents,
        entries,
    }
}

fn groups_of(doc: &Value, window: &str) -> Vec<Value> {
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["window"] == window)
        .cloned()
        .collect()
}

fn ids(doc: &Value) -> Vec<String> {
    doc["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

fn upgrade_keeps_old_releases_and_charges(via: Via) {
    let v = legacy();
    // 1: builds by team, W45 and W46; 2: build_duration by team, W46; 3: builds by team,
    // W46 again (a second draw the old version allowed); 4: builds in total, W46.
    let (r1, r2, r3, r4) = (old_report(1), old_report(2), old_report(3), old_report(4));
    let id = |r: &Value| r["release_id"].as_str().unwrap().to_owned();
    let (a, b, c, d) = (id(&r1), id(&r2), id(&r3), id(&r4));
    assert_eq!(r1["windows"], serde_json::json!(["2026-W45", "2026-W46"]));
    assert_eq!(r3["windows"], serde_json::json!(["2026-W46"]));
    assert_eq!(r4["by"], serde_json::json!([]));
    let old = before(&v);
    assert_eq!(old.documents.len(), 4);
    // What the old binary printed is what it stored.
    for r in [&r1, &r2, &r3, &r4] {
        assert_eq!(&old.documents[&id(r)], r);
    }
    let old_spent: i64 = old.ledger.iter().map(|r| r.3).sum();
    assert_eq!(
        old_spent, 4_000_000,
        "four old releases of ε 1: {:?}",
        old.ledger
    );

    // The first open by the current binary upgrades; the chain still verifies.
    verify(&v);
    let log = audit_log(&v);
    assert_eq!(
        log.len() as i64,
        old.entries + 1,
        "the upgrade appends one entry"
    );
    let baselines: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "window_baseline")
        .collect();
    assert_eq!(baselines.len(), 1);
    assert_eq!(baselines[0]["actor"], "veil:upgrade");
    let detail: Value = serde_json::from_str(baselines[0]["detail"].as_str().unwrap()).unwrap();
    // Each old window is indexed under the first release that released it; the later
    // release of builds 2026-W46 (a second draw the old version allowed) adds nothing.
    assert_eq!(
        detail,
        serde_json::json!({"releases": [
            [a, {"metric": "builds", "grouping": "team", "starts": [ts(W45), ts(W46)]}],
            [b, {"metric": "build_duration", "grouping": "team", "starts": [ts(W46)]}],
            [d, {"metric": "builds", "grouping": "", "starts": [ts(W46)]}],
        ]}),
        "{detail}"
    );
    assert_eq!(
        release_windows(&v),
        vec![
            ("build_duration".into(), "team".into(), ts(W46), b.clone()),
            ("builds".into(), "".into(), ts(W46), d.clone()),
            ("builds".into(), "team".into(), ts(W45), a.clone()),
            ("builds".into(), "team".into(), ts(W46), a.clone()),
        ]
    );
    // The ledger was rebuilt with period_end, old rows kept with end 0.
    let expect_ledger: Vec<LedgerRow> = old
        .ledger
        .iter()
        .map(|(p, c, s, m)| (p.clone(), c.clone(), *s, 0, *m))
        .collect();
    assert_eq!(ledger(&v), expect_ledger);

    // The old weeks come back as stored, charged nothing, from the old release.
    let doc = report(&v, via, "builds", None, W45, END, false);
    assert_eq!(doc["charged"], 0.0, "{doc}");
    assert_eq!(doc["release_id"], a.as_str());
    assert_eq!(ids(&doc), vec![a.clone()]);
    assert_eq!(doc["windows"], r1["windows"]);
    assert_eq!(
        doc["groups"], r1["groups"],
        "the old numbers, as the old binary printed them"
    );
    assert_eq!(
        doc["epsilon_per_window"], r1["epsilon"],
        "released at the old ε"
    );
    // One of its weeks alone: the first release of it, not the later second draw.
    let w46 = report(&v, via, "builds", None, W46, END, false);
    assert_eq!(w46["charged"], 0.0);
    assert_eq!(ids(&w46), vec![a.clone()]);
    assert_eq!(w46["groups"], serde_json::json!(groups_of(&r1, "2026-W46")));
    let hist = report(&v, via, "build_duration", None, W46, END, false);
    assert_eq!(hist["charged"], 0.0);
    assert_eq!(ids(&hist), vec![b.clone()]);
    assert_eq!(hist["groups"], r2["groups"]);

    let total = report(&v, via, "builds", Some(""), W46, END, false);
    assert_eq!(total["charged"], 0.0);
    assert_eq!(ids(&total), vec![d.clone()]);
    assert_eq!(total["groups"], r4["groups"]);

    // Old charges still count: a range with a week not released before sees every old
    // ε spent in each budget period it would charge (old charges cover all data older
    // than their entries), and prices only that week.
    let longer = [("builds", Some(""), &r4), ("build_duration", None, &r2)];
    let mut plans = Vec::new();
    for (metric, by, reused) in longer {
        let plan = report(&v, via, metric, by, W45, END, true);
        assert_eq!(plan["reused_windows"], reused["windows"], "{plan}");
        assert_eq!(plan["new_window_labels"], serde_json::json!(["2026-W45"]));
        let charges = plan["charges"].as_array().unwrap();
        assert!(!charges.is_empty(), "{plan}");
        for ch in charges {
            assert_eq!(ch["spent"], old_spent as f64 / 1e6, "{plan}");
            let left = plan["budget"].as_f64().unwrap()
                - ch["spent"].as_f64().unwrap()
                - ch["epsilon"].as_f64().unwrap();
            assert!(
                (ch["left_after"].as_f64().unwrap() - left).abs() < 1e-9,
                "{plan}"
            );
        }
        assert!(plan["cost"].as_f64().unwrap() > 0.0);
        plans.push(plan);
    }
    // Released next to the old ones: the old week is served as stored inside a new
    // answer, only the new week charged.
    for ((metric, by, reused), plan) in longer.into_iter().zip(plans) {
        let mixed = report(&v, via, metric, by, W45, END, false);
        assert_eq!(mixed["charged"], plan["cost"], "{mixed}");
        let parts = ids(&mixed);
        assert_eq!(parts.len(), 2, "{mixed}");
        assert_eq!(parts[0], id(reused));
        assert!(!old.documents.contains_key(&parts[1]));
        assert_eq!(
            serde_json::json!(groups_of(&mixed, "2026-W46")),
            reused["groups"],
            "the old week inside a new answer"
        );
        verify(&v);
        let again = report(&v, via, metric, by, W45, END, false);
        assert_eq!(again["charged"], 0.0);
        assert_eq!(again["groups"], mixed["groups"]);
    }

    // Opening again never upgrades again; the old ledger rows are still there.
    verify(&v);
    assert_eq!(entries(&v, "window_baseline").len(), 1);
    let now_ledger = ledger(&v);
    for row in &expect_ledger {
        assert!(now_ledger.contains(row), "{row:?} gone: {now_ledger:?}");
    }
    assert!(
        now_ledger
            .iter()
            .all(|r| r.3 != 0 || expect_ledger.contains(r)),
        "only old rows have no period end: {now_ledger:?}"
    );
    assert_eq!(release_windows(&v).iter().filter(|r| r.3 == c).count(), 0);
}

#[test]
fn an_old_data_directory_is_upgraded_once_and_keeps_its_releases_and_charges() {
    upgrade_keeps_old_releases_and_charges(Via::today());
}

/// The same checks with every report at the pinned clock, so the path the first test
/// takes once the fixture's weeks leave the retention is known to work today.
#[test]
fn the_upgrade_checks_hold_at_a_pinned_clock() {
    upgrade_keeps_old_releases_and_charges(Via::Pinned);
}

/// Upgrading Veil and adopting today's example policy (team map, ε 2 per window, budget
/// ε 20 per 28 days) at once: the old releases are still served for the same metric and
/// grouping, charged nothing, under today's floors, and old charges still count.
#[test]
fn old_releases_are_served_under_todays_example_policy() {
    let via = Via::today();
    let v = legacy();
    let today = Veil::init();
    for f in ["policy.yaml", "teams.yaml"] {
        std::fs::copy(today.path().join(f), v.path().join(f)).unwrap();
    }
    let r1 = old_report(1);
    verify(&v);
    assert_eq!(entries(&v, "window_baseline").len(), 1);
    let doc = report(&v, via, "builds", None, W45, END, false);
    assert_eq!(doc["charged"], 0.0, "{doc}");
    assert_eq!(
        ids(&doc),
        vec![r1["release_id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(doc["windows"], r1["windows"]);
    assert_eq!(
        doc["epsilon_per_window"], r1["epsilon"],
        "released at the old ε: {doc}"
    );
    // Described as it was released, not as today's policy would release it: the old
    // noise width, δ and partition selection.
    for key in ["interval_half_width", "delta"] {
        assert_eq!(doc[key], r1[key], "{key}: {doc}");
    }
    assert_eq!(doc["rule"], "free_form_keys", "{doc}");
    let table = v.run(&["report", "builds", "--from", W45, "--to", END]);
    if table.code == 0 {
        assert!(
            !table.stdout.contains("no: \n")
                && !table.stdout.lines().any(|l| l.trim_end().ends_with("no:")),
            "{}",
            table.stdout
        );
    }
    let (old, new) = (
        r1["groups"].as_array().unwrap(),
        doc["groups"].as_array().unwrap(),
    );
    assert_eq!(old.len(), new.len());
    for (o, n) in old.iter().zip(new) {
        assert_eq!((&o["key"], &o["window"]), (&n["key"], &n["window"]));
        if n["suppressed"] == true && o["suppressed"] == false {
            // Only today's roster floor may hide a stored group.
            assert_eq!(n["reason"], "roster_below_k", "{n}");
        } else {
            assert_eq!(o, n, "a stored group is served as stored");
        }
    }
    let plan = report(&v, via, "builds", Some(""), W45, END, true);
    let charges = plan["charges"].as_array().unwrap();
    assert!(!charges.is_empty(), "{plan}");
    for ch in charges {
        assert_eq!(
            ch["spent"], 4.0,
            "the four old charges count under the new periods: {plan}"
        );
    }
    verify(&v);
    assert_eq!(entries(&v, "window_baseline").len(), 1);
}

/// A store made when the epoch keys lived in its database: the first open moves them to
/// the vault beside it (no other setup needed), wipes them from every file of the data
/// directory, and everything staged under them still decrypts.
#[test]
fn the_keys_move_out_of_the_data_directory_on_first_open() {
    let v = legacy();
    let (old_keys, staged): (Vec<Vec<u8>>, i64) = {
        let c = v.sqlite();
        let mut st = c
            .prepare("SELECT hmac_key FROM vault_epochs UNION ALL SELECT data_key FROM vault_epochs UNION ALL SELECT secret FROM vault_dedupe")
            .unwrap();
        let keys = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let staged = c
            .query_row("SELECT SUM(events) FROM staging_segments", [], |r| r.get(0))
            .unwrap();
        (keys, staged)
    };
    assert_eq!(old_keys.len(), 3);
    assert!(!v.vault_dir().exists());
    let r = v.run(&["keys", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("active"), "{}", r.stdout);
    let vault = std::fs::read_to_string(v.vault_dir().join("keys.json")).unwrap();
    for k in &old_keys {
        assert!(
            vault.contains(&hex::encode(k)),
            "a key was lost in the move"
        );
        for (p, bytes) in all_files(&v.data_dir()) {
            assert!(!contains(&bytes, k), "a key is still in {}", p.display());
        }
    }
    let tables: i64 = v
        .sqlite()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'vault%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    // Everything staged under the moved keys still opens.
    use veil_store::Store;
    let store = v.store();
    let keys = store.key_ring().unwrap();
    let opened = ["ci.build_finished", "pr.merged"]
        .iter()
        .map(|c| store.staging_payloads(c, &keys).unwrap().len() as i64)
        .sum::<i64>();
    assert_eq!(opened, staged);
    // A second open finds the vault and does not move anything again.
    let r = v.run(&["keys", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(v.vault_dir().join("keys.json")).unwrap(),
        vault
    );
}

/// A legacy store next to a vault that does not hold its keys (another installation's,
/// or one left over) is refused, and its keys stay where they are: wiping them would make
/// everything staged unreadable.
#[test]
fn a_legacy_store_never_hands_its_keys_to_a_foreign_vault() {
    let v = legacy();
    let other = Veil::init();
    copy_dir(&other.vault_dir(), &v.vault_dir());
    let r = v.run(&["keys", "list"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("belongs to another data directory"),
        "{}",
        r.stderr
    );
    let kept: i64 = v
        .sqlite()
        .query_row(
            "SELECT COUNT(*) FROM vault_epochs WHERE hmac_key IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1, "the store's own keys were not wiped");
}
