//! When each zone's rows are past retention: the rules every backend's purge applies, so
//! SQLite and PostgreSQL forget the same rows at the same instant.
//!
//! - Staging events go by their event day, once the whole day is older than the
//!   collection's `staging_retention` (a day's events are stored together; the door
//!   already refuses events older than the retention).
//! - Quarantine rows (field names and a reason, never a value) go with their collection's
//!   staging retention, counted from when they were received.
//! - Sealed aggregates go once the window ended more than the collection's
//!   `aggregate_retention` ago; a stored release once the audit chain proves every window
//!   it released did (`audit::PurgeProof`, counting each window as a month at most).
//! - An epoch's keys are destroyed once its last instant is older than the longest
//!   staging retention and nothing that needs them is left (see the store's purge).
//!
//! Rows of a collection or metric the policy no longer declares follow the defaults.

use serde::Serialize;
use std::collections::BTreeMap;
use veil_pipeline::window;
use veil_policy::{Policy, Window};

const DAY: i64 = 86_400;

/// Cut-off instants of one purge, computed once from the policy and the clock.
pub struct Cutoffs<'a> {
    policy: &'a Policy,
    now: i64,
}

impl<'a> Cutoffs<'a> {
    /// The rules at instant `now`.
    pub fn new(policy: &'a Policy, now: i64) -> Self {
        Cutoffs { policy, now }
    }

    /// The instant the rules are applied at.
    pub fn now(&self) -> i64 {
        self.now
    }

    fn staging_retention(&self, collection: &str) -> i64 {
        self.policy
            .collection(collection)
            .map(|c| c.staging_retention)
            .unwrap_or(self.policy.defaults().staging_retention)
    }

    /// Staging days (event day numbers) below this are past retention.
    pub fn staging_day(&self, collection: &str) -> i64 {
        (self.now - self.staging_retention(collection)).div_euclid(DAY)
    }

    /// Quarantine rows received before this instant are past retention.
    pub fn quarantine_before(&self, collection: Option<&str>) -> i64 {
        self.now
            - collection
                .map(|c| self.staging_retention(c))
                .unwrap_or(self.policy.defaults().staging_retention)
    }

    /// The longest staging retention of any declared collection (the default when
    /// none is declared): the door refuses events older than their collection's
    /// retention, so no key of an epoch that ended before it is needed to pseudonymize
    /// or stage anything new. (Rows of collections no longer declared follow the default
    /// and, while they remain, keep their epoch's keys alive; see the purge.)
    pub fn longest_staging(&self) -> i64 {
        self.policy
            .collections()
            .iter()
            .map(|c| c.staging_retention)
            .max()
            .unwrap_or(self.policy.defaults().staging_retention)
    }

    /// Whether the sealed window of `metric` starting at `start` is past its
    /// collection's aggregate retention. A metric the policy no longer declares is
    /// assumed monthly under the default retention (its longest possible window).
    pub fn aggregate_expired(&self, metric: &str, start: i64) -> bool {
        let (w, retention) = match self.policy.metric(metric) {
            Some((c, m)) => (m.window, c.aggregate_retention),
            None => (Window::Month, self.policy.defaults().aggregate_retention),
        };
        window::end(w, start) <= self.now - retention
    }

    /// Whether an epoch that ended at `end` is past every staging retention.
    pub fn epoch_expired(&self, end: i64) -> bool {
        end <= self.now - self.longest_staging()
    }
}

/// What a purge removed, or with `dry_run` would remove: counts per zone, ids of
/// releases (not personal) and epochs. Never a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    /// Staged events past retention, by collection.
    pub staging_events: BTreeMap<String, i64>,
    /// Idempotency runs and the ids in them.
    pub dedupe_runs: usize,
    pub dedupe_ids: usize,
    /// Per-contributor state of metrics the policy no longer declares (it can never be
    /// sealed), past the longest staging retention.
    pub contributor_runs: i64,
    pub quarantine_rows: i64,
    /// Sealed aggregate rows past retention, by metric.
    pub aggregate_rows: BTreeMap<String, i64>,
    /// Stored releases whose every window is past retention.
    pub releases: Vec<String>,
    /// Epochs whose keys were (or would be) destroyed.
    pub epochs_shredded: Vec<u32>,
    /// Epochs past retention whose keys are still needed, and why.
    pub epochs_held: Vec<(u32, String)>,
}

impl PurgeReport {
    /// Whether the purge removed or destroyed anything.
    pub fn is_empty(&self) -> bool {
        self.staging_events.is_empty()
            && self.dedupe_runs == 0
            && self.contributor_runs == 0
            && self.quarantine_rows == 0
            && self.aggregate_rows.is_empty()
            && self.releases.is_empty()
            && self.epochs_shredded.is_empty()
    }
}

/// How a purge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Count what would go; change nothing, destroy nothing, audit nothing.
    DryRun,
    /// Asked for by someone: audited even when nothing went.
    Run,
    /// The gateway's schedule: audited when something went.
    Scheduled,
}
