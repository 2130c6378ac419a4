//! The dashboard (`GET /` and its pages): sign-in with a principal's token into a
//! session cookie, then server-rendered pages (`veil-present`) built from what the API
//! serves — stored releases, the posture, the audit log, grants — each page and form
//! behind the same authorization function as the API. Every form carries a CSRF token;
//! every answer a strict Content-Security-Policy.

use super::auth::{Action, Principal};
use super::reads::{answer_query, cached_posture, on_store, Answered};
use super::session::random_id;
use super::{now, AppState};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use veil_govern::{Actor, GovernError, GrantState};
use veil_present::{Page, Viewer};
use veil_release::{Query as RQuery, ReleaseError};

/// The session cookie's name: `__Host-` (bound to this origin, path `/`, `Secure`) under
/// TLS; browsers refuse that prefix over plain HTTP, so there it is plain.
fn cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-veil_session"
    } else {
        "veil_session"
    }
}

/// The pre-session cookie that binds the sign-in form's CSRF token.
fn pre_cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-veil_signin"
    } else {
        "veil_signin"
    }
}

/// The Content-Security-Policy of every page: nothing but this origin's stylesheet and
/// forms posting to this origin; no script at all, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (the router adds the security headers to every answer).
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(team_health))
        .route("/usage", get(usage))
        .route("/posture", get(posture))
        .route("/audit", get(audit))
        .route("/grants", get(grants).post(grant_request))
        .route("/grants/{id}/approve", post(grant_approve))
        .route("/grants/{id}/revoke", post(grant_revoke))
        .route("/subjects", get(subjects))
        .route("/subjects/opt-out", post(subject_opt_out))
        .route("/subjects/erase", post(subject_erase))
        .route("/about", get(about_all))
        .route("/about/{collection}", get(about_one))
        .route("/release", post(release))
        .route("/contest", post(contest))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/static/veil.css", get(stylesheet))
}

/// Security headers on every answer of the listener — pages, API answers, the stylesheet,
/// and the 404 and 405 a mistyped or probing URL gets.
pub(super) async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), interest-cohort=()",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        veil_present::STYLESHEET,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

/// A cookie's value from the request, if present once.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    cookie_header(state.tls, name, value, max_age)
}

/// A `Set-Cookie` value: never readable by script, never sent cross-site, `Secure` under
/// TLS.
fn cookie_header(tls: bool, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are base64url")
}

/// A signed-in request: the principal, the page model's viewer, the session id.
struct Signed<'s> {
    principal: &'s Principal,
    viewer: Viewer,
    id: String,
}

fn viewer_of(state: &AppState, p: &Principal, id: &str) -> Viewer {
    Viewer {
        name: p.name.clone(),
        roles: p.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        csrf: state.sessions.csrf("session", id),
        pages: pages_of(p),
    }
}

/// The pages the principal may open: each page's action through the API's authorization.
fn pages_of(p: &Principal) -> Vec<Page> {
    Page::ALL
        .into_iter()
        .filter(|pg| pg.action().is_none_or(|a| p.may(a)))
        .collect()
}

/// The first page a principal may open: where sign-in lands and "back" links lead.
fn home(v: &Viewer) -> &'static str {
    v.pages.first().map(|p| p.href()).unwrap_or("/about")
}

/// The session of a request, if live.
fn session<'s>(state: &'s AppState, headers: &HeaderMap) -> Option<Signed<'s>> {
    let id = cookie(headers, cookie_name(state.tls))?;
    let name = state.sessions.get(id, state.clock.now())?;
    // Roles as configured now, never as they were at sign-in.
    let p = state.principals.iter().find(|p| p.name == name)?;
    Some(Signed {
        principal: p,
        viewer: viewer_of(state, p, id),
        id: id.to_owned(),
    })
}

/// A page's gate: signed in (else to the sign-in form) and allowed (else 403).
fn open_page<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    page: Page,
) -> Result<Signed<'s>, Response> {
    let Some(s) = session(state, headers) else {
        return Err(see_other("/signin"));
    };
    if let Some(a) = page.action() {
        if !s.principal.may(a) {
            super::audit_denial(
                state,
                page.href(),
                "forbidden",
                Some(s.principal.name.clone()),
            );
            return Err(html(
                StatusCode::FORBIDDEN,
                veil_present::message(
                    Some(&s.viewer),
                    "Not for your role",
                    "This page needs a role this principal does not have.",
                    "/about",
                ),
            ));
        }
    }
    Ok(s)
}

/// Whether a form post comes from this dashboard, as far as the browser says: its fetch
/// metadata when it sends them (every current browser), else its `Origin`. Under
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` on form posts, so `null`
/// proves nothing either way; the CSRF token decides then.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (None | Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

fn stale_form(viewer: Option<&Viewer>) -> Response {
    html(
        StatusCode::FORBIDDEN,
        veil_present::message(
            viewer,
            "Form refused",
            "This form was not sent from this dashboard's page, or it is out of date. Nothing was done; open the page again.",
            viewer.map(home).unwrap_or("/signin"),
        ),
    )
}

/// A form post's gate: a live session, the action allowed, the CSRF token of this session,
/// and a same-origin request.
fn post_gate<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    csrf: &str,
    action: Option<Action>,
    endpoint: &'static str,
) -> Result<Signed<'s>, Response> {
    let Some(s) = session(state, headers) else {
        super::audit_denial(state, endpoint, "no_session", None);
        return Err(html(
            StatusCode::FORBIDDEN,
            veil_present::message(
                None,
                "Signed out",
                "Your session has ended (signed out or expired). Nothing was done; sign in again.",
                "/signin",
            ),
        ));
    };
    if !same_origin(headers) || !state.sessions.check_csrf("session", &s.id, csrf) {
        super::audit_denial(state, endpoint, "csrf", Some(s.principal.name.clone()));
        return Err(stale_form(Some(&s.viewer)));
    }
    if let Some(a) = action {
        if !s.principal.may(a) {
            super::audit_denial(state, endpoint, "forbidden", Some(s.principal.name.clone()));
            return Err(html(
                StatusCode::FORBIDDEN,
                veil_present::message(
                    Some(&s.viewer),
                    "Not for your role",
                    "This action needs a role this principal does not have. Nothing was done.",
                    home(&s.viewer),
                ),
            ));
        }
    }
    Ok(s)
}

/// The most a dashboard form's body may hold: the longest field (a contest note, a grant's
/// purpose) is a few hundred characters.
const FORM_LIMIT: usize = 64 * 1024;

/// How long a form's body may take to arrive: a browser sends it at once, so a client
/// dripping one byte at a time loses its connection long before `request_timeout`.
const FORM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A form post's body, unparsed: the CSRF token is read from it before anything else.
/// It is read only when the headers carry a live session (otherwise it stays unread and
/// the gate refuses the post as signed out), at most [`FORM_LIMIT`] bytes within
/// [`FORM_DEADLINE`] — so nobody without a session can hold a connection open by sending
/// a form slowly.
struct Posted(Vec<u8>);

impl axum::extract::FromRequest<Arc<AppState>> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        if session(state, &parts.headers).is_none() {
            return Ok(Posted(Vec::new()));
        }
        read_form(state, &parts.headers, body).await.map(Posted)
    }
}

/// Reads a form's body within [`FORM_LIMIT`] and [`FORM_DEADLINE`] (or the configured
/// request timeout when shorter); a body that does not arrive so is refused, nothing done.
async fn read_form(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Vec<u8>, Response> {
    let deadline = state.limits.request_timeout.min(FORM_DEADLINE);
    super::body::read(headers, body, FORM_LIMIT, deadline)
        .await
        .map_err(|e| {
            html(
                e.status(),
                veil_present::message(
                    None,
                    "Form not received",
                    "The form did not arrive whole and in time. Nothing was done; open the page and send it again.",
                    "/",
                ),
            )
        })
}

/// A form post's gate (see [`post_gate`]), then its parsed body. The token is read from
/// the body leniently first, so a malformed form from a signed-in page is told it is
/// malformed (400), and a forged one is refused as such (403); neither changes anything.
fn form_gate<'s, F: serde::de::DeserializeOwned>(
    state: &'s AppState,
    headers: &HeaderMap,
    body: &Posted,
    action: Option<Action>,
    endpoint: &'static str,
) -> Result<(Signed<'s>, F), Response> {
    let csrf = serde_urlencoded::from_bytes::<CsrfForm>(&body.0)
        .map(|f| f.csrf)
        .unwrap_or_default();
    let s = post_gate(state, headers, &csrf, action, endpoint)?;
    match serde_urlencoded::from_bytes::<F>(&body.0) {
        Ok(f) => Ok((s, f)),
        Err(_) => Err(html(
            StatusCode::BAD_REQUEST,
            veil_present::message(
                Some(&s.viewer),
                "Malformed",
                "The form was malformed; nothing was done.",
                home(&s.viewer),
            ),
        )),
    }
}

// ---- sign-in and sign-out ----

async fn signin_form(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(s) = session(&state, &headers) {
        return see_other(home(&s.viewer));
    }
    signin_page(&state, &headers, None, StatusCode::OK)
}

/// The sign-in form, bound to a pre-session cookie (reused when the browser has one).
fn signin_page(
    state: &AppState,
    headers: &HeaderMap,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let pre = cookie(headers, pre_cookie_name(state.tls))
        .filter(|v| v.len() == 43)
        .map(str::to_owned)
        .unwrap_or_else(random_id);
    let body = veil_present::signin(
        error,
        &state.sessions.csrf("signin", &pre),
        state.dashboard.about_public,
    );
    let mut r = html(status, body);
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state, pre_cookie_name(state.tls), &pre, 3600),
    );
    r
}

#[derive(serde::Deserialize)]
struct SigninForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

async fn signin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match read_form(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(f) = serde_urlencoded::from_bytes::<SigninForm>(&body) else {
        return signin_page(
            &state,
            &headers,
            Some("The sign-in form was malformed; try again."),
            StatusCode::BAD_REQUEST,
        );
    };
    let pre = cookie(&headers, pre_cookie_name(state.tls)).unwrap_or("");
    if pre.is_empty()
        || !same_origin(&headers)
        || !state.sessions.check_csrf("signin", pre, &f.csrf)
    {
        super::audit_denial(&state, "/signin", "csrf", None);
        return signin_page(
            &state,
            &headers,
            Some("The sign-in form was out of date or not from this page; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let mut h = HeaderMap::new();
    let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", f.token.trim())) else {
        super::audit_denial(&state, "/signin", "invalid_token", None);
        return signin_page(
            &state,
            &headers,
            Some("That token matches no principal."),
            StatusCode::UNAUTHORIZED,
        );
    };
    h.insert(header::AUTHORIZATION, v);
    let p = match super::auth::authenticate(&state.principals, &h, None) {
        Ok(p) => p,
        Err(d) => {
            super::audit_denial(&state, "/signin", d.code(), None);
            return signin_page(
                &state,
                &headers,
                Some("That token matches no principal."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let pages = pages_of(p);
    if pages.iter().all(|pg| *pg == Page::About)
        && !p.roles.iter().any(|r| *r != veil_access::Role::Source)
    {
        super::audit_denial(&state, "/signin", "forbidden", Some(p.name.clone()));
        return signin_page(
            &state,
            &headers,
            Some("This principal only sends events; it has no dashboard."),
            StatusCode::FORBIDDEN,
        );
    }
    let t = state.clock.now();
    // A sign-in replaces the browser's session, whoever held it.
    if let Some(old) = cookie(&headers, cookie_name(state.tls)) {
        state.sessions.close(old);
    }
    let id = state.sessions.open(&p.name, t);
    let name = p.name.clone();
    let _ = state
        .writer
        .call(move |s, _| {
            s.audit(&name, "dashboard_signin", &serde_json::json!({}), t)
                .map(|_| ())
        })
        .await;
    let first = pages.first().map(|p| p.href()).unwrap_or("/about");
    let mut r = see_other(first);
    let limits = state.sessions.limits();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, cookie_name(state.tls), &id, limits.max),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, pre_cookie_name(state.tls), "", 0),
    );
    r
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn signout(State(state): State<Arc<AppState>>, headers: HeaderMap, form: Posted) -> Response {
    let s = match form_gate::<CsrfForm>(&state, &headers, &form, None, "/signout") {
        Ok((s, _)) => s,
        Err(r) => return r,
    };
    state.sessions.close(&s.id);
    let (name, t) = (s.principal.name.clone(), state.clock.now());
    let _ = state
        .writer
        .call(move |st, _| {
            st.audit(&name, "dashboard_signout", &serde_json::json!({}), t)
                .map(|_| ())
        })
        .await;
    let mut r = see_other("/signin");
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, cookie_name(state.tls), "", 0),
    );
    r
}

// ---- releases: team health and product usage ----

#[derive(serde::Deserialize, Default)]
struct ReleaseParams {
    metric: Option<String>,
    weeks: Option<u32>,
    view: Option<String>,
    page: Option<usize>,
}

async fn team_health(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<ReleaseParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    releases_page(
        &state,
        &headers,
        params.map(|q| q.0).unwrap_or_default(),
        true,
    )
    .await
}

async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<ReleaseParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    releases_page(
        &state,
        &headers,
        params.map(|q| q.0).unwrap_or_default(),
        false,
    )
    .await
}

/// The query a release page asks: the metric by all its dimensions, from `weeks` ago (no
/// earlier than the aggregate retention keeps) to now.
fn page_query(policy: &veil_policy::Policy, metric: &str, weeks: u32, t: i64) -> Option<RQuery> {
    let (c, m) = policy.metric(metric)?;
    let earliest = t - c.aggregate_retention + 86_400;
    let from = (t - i64::from(weeks) * 7 * 86_400).max(earliest);
    Some(RQuery {
        metric: m.name.clone(),
        by: Some(
            m.by.iter()
                .map(|&i| c.fields[i].name().to_owned())
                .collect(),
        ),
        from: chrono::DateTime::from_timestamp(from, 0).map(|d| d.date_naive()),
        to: None,
    })
}

fn weeks_of(p: &ReleaseParams) -> u32 {
    p.weeks
        .filter(|w| veil_present::RANGES.contains(w))
        .unwrap_or(12)
}

async fn releases_page(
    state: &AppState,
    headers: &HeaderMap,
    params: ReleaseParams,
    team: bool,
) -> Response {
    let page = if team { Page::TeamHealth } else { Page::Usage };
    let s = match open_page(state, headers, page) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let policy = state.engine.read().expect("engine lock").policy.clone();
    let offered = veil_present::page_metrics(&policy, team);
    let metric = params
        .metric
        .clone()
        .filter(|m| offered.contains(m))
        .or_else(|| offered.first().cloned());
    let Some(metric) = metric else {
        return html(
            StatusCode::OK,
            veil_present::message(
                Some(&s.viewer),
                page.label(),
                "The policy declares no metric for this page.",
                "/about",
            ),
        );
    };
    let weeks = weeks_of(&params);
    let t = now();
    let Some(q) = page_query(&policy, &metric, weeks, t) else {
        return see_other(page.href());
    };
    let may_release = s.principal.may(Action::Release);
    let name = s.principal.name.clone();
    let m2 = metric.clone();
    // Stored windows only (nothing is charged by looking), the cost of the rest for an
    // analyst, and the contests.
    let looked = on_store(state, move |store, eng| {
        let policy = eng.read().expect("engine lock").policy.clone();
        let stored = veil_release::lookup(store, &policy, &name, false, &q, t);
        let plan = if may_release {
            Some(veil_release::plan(&*store, &policy, &q, t))
        } else {
            None
        };
        let contests = veil_govern::contests::for_metric(&*store, &m2);
        // Late events refused for the metric's windows in range, by window label.
        let late = policy
            .metric(&m2)
            .map(|(c, m)| {
                let since = q.from.map_or(t, |d| {
                    d.and_hms_opt(0, 0, 0)
                        .map_or(t, |d| d.and_utc().timestamp())
                });
                store.late_by_day(&c.name, since).map(|days| {
                    let mut by_window = std::collections::BTreeMap::<String, i64>::new();
                    for (day, n) in days {
                        let w = veil_pipeline::window::start(m.window, day);
                        *by_window
                            .entry(veil_pipeline::window::label(m.window, w))
                            .or_default() += n;
                    }
                    by_window
                })
            })
            .transpose();
        (stored, plan, contests, late)
    })
    .await;
    let (stored, plan, contests, late) = match looked {
        Ok(x) => x,
        Err(_) => return unavailable(Some(&s.viewer)),
    };
    let mut notice = None;
    let doc = match stored {
        Ok(veil_release::Lookup::Stored(r)) => Some(r.document().clone()),
        Ok(veil_release::Lookup::Fresh(_)) => None, // never with may_release = false
        Err(ReleaseError::NotReleased) => {
            if !may_release {
                // As the API counts a viewer's query of what is not released.
                super::audit_denial(
                    state,
                    page.href(),
                    "not_released",
                    Some(s.principal.name.clone()),
                );
            }
            notice = Some(if may_release {
                "Nothing of this range was released yet; release it below.".to_owned()
            } else {
                "Nothing of this range was released yet: a viewer sees only what an analyst released.".to_owned()
            });
            None
        }
        Err(e) => {
            notice = Some(super::reads::release_sentence(&e));
            None
        }
    };
    let mut pending: Vec<String> = doc
        .as_ref()
        .map(|d| d.not_released.clone())
        .unwrap_or_default();
    let mut cost = None;
    if let Some(Ok(p)) = plan {
        pending = p.new_window_labels.clone();
        if !p.new_windows.is_empty() {
            let day = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            };
            cost = Some(veil_present::Cost {
                from: day(p.from_ts),
                to: day(p.to_ts),
                windows: p.new_window_labels.clone(),
                epsilon_per_window: p.epsilon_per_window,
                epsilon: p.cost,
                periods: p
                    .charges
                    .iter()
                    .map(|c| (c.period.clone(), c.epsilon, c.left_after))
                    .collect(),
                affordable: p.charges.iter().all(|c| c.left_after >= -1e-9),
            });
        }
    }
    let contested = contests
        .map(|c| c.into_keys().collect())
        .unwrap_or_default();
    let r = veil_present::Releases {
        policy: &policy,
        metric: &metric,
        doc: doc.as_ref(),
        pending,
        contested,
        late: late.ok().flatten().unwrap_or_default(),
        cost,
        notice,
        weeks,
        as_table: params.view.as_deref() == Some("table"),
        groups_page: params.page.unwrap_or(0),
        may_contest: s.principal.may(Action::Contest),
    };
    html(StatusCode::OK, veil_present::releases(&s.viewer, &r, team))
}

fn unavailable(viewer: Option<&Viewer>) -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        veil_present::message(
            viewer,
            "Try again",
            "The store is not answering; nothing was done. Try again shortly.",
            viewer.map(home).unwrap_or("/signin"),
        ),
    )
}

#[derive(serde::Deserialize)]
struct ReleaseForm {
    metric: String,
    weeks: u32,
    /// The range the page showed, pinned: a window sealed since cannot slip in.
    from: String,
    to: String,
    /// The windows whose cost the page showed, comma-separated.
    windows: String,
    #[serde(default)]
    back: String,
}

/// Where a form may send the browser back to: one of the dashboard's own pages.
fn back_to(back: &str) -> &'static str {
    Page::ALL
        .into_iter()
        .map(|p| p.href())
        .find(|h| *h == back)
        .unwrap_or("/")
}

/// The analyst's confirmed release: spends the budget the page showed.
async fn release(State(state): State<Arc<AppState>>, headers: HeaderMap, form: Posted) -> Response {
    let (s, f): (_, ReleaseForm) =
        match form_gate(&state, &headers, &form, Some(Action::Release), "/release") {
            Ok(x) => x,
            Err(r) => return r,
        };
    let policy = state.engine.read().expect("engine lock").policy.clone();
    let weeks = weeks_of(&ReleaseParams {
        weeks: Some(f.weeks),
        ..Default::default()
    });
    let date = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
    let (Some(mut q), Some(from), Some(until)) = (
        page_query(&policy, &f.metric, weeks, now()),
        date(&f.from),
        date(&f.to),
    ) else {
        return html(
            StatusCode::BAD_REQUEST,
            veil_present::message(
                Some(&s.viewer),
                "Not released",
                "The release form names no declared metric or no range; nothing was spent.",
                home(&s.viewer),
            ),
        );
    };
    q.from = Some(from);
    q.to = Some(until);
    let back = back_to(&f.back);
    let to = format!("{back}?metric={}&weeks={weeks}", q.metric);
    // Exactly what the page showed, or nothing: the windows (and so the cost) are planned
    // again, and any difference sends the analyst back to the new cost.
    let planned = {
        let q = q.clone();
        on_store(&state, move |store, eng| {
            let policy = eng.read().expect("engine lock").policy.clone();
            veil_release::plan(&*store, &policy, &q, now()).map(|p| p.new_window_labels.join(","))
        })
        .await
    };
    match planned {
        Ok(Ok(w)) if w == f.windows && !w.is_empty() => {}
        Ok(Ok(_)) => {
            return html(
                StatusCode::CONFLICT,
                veil_present::message(
                    Some(&s.viewer),
                    "The cost changed",
                    "The windows this release would spend on are no longer the ones the page showed (released by someone else, or the range moved). Nothing was spent; open the page again to see the cost now.",
                    &to,
                ),
            )
        }
        Ok(Err(e)) => {
            return html(
                StatusCode::FORBIDDEN,
                veil_present::message(Some(&s.viewer), "Not released", &super::reads::release_sentence(&e), &to),
            )
        }
        Err(_) => return unavailable(Some(&s.viewer)),
    }
    match answer_query(&state, s.principal.name.clone(), true, q).await {
        Answered::Released(_) => see_other(&to),
        Answered::Refused(e) => html(
            StatusCode::FORBIDDEN,
            veil_present::message(
                Some(&s.viewer),
                "Not released",
                &super::reads::release_sentence(&e),
                &to,
            ),
        ),
        Answered::Unavailable => unavailable(Some(&s.viewer)),
    }
}

#[derive(serde::Deserialize)]
struct ContestForm {
    metric: String,
    window: String,
    note: String,
    #[serde(default)]
    back: String,
}

/// A person measured questions a released window.
async fn contest(State(state): State<Arc<AppState>>, headers: HeaderMap, form: Posted) -> Response {
    let (s, f): (_, ContestForm) =
        match form_gate(&state, &headers, &form, Some(Action::Contest), "/contest") {
            Ok(x) => x,
            Err(r) => return r,
        };
    let known = state
        .engine
        .read()
        .expect("engine lock")
        .policy
        .metric(&f.metric)
        .is_some();
    let back = if known {
        format!("{}?metric={}", back_to(&f.back), f.metric)
    } else {
        back_to(&f.back).to_owned()
    };
    let t = now();
    let r = super::govern::as_principal(&state, s.principal, move |st, policy, who| {
        veil_govern::contests::file(st, policy, who, &f.metric, &f.window, &f.note, t)
    })
    .await;
    governed(&s.viewer, r, "Your note was filed. It is shown beside this number in every later report, without your name.", &back)
}

/// The page after a governance step: done, refused with its reason, or unavailable.
fn governed<T>(
    viewer: &Viewer,
    r: Result<Result<T, GovernError>, Response>,
    done: &str,
    back: &str,
) -> Response {
    match r {
        Ok(Ok(_)) => html(
            StatusCode::OK,
            veil_present::message(Some(viewer), "Done", done, back),
        ),
        Ok(Err(GovernError::Refused { code, message })) => html(
            super::govern::status_of(code),
            veil_present::message(Some(viewer), "Refused", &message, back),
        ),
        _ => unavailable(Some(viewer)),
    }
}

// ---- privacy posture, audit ----

async fn posture(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let s = match open_page(&state, &headers, Page::Posture) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let doc = match cached_posture(&state).await {
        Ok(d) => d,
        Err(_) => return unavailable(Some(&s.viewer)),
    };
    let anchored = state
        .anchor
        .as_ref()
        .map(|_| *state.anchored.lock().expect("anchor lock"))
        .filter(|a| *a > 0);
    html(
        StatusCode::OK,
        veil_present::posture(&s.viewer, &doc, anchored),
    )
}

#[derive(serde::Deserialize, Default)]
struct AuditParams {
    since: Option<i64>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    principal: String,
}

/// Entries scanned per page, and shown at most.
const AUDIT_SCAN: usize = 2000;
const AUDIT_PAGE: usize = 100;

async fn audit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match open_page(&state, &headers, Page::Audit) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let p = params.map(|q| q.0).unwrap_or_default();
    let read = on_store(&state, move |st, _| -> Result<_, veil_store::StoreError> {
        let head = st.audit_head()?.map(|h| h.seq).unwrap_or(0);
        let since = p
            .since
            .filter(|s| *s >= 1)
            .unwrap_or((head - AUDIT_PAGE as i64 + 1).max(1));
        let scanned = st.audit_log(since, AUDIT_SCAN)?;
        Ok((p, since, scanned))
    })
    .await;
    let (p, since, scanned) = match read {
        Ok(Ok(x)) => x,
        _ => return unavailable(Some(&s.viewer)),
    };
    let mut actions: Vec<String> = scanned.iter().map(|e| e.action.clone()).collect();
    actions.sort();
    actions.dedup();
    let mut rows = Vec::new();
    let mut next = None;
    for e in &scanned {
        if (!p.action.is_empty() && e.action != p.action)
            || (!p.principal.is_empty() && e.actor != p.principal)
        {
            continue;
        }
        if rows.len() == AUDIT_PAGE {
            next = Some(e.seq);
            break;
        }
        let mut detail = e.detail.clone();
        if detail.len() > 400 {
            let mut cut = 400;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        rows.push(veil_present::AuditRow {
            seq: e.seq,
            at: e.at.clone(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            detail,
        });
    }
    if next.is_none() && scanned.len() == AUDIT_SCAN {
        next = scanned.last().map(|e| e.seq + 1);
    }
    let q = veil_present::AuditQuery {
        action: p.action,
        principal: p.principal,
        since,
        next,
        actions,
    };
    html(StatusCode::OK, veil_present::audit(&s.viewer, &rows, &q))
}

// ---- grants ----

async fn grants(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let s = match open_page(&state, &headers, Page::Grants) {
        Ok(s) => s,
        Err(r) => return r,
    };
    grants_page(&state, &s, None, StatusCode::OK).await
}

async fn grants_page(
    state: &AppState,
    s: &Signed<'_>,
    flash: Option<&str>,
    status: StatusCode,
) -> Response {
    let t = state.clock.now();
    let listed = on_store(state, move |st, _| veil_govern::grants::list(&*st, t)).await;
    let Ok(Ok(list)) = listed else {
        return unavailable(Some(&s.viewer));
    };
    let me = &s.principal.name;
    let rows: Vec<veil_present::GrantRow> = list
        .iter()
        .map(|(g, st)| veil_present::GrantRow {
            id: g.id.clone(),
            requester: g.requester.clone(),
            scope: g.scope.clone(),
            purpose: g.purpose.clone(),
            state: st.as_str().to_owned(),
            approvals: g
                .approvals
                .iter()
                .map(|a| format!("{} ({})", a.principal, a.role))
                .collect::<Vec<_>>()
                .join(", "),
            expiry: match (st, g.expires_at()) {
                (GrantState::Live, Some(e)) => veil_present::countdown(t, e),
                (GrantState::Pending, _) => format!(
                    "lasts {} once approved",
                    veil_policy::duration::human(g.duration_secs)
                ),
                (_, Some(e)) => format!("ended {}", veil_present::time(e)),
                (_, None) => "—".into(),
            },
            may_approve: *st == GrantState::Pending
                && s.principal.may(Action::ApproveGrant)
                && &g.requester != me
                && !g.approvals.iter().any(|a| &a.principal == me),
            may_revoke: matches!(st, GrantState::Pending | GrantState::Live)
                && s.principal.may(Action::RevokeGrant)
                && veil_govern::grants::may_revoke(
                    &Actor {
                        name: me,
                        roles: &s.principal.roles,
                        operator: false,
                    },
                    g,
                ),
        })
        .collect();
    let policy = state.engine.read().expect("engine lock").policy.clone();
    html(
        status,
        veil_present::grants(
            &s.viewer,
            &rows,
            s.principal.may(Action::RequestGrant),
            &policy,
            flash,
        ),
    )
}

#[derive(serde::Deserialize)]
struct GrantForm {
    scope: String,
    purpose: String,
    duration: String,
}

async fn grant_request(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    let (s, f): (_, GrantForm) = match form_gate(
        &state,
        &headers,
        &form,
        Some(Action::RequestGrant),
        "/grants",
    ) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(duration) = super::govern::checked_grant(&f.purpose, &f.scope, &f.duration) else {
        return grants_page(&state, &s, Some("A grant needs a purpose of 1 to 500 characters and a duration like 2d, 12h or 30m; nothing was requested."), StatusCode::BAD_REQUEST).await;
    };
    let t = state.clock.now();
    let r = super::govern::as_principal(&state, s.principal, move |st, policy, who| {
        veil_govern::grants::request(st, policy, who, &f.purpose, &f.scope, duration, t)
    })
    .await;
    grant_outcome(
        &state,
        &s,
        r,
        "Requested. It needs an approval from engineering and one from privacy.",
    )
    .await
}

async fn grant_outcome<T>(
    state: &AppState,
    s: &Signed<'_>,
    r: Result<Result<T, GovernError>, Response>,
    done: &str,
) -> Response {
    match r {
        Ok(Ok(_)) => grants_page(state, s, Some(done), StatusCode::OK).await,
        Ok(Err(GovernError::Refused { code, message })) => {
            grants_page(
                state,
                s,
                Some(&format!("Refused: {message}")),
                super::govern::status_of(code),
            )
            .await
        }
        _ => unavailable(Some(&s.viewer)),
    }
}

async fn grant_approve(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    id: Path<String>,
    form: Posted,
) -> Response {
    grant_step(
        state,
        headers,
        id,
        form,
        Action::ApproveGrant,
        veil_govern::grants::approve,
        "Approved.",
    )
    .await
}

async fn grant_revoke(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    id: Path<String>,
    form: Posted,
) -> Response {
    grant_step(
        state,
        headers,
        id,
        form,
        Action::RevokeGrant,
        veil_govern::grants::revoke,
        "Revoked.",
    )
    .await
}

async fn grant_step(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Posted,
    action: Action,
    step: fn(
        &mut dyn veil_store::Store,
        &Actor,
        &str,
        i64,
    ) -> Result<veil_govern::Grant, GovernError>,
    done: &'static str,
) -> Response {
    let s = match form_gate::<CsrfForm>(&state, &headers, &form, Some(action), "/grants/{id}") {
        Ok((s, _)) => s,
        Err(r) => return r,
    };
    let t = state.clock.now();
    let r =
        super::govern::as_principal(&state, s.principal, move |st, _, who| step(st, who, &id, t))
            .await;
    grant_outcome(&state, &s, r, done).await
}

// ---- subject requests ----

async fn subjects(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match open_page(&state, &headers, Page::Subjects) {
        Ok(s) => html(StatusCode::OK, veil_present::subjects(&s.viewer, None)),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct SubjectForm {
    id: String,
    #[serde(default)]
    confirm: String,
}

async fn subject_opt_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    subject_step(&state, &headers, form, false).await
}

async fn subject_erase(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    subject_step(&state, &headers, form, true).await
}

/// Opt-out or erasure of one identifier. The identifier is used on the writer and
/// dropped; no answer, log line or audit entry repeats it.
async fn subject_step(
    state: &AppState,
    headers: &HeaderMap,
    form: Posted,
    erase: bool,
) -> Response {
    let endpoint = if erase {
        "/subjects/erase"
    } else {
        "/subjects/opt-out"
    };
    let (s, f): (_, SubjectForm) = match form_gate(
        state,
        headers,
        &form,
        Some(Action::SubjectRequest),
        endpoint,
    ) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let page = |status: StatusCode, flash: &str| {
        html(status, veil_present::subjects(&s.viewer, Some(flash)))
    };
    if f.id.trim().is_empty() || f.id.len() > 4096 {
        return page(
            StatusCode::BAD_REQUEST,
            "Give an identifier of at most 4096 bytes; nothing was done.",
        );
    }
    if erase && f.confirm != "yes" {
        return page(
            StatusCode::BAD_REQUEST,
            "Confirm the erasure; nothing was erased.",
        );
    }
    let name = s.principal.name.clone();
    let t = now();
    let r = state
        .writer
        .call(move |st, e| -> Result<String, GovernError> {
            let policy = e.read().expect("engine lock").policy.clone();
            let keys = st.key_ring()?;
            if erase {
                let (events, records) = veil_govern::subject::erase(st, &policy, &keys, &name, &f.id, t)?;
                Ok(format!("Erased {events} staged event(s) and {records} contribution record(s) linked to that identifier."))
            } else {
                let new = veil_govern::subject::opt_out(st, &policy, &keys, &name, &f.id, t)?;
                let fresh = super::engine(&*st, policy)?;
                *e.write().expect("engine lock") = Arc::new(fresh);
                Ok(if new {
                    "Opted out: events naming that identifier are dropped at the door from now on.".to_owned()
                } else {
                    "That identifier had already opted out.".to_owned()
                })
            }
        })
        .await;
    if matches!(r, Ok(Ok(_))) {
        state.forget_posture();
    }
    match r {
        Ok(Ok(msg)) => page(StatusCode::OK, &msg),
        Ok(Err(GovernError::Refused { code, message })) => {
            page(super::govern::status_of(code), &message)
        }
        _ => unavailable(Some(&s.viewer)),
    }
}

// ---- what is collected about me ----

async fn about_all(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    method: Method,
) -> Response {
    about(&state, &headers, None, method)
}

async fn about_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    method: Method,
) -> Response {
    about(&state, &headers, Some(collection), method)
}

fn about(state: &AppState, headers: &HeaderMap, collection: Option<String>, _: Method) -> Response {
    let s = session(state, headers);
    if s.is_none() && !state.dashboard.about_public {
        return see_other("/signin");
    }
    let policy = state.engine.read().expect("engine lock").policy.clone();
    if let Some(c) = &collection {
        if policy.collection(c).is_none() {
            return html(
                StatusCode::NOT_FOUND,
                veil_present::message(
                    s.as_ref().map(|s| &s.viewer),
                    "Unknown collection",
                    "The policy declares no collection of that name.",
                    "/about",
                ),
            );
        }
    }
    html(
        StatusCode::OK,
        veil_present::about(
            s.as_ref().map(|s| &s.viewer),
            &policy,
            collection.as_deref(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let v = cookie_header(true, cookie_name(true), "abc", 60);
        assert_eq!(
            v.to_str().unwrap(),
            "__Host-veil_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let v = cookie_header(false, cookie_name(false), "abc", 60);
        assert_eq!(
            v.to_str().unwrap(),
            "veil_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(pre_cookie_name(true).starts_with("__Host-"));
    }

    #[test]
    fn form_posts_must_come_from_this_origin() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        assert!(same_origin(&h(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "none")])));
        assert!(same_origin(&h(&[
            ("origin", "http://a:1"),
            ("host", "a:1")
        ])));
        assert!(!same_origin(&h(&[
            ("origin", "http://evil:1"),
            ("host", "a:1")
        ])));
        // Without metadata the CSRF token alone decides.
        assert!(same_origin(&h(&[])));
        assert!(same_origin(&h(&[("origin", "null")])));
    }

    #[test]
    fn back_links_stay_on_the_dashboard() {
        assert_eq!(back_to("/usage"), "/usage");
        assert_eq!(back_to("https://evil.example/"), "/");
        assert_eq!(back_to("//evil.example"), "/");
    }
}
