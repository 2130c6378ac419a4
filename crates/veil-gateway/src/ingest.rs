//! Ingest: bounded line reading, the door, batched atomic commits. The one code path every
//! ingest takes: `veil ingest`, the benchmarks and the gateway's handlers all admit events
//! with [`admit_lines`] (or the door directly for OTLP records) and commit with
//! [`Store::ingest`].

use std::io::BufRead;
use veil_pipeline::{Accepted, Door, KeyRing, Limits, Rejection, Source};
use veil_policy::Policy;
use veil_store::{IngestBatch, IngestOutcome, Store};

/// Lines committed per transaction.
pub const BATCH: usize = 32_768;

/// Reads one line into `buf`, keeping at most `limit + 1` bytes of it so a huge line
/// cannot exhaust memory. Returns `None` at end of input.
pub fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<()>> {
    buf.clear();
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(()));
        }
        any = true;
        let room = (limit + 1).saturating_sub(buf.len());
        match memchr_nl(avail) {
            Some(i) => {
                buf.extend_from_slice(&avail[..i.min(room)]);
                r.consume(i + 1);
                return Ok(Some(()));
            }
            None => {
                let n = avail.len();
                buf.extend_from_slice(&avail[..n.min(room)]);
                r.consume(n);
            }
        }
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Why a stream could not be ingested (a rejected event is not an error).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read the input: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Store(#[from] veil_store::StoreError),
}

/// Events of one request body, admitted: what to commit, and each rejection with the
/// 0-based index of its event.
#[derive(Default)]
pub struct Admitted {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<(usize, Rejection)>,
    /// Events seen (accepted + rejected).
    pub events: usize,
}

impl Admitted {
    /// Records the door's verdict on the next event.
    pub fn push(&mut self, verdict: Result<Accepted, Rejection>) {
        match verdict {
            Ok(a) => self.accepted.push(a),
            Err(r) => self.rejected.push((self.events, r)),
        }
        self.events += 1;
    }
}

/// Runs each NDJSON line of `body` through the door. Blank lines are skipped and not
/// counted; `id_prefix` (from an `Idempotency-Key`) names events that carry no id, so a
/// retried request is deduplicated as a whole.
pub fn admit_lines(door: &Door, source: &Source, body: &[u8], id_prefix: Option<&str>) -> Admitted {
    let mut out = Admitted::default();
    for line in body.split(|&b| b == b'\n') {
        let line = trim_cr(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let index = out.events;
        out.push(match id_prefix {
            Some(p) => door.admit_with_default_id(line, source, &format!("{p}:{index}")),
            None => door.admit(line, source),
        });
    }
    out
}

/// One rejected line: its 1-based line number and the rejection.
pub type Rejected = (u64, Rejection);

/// Runs a whole NDJSON stream through the door into the store, batch by batch.
/// `on_reject` sees each rejection (for printing); the outcome sums every batch.
#[allow(clippy::too_many_arguments)]
pub fn ingest_stream(
    store: &mut dyn Store,
    policy: &Policy,
    keys: &KeyRing,
    limits: Limits,
    source: &Source,
    input: &mut dyn BufRead,
    now: i64,
    on_reject: &mut dyn FnMut(&Rejected),
) -> Result<IngestOutcome, IngestError> {
    let sealed = store.sealed_before(policy).map_err(IngestError::Store)?;
    let door = Door::new(policy, keys, limits, now, sealed);
    let mut total = IngestOutcome::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut accepted = Vec::with_capacity(BATCH);
    let mut rejected = Vec::new();
    let mut done = false;
    while !done {
        let mut lines = 0;
        while lines < BATCH {
            if read_line_bounded(input, &mut buf, limits.max_event_bytes)
                .map_err(IngestError::Read)?
                .is_none()
            {
                done = true;
                break;
            }
            line_no += 1;
            let line = trim_cr(&buf);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines += 1;
            match door.admit(line, source) {
                Ok(a) => accepted.push(a),
                Err(r) => {
                    on_reject(&(line_no, r.clone()));
                    rejected.push(r);
                }
            }
        }
        if lines == 0 && accepted.is_empty() && rejected.is_empty() {
            break;
        }
        let o = store
            .ingest(
                policy,
                keys,
                vec![IngestBatch {
                    source: &source.name,
                    received_at: now,
                    accepted: std::mem::take(&mut accepted),
                    rejected: std::mem::take(&mut rejected),
                }],
            )
            .map_err(IngestError::Store)?;
        for o in &o {
            total.add(o);
        }
    }
    Ok(total)
}

fn trim_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reader_splits_lines_and_caps_long_ones() {
        let data = format!("a\n{}\nlast", "x".repeat(100));
        let mut r = std::io::BufReader::with_capacity(7, data.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while read_line_bounded(&mut r, &mut buf, 10).unwrap().is_some() {
            got.push(String::from_utf8(buf.clone()).unwrap());
        }
        assert_eq!(
            got,
            vec!["a".to_string(), "x".repeat(11), "last".to_string()]
        );
    }
}
