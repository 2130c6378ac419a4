//! NDJSON ingest: bounded line reading, the door, batched atomic commits. The one code
//! path every ingest takes (`veil ingest`, the benchmark, and later the gateway).

use anyhow::Result;
use std::io::BufRead;
use veil_pipeline::{Door, KeyRing, Limits, Rejection, Source};
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
) -> Result<IngestOutcome> {
    let sealed = store.sealed_before(policy)?;
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
            if read_line_bounded(input, &mut buf, limits.max_event_bytes)?.is_none() {
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
        let o = store.ingest(
            policy,
            keys,
            IngestBatch {
                source: &source.name,
                received_at: now,
                accepted: std::mem::take(&mut accepted),
                rejected: std::mem::take(&mut rejected),
            },
        )?;
        total.accepted += o.accepted;
        total.duplicates += o.duplicates;
        total.clamped += o.clamped;
        total.redacted += o.redacted;
        for (k, v) in o.rejected {
            *total.rejected.entry(k).or_default() += v;
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
