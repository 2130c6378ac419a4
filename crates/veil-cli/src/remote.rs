//! Sending collected events to a running gateway (`veil collect … --to URL`): NDJSON
//! batches to `/v1/events` with the source token in `VEIL_TOKEN`, retried after the
//! gateway's `Retry-After` when it sheds load. Event ids make a retried batch count once.

use crate::exit;
use anyhow::Result;
use std::time::Duration;

/// Events per request: well under the gateway's default `max_events_per_request`.
const BATCH_EVENTS: usize = 5_000;
/// Bytes per request: well under the gateway's default `max_body_bytes` (8 MiB).
const BATCH_BYTES: usize = 4 << 20;
/// Attempts per batch when the gateway is busy (429, 503) or unreachable.
const ATTEMPTS: u32 = 6;

/// A gateway's `/v1/events`, and the token to send with.
pub struct Gateway {
    client: reqwest::blocking::Client,
    url: String,
    token: String,
}

#[derive(serde::Deserialize)]
struct Answer {
    accepted: usize,
    duplicates: usize,
    #[serde(default)]
    without_id: usize,
    #[serde(default)]
    rejected: Vec<Rejected>,
}

#[derive(serde::Deserialize)]
struct Rejected {
    index: usize,
    reason: String,
    message: String,
}

#[derive(serde::Deserialize)]
struct Refusal {
    error: RefusalBody,
}

#[derive(serde::Deserialize)]
struct RefusalBody {
    reason: String,
    message: String,
}

impl Gateway {
    /// `url` is the gateway's base (`https://veil.example:8700`); the token comes from
    /// `VEIL_TOKEN`, a PEM file of extra trusted roots from `VEIL_CA_FILE` (a gateway
    /// with its own certificate authority).
    pub fn new(url: &str) -> Result<Gateway> {
        let base = url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(exit(2, "--to takes the gateway's URL, http:// or https://"));
        }
        let token = std::env::var("VEIL_TOKEN").map_err(|_| {
            exit(
                2,
                "--to needs a source principal's token in VEIL_TOKEN (veil.toml's [[principals]], role source)",
            )
        })?;
        // The TLS stack is rustls with ring, as the gateway's; installed once per process.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("veil-collect/", env!("CARGO_PKG_VERSION")));
        if let Ok(ca) = std::env::var("VEIL_CA_FILE") {
            let pem = std::fs::read(&ca)
                .map_err(|_| exit(2, format!("VEIL_CA_FILE: cannot read {ca}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| exit(2, format!("VEIL_CA_FILE: {ca} holds no PEM certificate")))?;
            b = b.tls_certs_merge(certs);
        }
        let client = b
            .build()
            .map_err(|_| exit(2, "cannot set up the HTTP client (TLS roots?)"))?;
        Ok(Gateway {
            client,
            url: format!("{base}/v1/events"),
            token,
        })
    }

    /// Sends NDJSON `lines` in batches; prints the first rejections like a local ingest
    /// (`name: event N: reason: message`, never a value) and sums the outcome.
    pub fn send(&self, name: &str, lines: &str) -> Result<veil_store::IngestOutcome> {
        let mut total = veil_store::IngestOutcome::default();
        let mut shown = 0usize;
        let mut offset = 0usize;
        for batch in batches(lines) {
            let n = batch.lines().count();
            let a = self.post(batch)?;
            total.accepted += a.accepted;
            total.duplicates += a.duplicates;
            total.without_id += a.without_id;
            for r in &a.rejected {
                *total.rejected.entry(r.reason.clone()).or_default() += 1;
                if shown < 20 {
                    eprintln!(
                        "{name}: event {}: {}: {}",
                        offset + r.index + 1,
                        r.reason,
                        r.message
                    );
                }
                shown += 1;
            }
            offset += n;
        }
        Ok(total)
    }

    fn post(&self, body: &str) -> Result<Answer> {
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&self.url)
                .bearer_auth(&self.token)
                .header("content-type", "application/x-ndjson")
                .body(body.to_owned())
                .send();
            let resp = match sent {
                Ok(r) => r,
                Err(e) if tls_failure(&e) => {
                    return Err(exit(
                        1,
                        format!("cannot reach the gateway at {}: its TLS certificate is not trusted (a private authority: put its PEM in VEIL_CA_FILE)", self.url),
                    ))
                }
                Err(e) if attempt < ATTEMPTS && (e.is_connect() || e.is_timeout()) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(30));
                    continue;
                }
                Err(_) => return Err(exit(1, format!("cannot reach the gateway at {}", self.url))),
            };
            let status = resp.status();
            if (status.as_u16() == 429 || status.as_u16() == 503) && attempt < ATTEMPTS {
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(wait, |s| Duration::from_secs(s.clamp(1, 60)));
                std::thread::sleep(after);
                wait = (wait * 2).min(Duration::from_secs(30));
                continue;
            }
            let text = resp.text().unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(&text).map_err(|_| {
                    exit(
                        1,
                        format!(
                            "{} answered {status} with a body that is not Veil's",
                            self.url
                        ),
                    )
                });
            }
            // Only a Veil refusal's reason and sentence are shown (they never hold a
            // value); anything else is named by its status alone.
            return Err(match serde_json::from_str::<Refusal>(&text) {
                Ok(r) => exit(
                    1,
                    format!(
                        "the gateway refused the events ({status}, {}): {}",
                        r.error.reason, r.error.message
                    ),
                ),
                Err(_) => exit(1, format!("{} answered {status}", self.url)),
            });
        }
        Err(exit(1, format!("the gateway at {} stayed busy", self.url)))
    }
}

/// Whether a request failed in the TLS handshake (retrying cannot help). The rustls
/// error sits inside nested `io::Error`s, whose `source()` skips the wrapped error itself,
/// so those are opened with `get_ref`.
fn tls_failure(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<tokio_rustls::rustls::Error>() {
            return true;
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// Splits NDJSON into request bodies of at most [`BATCH_EVENTS`] lines and about
/// [`BATCH_BYTES`] bytes, on line boundaries.
fn batches(lines: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut n) = (0usize, 0usize);
    let mut pos = 0usize;
    for l in lines.split_inclusive('\n') {
        if n > 0 && (n == BATCH_EVENTS || pos + l.len() - start > BATCH_BYTES) {
            out.push(&lines[start..pos]);
            start = pos;
            n = 0;
        }
        pos += l.len();
        n += 1;
    }
    if n > 0 {
        out.push(&lines[start..pos]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_on_lines_and_lose_nothing() {
        let lines: String = (0..12_001).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let b = batches(&lines);
        assert_eq!(
            b.iter().map(|x| x.lines().count()).collect::<Vec<_>>(),
            [5_000, 5_000, 2_001]
        );
        assert_eq!(b.concat(), lines);
        assert!(batches("").is_empty());
    }
}
