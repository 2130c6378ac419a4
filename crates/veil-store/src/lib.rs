//! Veil's zones at rest (spec §2): staging, aggregates, vault, quarantine, audit.
//!
//! [`Store`] is the boundary every backend implements; [`SqliteStore`] is the embedded
//! default. Backend-independent logic — the audit chain ([`audit`]), sealing with
//! contribution bounding ([`seal`]), staging encryption ([`crypto`]) — lives beside it so
//! a PostgreSQL backend persists rows and nothing more.
//!
//! Invariant: no table has a column for a raw identifier. What arrives here has passed
//! the door; staging payloads are stored only as AES-256-GCM ciphertext.

#![forbid(unsafe_code)]

pub mod audit;
mod cells;
mod contrib;
pub mod crypto;
pub mod retention;
pub mod seal;
mod seen;
mod sqlite;
pub mod vault;

pub use audit::{Anchor, AuditEntry, Verification};
pub use retention::{PurgeMode, PurgeReport};
pub use sqlite::SqliteStore;
pub use vault::{FileVault, Vault};

use serde::Serialize;
use std::collections::BTreeMap;
use veil_pipeline::{AcceptedBatch, Epoch, EpochId, KeyRing, Rejection, Secret};
use veil_policy::Policy;

/// Why a store operation failed. Messages name tables and operations, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the data directory is not initialized (run `veil init`)")]
    NotInitialized,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("a release with this query key already exists")]
    Conflict,
    #[error("the key vault is missing at {0}: restore it from its own backup (it is kept apart from the data directory), or point `vault` in veil.toml at it")]
    VaultMissing(String),
    #[error("the key vault at {0} belongs to another data directory: point `vault` in veil.toml at this store's vault")]
    VaultMismatch(String),
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One batch for [`Store::ingest`]: applied in one transaction or not at all.
pub struct IngestBatch<'a> {
    pub source: &'a str,
    pub received_at: i64,
    pub accepted: AcceptedBatch,
    pub rejected: Vec<Rejection>,
}

/// One staged event, decrypted: its segment, epoch, time and pseudonymous attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagedRow {
    /// The stored segment it is in (rewritten as a whole by an erasure).
    #[serde(skip)]
    pub segment: i64,
    #[serde(serialize_with = "epoch_number")]
    pub epoch: EpochId,
    pub time: i64,
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

fn epoch_number<S: serde::Serializer>(e: &EpochId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u32(e.0)
}

/// One record of per-contributor state: a person's contribution (by contributor id) to
/// one group of one metric's open window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContribRecord {
    pub metric: String,
    pub window_start: i64,
    pub group: String,
    #[serde(skip)]
    pub contributor: veil_pipeline::ContributorId,
    pub bin: i32,
    pub n: i64,
    pub total: i64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What one ingest commit did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestOutcome {
    pub accepted: usize,
    /// Events whose `(source, id)` was already ingested: counted once, not again.
    pub duplicates: usize,
    pub rejected: BTreeMap<String, usize>,
    pub clamped: usize,
    pub redacted: usize,
    /// Undeclared attributes the collections' `ignore_attributes` dropped (never stored).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_attributes: usize,
    /// Events (accepted or duplicate) that carried no `id` of their own.
    pub without_id: usize,
    /// Events the door passed but the commit found `late` (a seal ran in between), by
    /// their position among the batch's accepted events, so a caller can say which of its
    /// events they were. Each is also counted in `rejected` and kept in quarantine; none
    /// is staged, counted or remembered as seen.
    pub late: Vec<usize>,
}

impl IngestOutcome {
    /// Adds another outcome's counts to this one, and appends its `late` positions as
    /// they are (positions index one batch: a caller summing batches renumbers them first).
    pub fn add(&mut self, o: &IngestOutcome) {
        self.late.extend_from_slice(&o.late);
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.clamped += o.clamped;
        self.redacted += o.redacted;
        self.dropped_attributes += o.dropped_attributes;
        self.without_id += o.without_id;
        for (k, v) in &o.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
    }
}

/// What one seal run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SealOutcome {
    /// (metric, window label) pairs sealed. Deliberately no group count: the number of
    /// distinct groups in a window is not something a release would show.
    pub windows: Vec<(String, String)>,
}

/// One sealed, bounded group aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggRow {
    pub metric: String,
    /// Comma-joined dimension names, `""` for the total.
    pub grouping: String,
    pub window_start: i64,
    pub group: String,
    pub contributors: i64,
    pub count: i64,
    pub sum: i64,
    pub bins: Vec<i64>,
}

/// A stored release document and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRecord {
    pub release_id: String,
    pub query_key: String,
    pub principal: String,
    pub collection: String,
    pub epsilon: f64,
    pub created_at: i64,
    /// The JSON document exactly as first released.
    pub document: String,
}

/// The windows one release covers: each (metric, grouping, window) is released once,
/// and later queries reuse it (spec §6).
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedWindows {
    pub metric: String,
    /// Comma-joined dimension names, `""` for the total.
    pub grouping: String,
    /// Window starts, ascending.
    pub starts: Vec<i64>,
}

/// One budget charge of a release: ε in millionths against the collection's budget for
/// the period `[period_start, period_end)` (the period holding the released data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodCharge {
    pub period_start: i64,
    pub period_end: i64,
    pub epsilon_micro: i64,
}

/// Outcome of trying to spend privacy budget.
#[derive(Debug, Clone, PartialEq)]
pub enum Spend {
    /// Spent; this much is left in the last charged period.
    Spent { left: f64 },
    /// Refused; nothing was spent. `period_start` names the period without enough left.
    Refused { left: f64, period_start: i64 },
}

/// Exact sealed aggregates: the numbers before noise. Only the release step reads them
/// (`veil_release::lookup`); every other crate sees a [`Store`], whose methods it can call
/// without ever naming this trait — and naming it anywhere else fails the boundaries
/// test (`crates/veil-release/tests/boundaries.rs`).
pub trait SealedAggregates {
    /// Sealed aggregates of one metric and grouping with window start in `[from, to)`.
    fn exact_aggregates(
        &self,
        metric: &str,
        grouping: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<AggRow>>;
    /// The first sealed window holding any data of a metric: windows before it are not
    /// listed (spec §6).
    fn first_window(&self, metric: &str) -> Result<Option<i64>>;
}

/// The storage boundary: the CLI, the release layer and the server talk only to this
/// trait, so SQLite and PostgreSQL are interchangeable and share one test suite.
pub trait Store: SealedAggregates {
    /// All epochs, including shredded ones (without keys).
    fn epochs(&self) -> Result<Vec<Epoch>>;
    /// The vault's idempotency secret (one per store, created with it).
    fn dedupe_secret(&self) -> Result<Secret>;
    /// Where the vault is (no secret): what `veil status` shows.
    fn vault_location(&self) -> String;
    /// Every staged event of a collection in an epoch whose keys exist, decrypted:
    /// pseudonymous event-level rows, for reads under a grant and subject requests only
    /// (both audited by their callers).
    fn staging_events(&self, collection: &str, keys: &KeyRing) -> Result<Vec<StagedRow>>;
    /// Every record of per-contributor state in an epoch whose keys exist, decrypted (for
    /// subject requests: the caller derives the person's contributor ids).
    fn contributor_records(&self, keys: &KeyRing) -> Result<Vec<ContribRecord>>;
    /// Removes the staged events and contribution records the two predicates select,
    /// rewriting what holds them, with one `subject_erase` audit entry (`detail` plus the
    /// counts) in the same transaction. Aggregates are never touched: they hold no one.
    fn erase(
        &mut self,
        keys: &KeyRing,
        staged: &dyn Fn(&str, &StagedRow) -> bool,
        contrib: &dyn Fn(&str, i64, &veil_pipeline::ContributorId) -> bool,
        actor: &str,
        detail: &serde_json::Value,
        now: i64,
    ) -> Result<(usize, usize)>;
    /// The audit entries with any of these actions, in chain order (grants and contests
    /// are folded from them, so their state is as tamper-evident as the chain).
    fn audit_entries(&self, actions: &[&str]) -> Result<Vec<AuditEntry>>;
    /// The key ring the door needs: every epoch's keys, the idempotency key and the
    /// opt-out list.
    fn key_ring(&self) -> Result<KeyRing> {
        Ok(KeyRing::new(self.epochs()?, &self.dedupe_secret()?).with_opt_outs(self.opt_outs()?))
    }
    /// Staged events per (collection, epoch) with the oldest event day (unix seconds of
    /// its midnight): what the posture shows against the retention.
    fn staging_summary(&self) -> Result<Vec<(String, u32, i64, i64)>>;
    /// The oldest row of the aggregate zone (a window start) and of quarantine (when
    /// received), for the posture's retention view.
    fn oldest_rows(&self) -> Result<(Option<i64>, Option<i64>)>;
    /// Digests of every identifier that opted out (`KeyRing::opt_out_digest`).
    fn opt_outs(&self) -> Result<Vec<[u8; 16]>>;
    /// Records an opt-out (idempotent), audited as `subject_opt_out` with the total and
    /// never the digest; `true` when it is new.
    fn add_opt_out(&mut self, digest: [u8; 16], actor: &str, now: i64) -> Result<bool>;
    /// Ends the current epoch at `now` and starts a new one with fresh keys.
    fn rotate_keys(&mut self, now: i64, actor: &str) -> Result<EpochId>;
    /// Applies batches in one transaction (all or none): dedupe, staging, aggregation state,
    /// quarantine, and one audit entry. Several batches share one commit so a gateway's
    /// throughput does not depend on one fsync per request; the outcomes are per batch.
    /// The batches are borrowed, so a caller can free or reuse their memory on its own
    /// thread.
    fn ingest(
        &mut self,
        policy: &Policy,
        keys: &KeyRing,
        batches: &[IngestBatch<'_>],
    ) -> Result<Vec<IngestOutcome>>;
    /// Per metric (policy order): windows starting before this instant are sealed.
    fn sealed_before(&self, policy: &Policy) -> Result<Vec<i64>>;
    /// Seals every window closed for at least the grace period; `keys` opens the
    /// encrypted per-contributor state.
    fn seal(
        &mut self,
        policy: &Policy,
        keys: &KeyRing,
        now: i64,
        actor: &str,
    ) -> Result<SealOutcome>;
    /// Applies retention (see [`retention`]): deletes staging events, idempotency runs,
    /// quarantine rows, sealed aggregates and stored releases past their retention, then
    /// destroys the keys of every epoch that nothing still needs. Audited with counts as
    /// `purge`, each destruction as `key_shred`; [`PurgeMode::DryRun`] only counts.
    fn purge(
        &mut self,
        policy: &Policy,
        now: i64,
        actor: &str,
        mode: PurgeMode,
    ) -> Result<PurgeReport>;
    /// Appends one audit entry; `detail` must hold no personal data.
    fn audit(
        &mut self,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
        now: i64,
    ) -> Result<AuditEntry>;
    /// At most `limit` audit entries with `seq >= since`, in order: a page of the log, read
    /// without loading the rest of it.
    fn audit_log(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>>;
    /// The newest audit entry with this action (the status page's "last seal").
    fn last_audit(&self, action: &str) -> Result<Option<AuditEntry>>;
    /// Verifies the whole chain against the recorded head (a missing head is a failure),
    /// every stored release and ledger row against the chain, and that the chain still
    /// holds every anchor kept outside the data directory.
    fn audit_verify(&self, anchors: &[audit::Anchor]) -> Result<Verification>;
    /// The newest audit entry: the head to anchor outside the data directory.
    fn audit_head(&self) -> Result<Option<AuditEntry>>;
    /// Records a policy load in the audit log when its hash differs from the last one.
    fn note_policy(&mut self, policy: &Policy, actor: &str, now: i64) -> Result<bool>;
    /// A collector's cursor (where its last complete run stopped), by the collector's key.
    fn collector_cursor(&self, key: &str) -> Result<Option<String>>;
    /// Moves a collector's cursor, after the events up to it were committed.
    fn set_collector_cursor(&mut self, key: &str, value: &str) -> Result<()>;
    /// Rejections held in quarantine, by reason code.
    fn quarantine_counts(&self) -> Result<BTreeMap<String, i64>>;
    /// Rejections received since `since`, by UTC day (its start) and reason code: the
    /// posture's rejections over time.
    fn quarantine_by_day(&self, since: i64) -> Result<Vec<(i64, String, i64)>>;
    /// Events of `collection` refused as `late` whose time fell on a day from `since`, by
    /// that day: the sealed windows that missed events.
    fn late_by_day(&self, collection: &str, since: i64) -> Result<Vec<(i64, i64)>>;
    /// A stored release by id, served only as its audit entry recorded it (an edited or
    /// replaced row is an error, never an answer).
    fn release_by_id(&self, release_id: &str) -> Result<Option<ReleaseRecord>>;
    /// Which windows of `(metric, grouping)` with start in `[from, to)` were released, and
    /// by which release: `(window_start, release_id)`, ascending.
    fn released_windows(
        &self,
        metric: &str,
        grouping: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>>;
    /// Atomically: charge every `charges` period of the release's collection (each within
    /// `budget_micro`, summed over every principal), record its windows as released, and
    /// store the release whose document `render` builds from the budget left — or refuse
    /// and store nothing. A refusal is audited too, without `audit_detail["outcome"]`:
    /// the noisy result of a draw nobody paid for must not leave through the audit log.
    /// A window already released is a [`StoreError::Conflict`].
    fn spend_and_store(
        &mut self,
        release: &ReleaseRecord,
        windows: &ReleasedWindows,
        charges: &[PeriodCharge],
        budget_micro: i64,
        audit_detail: &serde_json::Value,
        render: &dyn Fn(f64) -> String,
    ) -> Result<Spend>;
    /// ε already spent on a collection's data of `[from, to)` (a budget period), over
    /// every principal, metric and grouping and whatever period length it was charged
    /// under: what the audit chain proves, or the ledger when it says more.
    fn spent(&self, collection: &str, from: i64, to: i64) -> Result<f64>;
    /// ε spent per (principal, collection), over all periods: who spent what.
    fn spent_by_principal(&self) -> Result<BTreeMap<(String, String), f64>>;
    /// Every release record, oldest first.
    fn releases(&self) -> Result<Vec<ReleaseRecord>>;
}
