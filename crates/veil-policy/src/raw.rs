//! The policy file exactly as written: serde types that reject unknown keys.
//!
//! Nothing here is trusted yet; [`crate::compile`] and [`crate::lint`] turn it into a
//! [`crate::Policy`] or a list of findings.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Top level of `policy.yaml` (version 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: u32,
    pub organization: String,
    /// Path of the team map (`teams.yaml`), relative to the policy file.
    pub team_map: Option<String>,
    #[serde(default)]
    pub defaults: RawDefaults,
    pub collections: Vec<RawCollection>,
}

/// Organization-wide defaults; every collection inherits them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub min_group_size: Option<u32>,
    pub staging_retention: Option<String>,
    pub aggregate_retention: Option<String>,
    pub key_rotation: Option<String>,
    pub budget: Option<RawBudget>,
    pub delta: Option<f64>,
    pub seal_grace: Option<String>,
    /// Longest grant per zone (`operational: 7d`, …); see `Defaults::grant_max`.
    pub grant_max_duration: Option<RawGrantMax>,
    /// Attribute patterns every collection drops at the door (replaces the OpenTelemetry
    /// defaults; `[]` drops nothing).
    pub ignore_attributes: Option<Vec<String>>,
}

/// The longest a grant to staging may last, per zone.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGrantMax {
    pub operational: Option<String>,
    pub security: Option<String>,
    pub hr_review: Option<String>,
}

/// A privacy budget: total ε a principal may spend per collection per period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub epsilon: f64,
    pub period: String,
}

/// One declared collection (event type).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollection {
    pub name: String,
    pub purpose: Option<RawPurpose>,
    pub lawful_basis: Option<String>,
    pub lawful_basis_ref: Option<String>,
    pub owner: Option<String>,
    pub zone: Option<String>,
    pub staging_retention: Option<String>,
    pub aggregate_retention: Option<String>,
    pub approvers: Option<Vec<String>>,
    pub budget: Option<RawBudget>,
    pub exception: Option<RawException>,
    /// More attribute patterns this collection drops at the door, besides the defaults.
    pub ignore_attributes: Option<Vec<String>>,
    #[serde(default)]
    pub fields: BTreeMap<String, RawField>,
    #[serde(default)]
    pub metrics: Vec<RawMetric>,
}

/// "We collect X to answer Y, for Z."
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPurpose {
    pub what: Option<String>,
    pub question: Option<String>,
    pub audience: Option<String>,
}

/// A documented, time-limited exception to the risk register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawException {
    pub dpia_ref: Option<String>,
    pub approved_by: Option<String>,
    pub expires: Option<String>,
}

/// One declared field of a collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "type")]
    pub ty: String,
    pub class: String,
    pub transform: Option<String>,
    pub values: Option<Vec<String>>,
    /// `team_map`: the declared values are the team map's teams plus `unassigned`.
    pub values_from: Option<String>,
    /// The measure's unit (`ms`, `s`, `min`, `h`, `d`, `bytes`, …), shown with released values.
    pub unit: Option<String>,
    pub max_length: Option<u32>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub out_of_range: Option<String>,
    pub generalize: Option<RawGeneralize>,
    pub decimals: Option<u32>,
    pub required: Option<bool>,
    pub on_pii: Option<String>,
    /// Direct identifiers: `false` pseudonymizes the value exactly as sent.
    pub normalize: Option<bool>,
    pub justification: Option<String>,
    pub exception: Option<RawException>,
}

/// The parameter of `transform: generalize` as written: a grain or `network` (a word),
/// or a bucket width (a number). Which one fits the field's type is checked when the
/// policy is compiled, so a misfit is a finding with the field's name, not a parse error.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawGeneralize {
    /// `minute`, `hour`, `day`, `week` or `network`.
    Name(String),
    /// A bucket width for a measure, e.g. `1000` or `0.5`.
    Width(f64),
    /// Anything else (`true`, a list, a mapping): kept so the compile step can say what
    /// `generalize` takes, as it does for a word or a width that does not fit.
    Other(serde::de::IgnoredAny),
}

/// One declared metric of a collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub by: Vec<String>,
    pub field: Option<String>,
    pub bins: Option<Vec<f64>>,
    pub window: Option<String>,
    pub contributor: Option<String>,
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    pub mechanism: Option<String>,
    pub min_group_size: Option<u32>,
    pub max_groups_per_contributor: Option<u32>,
    pub max_contributions_per_group: Option<u32>,
    pub explain: Option<RawExplain>,
}

/// The three lines every metric must carry so readers do not misread it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExplain {
    pub measures: Option<String>,
    pub does_not_mean: Option<String>,
    pub misread_when: Option<String>,
}
