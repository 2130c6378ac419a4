//! `veil bench`: hot paths measured in one process against a baseline measured in the
//! same run, so the ratios hold on a noisy shared machine.

use anyhow::{Context, Result};
use rand::SeedableRng;
use std::time::Instant;
use veil_pipeline::envelope::Envelope;
use veil_pipeline::{Door, KeyRing, Limits, Source};
use veil_store::{IngestBatch, SqliteStore, Store};

fn events(n: usize) -> Result<Vec<Vec<u8>>> {
    let now = chrono::Utc::now().timestamp();
    let mut scale = (n as f64 / 9000.0).max(0.01);
    loop {
        let mut buf = Vec::new();
        crate::generate::generate(
            &crate::generate::Gen {
                seed: 7,
                now,
                days: 13,
                scale,
                bad: false,
            },
            &mut buf,
        )?;
        let lines: Vec<Vec<u8>> = buf
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if lines.len() >= n {
            return Ok(lines.into_iter().take(n).collect());
        }
        scale *= 1.2 * n as f64 / lines.len().max(1) as f64;
    }
}

/// This process's CPU time (user + system) in seconds, from /proc (Linux); 0 elsewhere.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rate(n: usize, secs: f64) -> String {
    format!(
        "{:>10.0} events/s  ({:>6.0} ns/event)",
        n as f64 / secs,
        secs * 1e9 / n as f64
    )
}

/// Baseline (typed serde_json parse), the door alone, and door + SQLite commit, in
/// interleaved rounds; medians of the times and of the per-round ratios.
pub fn pipeline(n: usize, no_ids: bool, rounds: usize) -> Result<u8> {
    let rounds = rounds.max(1);
    eprintln!("generating {n} events…");
    let mut lines = events(n)?;
    if no_ids {
        for l in &mut lines {
            let mut v: serde_json::Value = serde_json::from_slice(l)?;
            v.as_object_mut().map(|o| o.remove("id"));
            *l = serde_json::to_vec(&v)?;
        }
    }
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let core = match pin_to_one_core() {
        Some(cpu) => format!("one core (pinned to CPU {cpu})"),
        None => "one core not enforced (no pinning here)".into(),
    };
    println!(
        "bench pipeline: {n} events{}, {:.1} MiB, {core}, {rounds} rounds (medians)",
        if no_ids { " without ids" } else { " with ids" },
        bytes as f64 / (1 << 20) as f64
    );

    let (dir, policy, store, keys, now) = rig()?;
    let source = bench_source();
    let door = Door::new(
        &policy,
        &keys,
        Limits::default(),
        now,
        store.sealed_before(&policy)?,
    );
    // The store alone: the same events, admitted beforehand, committed into a fresh store.
    let admitted: Vec<veil_pipeline::AcceptedBatch> = lines
        .chunks(veil_ingest::BATCH)
        .map(|c| {
            let mut b = veil_pipeline::AcceptedBatch::default();
            for l in c {
                let _ = door.admit_into(l, &source, veil_pipeline::MissingId::Unidentified, &mut b);
            }
            b
        })
        .collect();
    // One of the reference stages, to place this machine against the issue's:
    // an HMAC-SHA256 pseudonym from a precomputed key state (130 ns there).
    let identifiers: Vec<String> = (0..n.min(200_000))
        .map(|i| format!("dev{i}@corp.example"))
        .collect();
    let (mut parse, mut door_only, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let (mut store_only, mut hmac) = (Vec::new(), Vec::new());
    let (mut accepted, mut full_cpu) = (0, 0.0);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut ok = 0usize;
        for l in &lines {
            if let Ok(s) = std::str::from_utf8(l) {
                if let Ok(e) = serde_json::from_str::<Envelope>(s) {
                    ok += e.attrs.0.len();
                }
            }
        }
        parse.push(t.elapsed().as_secs_f64());
        std::hint::black_box(ok);

        let t = Instant::now();
        let mut x = 0usize;
        for id in &identifiers {
            // Exactly the keyed hash: no normalization, the identifier as given.
            let ident = veil_pipeline::Identifier::new(
                std::borrow::Cow::Borrowed(std::hint::black_box(id.as_str())),
                false,
            );
            if let Some((_, p)) = keys.pseudonym_at(now, &ident) {
                std::hint::black_box(p);
                x += 1;
            }
        }
        hmac.push(t.elapsed().as_secs_f64() / identifiers.len().max(1) as f64);
        std::hint::black_box(x);

        let t = Instant::now();
        let mut acc = 0usize;
        let mut batch = veil_pipeline::AcceptedBatch::default();
        for chunk in lines.chunks(veil_ingest::BATCH) {
            batch.clear();
            for l in chunk {
                let _ = door.admit_into(
                    l,
                    &source,
                    veil_pipeline::MissingId::Unidentified,
                    &mut batch,
                );
            }
            acc += batch.len();
        }
        door_only.push(t.elapsed().as_secs_f64());
        std::hint::black_box(acc);

        {
            let (dir, policy, mut store, keys, now) = rig()?;
            let mut secs = 0.0;
            for accepted in &admitted {
                let batch = IngestBatch {
                    source: "bench",
                    received_at: now,
                    accepted: accepted.clone(),
                    rejected: Vec::new(),
                };
                let t = Instant::now();
                store.ingest(&policy, &keys, &[batch])?;
                secs += t.elapsed().as_secs_f64();
            }
            store_only.push(secs);
            let _ = std::fs::remove_dir_all(&dir);
        }

        let (secs, acc, cpu) = in_process(&lines)?;
        full.push(secs);
        (accepted, full_cpu) = (acc, full_cpu + cpu);
    }
    let ratio = |xs: &[f64]| median(xs.iter().zip(&parse).map(|(x, p)| x / p).collect());
    let (p, d, f) = (
        median(parse.clone()),
        median(door_only.clone()),
        median(full.clone()),
    );
    println!("  baseline: typed serde_json parse   {}", rate(n, p));
    println!(
        "  door: validate+scan+pseudonymize   {}  = {:.2}× the parse time",
        rate(n, d),
        ratio(&door_only)
    );
    println!(
        "  store: aggregate + encrypt + commit{}  = {:.2}× the parse time",
        rate(n, median(store_only.clone())),
        ratio(&store_only)
    );
    println!(
        "  full: door + aggregate + commit    {}  = {:.2}× the parse time",
        rate(n, f),
        ratio(&full)
    );
    let h = median(hmac) * 1e9;
    println!(
        "  reference stage: HMAC-SHA256 pseudonym {h:.0} ns here, 130 ns on the issue's reference machine"
    );
    println!(
        "    → the full path scaled to that machine: {:.0} events/s",
        n as f64 / f * h / 130.0
    );
    let spread = |xs: &[f64]| {
        let (lo, hi) = xs
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{:.0}–{:.0}", n as f64 / hi, n as f64 / lo)
    };
    println!(
        "  ranges (events/s): parse {}, door {}, store {}, full {}",
        spread(&parse),
        spread(&door_only),
        spread(&store_only),
        spread(&full)
    );
    println!(
        "  accepted {accepted} of {n}; the full runs used {:.2} s of CPU in {:.2} s (the rest waits on the disk)",
        full_cpu,
        full.iter().sum::<f64>()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "veil-bench-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A release over 52 weekly windows × `groups` groups, against the time to read the
/// same aggregates back from the store (the baseline).
/// `veil bench dashboard`: the team-health page rendered from a stored release of
/// `teams` × `weeks`, chart and table views, against serializing the same release to the
/// API's JSON (the baseline, same process, interleaved rounds).
pub fn dashboard(teams: usize, weeks: usize, rounds: usize) -> Result<u8> {
    let rounds = rounds.max(1);
    let policy = veil_policy::load_with_team_map(
        crate::commands::EXAMPLE_POLICY,
        "policy.yaml",
        chrono::Utc::now().date_naive(),
        Some(&veil_present::fixture::team_map(teams)),
    )
    .map(|(p, _)| p)?;
    let names: Vec<String> = (0..teams).map(|i| format!("team-{i:02}")).collect();
    let doc = veil_present::fixture::team_release(&names, weeks, "");
    let viewer = veil_present::Viewer {
        name: "bench".into(),
        roles: vec!["viewer".into()],
        csrf: "x".repeat(43),
        pages: veil_present::Page::ALL.to_vec(),
    };
    let page = |as_table: bool| veil_present::Releases {
        policy: &policy,
        metric: "builds",
        doc: Some(&doc),
        pending: Vec::new(),
        contested: Default::default(),
        late: Default::default(),
        cost: None,
        notice: None,
        weeks: 104,
        as_table,
        groups_page: 0,
        may_contest: false,
    };
    let (mut json, mut charts, mut table) = (Vec::new(), Vec::new(), Vec::new());
    let (mut json_bytes, mut chart_bytes, mut table_bytes) = (0, 0, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        json_bytes = std::hint::black_box(serde_json::to_string(&doc)?).len();
        json.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        chart_bytes =
            std::hint::black_box(veil_present::releases(&viewer, &page(false), true)).len();
        charts.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        table_bytes =
            std::hint::black_box(veil_present::releases(&viewer, &page(true), true)).len();
        table.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (j, c, t) = (median(&mut json), median(&mut charts), median(&mut table));
    println!(
        "bench dashboard: team health, {teams} teams × {weeks} weekly windows, median of {rounds}"
    );
    println!(
        "  baseline: the release as API JSON   {:>8.2} ms  {:>7} bytes",
        j * 1e3,
        json_bytes
    );
    println!(
        "  page with charts (SVG)             {:>8.2} ms  {:>7} bytes  = {:.2}× the JSON",
        c * 1e3,
        chart_bytes,
        c / j
    );
    println!(
        "  page as table (first {} teams)     {:>8.2} ms  {:>7} bytes  = {:.2}× the JSON",
        veil_present::TABLE_GROUPS,
        t * 1e3,
        table_bytes,
        t / j
    );
    Ok(0)
}

pub fn release(groups: usize) -> Result<u8> {
    let dir = tempfile_dir()?;
    let yaml = crate::commands::EXAMPLE_POLICY.replace("values_from: team_map", "max_length: 32");
    let policy = crate::commands::example_policy(&yaml)?;
    let now = chrono::Utc::now().timestamp();
    let mut store = SqliteStore::init(&dir.join("data"), &dir.join("vault"), now, "bench")?;
    // Sealed aggregates for a year of weeks, written directly as a seal would.
    {
        // Written with a connection of its own: the store offers no raw access.
        let c = rusqlite::Connection::open(SqliteStore::db_path(&dir.join("data")))?;
        c.execute_batch("BEGIN")?;
        let week = 7 * 86_400;
        let start = veil_pipeline::window::start(veil_policy::Window::Week, now - 53 * week);
        for w in 0..52 {
            for g in 0..groups {
                c.execute(
                    "INSERT INTO aggregates (metric, grouping, window_start, grp, contributors, n, total, bins, sealed_at) VALUES ('builds', 'team', ?1, ?2, ?3, ?4, 0, '[]', ?5)",
                    rusqlite_params(start + w * week, format!("team-{g}"), 3 + (g % 40) as i64, 50 + g as i64, now),
                )?;
            }
        }
        c.execute(
            "INSERT INTO seal_state (metric, sealed_before) VALUES ('builds', ?1)",
            [veil_pipeline::window::start(veil_policy::Window::Week, now)],
        )?;
        c.execute_batch("COMMIT")?;
    }
    let from = chrono::DateTime::from_timestamp(now - 53 * 7 * 86_400, 0).map(|d| d.date_naive());
    let q = veil_release::Query {
        metric: "builds".into(),
        by: Some(vec!["team".into()]),
        from,
        to: None,
    };
    let t = Instant::now();
    let p = veil_release::plan(&store, &policy, &q, now)?;
    // Plan and read the sealed rows, as a release does before its noise.
    let looked = veil_release::lookup(&mut store, &policy, "bench", true, &q, now)?;
    let read = t.elapsed().as_secs_f64();
    drop(looked);
    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    let t = Instant::now();
    let r = veil_release::release(&mut store, &policy, "bench", &q, now, &mut rng)?;
    let full = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let again = veil_release::release(&mut store, &policy, "bench", &q, now, &mut rng)?;
    let cached = t.elapsed().as_secs_f64();
    assert!(again.cached());
    println!(
        "bench release: {} windows × {groups} groups = {} aggregate rows",
        p.windows.len(),
        p.windows.len() * groups
    );
    println!("  baseline: plan + read aggregates  {:>9.2} ms", read * 1e3);
    println!(
        "  release (select, noise, store)    {:>9.2} ms  = {:.2}× the read",
        full * 1e3,
        full / read
    );
    println!(
        "  same query again (stored answer)  {:>9.2} ms  = {:.2}× the read",
        cached * 1e3,
        cached / read
    );
    println!("  document {} KiB", r.json().len() / 1024);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}

fn rusqlite_params(w: i64, g: String, c: i64, n: i64, now: i64) -> impl rusqlite::Params {
    rusqlite::params_from_iter([
        rusqlite::types::Value::from(w),
        g.into(),
        c.into(),
        n.into(),
        now.into(),
    ])
}

/// Door + commit over `lines` in `BATCH` chunks into a fresh store, the door admitting
/// one batch while the last one commits (as `veil ingest` does): the in-process figure
/// the gateway is compared with. Returns seconds, events accepted and CPU seconds used.
fn in_process(lines: &[Vec<u8>]) -> Result<(f64, usize, f64)> {
    let (dir, policy, mut store, keys, now) = rig()?;
    let source = bench_source();
    let door = Door::new(
        &policy,
        &keys,
        Limits::default(),
        now,
        store.sealed_before(&policy)?,
    );
    let (t, cpu0) = (Instant::now(), cpu_secs());
    let ((), total) = veil_ingest::pipelined(&mut store, &policy, &keys, |commit| {
        for chunk in lines.chunks(veil_ingest::BATCH) {
            let mut batch = commit.batch("bench", now);
            for l in chunk {
                if let Err(r) = door.admit_into(
                    l,
                    &source,
                    veil_pipeline::MissingId::Unidentified,
                    &mut batch.accepted,
                ) {
                    batch.rejected.push(r);
                }
            }
            if !commit.send(batch) {
                break;
            }
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((secs, total.accepted, cpu))
}

/// Pins this thread, and every thread it starts later, to the CPU it runs on, so "one
/// core" is what the figures mean even where a stage hands work to a second thread.
/// Returns that CPU, or `None` where pinning is not available.
fn pin_to_one_core() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use nix::sched::{sched_getcpu, sched_setaffinity, CpuSet};
        let cpu = sched_getcpu().ok()?;
        let mut set = CpuSet::new();
        set.set(cpu).ok()?;
        sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).ok()?;
        Some(cpu)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A fresh store in a temporary directory with the example policy and its keys.
fn rig() -> Result<(
    std::path::PathBuf,
    veil_policy::Policy,
    SqliteStore,
    KeyRing,
    i64,
)> {
    let dir = tempfile_dir()?;
    let now = chrono::Utc::now().timestamp();
    let store = SqliteStore::init(&dir.join("data"), &dir.join("vault"), now, "bench")?;
    let keys = store.key_ring()?;
    Ok((dir, example_policy()?, store, keys, now))
}

/// The benchmarks' source: every collection allowed.
fn bench_source() -> Source {
    Source {
        name: "bench".into(),
        collections: None,
        consent: None,
    }
}

fn example_policy() -> Result<veil_policy::Policy> {
    Ok(crate::commands::example_policy(
        crate::commands::EXAMPLE_POLICY,
    )?)
}

/// `veil bench http`: a gateway on loopback with a fresh store per run, driven by N
/// connections sending NDJSON requests of `batch` events; events/s, latency percentiles,
/// and the ratio to the in-process pipeline over the same events in the same process.
/// One NDJSON envelope as an OTLP log record: `event.name`, `event.id` and the attributes,
/// as an OpenTelemetry SDK would send it.
fn log_record(line: &[u8]) -> Result<opentelemetry_proto::tonic::logs::v1::LogRecord> {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value as Av, AnyValue, KeyValue};
    let v: serde_json::Value = serde_json::from_slice(line)?;
    let kv = |k: &str, v: Av| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let mut attrs = vec![kv(
        "event.name",
        Av::StringValue(v["event"].as_str().unwrap_or_default().into()),
    )];
    if let Some(id) = v["id"].as_str() {
        attrs.push(kv("event.id", Av::StringValue(id.into())));
    }
    for (k, a) in v["attrs"].as_object().into_iter().flatten() {
        let value = match a {
            serde_json::Value::String(s) => Av::StringValue(s.clone()),
            serde_json::Value::Bool(b) => Av::BoolValue(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Av::IntValue(i),
                None => Av::DoubleValue(n.as_f64().unwrap_or_default()),
            },
            _ => continue,
        };
        attrs.push(kv(k, value));
    }
    let t = chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap_or_default())?;
    Ok(opentelemetry_proto::tonic::logs::v1::LogRecord {
        time_unix_nano: t.timestamp() as u64 * 1_000_000_000,
        attributes: attrs,
        ..Default::default()
    })
}

/// Events as OTLP requests of `batch` log records each.
fn otlp_requests(
    lines: &[Vec<u8>],
    batch: usize,
) -> Result<Vec<opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest>> {
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    lines
        .chunks(batch.max(1))
        .map(|c| {
            Ok(
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        scope_logs: vec![ScopeLogs {
                            log_records: c.iter().map(|l| log_record(l)).collect::<Result<_>>()?,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                },
            )
        })
        .collect()
}

pub fn http(
    n: usize,
    batch: usize,
    connections: &[usize],
    protocol: crate::BenchProtocol,
) -> Result<u8> {
    use crate::BenchProtocol;
    use http_body_util::{BodyExt, Full};
    use prost::Message;
    use veil_gateway::server::{auth, ServeConfig, Server, ServerLimits};
    eprintln!("generating {n} events…");
    let lines = events(n)?;
    let requests = match protocol {
        BenchProtocol::Ndjson => Vec::new(),
        _ => otlp_requests(&lines, batch)?,
    };
    let bodies: Vec<bytes::Bytes> = match protocol {
        BenchProtocol::Ndjson => lines
            .chunks(batch.max(1))
            .map(|c| {
                let mut b = Vec::with_capacity(c.iter().map(|l| l.len() + 1).sum());
                for l in c {
                    b.extend_from_slice(l);
                    b.push(b'\n');
                }
                bytes::Bytes::from(b)
            })
            .collect(),
        _ => requests
            .iter()
            .map(|r| bytes::Bytes::from(r.encode_to_vec()))
            .collect(),
    };
    let (path, content_type, wire) = match protocol {
        BenchProtocol::Ndjson => ("/v1/events", "application/x-ndjson", "NDJSON"),
        BenchProtocol::OtlpHttp => ("/v1/logs", "application/x-protobuf", "OTLP/HTTP protobuf"),
        BenchProtocol::OtlpGrpc => ("", "", "OTLP/gRPC"),
    };
    let (base, _, _) = in_process(&lines)?;
    println!(
        "bench http: {n} events, {batch} per request ({wire}), one gateway process on loopback"
    );
    // Not pinned: the door and commit threads may use both cores, as the gateway may.
    println!("  in-process (door + commit threads)  {}", rate(n, base));
    let token = format!("bench-{}", rand::random::<u64>());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for &conns in connections {
        let dir = tempfile_dir()?;
        let now = chrono::Utc::now().timestamp();
        let store = SqliteStore::init(&dir.join("data"), &dir.join("vault"), now, "bench")?;
        let cfg = ServeConfig {
            listen: "127.0.0.1:0".into(),
            otlp_listen: None,
            otlp_grpc_listen: (protocol == BenchProtocol::OtlpGrpc).then(|| "127.0.0.1:0".into()),
            principals: vec![auth::Principal {
                name: "bench".into(),
                roles: vec![auth::Role::Source],
                collections: Some(
                    example_policy()?
                        .collections()
                        .iter()
                        .map(|c| c.name.clone())
                        .collect(),
                ),
                token_sha256: crate::config::token_hash(&token),
                cert_sha256: None,
                consent: None,
            }],
            limits: ServerLimits::default(),
            event_limits: Limits::default(),
            tls: None,
            anchor: None,
            dashboard: Default::default(),
            clock: Default::default(),
        };
        let bodies = bodies.clone();
        let requests = requests.clone();
        let token = token.clone();
        let (secs, mut lat, refused) = rt.block_on(async move {
            let server = Server::bind(cfg, Box::new(store), example_policy()?).await?;
            let addr = server.local_addr();
            let grpc = server.grpc_addr();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(server.run(async {
                let _ = stopped.await;
            }));
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(conns)
                    .build_http::<Full<bytes::Bytes>>();
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let bodies = std::sync::Arc::new(bodies);
            let requests = std::sync::Arc::new(requests);
            // One HTTP/2 connection per simulated client for gRPC, as an SDK keeps one.
            let mut channels = Vec::new();
            if let Some(g) = grpc {
                for _ in 0..conns {
                    channels.push(
                        tonic::transport::Endpoint::from_shared(format!("http://{g}"))?
                            .connect()
                            .await?,
                    );
                }
            }
            let t = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..conns {
                let (client, next, bodies, token) =
                    (client.clone(), next.clone(), bodies.clone(), token.clone());
                let (requests, channel) = (requests.clone(), channels.get(c).cloned());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut refused = 0usize;
                    if let Some(channel) = channel {
                        use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
                        let mut grpc = LogsServiceClient::new(channel);
                        let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(r) = requests.get(i) else { break };
                            loop {
                                let mut req = tonic::Request::new(r.clone());
                                req.metadata_mut().insert("authorization", auth.clone());
                                let t0 = Instant::now();
                                let res = grpc.export(req).await;
                                lat.push(t0.elapsed().as_secs_f64());
                                match res {
                                    Ok(_) => break,
                                    Err(s) if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable) => {
                                        refused += 1;
                                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                    }
                                    Err(s) => anyhow::bail!("the gateway answered {:?}", s.code()),
                                }
                            }
                        }
                        return anyhow::Ok((lat, refused));
                    }
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { break };
                        loop {
                            let req = hyper::Request::post(format!("http://{addr}{path}"))
                                .header("content-type", content_type)
                                .header("authorization", format!("Bearer {token}"))
                                .body(Full::new(body.clone()))?;
                            let t0 = Instant::now();
                            let resp = client.request(req).await?;
                            let status = resp.status();
                            resp.into_body().collect().await?;
                            lat.push(t0.elapsed().as_secs_f64());
                            if status.is_success() {
                                break;
                            }
                            if status == 429 || status == 503 {
                                refused += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                continue;
                            }
                            anyhow::bail!("the gateway answered {status}");
                        }
                    }
                    anyhow::Ok((lat, refused))
                }));
            }
            let mut lat = Vec::new();
            let mut refused = 0;
            for t in tasks {
                let (l, r) = t.await??;
                lat.extend(l);
                refused += r;
            }
            let secs = t.elapsed().as_secs_f64();
            let _ = stop.send(());
            running.await?;
            anyhow::Ok((secs, lat, refused))
        })?;
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] * 1e3;
        println!(
            "  {conns:>3} connections: {}  = {:.0}% of in-process; latency p50 {:.1} ms, p99 {:.1} ms; {refused} requests refused (429/503) and retried",
            rate(n, secs),
            100.0 * base / secs,
            pct(0.5),
            pct(0.99)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(0)
}

/// The labelled corpus of the PII scanner's tests, so the bench times the same strings.
const PII_CORPUS: &str = include_str!("../../veil-pipeline/tests/data/pii_corpus.tsv");

/// Short values as retained attributes carry them: what the door scans most.
const TYPICAL: &[&str] = &[
    "payments",
    "web",
    "search",
    "eu-west-1",
    "GET",
    "200",
    "4.2.1",
    "ok",
    "timeout",
    "/api/v1/users/{id}",
    "api-7d9f8b6c5d-x2x7k",
    "ERR_CONNECTION_RESET",
    "2026-11-20T10:00:00Z",
    "chrome",
    "linux",
    "build 1234 failed after 12:04",
    "retrying in 5s",
    "cache miss",
    "checkout",
    "v2.14.1",
    "main",
    "feature/login-page",
    "a94a8fe5",
    "1h30m",
    "250ms",
    "en-US",
    "mobile",
    "ios",
    "17.1",
    "premium",
    "trial",
    "disabled",
    "ingress",
    "worker-0",
    "10:30:00",
    "E1234",
    "payment declined",
    "card_declined",
    "insufficient_funds",
    "2026.11.20.1234",
];

/// The corpus's values by label: (positives, negatives). Escapes as its header says.
fn pii_corpus() -> (Vec<String>, Vec<String>) {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for l in PII_CORPUS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut f = l.splitn(3, '\t');
        let (Some(label), Some(_), Some(v)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mut s = String::with_capacity(v.len());
        let mut it = v.chars();
        while let Some(c) = it.next() {
            match (c, c == '\\') {
                (_, false) => s.push(c),
                (_, true) => match it.next() {
                    Some('t') => s.push('\t'),
                    Some('n') => s.push('\n'),
                    Some('u') => {
                        let hex: String = it.by_ref().skip(1).take_while(|&c| c != '}').collect();
                        s.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                    }
                    Some(o) => s.push(o),
                    None => {}
                },
            }
        }
        if label == "pos" {
            pos.push(s)
        } else {
            neg.push(s)
        }
    }
    (pos, neg)
}

/// Nanoseconds per value of `f` over `values`: the fastest of many rounds of about a
/// millisecond each, so that on a shared machine some rounds run without being preempted.
fn ns_per_value(values: &[String], rounds: usize, f: impl Fn(&str) -> bool) -> f64 {
    let pass = |reps: usize| {
        let t = Instant::now();
        let mut hits = 0usize;
        for _ in 0..reps {
            for v in values {
                hits += f(std::hint::black_box(v)) as usize;
            }
        }
        std::hint::black_box(hits);
        t.elapsed().as_secs_f64()
    };
    let one = pass(1).max(1e-9);
    let reps = ((1e-3 / one) as usize).clamp(1, 100_000);
    let mut best = f64::MAX;
    for _ in 0..rounds {
        best = best.min(pass(reps) * 1e9 / (reps * values.len()) as f64);
    }
    best
}

/// The PII scanner per value against a baseline of one `contains('@')` pass over the same
/// strings, on typical short attribute values, the corpus's negatives and its positives.
pub fn pii(rounds: usize) -> Result<u8> {
    use veil_pipeline::pii;
    let rounds = rounds.max(1);
    let (pos, neg) = pii_corpus();
    let typical: Vec<String> = TYPICAL.iter().map(|s| s.to_string()).collect();
    // Warm up: compile every lazily built pattern before timing anything.
    for v in pos.iter().chain(&neg) {
        std::hint::black_box(pii::redact(v));
    }
    println!(
        "bench pii: ns per value, fastest of {rounds} rounds of ~1 ms; × = ratio to the baseline"
    );
    println!(
        "  {:<34} {:>7} {:>9} {:>7} {:>9} {:>7} {:>9}",
        "values", "base", "first()", "×", "redact()", "×", "avg bytes"
    );
    for (name, values) in [
        ("typical attribute values", &typical),
        ("corpus negatives (telemetry)", &neg),
        ("corpus positives (PII, secrets)", &pos),
    ] {
        let base = ns_per_value(values, rounds, |v| v.contains('@'));
        let first = ns_per_value(values, rounds, |v| pii::first(v).is_some());
        let red = ns_per_value(values, rounds, |v| pii::redact(v).is_some());
        let avg = values.iter().map(String::len).sum::<usize>() as f64 / values.len() as f64;
        println!(
            "  {:<34} {:>7.1} {:>9.1} {:>7.1} {:>9.1} {:>7.1} {:>9.1}",
            format!("{name} ({})", values.len()),
            base,
            first,
            first / base,
            red,
            red / base,
            avg
        );
    }
    Ok(0)
}

/// `veil bench collect`: the collector's walk and diff (no door, no store: what
/// `collect git --dry-run` does) against `git log --numstat` on the same history, timed in
/// the same run; totals are compared so the two did the same work.
pub fn collect(repo: &std::path::Path, threads: Option<usize>) -> Result<u8> {
    use veil_collect::git::{walk, WalkOptions};
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let t = Instant::now();
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "log",
            "--numstat",
            "--no-renames",
            "--diff-merges=first-parent",
            "--format=%x01",
            "HEAD",
        ])
        .output()
        .context("running git")?;
    let git_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "git log failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut commits, mut files, mut added) = (0u64, 0u64, 0u64);
    for l in text.lines() {
        if l == "\u{1}" {
            commits += 1;
        } else if !l.is_empty() {
            files += 1;
            added += l
                .split('\t')
                .next()
                .and_then(|a| a.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let mut ratios = Vec::new();
    for n in [1, threads] {
        let opts = WalkOptions {
            threads: n,
            ..WalkOptions::default()
        };
        let t = Instant::now();
        let w = walk(repo, &opts)?;
        let secs = t.elapsed().as_secs_f64();
        let our_files: u64 = w.commits.iter().map(|c| u64::from(c.files_changed)).sum();
        let our_added: u64 = w.commits.iter().map(|c| c.lines_added).sum();
        anyhow::ensure!(
            (w.commits.len() as u64, our_files, our_added) == (commits, files, added),
            "the walker and git disagree: {} commits, {our_files} files, {our_added} lines vs {commits}, {files}, {added}",
            w.commits.len()
        );
        ratios.push((n, secs));
    }
    println!(
        "bench collect: {} ({commits} commits, {files} files changed, {added} lines added)",
        repo.display()
    );
    println!("  git log --numstat --no-renames --diff-merges=first-parent  {git_secs:>8.2} s  {:>8.0} commits/s  1.00", commits as f64 / git_secs);
    for (n, secs) in ratios {
        println!(
            "  veil collect walk, {n} thread(s)                              {secs:>8.2} s  {:>8.0} commits/s  {:.2}× git's speed",
            commits as f64 / secs,
            git_secs / secs
        );
    }
    Ok(0)
}
