//! The audit chain: each entry hashes the previous one, and a head file outside the
//! database remembers the newest entry so truncation is caught too.
//!
//! The hashing and verification here are backend-independent; stores only persist rows.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The hash a chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The principal that acted.
    pub actor: String,
    /// `policy_load`, `ingest`, `seal`, `release`, `key_rotate`, …
    pub action: String,
    /// JSON; never holds a raw identifier or a rejected value.
    pub detail: String,
    pub prev: String,
    pub hash: String,
}

/// The hash of an entry from its content and its predecessor's hash.
pub fn entry_hash(
    prev: &str,
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, actor, action, detail] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub entries: usize,
    /// Sequence number of the first bad entry, when not ok.
    pub first_bad: Option<i64>,
    pub problem: Option<String>,
    pub head: Option<String>,
}

/// Checks a chain read in storage order against an optional head `(seq, hash)`.
pub fn verify(rows: &[AuditEntry], head: Option<(i64, String)>) -> Verification {
    let bad = |seq: i64, msg: String, n: usize| Verification {
        ok: false,
        entries: n,
        first_bad: Some(seq),
        problem: Some(msg),
        head: None,
    };
    if rows.is_empty() {
        return bad(
            1,
            "the audit log is empty; a Veil data directory always starts with a genesis entry"
                .into(),
            0,
        );
    }
    let mut prev = GENESIS.to_owned();
    for (i, r) in rows.iter().enumerate() {
        let expect_seq = i as i64 + 1;
        if r.seq != expect_seq {
            let msg = if r.seq > expect_seq {
                format!(
                    "entry #{expect_seq} is missing (deleted); next stored entry is #{}",
                    r.seq
                )
            } else {
                format!("entry #{} is out of order", r.seq)
            };
            return bad(expect_seq.min(r.seq), msg, rows.len());
        }
        if r.prev != prev {
            return bad(r.seq, format!("entry #{} does not link to the entry before it (inserted, deleted or reordered)", r.seq), rows.len());
        }
        let h = entry_hash(&r.prev, r.seq, &r.at, &r.actor, &r.action, &r.detail);
        if h != r.hash {
            return bad(
                r.seq,
                format!(
                    "entry #{} was changed: its content does not match its hash",
                    r.seq
                ),
                rows.len(),
            );
        }
        prev = r.hash.clone();
    }
    let last = rows.last().expect("non-empty");
    if let Some((hseq, hhash)) = head {
        if hseq > last.seq {
            return bad(
                last.seq + 1,
                format!(
                    "entries #{} to #{hseq} are missing: the log was truncated",
                    last.seq + 1
                ),
                rows.len(),
            );
        }
        if rows[(hseq - 1).max(0) as usize].hash != hhash {
            return bad(
                hseq,
                format!("entry #{hseq} does not match the recorded head hash"),
                rows.len(),
            );
        }
    }
    Verification {
        ok: true,
        entries: rows.len(),
        first_bad: None,
        problem: None,
        head: Some(last.hash.clone()),
    }
}
