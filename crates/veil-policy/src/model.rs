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

/// A policy that passed parsing, compilation and lint without errors. Its fields are
/// private: only the compiler builds one, and nothing can change it afterwards.
#[derive(Debug, Clone)]
pub struct Policy {
    organization: String,
    /// Hex SHA-256 of the file's bytes: what the audit log records on load.
    hash: String,
    defaults: Defaults,
    collections: Vec<Collection>,
    by_name: HashMap<String, usize>,
    metric_index: HashMap<String, (usize, usize)>,
    team_map: Option<crate::TeamMap>,
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
    /// The longest a grant to staging may last, per zone: operational, security,
    /// hr_review (defaults 7d, 14d, 3d; never more than the zone's staging ceiling).
    pub grant_max: [Secs; 3],
    /// Attribute patterns every collection drops at the door (`defaults.ignore_attributes`;
    /// [`OTEL_EMITTER_ATTRIBUTES`] when absent, `[]` to drop nothing by default).
    pub ignore_attributes: Vec<String>,
}

/// OpenTelemetry semantic-convention attributes that describe the emitter, not the event:
/// the logging bridges and the Collector add them to every record, so by default they are
/// dropped at the door instead of rejecting the record (`field_not_allowed`).
pub const OTEL_EMITTER_ATTRIBUTES: &[&str] = &[
    "code.*",
    "exception.*",
    "log.file.*",
    "log.iostream",
    "log.record.*",
    "thread.*",
    "process.*",
];

/// What a standard bridge sends (the Python `logging` bridge, `log.exception()`, the
/// Collector's filelog receiver): lint warns when a collection would reject one of these.
pub const OTEL_BRIDGE_ATTRIBUTES: &[&str] = &[
    "code.file.path",
    "code.function.name",
    "code.line.number",
    "exception.type",
    "exception.message",
    "exception.stacktrace",
    "log.file.name",
    "log.iostream",
    "thread.id",
    "thread.name",
];

/// Attribute names a collection drops at the door without rejecting the event: exact
/// names and `prefix.*` patterns. A declared field is never dropped, whatever matches it.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    patterns: Vec<String>,
}

impl IgnoreList {
    /// A list of checked patterns (see [`IgnoreList::valid_pattern`]).
    pub(crate) fn new(patterns: Vec<String>) -> Self {
        IgnoreList { patterns }
    }

    /// Whether a pattern is a name of `a-z A-Z 0-9 _ . -`, optionally ending in `.*`;
    /// a bare `*` (drop everything undeclared) is refused.
    pub fn valid_pattern(p: &str) -> bool {
        let name = p.strip_suffix(".*").unwrap_or(p);
        !name.is_empty()
            && p.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    }

    /// Whether an attribute of this name is dropped.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
            None => p == name,
        })
    }

    /// The patterns, in declaration order (defaults first).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Defaults {
    /// The longest a grant to a collection of this zone may last.
    pub fn grant_max(&self, zone: Zone) -> Secs {
        self.grant_max[zone as usize]
    }
}

/// Total ε on any one period's data of a collection, over every metric, grouping and
/// principal, forever (spec §2 Privacy budget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub epsilon: f64,
    pub period: Secs,
}

/// Monday 1970-01-05 00:00 UTC: budget periods are counted from a Monday, so periods
/// of whole weeks (7d, 14d, 28d) hold whole ISO weeks and a weekly window is charged to
/// one period only.
const PERIOD_ORIGIN: Secs = 4 * 86_400;

impl Budget {
    /// Start of the budget period holding instant `t`.
    pub fn period_start(&self, t: Secs) -> Secs {
        t - (t - PERIOD_ORIGIN).rem_euclid(self.period)
    }

    /// Starts of the budget periods the data of `[start, end)` lies in (a window may
    /// straddle two).
    pub fn periods_of(&self, start: Secs, end: Secs) -> Vec<Secs> {
        let first = self.period_start(start);
        let last = self.period_start(end - 1);
        (0..)
            .map(|i| first + i * self.period)
            .take_while(|p| *p <= last)
            .collect()
    }
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
    /// Undeclared attributes dropped instead of rejecting the event.
    pub ignore: IgnoreList,
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

/// What the door does with a field's value: exactly the legal (type, transform) pairs, so
/// an illegal one — a pseudonymized integer, a generalized boolean, an IP kept whole —
/// cannot be built. The compiler makes one only from a pair that passed lint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Never stored, whatever its type.
    Drop(FieldType),
    /// A string identifier, kept only as its pseudonym.
    Pseudonymize,
    /// A string, kept with what the PII scanner finds replaced by placeholders; never a
    /// group key.
    Redact,
    /// A string kept as it is: a declared value, or free-form text the scanner passed.
    KeepString,
    /// An integer, floored to its bucket when generalized.
    Integer {
        bucket: Option<i64>,
    },
    /// A fixed-point number (scaled integer), floored to its bucket when generalized.
    Number {
        bucket: Option<i64>,
    },
    Boolean,
    /// A timestamp, truncated to its grain when generalized.
    Timestamp {
        grain: Option<TimeGrain>,
    },
    /// An IP address, only ever kept as its network (/24, /48), whether the policy says
    /// keep or generalize.
    Network,
}

impl Handling {
    /// The legal handling of a declared (type, transform) pair, `None` for an illegal one.
    pub fn of(ty: FieldType, transform: &Transform) -> Option<Handling> {
        use FieldType as T;
        Some(match (ty, transform) {
            (t, Transform::Drop) => Handling::Drop(t),
            (T::String, Transform::Pseudonymize) => Handling::Pseudonymize,
            (T::String, Transform::Redact) => Handling::Redact,
            (T::String, Transform::Keep) => Handling::KeepString,
            (T::Integer, Transform::Keep) => Handling::Integer { bucket: None },
            (T::Integer, Transform::Generalize(Generalize::Bucket(w))) => {
                Handling::Integer { bucket: Some(*w) }
            }
            (T::Number, Transform::Keep) => Handling::Number { bucket: None },
            (T::Number, Transform::Generalize(Generalize::Bucket(w))) => {
                Handling::Number { bucket: Some(*w) }
            }
            (T::Boolean, Transform::Keep) => Handling::Boolean,
            (T::Timestamp, Transform::Keep) => Handling::Timestamp { grain: None },
            (T::Timestamp, Transform::Generalize(Generalize::Time(g))) => {
                Handling::Timestamp { grain: Some(*g) }
            }
            (T::Ip, Transform::Keep | Transform::Generalize(Generalize::Network)) => {
                Handling::Network
            }
            _ => return None,
        })
    }

    /// The value's declared type.
    pub fn ty(self) -> FieldType {
        match self {
            Handling::Drop(t) => t,
            Handling::Pseudonymize | Handling::Redact | Handling::KeepString => FieldType::String,
            Handling::Integer { .. } => FieldType::Integer,
            Handling::Number { .. } => FieldType::Number,
            Handling::Boolean => FieldType::Boolean,
            Handling::Timestamp { .. } => FieldType::Timestamp,
            Handling::Network => FieldType::Ip,
        }
    }

    /// The transform, as the policy spells it.
    pub fn transform(self) -> Transform {
        match self {
            Handling::Drop(_) => Transform::Drop,
            Handling::Pseudonymize => Transform::Pseudonymize,
            Handling::Redact => Transform::Redact,
            Handling::Integer { bucket: Some(w) } | Handling::Number { bucket: Some(w) } => {
                Transform::Generalize(Generalize::Bucket(w))
            }
            Handling::Timestamp { grain: Some(g) } => Transform::Generalize(Generalize::Time(g)),
            Handling::Network => Transform::Generalize(Generalize::Network),
            Handling::KeepString
            | Handling::Integer { bucket: None }
            | Handling::Number { bucket: None }
            | Handling::Boolean
            | Handling::Timestamp { grain: None } => Transform::Keep,
        }
    }
}

/// One declared field with everything the pipeline needs to enforce it. Its fields are
/// private: only the policy compiler builds one (from a legal [`Handling`]), and the
/// rest of Veil reads it through accessors.
#[derive(Debug, Clone)]
pub struct Field {
    pub(crate) name: String,
    pub(crate) class: FieldClass,
    pub(crate) handling: Handling,
    pub(crate) values: Option<Vec<String>>,
    /// Whether `values` came from the team map (its values are teams with rosters).
    pub(crate) from_team_map: bool,
    /// The measure's unit, declared or implied by its name.
    pub(crate) unit: Option<String>,
    pub(crate) max_length: Option<u32>,
    /// Bounds in scaled integer units (value × 10^decimals).
    pub(crate) min: Option<i64>,
    pub(crate) max: Option<i64>,
    pub(crate) out_of_range: OutOfRange,
    /// Fixed-point scale for `number` measures: stored as value × 10^decimals.
    pub(crate) decimals: u32,
    pub(crate) required: bool,
    pub(crate) on_pii: OnPii,
    /// Direct identifiers only: normalize before pseudonymizing (trim, NFKC, invisible
    /// characters removed, emails case-folded) so one person is one contributor.
    pub(crate) normalize: bool,
}

impl Field {
    /// The field's name in events and the policy.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its one class (spec §2).
    pub fn class(&self) -> FieldClass {
        self.class
    }
    /// What the door does with its value.
    pub fn handling(&self) -> Handling {
        self.handling
    }
    /// Its declared type.
    pub fn ty(&self) -> FieldType {
        self.handling.ty()
    }
    /// Its transform, as the policy spells it.
    pub fn transform(&self) -> Transform {
        self.handling.transform()
    }
    /// Declared values, when the field has a closed list.
    pub fn values(&self) -> Option<&[String]> {
        self.values.as_deref()
    }
    /// Whether the declared values are the team map's teams (rosters apply).
    pub fn from_team_map(&self) -> bool {
        self.from_team_map
    }
    /// The measure's unit (`ms`, `s`, `bytes`, …), when declared or implied by its name.
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
    /// The longest string accepted, in characters.
    pub fn max_length(&self) -> Option<u32> {
        self.max_length
    }
    /// Lower bound in scaled integer units.
    pub fn min(&self) -> Option<i64> {
        self.min
    }
    /// Upper bound in scaled integer units.
    pub fn max(&self) -> Option<i64> {
        self.max
    }
    /// What happens to a measure outside its bounds.
    pub fn out_of_range(&self) -> OutOfRange {
        self.out_of_range
    }
    /// Fixed-point scale of a number (value × 10^decimals).
    pub fn decimals(&self) -> u32 {
        self.decimals
    }
    /// Whether an event without it is rejected.
    pub fn required(&self) -> bool {
        self.required
    }
    /// What a retained free-form string holding personal data does to the event.
    pub fn on_pii(&self) -> OnPii {
        self.on_pii
    }
    /// Whether a direct identifier is normalized before pseudonymizing.
    pub fn normalize(&self) -> bool {
        self.normalize
    }
    /// Whether the value survives the door in some form (everything but `drop`).
    pub fn is_retained(&self) -> bool {
        !matches!(self.handling, Handling::Drop(_))
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
    /// The organization the policy is written for.
    pub fn organization(&self) -> &str {
        &self.organization
    }

    /// Hex SHA-256 of the policy file: what the audit log records when it loads.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Organization-wide settings after defaults.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// Every declared collection, in policy order.
    pub fn collections(&self) -> &[Collection] {
        &self.collections
    }

    /// The team map the policy names: rosters and identity → team.
    pub fn team_map(&self) -> Option<&crate::TeamMap> {
        self.team_map.as_ref()
    }

    /// The roster floor of a group value of field `f`: the team's roster when `f` takes its
    /// values from the team map and the value is a team; `None` otherwise.
    pub fn roster(&self, f: &Field, value: &str) -> Option<u32> {
        if !f.from_team_map {
            return None;
        }
        self.team_map.as_ref()?.roster(value)
    }

    pub(crate) fn new(
        organization: String,
        hash: String,
        defaults: Defaults,
        collections: Vec<Collection>,
        team_map: Option<crate::TeamMap>,
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
            team_map,
        }
    }

    /// Index of a collection by its event name.
    pub fn collection_index(&self, name: &str) -> Option<usize> {
        if self.collections.len() <= LINEAR {
            return self.collections.iter().position(|c| c.name == name);
        }
        self.by_name.get(name).copied()
    }

    /// A collection by its event name.
    pub fn collection(&self, name: &str) -> Option<&Collection> {
        self.collection_index(name).map(|i| &self.collections[i])
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
        ignore: IgnoreList,
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
            ignore,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (type, transform) pair: the legal ones give a handling that reads back as the
    /// same pair (an IP kept is generalized to its network), the rest give none.
    #[test]
    fn only_legal_type_transform_pairs_have_a_handling() {
        use FieldType as T;
        let types = [
            T::String,
            T::Integer,
            T::Number,
            T::Boolean,
            T::Timestamp,
            T::Ip,
        ];
        let transforms = [
            Transform::Pseudonymize,
            Transform::Drop,
            Transform::Redact,
            Transform::Keep,
            Transform::Generalize(Generalize::Time(TimeGrain::Hour)),
            Transform::Generalize(Generalize::Bucket(10)),
            Transform::Generalize(Generalize::Network),
        ];
        let mut legal = 0;
        for ty in types {
            for t in &transforms {
                let h = Handling::of(ty, t);
                let expected = matches!(
                    (ty, t),
                    (_, Transform::Drop)
                        | (
                            T::String,
                            Transform::Pseudonymize | Transform::Redact | Transform::Keep
                        )
                        | (
                            T::Integer | T::Number,
                            Transform::Keep | Transform::Generalize(Generalize::Bucket(_))
                        )
                        | (T::Boolean, Transform::Keep)
                        | (
                            T::Timestamp,
                            Transform::Keep | Transform::Generalize(Generalize::Time(_))
                        )
                        | (
                            T::Ip,
                            Transform::Keep | Transform::Generalize(Generalize::Network)
                        )
                );
                assert_eq!(h.is_some(), expected, "{ty:?} {t:?}");
                if let Some(h) = h {
                    legal += 1;
                    assert_eq!(h.ty(), ty);
                    let back = if ty == T::Ip && *t == Transform::Keep {
                        Transform::Generalize(Generalize::Network)
                    } else {
                        t.clone()
                    };
                    assert_eq!(h.transform(), back);
                }
            }
        }
        assert_eq!(legal, 6 + 3 + 2 + 2 + 1 + 2 + 2);
    }
}
