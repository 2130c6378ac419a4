//! The audit chain: each entry hashes the previous one, and a head file outside the
//! database remembers the newest entry so truncation is caught too.
//!
//! Release documents and budget charges are bound to the chain: a `release` entry
//! records the SHA-256 of the document it stored and every charge it made, so a stored
//! release or a ledger row that differs from what the chain proves is caught, and the
//! budget a release checks is the one the chain proves. Heads can be anchored outside
//! the data directory ([`Anchor`]), so even a consistent rewrite of the whole chain is
//! caught by a verification against a kept anchor.
//!
//! The hashing and verification here are backend-independent; stores only persist rows.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

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

/// A head of the chain as kept outside the data directory (`veil audit head`): the
/// chain must still hold exactly this entry at this sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    pub at: String,
}

impl Anchor {
    /// The anchor of an entry.
    pub fn of(e: &AuditEntry) -> Anchor {
        Anchor {
            seq: e.seq,
            hash: e.hash.clone(),
            at: e.at.clone(),
        }
    }

    /// Every anchor in a file's text: one JSON object, or one per line (an anchor log).
    pub fn parse_all(text: &str) -> Result<Vec<Anchor>, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            out.push(serde_json::from_str(line).map_err(|_| {
                format!(
                    "line {} is not an anchor: expected {{\"seq\": N, \"hash\": \"…\", \"at\": \"…\"}}",
                    i + 1
                )
            })?);
        }
        if out.is_empty() {
            return Err("the anchor file holds no anchor".into());
        }
        Ok(out)
    }
}

/// One budget charge as a `release` entry records it: the ledger must add up to these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub principal: String,
    pub collection: String,
    pub period_start: i64,
    /// ε in millionths, as the ledger keeps it.
    pub epsilon_micro: i64,
}

/// The binding a `release` entry's detail carries.
#[derive(Debug, Clone, Deserialize)]
struct Binding {
    release_id: String,
    document_sha256: Option<String>,
    #[serde(default)]
    charges: Vec<Charge>,
}

/// Hex SHA-256 of a release document, as its audit entry records it.
pub fn document_hash(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

/// Per (principal, collection, period start): ε in millionths that the chain's `release`
/// entries charged. What a release checks against its budget, and what the ledger
/// must equal.
pub fn chain_charges<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> BTreeMap<(String, String, i64), i64> {
    let mut out = BTreeMap::new();
    for e in entries {
        if e.action != "release" {
            continue;
        }
        if let Ok(b) = serde_json::from_str::<Binding>(&e.detail) {
            for c in b.charges {
                *out.entry((c.principal, c.collection, c.period_start))
                    .or_default() += c.epsilon_micro;
            }
        }
    }
    out
}

/// The document hash a `release` entry recorded for a release id, if that entry is
/// intact (its hash matches its content).
pub fn recorded_document_hash(e: &AuditEntry, release_id: &str) -> Option<String> {
    if e.action != "release"
        || entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash
    {
        return None;
    }
    let b: Binding = serde_json::from_str(&e.detail).ok()?;
    (b.release_id == release_id)
        .then_some(b.document_sha256)
        .flatten()
}

/// What a store holds that the chain binds: every stored release and every ledger row.
pub struct Bound<'a> {
    /// (release id, document).
    pub releases: Vec<(&'a str, &'a str)>,
    /// ((principal, collection, period start), ε in millionths).
    pub ledger: BTreeMap<(String, String, i64), i64>,
}

/// Checks stored releases and the ledger against a verified chain: every stored release
/// has a `release` entry recording its document's hash, every `release` entry's document
/// is still stored, and the ledger equals what the entries charged. `Err` is
/// `(sequence number to name, problem)`.
pub fn verify_bound(rows: &[AuditEntry], bound: &Bound) -> Result<(), (i64, String)> {
    let mut recorded: BTreeMap<&str, (i64, Option<String>)> = BTreeMap::new();
    let mut bindings = Vec::new();
    for e in rows.iter().filter(|e| e.action == "release") {
        match serde_json::from_str::<Binding>(&e.detail) {
            Ok(b) => bindings.push((e.seq, b)),
            Err(_) => {
                return Err((
                    e.seq,
                    format!("entry #{} is a release without its release id", e.seq),
                ))
            }
        }
    }
    for (seq, b) in &bindings {
        recorded.insert(b.release_id.as_str(), (*seq, b.document_sha256.clone()));
    }
    let last = rows.last().map(|e| e.seq).unwrap_or(0);
    let mut stored = std::collections::BTreeSet::new();
    for (id, doc) in &bound.releases {
        stored.insert(*id);
        match recorded.get(id) {
            None => {
                return Err((
                    last,
                    format!("stored release {id} has no release entry in the audit log"),
                ))
            }
            Some((seq, None)) => {
                return Err((
                    *seq,
                    format!("entry #{seq} records no document hash for release {id}"),
                ))
            }
            Some((seq, Some(h))) if *h != document_hash(doc) => {
                return Err((
                    *seq,
                    format!("stored release {id} was changed: its document does not match the hash entry #{seq} recorded"),
                ))
            }
            Some(_) => {}
        }
    }
    for (seq, b) in &bindings {
        if !stored.contains(b.release_id.as_str()) {
            return Err((
                *seq,
                format!(
                    "release {} recorded by entry #{seq} is missing from the store",
                    b.release_id
                ),
            ));
        }
    }
    let charged = chain_charges(rows);
    for (key, micro) in charged.iter() {
        if bound.ledger.get(key) != Some(micro) {
            return Err((
                last,
                format!(
                    "the budget ledger of {} / {} for the period starting {} does not match the charges the audit log recorded",
                    key.0, key.1, key.2
                ),
            ));
        }
    }
    for (key, micro) in &bound.ledger {
        if charged.get(key) != Some(micro) {
            return Err((
                last,
                format!(
                    "the budget ledger of {} / {} for the period starting {} holds a charge the audit log never recorded",
                    key.0, key.1, key.2
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that the chain still holds every anchor exactly. `Err` is `(seq, problem)`.
pub fn verify_anchors(rows: &[AuditEntry], anchors: &[Anchor]) -> Result<(), (i64, String)> {
    for a in anchors {
        let held = usize::try_from(a.seq - 1).ok().and_then(|i| rows.get(i));
        match held {
            Some(e) if e.seq == a.seq && e.hash == a.hash => {}
            Some(_) => {
                return Err((
                    a.seq,
                    format!(
                        "entry #{} is not the anchored entry (anchored at {}): the chain was rewritten",
                        a.seq, a.at
                    ),
                ))
            }
            None => {
                return Err((
                    a.seq,
                    format!(
                        "the chain has no entry #{} but one was anchored at {}: the log was truncated and rewritten",
                        a.seq, a.at
                    ),
                ))
            }
        }
    }
    Ok(())
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
    let Some((hseq, hhash)) = head else {
        return bad(
            last.seq,
            "audit.head is missing or unreadable: without it a truncated log cannot be told from a whole one".into(),
            rows.len(),
        );
    };
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
    if hseq < 1 || rows[(hseq - 1) as usize].hash != hhash {
        return bad(
            hseq,
            format!("entry #{hseq} does not match the recorded head hash"),
            rows.len(),
        );
    }
    Verification {
        ok: true,
        entries: rows.len(),
        first_bad: None,
        problem: None,
        head: Some(last.hash.clone()),
    }
}
