//! Issue 14 through the binary: each window released once and reused, the budget per
//! collection and data period whoever asks, the roster floor, and the window index bound
//! to the audit chain (a deleted or edited index row is caught, never served).

mod common;
use chrono::Datelike;
use common::*;

/// The last two closed weeks, as `--from`/`--to` dates: (two weeks ago, last week, now).
fn weeks() -> (String, String, String) {
    let today = chrono::Utc::now().date_naive();
    let monday = today - chrono::Duration::days(today.weekday().num_days_from_monday() as i64);
    let d = |n: i64| (monday - chrono::Duration::days(n)).to_string();
    (d(14), d(7), d(0))
}

fn json(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn ready() -> Veil {
    let v = Veil::init();
    let events = v.generate(14, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    v
}

#[test]
fn a_window_is_released_once_and_a_longer_range_pays_only_for_new_windows() {
    let v = ready();
    let (w2, w1, now) = weeks();
    let one = json(&v.run(&[
        "report", "builds", "--from", &w1, "--to", &now, "--format", "json",
    ]));
    assert_eq!(one["windows"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["charged"], 2.0, "ε=2 per window");
    // The dry run knows the stored window and prices only the new one.
    let plan = json(&v.run(&[
        "report",
        "builds",
        "--from",
        &w2,
        "--to",
        &now,
        "--dry-run",
        "--format",
        "json",
    ]));
    assert_eq!(plan["reused_windows"], one["windows"]);
    assert_eq!(plan["new_window_labels"].as_array().unwrap().len(), 1);
    assert_eq!(plan["cost"], 2.0);
    let two = json(&v.run(&[
        "report", "builds", "--from", &w2, "--to", &now, "--format", "json",
    ]));
    assert_eq!(two["charged"], 2.0, "only the new window is charged: {two}");
    assert_eq!(two["epsilon"], 4.0, "a person in both windows loses 2 × ε");
    // The stored window comes back with exactly its stored numbers.
    let label = one["windows"][0].as_str().unwrap();
    let of = |d: &serde_json::Value| -> Vec<serde_json::Value> {
        d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["window"] == label)
            .cloned()
            .collect()
    };
    assert_eq!(of(&one), of(&two));
    // Asking again charges nothing.
    let again = json(&v.run(&[
        "report", "builds", "--from", &w2, "--to", &now, "--format", "json",
    ]));
    assert_eq!(again["charged"], 0.0);
    assert_eq!(again["groups"], two["groups"]);
    let releases: i64 = v
        .sqlite()
        .query_row("SELECT COUNT(*) FROM releases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(releases, 2, "one stored release per batch of new windows");
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
}

#[test]
fn the_budget_protects_people_whoever_asks() {
    let v = ready();
    let (w2, w1, now) = weeks();
    // Budget ε = 3 for a period's data; two analysts share it.
    let policy = std::fs::read_to_string(v.path().join("policy.yaml")).unwrap();
    std::fs::write(
        v.path().join("policy.yaml"),
        policy.replace(
            "budget: { epsilon: 20.0, period: 28d }",
            "budget: { epsilon: 3.0, period: 7d }",
        ),
    )
    .unwrap();
    v.append_config(&format!(
        "[[principal]]\nname = \"second-analyst\"\nroles = [\"analyst\"]\ntoken_sha256 = \"{}\"",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"veil_second_analyst_token"
        ))
    ));
    let first = v.run(&["report", "builds", "--from", &w1, "--to", &now]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Another principal, another grouping of the same week: 2 + 2 > 3.
    let second = v.run_env(
        &[
            "--as",
            "second-analyst",
            "report",
            "builds",
            "--by",
            "",
            "--from",
            &w1,
            "--to",
            &now,
        ],
        None,
        &[("VEIL_TOKEN", "veil_second_analyst_token")],
    );
    assert_eq!(second.code, 1, "{}", second.stdout);
    assert!(
        second.stderr.contains("budget exhausted"),
        "{}",
        second.stderr
    );
    // The week before is other data with its own budget.
    let older = v.run_env(
        &[
            "--as",
            "second-analyst",
            "report",
            "builds",
            "--by",
            "",
            "--from",
            &w2,
            "--to",
            &w1,
        ],
        None,
        &[("VEIL_TOKEN", "veil_second_analyst_token")],
    );
    assert_eq!(older.code, 0, "{}", older.stderr);
    // Reading what was released costs nothing and is never refused for budget.
    let read = v.run_env(
        &[
            "--as",
            "second-analyst",
            "report",
            "builds",
            "--from",
            &w1,
            "--to",
            &now,
        ],
        None,
        &[("VEIL_TOKEN", "veil_second_analyst_token")],
    );
    assert_eq!(read.code, 0, "{}", read.stderr);
}

#[test]
fn a_team_below_its_roster_is_never_shown_and_real_teams_are() {
    let v = ready();
    let doc = json(&v.run(&["report", "builds", "--format", "json"]));
    assert_eq!(doc["rule"], "declared_keys");
    assert_eq!(doc["delta"], 0.0);
    let groups = doc["groups"].as_array().unwrap();
    for g in groups {
        if g["key"]["team"] == "infra" {
            assert_eq!(g["suppressed"], true);
            assert_eq!(g["reason"], "roster_below_k");
        }
    }
    // Teams of 12 and 15 active every week are shown (ε = 2: misses are ~0.2%).
    for team in ["payments", "web"] {
        assert!(
            groups
                .iter()
                .any(|g| g["key"]["team"] == team && g["suppressed"] == false),
            "{team}: {doc}"
        );
    }
    // Every declared team and `unassigned`, every window: empty ones included.
    let windows = doc["windows"].as_array().unwrap().len();
    assert_eq!(groups.len(), windows * 6);
    // The table names the rule and why a row is hidden.
    let t = v.run(&["report", "builds"]).stdout;
    assert!(t.contains("roster below 5"), "{t}");
    assert!(
        t.contains("noisy count of active people is at least 5"),
        "{t}"
    );
    // A histogram comes with its unit, bins and quantiles inside the declared range.
    let h = json(&v.run(&["report", "build_duration", "--format", "json"]));
    assert_eq!(h["unit"], "ms");
    for g in h["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["suppressed"] == false)
    {
        let q = g["quantiles"].as_object().unwrap();
        for x in q.values() {
            let x = x.as_f64().unwrap();
            assert!((0.0..=86_400_000.0).contains(&x), "{g}");
        }
        assert!(!g["bins"].as_array().unwrap().is_empty());
    }
    let t = v.run(&["report", "build_duration"]).stdout;
    assert!(t.contains("in ms") && t.contains("median"), "{t}");
}

#[test]
fn an_edited_or_deleted_window_index_row_is_caught_and_never_served() {
    let v = ready();
    let (w2, w1, now) = weeks();
    assert_eq!(
        v.run(&["report", "builds", "--from", &w1, "--to", &now])
            .code,
        0
    );
    assert_eq!(
        v.run(&["report", "build_duration", "--from", &w2, "--to", &w1])
            .code,
        0
    );
    // Pointing a window at another release: refused when served, caught by verify.
    let c = v.sqlite();
    let other: String = c
        .query_row(
            "SELECT release_id FROM release_windows WHERE metric = 'build_duration'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        "UPDATE release_windows SET release_id = ?1 WHERE metric = 'builds'",
        [&other],
    )
    .unwrap();
    drop(c);
    let r = v.run(&["report", "builds", "--from", &w1, "--to", &now]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("audit verify"), "{}", r.stderr);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("release index"), "{}", r.stdout);
    // Deleting the row instead: the window is released again and charged again (a fresh
    // draw is never free), and verify names the double release.
    let c = v.sqlite();
    c.execute("DELETE FROM release_windows WHERE metric = 'builds'", [])
        .unwrap();
    drop(c);
    let again = json(&v.run(&[
        "report", "builds", "--from", &w1, "--to", &now, "--format", "json",
    ]));
    assert_eq!(again["charged"], 2.0);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("already released"), "{}", r.stdout);
}

fn edit(v: &Veil, file: &str, from: &str, to: &str) {
    let p = v.path().join(file);
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "{file} lacks {from}");
    std::fs::write(&p, t.replacen(from, to, 1)).unwrap();
}

/// A release the budget cannot pay is refused before any noise is drawn: its audit entry
/// says what was asked and why it was refused, never a noisy outcome that no one paid for
/// (each retry would be a fresh draw an audit reader could average).
#[test]
fn a_refused_release_draws_nothing_and_its_audit_entry_holds_no_outcome() {
    let v = ready();
    let (_w2, w1, now) = weeks();
    edit(
        &v,
        "policy.yaml",
        "budget: { epsilon: 20.0, period: 28d }",
        "budget: { epsilon: 1.0, period: 28d }",
    );
    for _ in 0..5 {
        let r = v.run(&["report", "builds", "--from", &w1, "--to", &now]);
        assert_eq!(r.code, 1, "{}", r.stdout);
        assert!(r.stderr.contains("budget exhausted"), "{}", r.stderr);
    }
    let log = v.run(&["audit", "log", "--format", "json"]);
    assert_eq!(log.code, 0);
    let refused: Vec<serde_json::Value> = log
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "release_refused")
        .map(|e| serde_json::from_str(e["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(refused.len(), 5);
    for d in &refused {
        assert_eq!(d["refused"], "budget_exhausted", "{d}");
        assert_eq!(d["metric"], "builds");
        for noisy in ["outcome", "groups_released", "groups_suppressed", "groups"] {
            assert!(d.get(noisy).is_none(), "{noisy} in a refusal: {d}");
        }
    }
    let spent: i64 = v
        .sqlite()
        .query_row(
            "SELECT COALESCE(SUM(spent_micro), 0) FROM budget_ledger",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(spent, 0);
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
}

/// Stored windows are served as stored, under the floors of today's policy: a team whose
/// roster fell below k is not shown, a raised k hides stored groups with fewer active,
/// and the document states the ε the numbers were released with, not today's.
#[test]
fn stored_windows_keep_their_epsilon_and_obey_todays_floors() {
    let v = ready();
    let first = json(&v.run(&["report", "builds", "--format", "json"]));
    let shown = |d: &serde_json::Value, team: &str| {
        d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["key"]["team"] == team && g["suppressed"] == false)
            .count()
    };
    assert!(shown(&first, "payments") > 0, "{first}");
    // payments shrinks to 3 members; then k rises to 20 and ε of builds drops to 0.5.
    let teams = std::fs::read_to_string(v.path().join("teams.yaml")).unwrap();
    let (mut out, mut in_payments, mut kept) = (String::new(), false, 0);
    for l in teams.lines() {
        if l.starts_with("  ") && !l.starts_with("    ") {
            in_payments = l.starts_with("  payments:");
        }
        if in_payments && l.trim_start().starts_with("- ") {
            kept += 1;
            if kept > 3 {
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    std::fs::write(v.path().join("teams.yaml"), out).unwrap();
    let again = json(&v.run(&["report", "builds", "--format", "json"]));
    assert_eq!(again["charged"], 0.0);
    assert_eq!(shown(&again, "payments"), 0, "{again}");
    assert!(again["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["key"]["team"] == "payments")
        .all(|g| g["reason"] == "roster_below_k" && g.get("value").is_none_or(|v| v.is_null())));
    edit(&v, "policy.yaml", "min_group_size: 5", "min_group_size: 20");
    edit(&v, "policy.yaml", "epsilon: 2.0", "epsilon: 0.5");
    let raised = json(&v.run(&["report", "builds", "--format", "json"]));
    assert_eq!(raised["charged"], 0.0);
    assert_eq!(raised["min_group_size"], 20);
    assert_eq!(
        raised["epsilon_per_window"], first["epsilon_per_window"],
        "released at ε = 2 per window: {raised}"
    );
    assert_eq!(raised["epsilon"], first["epsilon"]);
    for g in raised["groups"].as_array().unwrap() {
        if g["suppressed"] == false {
            assert!(g["active"].as_i64().unwrap() >= 20, "{g}");
        }
    }
}

/// A forged old-format release row is indexed by the upgrade on the next open (the store
/// cannot tell it from a real one before verification), then deleted: its windows are
/// blocked, and `veil audit verify` must say why.
#[test]
fn a_forged_old_release_indexed_by_the_upgrade_is_caught_by_verify() {
    let v = ready();
    let (_w2, w1, now) = weeks();
    let doc = serde_json::json!({
        "release_id": "r-forged", "metric": "builds", "kind": "count", "by": ["team"],
        "from": w1, "to": now, "epsilon": 2.0, "delta": 0.0, "mechanism": "discrete_laplace",
        "budget_left": 0.0, "min_group_size": 5, "interval_half_width": 1.0,
        "windows": [veil_week_label(&w1)], "unlisted_groups_suppressed": false, "groups": []
    });
    v.sqlite()
        .execute(
            "INSERT INTO releases (release_id, query_key, principal, collection, epsilon, created_at, document)
             VALUES ('r-forged', 'k-forged', 'local', 'ci.build_finished', 2.0, 0, ?1)",
            [doc.to_string()],
        )
        .unwrap();
    assert_eq!(v.run(&["status"]).code, 0, "the next open indexes it");
    v.sqlite()
        .execute("DELETE FROM releases WHERE release_id = 'r-forged'", [])
        .unwrap();
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("never recorded"), "{}", r.stdout);
}

/// The ISO week label (`2026-W47`) of a date.
fn veil_week_label(date: &str) -> String {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    let w = d.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}
