//! OTLP/HTTP logs: decoding `ExportLogsServiceRequest` (protobuf or JSON) into envelopes
//! for the door, and the response bodies the OTLP specification asks for.
//!
//! Mapping: a log record's `event.name` attribute (or `otel.event.name`, or its
//! `event_name` field) names the collection; `event.id` (optional) is the idempotency id; every other record attribute
//! is an event attribute and goes through the door like any other — an undeclared one
//! rejects the record. The record body, severity, trace context and all resource and scope
//! attributes are never read: they describe the emitter, not the event, and often carry
//! host names and free text.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use prost::Message;
use std::borrow::Cow;
use veil_pipeline::envelope::{Attrs, Envelope, Value};

/// The attribute that names the collection.
pub const EVENT_NAME: &str = "event.name";
/// The older spelling some SDKs and bridges still send.
pub const OTEL_EVENT_NAME: &str = "otel.event.name";
/// The attribute that carries an idempotency id.
pub const EVENT_ID: &str = "event.id";

/// The two encodings OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` header value; `None` for anything else (415).
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        match mime(ct).as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    /// The `Content-Type` of responses in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
pub fn mime(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The gRPC code of a refusal the gateway answered with `status`: one table for OTLP over
/// HTTP (the code in the `google.rpc.Status` body) and over gRPC.
pub fn rpc_code(status: axum::http::StatusCode) -> tonic::Code {
    use axum::http::StatusCode;
    use tonic::Code;
    match status {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        // Rate limits: RESOURCE_EXHAUSTED (retried when RetryInfo comes with it).
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        // Too large: RESOURCE_EXHAUSTED without RetryInfo, so it is not retried.
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::INTERNAL_SERVER_ERROR => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// `google.rpc.Status`, the body of an OTLP error response.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Decodes a request body. The error text is fixed: decoder messages can quote input.
pub fn decode(body: &[u8], enc: Encoding) -> Result<ExportLogsServiceRequest, &'static str> {
    const NOT_JSON: &str = "the body is not a valid OTLP ExportLogsServiceRequest (a JSON object)";
    match enc {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body)
            .map_err(|_| "the body is not a valid OTLP ExportLogsServiceRequest (protobuf)"),
        Encoding::Json => {
            // serde would take an array for the message's fields in order: only an object is
            // the OTLP JSON encoding.
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first != Some(&b'{') {
                return Err(NOT_JSON);
            }
            serde_json::from_slice(body).map_err(|_| NOT_JSON)
        }
    }
}

/// Every log record of a request as an envelope, in order.
pub fn envelopes(req: &ExportLogsServiceRequest) -> Vec<Envelope<'_>> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                // `event.name` wins over `otel.event.name`, which wins over the field.
                let mut event: Cow<str> = Cow::Borrowed(r.event_name.as_str());
                let mut named = false;
                let mut id = None;
                let mut attrs = Vec::with_capacity(r.attributes.len());
                for kv in &r.attributes {
                    let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    match (kv.key.as_str(), v) {
                        (EVENT_NAME, Some(Av::StringValue(s))) => {
                            event = Cow::Borrowed(s);
                            named = true;
                        }
                        (OTEL_EVENT_NAME, Some(Av::StringValue(s))) => {
                            if !named {
                                event = Cow::Borrowed(s);
                            }
                        }
                        (EVENT_ID, Some(Av::StringValue(s))) => {
                            id = Some(Cow::Borrowed(s.as_str()))
                        }
                        (k, v) => attrs.push((Cow::Borrowed(k), value(v))),
                    }
                }
                let nanos = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                out.push(Envelope {
                    event,
                    time: Cow::Owned(rfc3339(nanos)),
                    id,
                    attrs: Attrs(attrs.into()),
                });
            }
        }
    }
    out
}

fn value(v: Option<&Av>) -> Value<'_> {
    match v {
        None => Value::Null,
        Some(Av::StringValue(s)) => Value::Str(Cow::Borrowed(s)),
        Some(Av::BoolValue(b)) => Value::Bool(*b),
        Some(Av::IntValue(i)) => Value::Int(*i),
        Some(Av::DoubleValue(d)) => Value::Float(*d),
        Some(_) => Value::Nested, // arrays, maps, bytes: no declared field type takes them
    }
}

fn rfc3339(nanos: u64) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The success response message, with partial success when some records were rejected.
pub fn response_message(rejected: i64, message: String) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (rejected > 0 || !message.is_empty()).then_some(
            ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message,
            },
        ),
    }
}

/// The success response in the request's encoding; full success in JSON is `{}` (the
/// specification leaves `partialSuccess` out rather than sending it empty).
pub fn response(enc: Encoding, rejected: i64, message: String) -> Vec<u8> {
    let resp = response_message(rejected, message);
    match enc {
        Encoding::Protobuf => resp.encode_to_vec(),
        Encoding::Json => match &resp.partial_success {
            None => b"{}".to_vec(),
            Some(_) => serde_json::to_vec(&resp).expect("response serializes"),
        },
    }
}

/// The partial-success message: how many records were rejected, then per reason code the
/// count and the distinct sentences (which name fields and collections, never values).
pub fn rejection_summary<'r>(
    total: usize,
    rejected: impl IntoIterator<Item = &'r veil_pipeline::Rejection>,
) -> String {
    const SHOWN: usize = 3;
    // Per reason: the count, the distinct sentences (a set: a request may carry thousands)
    // and the first few of them to show.
    type Seen<'m> = (usize, std::collections::HashSet<&'m str>, Vec<&'m str>);
    let mut by_reason = std::collections::BTreeMap::<&str, Seen>::new();
    let mut n = 0;
    for r in rejected {
        n += 1;
        let e = by_reason.entry(r.reason().code()).or_default();
        e.0 += 1;
        if e.1.insert(r.message()) && e.2.len() < SHOWN {
            e.2.push(r.message());
        }
    }
    if n == 0 {
        return String::new();
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(code, (k, distinct, shown))| {
            let mut shown = shown.clone();
            let more = distinct.len().saturating_sub(SHOWN);
            let more = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            shown.sort_unstable();
            format!("{code} ×{k} ({}{more})", shown.join("; "))
        })
        .collect();
    format!(
        "{n} of {total} log records rejected by the collection policy: {}",
        parts.join(", ")
    )
}

/// An error body (`google.rpc.Status`) in the request's encoding.
pub fn status(enc: Encoding, code: i32, message: &str) -> Vec<u8> {
    let s = RpcStatus {
        code,
        message: message.to_owned(),
    };
    match enc {
        Encoding::Protobuf => s.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&s).expect("status serializes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_quirks_are_accepted() {
        // lowerCamelCase keys, int64 as strings, integer enums, hex ids, unknown fields.
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"host.name","value":{"stringValue":"laptop-of-alice"}}]},
          "scopeLogs":[{"scope":{"name":"app"},"someFutureField":1,"logRecords":[
            {"timeUnixNano":"1763800000000000000","severityNumber":9,"traceId":"5b8efff798038103d269b633813fc60c",
             "body":{"stringValue":"free text"},
             "attributes":[{"key":"event.name","value":{"stringValue":"app.feature_used"}},
                           {"key":"count","value":{"intValue":"42"}},
                           {"key":"ok","value":{"boolValue":true}}]}]}]}]}"#;
        let req = decode(body, Encoding::Json).unwrap();
        let envs = envelopes(&req);
        assert_eq!(envs.len(), 1);
        let e = &envs[0];
        assert_eq!(e.event, "app.feature_used");
        assert_eq!(e.time, "2025-11-22T08:26:40Z");
        let names: Vec<&str> = e.attrs.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            names,
            ["count", "ok"],
            "resource attributes and the body are never read"
        );
        assert_eq!(e.attrs.0[0].1, Value::Int(42));
        assert!(decode(b"{\"resourceLogs\": 5}", Encoding::Json).is_err());
        assert!(decode(&[0xff, 0xff, 0xff], Encoding::Protobuf).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Encoding::from_content_type("application/x-protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::from_content_type("application/json; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }
}
