//! OTLP/gRPC logs (`LogsService/Export`) on `otlp_grpc_listen`: the same path as OTLP/HTTP
//! — token from the `authorization` metadata, ingest slot, the door, rate limit, queue,
//! group commit — answered in gRPC's terms. The service is tonic's generated server, routed
//! by the same axum router and hyper connections (HTTP/2 with prior knowledge, or ALPN
//! `h2` under TLS) as every other endpoint.

use super::auth::Principal;
use super::{
    admit, admit_log_records, auth, commit, guard, idempotency_key, otlp, slot, source_of,
    AppState, CertSlot, Committed, Refusal,
};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The method's path: what the router matches and the request metrics are labelled with.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The gRPC listener's router: `Export`, and tonic's own `UNIMPLEMENTED` for every other
/// method (trace and metric exports among them).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let svc = LogsServiceServer::new(Logs {
        state: state.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(state.limits.max_body_bytes);
    Router::new()
        .route_service(EXPORT_PATH, svc.clone())
        // Export only: tonic answers every other method UNIMPLEMENTED without reading it.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .fallback_service(svc)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::observe,
        ))
}

/// What [`gate`] hands the service: the authenticated principal and its ingest slot. Only
/// the gate makes one, so `export` cannot run for a caller nobody checked.
#[derive(Clone)]
struct Admission {
    principal: Principal,
    _slot: Arc<tokio::sync::OwnedSemaphorePermit>,
}

/// Before tonic reads a byte of the message: the token (audited when refused), the ingest
/// slot, a cap on the bytes received and the request timeout — as OTLP/HTTP does before it
/// reads a body, so an unauthenticated stream costs no decoding or decompression.
async fn gate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let cert = req.extensions().get::<CertSlot>().and_then(|c| c.0.clone());
    let principal = match guard(
        &state,
        req.headers(),
        cert.as_ref(),
        auth::Action::Ingest,
        EXPORT_PATH,
    )
    .await
    {
        Ok(p) => p.clone(),
        Err(r) => return grpc_error(status(r).await),
    };
    let permit = match slot(&state) {
        Ok(s) => s,
        Err(r) => return grpc_error(status(r).await),
    };
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Admission {
        principal,
        _slot: Arc::new(permit),
    });
    // Compressed bytes on the wire: at most the body limit (tonic caps each decoded
    // message at the same limit after decompression).
    let body = axum::body::Body::new(http_body_util::Limited::new(
        body,
        state.limits.max_body_bytes + 5,
    ));
    match tokio::time::timeout(
        state.limits.request_timeout,
        next.run(Request::from_parts(parts, body)),
    )
    .await
    {
        Ok(r) => permanent(r),
        Err(_) => grpc_error(Status::deadline_exceeded(
            "timeout: the request did not arrive and complete within the request timeout",
        )),
    }
}

/// tonic's own refusals, said as the OTLP specification wants them: a message over the
/// size limit is `OUT_OF_RANGE` (which OTLP clients retry) and becomes `RESOURCE_EXHAUSTED`
/// without `RetryInfo` (not retried), as HTTP's 413 is permanent; a body that is not a
/// protobuf message is `INTERNAL` and becomes `INVALID_ARGUMENT`, as HTTP's 400. tonic's
/// text (which may quote the decoder) is replaced by a fixed sentence.
fn permanent(mut r: Response) -> Response {
    let code = r
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from);
    let message = r
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (to, text) = match code {
        Some(Code::OutOfRange) => (
            Code::ResourceExhausted,
            "body_too_large: the message exceeds the body limit (after decompression)",
        ),
        Some(Code::Internal) if message.to_ascii_lowercase().contains("decode") => (
            Code::InvalidArgument,
            "malformed_body: the message is not a valid OTLP ExportLogsServiceRequest",
        ),
        _ => return r,
    };
    let h = r.headers_mut();
    h.insert("grpc-status", (to as i32).into());
    h.insert(
        "grpc-message",
        // Printable ASCII without `%`: sent as is in `grpc-message`.
        axum::http::HeaderValue::from_static(text),
    );
    r
}

/// A gRPC error as an HTTP response (status in the headers, as gRPC allows).
fn grpc_error(s: Status) -> Response {
    s.into_http::<axum::body::Body>().into_response()
}

/// The `LogsService` implementation over the gateway's state.
struct Logs {
    state: Arc<AppState>,
}

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        let state = &*self.state;
        let Some(Admission { principal, _slot }) = request.extensions().get::<Admission>().cloned()
        else {
            return Err(Status::unauthenticated(
                "unauthenticated: the request was not admitted",
            ));
        };
        let principal = &principal;
        let headers = request.metadata().clone().into_headers();
        let idem = match idempotency_key(&headers) {
            Ok(i) => i,
            Err(r) => return Err(status(r).await),
        };
        let req = request.into_inner();
        let admitted = admit(state, {
            let max_events = state.limits.max_events_per_request;
            let source = source_of(principal);
            move |door| admit_log_records(door, &source, &req, idem.as_deref(), max_events)
        })
        .await;
        let admitted = match admitted {
            Ok(a) => a,
            Err(r) => return Err(status(r).await),
        };
        let total = admitted.events;
        match commit(state, principal, admitted, EXPORT_PATH).await {
            Committed::Refused(r) => Err(status(r).await),
            Committed::Done {
                admitted_rejected, ..
            } => {
                let message =
                    otlp::rejection_summary(total, admitted_rejected.iter().map(|(_, r)| r));
                Ok(tonic::Response::new(otlp::response_message(
                    admitted_rejected.len() as i64,
                    message,
                )))
            }
        }
    }
}

/// The gateway's JSON refusal as a gRPC status: the same reason and sentence, the code the
/// OTLP specification gives for it, and `RetryInfo` when the client should come back.
async fn status(r: axum::response::Response) -> Status {
    let Refusal {
        status,
        retry_after,
        reason,
        message,
    } = Refusal::of(r).await;
    let code = otlp::rpc_code(status);
    let message = format!("{reason}: {message}");
    match retry_after {
        Some(secs) => Status::with_error_details(
            code,
            message,
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(secs.max(1)))),
        ),
        None => Status::new(code, message),
    }
}
