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
    let store = veil_store::SqliteStore::open(&v.data_dir()).unwrap();
    use veil_store::Store;
    let keys = veil_pipeline::KeyRing::new(store.epochs().unwrap());
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
        assert!(
            !common::contains(&bytes, b"hunter2-planted"),
            "{}",
            path.display()
        );
    }
}
