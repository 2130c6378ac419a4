//! Grants over HTTP (spec §5): `POST /v1/grants`, `POST /v1/grants/{id}/approve`,
//! `POST /v1/grants/{id}/revoke`, `GET /v1/grants`, `GET /v1/staging?grant=ID` — the same
//! `veil-govern` rules as the CLI, each attempt audited there.

use super::auth::Action;
use super::{guard, now, refuse, AppState, CertSlot};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::sync::Arc;
use veil_govern::{Actor, GovernError, Grant, GrantState};

/// A refusal's HTTP status: 404 for an unknown grant, 409 for a grant in the wrong
/// state, 403 for the two-person rule, 400 for a bad request.
pub(super) fn status_of(code: &str) -> StatusCode {
    match code {
        "unknown_grant" | "unknown_contest" => StatusCode::NOT_FOUND,
        "not_pending" | "not_revocable" | "grant_not_live" => StatusCode::CONFLICT,
        "own_request"
        | "already_approved"
        | "needs_role"
        | "role_already_approved"
        | "needs_principal"
        | "forbidden"
        | "not_grantee"
        // The policy caps how long a grant may last: a refusal of what is asked, not a
        // malformed request.
        | "duration_too_long" => StatusCode::FORBIDDEN,
        // Answered contests free the slot: a later try succeeds.
        "too_many_open" | "too_many_pending" | "too_many_on_window" => {
            StatusCode::TOO_MANY_REQUESTS
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

fn answer<T: serde::Serialize>(
    r: Result<Result<T, GovernError>, Response>,
    ok: StatusCode,
) -> Response {
    match r {
        Err(resp) => resp,
        Ok(Ok(v)) => (ok, axum::Json(v)).into_response(),
        Ok(Err(GovernError::Refused { code, message })) => refuse(status_of(code), code, &message),
        Ok(Err(GovernError::Store(_))) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is not answering; retry",
        ),
    }
}

/// A grant as the API shows it: its fields, state and expiry.
fn shown(g: &Grant, state: GrantState) -> serde_json::Value {
    let mut v = serde_json::to_value(g).expect("a grant serializes");
    v["state"] = state.as_str().into();
    v["expires_at"] = g.expires_at().into();
    v
}

fn cert(c: Option<Extension<CertSlot>>) -> Option<super::ClientCert> {
    c.and_then(|c| c.0 .0)
}

/// Runs a governance action on the writer thread as `principal`.
pub(super) async fn as_principal<T: Send + 'static>(
    state: &AppState,
    principal: &super::auth::Principal,
    f: impl FnOnce(&mut dyn veil_store::Store, &veil_policy::Policy, &Actor) -> Result<T, GovernError>
        + Send
        + 'static,
) -> Result<Result<T, GovernError>, Response> {
    let (name, roles) = (principal.name.clone(), principal.roles.clone());
    // No timeout: a step queued on the writer runs whatever the client does, so the
    // answer waits for it rather than saying "nothing was done" about a step that then
    // commits.
    let r = state
        .writer
        .call(move |s, e| {
            let policy = e.read().expect("engine lock").policy.clone();
            let who = Actor {
                name: &name,
                roles: &roles,
                operator: false,
            };
            f(s, &policy, &who)
        })
        .await;
    match r {
        Ok(v) => {
            // Grants and contests are part of the posture: the next reader sees a change
            // (a refusal changes nothing the posture shows).
            if v.is_ok() {
                state.forget_posture();
            }
            Ok(v)
        }
        Err(_) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is not answering; retry",
        )),
    }
}

/// The checks of a grant request before it reaches `veil-govern`: the duration exactly
/// as the API documents it (1 to 5 digits without a leading zero, then d, h or m;
/// nothing trimmed or reinterpreted), a purpose of 1 to 500 characters and a scope.
pub(super) fn checked_grant(purpose: &str, scope: &str, duration: &str) -> Result<i64, Response> {
    let d = duration.as_bytes();
    let well_formed = (2..=6).contains(&d.len())
        && (b'1'..=b'9').contains(&d[0])
        && d[1..d.len() - 1].iter().all(u8::is_ascii_digit)
        && matches!(d[d.len() - 1], b'd' | b'h' | b'm');
    let Some(duration) = well_formed
        .then(|| veil_policy::duration::parse(duration))
        .flatten()
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_duration",
            "duration must be like 2d, 12h or 30m",
        ));
    };
    if purpose.chars().count() > 500 || scope.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_purpose",
            "a grant needs a purpose of 1 to 500 characters and a scope",
        ));
    }
    Ok(duration)
}

/// Body of `POST /v1/grants`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    purpose: String,
    scope: String,
    /// `2d`, `12h`, `30m`.
    duration: String,
}

pub(super) async fn request(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::RequestGrant,
        "/v1/grants",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let body = match super::small_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<GrantRequest>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "send a JSON object {\"purpose\", \"scope\", \"duration\"} and nothing else",
        );
    };
    let duration = match checked_grant(&req.purpose, &req.scope, &req.duration) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = now();
    let r = as_principal(&state, &p, move |s, policy, who| {
        veil_govern::grants::request(s, policy, who, &req.purpose, &req.scope, duration, t)
            .map(|g| shown(&g, g.state(t)))
    })
    .await;
    answer(r, StatusCode::CREATED)
}

pub(super) async fn approve(
    state: State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    id: Path<String>,
) -> Response {
    let endpoint = "/v1/grants/{id}/approve";
    transition(
        state,
        c,
        headers,
        id,
        Action::ApproveGrant,
        endpoint,
        veil_govern::grants::approve,
    )
    .await
}

pub(super) async fn revoke(
    state: State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    id: Path<String>,
) -> Response {
    let endpoint = "/v1/grants/{id}/revoke";
    transition(
        state,
        c,
        headers,
        id,
        Action::RevokeGrant,
        endpoint,
        veil_govern::grants::revoke,
    )
    .await
}

/// A grant changing state (approve, revoke): the caller's role for `action`, then the
/// `veil-govern` step as that principal.
async fn transition(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    action: Action,
    endpoint: &'static str,
    step: fn(&mut dyn veil_store::Store, &Actor, &str, i64) -> Result<Grant, GovernError>,
) -> Response {
    let p = match guard(&state, &headers, cert(c).as_ref(), action, endpoint).await {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let t = now();
    let r = as_principal(&state, &p, move |s, _, who| {
        step(s, who, &id, t).map(|g| shown(&g, g.state(t)))
    })
    .await;
    answer(r, StatusCode::OK)
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ListGrants,
        "/v1/grants",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let t = now();
    let r = as_principal(&state, &p, move |s, _, _| {
        Ok(veil_govern::grants::list(s, t)?
            .iter()
            .map(|(g, st)| shown(g, *st))
            .collect::<Vec<_>>())
    })
    .await;
    answer(r, StatusCode::OK)
}

/// Query of `GET /v1/staging`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StagingParams {
    grant: String,
}

pub(super) async fn staging(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    params: Result<Query<StagingParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ReadStaging,
        "/v1/staging",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let Ok(Query(q)) = params else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "the one parameter is grant (a grant id)",
        );
    };
    let principals: Vec<(String, Vec<veil_access::Role>)> = state
        .principals
        .iter()
        .map(|p| (p.name.clone(), p.roles.clone()))
        .collect();
    let r = as_principal(&state, &p, move |s, policy, who| {
        // The clock and keys as they are when the writer runs the read, not when the
        // request arrived or this process loaded them: an expiry passed while queued, or
        // an epoch shredded since by another process, holds here.
        let t = now();
        let keys = s.key_ring()?;
        let roles_of = |name: &str| {
            principals
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.clone())
        };
        let rows = veil_govern::grants::read(s, policy, &keys, &roles_of, who, &q.grant, t)?;
        Ok(serde_json::json!({"grant": q.grant, "rows": rows}))
    })
    .await;
    answer(r, StatusCode::OK)
}

/// Body of `POST /v1/subjects/opt-out`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OptOutRequest {
    /// The identifier as the person gives it (never logged, never stored).
    id: String,
}

pub(super) async fn opt_out(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::SubjectRequest,
        "/v1/subjects/opt-out",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let body = match super::small_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<OptOutRequest>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "send a JSON object {\"id\": \"the identifier\"} and nothing else",
        );
    };
    if req.id.trim().is_empty() || req.id.len() > 4096 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_identifier",
            "id must be a non-empty identifier of at most 4096 bytes",
        );
    }
    let t = now();
    let name = p.name.clone();
    let r = tokio::time::timeout(
        state.limits.request_timeout,
        state.writer.call(move |s, e| -> Result<bool, GovernError> {
            let policy = e.read().expect("engine lock").policy.clone();
            let keys = s.key_ring()?;
            let new = veil_govern::subject::opt_out(s, &policy, &keys, &name, &req.id, t)?;
            // The door of this gateway enforces it from the next batch on.
            let fresh = super::engine(&*s, policy)?;
            *e.write().expect("engine lock") = Arc::new(fresh);
            Ok(new)
        }),
    )
    .await;
    if matches!(r, Ok(Ok(Ok(true)))) {
        state.forget_posture();
    }
    let r = match r {
        Ok(Ok(v)) => Ok(v.map(|new| serde_json::json!({"opted_out": true, "new": new}))),
        _ => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is not answering; retry",
        )),
    };
    answer(r, StatusCode::OK)
}

/// Body of `POST /v1/contests`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ContestRequest {
    metric: String,
    window: String,
    note: String,
}

/// Body of `POST /v1/contests/{id}/answer`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    note: String,
}

fn malformed(expected: &str) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        &format!("send a JSON object {expected} and nothing else"),
    )
}

pub(super) async fn contest(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::Contest,
        "/v1/contests",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let body = match super::small_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<ContestRequest>(&body) else {
        return malformed("{\"metric\", \"window\", \"note\"}");
    };
    let t = now();
    let r = as_principal(&state, &p, move |s, policy, who| {
        veil_govern::contests::file(s, policy, who, &req.metric, &req.window, &req.note, t)
    })
    .await;
    answer(r, StatusCode::CREATED)
}

pub(super) async fn contests(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ListContests,
        "/v1/contests",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let r = as_principal(&state, &p, move |s, _, _| veil_govern::contests::list(s)).await;
    answer(r, StatusCode::OK)
}

pub(super) async fn answer_contest(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::AnswerContest,
        "/v1/contests/{id}/answer",
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    let body = match super::small_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<AnswerRequest>(&body) else {
        return malformed("{\"note\"}");
    };
    let t = now();
    let r = as_principal(&state, &p, move |s, _, who| {
        veil_govern::contests::answer(s, who, &id, &req.note, t)
    })
    .await;
    answer(r, StatusCode::OK)
}
