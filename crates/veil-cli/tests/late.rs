//! Issue 14, item 6: late events are never silent. An event for a sealed window sent
//! over HTTP, OTLP and the CLI is reported as `late` in each, and counted (`/metrics`,
//! `veil status`, `GET /v1/status`). Before, each was answered as accepted and its
//! numbers silently left out.

mod common;

use common::{Gateway, Veil};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;

/// RFC 3339 of `secs` seconds after 09:00 UTC `d` days ago.
fn days_ago(d: i64, secs: i64) -> (i64, String) {
    let day = (chrono::Utc::now() - chrono::Duration::days(d)).date_naive();
    let t = day.and_hms_opt(9, 0, 0).unwrap().and_utc() + chrono::Duration::seconds(secs);
    (t.timestamp(), t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A minute ago: a window no seal can have closed (seal_grace is a day).
fn fresh() -> (i64, String) {
    let t = chrono::Utc::now() - chrono::Duration::seconds(60);
    (t.timestamp(), t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Three days ago: its `active_users` day closed more than the example policy's
/// one-day `seal_grace` ago, so `veil seal` seals it.
fn old(secs: i64) -> (i64, String) {
    days_ago(3, secs)
}

const MARKER: &str = "late-marker-person";

fn event(id: &str, time: &(i64, String)) -> String {
    serde_json::json!({
        "event": "app.feature_used",
        "time": time.1,
        "id": id,
        "attrs": {"user_id": format!("{MARKER}-{id}@example.com"), "feature": "share", "region": "eu"},
    })
    .to_string()
}

/// An OTLP logs request of `app.feature_used` records.
fn otlp(records: &[(&str, (i64, String))]) -> ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let log_records = records
        .iter()
        .map(|(id, (t, _))| LogRecord {
            time_unix_nano: (*t as u64) * 1_000_000_000,
            attributes: vec![
                kv("event.name", "app.feature_used".into()),
                kv("event.id", format!("otlp-{id}")),
                kv("user_id", format!("{MARKER}-{id}@example.com")),
                kv("feature", "share".into()),
                kv("region", "eu".into()),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POST /v1/events; the answer as JSON.
fn post_events(gw: &Gateway, token: &str, ct: &str, body: String) -> serde_json::Value {
    let r = client()
        .post(gw.url("/v1/events"))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_slice(&r.bytes().unwrap()).unwrap()
}

/// POST /v1/logs on the OTLP port in either encoding; (rejected, message) of the
/// partial success (0 and "" when there is none).
fn post_logs(
    gw: &Gateway,
    token: &str,
    req: &ExportLogsServiceRequest,
    json: bool,
) -> (i64, String) {
    let (ct, body) = if json {
        ("application/json", serde_json::to_vec(req).unwrap())
    } else {
        ("application/x-protobuf", req.encode_to_vec())
    };
    let r = client()
        .post(format!("{}/v1/logs", gw.otlp))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().unwrap();
    let resp: ExportLogsServiceResponse = if json {
        serde_json::from_slice(&bytes).unwrap()
    } else {
        ExportLogsServiceResponse::decode(&bytes[..]).unwrap()
    };
    resp.partial_success
        .map(|p| (p.rejected_log_records, p.error_message))
        .unwrap_or_default()
}

/// The `late` rejections of an answer, as indexes.
fn late_indexes(answer: &serde_json::Value) -> Vec<u64> {
    answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|r| {
            if r["reason"] == "late" {
                let m = r["message"].as_str().unwrap();
                assert!(m.contains("already sealed"), "{m}");
            }
        })
        .filter(|r| r["reason"] == "late")
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

fn metric(gw: &Gateway, line: &str) -> bool {
    let text = client()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines().any(|l| l == line)
}

fn staged_events(v: &Veil) -> i64 {
    v.sqlite()
        .query_row(
            "SELECT COALESCE(SUM(events), 0) FROM staging_segments",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn an_event_for_a_sealed_window_is_reported_late_over_http_otlp_and_the_cli_and_counted() {
    let v = Veil::init();
    let token = v.token("ingest");
    let ndjson = |lines: &[String]| format!("{}\n", lines.join("\n"));

    // Before any seal, the old day takes events.
    let r = v.run_in(
        &["ingest", "-"],
        Some(ndjson(&[event("a", &old(0))]).as_bytes()),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("accepted 1,"), "{}", r.stdout);

    // A gateway that starts seals nothing (the first seal waits a maintenance period,
    // and then only windows closed `seal_grace` ago): the old day is still open.
    let gw = Gateway::start(&v);
    let a = post_events(
        &gw,
        &token,
        "application/x-ndjson",
        ndjson(&[event("b", &old(1))]),
    );
    assert_eq!(
        (a["accepted"].as_u64(), late_indexes(&a).len()),
        (Some(1), 0),
        "{a}"
    );
    let seals: i64 = v
        .sqlite()
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'seal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seals, 0, "veil serve sealed at startup");

    // `veil seal` from the command line: the running gateway's door still thinks the
    // old day open, so these are caught when the gateway commits.
    let r = v.run(&["seal"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let a = post_events(
        &gw,
        &token,
        "application/json",
        format!(
            "{{\"events\": [{}, {}, {}]}}",
            event("c", &fresh()),
            event("d", &old(2)),
            event("e", &fresh())
        ),
    );
    assert_eq!(a["accepted"], 2, "{a}");
    assert_eq!(late_indexes(&a), vec![1], "{a}");
    let (n, msg) = post_logs(&gw, &token, &otlp(&[("f", old(3)), ("g", fresh())]), true);
    assert_eq!(n, 1, "{msg}");
    assert!(msg.contains("late"), "{msg}");
    assert!(
        metric(&gw, "veil_events_rejected_total{reason=\"late\"} 2"),
        "/metrics counts both"
    );
    drop(gw);

    // A gateway started after the seal refuses them at the door.
    let gw = Gateway::start(&v);
    let a = post_events(
        &gw,
        &token,
        "application/x-ndjson",
        ndjson(&[
            event("h", &old(4)),
            event("i", &fresh()),
            event("j", &old(5)),
        ]),
    );
    assert_eq!(a["accepted"], 1, "{a}");
    assert_eq!(late_indexes(&a), vec![0, 2], "{a}");
    let (n, msg) = post_logs(&gw, &token, &otlp(&[("k", fresh()), ("l", old(6))]), false);
    assert_eq!(n, 1, "{msg}");
    assert!(msg.contains("late"), "{msg}");
    assert!(metric(&gw, "veil_events_rejected_total{reason=\"late\"} 3"));

    // The CLI: the summary lists `late` under its reason, the line is named, and the
    // exit code is that of any rejection (0, or 1 with --strict).
    let input = ndjson(&[event("m", &fresh()), event("n", &old(7))]);
    let r = v.run_in(&["ingest", "-"], Some(input.as_bytes()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("accepted 1,"), "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["late", "1"])),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("line 2: late: "), "{}", r.stderr);
    let input = ndjson(&[event("o", &old(8))]);
    let r = v.run_in(&["ingest", "--strict", "-"], Some(input.as_bytes()));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);

    // Counted where every rejection is: quarantine, `veil status`, GET /v1/status.
    // d, f (at commit), h, j, l (at the door), n, o (the CLI).
    let r = v.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["late", "7"])),
        "{}",
        r.stdout
    );
    let status: serde_json::Value = serde_json::from_slice(
        &client()
            .get(gw.url("/v1/status"))
            .bearer_auth(v.token("viewer"))
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["rejections_by_reason"]["late"], 7, "{status}");
    // Each kept the day its time fell on (never the time), at the door and at commit
    // alike: the dashboard marks the sealed window that misses them.
    let day = old(0).0 - old(0).0.rem_euclid(86_400);
    assert_eq!(
        veil_store::Store::late_by_day(&v.store(), "app.feature_used", 0).unwrap(),
        vec![(day, 7)]
    );
    let days: Vec<i64> = v
        .sqlite()
        .prepare("SELECT late_day FROM quarantine WHERE reason = 'late'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        days.iter().all(|d| d % 86_400 == 0),
        "days, not times: {days:?}"
    );
    // Nothing late was staged: a, b, c, e, g, i, k, m.
    assert_eq!(staged_events(&v), 8);
    // And no value of a late event was said anywhere.
    assert!(!gw.stderr().contains(MARKER));
    assert!(!common::contains(&v.printed.borrow(), MARKER.as_bytes()));
}
