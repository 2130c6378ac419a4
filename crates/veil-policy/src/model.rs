//! The compiled policy: every name resolved to an index, every default applied.
//!
//! The pipeline, store and release layers only ever see these types, so a policy that
//! did not compile cannot drive anything.

use rustc_hash::FxHashMap as HashMap;

/// Up to this many names, a scan comparing lengths first beats hashing the name (the
/// door looks up every attribute of every event).
const LINEAR: usize = 16;

/// Seconds, the unit of every retention and window computation.
pub type Secs = i64;

/// A policy that passed parsing, compilation and lint without errors.
#[derive(Debug, Clone)]
pub struct Policy {
    pub organization: String,
    /// Hex SHA-256 of the file's bytes: what the audit log records on load.
    pub hash: String,
    pub defaults: Defaults,
    pub collections: Vec<Collection>,
    by_name: HashMap<String, usize>,
    metric_index: HashMap<String, (usize, usize)>,
}

/// Organization-wide settings after defaults were applied.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub min_group_size: u32,
    pub staging_retention: Secs,
    pub aggregate_retention: Secs,
    pub key_rotation: Secs,
    pub budget: Budget,
    pub delta: f64,
    /// How long after a window closes late events are still accepted before sealing.
    pub seal_grace: Secs,
}

/// Total ε per principal, per collection, per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub epsilon: f64,
    pub period: Secs,
}

/// Processing zone; decides retention ceilings and approval needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Operational,
    Security,
    HrReview,
}

/// One event type as the pipeline enforces it.
#[derive(Debug, Clone)]
pub struct Collection {
    pub name: String,
    pub purpose: Purpose,
    pub lawful_basis: String,
    pub zone: Zone,
    pub staging_retention: Secs,
    pub aggregate_retention: Secs,
    pub budget: Budget,
    pub fields: Vec<Field>,
    pub metrics: Vec<Metric>,
    field_index: HashMap<String, usize>,
}

/// The purpose triple, kept for `policy explain` and the status page.
#[derive(Debug, Clone)]
pub struct Purpose {
    pub what: String,
    pub question: String,
    pub audience: String,
}

/// Declared value type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Timestamp,
    Ip,
}

/// The one class every field has (spec §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldClass {
    DirectIdentifier,
    QuasiIdentifier,
    Attribute,
    Measure,
    FreeText,
    Timestamp,
}

impl FieldClass {
    /// The policy spelling (`direct_identifier`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldClass::DirectIdentifier => "direct_identifier",
            FieldClass::QuasiIdentifier => "quasi_identifier",
            FieldClass::Attribute => "attribute",
            FieldClass::Measure => "measure",
            FieldClass::FreeText => "free_text",
            FieldClass::Timestamp => "timestamp",
        }
    }
}

impl Transform {
    /// The policy spelling (`pseudonymize`, `generalize`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Transform::Pseudonymize => "pseudonymize",
            Transform::Drop => "drop",
            Transform::Redact => "redact",
            Transform::Keep => "keep",
            Transform::Generalize(_) => "generalize",
        }
    }
}

/// What happens to a field's value at the door.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Pseudonymize,
    Drop,
    Redact,
    Keep,
    Generalize(Generalize),
}

/// The parameter of `transform: generalize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generalize {
    /// Truncate a timestamp to this many seconds (minute, hour, day) or to the ISO week.
    Time(TimeGrain),
    /// Floor an (already scaled) measure to a multiple of this width.
    Bucket(i64),
    /// IPv4 to /24, IPv6 to /48.
    Network,
}

/// Granularity a timestamp is truncated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeGrain {
    Minute,
    Hour,
    Day,
    Week,
}

/// What to do with a measure outside `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    Clamp,
    Reject,
}

/// What to do when a retained string holds something that looks like personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPii {
    Reject,
    Redact,
}

/// One declared field with everything the pipeline needs to enforce it.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub class: FieldClass,
    pub transform: Transform,
    pub values: Option<Vec<String>>,
    pub max_length: Option<u32>,
    /// Bounds in scaled integer units (value × 10^decimals).
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub out_of_range: OutOfRange,
    /// Fixed-point scale for `number` measures: stored as value × 10^decimals.
    pub decimals: u32,
    pub required: bool,
    pub on_pii: OnPii,
    /// Direct identifiers only: normalize before pseudonymizing (trim, NFKC, invisible
    /// characters removed, emails case-folded) so one person is one contributor.
    pub normalize: bool,
}

impl Field {
    /// Whether the value survives the door in some form (everything but `drop`).
    pub fn is_retained(&self) -> bool {
        self.transform != Transform::Drop
    }
}

/// Aggregation kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Count,
    Sum,
    Mean,
    Distinct,
    Histogram,
}

/// Aggregation window of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Day,
    Week,
    Month,
}

/// Noise distribution for a metric's releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    DiscreteLaplace,
    DiscreteGaussian,
}

impl Mechanism {
    /// The name used in release documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::DiscreteLaplace => "discrete_laplace",
            Mechanism::DiscreteGaussian => "discrete_gaussian",
        }
    }
}

/// One metric, resolved against its collection's fields.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub collection: usize,
    pub kind: MetricKind,
    /// Field indexes of the grouping dimensions, in declared order.
    pub by: Vec<usize>,
    /// Field index of the measured value (sum, mean, histogram).
    pub field: Option<usize>,
    /// Histogram bin edges in scaled units; bin i is `[bins[i], bins[i+1])`, the last closed.
    pub bins: Vec<i64>,
    pub window: Window,
    /// Field index of the pseudonymized identifier whose distinct values count toward k.
    pub contributor: usize,
    pub epsilon: f64,
    pub delta: f64,
    pub mechanism: Mechanism,
    pub min_group_size: u32,
    /// l0: how many groups one contributor may influence per window.
    pub max_groups_per_contributor: u32,
    /// l∞: how many rows one contributor may add to one group per window.
    pub max_contributions_per_group: u32,
    pub explain: Explain,
}

/// The three explain lines of a metric.
#[derive(Debug, Clone)]
pub struct Explain {
    pub measures: String,
    pub does_not_mean: String,
    pub misread_when: String,
}

impl Policy {
    pub(crate) fn new(
        organization: String,
        hash: String,
        defaults: Defaults,
        collections: Vec<Collection>,
    ) -> Self {
        let by_name = collections
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let mut metric_index = HashMap::default();
        for (ci, c) in collections.iter().enumerate() {
            for (mi, m) in c.metrics.iter().enumerate() {
                metric_index.insert(m.name.clone(), (ci, mi));
                metric_index.insert(format!("{}.{}", c.name, m.name), (ci, mi));
            }
        }
        Policy {
            organization,
            hash,
            defaults,
            collections,
            by_name,
            metric_index,
        }
    }

    /// Index of a collection by its event name.
    pub fn collection_index(&self, name: &str) -> Option<usize> {
        if self.collections.len() <= LINEAR {
            return self.collections.iter().position(|c| c.name == name);
        }
        self.by_name.get(name).copied()
    }

    /// A metric by its name (or `collection.metric`), with its collection.
    pub fn metric(&self, name: &str) -> Option<(&Collection, &Metric)> {
        let (ci, mi) = *self.metric_index.get(name)?;
        let c = &self.collections[ci];
        Some((c, &c.metrics[mi]))
    }

    /// Every metric with its collection, in policy order.
    pub fn metrics(&self) -> impl Iterator<Item = (&Collection, &Metric)> {
        self.collections
            .iter()
            .flat_map(|c| c.metrics.iter().map(move |m| (c, m)))
    }
}

impl Collection {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        purpose: Purpose,
        lawful_basis: String,
        zone: Zone,
        staging_retention: Secs,
        aggregate_retention: Secs,
        budget: Budget,
        fields: Vec<Field>,
        metrics: Vec<Metric>,
    ) -> Self {
        let field_index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        Collection {
            name,
            purpose,
            lawful_basis,
            zone,
            staging_retention,
            aggregate_retention,
            budget,
            fields,
            metrics,
            field_index,
        }
    }

    /// Index of a declared field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        if self.fields.len() <= LINEAR {
            return self.fields.iter().position(|f| f.name == name);
        }
        self.field_index.get(name).copied()
    }

    /// "We collect X to answer 'Y', for Z, with N-day retention."
    pub fn purpose_sentence(&self) -> String {
        format!(
            "We collect {} to answer '{}', for {}, with {} retention.",
            self.purpose.what,
            self.purpose.question,
            self.purpose.audience,
            crate::duration::human(self.staging_retention)
        )
    }
}
