//! Regressions from the adversarial review (issue 13): each test is one reproduction,
//! named after the hole it pins, and each failed on the code before the fix.

mod common;
use common::*;

/// A collection whose free-form `label` is a grouping dimension.
fn label_policy(label: &str) -> String {
    format!(
        r#"version: 1
organization: Review Corp
defaults: {{ min_group_size: 5, staging_retention: 14d, seal_grace: 1h, budget: {{ epsilon: 10.0, period: 30d }} }}
collections:
  - name: support.ticket
    purpose: {{ what: support ticket labels, question: which support flows are busy, audience: support leads }}
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T-1
    owner: support
    zone: operational
    fields:
      user:  {{ type: string, class: direct_identifier }}
      label: {label}
    metrics:
      - name: tickets
        kind: count
        by: [label]
        window: day
        contributor: user
        epsilon: 1.0
        explain: {{ measures: tickets per label per day, does_not_mean: anything about a person, misread_when: labels change }}
      - name: ticket_people
        kind: distinct
        by: []
        window: day
        contributor: user
        epsilon: 1.0
        explain: {{ measures: people with tickets per day, does_not_mean: anything about a person, misread_when: never }}
"#
    )
}

fn days_ago(d: i64, secs: i64) -> String {
    let now = chrono::Utc::now();
    let t = now - chrono::Duration::days(d);
    // 09:00 that day, but never in the future (a run before 09:00 UTC would send today's
    // events from the future).
    let nine = t.date_naive().and_hms_opt(9, 0, 0).unwrap().and_utc();
    let t = nine.min(now - chrono::Duration::minutes(10)) + chrono::Duration::seconds(secs);
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const VICTIM: &str = "victim.person@example.org";

/// 60 people whose label quotes one person's email, two days ago and three days ago.
fn victim_events() -> String {
    let mut out = String::new();
    for day in [2, 3] {
        for u in 0..60 {
            out.push_str(&format!(
                "{{\"event\":\"support.ticket\",\"time\":\"{}\",\"attrs\":{{\"user\":\"user{u}@corp.example\",\"label\":\"reset link sent to {VICTIM}\"}}}}\n",
                days_ago(day, u)
            ));
        }
    }
    out
}

#[test]
fn lint_refuses_a_redacted_dimension() {
    let v = Veil::init();
    std::fs::write(
        v.path().join("policy.yaml"),
        label_policy("{ type: string, class: attribute, transform: redact, max_length: 200 }"),
    )
    .unwrap();
    let r = v.run(&["policy", "lint"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("1 errors"),
        "the redacted dimension is the only error: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("transform is redact"),
        "the finding says why: {}",
        r.stdout
    );
    // And a policy that fails lint drives nothing.
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn a_flagged_value_never_becomes_a_group_key() {
    let v = Veil::init();
    std::fs::write(
        v.path().join("policy.yaml"),
        label_policy("{ type: string, class: quasi_identifier, max_length: 200, on_pii: redact }"),
    )
    .unwrap();
    let lint = v.run(&["policy", "lint"]);
    assert_eq!(lint.code, 0, "{}", lint.stdout);
    assert!(
        lint.stdout.contains("[redacted]"),
        "lint warns: {}",
        lint.stdout
    );
    let explain = v.run(&["policy", "explain", "tickets"]);
    assert!(
        explain.stdout.contains("[redacted]"),
        "explain says what happens to flagged values: {}",
        explain.stdout
    );
    // Keep a reader open so the WAL and shm files exist while we look.
    let hold = v.sqlite();
    let _: i64 = hold
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    let r = v.run_in(&["ingest", "-"], Some(victim_events().as_bytes()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("accepted 120"), "{}", r.stdout);
    assert_eq!(v.run(&["seal"]).code, 0);
    let mut shown = String::new();
    for fmt in ["table", "json", "csv"] {
        let r = v.run(&["report", "tickets", "--format", fmt]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        shown.push_str(&r.stdout);
    }
    assert!(
        shown.contains("[redacted]"),
        "60 people are counted under the fixed group: {shown}"
    );
    let needles = [VICTIM, "victim.person", "reset link sent to"];
    let printed = v.printed.borrow().clone();
    for n in needles {
        assert!(!contains(&printed, n.as_bytes()), "{n} printed");
        for (p, bytes) in all_files(&v.data_dir()) {
            assert!(
                !contains(&bytes, n.as_bytes()),
                "{n} found in {}",
                p.display()
            );
        }
    }
    drop(hold);
    for n in needles {
        for (p, bytes) in all_files(&v.data_dir()) {
            assert!(
                !contains(&bytes, n.as_bytes()),
                "{n} found in {}",
                p.display()
            );
        }
    }
}

/// Reads the live epochs' keys straight from the vault file, as someone holding a copy
/// of both the data directory and the vault could.
fn live_keys(v: &Veil) -> veil_pipeline::KeyRing {
    use veil_store::Vault;
    let vault = veil_store::FileVault::open(&v.vault_dir()).unwrap();
    veil_pipeline::KeyRing::new(vault.epochs().unwrap(), &vault.dedupe_secret().unwrap())
}

#[test]
fn per_contributor_state_holds_no_pseudonym_and_is_encrypted() {
    let v = Veil::init();
    std::fs::write(
        v.path().join("policy.yaml"),
        label_policy("{ type: string, class: quasi_identifier, values: [billing, login, other] }"),
    )
    .unwrap();
    // Today's window is open: the state of two metrics sits in staging.
    let mut ev = String::new();
    for u in 0..20 {
        for label in ["billing", "login"] {
            ev.push_str(&format!(
                "{{\"event\":\"support.ticket\",\"time\":\"{}\",\"attrs\":{{\"user\":\"user{u}@corp.example\",\"label\":\"{label}\"}}}}\n",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
            ));
        }
    }
    let r = v.run_in(&["ingest", "-"], Some(ev.as_bytes()));
    assert!(r.stdout.contains("accepted 40"), "{}", r.stdout);
    let keys = live_keys(&v);
    let now = chrono::Utc::now().timestamp();
    let mut forbidden: Vec<Vec<u8>> = Vec::new();
    for u in 0..20 {
        let id = format!("user{u}@corp.example");
        let ident = veil_pipeline::Identifier::new(std::borrow::Cow::Borrowed(&id), true);
        for e in keys.epochs() {
            let (_, p) = keys
                .pseudonym_at(e.start.max(now - 86_400), &ident)
                .unwrap();
            let enc = p.encode();
            forbidden.push(enc.clone().into_bytes());
            use base64::Engine;
            forbidden.push(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&enc)
                    .unwrap(),
            );
        }
        forbidden.push(id.into_bytes());
    }
    let files = all_files(&v.data_dir());
    for f in &forbidden {
        for (p, bytes) in &files {
            assert!(
                !contains(bytes, f),
                "a pseudonym or identifier found in {}",
                p.display()
            );
        }
    }
    // Group names of the state are not in clear either.
    let c = v.sqlite();
    let blobs: Vec<Vec<u8>> = c
        .prepare("SELECT data FROM staging_contrib")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!blobs.is_empty());
    for b in &blobs {
        assert!(!contains(b, b"billing") && !contains(b, b"login"));
    }
}

#[test]
fn a_repeated_key_is_rejected_even_after_null() {
    let v = Veil::init();
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let lines = [
        format!(r#"{{"event":"app.feature_used","time":"{t}","attrs":{{"user_id":null,"user_id":"b@x.example","feature":"search","region":"eu","app_version":"4.1"}}}}"#),
        format!(r#"{{"event":"app.feature_used","time":"{t}","attrs":{{"user_id":"b@x.example","feature":"search","feature":null,"region":"eu","app_version":"4.1"}}}}"#),
    ]
    .join("\n");
    let r = v.run_in(&["ingest", "-"], Some(lines.as_bytes()));
    assert!(r.stdout.contains("accepted 0"), "{}", r.stdout);
    assert!(r.stdout.contains("duplicate_field"), "{}", r.stdout);
}

/// A data directory with ingested, sealed and released data, its log verified.
fn released() -> Veil {
    let v = Veil::init();
    let events = v.generate(5, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    let r = v.run(&["report", "builds"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    v
}

/// Deletes the entries matching `drop` and rewrites the rest into a consistent chain
/// with a matching `audit.head`: what someone who can write the data directory can do.
fn rewrite_chain(v: &Veil, drop: &dyn Fn(&str, &str) -> bool) -> usize {
    let c = v.sqlite();
    let rows: Vec<(i64, String, String, String, String)> = c
        .prepare("SELECT seq, at, actor, action, detail FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    c.execute("DELETE FROM audit", []).unwrap();
    let mut prev = veil_store::audit::GENESIS.to_owned();
    let mut seq = 0;
    let mut dropped = 0;
    for (_, at, actor, action, detail) in rows {
        if drop(&action, &detail) {
            dropped += 1;
            continue;
        }
        seq += 1;
        let hash = veil_store::audit::entry_hash(&prev, seq, &at, &actor, &action, &detail);
        c.execute(
            "INSERT INTO audit (seq, at, actor, action, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![seq, at, actor, action, detail, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
    std::fs::write(v.data_dir().join("audit.head"), format!("{seq} {prev}\n")).unwrap();
    dropped
}

#[test]
fn a_consistent_rewrite_of_the_chain_is_caught_by_a_kept_anchor() {
    let v = released();
    let head = v.run(&["audit", "head"]);
    assert_eq!(head.code, 0, "{}", head.stderr);
    let a: serde_json::Value = serde_json::from_str(head.stdout.trim()).unwrap();
    assert!(a["seq"].as_i64().unwrap() > 3 && a["hash"].as_str().unwrap().len() == 64);
    assert!(a["at"].as_str().unwrap().ends_with('Z'));
    let outside = tempfile::tempdir().unwrap();
    let anchor = outside.path().join("anchor.json");
    std::fs::write(&anchor, &head.stdout).unwrap();
    let r = v.run(&["audit", "verify", "--anchor", anchor.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    // Delete the ingest entries and recompute every hash and the head file.
    assert!(rewrite_chain(&v, &|action, _| action == "ingest") > 0);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(
        r.code, 0,
        "without an anchor the rewrite is consistent: {}",
        r.stdout
    );
    let r = v.run(&["audit", "verify", "--anchor", anchor.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("rewritten") || r.stdout.contains("truncated"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_missing_head_file_is_a_verification_failure() {
    let v = released();
    std::fs::remove_file(v.data_dir().join("audit.head")).unwrap();
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("audit.head"), "{}", r.stdout);
    std::fs::write(v.data_dir().join("audit.head"), "garbage").unwrap();
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "an unreadable head too: {}", r.stdout);
}

#[test]
fn an_edited_release_document_is_caught_and_never_served() {
    let v = released();
    let c = v.sqlite();
    let doc: String = c
        .query_row("SELECT document FROM releases", [], |r| r.get(0))
        .unwrap();
    let edited = doc.replacen("\"budget_left\":", "\"budget_left\":1", 1);
    assert_ne!(doc, edited);
    c.execute("UPDATE releases SET document = ?1", [&edited])
        .unwrap();
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("was changed"), "{}", r.stdout);
    let r = v.run(&["report", "builds", "--format", "json"]);
    assert_ne!(r.code, 0);
    assert!(!r.stdout.contains(&edited));
    // Deleting a stored release is caught as well.
    c.execute("UPDATE releases SET document = ?1", [&doc])
        .unwrap();
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
    c.execute("DELETE FROM releases", []).unwrap();
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("missing from the store"), "{}", r.stdout);
}

#[test]
fn deleting_ledger_rows_gives_no_budget_back() {
    let v = Veil::init();
    let events = v.generate(5, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    // A budget of ε = 3 for a period's data: three releases of ε = 1 of last week (by
    // status, the total, the duration histogram) spend it; builds (ε = 2) is refused.
    let policy = std::fs::read_to_string(v.path().join("policy.yaml")).unwrap();
    std::fs::write(
        v.path().join("policy.yaml"),
        policy.replace("budget: { epsilon: 20.0", "budget: { epsilon: 3.5"),
    )
    .unwrap();
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let monday = today - chrono::Duration::days(today.weekday().num_days_from_monday() as i64 + 7);
    let (from, to) = (
        monday.to_string(),
        (monday + chrono::Duration::days(7)).to_string(),
    );
    let mut spent = 0;
    for (metric, by) in [
        ("build_outcomes", "status"),
        ("build_outcomes", ""),
        ("build_duration", "team"),
        ("builds", "team"),
    ] {
        let r = v.run(&["report", metric, "--by", by, "--from", &from, "--to", &to]);
        if r.code != 0 {
            assert!(r.stderr.contains("budget"), "{}", r.stderr);
            break;
        }
        assert!(!r.stdout.contains("released before"), "{}", r.stdout);
        spent += 1;
    }
    assert_eq!(spent, 3, "ε = 1 + 1 + 1.5 out of 3.5; builds costs 2");
    let week = |_: i64| from.clone();
    v.sqlite().execute("DELETE FROM budget_ledger", []).unwrap();
    let r = v.run(&[
        "report",
        "build_duration",
        "--by",
        "",
        "--from",
        &week(1),
        "--to",
        &to,
    ]);
    assert_ne!(
        r.code, 0,
        "a deleted ledger row gives nothing back: {}",
        r.stdout
    );
    assert!(!r.stdout.contains("release r-"), "{}", r.stdout);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("ledger"), "{}", r.stdout);
}

#[test]
fn the_gateway_anchors_heads_outside_the_data_directory() {
    let v = Veil::init();
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("anchors.jsonl");
    let witness = outside.path().join("witness.jsonl");
    // An anchor inside the data directory is refused at load.
    v.append_config("[audit]\nanchor_file = \"data/anchors.jsonl\"");
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("outside data_dir"), "{}", r.stderr);
    let cfg = std::fs::read_to_string(v.path().join("veil.toml")).unwrap();
    let cfg = cfg.replace(
        "anchor_file = \"data/anchors.jsonl\"",
        &format!(
            "anchor_file = \"{}\"\nanchor_command = [\"sh\", \"-c\", \"cat >> {}\"]",
            file.display(),
            witness.display()
        ),
    );
    std::fs::write(v.path().join("veil.toml"), cfg).unwrap();
    let mut gw = Gateway::start(&v);
    // The start anchor is written off the request path: wait for it (under a loaded
    // machine it may come after the first request otherwise, and then equal the last).
    let waited = std::time::Instant::now();
    while std::fs::read_to_string(&file).map_or(true, |a| a.is_empty())
        && waited.elapsed() < std::time::Duration::from_secs(20)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        "{{\"event\":\"app.feature_used\",\"time\":\"{t}\",\"attrs\":{{\"user_id\":\"a@x.example\",\"feature\":\"search\",\"region\":\"eu\",\"app_version\":\"4.1\"}}}}\n"
    );
    let resp = reqwest::blocking::Client::new()
        .post(gw.url("/v1/events"))
        .bearer_auth(v.token("ingest"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(gw.terminate().success());
    let anchors = std::fs::read_to_string(&file).unwrap();
    assert!(
        anchors.lines().count() >= 2,
        "at start and at shutdown: {anchors}"
    );
    assert_eq!(anchors, std::fs::read_to_string(&witness).unwrap());
    let last: serde_json::Value = serde_json::from_str(anchors.lines().last().unwrap()).unwrap();
    let head = v.run(&["audit", "head"]);
    let head: serde_json::Value = serde_json::from_str(head.stdout.trim()).unwrap();
    assert_eq!(
        last, head,
        "the last anchor is the head after the last commit"
    );
    // verify reads the configured anchor file by itself.
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("anchor(s) held"), "{}", r.stdout);
    rewrite_chain(&v, &|action, _| action == "ingest");
    let r = v.run(&["audit", "verify"]);
    assert_eq!(
        r.code, 1,
        "a consistent rewrite is caught by the gateway's anchors: {}",
        r.stdout
    );
}

fn feature_event(user: &str, extra: &str) -> String {
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    format!(
        "{{\"event\":\"app.feature_used\",\"time\":\"{t}\",\"attrs\":{{\"user_id\":{user},\"feature\":\"search\",\"region\":\"eu\",\"app_version\":\"4.1\"{extra}}}}}"
    )
}

#[test]
fn repeated_keys_are_rejected_at_any_depth() {
    let v = Veil::init();
    let lines = [
        // In a nested object (a nested value is never a field, but the repeat is named).
        feature_event("\"a@x.example\"", ",\"ctx\":{\"k\":1,\"k\":2}"),
        // In the envelope itself.
        feature_event("\"a@x.example\"", "").replacen(
            "\"event\":",
            "\"time\":\"2026-01-01T00:00:00Z\",\"event\":",
            1,
        ),
    ]
    .join("\n");
    let r = v.run_in(&["ingest", "-"], Some(lines.as_bytes()));
    assert!(r.stdout.contains("accepted 0"), "{}", r.stdout);
    assert!(
        r.stdout.contains("duplicate_field          2"),
        "{}",
        r.stdout
    );
}

#[test]
fn ingesting_the_same_file_twice_counts_events_without_ids_once() {
    let v = Veil::init();
    let file = v.path().join("no-ids.ndjson");
    let body: Vec<String> = (0..5)
        .map(|u| feature_event(&format!("\"u{u}@x.example\""), ""))
        .collect();
    // Two identical lines are two events: both count.
    let mut lines = body.clone();
    lines.push(body[0].clone());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let first = v.run(&["ingest", file.to_str().unwrap()]);
    assert!(
        first.stdout.contains("accepted 6, duplicates 0"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("6 events had no id"),
        "{}",
        first.stdout
    );
    let again = v.run(&["ingest", file.to_str().unwrap()]);
    assert!(
        again.stdout.contains("accepted 0, duplicates 6"),
        "{}",
        again.stdout
    );
    // A blank line added, events appended, or another account ingesting: still once.
    let mut grown = vec![String::new()];
    grown.extend(lines.iter().cloned());
    grown.push(feature_event("\"late@x.example\"", ""));
    std::fs::write(&file, grown.join("\n") + "\n").unwrap();
    let grown_run = v.run(&["ingest", file.to_str().unwrap()]);
    assert!(
        grown_run.stdout.contains("accepted 1, duplicates 6"),
        "{}",
        grown_run.stdout
    );
    let token = v.token("ingest");
    let other = v.run_env(
        &["--as", "ingest", "ingest", file.to_str().unwrap()],
        None,
        &[("VEIL_TOKEN", token.as_str())],
    );
    assert!(
        other.stdout.contains("accepted 0, duplicates 7"),
        "{}{}",
        other.stdout,
        other.stderr
    );
}

#[test]
fn a_byte_order_mark_is_accepted_and_a_fraction_for_an_integer_is_a_type_error() {
    let v = Veil::init();
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let mut input = b"\xef\xbb\xbf".to_vec();
    input.extend_from_slice(feature_event("\"a@x.example\"", "").as_bytes());
    input.push(b'\n');
    input.extend_from_slice(format!(
        "{{\"event\":\"ci.build_finished\",\"time\":\"{t}\",\"attrs\":{{\"developer\":\"d@x.example\",\"team\":\"web\",\"status\":\"success\",\"duration_ms\":5.5}}}}\n"
    ).as_bytes());
    let r = v.run_in(&["ingest", "-"], Some(&input));
    assert!(r.stdout.contains("accepted 1"), "{}", r.stdout);
    assert!(r.stdout.contains("wrong_type"), "{}", r.stdout);
    assert!(!r.stdout.contains("out_of_range"), "{}", r.stdout);
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn low_privilege_and_anonymous_callers_learn_nothing_and_cost_nothing() {
    let v = Veil::init();
    v.append_config(&format!(
        "[[principal]]\nname = \"second-analyst\"\nroles = [\"analyst\"]\ntoken_sha256 = \"{}\"",
        hex_sha256("veil_second_analyst")
    ));
    let events = v.generate(4, false);
    v.ingest(&events);
    let seal = v.run(&["seal"]);
    assert!(
        !seal.stdout.contains("groups"),
        "no group counts: {}",
        seal.stdout
    );
    let gw = Gateway::start(&v);
    let http = reqwest::blocking::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(gw.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    // A release by one analyst; a second analyst reads the same stored numbers, and both
    // see the collection's budget (it protects people, not principals).
    let json = |r: reqwest::blocking::Response| -> serde_json::Value {
        serde_json::from_slice(&r.bytes().unwrap()).unwrap()
    };
    let first = json(get("/v1/reports/builds", Some(&v.token("analyst"))));
    let again = json(get("/v1/reports/builds", Some("veil_second_analyst")));
    assert_eq!(first["release_id"], again["release_id"]);
    assert_eq!(first["groups"], again["groups"]);
    assert!(first["budget_left"].as_f64().unwrap() < 20.0);
    assert_eq!(
        again["budget_left"], first["budget_left"],
        "one budget per collection and period, whoever reads"
    );
    assert_eq!(
        again["charged"], 0.0,
        "reading stored windows costs nothing"
    );
    // /metrics is open to scrapers and names no principal.
    let metrics = get("/metrics", None).text().unwrap();
    assert!(metrics.contains("veil_budget_spent_epsilon"), "{metrics}");
    for name in ["analyst", "second-analyst", "ingest", "viewer"] {
        assert!(
            !metrics.contains(&format!("\"{name}\"")),
            "{name} in {metrics}"
        );
    }
    // A source reads no status.
    assert_eq!(
        get("/v1/status", Some(&v.token("ingest")))
            .status()
            .as_u16(),
        403
    );
    // A thousand anonymous requests are one audit entry a minute, not a thousand.
    let before: i64 = v
        .sqlite()
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    for _ in 0..1000 {
        assert_eq!(get("/v1/audit", None).status().as_u16(), 401);
    }
    let mut gw = gw;
    assert!(gw.terminate().success());
    let c = v.sqlite();
    let after: i64 = c
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(
        after - before <= 6,
        "{} audit rows for 1,000 refusals",
        after - before
    );
    let details: Vec<String> = c
        .prepare("SELECT detail FROM audit WHERE action = 'denied'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let counted: u64 = details
        .iter()
        .flat_map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["counts"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter(|c| c["endpoint"] == "/v1/audit")
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1000, "every refusal is counted: {details:?}");
}

#[test]
fn undeclared_names_shaped_like_a_person_are_not_kept() {
    let v = Veil::init();
    let line = feature_event(
        "\"a@x.example\"",
        ",\"margarethe.vandersloot\":1,\"retry_count\":2",
    );
    let r = v.run_in(&["ingest", "-"], Some(line.as_bytes()));
    assert!(r.stdout.contains("field_not_allowed"), "{}", r.stdout);
    let printed = v.printed.borrow().clone();
    assert!(!contains(&printed, b"vandersloot"));
    let names: String = v
        .sqlite()
        .query_row("SELECT field_names || message FROM quarantine", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!names.contains("vandersloot"), "{names}");
    assert!(
        names.contains("retry_count") && names.contains("<redacted>"),
        "{names}"
    );
}

/// Eleven spellings of one address (issue 13 §7).
const SPELLINGS: [&str; 11] = [
    "Alice.Smith@Example.com",
    " alice.smith@example.com ",
    "alice.smith@example.com",
    "ALICE.SMITH@EXAMPLE.COM",
    "alice.smith\u{200b}@example.com",
    "alice.smith@example.com.",
    "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}.smith\u{ff20}example.com",
    "\u{feff}alice.smith@example.com",
    "alice.smith@example.com\t",
    "Alice.Smith@example.COM\u{202c}",
    "alice.smi\u{00AD}th@example.com",
];

fn contributors_for(normalize: &str) -> i64 {
    let v = Veil::init();
    std::fs::write(
        v.path().join("policy.yaml"),
        label_policy("{ type: string, class: attribute, values: [billing] }").replace(
            "user:  { type: string, class: direct_identifier }",
            &format!("user:  {{ type: string, class: direct_identifier{normalize} }}"),
        ),
    )
    .unwrap();
    let mut ev = String::new();
    for (i, u) in SPELLINGS.iter().enumerate() {
        ev.push_str(
            &serde_json::json!({"event": "support.ticket", "time": days_ago(2, i as i64),
                "attrs": {"user": u, "label": "billing"}})
            .to_string(),
        );
        ev.push('\n');
    }
    let r = v.run_in(&["ingest", "-"], Some(ev.as_bytes()));
    assert!(r.stdout.contains("accepted 11"), "{}{}", r.stdout, r.stderr);
    assert_eq!(v.run(&["seal"]).code, 0);
    v.sqlite()
        .query_row(
            "SELECT contributors FROM aggregates WHERE metric = 'ticket_people'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn one_person_spelled_eleven_ways_is_one_contributor() {
    assert_eq!(contributors_for(""), 1);
    // The policy can turn normalization off: then every spelling is its own pseudonym.
    assert_eq!(contributors_for(", normalize: false"), 11);
}

#[test]
fn seal_forgets_ids_of_events_past_the_staging_retention() {
    let v = Veil::init();
    let policy = label_policy("{ type: string, class: attribute, values: [billing] }");
    std::fs::write(v.path().join("policy.yaml"), &policy).unwrap();
    let batch = |day: i64, tag: &str| {
        let mut s = String::new();
        for u in 0..50 {
            s.push_str(&serde_json::json!({"event": "support.ticket", "time": days_ago(day, u),
                "id": format!("{tag}-{u}"), "attrs": {"user": format!("u{u}@x.example"), "label": "billing"}}).to_string());
            s.push('\n');
        }
        s
    };
    for (day, tag) in [(5, "old"), (0, "new")] {
        let r = v.run_in(&["ingest", "-"], Some(batch(day, tag).as_bytes()));
        assert!(r.stdout.contains("accepted 50"), "{}", r.stdout);
    }
    let runs = |v: &Veil| -> i64 {
        v.sqlite()
            .query_row(
                "SELECT COALESCE(SUM(n), 0) FROM staging_seen_runs",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(runs(&v), 100);
    // With a 14-day retention nothing is forgotten; with 1 day the old ids go.
    let r = v.run(&["purge"]);
    assert!(!r.stdout.contains("idempotency"), "{}", r.stdout);
    std::fs::write(
        v.path().join("policy.yaml"),
        policy.replace("staging_retention: 14d", "staging_retention: 1d"),
    )
    .unwrap();
    let r = v.run(&["purge"]);
    assert!(r.stdout.contains("idempotency: 50 ids"), "{}", r.stdout);
    assert_eq!(runs(&v), 50);
    let log = v.run(&["audit", "log"]).stdout;
    assert!(
        log.contains("purge") && log.contains("\"dedupe_ids\":50"),
        "{log}"
    );
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
    // The remembered ones still count once.
    let r = v.run_in(&["ingest", "-"], Some(batch(0, "new").as_bytes()));
    assert!(r.stdout.contains("duplicates 50"), "{}", r.stdout);
}

/// Appends one correctly hashed entry, as someone who can write the data directory can,
/// and moves `audit.head` to it.
fn append_forged(v: &Veil, actor: &str, action: &str, detail: &serde_json::Value) {
    let c = v.sqlite();
    let (seq, prev): (i64, String) = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let at = "2026-12-01T00:00:00Z";
    let detail = detail.to_string();
    let hash = veil_store::audit::entry_hash(&prev, seq + 1, at, actor, action, &detail);
    c.execute(
        "INSERT INTO audit (seq, at, actor, action, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![seq + 1, at, actor, action, detail, prev, hash],
    )
    .unwrap();
    std::fs::write(
        v.data_dir().join("audit.head"),
        format!("{} {hash}\n", seq + 1),
    )
    .unwrap();
}

/// ε spent on the builds collection's data of the newest released window's period.
fn spent_now(v: &Veil) -> f64 {
    let r = v.run(&["report", "builds", "--dry-run", "--format", "json"]);
    let p = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap();
    p["budget"].as_f64().unwrap() - p["budget_left"].as_f64().unwrap()
}

#[test]
fn an_appended_negative_charge_gives_no_budget_back_and_fails_verification() {
    let v = released();
    let before = spent_now(&v);
    assert!(before > 0.0);
    let (principal, collection, period): (String, String, i64) = v
        .sqlite()
        .query_row(
            "SELECT principal, collection, period_start FROM budget_ledger",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let doc = "{}";
    v.sqlite()
        .execute(
            "INSERT INTO releases (release_id, query_key, principal, collection, epsilon, created_at, document) VALUES ('r-forged', 'k-forged', ?1, ?2, -1.0, 0, ?3)",
            rusqlite::params![principal, collection, doc],
        )
        .unwrap();
    append_forged(
        &v,
        &principal,
        "release",
        &serde_json::json!({"release_id": "r-forged", "query_key": "k-forged",
            "document_sha256": veil_store::audit::document_hash(doc),
            "charges": [{"principal": principal, "collection": collection, "period_start": period, "epsilon_micro": -1_000_000}]}),
    );
    v.sqlite()
        .execute("UPDATE budget_ledger SET spent_micro = 0", [])
        .unwrap();
    assert_eq!(spent_now(&v), before, "a negative charge refunds nothing");
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
}

#[test]
fn a_replaced_release_without_a_charge_is_caught_and_not_served() {
    let v = released();
    let c = v.sqlite();
    let (key, principal, collection): (String, String, String) = c
        .query_row(
            "SELECT query_key, principal, collection FROM releases",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    c.execute("UPDATE releases SET query_key = 'moved-away'", [])
        .unwrap();
    let doc = r#"{"forged":999999}"#;
    c.execute(
        "INSERT INTO releases (release_id, query_key, principal, collection, epsilon, created_at, document) VALUES ('r-1111', ?1, ?2, ?3, 1.0, 0, ?4)",
        rusqlite::params![key, principal, collection, doc],
    )
    .unwrap();
    append_forged(
        &v,
        &principal,
        "release",
        &serde_json::json!({"release_id": "r-1111", "query_key": key,
            "document_sha256": veil_store::audit::document_hash(doc), "charges": []}),
    );
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let r = v.run(&["report", "builds"]);
    assert!(!r.stdout.contains("999999"), "{}", r.stdout);
    assert_ne!(r.code, 0);
}

#[test]
fn a_store_made_before_releases_were_bound_is_baselined_once_and_keeps_working() {
    let v = released();
    // Make it look like an old store: release entries without their binding, no index.
    let c = v.sqlite();
    c.execute("DELETE FROM release_index", []).unwrap();
    c.execute("DELETE FROM release_windows", []).unwrap();
    drop(c);
    rewrite_chain(&v, &|_, _| false); // (recomputes nothing yet; keeps every entry)
    let c = v.sqlite();
    let rows: Vec<(i64, String)> = c
        .prepare("SELECT seq, detail FROM audit WHERE action = 'release'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (seq, detail) in rows {
        let mut d: serde_json::Value = serde_json::from_str(&detail).unwrap();
        for k in ["document_sha256", "charges", "query_key"] {
            d.as_object_mut().unwrap().remove(k);
        }
        c.execute(
            "UPDATE audit SET detail = ?1 WHERE seq = ?2",
            rusqlite::params![d.to_string(), seq],
        )
        .unwrap();
    }
    drop(c);
    rewrite_chain(&v, &|_, _| false);
    // The new version records a baseline once, then everything works and verifies.
    let r = v.run(&["report", "builds"]);
    assert_eq!(r.code, 0, "reports still work: {}", r.stderr);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let log = v.run(&["audit", "log"]).stdout;
    assert_eq!(log.matches("binding_baseline").count(), 1, "{log}");
    assert!(spent_now(&v) > 0.0, "the old charges still count");
    // Changes after the baseline are caught as before.
    v.sqlite()
        .execute("UPDATE releases SET document = document || ' '", [])
        .unwrap();
    assert_eq!(v.run(&["audit", "verify"]).code, 1);
}

#[test]
fn a_crafted_nested_object_is_refused_quickly() {
    let v = Veil::init();
    let keys: Vec<String> = (0..6400).map(|i| format!("\"{i:04x}\":0")).collect();
    let nested = format!("{{{}}}", keys.join(","));
    let line = feature_event("\"a@x.example\"", &format!(",\"ctx\":{nested}"));
    let input: String = (0..50).map(|_| line.clone() + "\n").collect();
    let t = std::time::Instant::now();
    let r = v.run_in(&["ingest", "-"], Some(input.as_bytes()));
    assert!(r.stdout.contains("accepted 0"), "{}", r.stdout);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}
