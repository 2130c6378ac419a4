//! The only way data leaves Veil: a [`release`] answers a report query from sealed
//! aggregates — roster floor, a noisy threshold on declared keys (or pre-threshold and
//! partition selection on free-form ones), exact discrete noise, a budget charge per
//! window and period, an audit entry — and stores each (metric, grouping, window) once,
//! so later queries reuse it and are charged only for new windows.
//!
//! Invariant: every number a report shows comes from a stored [`ReleaseRecord`]
//! document; renderers take a [`Released`] assembled from those, never aggregates.

#![forbid(unsafe_code)]

pub mod noise;
mod plan;
mod render;
mod step;

pub use plan::{plan, selection_threshold, NoiseParams, PeriodCost, Plan, Query, Rule};
pub use render::{aligned, human, render, Format};
pub use step::{
    answer, commit, draw, lookup, noisy_groups, public_domain, quantile, release, Draft, Drafted,
    HistBin, Lookup, ReleaseDoc, ReleaseGroup, Released, Suppressed,
};
pub use veil_store::ReleaseRecord;

/// Why a release was not given. Messages name metrics and dimensions, never data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    #[error("unknown metric {0}; `veil policy lint` lists the declared ones")]
    UnknownMetric(String),
    #[error("metric {metric} cannot be grouped by {dim}; it is declared with by: [{allowed}]")]
    BadGrouping {
        metric: String,
        dim: String,
        allowed: String,
    },
    #[error("the range is empty: --from must lie before --to")]
    BadRange,
    #[error("no sealed window of {metric} lies in the range; windows are released only after `veil seal` closes them")]
    NothingSealed { metric: String },
    #[error("privacy budget exhausted for {collection}: the data of the period starting {period} has ε={left} left and this release costs ε={cost}; released windows stay readable, and a period's budget never renews")]
    BudgetExhausted {
        collection: String,
        cost: f64,
        left: f64,
        period: String,
    },
    #[error(
        "this query was not released yet; a viewer reads only what an analyst already released"
    )]
    NotReleased,
    #[error(
        "the range is too long: {windows} windows of {metric} (at most {max}); narrow --from/--to"
    )]
    TooManyWindows {
        metric: String,
        windows: usize,
        max: usize,
    },
    #[error("the range starts before the earliest retained window of {metric} ({earliest}); aggregates older than the collection's aggregate retention are gone")]
    BeforeRetention { metric: String, earliest: String },
    #[error("the range ends after today; --to may be at most tomorrow's date (exclusive)")]
    AfterNow,
    #[error(
        "this release would list {groups} groups (at most {max}); narrow the range or the grouping"
    )]
    TooManyGroups { groups: usize, max: usize },
    #[error(transparent)]
    Store(#[from] veil_store::StoreError),
}
