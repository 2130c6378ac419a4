//! The gateway (`veil serve`) as clients see it: the real binary on loopback, a real
//! OpenTelemetry SDK exporter, crashes, overload and bad input.

mod common;

use common::{Gateway, Veil};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn ts(secs_ago: i64) -> String {
    chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - secs_ago, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// An `app.feature_used` event whose retained `app_version` is a unique marker.
fn event(seq: u64, user: u64, secs_ago: i64, with_id: bool) -> String {
    let mut e = serde_json::json!({
        "event": "app.feature_used",
        "time": ts(secs_ago),
        "attrs": {"user_id": format!("user{user}@example.com"), "feature": "share", "region": "eu", "app_version": format!("s{seq}")},
    });
    if with_id {
        e["id"] = format!("k{seq}").into();
    }
    e.to_string()
}

fn ndjson(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// `app_version` markers of every event in staging, decrypted with the vault's keys.
fn staged_markers(v: &Veil) -> HashMap<String, usize> {
    let store = v.store();
    use veil_store::Store;
    let keys = store.key_ring().unwrap();
    let mut out = HashMap::new();
    for row in store.staging_payloads("app.feature_used", &keys).unwrap() {
        let r: serde_json::Value = serde_json::from_str(&row).unwrap();
        if let Some(m) = r["attrs"]["app_version"].as_str() {
            *out.entry(m.to_owned()).or_default() += 1;
        }
    }
    out
}

fn counts(v: &Veil) -> (i64, i64) {
    let c = v.sqlite();
    let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        q("SELECT COALESCE(SUM(events), 0) FROM staging_segments"),
        q("SELECT COUNT(*) FROM quarantine"),
    )
}

fn post(
    c: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    ct: &str,
    body: impl Into<reqwest::blocking::Body>,
) -> reqwest::blocking::Response {
    c.post(url)
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .unwrap()
}

fn reason(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap_or_default();
    (
        status,
        v["error"]["reason"].as_str().unwrap_or("").to_owned(),
    )
}

// ---- the OpenTelemetry SDK, configured as a user would ----

/// The SDK's own reqwest client, recording every response so the test can read what
/// the exporter was told.
#[derive(Debug, Clone)]
struct Recording {
    inner: reqwest::blocking::Client,
    seen: Arc<Mutex<Vec<(u16, Vec<u8>)>>>,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Recording {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let resp = self.inner.send_bytes(request).await?;
        self.seen
            .lock()
            .unwrap()
            .push((resp.status().as_u16(), resp.body().to_vec()));
        Ok(resp)
    }
}

#[test]
fn an_opentelemetry_sdk_exporter_feeds_reports_and_sees_partial_success() {
    use opentelemetry::logs::{LogRecord, Logger, LoggerProvider};
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use prost::Message;

    let v = Veil::init();
    let gw = Gateway::start(&v);
    let recording = Recording {
        inner: reqwest::blocking::Client::new(),
        seen: Default::default(),
    };
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_http_client(recording.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/logs", gw.otlp))
        .with_headers(HashMap::from([(
            "authorization".to_string(),
            format!("Bearer {}", v.token("ingest")),
        )]))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let logger = provider.logger("checkout-service");
    let three_days_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
    for user in 0..400u64 {
        let mut r = logger.create_log_record();
        r.set_timestamp(three_days_ago);
        r.set_body("feature used".into());
        r.add_attribute("event.name", "app.feature_used");
        r.add_attribute("user_id", format!("otel-user-{user}@example.com"));
        r.add_attribute("feature", "share");
        r.add_attribute("region", "eu");
        logger.emit(r);
    }
    // One record with an attribute the policy does not declare.
    let mut bad = logger.create_log_record();
    bad.set_timestamp(three_days_ago);
    bad.add_attribute("event.name", "app.feature_used");
    bad.add_attribute("user_id", "someone@example.com");
    bad.add_attribute("feature", "share");
    bad.add_attribute("region", "eu");
    bad.add_attribute("password", "hunter2-planted");
    logger.emit(bad);
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();

    let seen = recording.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 401, "the simple processor exports each record");
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:?}");
    let partial: Vec<_> = seen
        .iter()
        .filter_map(|(_, b)| {
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
                &b[..],
            )
            .unwrap()
            .partial_success
        })
        .collect();
    assert_eq!(partial.len(), 1, "exactly the bad record is reported");
    assert_eq!(partial[0].rejected_log_records, 1);
    assert!(
        partial[0].error_message.contains("field_not_allowed"),
        "{}",
        partial[0].error_message
    );

    // The events reach a report: seal the closed day, then an analyst releases it.
    let r = v.run(&["seal"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let day = |ago: i64| {
        (chrono::Utc::now() - chrono::Duration::days(ago))
            .format("%Y-%m-%d")
            .to_string()
    };
    let url = gw.url(&format!(
        "/v1/reports/active_users?by=region&from={}&to={}",
        day(3),
        day(2)
    ));
    let resp = client()
        .get(&url)
        .bearer_auth(v.token("analyst"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    let eu = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"]["region"] == "eu")
        .unwrap_or_else(|| panic!("no eu group in {doc}"));
    assert_eq!(eu["suppressed"], false, "{eu}");
    let value = eu["value"].as_f64().unwrap_or_else(|| panic!("{eu}"));
    assert!(
        (value - 400.0).abs() < 60.0,
        "400 distinct users, noisy: {value}"
    );
    // The rejected value went nowhere: not the data directory, not the server's log.
    assert!(!gw.stderr().contains("hunter2"));
    for (path, bytes) in common::all_files(&v.data_dir()) {
        // Nor the identifiers the SDK sent: they exist only as pseudonyms.
        for planted in [&b"hunter2-planted"[..], b"@example.com", b"otel-user-"] {
            assert!(!common::contains(&bytes, planted), "{}", path.display());
        }
    }
}

// ---- durability ----

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    Acked,
    Refused,
    Unknown,
}

/// Sends `requests` batches of `per` events (unique ids and markers) from `threads`
/// threads until told to stop; returns each event sequence number's fate.
fn load(
    base: &str,
    token: &str,
    threads: u64,
    per: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<(u64, Fate)>>> {
    (0..threads)
        .map(|t| {
            let (url, token, stop) = (format!("{base}/v1/events"), token.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let mut fates = Vec::new();
                let mut batch = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let first = (t * 1_000_000) + batch * per;
                    let lines: Vec<String> = (first..first + per)
                        .map(|seq| event(seq, seq % 500, 3600, true))
                        .collect();
                    let r = c
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/x-ndjson")
                        .body(ndjson(&lines))
                        .send();
                    let fate = match r {
                        Ok(r) if r.status().is_success() => Fate::Acked,
                        Ok(_) => Fate::Refused,
                        Err(_) => Fate::Unknown, // no answer: the crash came first
                    };
                    fates.extend((first..first + per).map(|s| (s, fate)));
                    batch += 1;
                    if fate == Fate::Unknown {
                        break;
                    }
                }
                fates
            })
        })
        .collect()
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_event_and_counts_none_twice() {
    let v = Veil::init();
    let mut gw = Gateway::start(&v);
    let token = v.token("ingest");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = load(&gw.base, &token, 4, 250, stop.clone());
    std::thread::sleep(Duration::from_millis(2500));
    gw.kill9();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let fates: Vec<(u64, Fate)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let acked: Vec<u64> = fates
        .iter()
        .filter(|f| f.1 == Fate::Acked)
        .map(|f| f.0)
        .collect();
    let refused: Vec<u64> = fates
        .iter()
        .filter(|f| f.1 == Fate::Refused)
        .map(|f| f.0)
        .collect();
    let unknown: Vec<u64> = fates
        .iter()
        .filter(|f| f.1 == Fate::Unknown)
        .map(|f| f.0)
        .collect();
    assert!(
        acked.len() >= 2_000,
        "the load was too light to mean anything: {}",
        acked.len()
    );
    assert!(
        !unknown.is_empty(),
        "the kill should have caught requests in flight"
    );

    // After the crash: every acknowledged event exactly once, nothing refused.
    let staged = staged_markers(&v);
    for s in &acked {
        assert_eq!(
            staged.get(&format!("s{s}")),
            Some(&1),
            "acknowledged event {s}"
        );
    }
    for s in &refused {
        assert_eq!(
            staged.get(&format!("s{s}")),
            None,
            "refused event {s} is present"
        );
    }
    // Clients retry what got no answer, and some of what was acknowledged; all counted once.
    let gw = Gateway::start(&v);
    let retry: Vec<u64> = unknown
        .iter()
        .chain(acked.iter().take(500))
        .copied()
        .collect();
    let c = client();
    for chunk in retry.chunks(250) {
        let lines: Vec<String> = chunk
            .iter()
            .map(|&s| event(s, s % 500, 3600, true))
            .collect();
        let r = post(
            &c,
            &gw.url("/v1/events"),
            &token,
            "application/x-ndjson",
            ndjson(&lines),
        );
        assert_eq!(r.status(), 200);
    }
    let staged = staged_markers(&v);
    for s in acked.iter().chain(&unknown) {
        assert_eq!(
            staged.get(&format!("s{s}")),
            Some(&1),
            "event {s} after the retry"
        );
    }
    assert_eq!(staged.len(), acked.len() + unknown.len());
    let r = v.run(&["audit", "verify"]);
    assert_eq!(
        r.code, 0,
        "the audit chain survives a crash: {}{}",
        r.stdout, r.stderr
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let v = Veil::init();
    let mut gw = Gateway::start(&v);
    let token = v.token("ingest");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = load(&gw.base, &token, 3, 500, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let status = gw.terminate();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        status.success(),
        "veil serve exits 0 on SIGTERM: {status:?}"
    );
    let fates: Vec<(u64, Fate)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let staged = staged_markers(&v);
    let acked = fates.iter().filter(|f| f.1 == Fate::Acked).count();
    assert!(acked > 0);
    for (s, fate) in &fates {
        let n = staged.get(&format!("s{s}")).copied().unwrap_or(0);
        match fate {
            Fate::Acked => assert_eq!(n, 1, "acknowledged {s}"),
            Fate::Refused => assert_eq!(n, 0, "refused {s}"),
            Fate::Unknown => assert!(n <= 1),
        }
    }
    assert!(
        gw.stderr()
            .contains("every acknowledged event is committed"),
        "{}",
        gw.stderr()
    );
    // A log written to a file or a collector carries no terminal colour codes.
    assert!(
        !gw.stderr().contains('\u{1b}'),
        "ANSI escapes in a non-terminal log"
    );
}

// ---- overload ----

#[test]
fn overload_is_refused_with_retry_after_memory_stays_bounded_and_service_recovers() {
    let v = Veil::init();
    v.append_config(
        "[limits]\nqueue_events = 4000\ningest_concurrency = 6\nsource_events_per_sec = 3000\nsource_burst = 3000\nmax_body_bytes = 1048576",
    );
    let gw = Gateway::start(&v);
    let token = v.token("ingest");
    let body = Arc::new(ndjson(
        &(0..1000)
            .map(|s| event(s, s % 300, 600, false))
            .collect::<Vec<_>>(),
    ));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let statuses: Vec<(u16, bool)> = (0..24)
        .map(|_| {
            let (url, token, body) = (gw.url("/v1/events"), token.clone(), body.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut seen = Vec::new();
                while Instant::now() < stop_at {
                    if let Ok(r) = c
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/x-ndjson")
                        .body(body.as_str().to_owned())
                        .send()
                    {
                        seen.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
                    }
                }
                seen
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let refused: Vec<_> = statuses
        .iter()
        .filter(|s| s.0 == 429 || s.0 == 503)
        .collect();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| ![200, 429, 503].contains(&s.0))
        .collect();
    assert!(ok > 0, "some requests get through");
    assert!(
        !refused.is_empty(),
        "more load than the server absorbs is refused: {ok} ok"
    );
    assert!(
        refused.iter().all(|s| s.1),
        "every 429/503 carries Retry-After"
    );
    assert!(other.is_empty(), "nothing else: {other:?}");
    let peak = gw.peak_rss_kib();
    println!(
        "overload: {ok} accepted, {} refused (429 {}, 503 {}); peak RSS {} MiB",
        refused.len(),
        refused.iter().filter(|s| s.0 == 429).count(),
        refused.iter().filter(|s| s.0 == 503).count(),
        peak / 1024
    );
    assert!(
        peak < 400 * 1024,
        "resident memory stays bounded: {} MiB",
        peak / 1024
    );
    // Load stops: the server is ready and takes a normal request at once.
    std::thread::sleep(Duration::from_millis(1200));
    let c = client();
    assert_eq!(c.get(gw.url("/readyz")).send().unwrap().status(), 200);
    let r = post(
        &c,
        &gw.url("/v1/events"),
        &token,
        "application/x-ndjson",
        ndjson(&[event(9_999_999, 1, 600, true)]),
    );
    assert_eq!(r.status(), 200);
}

// ---- bad input ----

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn bad_requests_get_a_4xx_with_a_reason_store_nothing_and_leave_others_unaffected() {
    let v = Veil::init();
    v.append_config("[limits]\nmax_body_bytes = 200000");
    // A source limited to one collection.
    let web_token = "veil_test_web_source_token_0123456789";
    v.append_config(&format!(
        "[[principal]]\nname = \"web\"\nroles = [\"source\"]\ncollections = [\"app.feature_used\"]\ntoken_sha256 = \"{}\"",
        hex_sha256(web_token)
    ));
    let mut gw = Gateway::start(&v);
    let token = v.token("ingest");
    let c = client();
    let url = gw.url("/v1/events");
    let logs = format!("{}/v1/logs", gw.otlp);
    let good = ndjson(&[event(1, 1, 600, false)]);
    let mut before = counts(&v);
    let big: String = ndjson(
        &(0..3000)
            .map(|s| event(s, s, 600, false))
            .collect::<Vec<_>>(),
    );
    assert!(big.len() > 200_000);
    let bomb = gzip(&vec![b' '; 5_000_000]);
    let gz = gzip(good.as_bytes());
    let cases: Vec<(&str, reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        ("malformed JSON batch", c.post(&url).bearer_auth(&token).header("content-type", "application/json").body("{\"events\": [ {\"event\": "), 400, "malformed_body"),
        ("JSON that is not a batch", c.post(&url).bearer_auth(&token).header("content-type", "application/json").body("[1,2,3]"), 400, "malformed_body"),
        ("wrong content type", c.post(&url).bearer_auth(&token).header("content-type", "text/plain").body(good.clone()), 415, "unsupported_media_type"),
        ("unknown encoding", c.post(&url).bearer_auth(&token).header("content-type", "application/x-ndjson").header("content-encoding", "br").body(good.clone()), 415, "unsupported_encoding"),
        ("truncated gzip", c.post(&url).bearer_auth(&token).header("content-type", "application/x-ndjson").header("content-encoding", "gzip").body(gz[..gz.len() - 9].to_vec()), 400, "bad_gzip"),
        ("oversized body", c.post(&url).bearer_auth(&token).header("content-type", "application/x-ndjson").body(big), 413, "body_too_large"),
        ("gzip bomb", c.post(&url).bearer_auth(&token).header("content-type", "application/x-ndjson").header("content-encoding", "gzip").body(bomb), 413, "body_too_large"),
        ("no token", c.post(&url).header("content-type", "application/x-ndjson").body(good.clone()), 401, "unauthenticated"),
        ("invalid token", c.post(&url).bearer_auth("veil_not_a_real_token").header("content-type", "application/x-ndjson").body(good.clone()), 401, "invalid_token"),
        ("wrong role", c.post(&url).bearer_auth(v.token("analyst")).header("content-type", "application/x-ndjson").body(good.clone()), 403, "forbidden"),
        ("collection not allowed", c.post(&url).bearer_auth(web_token).header("content-type", "application/x-ndjson").body(ndjson(&[event(2, 2, 600, false), "{\"event\":\"ci.build_finished\",\"time\":\"2026-11-20T10:00:00Z\",\"attrs\":{}}".into()])), 403, "collection_not_allowed"),
        ("bad idempotency key", c.post(&url).bearer_auth(&token).header("content-type", "application/x-ndjson").header("idempotency-key", "").body(good.clone()), 400, "bad_idempotency_key"),
    ];
    for (what, req, status, want) in cases {
        let r = req.send().unwrap();
        // The body may be left unread, so the connection is not offered for reuse.
        assert_eq!(
            r.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "{what}"
        );
        let (got, why) = reason(r);
        assert_eq!((got, why.as_str()), (status, want), "{what}");
        assert_eq!(counts(&v), before, "{what}: something was stored");
        // Another client is unaffected.
        let ok = post(&c, &url, &token, "application/x-ndjson", good.clone());
        assert_eq!(ok.status(), 200, "after {what}");
        let after = counts(&v);
        assert_eq!(
            after,
            (before.0 + 1, before.1),
            "the good request after {what}"
        );
        before = after;
    }
    // OTLP errors are google.rpc.Status in the request's encoding, never a panic.
    for (ct, body, status) in [
        (
            "application/x-protobuf",
            vec![0xff, 0xff, 0xff, 0x01],
            400u16,
        ),
        ("application/json", b"{\"resourceLogs\": 7}".to_vec(), 400),
        ("text/plain", b"hello".to_vec(), 415),
    ] {
        let r = c
            .post(&logs)
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{ct}");
    }
    let r = c
        .post(&logs)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let status: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(status["code"], 16, "UNAUTHENTICATED: {status}");
    // A page of the log: `limit` entries from `since`, in order.
    let audit = c
        .get(gw.url("/v1/audit"))
        .bearer_auth(v.token("privacy-officer"))
        .send()
        .unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&audit.text().unwrap()).unwrap();
    assert!(all.len() > 4, "{} entries", all.len());
    let page = c
        .get(gw.url("/v1/audit?since=3&limit=2"))
        .bearer_auth(v.token("privacy-officer"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let page: Vec<serde_json::Value> = serde_json::from_slice(&page).unwrap();
    let seqs: Vec<i64> = page.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert!(!gw.stderr().contains("panicked"));
    // Denials are audited as counts per minute, endpoint and reason (written each minute
    // and at shutdown); the invalid token itself appears nowhere.
    assert!(gw.terminate().success());
    let text = v.run(&["audit", "log", "--format", "json"]).stdout;
    for reason in [
        "invalid_token",
        "unauthenticated",
        "forbidden",
        "collection_not_allowed",
    ] {
        assert!(text.contains(reason), "denial {reason} not audited");
    }
    assert!(!text.contains("veil_not_a_real_token"));
    assert!(!gw.stderr().contains("veil_not_a_real_token"));
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

// ---- the API surface ----

#[test]
fn every_documented_endpoint_answers_and_roles_gate_reads() {
    let v = Veil::init();
    let gw = Gateway::start(&v);
    let c = client();
    let doc: serde_json::Value = serde_json::from_slice(
        &c.get(gw.url("/openapi.json"))
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = gw.url(&path.replace("{metric}", "feature_usage"));
            let r = match method.as_str() {
                "get" => c.get(&url).send().unwrap(),
                "post" => c.post(&url).body("").send().unwrap(),
                m => panic!("unexpected method {m}"),
            };
            n += 1;
            if path == "/v1/traces" || path == "/v1/metrics" {
                // Documented as 404 with an OTLP status: the signal is not accepted.
                assert_eq!(r.status().as_u16(), 404, "{path}");
                assert!(r.text().unwrap().contains("signal_not_accepted"), "{path}");
                continue;
            }
            assert!(
                ![404, 405].contains(&r.status().as_u16()),
                "{method} {path} is documented but answers {}",
                r.status()
            );
        }
    }
    assert_eq!(n, 21);
    assert_eq!(c.get(gw.url("/v1/nope")).send().unwrap().status(), 404);

    // Ingest with an Idempotency-Key: a retried request counts once.
    let token = v.token("ingest");
    let body = ndjson(&(0..50).map(|s| event(s, s, 600, false)).collect::<Vec<_>>());
    let send = || {
        let r = c
            .post(gw.url("/v1/events"))
            .bearer_auth(&token)
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", "batch-7")
            .body(body.clone())
            .send()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.bytes().unwrap()).unwrap()
    };
    let first = send();
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(50), Some(0))
    );
    let again = send();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(50))
    );
    // JSON batch with a per-event rejection by index.
    let batch = format!(
        "{{\"events\": [{}, {{\"event\": \"app.feature_used\", \"time\": \"{}\", \"attrs\": {{\"user_id\": \"x\", \"feature\": \"teleport\", \"region\": \"eu\"}}}}]}}",
        event(77, 7, 600, false),
        ts(600)
    );
    let r = post(&c, &gw.url("/v1/events"), &token, "application/json", batch);
    let res: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(res["accepted"], 1);
    assert_eq!(res["rejected"][0]["index"], 1);
    assert_eq!(res["rejected"][0]["reason"], "value_not_allowed");

    // Roles: a viewer reads only what an analyst released; an engineer reads no audit.
    let r = c
        .get(gw.url("/v1/reports/feature_usage"))
        .bearer_auth(v.token("viewer"))
        .send()
        .unwrap();
    let (s, why) = reason(r);
    assert!(s == 403 && why == "not_released", "{s} {why}");
    let r = c
        .get(gw.url("/v1/audit/verify"))
        .bearer_auth(v.token("eng-lead"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(gw.url("/v1/audit/verify"))
        .bearer_auth(v.token("privacy-officer"))
        .send()
        .unwrap();
    let verify: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    let r = c
        .get(gw.url("/v1/status"))
        .bearer_auth(v.token("viewer"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = c.get(gw.url("/metrics")).send().unwrap().text().unwrap();
    for m in [
        "veil_events_accepted_total 51",
        "veil_events_duplicate_total 50",
        "veil_events_rejected_total{reason=\"value_not_allowed\"} 1",
        "veil_http_request_duration_seconds_bucket",
        "veil_ingest_queue_events 0",
    ] {
        assert!(metrics.contains(m), "{m} missing from\n{metrics}");
    }
}

// ---- TLS ----

/// A blocking HTTPS POST with rustls; `client` is an optional (cert, key) pair.
fn https_post(
    addr: &str,
    ca: &rcgen::Certificate,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    headers: &str,
    body: &str,
) -> std::io::Result<String> {
    use std::io::Read;
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    write!(
        tls,
        "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    Ok(out)
}

#[test]
fn tls_with_client_certificates_authenticates_a_source_without_a_token() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let v = Veil::init();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["web-backend".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    std::fs::write(v.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(v.path().join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(v.path().join("ca.pem"), ca.pem()).unwrap();
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(client_cert.der().as_ref()))
    };
    v.append_config(&format!(
        "[[principal]]\nname = \"web-backend\"\nroles = [\"source\"]\ncollections = [\"app.feature_used\"]\ntoken_sha256 = \"{}\"\ncert_sha256 = \"{fingerprint}\"\n\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"",
        hex_sha256("unused-token-of-web-backend")
    ));
    let gw = Gateway::start(&v);
    assert!(gw.base.starts_with("https://"), "{}", gw.base);
    let addr = gw.base.trim_start_matches("https://").to_owned();
    let body = ndjson(&[event(1, 1, 600, false)]);
    // The certificate alone authenticates the source.
    let r = https_post(&addr, &ca, Some((&client_cert, &client_key)), "", &body).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"accepted\":1"), "{r}");
    // Without a certificate (optional by default) a token is needed.
    let r = https_post(&addr, &ca, None, "", &body).unwrap();
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = https_post(
        &addr,
        &ca,
        None,
        &format!("Authorization: Bearer {}\r\n", v.token("ingest")),
        &body,
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}
