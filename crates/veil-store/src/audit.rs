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

use crate::ReleaseRecord;
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
    /// End of the charged period (exclusive). Absent in charges recorded before periods
    /// were bound to the data: such a charge may cover any data older than its entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<i64>,
    /// ε in millionths, as the ledger keeps it.
    pub epsilon_micro: i64,
}

/// Key of a charge and of a ledger row: (principal, collection, period start, period end),
/// with end 0 for a charge recorded before periods had an end.
pub type ChargeKey = (String, String, i64, i64);

/// Data time a charge covers, `[from, to)`, as budgets sum it: a period's charge covers
/// the period; a charge recorded before periods had an end covers everything before its
/// entry (the data it released was sealed by then), so changing the period length or
/// upgrading never gives old data its budget back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub collection: String,
    pub from: i64,
    pub to: i64,
    pub epsilon_micro: i64,
}

impl Span {
    /// Whether this charge touches data of `[from, to)`.
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.from < to && from < self.to
    }
}

/// What the chain records of one stored release: enough to check the stored row field
/// by field, so a replaced or edited row is caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseBinding {
    pub release_id: String,
    pub query_key: String,
    pub document_sha256: String,
}

/// The binding a `release` entry's detail carries (absent fields: an entry written
/// before releases were bound, covered by a `binding_baseline` entry).
/// The windows a release entry records as released by it: each (metric, grouping,
/// window) is released once, and the store's window index must say exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowBinding {
    pub metric: String,
    pub grouping: String,
    pub starts: Vec<i64>,
}

/// The action of the entry that indexes, once, the windows of releases stored before
/// windows were indexed (so they are served as stored, never drawn again).
pub const WINDOW_BASELINE: &str = "window_baseline";

/// What a [`WINDOW_BASELINE`] entry records: each old release and the windows it released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowBaseline {
    pub releases: Vec<(String, WindowBinding)>,
}

#[derive(Debug, Clone, Deserialize)]
struct Binding {
    release_id: String,
    query_key: Option<String>,
    document_sha256: Option<String>,
    charges: Option<Vec<Charge>>,
    released_windows: Option<WindowBinding>,
}

/// A `binding_baseline` entry: when a store made before releases were bound is opened,
/// what it held then — every release and every ledger row — is recorded once, so its
/// old entries need not carry what they could not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub releases: Vec<ReleaseBinding>,
    pub charges: Vec<Charge>,
}

/// The action of a baseline entry.
pub const BASELINE: &str = "binding_baseline";

/// Hex SHA-256 of a release document, as its audit entry records it.
pub fn document_hash(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

fn micro(eps: f64) -> i64 {
    (eps * 1e6).round() as i64
}

/// Every charge the chain records, per (principal, collection, period start), in ε
/// millionths: `release` entries' own charge and baselines' charges. Only positive
/// charges count — a negative one can never give budget back, whatever wrote it.
pub fn chain_charges<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> BTreeMap<ChargeKey, i64> {
    let mut out = BTreeMap::new();
    for (c, _) in charges_of(entries) {
        *out.entry((
            c.principal,
            c.collection,
            c.period_start,
            c.period_end.unwrap_or(0),
        ))
        .or_default() += c.epsilon_micro;
    }
    out
}

/// Every positive charge the chain records, with the entry's time.
fn charges_of<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Vec<(Charge, i64)> {
    let mut out = Vec::new();
    for e in entries {
        let at = chrono::DateTime::parse_from_rfc3339(&e.at)
            .map(|t| t.timestamp())
            .unwrap_or(i64::MAX - 1);
        let charges = match e.action.as_str() {
            "release" => serde_json::from_str::<Binding>(&e.detail)
                .ok()
                .and_then(|b| b.charges)
                .unwrap_or_default(),
            BASELINE => serde_json::from_str::<Baseline>(&e.detail)
                .map(|b| b.charges)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        out.extend(
            charges
                .into_iter()
                .filter(|c| c.epsilon_micro > 0)
                .map(|c| (c, at)),
        );
    }
    out
}

/// Every positive charge the chain records, as the data time it covers (see [`Span`]).
pub fn chain_spans<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Vec<Span> {
    charges_of(entries)
        .into_iter()
        .map(|(c, at)| {
            let (from, to) = match c.period_end {
                Some(end) => (c.period_start, end),
                None => (i64::MIN, at.saturating_add(1)),
            };
            Span {
                collection: c.collection,
                from,
                to,
                epsilon_micro: c.epsilon_micro,
            }
        })
        .collect()
}

/// What one entry (intact: its hash matches its content) records of a stored release.
fn recorded(e: &AuditEntry) -> Vec<(ReleaseBinding, Option<Vec<Charge>>)> {
    if entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash {
        return Vec::new();
    }
    match e.action.as_str() {
        "release" => match serde_json::from_str::<Binding>(&e.detail) {
            Ok(Binding {
                release_id,
                query_key: Some(query_key),
                document_sha256: Some(document_sha256),
                charges: Some(charges),
                ..
            }) if !charges.is_empty() => vec![(
                ReleaseBinding {
                    release_id,
                    query_key,
                    document_sha256,
                },
                Some(charges),
            )],
            _ => Vec::new(),
        },
        BASELINE => serde_json::from_str::<Baseline>(&e.detail)
            .map(|b| b.releases.into_iter().map(|r| (r, None)).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Checks a stored release against what `entry` recorded of it: same id, query key and
/// document, and — for a `release` entry — a charge made by the entry's actor, equal to
/// the row's principal, collection and ε. `Err` says what differs.
pub fn check_release(entry: &AuditEntry, r: &ReleaseRecord) -> Result<(), String> {
    let found = recorded(entry)
        .into_iter()
        .find(|(b, _)| b.release_id == r.release_id);
    let Some((b, charge)) = found else {
        return Err(format!(
            "entry #{} does not record release {}",
            entry.seq, r.release_id
        ));
    };
    if b.query_key != r.query_key || b.document_sha256 != document_hash(&r.document) {
        return Err(format!(
            "stored release {} was changed: it does not match what entry #{} recorded",
            r.release_id, entry.seq
        ));
    }
    if let Some(charges) = charge {
        let total: i64 = charges.iter().map(|c| c.epsilon_micro).sum();
        if charges.iter().any(|c| {
            c.epsilon_micro <= 0
                || c.principal != entry.actor
                || c.principal != r.principal
                || c.collection != r.collection
        }) || total != micro(r.epsilon)
        {
            return Err(format!(
                "entry #{} charges release {} other than the stored release says",
                entry.seq, r.release_id
            ));
        }
    }
    Ok(())
}

/// What a store holds that the chain binds: every stored release and every ledger row.
pub struct Bound<'a> {
    pub releases: &'a [ReleaseRecord],
    /// ((principal, collection, period start), ε in millionths).
    pub ledger: BTreeMap<ChargeKey, i64>,
    /// The window index: (metric, grouping, window start) → release id.
    pub windows: BTreeMap<(String, String, i64), String>,
}

/// The longest metric window (a month, rounded up): a release's window ends at most this
/// long after it starts.
pub const MAX_WINDOW: i64 = 31 * 86_400;

fn unix(at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|d| d.timestamp())
}

/// What the chain says about when each release may be purged, read once: each intact
/// `release` entry's collection and windows, and each intact `policy_load` entry's
/// aggregate retentions. [`PurgeProof::proven`] then answers per release without
/// rescanning the chain (a purge asks for every stored release).
pub struct PurgeProof {
    /// Release id → (its entry's seq, collection, window starts).
    releases: std::collections::HashMap<String, (i64, String, Vec<i64>)>,
    /// (seq, retention per collection, default), in chain order.
    retentions: Vec<(i64, BTreeMap<String, i64>, i64)>,
}

impl PurgeProof {
    /// Reads the entries that matter (intact ones only).
    pub fn new(rows: &[AuditEntry]) -> Self {
        #[derive(Deserialize)]
        struct Retentions {
            aggregate_retention: BTreeMap<String, i64>,
            default_aggregate_retention: i64,
        }
        let mut releases = std::collections::HashMap::new();
        let mut retentions = Vec::new();
        for e in rows {
            if !matches!(e.action.as_str(), "release" | "policy_load")
                || entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash
            {
                continue;
            }
            if e.action == "release" {
                let Ok(b) = serde_json::from_str::<Binding>(&e.detail) else {
                    continue;
                };
                let c = b
                    .charges
                    .as_ref()
                    .and_then(|c| c.first())
                    .map(|c| c.collection.clone());
                if let (Some(c), Some(w)) = (c, b.released_windows) {
                    releases.entry(b.release_id).or_insert((e.seq, c, w.starts));
                }
            } else if let Ok(r) = serde_json::from_str::<Retentions>(&e.detail) {
                retentions.push((e.seq, r.aggregate_retention, r.default_aggregate_retention));
            }
        }
        PurgeProof {
            releases,
            retentions,
        }
    }

    /// Whether the chain before entry `before_seq` proves that release `id` is past the
    /// aggregate retention at instant `at`: its own `release` entry names its collection
    /// and windows, and the newest `policy_load` entry before `before_seq` the
    /// collection's aggregate retention; every window must have ended (a window is at
    /// most [`MAX_WINDOW`] long) more than that retention before `at`. The purge deletes
    /// a release only when this holds, and `audit verify` accepts a purged release only
    /// when it held at the purge entry — so a `purge` entry appended by hand cannot
    /// excuse deleting a release that is still within its retention.
    pub fn proven(&self, id: &str, at: i64, before_seq: i64) -> bool {
        let Some((seq, collection, starts)) = self.releases.get(id) else {
            return false;
        };
        let Some((_, per, default)) = self.retentions.iter().rev().find(|(s, ..)| *s < before_seq)
        else {
            return false;
        };
        let retention = per.get(collection).copied().unwrap_or(*default);
        *seq < before_seq
            && !starts.is_empty()
            && starts
                .iter()
                .all(|s| s.saturating_add(MAX_WINDOW).saturating_add(retention) <= at)
    }
}

/// Releases that intact `purge` entries record as deleted past retention, when the chain
/// proves each was (see [`PurgeProof::proven`]) at a purge time that is neither in the future
/// nor later than any entry after it (a day of clock skew allowed).
fn purged_releases(rows: &[AuditEntry]) -> std::collections::BTreeSet<String> {
    #[derive(Deserialize)]
    struct Purged {
        #[serde(default)]
        releases: Vec<String>,
    }
    const SKEW: i64 = 86_400;
    let now = chrono::Utc::now().timestamp();
    let proof = PurgeProof::new(rows);
    let mut out = std::collections::BTreeSet::new();
    for (i, e) in rows.iter().enumerate() {
        if e.action != "purge"
            || entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash
        {
            continue;
        }
        let (Some(at), Ok(p)) = (unix(&e.at), serde_json::from_str::<Purged>(&e.detail)) else {
            continue;
        };
        let later_ok = rows[i + 1..]
            .iter()
            .all(|l| unix(&l.at).is_some_and(|t| t + SKEW >= at));
        if at > now + SKEW || !later_ok {
            continue;
        }
        out.extend(
            p.releases
                .into_iter()
                .filter(|id| proof.proven(id, at, e.seq)),
        );
    }
    out
}

/// The windows every intact release entry records, as (metric, grouping, start) → id;
/// a window recorded twice is an error naming the entry.
fn chain_windows(
    rows: &[AuditEntry],
) -> Result<BTreeMap<(String, String, i64), String>, (i64, String)> {
    let mut out = BTreeMap::new();
    for e in rows {
        let bound: Vec<(String, WindowBinding)> = match e.action.as_str() {
            "release" if !recorded(e).is_empty() => serde_json::from_str::<Binding>(&e.detail)
                .ok()
                .and_then(|b| Some((b.release_id, b.released_windows?)))
                .into_iter()
                .collect(),
            WINDOW_BASELINE
                if entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) == e.hash =>
            {
                serde_json::from_str::<WindowBaseline>(&e.detail)
                    .map(|b| b.releases)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        for (release_id, w) in bound {
            for s in w.starts {
                let key = (w.metric.clone(), w.grouping.clone(), s);
                if out.insert(key, release_id.clone()).is_some() {
                    return Err((
                        e.seq,
                        format!(
                            "entry #{} releases a window of {} that an earlier release already released",
                            e.seq, w.metric
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Checks stored releases and the ledger against a verified chain: every `release` entry
/// is well formed (one positive charge by its actor, a query key and a document hash),
/// each release id is recorded once, every stored release matches its entry field by
/// field and every recorded release is still stored, and the ledger equals what the
/// entries charged. `Err` is `(sequence number to name, problem)`.
pub fn verify_bound(rows: &[AuditEntry], bound: &Bound) -> Result<(), (i64, String)> {
    let last = rows.last().map(|e| e.seq).unwrap_or(0);
    let baseline_at = rows.iter().find(|e| e.action == BASELINE).map(|e| e.seq);
    let mut by_id: BTreeMap<String, i64> = BTreeMap::new();
    for e in rows
        .iter()
        .filter(|e| e.action == "release" || e.action == BASELINE)
    {
        let rec = recorded(e);
        let legacy = e.action == "release" && baseline_at.is_some_and(|b| e.seq < b);
        if rec.is_empty() && !legacy && e.action == "release" {
            return Err((
                e.seq,
                format!(
                    "entry #{} is a release without one positive charge by its actor, a query key and a document hash",
                    e.seq
                ),
            ));
        }
        for (b, charge) in rec {
            for c in charge.iter().flatten() {
                if c.epsilon_micro <= 0 || c.principal != e.actor {
                    return Err((
                        e.seq,
                        format!("entry #{} carries a charge its actor did not make", e.seq),
                    ));
                }
            }
            if by_id.insert(b.release_id.clone(), e.seq).is_some() {
                return Err((
                    e.seq,
                    format!(
                        "release {} is recorded twice (entry #{})",
                        b.release_id, e.seq
                    ),
                ));
            }
        }
    }
    let purged = purged_releases(rows);
    let mut stored = std::collections::BTreeSet::new();
    for r in bound.releases {
        stored.insert(r.release_id.as_str());
        let Some(&seq) = by_id.get(&r.release_id) else {
            return Err((
                last,
                format!(
                    "stored release {} has no release entry in the audit log",
                    r.release_id
                ),
            ));
        };
        check_release(&rows[(seq - 1) as usize], r).map_err(|m| (seq, m))?;
    }
    for (id, seq) in &by_id {
        if !stored.contains(id.as_str()) && !purged.contains(id) {
            return Err((
                *seq,
                format!("release {id} recorded by entry #{seq} is missing from the store"),
            ));
        }
    }
    // A window baseline may only index releases the chain recorded and the store holds,
    // written once, by the upgrade: a forged release row indexed on open and then deleted
    // would otherwise block its windows with verify green.
    let mut baselines = rows.iter().filter(|e| e.action == WINDOW_BASELINE);
    if let Some(e) = baselines.next() {
        let b: WindowBaseline = serde_json::from_str(&e.detail)
            .map_err(|_| (e.seq, format!("entry #{} is not a window baseline", e.seq)))?;
        for (id, _) in &b.releases {
            if e.actor != "veil:upgrade"
                || !by_id.contains_key(id)
                || !(stored.contains(id.as_str()) || purged.contains(id))
            {
                return Err((
                    e.seq,
                    format!(
                        "entry #{} indexes windows of release {id}, which the audit log never recorded or the store lost",
                        e.seq
                    ),
                ));
            }
        }
    }
    if let Some(e) = baselines.next() {
        return Err((
            e.seq,
            format!("entry #{} is a second window baseline", e.seq),
        ));
    }
    let mut windows = chain_windows(rows)?;
    windows.retain(|_, id| !purged.contains(id));
    if windows != bound.windows {
        let (seq, what) = match windows
            .iter()
            .find(|(k, id)| bound.windows.get(*k) != Some(*id))
        {
            Some((k, id)) => (
                by_id.get(id).copied().unwrap_or(last),
                format!(
                    "the release index lost or changed window {} of {} recorded by release {id}",
                    k.2, k.0
                ),
            ),
            None => (
                last,
                "the release index holds a window no release entry recorded".to_owned(),
            ),
        };
        return Err((seq, what));
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
