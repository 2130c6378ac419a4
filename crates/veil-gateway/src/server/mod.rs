//! `veil serve`: the HTTP gateway (spec §5). Sources send events (JSON, NDJSON, OTLP/HTTP
//! logs); analysts and viewers read releases; auditors read the audit chain; operators
//! scrape metrics and probes.
//!
//! Request path for ingest: authenticate → ingest slot (bounded concurrency, 503) → body
//! with size limit after decompression (413) → the door, off the async threads → per-source
//! rate limit (429) → queue permit for the events (bounded queue, 503) → the writer's group
//! commit → 2xx only after the commit. Every refusal carries a reason code and a sentence,
//! and none repeats a value the client sent.

// Handlers return early with a ready `Response` as their error: the axum idiom. Its size
// does not matter on this path.
#![allow(clippy::result_large_err)]

pub mod anchor;
pub mod auth;
pub mod body;
mod dashboard;
mod govern;
pub mod grpc;
pub mod metrics;
pub mod openapi;
pub mod otlp;
pub mod ratelimit;
mod reads;
pub mod session;
pub mod tls;
pub mod writer;

pub use reads::{posture, OPEN_CONTESTS_SHOWN};

use crate::ingest::{admit_lines, merge_late, Admitted};
use auth::{ClientCert, Denied, Principal};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Router};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use veil_pipeline::{Limits, Reason, Source};
use veil_policy::Policy;
use veil_store::Store;
use writer::{Engine, Job, SharedEngine, Writer};

/// Limits of the gateway itself (event limits live in [`Limits`]).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request body, after decompression.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Events admitted and waiting for their commit, across all requests; past it, 503.
    pub queue_events: usize,
    /// Ingest requests being read and admitted at once; past it, 503.
    pub ingest_concurrency: usize,
    /// Per-source rate limit in events per second (0 = none), and its burst.
    pub source_events_per_sec: f64,
    pub source_burst: f64,
    /// Time allowed to receive a body, and for a read endpoint to answer.
    pub request_timeout: Duration,
    /// Open connections per listener; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Open connections from one client address across all listeners (0 = no cap, for a
    /// gateway behind a proxy, where every client has the proxy's address); past it a new
    /// connection is closed at once.
    pub max_connections_per_ip: usize,
    /// Bytes of request line and headers.
    pub max_header_bytes: usize,
    /// Most events in one group commit.
    pub commit_max_events: usize,
    /// How often the gateway rotates due keys and seals closed windows.
    pub maintenance_every: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_body_bytes: 8 << 20,
            max_events_per_request: 20_000,
            queue_events: 131_072,
            ingest_concurrency: 64,
            source_events_per_sec: 0.0,
            source_burst: 0.0,
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_ip: 128,
            max_header_bytes: 16 * 1024,
            commit_max_events: 32_768,
            maintenance_every: Duration::from_secs(60),
        }
    }
}

/// Everything `veil serve` needs besides the store and the policy.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    /// The OTLP/HTTP listener (default port 4318); `None` serves OTLP on `listen` only.
    pub otlp_listen: Option<String>,
    /// The OTLP/gRPC listener (default port 4317); `None` serves no gRPC.
    pub otlp_grpc_listen: Option<String>,
    pub principals: Vec<Principal>,
    pub limits: ServerLimits,
    pub event_limits: Limits,
    pub tls: Option<tls::TlsConfig>,
    /// Where to anchor audit heads outside the data directory (`[audit]`).
    pub anchor: Option<anchor::AnchorSink>,
    /// The dashboard's sessions and what it shows without sign-in (`[dashboard]`).
    pub dashboard: DashboardConfig,
    /// The time sessions and grant countdowns read: the system clock but in tests.
    pub clock: Clock,
}

/// `[dashboard]` of `veil.toml`.
#[derive(Debug, Clone, Default)]
pub struct DashboardConfig {
    pub sessions: session::SessionLimits,
    /// Whether "what is collected about me" is readable without signing in.
    pub about_public: bool,
    /// Mark cookies `Secure` (and `__Host-`) though the gateway speaks plain HTTP: it sits
    /// behind a proxy that terminates TLS.
    pub secure_cookies: bool,
}

/// Seconds since the epoch, from the system or from a test.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(now))
    }

    /// A clock a test moves.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// The time now.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] veil_store::StoreError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Shared by every handler.
pub struct AppState {
    principals: Vec<Principal>,
    anchor: Option<anchor::AnchorSink>,
    limits: ServerLimits,
    event_limits: Limits,
    engine: SharedEngine,
    writer: Writer,
    metrics: metrics::Metrics,
    rate: ratelimit::RateLimits,
    queue: Arc<Semaphore>,
    ingest_slots: Arc<Semaphore>,
    /// Admissions running at once: one per core, so door work never starves the writer.
    cpu: Arc<Semaphore>,
    stopping: AtomicBool,
    /// Refused requests counted per (minute, endpoint, reason, principal) until they are
    /// audited as one entry a minute: an anonymous flood costs memory for a few keys,
    /// never an fsync per request on the writer that ingest waits for.
    denials: std::sync::Mutex<std::collections::BTreeMap<DenialKey, u64>>,
    /// The last privacy posture and when it was computed (it verifies the whole chain).
    posture: std::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
    /// Held while the posture is computed: readers arriving meanwhile wait for that one
    /// computation instead of queueing their own on the writer.
    posture_flight: tokio::sync::Mutex<()>,
    /// The newest audit sequence number handed to the anchor sink.
    anchored: Arc<std::sync::Mutex<i64>>,
    clock: Clock,
    sessions: session::Sessions,
    dashboard: DashboardConfig,
    /// Whether the browser reaches the dashboard over HTTPS: the main listener speaks TLS,
    /// or a TLS proxy in front of it does (`[dashboard] secure_cookies`). Cookies are then
    /// `Secure` with the `__Host-` prefix.
    tls: bool,
}

impl AppState {
    /// Drops the cached posture after a change it shows (grants, contests, opt-outs).
    fn forget_posture(&self) {
        *self.posture.lock().expect("posture lock") = None;
    }
}

/// (minute start, endpoint template, reason code, principal name if known).
type DenialKey = (i64, &'static str, &'static str, Option<String>);

/// A bound, not yet running gateway (tests and benchmarks read its addresses first).
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
    otlp: Option<TcpListener>,
    grpc: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    writer_thread: std::thread::JoinHandle<()>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Loads the engine (policy, keys, seal boundaries) from the store.
fn engine(store: &dyn Store, policy: Arc<Policy>) -> Result<Engine, veil_store::StoreError> {
    Ok(Engine {
        keys: Arc::new(store.key_ring()?),
        sealed_before: store.sealed_before(&policy)?,
        policy,
    })
}

/// Rotates a due key and (when `seal`) seals closed windows, then refreshes the engine.
fn maintain(
    store: &mut dyn Store,
    shared: &SharedEngine,
    seal: bool,
) -> Result<(), veil_store::StoreError> {
    let policy = shared.read().expect("engine lock").policy.clone();
    let t = now();
    let epochs = store.epochs()?;
    if let Some(cur) = epochs.iter().find(|e| e.end == i64::MAX) {
        if t - cur.created_at >= policy.defaults().key_rotation {
            store.rotate_keys(t, "veil:scheduler")?;
        }
    }
    if seal {
        let keys = store.key_ring()?;
        let sealed = store.seal(&policy, &keys, t, "veil:scheduler")?;
        let purged = store.purge(
            &policy,
            t,
            "veil:scheduler",
            veil_store::PurgeMode::Scheduled,
        )?;
        if !purged.is_empty() {
            tracing::info!(
                staging_events = purged.staging_events.values().sum::<i64>(),
                aggregate_rows = purged.aggregate_rows.values().sum::<i64>(),
                epochs_shredded = purged.epochs_shredded.len(),
                "applied retention"
            );
        }
        if !sealed.windows.is_empty() {
            tracing::info!(windows = sealed.windows.len(), "sealed closed windows");
        }
    }
    let e = engine(store, policy)?;
    *shared.write().expect("engine lock") = Arc::new(e);
    Ok(())
}

impl Server {
    /// Binds the listeners and starts the store writer.
    pub async fn bind(
        cfg: ServeConfig,
        mut store: Box<dyn Store + Send>,
        policy: Policy,
    ) -> Result<Server, ServeError> {
        // Configuration problems first, before anything listens or is written.
        let tls = match &cfg.tls {
            Some(t) => Some(tls::acceptor(t).map_err(ServeError::Tls)?),
            None => None,
        };
        let policy = Arc::new(policy);
        store.note_policy(&policy, "veil:serve", now())?;
        let shared: SharedEngine = Arc::new(RwLock::new(Arc::new(engine(&*store, policy)?)));
        // Keys now; the first seal waits one maintenance period, so a gateway restarted
        // after downtime first takes the late events its sources kept for it.
        maintain(store.as_mut(), &shared, false)?;
        let (writer, writer_thread) = Writer::start(
            store,
            shared.clone(),
            cfg.limits.ingest_concurrency + 64,
            cfg.limits.commit_max_events,
        );
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let listener = bind(cfg.listen.clone()).await?;
        let otlp = match &cfg.otlp_listen {
            // The same fixed address means one listener; port 0 always means a new one.
            Some(a) if a != &cfg.listen || a.ends_with(":0") => Some(bind(a.clone()).await?),
            _ => None,
        };
        let grpc = match &cfg.otlp_grpc_listen {
            Some(a) => Some(bind(a.clone()).await?),
            None => None,
        };
        let state = Arc::new(AppState {
            principals: cfg.principals,
            anchor: cfg.anchor,
            rate: ratelimit::RateLimits::new(
                cfg.limits.source_events_per_sec,
                cfg.limits.source_burst,
            ),
            queue: Arc::new(Semaphore::new(cfg.limits.queue_events)),
            ingest_slots: Arc::new(Semaphore::new(cfg.limits.ingest_concurrency)),
            cpu: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            limits: cfg.limits,
            event_limits: cfg.event_limits,
            engine: shared,
            writer,
            metrics: metrics::Metrics::default(),
            stopping: AtomicBool::new(false),
            denials: Default::default(),
            posture: Default::default(),
            posture_flight: Default::default(),
            anchored: Default::default(),
            clock: cfg.clock,
            sessions: session::Sessions::new(cfg.dashboard.sessions),
            tls: cfg.tls.is_some() || cfg.dashboard.secure_cookies,
            dashboard: cfg.dashboard,
        });
        Ok(Server {
            state,
            listener,
            otlp,
            grpc,
            tls,
            writer_thread,
        })
    }

    /// The main listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The OTLP listener's address, when it is a separate one.
    pub fn otlp_addr(&self) -> Option<SocketAddr> {
        self.otlp
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    /// The OTLP/gRPC listener's address, when there is one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests,
    /// commits everything already queued and stops the writer.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Server {
            state,
            listener,
            otlp,
            grpc,
            tls,
            writer_thread,
        } = self;
        let app = router(state.clone());
        let maintenance = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(state.limits.maintenance_every);
                every.tick().await;
                loop {
                    every.tick().await;
                    let r = state
                        .writer
                        .call(|s, e| maintain(s, e, true).map_err(|e| e.to_string()))
                        .await;
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "maintenance failed");
                    }
                }
            })
        };
        let denials = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
                loop {
                    every.tick().await;
                    flush_denials(&state, now() - now().rem_euclid(60)).await;
                }
            })
        };
        let anchoring = state.anchor.clone().map(|sink| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(sink.every);
                let mut last = None;
                loop {
                    every.tick().await; // the first tick is at once: an anchor at start
                    anchor_head(&state, &sink, &mut last).await;
                }
            })
        });
        let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Each listener its own connection limit: a flood on the OTLP ports leaves the
        // API, the dashboard and /healthz their connections.
        let conns = || Arc::new(Semaphore::new(state.limits.max_connections));
        let per_address = Arc::new(PerAddress::new(state.limits.max_connections_per_ip));
        let mut accepts = vec![tokio::spawn(accept_loop(
            listener,
            app,
            tls.clone(),
            state.clone(),
            (conns(), per_address.clone()),
            graceful.clone(),
            stop_rx.clone(),
        ))];
        if let Some(l) = grpc {
            accepts.push(tokio::spawn(accept_loop(
                l,
                grpc::router(state.clone()),
                tls.clone(),
                state.clone(),
                (conns(), per_address.clone()),
                graceful.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some(l) = otlp {
            // The OTLP port serves OTLP only.
            let otlp_app = Router::new()
                .route("/v1/logs", post(post_logs))
                .route("/v1/traces", post(other_signal))
                .route("/v1/metrics", post(other_signal))
                .fallback(|| async {
                    refuse(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "the OTLP port serves POST /v1/logs only",
                    )
                })
                .layer(axum::middleware::from_fn(dashboard::headers))
                .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
                .with_state(state.clone());
            accepts.push(tokio::spawn(accept_loop(
                l,
                otlp_app,
                tls,
                state.clone(),
                (conns(), per_address),
                graceful.clone(),
                stop_rx,
            )));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        state.stopping.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(true);
        for a in accepts {
            let _ = a.await;
        }
        // The accept loops are done and held the only other handles.
        if let Ok(g) = Arc::try_unwrap(graceful) {
            // A client that stalls its request must not hold the gateway up forever: each
            // request has the request timeout, and shutdown waits at most twice that.
            let wait = state.limits.request_timeout * 2;
            if tokio::time::timeout(wait, g.shutdown()).await.is_err() {
                tracing::warn!("connections still open after the shutdown wait; closing them");
            }
        }
        maintenance.abort();
        let _ = maintenance.await;
        denials.abort();
        let _ = denials.await;
        flush_denials(&state, i64::MAX).await;
        if let Some(a) = anchoring {
            a.abort();
            let _ = a.await;
            // The last head, after every committed request: queued jobs run first.
            if let Some(sink) = state.anchor.clone() {
                anchor_head(&state, &sink, &mut None).await;
            }
        }
        // The last handle to the writer goes with the state; the writer drains its queue.
        drop(state);
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        tracing::info!("stopped; every acknowledged event is committed");
    }
}

/// Reads the head on the writer and, when it moved since `last`, hands it to the sink
/// off the writer thread. A failure is logged, never fatal: ingest goes on.
async fn anchor_head(state: &AppState, sink: &anchor::AnchorSink, last: &mut Option<i64>) {
    let head = match state.writer.call(|s, _| s.audit_head()).await {
        Ok(Ok(Some(h))) => h,
        _ => {
            tracing::error!("could not read the audit head to anchor it");
            return;
        }
    };
    if *last == Some(head.seq) {
        return;
    }
    let a = veil_store::Anchor::of(&head);
    let sink = sink.clone();
    let delivered = state.anchored.clone();
    // One delivery at a time, newest wins: a slow hand-over still in flight when the
    // shutdown anchor starts finishes first, and an older head is never written after a
    // newer one.
    let deliver = move || -> Result<(), anchor::AnchorError> {
        let mut newest = delivered.lock().expect("anchor lock");
        if a.seq <= *newest {
            return Ok(());
        }
        anchor::deliver(&sink, &a)?;
        *newest = a.seq;
        Ok(())
    };
    match tokio::task::spawn_blocking(deliver).await {
        Ok(Ok(())) => *last = Some(head.seq),
        Ok(Err(e)) => tracing::error!(error = %e, "audit anchor not delivered"),
        Err(_) => tracing::error!("audit anchor task failed"),
    }
}

/// Open connections per client address, across all listeners; only counts, kept in
/// memory while the connections are open.
struct PerAddress {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One admitted connection of an address; dropping it frees the place.
struct AddressSlot(Option<(Arc<PerAddress>, std::net::IpAddr)>);

impl PerAddress {
    fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            open: Default::default(),
        }
    }

    /// A place for one more connection from `ip`, or `None` when it holds `max` already.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressSlot> {
        if self.max == 0 {
            return Some(AddressSlot(None));
        }
        let ip = client_of(ip);
        let mut open = self.open.lock().expect("address lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(Some((self.clone(), ip))))
    }
}

/// The address a client is counted under: IPv4 as it is (also when it arrives mapped into
/// IPv6), IPv6 by its /64 — one host is handed a whole /64 and could otherwise take a new
/// address for every connection.
fn client_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some((owner, ip)) = self.0.take() {
            let mut open = owner.open.lock().expect("address lock");
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    (conns, per_address): (Arc<Semaphore>, Arc<PerAddress>),
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.request_timeout)
        .max_buf_size(state.limits.max_header_bytes.max(8192))
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(state.limits.max_header_bytes as u32)
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        // One address holding its share closes its next connection unanswered (the
        // address is counted, never logged).
        let Some(slot) = per_address.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = state.limits.request_timeout;
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
            match tls {
                None => {
                    // A client that says nothing is closed when the request timeout ends:
                    // hyper's protocol detection would wait for its first byte forever.
                    let mut first = [0u8; 1];
                    let said = tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await;
                    if !matches!(said, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acc) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake_timeout, acc.accept(tcp)).await
                    else {
                        return;
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| ClientCert(auth::cert_fingerprint(c.as_ref())));
                    let app = app.layer(axum::Extension(CertSlot(cert)));
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
}

/// The verified client certificate of a TLS connection, if any.
#[derive(Clone)]
struct CertSlot(Option<ClientCert>);

/// The API's routes: (method, path template, handler). `/openapi.json` documents exactly
/// these, and a test holds the two to each other.
pub fn endpoints() -> Vec<(&'static str, &'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("post", "/v1/events", post(post_events)),
        ("post", "/v1/logs", post(post_logs)),
        ("post", "/v1/traces", post(other_signal)),
        ("post", "/v1/metrics", post(other_signal)),
        ("get", "/v1/reports/{metric}", get(reads::report)),
        ("get", "/v1/audit", get(reads::audit_log)),
        ("get", "/v1/audit/verify", get(reads::audit_verify)),
        ("get", "/v1/status", get(reads::status)),
        ("post", "/v1/grants", post(govern::request)),
        ("get", "/v1/grants", get(govern::list)),
        ("post", "/v1/grants/{id}/approve", post(govern::approve)),
        ("post", "/v1/grants/{id}/revoke", post(govern::revoke)),
        ("get", "/v1/staging", get(govern::staging)),
        ("post", "/v1/subjects/opt-out", post(govern::opt_out)),
        ("post", "/v1/contests", post(govern::contest)),
        ("get", "/v1/contests", get(govern::contests)),
        (
            "post",
            "/v1/contests/{id}/answer",
            post(govern::answer_contest),
        ),
        ("get", "/metrics", get(reads::metrics)),
        ("get", "/healthz", get(reads::healthz)),
        ("get", "/readyz", get(reads::readyz)),
        ("get", "/openapi.json", get(reads::openapi)),
    ]
}

fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in endpoints() {
        r = r.route(path, handler);
    }
    r.merge(dashboard::routes())
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /openapi.json",
            )
        })
        .layer(axum::middleware::from_fn(dashboard::headers))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request metrics by endpoint template (never the raw path: it may carry names).
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    // A refused HTTP/1 request may leave its body unread, and then hyper closes the
    // connection after answering. Saying so lets the client open a new one instead of
    // sending its next request down a socket that is about to close.
    let h1_body = req.version() <= axum::http::Version::HTTP_11
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"));
    let t = Instant::now();
    let mut resp = next.run(req).await;
    if h1_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    state
        .metrics
        .latency
        .get_or_create(&vec![("endpoint", endpoint.clone())])
        .observe(t.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&vec![
            ("endpoint", endpoint),
            // A gRPC refusal travels in a 200's headers: its code is the status that counts.
            (
                "status",
                match resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(code) if code != "0" => format!("grpc_{code}"),
                    _ => resp.status().as_u16().to_string(),
                },
            ),
        ])
        .inc();
    resp
}

/// A JSON refusal: `{"error": {"reason", "message"}}`.
pub(crate) fn refuse(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"reason": reason, "message": message}})),
    )
        .into_response()
}

fn retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.max(1).to_string()).expect("digits"),
    );
    r
}

/// Authenticates and authorizes; a denial is audited and answered 401/403.
pub(crate) async fn guard<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
    action: auth::Action,
    endpoint: &'static str,
) -> Result<&'s Principal, Response> {
    match auth::authorize(&state.principals, headers, cert, action) {
        Ok(p) => Ok(p),
        Err((d, who)) => {
            audit_denial(state, endpoint, d.code(), who.map(|p| p.name.clone()));
            Err(match d {
                Denied::Missing => refuse(
                    StatusCode::UNAUTHORIZED,
                    d.code(),
                    "send Authorization: Bearer TOKEN",
                ),
                Denied::Unknown => refuse(
                    StatusCode::UNAUTHORIZED,
                    d.code(),
                    "the token matches no principal",
                ),
                Denied::Forbidden => refuse(
                    StatusCode::FORBIDDEN,
                    d.code(),
                    "this principal has no role that may call this endpoint",
                ),
            })
        }
    }
}

/// Counts one refused request; [`flush_denials`] audits the counts a minute at a time.
fn audit_denial(
    state: &AppState,
    endpoint: &'static str,
    reason: &'static str,
    principal: Option<String>,
) {
    let minute = now() - now().rem_euclid(60);
    let mut d = state.denials.lock().expect("denials lock");
    // A known principal's name is bounded by the config; an unknown caller has none.
    *d.entry((minute, endpoint, reason, principal)).or_default() += 1;
}

/// Audits the denial counts of every minute before `before` (all of them with
/// `i64::MAX`) as one `denied` entry per minute.
async fn flush_denials(state: &AppState, before: i64) {
    let taken: Vec<(DenialKey, u64)> = {
        let mut d = state.denials.lock().expect("denials lock");
        let keep = d.split_off(&(before, "", "", None));
        std::mem::replace(&mut *d, keep).into_iter().collect()
    };
    let mut by_minute: std::collections::BTreeMap<i64, Vec<serde_json::Value>> = Default::default();
    for ((minute, endpoint, reason, principal), n) in taken {
        by_minute.entry(minute).or_default().push(
            serde_json::json!({"endpoint": endpoint, "reason": reason, "principal": principal, "requests": n}),
        );
    }
    for (minute, counts) in by_minute {
        let at = chrono::DateTime::from_timestamp(minute, 0)
            .map(|d| d.format("%Y-%m-%dT%H:%MZ").to_string())
            .unwrap_or_default();
        let detail = serde_json::json!({"minute": at, "counts": counts});
        let r = state
            .writer
            .call(move |s, _| s.audit("gateway", "denied", &detail, now()).map(|_| ()))
            .await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::error!("could not audit refused requests");
        }
    }
}

/// The wire format of a `/v1/events` body.
#[derive(Clone, Copy)]
enum EventsFormat {
    Batch,
    Ndjson,
}

fn events_format(headers: &HeaderMap) -> Option<EventsFormat> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match otlp::mime(ct).as_str() {
        "application/json" => Some(EventsFormat::Batch),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/json-seq" => Some(EventsFormat::Ndjson),
        _ => None,
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        // Printable ASCII and spaces (HTTP has already trimmed the ends); no tab inside.
        Some(v) => match v.to_str() {
            Ok(s)
                if !s.is_empty()
                    && s.len() <= 200
                    && s.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
            {
                Ok(Some(format!("idem:{s}")))
            }
            _ => Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                "Idempotency-Key must be 1 to 200 visible ASCII characters",
            )),
        },
    }
}

/// Outcome of the shared ingest steps after admission.
enum Committed {
    Done {
        admitted_rejected: Vec<(usize, veil_pipeline::Rejection)>,
        outcome: veil_store::IngestOutcome,
    },
    Refused(Response),
}

/// The door's source for a principal: only its declared collections.
fn source_of(p: &Principal) -> Source {
    Source {
        name: p.name.clone(),
        collections: Some(p.collections.clone().unwrap_or_default()),
        consent: Some(p.consent.clone().unwrap_or_default()),
    }
}

/// Rate limit, queue permit, group commit. Shared by `/v1/events` and `/v1/logs`.
async fn commit(
    state: &AppState,
    principal: &Principal,
    admitted: Admitted,
    endpoint: &'static str,
) -> Committed {
    let n = admitted.events;
    if admitted
        .rejected
        .iter()
        .any(|(_, r)| r.reason() == Reason::NotAllowedForSource)
    {
        audit_denial(
            state,
            endpoint,
            "collection_not_allowed",
            Some(principal.name.clone()),
        );
        return Committed::Refused(refuse(
            StatusCode::FORBIDDEN,
            "collection_not_allowed",
            "the request holds events of a collection this source may not send; nothing was stored",
        ));
    }
    if let Err(wait) = state.rate.take(&principal.name, n, Instant::now()) {
        return Committed::Refused(retry_after(
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this source is sending faster than its rate limit; retry after the given seconds",
            ),
            wait,
        ));
    }
    // A request larger than the whole queue takes all of it rather than waiting forever.
    let want = n.clamp(1, state.limits.queue_events.max(1)) as u32;
    let permit = match state.queue.clone().try_acquire_many_owned(want) {
        Ok(p) => p,
        Err(_) => {
            return Committed::Refused(retry_after(
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    "the ingest queue is full; retry after the given seconds",
                ),
                1,
            ))
        }
    };
    state.metrics.queue_events.inc_by(n as i64);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let Admitted {
        accepted, rejected, ..
    } = admitted;
    let job = Job::Ingest {
        source: principal.name.clone(),
        received_at: now(),
        accepted,
        rejected: rejected.iter().map(|(_, r)| r.clone()).collect(),
        permit: Some(permit),
        reply: tx,
    };
    let sent = state.writer.ingest(job).await;
    let result = match sent {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| Err("the writer stopped".into())),
        Err(_) => Err("the writer stopped".into()),
    };
    state.metrics.queue_events.dec_by(n as i64);
    match result {
        Ok(outcome) => {
            state.metrics.accepted.inc_by(outcome.accepted as u64);
            state.metrics.duplicates.inc_by(outcome.duplicates as u64);
            state
                .metrics
                .attributes_dropped
                .inc_by(outcome.dropped_attributes as u64);
            for (reason, k) in &outcome.rejected {
                state.metrics.reject(reason, *k as u64);
            }
            // Events a seal overtook between the door and the commit join the door's
            // rejections at their index in the request.
            let mut rejected = rejected;
            merge_late(&mut rejected, &outcome.late);
            Committed::Done {
                admitted_rejected: rejected,
                outcome,
            }
        }
        Err(_) => Committed::Refused(retry_after(
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the events could not be committed; nothing was stored; retry",
            ),
            1,
        )),
    }
}

/// Takes an ingest slot or answers 503.
fn slot(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    if state.stopping.load(Ordering::SeqCst) {
        return Err(retry_after(
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down",
            ),
            1,
        ));
    }
    state.ingest_slots.clone().try_acquire_owned().map_err(|_| {
        retry_after(
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many ingest requests in progress; retry after the given seconds",
            ),
            1,
        )
    })
}

fn body_refusal(e: body::BodyError, limit: usize) -> Response {
    let (reason, msg) = e.reason(limit);
    refuse(e.status(), reason, &msg)
}

/// The most a governance request's JSON body may hold (a grant request, a contest note).
const SMALL_BODY: usize = 64 * 1024;

/// Reads a governance request's JSON body after its principal is authorized, within the
/// request timeout: nobody without a token can hold a connection open by sending a body
/// slowly, and nobody with one can hold it past the timeout.
async fn small_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Response> {
    body::read(headers, body, SMALL_BODY, state.limits.request_timeout)
        .await
        .map_err(|e| body_refusal(e, SMALL_BODY))
}

/// What every ingest request needs before admission.
struct Received {
    /// Held until the response: the request counts against the ingest concurrency.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Prefix for the ids of events that carry none (from `Idempotency-Key`).
    idem: Option<String>,
    /// The body, decompressed and within the size limit.
    bytes: Vec<u8>,
}

/// Takes an ingest slot, reads the `Idempotency-Key` and the body (shared by both ingest
/// endpoints; each encodes the refusal its own way).
async fn receive(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Received, Response> {
    let slot = slot(state)?;
    let idem = idempotency_key(headers)?;
    let limit = state.limits.max_body_bytes;
    let bytes = body::read(headers, body, limit, state.limits.request_timeout)
        .await
        .map_err(|e| body_refusal(e, limit))?;
    Ok(Received {
        _slot: slot,
        idem,
        bytes,
    })
}

/// Runs CPU-heavy admission on the blocking pool so slow bodies never stall other clients.
async fn admit<F>(state: &AppState, f: F) -> Result<Admitted, Response>
where
    F: FnOnce(&veil_pipeline::Door) -> Result<Admitted, Response> + Send + 'static,
{
    let _cpu = state.cpu.clone().acquire_owned().await;
    let eng = state.engine.read().expect("engine lock").clone();
    let limits = state.event_limits;
    tokio::task::spawn_blocking(move || {
        let door = veil_pipeline::Door::new(
            &eng.policy,
            &eng.keys,
            limits,
            now(),
            eng.sealed_before.clone(),
        );
        f(&door)
    })
    .await
    .unwrap_or_else(|_| {
        Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "admission failed",
        ))
    })
}

async fn post_events(
    State(state): State<Arc<AppState>>,
    cert: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cert = cert.and_then(|c| c.0 .0);
    let principal = match guard(
        &state,
        &headers,
        cert.as_ref(),
        auth::Action::Ingest,
        "/v1/events",
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(format) = events_format(&headers) else {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json ({\"events\": [...]}) or application/x-ndjson",
        );
    };
    let Received { _slot, idem, bytes } = match receive(&state, &headers, body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let max_events = state.limits.max_events_per_request;
    let source = source_of(principal);
    let admitted = admit(&state, move |door| {
        let too_many = || {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                &format!("a request may carry at most {max_events} events"),
            )
        };
        match format {
            EventsFormat::Ndjson => {
                let a = admit_lines(door, &source, &bytes, idem.as_deref());
                if a.events > max_events {
                    return Err(too_many());
                }
                Ok(a)
            }
            EventsFormat::Batch => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Batch<'a> {
                    #[serde(borrow)]
                    events: Vec<&'a serde_json::value::RawValue>,
                }
                let batch: Batch = serde_json::from_slice(crate::ingest::strip_bom(&bytes)).map_err(|_| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        "malformed_body",
                        "the body must be a JSON object {\"events\": [...]} (or send application/x-ndjson)",
                    )
                })?;
                if batch.events.len() > max_events {
                    return Err(too_many());
                }
                let mut a = Admitted::default();
                for (i, raw) in batch.events.iter().enumerate() {
                    let default_id = idem.as_ref().map(|p| format!("{p}:{i}"));
                    let missing = default_id
                        .as_deref()
                        .map_or(veil_pipeline::MissingId::Unidentified, veil_pipeline::MissingId::Named);
                    a.line(door, &source, raw.get().as_bytes(), missing);
                }
                Ok(a)
            }
        }
    })
    .await;
    let admitted = match admitted {
        Ok(a) => a,
        Err(r) => return r,
    };
    match commit(&state, principal, admitted, "/v1/events").await {
        Committed::Refused(r) => r,
        Committed::Done {
            admitted_rejected,
            outcome,
        } => axum::Json(serde_json::json!({
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "without_id": outcome.without_id,
            "dropped_attributes": outcome.dropped_attributes,
            "rejected": admitted_rejected.iter().map(|(i, r)| serde_json::json!({
                "index": i, "reason": r.reason().code(), "message": r.message(),
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
    }
}

async fn post_logs(
    State(state): State<Arc<AppState>>,
    cert: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let enc = otlp::Encoding::from_content_type(ct);
    let cert = cert.and_then(|c| c.0 .0);
    // Who asks comes first: an unauthenticated client learns nothing, not even which
    // content types are served (401 before 415).
    let principal = match guard(
        &state,
        &headers,
        cert.as_ref(),
        auth::Action::Ingest,
        "/v1/logs",
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return maybe_reencode(r, enc).await,
    };
    let Some(enc) = enc else {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "OTLP/HTTP needs Content-Type application/x-protobuf or application/json",
        );
    };
    let Received { _slot, idem, bytes } = match receive(&state, &headers, body).await {
        Ok(r) => r,
        Err(r) => return reencode(r, enc).await,
    };
    let admitted = admit(&state, {
        let max_events = state.limits.max_events_per_request;
        let source = source_of(principal);
        move |door| {
            let req = otlp::decode(&bytes, enc)
                .map_err(|m| refuse(StatusCode::BAD_REQUEST, "malformed_body", m))?;
            admit_log_records(door, &source, &req, idem.as_deref(), max_events)
        }
    })
    .await;
    let admitted = match admitted {
        Ok(a) => a,
        Err(r) => return reencode(r, enc).await,
    };
    let total = admitted.events;
    match commit(&state, principal, admitted, "/v1/logs").await {
        Committed::Refused(r) => reencode(r, enc).await,
        Committed::Done {
            admitted_rejected, ..
        } => {
            let message = otlp::rejection_summary(total, admitted_rejected.iter().map(|(_, r)| r));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, enc.content_type())],
                otlp::response(enc, admitted_rejected.len() as i64, message),
            )
                .into_response()
        }
    }
}

/// The door over every log record of an OTLP request (shared by OTLP/HTTP and OTLP/gRPC):
/// a record without `event.id` takes one from the request's idempotency key, if any.
pub(crate) fn admit_log_records(
    door: &veil_pipeline::Door,
    source: &Source,
    req: &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
    idem: Option<&str>,
    max_events: usize,
) -> Result<Admitted, Response> {
    let envs = otlp::envelopes(req);
    if envs.len() > max_events {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            &format!("a request may carry at most {max_events} log records"),
        ));
    }
    let mut a = Admitted::default();
    for (i, mut env) in envs.into_iter().enumerate() {
        if env.id.is_none() {
            if let Some(p) = idem {
                env.id = Some(std::borrow::Cow::Owned(format!("{p}:{i}")));
            }
        }
        a.envelope(door, source, &env);
    }
    Ok(a)
}

/// `/v1/traces` and `/v1/metrics`: Veil takes events as log records only. The answer is
/// a permanent OTLP error (404 with `UNIMPLEMENTED`: not retried by exporters, and not a
/// server error) that says so, so exporters stop and their operators read why.
async fn other_signal(headers: HeaderMap, req: Request) -> Response {
    let signal = if req.uri().path().ends_with("traces") {
        "traces"
    } else {
        "metrics"
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let enc = otlp::Encoding::from_content_type(ct).unwrap_or(otlp::Encoding::Json);
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, enc.content_type())],
        otlp::status(
            enc,
            12, // UNIMPLEMENTED
            &format!("signal_not_accepted: Veil does not accept OTLP {signal}; send events as OTLP log records to /v1/logs (event.name names the collection)"),
        ),
    )
        .into_response()
}

/// [`reencode`] when the request's encoding is known; the JSON refusal otherwise.
async fn maybe_reencode(r: Response, enc: Option<otlp::Encoding>) -> Response {
    match enc {
        Some(enc) => reencode(r, enc).await,
        None => r,
    }
}

/// A JSON refusal taken apart, to be said again in another protocol's error shape.
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// Seconds from `Retry-After`, when the client should retry.
    pub retry_after: Option<u64>,
    pub reason: String,
    pub message: String,
}

impl Refusal {
    /// Reads a [`refuse`] response back.
    pub(crate) async fn of(r: Response) -> Refusal {
        let status = r.status();
        let retry_after = r
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = axum::body::to_bytes(r.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Refusal {
            status,
            retry_after,
            reason: v["error"]["reason"].as_str().unwrap_or("error").to_owned(),
            message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
        }
    }
}

/// Turns a JSON refusal into the OTLP error shape (`google.rpc.Status` in the request's
/// encoding), keeping its status code, `Retry-After` and reason.
async fn reencode(r: Response, enc: otlp::Encoding) -> Response {
    let Refusal {
        status,
        retry_after: retry,
        reason,
        message,
    } = Refusal::of(r).await;
    let code = otlp::rpc_code(status) as i32;
    let out = (
        status,
        [(header::CONTENT_TYPE, enc.content_type())],
        otlp::status(enc, code, &format!("{reason}: {message}")),
    )
        .into_response();
    match retry {
        Some(secs) => retry_after(out, secs),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_store::SqliteStore;

    #[test]
    fn one_client_is_one_ipv4_address_or_one_ipv6_64() {
        let per = Arc::new(PerAddress::new(2));
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Two addresses of one /64 share its places; a third is refused.
        let a = per.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = per.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(per.admit(ip("2001:db8:1:2::77")).is_none());
        // Another /64 is another client.
        assert!(per.admit(ip("2001:db8:1:3::1")).is_some());
        // An IPv4 client counts the same, mapped into IPv6 or not.
        let _c = per.admit(ip("192.0.2.7")).unwrap();
        let _d = per.admit(ip("::ffff:192.0.2.7")).unwrap();
        assert!(per.admit(ip("192.0.2.7")).is_none());
        // A closed connection frees its place.
        drop(a);
        assert!(per.admit(ip("2001:db8:1:2::77")).is_some());
        // 0 means no cap.
        let free = Arc::new(PerAddress::new(0));
        assert!((0..1000).all(|_| free.admit(ip("192.0.2.7")).is_some_and(|s| s.0.is_none())));
    }

    const POLICY: &str = r#"
version: 1
organization: Test
defaults: { seal_grace: 2d }
collections:
  - name: t.event
    purpose: { what: test events, question: does maintenance seal on time, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user:   { type: string, class: direct_identifier, transform: pseudonymize }
      region: { type: string, class: quasi_identifier, values: [eu, us] }
    metrics:
      - name: m
        kind: count
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

    /// 09:00 UTC `d` days ago.
    fn days_ago(d: i64) -> String {
        let day = (chrono::Utc::now() - chrono::Duration::days(d)).date_naive();
        let t = day.and_hms_opt(9, 0, 0).unwrap().and_utc();
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn line(d: i64) -> Vec<u8> {
        format!(
            r#"{{"event":"t.event","time":"{}","attrs":{{"user":"u{d}","region":"eu"}}}}"#,
            days_ago(d)
        )
        .into_bytes()
    }

    /// The gateway seals nothing when it starts, and its scheduled seal takes only
    /// windows that closed at least `seal_grace` (two days here) ago — then its door
    /// answers events of those windows `late`.
    #[test]
    fn maintenance_seals_only_windows_closed_seal_grace_ago_and_the_door_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::init(
            &dir.path().join("data"),
            &dir.path().join("vault"),
            now(),
            "test",
        )
        .unwrap();
        let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
            .unwrap()
            .0;
        let shared: SharedEngine = Arc::new(RwLock::new(Arc::new(
            engine(&store, Arc::new(policy)).unwrap(),
        )));
        let source = Source {
            name: "test".into(),
            collections: None,
            consent: None,
        };
        // Admits the event of `d` days ago with the door the gateway would build now.
        let admit = |d: i64, batch: &mut veil_pipeline::AcceptedBatch| {
            let eng = shared.read().unwrap().clone();
            let limits = Default::default();
            let door = veil_pipeline::Door::new(
                &eng.policy,
                &eng.keys,
                limits,
                now(),
                eng.sealed_before.clone(),
            );
            let missing = veil_pipeline::MissingId::Unidentified;
            door.admit_into(&line(d), &source, missing, batch)
                .err()
                .map(|r| r.reason())
        };
        // Four days ago closed more than two days ago; two days ago (09:00) closed at the
        // start of yesterday, less than two days ago.
        let mut batch = veil_pipeline::AcceptedBatch::default();
        assert_eq!((admit(4, &mut batch), admit(2, &mut batch)), (None, None));
        let eng = shared.read().unwrap().clone();
        let b = veil_store::IngestBatch {
            source: "test",
            received_at: now(),
            accepted: batch,
            rejected: Vec::new(),
        };
        assert_eq!(
            store.ingest(&eng.policy, &eng.keys, &[b]).unwrap()[0].accepted,
            2
        );
        // At startup (seal = false), nothing is sealed.
        maintain(&mut store, &shared, false).unwrap();
        assert!(store.last_audit("seal").unwrap().is_none());
        let scratch = &mut Default::default();
        assert_eq!(admit(4, scratch), None);
        // The scheduled run seals the day four days ago, not the one two days ago.
        maintain(&mut store, &shared, true).unwrap();
        let seal = store.last_audit("seal").unwrap().unwrap();
        let label = |d: i64| format!("m@{}", &days_ago(d)[..10]);
        assert!(seal.detail.contains(&label(4)), "{}", seal.detail);
        assert!(!seal.detail.contains(&label(2)), "{}", seal.detail);
        assert_eq!(admit(4, scratch), Some(veil_pipeline::Reason::Late));
        assert_eq!(admit(2, scratch), None);
    }
}
