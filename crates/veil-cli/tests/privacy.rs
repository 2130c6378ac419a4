//! Acceptance: planted personal data never reaches the data directory or the terminal.

mod common;
use base64::Engine;
use common::*;

/// Strings that must never be stored: every identifier, free text, undeclared value and
/// name, and the generator's planted PII — taken from the event file by plain iteration.
fn needles(events: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = veil_planted();
    for line in events.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let Some(attrs) = v.get("attrs").and_then(|a| a.as_object()) else {
            continue;
        };
        for (k, val) in attrs {
            let declared_safe = [
                "team",
                "status",
                "duration_ms",
                "feature",
                "region",
                "app_version",
                "error_code",
                "cycle_hours",
            ];
            if !declared_safe.contains(&k.as_str()) {
                out.push(k.clone()); // undeclared names count too, where unusual
                if let Some(s) = val.as_str() {
                    out.push(s.to_owned());
                    // Emails and names inside free text.
                    out.extend(
                        s.split(|c: char| c.is_whitespace() || c == '<' || c == '>')
                            .filter(|w| w.contains('@'))
                            .map(str::to_owned),
                    );
                }
            }
        }
    }
    let common_names = [
        "developer",
        "author",
        "user_id",
        "email",
        "message",
        "log_excerpt",
        "title",
        "client_ip",
        "card",
        "ssn",
        "author_name",
        "reviewer_ip",
        "who",
    ];
    out.retain(|s| s.len() >= 8 && !common_names.contains(&s.as_str()));
    out.sort();
    out.dedup();
    out
}

fn veil_planted() -> Vec<String> {
    include_str!("../../../examples/planted-pii.txt")
        .lines()
        .map(String::from)
        .collect()
}

fn forms(s: &str) -> Vec<Vec<u8>> {
    let b = s.as_bytes();
    vec![
        b.to_vec(),
        s.to_lowercase().into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .trim_end_matches('=')
            .as_bytes()
            .to_vec(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(b)
            .into_bytes(),
    ]
}

#[test]
fn planted_pii_never_reaches_the_data_directory_or_the_terminal() {
    let v = Veil::init();
    let events = v.generate(7, true);
    // Keep a reader open so the WAL and shared-memory files survive between commands.
    let hold = v.sqlite();
    let _: i64 = hold
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    let r = v.ingest(&events);
    assert!(r.stdout.contains("field_not_allowed"), "{}", r.stdout);
    assert!(r.stdout.contains("pii_detected"), "{}", r.stdout);
    assert_eq!(v.run(&["seal"]).code, 0);
    for args in [
        &["report", "builds"][..],
        &["report", "feature_usage", "--format", "json"],
        &["report", "errors", "--format", "csv"],
        &["status"],
        &["audit", "log"],
        &["keys", "list"],
    ] {
        let r = v.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    }
    let files = all_files(&v.data_dir());
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("-wal")),
        "the WAL should exist while a reader is open: {names:?}"
    );
    let text = std::fs::read(&events).unwrap();
    let needles = needles(&text);
    assert!(
        needles.len() > 200,
        "the generator plants enough data to make this meaningful: {}",
        needles.len()
    );
    let printed = v.printed.borrow().clone();
    let patterns: Vec<Vec<u8>> = needles.iter().flat_map(|n| forms(n)).collect();
    let ac = aho_corasick::AhoCorasick::new(&patterns).unwrap();
    let check = |label: &str, bytes: &[u8]| {
        if let Some(m) = ac.find(bytes) {
            panic!(
                "{:?} (a form of a planted value) found in {label}",
                String::from_utf8_lossy(&patterns[m.pattern().as_usize()])
            );
        }
    };
    // The check itself must be able to fail: a planted value is found when present.
    assert!(ac.find(format!("xx{}yy", needles[0]).as_bytes()).is_some());
    for (path, bytes) in &files {
        check(&path.display().to_string(), bytes);
    }
    check("the CLI's output", &printed);
    drop(hold);
    // And after the last connection closed and the WAL was checkpointed away.
    for (path, bytes) in all_files(&v.data_dir()) {
        check(&path.display().to_string(), &bytes);
    }
}

#[test]
fn quarantine_keeps_reasons_and_field_names_but_no_values() {
    let v = Veil::init();
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let lines = [
        format!(r#"{{"event":"app.feature_used","time":"{t}","attrs":{{"user_id":"zed@example.com","feature":"search","region":"eu","app_version":"4.1","phone_number":"+1 415 555 0199"}}}}"#),
        format!(r#"{{"event":"app.feature_used","time":"{t}","attrs":{{"user_id":"zed@example.com","feature":"search","region":"eu","app_version":"4.1","zed@example.com":"x"}}}}"#),
    ]
    .join("\n");
    let r = v.run_in(&["ingest", "-"], Some(lines.as_bytes()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = v.sqlite();
    let rows: Vec<(String, String, String)> = c
        .prepare("SELECT reason, message, field_names FROM quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "field_not_allowed");
    assert!(
        rows[0].1.contains("phone_number"),
        "the undeclared field is named: {}",
        rows[0].1
    );
    assert!(rows[0].2.contains("phone_number") && rows[0].2.contains("user_id"));
    assert!(
        rows[1].2.contains("<redacted>"),
        "a field name that is itself personal data is redacted: {}",
        rows[1].2
    );
    let all = format!("{rows:?}{}{}", r.stdout, r.stderr);
    assert!(
        !all.contains("zed@example.com") && !all.contains("555 0199"),
        "{all}"
    );
}
