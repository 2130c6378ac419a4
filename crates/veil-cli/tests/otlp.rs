//! OpenTelemetry clients as their users configure them: the Rust SDK's gRPC and HTTP
//! exporters, records shaped like the Python `logging` bridge's, and the edges of OTLP/HTTP
//! (encodings, other signals, answers) — against the real `veil serve`.

mod common;

use common::{all_files, contains, Gateway, Veil};
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use std::collections::HashMap;
use std::time::Duration;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A counter of the gateway's own metrics (Prometheus text), summed over its labels; the
/// family must be exported (a renamed counter fails here instead of reading 0).
fn metric(gw: &Gateway, name: &str) -> f64 {
    metric_in(gw, name, true)
}

/// [`metric`] for a labelled family, which is exported once it has a sample.
fn metric_in(gw: &Gateway, name: &str, must_exist: bool) -> f64 {
    let text = client()
        .get(gw.url("/metrics"))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !must_exist || text.contains(&format!("# TYPE {name} ")),
        "{name} is not exported:\n{text}"
    );
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Staged `app.feature_used` rows, decrypted with the vault's keys.
fn staged(v: &Veil) -> Vec<serde_json::Value> {
    use veil_store::Store;
    let store = v.store();
    let keys = store.key_ring().unwrap();
    store
        .staging_payloads("app.feature_used", &keys)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// Emits `n` feature-usage records with ids `prefix-0…` through an SDK logger, each with
/// the attributes the Python logging bridge adds (and `exception.*` on every tenth, as
/// `log.exception()` does).
fn emit(logger: &impl Logger, prefix: &str, n: u64) {
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for i in 0..n {
        let mut r = logger.create_log_record();
        r.set_timestamp(two_days_ago);
        r.set_body("feature used".into());
        r.add_attribute("event.name", "app.feature_used");
        r.add_attribute("event.id", format!("{prefix}-{i}"));
        r.add_attribute("user_id", format!("{prefix}-user-{i}@example.com"));
        r.add_attribute("feature", "export");
        r.add_attribute("region", "eu");
        r.add_attribute("app_version", format!("{prefix}{i}"));
        r.add_attribute("code.file.path", "/srv/app/zz_marker_path.py");
        r.add_attribute("code.function.name", "zz_marker_function");
        r.add_attribute("code.line.number", AnyValue::Int(4242));
        r.add_attribute("thread.name", "zz_marker_thread");
        if i % 10 == 0 {
            r.add_attribute("exception.type", "ZzMarkerError");
            r.add_attribute("exception.message", "zz marker exception text");
            r.add_attribute(
                "exception.stacktrace",
                "Traceback: zz_marker_function line 4242",
            );
        }
        logger.emit(r);
    }
}

/// Markers of the emitter attributes: none of them may be stored anywhere.
const MARKERS: &[&str] = &[
    "zz_marker_path",
    "zz_marker_function",
    "zz_marker_thread",
    "ZzMarkerError",
    "zz marker exception",
    "code.file.path",
    "code.function.name",
    "exception.stacktrace",
];

fn assert_no_emitter_attribute_stored(v: &Veil) {
    for (path, bytes) in all_files(&v.data_dir())
        .into_iter()
        .chain(all_files(&v.vault_dir()))
    {
        for m in MARKERS {
            assert!(
                !contains(&bytes, m.as_bytes()),
                "{m} found in {}",
                path.display()
            );
        }
    }
    for row in staged(v) {
        let attrs = row["attrs"].as_object().unwrap();
        assert!(
            attrs.keys().all(|k| !k.starts_with("code.")
                && !k.starts_with("exception.")
                && !k.starts_with("thread.")),
            "{row}"
        );
    }
}

/// Acceptance: the Rust SDK's gRPC exporter and its HTTP exporter both deliver every
/// record (re-sending the same ids gives only duplicates), the bridge's `code.*`,
/// `exception.*` and `thread.*` attributes are dropped and stored nowhere.
#[test]
fn the_rust_sdk_sends_over_grpc_and_http_and_every_record_is_stored() {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let v = Veil::init();
    let gw = Gateway::start(&v);
    let token = v.token("ingest");
    let rt = runtime();
    let _enter = rt.enter();

    let grpc_provider = || {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(gw.grpc.clone())
            .with_metadata(md)
            .with_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_batch_exporter(exporter)
            .build()
    };
    let http_provider = || {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_http_client(reqwest::blocking::Client::new())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/logs", gw.otlp))
            .with_headers(HashMap::from([(
                "authorization".to_string(),
                format!("Bearer {token}"),
            )]))
            .build()
            .unwrap();
        opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_simple_exporter(exporter)
            .build()
    };

    const N: u64 = 300;
    for round in 0..2 {
        let p = grpc_provider();
        emit(&p.logger("checkout-service"), "grpc", N);
        p.force_flush().unwrap();
        p.shutdown().unwrap();
        let p = http_provider();
        emit(&p.logger("checkout-service"), "http", N);
        p.force_flush().unwrap();
        p.shutdown().unwrap();
        let accepted = metric(&gw, "veil_events_accepted_total");
        let dupes = metric(&gw, "veil_events_duplicate_total");
        let rejected = metric_in(&gw, "veil_events_rejected_total", false);
        assert_eq!(rejected, 0.0, "round {round}");
        assert_eq!(
            accepted,
            (2 * N) as f64,
            "round {round}: every record stored once"
        );
        assert_eq!(
            dupes,
            (round * 2 * N) as f64,
            "round {round}: the same ids again are all duplicates"
        );
    }
    // Dropped, and counted as dropped: 4 per record, 3 more on every tenth, sent once.
    let per_sdk = N * 4 + (N / 10) * 3;
    assert_eq!(
        metric(&gw, "veil_attributes_dropped_total"),
        (2 * per_sdk) as f64
    );
    let rows = staged(&v);
    assert_eq!(rows.len(), (2 * N) as usize);
    for prefix in ["grpc", "http"] {
        assert_eq!(
            rows.iter()
                .filter(|r| r["attrs"]["app_version"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(prefix)))
                .count(),
            N as usize
        );
    }
    drop(gw);
    assert_no_emitter_attribute_stored(&v);
    // The audit entry of each commit counts what was dropped.
    let log = v.run(&["audit", "log", "--format", "json"]);
    assert!(log.stdout.contains("dropped_attributes"), "{}", log.stderr);
}

fn record(attrs: &[(&str, &str)]) -> opentelemetry_proto::tonic::logs::v1::LogRecord {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    let t = (chrono::Utc::now().timestamp() - 86_400) as u64 * 1_000_000_000;
    opentelemetry_proto::tonic::logs::v1::LogRecord {
        time_unix_nano: t,
        attributes: attrs
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue((*v).into())),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn request(
    records: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>,
) -> ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// gRPC answers in gRPC's terms: UNAUTHENTICATED without a token, PERMISSION_DENIED for a
/// role that may not send, RESOURCE_EXHAUSTED with RetryInfo past the rate limit, partial
/// success naming the rejected field (never its value), UNIMPLEMENTED for traces.
#[test]
fn grpc_status_codes_partial_success_and_retry_info() {
    use tonic_types::StatusExt;
    let v = Veil::init();
    v.append_config(
        // A token every 100 s: however slow the machine, the bucket cannot refill during the
        // test, so the last request is refused for the rate and not by luck of timing.
        "[limits]\nsource_events_per_sec = 0.01\nsource_burst = 3\nmax_body_bytes = 65536",
    );
    let gw = Gateway::start(&v);
    let rt = runtime();
    rt.block_on(async {
        let mut c = LogsServiceClient::connect(gw.grpc.clone()).await.unwrap();
        let ok = |id: &str| {
            record(&[
                ("event.name", "app.feature_used"),
                ("event.id", id),
                ("user_id", "grpc-person@example.com"),
                ("feature", "share"),
                ("region", "us"),
                ("app_version", "1"),
            ])
        };
        let with_token = |t: &str, req: ExportLogsServiceRequest| {
            let mut r = tonic::Request::new(req);
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            r
        };
        // No token.
        let e = c.export(request(vec![ok("a")])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        // A reader's token.
        let e = c
            .export(with_token(&v.token("analyst"), request(vec![ok("a")])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // Partial success: one good record, one with an undeclared field, one whose
        // collection name comes from otel.event.name.
        let mut bad = ok("b");
        bad.attributes
            .extend(record(&[("password", "hunter2-zz-secret")]).attributes);
        let mut older = ok("c");
        older.attributes.retain(|kv| kv.key != "event.name");
        older
            .attributes
            .extend(record(&[("otel.event.name", "app.feature_used")]).attributes);
        let token = v.token("ingest");
        let resp = c
            .export(with_token(&token, request(vec![ok("a"), bad, older])))
            .await
            .unwrap()
            .into_inner();
        let p = resp.partial_success.expect("partial success");
        assert_eq!(p.rejected_log_records, 1);
        assert!(
            p.error_message.contains("field_not_allowed")
                && p.error_message.contains("field password is not declared"),
            "{}",
            p.error_message
        );
        assert!(!p.error_message.contains("hunter2"), "{}", p.error_message);
        // Over the body limit: RESOURCE_EXHAUSTED without RetryInfo (not retried), as 413.
        let mut big = ok("big");
        big.attributes
            .extend(record(&[("app_version", &"x".repeat(70_000))]).attributes);
        let e = c
            .export(with_token(&token, request(vec![big])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(e.get_details_retry_info().is_none(), "{e:?}");
        assert!(e.message().starts_with("body_too_large"), "{}", e.message());
        // Bytes that are not an ExportLogsServiceRequest: INVALID_ARGUMENT, as 400.
        {
            #[derive(Clone, PartialEq, prost::Message)]
            struct NotARequest {
                #[prost(uint64, tag = "1")]
                resource_logs: u64,
            }
            let ch = tonic::transport::Endpoint::from_shared(gw.grpc.clone())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut g = tonic::client::Grpc::new(ch);
            g.ready().await.unwrap();
            let mut req = tonic::Request::new(NotARequest { resource_logs: 7 });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let e = g
                .unary::<NotARequest, ExportLogsServiceRequest, _>(
                    req,
                    tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                    ),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().starts_with("malformed_body"), "{}", e.message());
        }
        // Gzip, as the Collector's exporter sends by default.
        let mut gz = c
            .clone()
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let resp = gz
            .export(with_token(&token, request(vec![])))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.partial_success.is_none());
        // Past the rate limit (burst 3, all taken by the three records above): RESOURCE_EXHAUSTED
        // with RetryInfo.
        let many: Vec<_> = (0..10).map(|i| ok(&format!("r{i}"))).collect();
        let e = c
            .export(with_token(&token, request(many)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        let retry = e.get_details_retry_info().expect("RetryInfo");
        assert!(retry.retry_delay.unwrap() >= Duration::from_secs(1));
        assert!(e.message().starts_with("rate_limited"), "{}", e.message());
    });
    // Traces over gRPC: tonic's UNIMPLEMENTED, not a transport error.
    let out = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(gw.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut g = tonic::client::Grpc::new(ch);
        g.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        g.unary::<ExportLogsServiceRequest, ExportLogsServiceRequest, _>(
            tonic::Request::new(request(vec![])),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
    });
    assert_eq!(out.unwrap_err().code(), tonic::Code::Unimplemented);
    // Request metrics count gRPC refusals by their gRPC code, not as HTTP 200s.
    let text = client()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for code in ["grpc_16", "grpc_7", "grpc_8", "grpc_3"] {
        assert!(
            text.contains(&format!("status=\"{code}\"")),
            "{code}:\n{text}"
        );
    }
    drop(gw);
    for (path, bytes) in all_files(&v.data_dir()) {
        assert!(
            !contains(&bytes, b"hunter2-zz-secret"),
            "{}",
            path.display()
        );
    }
}

/// The edges of OTLP/HTTP: deflate, other signals, non-object JSON, `{}` on full success,
/// 401 before 415, partial success that names fields.
#[test]
fn otlp_http_edges() {
    use prost::Message;
    use std::io::Write;
    let v = Veil::init();
    let gw = Gateway::start(&v);
    let c = client();
    let token = v.token("ingest");
    let logs = format!("{}/v1/logs", gw.otlp);
    let good = |id: &str| {
        record(&[
            ("event.name", "app.feature_used"),
            ("event.id", id),
            ("user_id", "edge-person@example.com"),
            ("feature", "search"),
            ("region", "eu"),
            ("app_version", "1"),
            ("code.line.number", "7"),
        ])
    };

    // No token and a wrong Content-Type: 401, not 415.
    let r = c
        .post(&logs)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // With a token, the wrong Content-Type is 415.
    let r = c
        .post(&logs)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);

    // deflate (zlib), protobuf.
    let body = request(vec![good("d1")]).encode_to_vec();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&body).unwrap();
    let r = c
        .post(&logs)
        .bearer_auth(&token)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "deflate")
        .body(z.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let resp = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
        r.bytes().unwrap(),
    )
    .unwrap();
    assert!(resp.partial_success.is_none());

    // JSON full success is `{}`.
    let json = serde_json::to_vec(&request(vec![good("j1")])).unwrap();
    let r = c
        .post(&logs)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "{}");

    // JSON that is not an object: 400, in OTLP's error shape.
    for body in ["[]", "[[]]", "5", "null", "\"x\""] {
        let r = c
            .post(&logs)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let s: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
        assert_eq!(s["code"], 3, "{body}: {s}");
    }

    // Partial success in JSON names the field and the reason, never the value.
    let mut bad = good("p1");
    bad.attributes
        .extend(record(&[("home_address", "1 zz Marker Street")]).attributes);
    let r = c
        .post(&logs)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&request(vec![good("p0"), bad])).unwrap())
        .send()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    let msg = doc["partialSuccess"]["errorMessage"].as_str().unwrap();
    // int64 in OTLP JSON: a number here (receivers take a number or a string).
    assert_eq!(doc["partialSuccess"]["rejectedLogRecords"], 1, "{doc}");
    assert!(msg.contains("1 of 2 log records"), "{msg}");
    assert!(msg.contains("field_not_allowed ×1"), "{msg}");
    assert!(msg.contains("home_address"), "{msg}");
    assert!(!msg.contains("Marker Street"), "{msg}");

    // Traces and metrics: a permanent OTLP error that says why, on both ports.
    for base in [&gw.otlp, &gw.base] {
        for (signal, ct) in [
            ("traces", "application/x-protobuf"),
            ("metrics", "application/json"),
        ] {
            let r = c
                .post(format!("{base}/v1/{signal}"))
                .header("content-type", ct)
                .body("{}")
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 404, "{signal}");
            assert_eq!(
                r.headers()["content-type"].to_str().unwrap(),
                ct,
                "{signal}"
            );
            let bytes = r.bytes().unwrap();
            assert!(
                contains(&bytes, b"does not accept OTLP") && contains(&bytes, signal.as_bytes()),
                "{signal}"
            );
        }
    }
    assert_eq!(metric(&gw, "veil_events_accepted_total"), 3.0);
}

/// `/metrics` speaks the text format to scrapers that prefer it, and `promtool check
/// metrics` (Debian's prometheus package) finds nothing wrong with it.
#[test]
fn metrics_negotiate_and_pass_promtool() {
    let v = Veil::init();
    let gw = Gateway::start(&v);
    let c = client();
    // Something in every family: an accepted event, a rejected one, a request.
    let lines = format!(
        "{}\n{}\n",
        serde_json::json!({"event": "app.feature_used", "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "attrs": {"user_id": "m@example.com", "feature": "share", "region": "eu", "app_version": "1"}}),
        serde_json::json!({"event": "nope", "time": "2026-01-01T00:00:00Z", "attrs": {}}),
    );
    let r = c
        .post(gw.url("/v1/events"))
        .bearer_auth(v.token("ingest"))
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let om = c.get(gw.url("/metrics")).send().unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = om.text().unwrap();
    assert!(om.ends_with("# EOF\n"));

    let text = c
        .get(gw.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.4,text/plain;version=0.0.4;q=0.9",
        )
        .send()
        .unwrap();
    assert!(text.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = text.text().unwrap();
    assert!(!text.contains("# EOF"));
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(families.len() >= 6, "{text}");
    for f in &families {
        assert!(
            text.contains(&format!("# HELP {f} ")),
            "family {f} has no HELP"
        );
    }
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(promtool) = promtool else {
        // CI installs promtool and sets VEIL_REQUIRE_PROMTOOL, so there this cannot pass
        // by skipping; on a machine without it, the checks above are what runs.
        assert!(
            std::env::var_os("VEIL_REQUIRE_PROMTOOL").is_none(),
            "promtool is required (Debian package prometheus)"
        );
        eprintln!("promtool not installed (Debian package prometheus): skipping its check");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
