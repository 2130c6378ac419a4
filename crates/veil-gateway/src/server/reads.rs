//! Read endpoints: releases, the audit chain, the privacy posture, metrics and probes.
//! Every store access runs on the writer thread, so reads see committed data only.

use super::auth::Action;
use super::{guard, now, refuse, AppState, CertSlot};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use veil_policy::{FieldClass, Policy, Transform};
use veil_release::{Query as RQuery, ReleaseError};
use veil_store::Store;

/// How many open contests the posture lists, newest first (`open_contests_total` counts all).
pub const OPEN_CONTESTS_SHOWN: usize = 50;

/// The privacy posture of spec §5 (`veil status`, `GET /v1/status`): what is collected and
/// how, rejections by reason, budget spent, last seal, and the audit chain's state.
pub fn posture(
    store: &dyn Store,
    policy: &Policy,
    t: i64,
) -> Result<serde_json::Value, veil_store::StoreError> {
    let mut collections = Vec::new();
    let (mut ids, mut pseudo) = (0, 0);
    for c in policy.collections() {
        let mut classes = BTreeMap::<String, Vec<String>>::new();
        for f in &c.fields {
            classes
                .entry(f.class().as_str().to_owned())
                .or_default()
                .push(format!("{} ({})", f.name(), f.transform().as_str()));
            if f.class() == FieldClass::DirectIdentifier {
                ids += 1;
                if f.transform() == Transform::Pseudonymize {
                    pseudo += 1;
                }
            }
        }
        collections.push(serde_json::json!({"name": c.name, "zone": format!("{:?}", c.zone), "staging_retention": veil_policy::duration::human(c.staging_retention), "fields": classes}));
    }
    let spent = budget_spent(store, policy, t)?;
    let last_seal = store.last_audit("seal")?.map(|e| e.at);
    let last_purge = store.last_audit("purge")?.map(|e| {
        let counts: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
        serde_json::json!({"at": e.at, "counts": counts})
    });
    let stamp = |t: i64| match t {
        i64::MIN | i64::MAX => serde_json::Value::Null,
        t => chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .into(),
    };
    let epochs: Vec<serde_json::Value> = store
        .epochs()?
        .iter()
        .map(|e| {
            let state = match (e.keys.is_some(), e.end == i64::MAX) {
                (false, _) => "shredded",
                (true, true) => "active",
                (true, false) => "retired",
            };
            serde_json::json!({"epoch": e.id.0, "from": stamp(e.start), "until": stamp(e.end),
                "state": state, "shredded_at": e.shredded_at.map(stamp)})
        })
        .collect();
    let staging: Vec<serde_json::Value> = store
        .staging_summary()?
        .into_iter()
        .map(|(c, epoch, events, oldest)| {
            let retention = policy
                .collection(&c)
                .map(|c| c.staging_retention)
                .unwrap_or(policy.defaults().staging_retention);
            serde_json::json!({"collection": c, "epoch": epoch, "events": events,
                "oldest_day": stamp(oldest), "retention": veil_policy::duration::human(retention),
                "past_retention": oldest + 86_400 <= t - retention})
        })
        .collect();
    let grants: Vec<serde_json::Value> = veil_govern::grants::list(store, t)
        .map_err(|e| match e {
            veil_govern::GovernError::Store(e) => e,
            veil_govern::GovernError::Refused { .. } => {
                veil_store::StoreError::Corrupt("listing grants was refused".into())
            }
        })?
        .into_iter()
        .filter(|(_, s)| {
            matches!(
                s,
                veil_govern::GrantState::Live | veil_govern::GrantState::Pending
            )
        })
        .map(|(g, s)| {
            serde_json::json!({"id": g.id, "scope": g.scope, "requester": g.requester,
                "state": s.as_str(), "expires_at": g.expires_at().map(stamp)})
        })
        .collect();
    let v = store.audit_verify(&[])?;
    let (oldest_aggregate, oldest_quarantine) = store.oldest_rows()?;
    let d = policy.defaults();
    let oldest = serde_json::json!({
        "aggregates": {"oldest_window": oldest_aggregate.map(stamp), "retention": veil_policy::duration::human(d.aggregate_retention),
            "past_retention": oldest_aggregate.is_some_and(|o| o + 31 * 86_400 <= t - d.aggregate_retention)},
        "quarantine": {"oldest_received": oldest_quarantine.map(stamp), "retention": veil_policy::duration::human(d.staging_retention),
            "past_retention": oldest_quarantine.is_some_and(|o| o <= t - d.staging_retention)},
    });
    let open: Vec<_> = veil_govern::contests::list(store)
        .map_err(|e| match e {
            veil_govern::GovernError::Store(e) => e,
            veil_govern::GovernError::Refused { .. } => {
                veil_store::StoreError::Corrupt("listing contests was refused".into())
            }
        })?
        .into_iter()
        .filter(|c| c.is_open())
        .collect();
    Ok(serde_json::json!({
        "staging": staging,
        "oldest": oldest,
        "grants": grants,
        "opted_out": store.opt_outs()?.len(),
        // The newest open contests (the posture stays one page); all of them are in
        // `GET /v1/contests`.
        "open_contests": open
            .iter()
            .rev()
            .take(OPEN_CONTESTS_SHOWN)
            .map(|c| serde_json::json!({"id": c.id, "metric": c.metric, "window": c.window, "note": c.note}))
            .collect::<Vec<_>>(),
        "open_contests_total": open.len(),
        "organization": policy.organization(),
        "policy_sha256": policy.hash(),
        "collections": collections,
        "direct_identifiers": {"total": ids, "pseudonymized": pseudo, "dropped": ids - pseudo, "raw_kept": 0},
        "rejections_by_reason": store.quarantine_counts()?,
        "rejections_by_day": store
            .quarantine_by_day(t - t.rem_euclid(86_400) - 27 * 86_400)?
            .into_iter()
            .map(|(day, reason, n)| serde_json::json!({"day": stamp(day), "reason": reason, "events": n}))
            .collect::<Vec<_>>(),
        "budget": spent,
        "budget_spent_by_principal": store.spent_by_principal()?.iter().map(|((p, c), e)| (format!("{p} / {c}"), *e)).collect::<BTreeMap<_, _>>(),
        "last_seal": last_seal,
        "last_purge": last_purge,
        "vault": {"location": store.vault_location(), "epochs": epochs},
        "audit": {"entries": v.entries, "head": v.head, "verified": v.ok, "problem": v.problem},
    }))
}

/// Per collection: its budget for the current period's data, what every principal has
/// spent on that data, and what is left.
fn budget_spent(
    store: &dyn Store,
    policy: &Policy,
    t: i64,
) -> Result<BTreeMap<String, serde_json::Value>, veil_store::StoreError> {
    let mut out = BTreeMap::new();
    for c in policy.collections() {
        let period = c.budget.period_start(t);
        let spent = store.spent(&c.name, period, period + c.budget.period)?;
        let from = chrono::DateTime::from_timestamp(period, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        // The two periods before, whose data may still be released.
        let mut earlier = Vec::new();
        for k in 1..=2 {
            let p = period - k * c.budget.period;
            let s = store.spent(&c.name, p, p + c.budget.period)?;
            let from = chrono::DateTime::from_timestamp(p, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            earlier.push(serde_json::json!({"period_from": from, "spent": s, "left": (c.budget.epsilon - s).max(0.0)}));
        }
        out.insert(
            c.name.clone(),
            serde_json::json!({"period_from": from, "epsilon": c.budget.epsilon, "spent": spent, "left": (c.budget.epsilon - spent).max(0.0), "earlier_periods": earlier}),
        );
    }
    Ok(out)
}

fn cert(c: Option<Extension<CertSlot>>) -> Option<super::ClientCert> {
    c.and_then(|c| c.0 .0)
}

fn unavailable() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store is not answering; retry",
    )
}

/// Runs `f` on the writer within the request timeout.
pub(super) async fn on_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut dyn Store, &super::SharedEngine) -> T + Send + 'static,
) -> Result<T, Response> {
    match tokio::time::timeout(state.limits.request_timeout, state.writer.call(f)).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(unavailable()),
    }
}

/// Runs a store read and answers its result as JSON (503 when the store fails).
async fn read_json<T: serde::Serialize + Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut dyn Store, &super::SharedEngine) -> Result<T, veil_store::StoreError>
        + Send
        + 'static,
) -> Response {
    match on_store(state, f).await {
        Err(r) => r,
        Ok(Err(_)) => unavailable(),
        Ok(Ok(v)) => axum::Json(v).into_response(),
    }
}

/// Query parameters of `GET /v1/reports/{metric}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    by: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub(super) async fn report(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    Path(metric): Path<String>,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = match guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ReadRelease,
        "/v1/reports/{metric}",
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(Query(params)) = params else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "allowed parameters are by (comma-separated dimensions), from and to (YYYY-MM-DD)",
        );
    };
    let date = |s: &Option<String>| -> Result<Option<chrono::NaiveDate>, Response> {
        match s {
            None => Ok(None),
            Some(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_date",
                        "from and to must be dates as YYYY-MM-DD",
                    )
                }),
        }
    };
    let (from, to) = match (date(&params.from), date(&params.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let q = RQuery {
        metric,
        by: params.by.map(|b| {
            b.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        from,
        to,
    };
    // A viewer reads releases an analyst already made; only an analyst spends budget.
    match answer_query(&state, p.name.clone(), p.may(Action::Release), q).await {
        Answered::Released(r) => released(&state, &r).await,
        Answered::Refused(ReleaseError::NotReleased) => {
            super::audit_denial(
                &state,
                "/v1/reports/{metric}",
                "not_released",
                Some(p.name.clone()),
            );
            release_refusal(ReleaseError::NotReleased)
        }
        Answered::Refused(e) => release_refusal(e),
        Answered::Unavailable => unavailable(),
    }
}

/// How a release query ended.
pub(super) enum Answered {
    Released(Box<veil_release::Released>),
    Refused(ReleaseError),
    /// The store did not answer in time; nothing was charged.
    Unavailable,
}

/// Answers a release query as `principal`: stored windows, and new ones (charged) only
/// when `may_release`. The API and the dashboard both release through this.
pub(super) async fn answer_query(
    state: &AppState,
    principal: String,
    may_release: bool,
    q: RQuery,
) -> Answered {
    // Phase 1 on the writer (timed; nothing is charged): plan, a stored answer, or the
    // sealed rows a new release needs.
    let looked = on_store(state, move |store, eng| {
        let policy = eng.read().expect("engine lock").policy.clone();
        veil_release::lookup(store, &policy, &principal, may_release, &q, now())
            .map(|l| (l, policy))
    })
    .await;
    let (draft, policy) = match looked {
        Err(_) => return Answered::Unavailable,
        Ok(Err(e)) => return Answered::Refused(e),
        Ok(Ok((veil_release::Lookup::Stored(r), _))) => return Answered::Released(r),
        Ok(Ok((veil_release::Lookup::Fresh(d), policy))) => (d, policy),
    };
    // Phase 2 off the writer: the noise, so ingest never waits for it.
    let drawn = tokio::task::spawn_blocking({
        let policy = policy.clone();
        move || {
            let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
            veil_release::draw(&policy, draft, &mut rng)
        }
    })
    .await;
    let Ok(drafted) = drawn else {
        return Answered::Unavailable;
    };
    // Phase 3: the charge and its answer are one outcome. This waits for the commit
    // whatever the request timeout: a 5xx is sent only when nothing was charged.
    match state
        .writer
        .call(move |store, _| veil_release::commit(store, &policy, drafted))
        .await
    {
        Ok(Ok(r)) => Answered::Released(Box::new(r)),
        Ok(Err(e)) => Answered::Refused(e),
        Err(_) => Answered::Unavailable,
    }
}

async fn released(state: &AppState, r: &veil_release::Released) -> Response {
    let text = veil_release::render(r, veil_release::Format::Json);
    // Notes from the people measured, beside the windows they contest.
    let metric = r.document().metric.clone();
    let text = match on_store(state, move |s, _| {
        veil_govern::contests::for_metric(s, &metric)
    })
    .await
    {
        Ok(Ok(c)) => {
            veil_govern::contests::annotate(&text, veil_govern::contests::ReportFormat::Json, &c)
        }
        _ => return unavailable(),
    };
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn release_refusal(e: ReleaseError) -> Response {
    let msg = release_sentence(&e);
    match e {
        ReleaseError::BudgetExhausted { .. } => {
            refuse(StatusCode::FORBIDDEN, "budget_exhausted", &msg)
        }
        ReleaseError::NothingSealed { .. } => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, "nothing_sealed", &msg)
        }
        ReleaseError::NotReleased => refuse(StatusCode::FORBIDDEN, "not_released", &msg),
        ReleaseError::Store(veil_store::StoreError::Corrupt(_)) => {
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "integrity_error", &msg)
        }
        ReleaseError::Store(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "store_error", &msg),
        ReleaseError::UnknownMetric(_) => refuse(StatusCode::NOT_FOUND, "unknown_metric", &msg),
        ReleaseError::BadGrouping { .. } => refuse(StatusCode::NOT_FOUND, "unknown_grouping", &msg),
        _ => refuse(StatusCode::BAD_REQUEST, "bad_query", &msg),
    }
}

/// What a refused release says to a reader, over the API and on the dashboard: the
/// release layer's own sentence, but never a store's internals (paths, SQL, vault).
pub(super) fn release_sentence(e: &ReleaseError) -> String {
    match e {
        ReleaseError::NotReleased => "a viewer reads only what was already released; an analyst must release this query first".into(),
        ReleaseError::Store(veil_store::StoreError::Corrupt(_)) => "stored data does not match the audit log; nothing was served or charged; an auditor should run `veil audit verify`".into(),
        ReleaseError::Store(_) => "the release could not be read or stored; nothing was charged".into(),
        e => e.to_string(),
    }
}

/// Query parameters of `GET /v1/audit`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    since: Option<i64>,
    limit: Option<usize>,
}

pub(super) async fn audit_log(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ReadAudit,
        "/v1/audit",
    )
    .await
    {
        return r;
    }
    let Ok(Query(p)) = params else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "allowed parameters are since (sequence number) and limit",
        );
    };
    let since = p.since.unwrap_or(1);
    let limit = p.limit.unwrap_or(1000);
    if since < 1 || !(1..=10_000).contains(&limit) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "since is a sequence number from 1; limit lies between 1 and 10000",
        );
    }
    read_json(&state, move |s, _| s.audit_log(since, limit)).await
}

pub(super) async fn audit_verify(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ReadAudit,
        "/v1/audit/verify",
    )
    .await
    {
        return r;
    }
    // A configured anchor file that cannot be read is a failed verification, never a
    // silent "no anchors".
    let anchors = match state.anchor.as_ref().and_then(|a| a.file.as_deref()) {
        None => Vec::new(),
        Some(f) => match super::anchor::read(f) {
            Ok(a) => a,
            Err(problem) => {
                return axum::Json(serde_json::json!({"ok": false, "problem": problem}))
                    .into_response()
            }
        },
    };
    read_json(&state, move |s, _| {
        s.audit_verify(&anchors).map(|v| serde_json::json!({
            "ok": v.ok, "entries": v.entries, "head": v.head, "problem": v.problem, "first_bad": v.first_bad,
        }))
    })
    .await
}

pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    c: Option<Extension<CertSlot>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = guard(
        &state,
        &headers,
        cert(c).as_ref(),
        Action::ReadStatus,
        "/v1/status",
    )
    .await
    {
        return r;
    }
    match cached_posture(&state).await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(r) => r,
    }
}

/// The posture, computed at most every 30 s: it verifies the whole audit chain, so
/// readers asking often cannot keep the writer (which ingest waits for) busy.
pub(super) async fn cached_posture(state: &AppState) -> Result<serde_json::Value, Response> {
    let fresh = || {
        state
            .posture
            .lock()
            .expect("posture lock")
            .clone()
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(30))
            .map(|(_, doc)| doc)
    };
    if let Some(doc) = fresh() {
        return Ok(doc);
    }
    // One computation at a time; who waited for it takes its result.
    let _flight = state.posture_flight.lock().await;
    if let Some(doc) = fresh() {
        return Ok(doc);
    }
    let fresh = on_store(state, |s, e| {
        let policy = e.read().expect("engine lock").policy.clone();
        posture(&*s, &policy, now())
    })
    .await;
    match fresh {
        Err(r) => Err(r),
        Ok(Err(_)) => Err(unavailable()),
        Ok(Ok(doc)) => {
            *state.posture.lock().expect("posture lock") =
                Some((std::time::Instant::now(), doc.clone()));
            Ok(doc)
        }
    }
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    // Budget gauges are read from the ledger at scrape time.
    if let Ok(Ok(spent)) = on_store(&state, |s, e| {
        let policy = e.read().expect("engine lock").policy.clone();
        budget_spent(&*s, &policy, now())
    })
    .await
    {
        for (c, b) in spent {
            let eps = b["spent"].as_f64().unwrap_or_default();
            state
                .metrics
                .budget_spent
                .get_or_create(&vec![("collection", c)])
                .set(eps);
        }
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = state.metrics.render_for(accept);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

pub(super) async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.stopping.load(Ordering::SeqCst) {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is shutting down",
        );
    }
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.writer.call(|s, _| s.epochs().is_ok()),
    )
    .await;
    match probe {
        Ok(Ok(true)) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        _ => unavailable(),
    }
}

pub(super) async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    let policy = state.engine.read().expect("engine lock").policy.clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(&policy),
    )
        .into_response()
}
