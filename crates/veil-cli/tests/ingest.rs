//! Acceptance: bad input gets its reason and loses nothing else; re-ingest counts nothing twice.

mod common;
use common::*;

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn good(i: usize, t: &str) -> String {
    format!(
        r#"{{"event":"ci.build_finished","time":"{t}","id":"good-{i}","attrs":{{"developer":"dev{i}@corp.example","team":"web","status":"success","duration_ms":{}}}}}"#,
        1000 + i
    )
}

#[test]
fn every_kind_of_bad_line_is_rejected_with_its_reason_and_the_rest_is_ingested() {
    let v = Veil::init();
    let t = now();
    let mut input: Vec<u8> = Vec::new();
    let mut push = |l: &[u8]| {
        input.extend_from_slice(l);
        input.push(b'\n');
    };
    push(good(1, &t).as_bytes());
    push(br#"{"event": "ci.build_finished", "time": "#); // malformed JSON
    push(good(2, &t).as_bytes());
    let mut utf8 = format!(
        r#"{{"event":"ci.build_finished","time":"{t}","attrs":{{"developer":"MARKER-UTF8-"#
    )
    .into_bytes();
    utf8.extend_from_slice(&[0xc3, 0x28, b'"', b'}', b'}']);
    push(&utf8); // invalid UTF-8
    let huge = format!(
        r#"{{"event":"ci.build_finished","time":"{t}","attrs":{{"developer":"MARKER-HUGE-{}"}}}}"#,
        "x".repeat(10 << 20)
    );
    push(huge.as_bytes()); // a 10 MiB line
    let deep = format!(
        r#"{{"event":"ci.build_finished","time":"{t}","attrs":{{"developer":"MARKER-DEEP","team":{}1{}}}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    push(deep.as_bytes()); // nesting depth 1,000
    push(format!(r#"{{"event":"ci.build_finished","time":"{t}","attrs":{{"developer":"MARKER-TYPE","team":"web","status":"success","duration_ms":"fast"}}}}"#).as_bytes());
    push(
        format!(
            r#"{{"event":"hr.secret_tracking","time":"{t}","attrs":{{"who":"MARKER-UNKNOWN"}}}}"#
        )
        .as_bytes(),
    );
    push(format!(r#"{{"event":"ci.build_finished","time":"{t}","attrs":{{"developer":"MARKER-FIELD","team":"web","status":"success","duration_ms":1,"home_address":"MARKER-ADDRESS"}}}}"#).as_bytes());
    push(r#"{"event":"ci.build_finished","time":"2999-01-01T00:00:00Z","attrs":{"developer":"MARKER-FUTURE","team":"web","status":"success","duration_ms":1}}"#.to_string().as_bytes());
    push(br#"[1, 2, 3]"#);
    push(good(3, &t).as_bytes());
    let r = v.run_in(&["ingest", "-"], Some(&input));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("accepted 3,"), "{}", r.stdout);
    for reason in [
        "malformed_json",
        "invalid_utf8",
        "too_large",
        "too_deep",
        "wrong_type",
        "unknown_event",
        "field_not_allowed",
        "time_in_future",
        "malformed_envelope",
    ] {
        assert!(r.stdout.contains(reason), "{reason} missing: {}", r.stdout);
    }
    // Line numbers and reasons are printed; values are not.
    assert!(r.stderr.contains("line 2: malformed_json"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("line 9: field_not_allowed: field home_address is not declared"),
        "{}",
        r.stderr
    );
    // Nothing of a rejected event is stored outside quarantine, and quarantine holds no values.
    for (path, bytes) in all_files(&v.data_dir()) {
        assert!(
            !contains(&bytes, b"MARKER-"),
            "a rejected value reached {}",
            path.display()
        );
    }
    assert!(!r.stdout.contains("MARKER-") && !r.stderr.contains("MARKER-"));
    let q: i64 = v
        .sqlite()
        .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(q, 9, "one quarantine row per rejected line");
    // --strict turns rejections into exit code 1; unreadable input is exit code 2.
    let r = v.run_in(&["ingest", "--strict", "-"], Some(b"not json\n"));
    assert_eq!(r.code, 1);
    assert_eq!(v.run(&["ingest", "/nonexistent.ndjson"]).code, 2);
}

#[test]
fn reingesting_the_same_file_counts_nothing_twice() {
    let v = Veil::init();
    let events = v.generate(5, false);
    let first = v.ingest(&events);
    let state = |v: &Veil| -> (i64, i64, i64) {
        v.sqlite()
            .query_row("SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(SUM(length(data)), 0) FROM staging_contrib", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
    };
    let segments = |v: &Veil| -> i64 {
        v.sqlite()
            .query_row(
                "SELECT COALESCE(SUM(events), 0) FROM staging_segments",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let before = (state(&v), segments(&v));
    let accepted: usize = first
        .stdout
        .split("accepted ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accepted > 1000);
    let second = v.ingest(&events);
    assert!(
        second
            .stdout
            .contains(&format!("accepted 0, duplicates {accepted}")),
        "{}",
        second.stdout
    );
    assert_eq!(
        (state(&v), segments(&v)),
        before,
        "aggregation state and staging are unchanged"
    );
}

#[test]
fn a_retry_counts_once_whatever_time_it_carries_and_across_a_key_rotation() {
    // Spec §4: "the same (source, id) is counted once" — also when a client re-stamps the
    // event's time on retry, or a key rotation happened in between.
    let v = Veil::init();
    let at = |mins_ago: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(mins_ago))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let ingest = |text: String| v.run_in(&["ingest", "-"], Some(text.as_bytes()));
    let first = ingest(format!("{}\n", good(1, &at(90))));
    assert!(
        first.stdout.contains("accepted 1, duplicates 0"),
        "{}",
        first.stdout
    );
    assert_eq!(v.run(&["keys", "rotate"]).code, 0);
    let retry = ingest(format!("{}\n{}\n", good(1, &at(3)), good(2, &at(3))));
    assert!(
        retry.stdout.contains("accepted 1, duplicates 1"),
        "{}",
        retry.stdout
    );
}
