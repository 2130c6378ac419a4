//! The dashboard's sessions and forms over real HTTP, with the gateway's clock injected:
//! a session past its idle or absolute expiry is refused, a form without its CSRF token
//! (or with another session's, or from another site) changes nothing, and every answer
//! carries the security headers. (The browser test in veil-cli drives the same pages in
//! Chromium.)

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veil_gateway::server::{
    auth, session::SessionLimits, Clock, DashboardConfig, ServeConfig, Server,
};

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap().to_owned())
    }

    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + 19;
        self.body[at..at + self.body[at..].find('"').unwrap()].to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Gw {
    addr: std::net::SocketAddr,
    otlp: Option<std::net::SocketAddr>,
    clock: Arc<AtomicI64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Gw {
    start_with(false).await
}

async fn start_with(about_public: bool) -> Gw {
    start_full(about_public, false).await
}

async fn start_full(about_public: bool, secure_cookies: bool) -> Gw {
    start_limits(about_public, secure_cookies, Default::default()).await
}

async fn start_limits(
    about_public: bool,
    secure_cookies: bool,
    limits: veil_gateway::server::ServerLimits,
) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for f in ["policy.yaml", "teams.yaml"] {
        std::fs::copy(examples.join(f), dir.path().join(f)).unwrap();
    }
    let (policy, _) = veil_policy::load(&dir.path().join("policy.yaml")).unwrap();
    let t0 = 1_800_000_000;
    let store = veil_store::SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        t0,
        "test",
    )
    .unwrap();
    let clock = Arc::new(AtomicI64::new(t0));
    let principal = |name: &str, role: auth::Role| auth::Principal {
        name: name.into(),
        roles: vec![role],
        collections: None,
        consent: None,
        token_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
            "{name}-token"
        ))),
        cert_sha256: None,
    };
    let c = clock.clone();
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".into(),
        // Its own port: the connection tests need a second listener.
        otlp_listen: Some("127.0.0.1:0".into()),
        otlp_grpc_listen: None,
        principals: vec![
            principal("viewer", auth::Role::Viewer),
            principal("analyst", auth::Role::Analyst),
            principal("member", auth::Role::Member),
            principal("privacy", auth::Role::Privacy),
            principal("eng", auth::Role::Engineering),
        ],
        limits,
        event_limits: Default::default(),
        tls: None,
        anchor: None,
        dashboard: DashboardConfig {
            sessions: SessionLimits {
                idle: 600,
                max: 3600,
            },
            about_public,
            secure_cookies,
        },
        clock: Clock::from_fn(move || c.load(Ordering::SeqCst)),
    };
    let server = Server::bind(cfg, Box::new(store), policy).await.unwrap();
    let addr = server.local_addr();
    let otlp = server.otlp_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Gw {
        addr,
        otlp,
        clock,
        stop: Some(tx),
        _dir: dir,
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Signs in through the form; returns the session cookie ("name=value").
async fn sign_in(gw: &Gw, who: &str) -> String {
    let form = http(gw.addr, "GET", "/signin", &[], "").await;
    assert_eq!(form.status, 200);
    let pre = format!("veil_signin={}", form.cookie("veil_signin").unwrap());
    let body = format!(
        "csrf={}&token={}",
        enc(&form.csrf()),
        enc(&format!("{who}-token"))
    );
    let r = http(
        gw.addr,
        "POST",
        "/signin",
        &[("Cookie", &pre), ("Sec-Fetch-Site", "same-origin")],
        &body,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    format!(
        "veil_session={}",
        r.cookie("veil_session").expect("a session cookie")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_and_at_their_maximum_by_the_injected_clock() {
    let gw = start().await;
    let s = sign_in(&gw, "viewer").await;
    assert_eq!(
        http(gw.addr, "GET", "/posture", &[("Cookie", &s)], "")
            .await
            .status,
        200
    );
    // Idle for 500 s at a time is fine: each use restarts the idle clock...
    for _ in 0..7 {
        gw.clock.fetch_add(500, Ordering::SeqCst);
        assert_eq!(
            http(gw.addr, "GET", "/about", &[("Cookie", &s)], "")
                .await
                .status,
            200
        );
    }
    // ...but not the absolute one: 3600 s after sign-in it is over, though used 100 s ago.
    gw.clock.fetch_add(3600 - 7 * 500, Ordering::SeqCst);
    let r = http(gw.addr, "GET", "/posture", &[("Cookie", &s)], "").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/signin")),
        "past the maximum"
    );
    // Idle past the limit.
    let s = sign_in(&gw, "viewer").await;
    gw.clock.fetch_add(600, Ordering::SeqCst);
    let r = http(gw.addr, "GET", "/", &[("Cookie", &s)], "").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/signin")),
        "idle"
    );
    // A form post with an expired session is refused, whatever its token.
    let s = sign_in(&gw, "analyst").await;
    let page = http(gw.addr, "GET", "/grants", &[("Cookie", &s)], "").await;
    let csrf = page.csrf();
    gw.clock.fetch_add(601, Ordering::SeqCst);
    let r = http(
        gw.addr,
        "POST",
        "/grants",
        &[("Cookie", &s), ("Sec-Fetch-Site", "same-origin")],
        &format!(
            "csrf={}&scope=ci.build_finished&purpose=x&duration=1h",
            enc(&csrf)
        ),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("session has ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_own_csrf_token_changes_nothing() {
    let gw = start().await;
    let a = sign_in(&gw, "analyst").await;
    let b = sign_in(&gw, "analyst").await;
    let csrf_a = http(gw.addr, "GET", "/grants", &[("Cookie", &a)], "")
        .await
        .csrf();
    let csrf_b = http(gw.addr, "GET", "/grants", &[("Cookie", &b)], "")
        .await
        .csrf();
    let post = |cookie: String, csrf: String, site: &'static str, purpose: &'static str| {
        let addr = gw.addr;
        async move {
            let body = if csrf.is_empty() {
                format!("scope=ci.build_finished&purpose={purpose}&duration=1h")
            } else {
                format!(
                    "csrf={}&scope=ci.build_finished&purpose={purpose}&duration=1h",
                    enc(&csrf)
                )
            };
            http(
                addr,
                "POST",
                "/grants",
                &[("Cookie", &cookie), ("Sec-Fetch-Site", site)],
                &body,
            )
            .await
        }
    };
    assert_eq!(
        post(a.clone(), String::new(), "same-origin", "none")
            .await
            .status,
        403,
        "no token"
    );
    assert_eq!(
        post(a.clone(), "x".into(), "same-origin", "bad")
            .await
            .status,
        403,
        "a made-up token"
    );
    assert_eq!(
        post(a.clone(), csrf_b.clone(), "same-origin", "other")
            .await
            .status,
        403,
        "another session's token"
    );
    assert_eq!(
        post(a.clone(), csrf_a.clone(), "cross-site", "cross")
            .await
            .status,
        403,
        "from another site"
    );
    let list = http(gw.addr, "GET", "/grants", &[("Cookie", &a)], "").await;
    assert!(list.body.contains("no grants"), "nothing was requested");
    // A malformed form from a real page is told so, and changes nothing either.
    let r = http(
        gw.addr,
        "POST",
        "/grants",
        &[("Cookie", &a), ("Sec-Fetch-Site", "same-origin")],
        &format!("csrf={}&purpose=no-scope", enc(&csrf_a)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("malformed"));
    let ok = post(a.clone(), csrf_a, "same-origin", "investigate").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("investigate"));
    // The sign-in form needs its pre-session token too.
    let r = http(
        gw.addr,
        "POST",
        "/signin",
        &[("Sec-Fetch-Site", "same-origin")],
        &format!("token={}", enc("analyst-token")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.cookie("veil_session").is_none());
    // Sign-out needs it as well, then the cookie opens nothing.
    let r = http(
        gw.addr,
        "POST",
        "/signout",
        &[("Cookie", &b), ("Sec-Fetch-Site", "same-origin")],
        "csrf=",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = http(
        gw.addr,
        "POST",
        "/signout",
        &[("Cookie", &b), ("Sec-Fetch-Site", "same-origin")],
        &format!("csrf={}", enc(&csrf_b)),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        http(gw.addr, "GET", "/", &[("Cookie", &b)], "")
            .await
            .status,
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_answer_carries_the_security_headers() {
    let gw = start().await;
    let v = sign_in(&gw, "viewer").await;
    for (path, cookie) in [
        ("/signin", ""),
        ("/", ""),
        ("/about", ""),
        ("/static/veil.css", ""),
        ("/", v.as_str()),
        ("/usage", v.as_str()),
        ("/posture", v.as_str()),
        ("/audit", v.as_str()),
        ("/grants", v.as_str()),
        ("/about/ci.build_finished", v.as_str()),
        ("/about/none", v.as_str()),
        // Not found, not allowed, not authenticated: the router's answers carry them too.
        ("/usage/x", v.as_str()),
        ("/nonexistent", ""),
        ("/static/other.css", ""),
        ("/signout", v.as_str()),
        ("/v1/status", ""),
    ] {
        let r = http(gw.addr, "GET", path, &[("Cookie", cookie)], "").await;
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("script-src"),
            "{path}: no script at all"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // The OTLP port's answers carry them too (a 405, a 404, a 401).
    let otlp = gw.otlp.expect("an OTLP listener");
    for (method, path) in [("GET", "/v1/logs"), ("GET", "/nope"), ("POST", "/v1/logs")] {
        let r = http(otlp, method, path, &[], "").await;
        assert!(
            r.header("content-security-policy").is_some()
                && r.header("x-frame-options") == Some("DENY"),
            "OTLP {method} {path}: {}",
            r.status
        );
    }
    // A viewer is refused the audit log with a page that says so.
    let r = http(gw.addr, "GET", "/audit", &[("Cookie", &v)], "").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Not for your role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_collected_is_public_only_when_the_config_says_so() {
    let closed = start().await;
    let r = http(closed.addr, "GET", "/about", &[], "").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")));
    let open = start_with(true).await;
    let r = http(open.addr, "GET", "/about/ci.build_finished", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("We collect"), "the purpose sentence");
    assert!(r.body.contains("what happens to it"));
    // Nothing else opens without sign-in, and the page offers nothing else.
    assert!(!r.body.contains("href=\"/posture\""));
    for path in ["/", "/usage", "/posture", "/audit", "/grants", "/subjects"] {
        let r = http(open.addr, "GET", path, &[], "").await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/signin")),
            "{path}"
        );
    }
}

/// Every form of the dashboard: path, the principal whose role may post it, the fields.
const FORMS: &[(&str, &str, &str)] = &[
    (
        "/release",
        "analyst",
        "metric=builds&weeks=12&from=2026-01-05&to=2027-01-04&windows=2026-W02",
    ),
    (
        "/contest",
        "member",
        "metric=builds&window=2026-W02&note=looks+off",
    ),
    (
        "/grants",
        "analyst",
        "scope=ci.build_finished&purpose=debug&duration=1h",
    ),
    ("/grants/GRANT/approve", "eng", ""),
    ("/grants/GRANT/revoke", "privacy", ""),
    ("/subjects/opt-out", "privacy", "id=someone%40example.org"),
    (
        "/subjects/erase",
        "privacy",
        "id=someone%40example.org&confirm=yes",
    ),
    ("/signout", "viewer", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_refuses_a_missing_or_foreign_token_and_a_role_without_it() {
    let gw = start().await;
    let viewer = sign_in(&gw, "viewer").await;
    let viewer_csrf = http(gw.addr, "GET", "/about", &[("Cookie", &viewer)], "")
        .await
        .csrf();
    // A real pending grant for the approve and revoke forms to act on.
    let r = http(
        gw.addr,
        "POST",
        "/v1/grants",
        &[
            ("Authorization", "Bearer analyst-token"),
            ("Content-Type", "application/json"),
        ],
        r#"{"purpose": "debug", "scope": "ci.build_finished", "duration": "1h"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let grant: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let grant = grant["id"].as_str().unwrap().to_owned();
    for (path, who, fields) in FORMS {
        let path = &path.replace("GRANT", &grant);
        let own = sign_in(&gw, who).await;
        let csrf = http(gw.addr, "GET", "/about", &[("Cookie", &own)], "")
            .await
            .csrf();
        let post = |cookie: String, token: Option<String>| {
            let body = match token {
                Some(t) if fields.is_empty() => format!("csrf={}", enc(&t)),
                Some(t) => format!("csrf={}&{fields}", enc(&t)),
                None => fields.to_string(),
            };
            let addr = gw.addr;
            async move {
                http(
                    addr,
                    "POST",
                    path,
                    &[("Cookie", &cookie), ("Sec-Fetch-Site", "same-origin")],
                    &body,
                )
                .await
            }
        };
        for (r, why, said) in [
            (post(own.clone(), None).await, "no token", "Form refused"),
            (
                post(own.clone(), Some(viewer_csrf.clone())).await,
                "another session's token",
                "Form refused",
            ),
            (
                post(String::new(), Some(csrf.clone())).await,
                "no session",
                "session has ended",
            ),
        ] {
            assert_eq!(r.status, 403, "{path}: {why}");
            assert!(
                r.body.contains(said),
                "{path}: {why}: refused for that reason"
            );
        }
        if *path != "/signout" {
            // A role without the action, with its own valid token.
            let r = post(viewer.clone(), Some(viewer_csrf.clone())).await;
            assert_eq!(r.status, 403, "{path}: a viewer");
            assert!(r.body.contains("Not for your role"), "{path}");
        }
        // The session that was refused is still the same one (nothing signed out).
        assert_eq!(
            http(gw.addr, "GET", "/about", &[("Cookie", &own)], "")
                .await
                .status,
            200,
            "{path}"
        );
    }
    // Nothing of any of it happened: no grant, contest, opt-out or budget spent.
    let token = "privacy-token";
    let r = http(
        gw.addr,
        "GET",
        "/v1/status",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    // The one grant is the API's, still pending: neither approved nor revoked.
    let grants = doc["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["state"], "pending");
    assert_eq!(doc["open_contests"].as_array().map(Vec::len), Some(0));
    assert_eq!(doc["opted_out"], 0);
    for (c, b) in doc["budget"].as_object().unwrap() {
        assert_eq!(b["spent"].as_f64(), Some(0.0), "{c}");
    }
    let r = http(
        gw.addr,
        "GET",
        "/v1/audit?limit=10000",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(r.body.matches("\"action\":\"grant_request\"").count(), 1);
    for action in [
        "grant_approve",
        "grant_revoke",
        "contest",
        "subject_erase",
        "release",
        "subject_opt_out",
        "dashboard_signout",
    ] {
        assert!(
            !r.body.contains(&format!("\"action\":\"{action}\"")),
            "{action} in the audit log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_tls_proxy_cookies_are_secure_and_host_bound() {
    let gw = start_full(false, true).await;
    let r = http(gw.addr, "GET", "/signin", &[], "").await;
    let set = r.header("set-cookie").unwrap();
    assert!(set.starts_with("__Host-veil_signin="), "{set}");
    assert!(
        set.contains("; Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let plain = start().await;
    let set = http(plain.addr, "GET", "/signin", &[], "").await;
    let set = set.header("set-cookie").unwrap();
    assert!(
        set.starts_with("veil_signin=") && !set.contains("Secure"),
        "{set}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_tokens_and_absurd_parameters_fail_closed_without_a_panic() {
    let gw = start().await;
    let a = sign_in(&gw, "analyst").await;
    let csrf = http(gw.addr, "GET", "/grants", &[("Cookie", &a)], "")
        .await
        .csrf();
    // The right token twice, or the right one beside a wrong one: refused either way.
    for body in [
        format!(
            "csrf={0}&csrf={0}&scope=ci.build_finished&purpose=x&duration=1h",
            enc(&csrf)
        ),
        format!(
            "csrf=wrong&csrf={}&scope=ci.build_finished&purpose=x&duration=1h",
            enc(&csrf)
        ),
    ] {
        let r = http(
            gw.addr,
            "POST",
            "/grants",
            &[("Cookie", &a), ("Sec-Fetch-Site", "same-origin")],
            &body,
        )
        .await;
        assert_eq!(r.status, 403, "{body}");
    }
    // Fetch metadata spelt otherwise is not same-origin.
    let body = format!(
        "csrf={}&scope=ci.build_finished&purpose=x&duration=1h",
        enc(&csrf)
    );
    let r = http(
        gw.addr,
        "POST",
        "/grants",
        &[("Cookie", &a), ("Sec-Fetch-Site", "Same-Origin ")],
        &body,
    )
    .await;
    assert_eq!(r.status, 403);
    // Absurd ranges and pages: an answer, never a panic; the server still serves.
    for path in [
        "/?weeks=4294967295&page=18446744073709551615",
        "/?weeks=-1&page=-1&view=table",
        "/?metric=%00%ff&weeks=0",
        "/usage?metric=builds&page=99999",
        "/audit?since=-9223372036854775808",
        "/about/%2e%2e%2fveil.toml",
    ] {
        let r = http(gw.addr, "GET", path, &[("Cookie", &a)], "").await;
        assert!(r.status < 500, "{path}: {}", r.status);
    }
    let absurd = format!(
        "csrf={}&metric=builds&weeks=12&from=0001-01-01&to=9999-12-31&windows=x",
        enc(&csrf)
    );
    let r = http(
        gw.addr,
        "POST",
        "/release",
        &[("Cookie", &a), ("Sec-Fetch-Site", "same-origin")],
        &absurd,
    )
    .await;
    assert!(matches!(r.status, 403 | 409), "{}", r.status);
    assert_eq!(http(gw.addr, "GET", "/healthz", &[], "").await.status, 200);
}

/// Sends a request whose body says 1,000 bytes and delivers one, then waits (at most 5 s)
/// for the answer's status; `None` if the gateway kept waiting for the rest.
async fn dripped(gw: &Gw, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\nContent-Type: application/x-www-form-urlencoded\r\n",
        gw.addr
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\nc");
    s.write_all(req.as_bytes()).await.unwrap();
    let raw = until_closed(&mut s, 5).await?;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// A client dripping a form or a JSON body cannot hold a connection (and with enough of
/// them, the listener): a post without a session or token is refused before its body is
/// read; with one, and at sign-in, the body must arrive within the deadline (here the
/// configured request timeout of 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slowly_holds_no_connection() {
    let gw = start_limits(
        false,
        false,
        veil_gateway::server::ServerLimits {
            request_timeout: std::time::Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let v = sign_in(&gw, "viewer").await;
    let same = ("Sec-Fetch-Site", "same-origin");
    for path in [
        "/signout",
        "/contest",
        "/release",
        "/grants",
        "/subjects/erase",
    ] {
        assert_eq!(
            dripped(&gw, path, &[same]).await,
            Some(403),
            "{path} without a session"
        );
    }
    assert_eq!(
        dripped(&gw, "/signout", &[("Cookie", &v), same]).await,
        Some(408)
    );
    assert_eq!(dripped(&gw, "/signin", &[same]).await, Some(408));
    for path in ["/v1/contests", "/v1/grants", "/v1/subjects/opt-out"] {
        assert_eq!(
            dripped(&gw, path, &[]).await,
            Some(401),
            "{path} without a token"
        );
    }
    let member = ("Authorization", "Bearer member-token");
    assert_eq!(dripped(&gw, "/v1/contests", &[member]).await, Some(408));
    // The session survived all of it, and the gateway still answers.
    let r = http(gw.addr, "GET", "/", &[("Cookie", &v)], "").await;
    assert_eq!(r.status, 200);
}

/// Many members' open contests keep the posture one page: it lists the newest
/// `OPEN_CONTESTS_SHOWN` and says how many there are in all, in the JSON and on the page.
#[test]
fn the_posture_lists_the_newest_open_contests_and_counts_them_all() {
    use veil_gateway::server::OPEN_CONTESTS_SHOWN;
    let dir = tempfile::tempdir().unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let (policy, _) = veil_policy::load(&examples.join("policy.yaml")).unwrap();
    let t = chrono::Utc::now().timestamp();
    let mut store = veil_store::SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        t - 86_400,
        "test",
    )
    .unwrap();
    let (_, m) = policy.metric("builds").unwrap();
    // A week of its own for each of a member's notes (one window takes only a few).
    let window = |k: usize| veil_pipeline::window::label(m.window, t - 7 * 86_400 * (k as i64 + 1));
    let members: Vec<String> = (0..6).map(|i| format!("member{i}")).collect();
    let roles = [auth::Role::Member];
    let total = veil_govern::contests::OPEN_PER_PRINCIPAL * members.len();
    for i in 0..total {
        let who = veil_govern::Actor {
            name: &members[i % members.len()],
            roles: &roles,
            operator: false,
        };
        veil_govern::contests::file(
            &mut store,
            &policy,
            &who,
            "builds",
            &window(i / members.len()),
            &format!("n{i:03}"),
            t,
        )
        .unwrap();
    }
    assert!(total > OPEN_CONTESTS_SHOWN);
    let doc = veil_gateway::server::posture(&store, &policy, t).unwrap();
    let listed = doc["open_contests"].as_array().unwrap();
    assert_eq!(listed.len(), OPEN_CONTESTS_SHOWN);
    assert_eq!(doc["open_contests_total"], total);
    assert_eq!(
        listed[0]["note"],
        format!("n{:03}", total - 1),
        "newest first"
    );
    let viewer = veil_present::Viewer {
        name: "v".into(),
        roles: vec!["viewer".into()],
        csrf: "t".into(),
        pages: veil_present::Page::ALL.to_vec(),
    };
    let html = veil_present::posture(&viewer, &doc, None);
    assert!(
        html.contains(&format!("the newest {OPEN_CONTESTS_SHOWN} of {total}")),
        "the page says the list is cut"
    );
    assert!(!html.contains("n000"), "the oldest is not on the page");
}

/// What the gateway sent on `s` until it closed (EOF or reset) it; `None` if it kept it
/// open for `secs` seconds.
async fn until_closed(s: &mut tokio::net::TcpStream, secs: u64) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(secs), read)
        .await
        .ok()?;
    Some(raw)
}

/// Whether the gateway closed `s` within `secs` seconds.
async fn closed_within(s: &mut tokio::net::TcpStream, secs: u64) -> bool {
    until_closed(s, secs).await.is_some()
}

/// Connections cannot be hoarded: one that says nothing is closed when the request
/// timeout ends (hyper's protocol detection alone would wait forever), one client address
/// holds at most `max_connections_per_ip`, and a listener's connections are its own — a
/// full OTLP port leaves the API answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_say_nothing_or_crowd_one_address_hold_no_listener() {
    let gw = start_limits(
        false,
        false,
        veil_gateway::server::ServerLimits {
            request_timeout: std::time::Duration::from_secs(1),
            max_connections: 4,
            max_connections_per_ip: 6,
            ..Default::default()
        },
    )
    .await;
    let connect = |a| tokio::net::TcpStream::connect(a);
    // Silent connections are closed after the request timeout.
    let mut silent = connect(gw.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, 4).await,
        "a silent connection stays open"
    );
    // The OTLP port full of connections that started a request and stalled...
    let otlp = gw.otlp.expect("an OTLP listener");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect(otlp).await.unwrap();
        c.write_all(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    // ...leaves the API its own connections.
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        http(gw.addr, "GET", "/healthz", &[], ""),
    )
    .await
    .expect("the API answers while the OTLP port is full");
    assert_eq!(r.status, 200);
    // Two more stalled ones on the API reach this address's 6 across listeners: the next
    // connection from it is closed unanswered.
    for _ in 0..2 {
        let mut c = connect(gw.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut over = connect(gw.addr).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        over.read_to_end(&mut answer),
    )
    .await;
    assert!(
        answer.is_empty(),
        "a 7th connection from one address was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // Stalled headers are cut at the request timeout, and the places come back.
    for c in held.iter_mut() {
        assert!(
            closed_within(c, 4).await,
            "stalled headers hold a connection"
        );
    }
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = http(gw.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(r.status, 200);
}
