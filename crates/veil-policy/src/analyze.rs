//! Compilation and lint in one pass: every problem is collected, none stops the others.
//!
//! Structural problems (rule `schema`) and the approval test (Q1–Q6, R) share one list of
//! [`Finding`]s. A policy compiles only when that list holds no error, so Veil never runs
//! a policy its own linter would refuse.

use crate::duration;
use crate::model::*;
use crate::raw::*;
use crate::TeamMap;
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};

/// How bad a finding is: errors block the policy, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a policy, located by collection, field and metric names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `schema`, `Q1`…`Q6` or `R`.
    pub rule: &'static str,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}]", self.rule)?;
        let mut loc = Vec::new();
        if let Some(c) = &self.collection {
            loc.push(format!("collection {c}"));
        }
        if let Some(x) = &self.field {
            loc.push(format!("field {x}"));
        }
        if let Some(m) = &self.metric {
            loc.push(format!("metric {m}"));
        }
        if !loc.is_empty() {
            write!(f, " {}", loc.join(", "))?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Retention ceilings per zone: (staging, aggregates).
fn ceilings(zone: Zone) -> (Secs, Secs) {
    const D: Secs = 86_400;
    match zone {
        Zone::Operational => (30 * D, 400 * D),
        Zone::Security => (90 * D, 730 * D),
        Zone::HrReview => (30 * D, 400 * D),
    }
}

/// Names that look like a category of monitoring Veil exists to refuse (spec §3, R).
const FORBIDDEN: &[(&str, &str)] = &[
    ("keystroke", "keystrokes"),
    ("keypress", "keystrokes"),
    ("keylog", "keystrokes"),
    ("screencapture", "screen capture"),
    ("screenshot", "screenshots"),
    ("screenrecord", "screen capture"),
    ("activewindow", "active window"),
    ("windowtitle", "active window"),
    ("idletime", "idle time"),
    ("idle", "idle time"),
    ("mouse", "mouse movement"),
    ("cursorposition", "mouse movement"),
    ("webcam", "webcam"),
    ("camera", "webcam"),
    ("clipboard", "clipboard"),
    ("chat", "chat or message content"),
    ("messagecontent", "chat or message content"),
    ("messagebody", "chat or message content"),
    ("dmcontent", "chat or message content"),
    ("browsinghistory", "browsing history"),
    ("browserhistory", "browsing history"),
    ("visitedurl", "browsing history"),
];

fn forbidden_category(name: &str) -> Option<&'static str> {
    let norm: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    FORBIDDEN
        .iter()
        .find(|(k, _)| norm.contains(k))
        .map(|(_, cat)| *cat)
}

struct Ctx {
    findings: Vec<Finding>,
    /// The team map the policy names, for `values_from: team_map`.
    team_map: Option<TeamMap>,
}

impl Ctx {
    fn push(
        &mut self,
        rule: &'static str,
        sev: Severity,
        c: Option<&str>,
        f: Option<&str>,
        m: Option<&str>,
        msg: impl Into<String>,
    ) {
        self.findings.push(Finding {
            rule,
            severity: sev,
            collection: c.map(str::to_owned),
            field: f.map(str::to_owned),
            metric: m.map(str::to_owned),
            message: msg.into(),
        });
    }
    fn err(
        &mut self,
        rule: &'static str,
        c: Option<&str>,
        f: Option<&str>,
        m: Option<&str>,
        msg: impl Into<String>,
    ) {
        self.push(rule, Severity::Error, c, f, m, msg)
    }
}

fn blank(s: &Option<String>) -> bool {
    s.as_deref()
        .map(|v| v.trim().is_empty() || v.trim() == "...")
        .unwrap_or(true)
}

fn dur(ctx: &mut Ctx, c: Option<&str>, key: &str, v: &Option<String>, fallback: Secs) -> Secs {
    match v {
        None => fallback,
        Some(s) => match duration::parse(s) {
            Some(d) if d > 0 => d,
            _ => {
                ctx.err(
                    "schema",
                    c,
                    None,
                    None,
                    format!("{key} must be a duration like 14d, 12h or 30m"),
                );
                fallback
            }
        },
    }
}

fn budget(ctx: &mut Ctx, c: Option<&str>, b: &RawBudget) -> Budget {
    if !(b.epsilon.is_finite() && b.epsilon > 0.0) {
        ctx.err(
            "schema",
            c,
            None,
            None,
            "budget.epsilon must be a positive number",
        );
    }
    let period = dur(
        ctx,
        c,
        "budget.period",
        &Some(b.period.clone()),
        30 * 86_400,
    );
    Budget {
        epsilon: b.epsilon,
        period,
    }
}

fn exception_valid(
    ctx: &mut Ctx,
    c: Option<&str>,
    f: Option<&str>,
    e: &RawException,
    today: NaiveDate,
) -> bool {
    if blank(&e.dpia_ref) || blank(&e.approved_by) || blank(&e.expires) {
        ctx.err(
            "R",
            c,
            f,
            None,
            "exception needs dpia_ref, approved_by and expires",
        );
        return false;
    }
    match e
        .expires
        .as_deref()
        .and_then(|s| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok())
    {
        None => {
            ctx.err(
                "R",
                c,
                f,
                None,
                "exception.expires must be a date like 2027-03-31",
            );
            false
        }
        Some(d) if d < today => {
            ctx.err("R", c, f, None, format!("exception expired on {d}"));
            false
        }
        Some(_) => true,
    }
}

/// Compiles and lints a parsed policy. Returns the policy only when no finding is an error.
pub fn analyze(
    raw: &RawPolicy,
    hash: &str,
    today: NaiveDate,
    team_map: Option<TeamMap>,
) -> (Option<Policy>, Vec<Finding>) {
    let mut ctx = Ctx {
        findings: Vec::new(),
        team_map,
    };
    if raw.team_map.is_some() && ctx.team_map.is_none() {
        ctx.err(
            "schema",
            None,
            None,
            None,
            "team_map names a file that was not loaded",
        );
    }
    if raw.version != 1 {
        ctx.err(
            "schema",
            None,
            None,
            None,
            format!(
                "unsupported policy version {}; this Veil reads version 1",
                raw.version
            ),
        );
    }
    if raw.organization.trim().is_empty() {
        ctx.err("schema", None, None, None, "organization must not be empty");
    }
    let d = &raw.defaults;
    let floor = d.min_group_size.unwrap_or(5);
    if floor < 2 {
        ctx.err(
            "Q4",
            None,
            None,
            None,
            format!("defaults.min_group_size is {floor}; it must be at least 2"),
        );
    }
    let staging_retention = dur(
        &mut ctx,
        None,
        "defaults.staging_retention",
        &d.staging_retention,
        14 * 86_400,
    );
    if !(86_400..=90 * 86_400).contains(&staging_retention) {
        ctx.err(
            "Q5",
            None,
            None,
            None,
            "defaults.staging_retention must lie between 1d and 90d",
        );
    }
    let delta = d.delta.unwrap_or(1e-7);
    if !(delta > 0.0 && delta < 1e-3) {
        ctx.err(
            "schema",
            None,
            None,
            None,
            "defaults.delta must lie in (0, 0.001)",
        );
    }
    let defaults = Defaults {
        min_group_size: floor,
        staging_retention,
        aggregate_retention: dur(
            &mut ctx,
            None,
            "defaults.aggregate_retention",
            &d.aggregate_retention,
            400 * 86_400,
        ),
        key_rotation: dur(
            &mut ctx,
            None,
            "defaults.key_rotation",
            &d.key_rotation,
            30 * 86_400,
        ),
        budget: match &d.budget {
            Some(b) => budget(&mut ctx, None, b),
            None => Budget {
                epsilon: 10.0,
                period: 30 * 86_400,
            },
        },
        delta,
        seal_grace: dur(&mut ctx, None, "defaults.seal_grace", &d.seal_grace, 86_400),
        grant_max: {
            let g = d.grant_max_duration.clone().unwrap_or_default();
            let mut out = [0; 3];
            for (zone, key, v, fallback) in [
                (Zone::Operational, "operational", &g.operational, 7),
                (Zone::Security, "security", &g.security, 14),
                (Zone::HrReview, "hr_review", &g.hr_review, 3),
            ] {
                let key = format!("defaults.grant_max_duration.{key}");
                let d = dur(&mut ctx, None, &key, v, fallback * 86_400);
                if d > ceilings(zone).0 {
                    ctx.err(
                        "Q5",
                        None,
                        None,
                        None,
                        format!("{key} may not exceed the zone's staging retention ceiling"),
                    );
                }
                out[zone as usize] = d;
            }
            out
        },
        ignore_attributes: match &d.ignore_attributes {
            None => OTEL_EMITTER_ATTRIBUTES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            Some(list) => checked_patterns(&mut ctx, None, "defaults.ignore_attributes", list),
        },
    };

    let mut names = HashSet::new();
    let mut metric_names = HashSet::new();
    let mut collections = Vec::new();
    if raw.collections.is_empty() {
        ctx.err(
            "schema",
            None,
            None,
            None,
            "the policy declares no collections",
        );
    }
    for (ci, rc) in raw.collections.iter().enumerate() {
        if let Some(c) = collection(&mut ctx, rc, ci, &defaults, today, &mut metric_names) {
            collections.push(c);
        }
        if !names.insert(rc.name.clone()) {
            ctx.err(
                "schema",
                Some(&rc.name),
                None,
                None,
                "collection name is declared twice",
            );
        }
    }
    // A person in more teams than a by-team metric lets one person count in is bounded
    // to some of them at seal: said here, not discovered in the numbers.
    if let Some(most) = ctx.team_map.as_ref().map(TeamMap::most_teams_of_one_member) {
        let mut short = Vec::new();
        for c in &collections {
            for m in &c.metrics {
                let by_team = m.by.iter().any(|&i| c.fields[i].from_team_map);
                if by_team && (m.max_groups_per_contributor as usize) < most {
                    short.push((c.name.clone(), m.name.clone(), m.max_groups_per_contributor));
                }
            }
        }
        for (c, m, l0) in short {
            ctx.push(
                "Q4",
                Severity::Warning,
                Some(&c),
                None,
                Some(&m),
                format!("a member of the team map belongs to {most} teams but max_groups_per_contributor is {l0}: such a person counts in only {l0} of their teams each window; raise it to {most}"),
            );
        }
    }
    let ok = !ctx.findings.iter().any(|f| f.severity == Severity::Error);
    let team_map = ctx.team_map.take();
    let policy = ok.then(|| {
        Policy::new(
            raw.organization.clone(),
            hash.to_owned(),
            defaults,
            collections,
            team_map,
        )
    });
    (policy, ctx.findings)
}

/// The unit a measure's name implies (`duration_ms` → ms), when it implies one.
fn unit_from_name(name: &str) -> Option<String> {
    let n = name.to_ascii_lowercase();
    [
        ("_ms", "ms"),
        ("_millis", "ms"),
        ("_seconds", "s"),
        ("_secs", "s"),
        ("_s", "s"),
        ("_minutes", "min"),
        ("_mins", "min"),
        ("_hours", "h"),
        ("_days", "d"),
        ("_bytes", "bytes"),
        ("_percent", "%"),
        ("_pct", "%"),
    ]
    .iter()
    .find(|(suffix, _)| n.ends_with(suffix))
    .map(|(_, u)| (*u).to_owned())
}

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-'
        })
}

fn collection(
    ctx: &mut Ctx,
    rc: &RawCollection,
    ci: usize,
    d: &Defaults,
    today: NaiveDate,
    metric_names: &mut HashSet<String>,
) -> Option<Collection> {
    let cn = rc.name.as_str();
    let c = Some(cn);
    if !valid_name(cn) {
        ctx.err(
            "schema",
            c,
            None,
            None,
            "collection name must be 1-64 characters of a-z, 0-9, '_', '.', '-'",
        );
    }
    // Q1 purpose
    match &rc.purpose {
        None => ctx.err(
            "Q1",
            c,
            None,
            None,
            "purpose is missing: say what is collected, which question it answers and for whom",
        ),
        Some(p) => {
            for (k, v) in [
                ("what", &p.what),
                ("question", &p.question),
                ("audience", &p.audience),
            ] {
                if blank(v) {
                    ctx.err(
                        "Q1",
                        c,
                        None,
                        None,
                        format!("purpose.{k} is missing or empty"),
                    );
                }
            }
        }
    }
    // Zone
    let zone = match rc.zone.as_deref() {
        Some("operational") => Zone::Operational,
        Some("security") => Zone::Security,
        Some("hr_review") => Zone::HrReview,
        Some(_) => {
            ctx.err(
                "schema",
                c,
                None,
                None,
                "zone must be operational, security or hr_review",
            );
            Zone::Operational
        }
        None => {
            ctx.err(
                "schema",
                c,
                None,
                None,
                "zone is missing (operational, security or hr_review)",
            );
            Zone::Operational
        }
    };
    // Q3 lawful basis
    const BASES: &[&str] = &[
        "consent",
        "contract",
        "legal_obligation",
        "legitimate_interest",
        "vital_interest",
        "public_task",
    ];
    match rc.lawful_basis.as_deref() {
        None => ctx.err("Q3", c, None, None, "lawful_basis is missing"),
        Some(b) if !BASES.contains(&b) => ctx.err("Q3", c, None, None, format!("lawful_basis must be one of {}", BASES.join(", "))),
        Some("consent") if zone != Zone::Security => ctx.push(
            "Q3",
            Severity::Warning,
            c,
            None,
            None,
            "consent as the lawful basis for employee data is rarely freely given; prefer a documented legitimate interest",
        ),
        Some(_) => {}
    }
    if blank(&rc.lawful_basis_ref) {
        ctx.err(
            "Q3",
            c,
            None,
            None,
            "lawful_basis_ref is missing: name the DPIA or balancing test",
        );
    }
    if blank(&rc.owner) {
        ctx.err("schema", c, None, None, "owner is missing");
    }
    // Q5 retention
    let (stage_ceiling, agg_ceiling) = ceilings(zone);
    let staging_retention = dur(
        ctx,
        c,
        "staging_retention",
        &rc.staging_retention,
        d.staging_retention,
    );
    let aggregate_retention = dur(
        ctx,
        c,
        "aggregate_retention",
        &rc.aggregate_retention,
        d.aggregate_retention,
    );
    if staging_retention > stage_ceiling {
        ctx.err(
            "Q5",
            c,
            None,
            None,
            format!(
                "staging_retention {} is above the {} ceiling for this zone",
                duration::human(staging_retention),
                duration::human(stage_ceiling)
            ),
        );
    }
    if staging_retention < 86_400 {
        ctx.err("Q5", c, None, None, "staging_retention must be at least 1d");
    }
    if aggregate_retention > agg_ceiling {
        ctx.err(
            "Q5",
            c,
            None,
            None,
            format!(
                "aggregate_retention {} is above the {} ceiling for this zone",
                duration::human(aggregate_retention),
                duration::human(agg_ceiling)
            ),
        );
    }
    if zone == Zone::HrReview
        && rc
            .approvers
            .as_ref()
            .map(|a| a.iter().all(|s| s.trim().is_empty()))
            .unwrap_or(true)
    {
        ctx.err("Q5", c, None, None, "zone hr_review needs approvers");
    }
    let budget_ = rc
        .budget
        .as_ref()
        .map(|b| budget(ctx, c, b))
        .unwrap_or(d.budget);

    // R risk register, collection level
    let coll_exception = rc
        .exception
        .as_ref()
        .map(|e| exception_valid(ctx, c, None, e, today))
        .unwrap_or(false);
    if let Some(cat) = forbidden_category(cn) {
        if !coll_exception {
            ctx.err(
                "R",
                c,
                None,
                None,
                format!(
                    "collection looks like {cat}, a forbidden category, and has no valid exception"
                ),
            );
        }
    }

    // Fields
    let mut fields = Vec::new();
    for (fname, rf) in &rc.fields {
        let fx = Some(fname.as_str());
        if !valid_field_name(fname) {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "field name must be 1-64 characters of letters, digits, '_' and '.'",
            );
        }
        let exc = rf
            .exception
            .as_ref()
            .map(|e| exception_valid(ctx, c, fx, e, today))
            .unwrap_or(false);
        if let Some(cat) = forbidden_category(fname) {
            if !exc && !coll_exception {
                ctx.err(
                    "R",
                    c,
                    fx,
                    None,
                    format!(
                        "field looks like {cat}, a forbidden category, and has no valid exception"
                    ),
                );
            }
        }
        if let Some(f) = field(ctx, cn, fname, rf) {
            fields.push(f);
        }
    }
    let names: Vec<String> = fields.iter().map(|f: &Field| f.name.clone()).collect();
    let field_idx = |n: &str| names.iter().position(|f| f == n);

    // Metrics
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut metrics = Vec::new();
    for rm in &rc.metrics {
        for b in &rm.by {
            used.insert(b.clone());
        }
        if let Some(f) = &rm.field {
            used.insert(f.clone());
        }
        if let Some(f) = &rm.contributor {
            used.insert(f.clone());
        }
        if !metric_names.insert(rm.name.clone()) {
            ctx.err(
                "schema",
                c,
                None,
                Some(&rm.name),
                "metric name is declared twice in the policy; metric names must be unique",
            );
        }
        if let Some(m) = metric(ctx, rc, rm, ci, &fields, &field_idx, d) {
            metrics.push(m);
        }
    }
    for f in fields.iter_mut() {
        if rc.fields.get(&f.name).and_then(|rf| rf.required).is_none() && used.contains(&f.name) {
            f.required = true;
        }
    }
    // Q2 minimization
    for (fname, rf) in &rc.fields {
        let kept = rf.transform.as_deref() != Some("drop");
        if kept && !used.contains(fname) && blank(&rf.justification) {
            ctx.err("Q2", c, Some(fname), None, "field is kept but used by no metric (by, field, contributor) and has no justification");
        }
    }
    let ignore = ignore_list(ctx, rc, d);
    let purpose = rc.purpose.as_ref();
    let get = |f: fn(&RawPurpose) -> &Option<String>| {
        purpose.and_then(|p| f(p).clone()).unwrap_or_default()
    };
    Some(Collection::new(
        cn.to_owned(),
        Purpose {
            what: get(|p| &p.what),
            question: get(|p| &p.question),
            audience: get(|p| &p.audience),
        },
        rc.lawful_basis.clone().unwrap_or_default(),
        zone,
        staging_retention,
        aggregate_retention,
        budget_,
        fields,
        metrics,
        ignore,
    ))
}

/// The patterns of an `ignore_attributes` list that are well formed; the others are errors.
fn checked_patterns(ctx: &mut Ctx, c: Option<&str>, key: &str, list: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in list {
        if IgnoreList::valid_pattern(p) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        } else {
            ctx.err(
                "schema",
                c,
                None,
                None,
                format!("{key}: each entry must be an attribute name or a prefix ending in .* (such as code.*); a bare * is not allowed"),
            );
        }
    }
    out
}

/// A collection's drop list: the defaults, then its own patterns. Warns when a declared
/// field shadows a pattern, and when a standard OpenTelemetry bridge's attributes would
/// reject every record it sends.
fn ignore_list(ctx: &mut Ctx, rc: &RawCollection, d: &Defaults) -> IgnoreList {
    let c = Some(rc.name.as_str());
    let mut patterns = d.ignore_attributes.clone();
    if let Some(own) = &rc.ignore_attributes {
        for p in checked_patterns(ctx, c, "ignore_attributes", own) {
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
    }
    let list = IgnoreList::new(patterns);
    for fname in rc.fields.keys() {
        if list.matches(fname) {
            ctx.push(
                "otel",
                Severity::Warning,
                c,
                Some(fname),
                None,
                "the field is declared, so ignore_attributes does not drop it (declared fields always go through the policy)",
            );
        }
    }
    let rejected: Vec<&str> = OTEL_BRIDGE_ATTRIBUTES
        .iter()
        .copied()
        .filter(|a| !rc.fields.contains_key(*a) && !list.matches(a))
        .collect();
    if !rejected.is_empty() {
        ctx.push(
            "otel",
            Severity::Warning,
            c,
            None,
            None,
            format!(
                "records from a standard OpenTelemetry logging bridge carry {}, which this collection neither declares nor ignores: each such record would be rejected (field_not_allowed); add them to ignore_attributes",
                rejected.join(", ")
            ),
        );
    }
    list
}

fn valid_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn scaled(v: f64, decimals: u32) -> i64 {
    (v * 10f64.powi(decimals as i32)).round() as i64
}

fn field(ctx: &mut Ctx, cn: &str, fname: &str, rf: &RawField) -> Option<Field> {
    let c = Some(cn);
    let fx = Some(fname);
    let ty = match rf.ty.as_str() {
        "string" => FieldType::String,
        "integer" => FieldType::Integer,
        "number" => FieldType::Number,
        "boolean" => FieldType::Boolean,
        "timestamp" => FieldType::Timestamp,
        "ip" => FieldType::Ip,
        _ => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "type must be string, integer, number, boolean, timestamp or ip",
            );
            return None;
        }
    };
    let class = match rf.class.as_str() {
        "direct_identifier" => FieldClass::DirectIdentifier,
        "quasi_identifier" => FieldClass::QuasiIdentifier,
        "attribute" => FieldClass::Attribute,
        "measure" => FieldClass::Measure,
        "free_text" => FieldClass::FreeText,
        "timestamp" => FieldClass::Timestamp,
        _ => {
            ctx.err("schema", c, fx, None, "class must be direct_identifier, quasi_identifier, attribute, measure, free_text or timestamp");
            return None;
        }
    };
    let default_transform = match class {
        FieldClass::DirectIdentifier => "pseudonymize",
        FieldClass::FreeText => "drop",
        _ => "keep",
    };
    let tname = rf.transform.as_deref().unwrap_or(default_transform);
    let decimals = match (ty, rf.decimals) {
        (FieldType::Number, Some(d)) if d <= 6 => d,
        (FieldType::Number, None) => 3,
        (FieldType::Number, Some(_)) => {
            ctx.err("schema", c, fx, None, "decimals must be at most 6");
            3
        }
        (_, Some(_)) => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "decimals applies only to number fields",
            );
            0
        }
        (_, None) => 0,
    };
    let transform = match tname {
        "pseudonymize" => Transform::Pseudonymize,
        "drop" => Transform::Drop,
        "redact" => Transform::Redact,
        "keep" => Transform::Keep,
        "generalize" => {
            let g = match (&rf.generalize, ty, class) {
                (Some(RawGeneralize::Name(s)), FieldType::Timestamp, _) => match s.as_str() {
                    "minute" => Some(Generalize::Time(TimeGrain::Minute)),
                    "hour" => Some(Generalize::Time(TimeGrain::Hour)),
                    "day" => Some(Generalize::Time(TimeGrain::Day)),
                    "week" => Some(Generalize::Time(TimeGrain::Week)),
                    _ => None,
                },
                (Some(RawGeneralize::Name(s)), FieldType::Ip, _) if s == "network" => {
                    Some(Generalize::Network)
                }
                (
                    Some(RawGeneralize::Width(w)),
                    FieldType::Integer | FieldType::Number,
                    FieldClass::Measure,
                ) => Some(*w)
                    .filter(|w| w.is_finite())
                    .map(|w| scaled(w, decimals))
                    .filter(|w| *w > 0)
                    .map(Generalize::Bucket),
                _ => None,
            };
            match g {
                Some(g) => Transform::Generalize(g),
                None => {
                    ctx.err(
                        "schema",
                        c,
                        fx,
                        None,
                        "generalize needs a parameter that fits the type: minute|hour|day|week for timestamps, a positive bucket width for measures, network for ip",
                    );
                    return None;
                }
            }
        }
        _ => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "transform must be pseudonymize, drop, redact, keep or generalize",
            );
            return None;
        }
    };
    if rf.generalize.is_some() && !matches!(transform, Transform::Generalize(_)) {
        ctx.err(
            "schema",
            c,
            fx,
            None,
            "generalize is set but transform is not generalize",
        );
    }
    match class {
        FieldClass::DirectIdentifier
            if !matches!(transform, Transform::Pseudonymize | Transform::Drop) =>
        {
            ctx.err(
                "Q4",
                c,
                fx,
                None,
                format!(
                    "direct_identifier is kept ({tname}); only pseudonymize or drop are allowed"
                ),
            );
        }
        FieldClass::FreeText if !matches!(transform, Transform::Drop | Transform::Redact) => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                format!("free_text allows only drop or redact, not {tname}"),
            );
        }
        _ if transform == Transform::Pseudonymize && class != FieldClass::DirectIdentifier => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "pseudonymize applies only to direct identifiers",
            );
        }
        _ if transform == Transform::Redact
            && !matches!(class, FieldClass::FreeText | FieldClass::Attribute) =>
        {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "redact applies only to free_text and attribute strings",
            );
        }
        _ => {}
    }
    if matches!(transform, Transform::Pseudonymize | Transform::Redact) && ty != FieldType::String {
        ctx.err(
            "schema",
            c,
            fx,
            None,
            "pseudonymize and redact need type string",
        );
    }
    if class == FieldClass::Measure && !matches!(ty, FieldType::Integer | FieldType::Number) {
        ctx.err(
            "schema",
            c,
            fx,
            None,
            "a measure must be of type integer or number",
        );
    }
    let (min, max) = (
        rf.min.map(|v| scaled(v, decimals)),
        rf.max.map(|v| scaled(v, decimals)),
    );
    if class == FieldClass::Measure {
        match (min, max) {
            (Some(a), Some(b)) if a <= b => {}
            (Some(_), Some(_)) => ctx.err("schema", c, fx, None, "min must not exceed max"),
            _ => ctx.err("schema", c, fx, None, "a measure needs min and max"),
        }
    }
    let values = match (rf.values_from.as_deref(), &rf.values) {
        (None, v) => v.clone(),
        (Some(_), Some(_)) => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "values and values_from exclude each other",
            );
            None
        }
        (Some("team_map"), None) => match &ctx.team_map {
            Some(m) if ty == FieldType::String => Some(m.values()),
            Some(_) => {
                ctx.err(
                    "schema",
                    c,
                    fx,
                    None,
                    "values_from: team_map needs a string field",
                );
                None
            }
            None => {
                ctx.err(
                    "schema",
                    c,
                    fx,
                    None,
                    "values_from: team_map needs the policy's top-level team_map: naming teams.yaml",
                );
                None
            }
        },
        (Some(_), None) => {
            ctx.err("schema", c, fx, None, "values_from must be team_map");
            None
        }
    };
    let unit = match rf.unit.as_deref().map(str::trim) {
        Some(u) if u.is_empty() || u.len() > 16 || !u.chars().all(|c| c.is_ascii_graphic()) => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "unit is 1-16 printable ASCII characters, such as ms, s, h, d, bytes, %",
            );
            None
        }
        Some(_) if class != FieldClass::Measure => {
            ctx.err("schema", c, fx, None, "unit applies only to measures");
            None
        }
        Some(u) => Some(u.to_owned()),
        None if class == FieldClass::Measure => unit_from_name(fname),
        None => None,
    };
    if matches!(class, FieldClass::Attribute | FieldClass::QuasiIdentifier)
        && ty == FieldType::String
        && transform != Transform::Drop
        && values.is_none()
        && rf.values_from.is_none()
        && rf.max_length.is_none()
    {
        ctx.err(
            "schema",
            c,
            fx,
            None,
            "attribute and quasi_identifier strings need values or max_length",
        );
    }
    if let Some(vals) = &values {
        if vals.is_empty() {
            ctx.err("schema", c, fx, None, "values must not be empty");
        }
    }
    let out_of_range = match rf.out_of_range.as_deref() {
        None | Some("reject") => OutOfRange::Reject,
        Some("clamp") => OutOfRange::Clamp,
        Some(_) => {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                "out_of_range must be clamp or reject",
            );
            OutOfRange::Reject
        }
    };
    if rf.normalize.is_some() && class != FieldClass::DirectIdentifier {
        ctx.err(
            "schema",
            c,
            fx,
            None,
            "normalize applies only to direct identifiers",
        );
    }
    let on_pii = match rf.on_pii.as_deref() {
        None if class == FieldClass::FreeText => OnPii::Redact,
        None | Some("reject") => OnPii::Reject,
        Some("redact") => OnPii::Redact,
        Some(_) => {
            ctx.err("schema", c, fx, None, "on_pii must be reject or redact");
            OnPii::Reject
        }
    };
    let Some(handling) = Handling::of(ty, &transform) else {
        // Said once: a more specific finding above may already name this pair.
        let named = ctx.findings.iter().any(|f| {
            f.severity == Severity::Error
                && f.collection.as_deref() == c
                && f.field.as_deref() == fx
        });
        if !named {
            ctx.err(
                "schema",
                c,
                fx,
                None,
                format!(
                    "transform {} does not apply to type {}",
                    transform.as_str(),
                    rf.ty
                ),
            );
        }
        return None;
    };
    Some(Field {
        name: fname.to_owned(),
        class,
        handling,
        values,
        from_team_map: rf.values_from.is_some(),
        unit,
        max_length: rf.max_length,
        min,
        max,
        out_of_range,
        decimals,
        // Refined after metrics are known: fields a metric reads default to required.
        required: rf.required.unwrap_or(false),
        on_pii,
        normalize: rf.normalize.unwrap_or(true),
    })
}

fn metric(
    ctx: &mut Ctx,
    rc: &RawCollection,
    rm: &RawMetric,
    ci: usize,
    fields: &[Field],
    field_idx: &dyn Fn(&str) -> Option<usize>,
    d: &Defaults,
) -> Option<Metric> {
    let c = Some(rc.name.as_str());
    let m = Some(rm.name.as_str());
    if !valid_name(&rm.name) {
        ctx.err(
            "schema",
            c,
            None,
            m,
            "metric name must be 1-64 characters of a-z, 0-9, '_', '.', '-'",
        );
    }
    let kind = match rm.kind.as_str() {
        "count" => MetricKind::Count,
        "sum" => MetricKind::Sum,
        "mean" => MetricKind::Mean,
        "distinct" => MetricKind::Distinct,
        "histogram" => MetricKind::Histogram,
        _ => {
            ctx.err(
                "schema",
                c,
                None,
                m,
                "kind must be count, sum, mean, distinct or histogram",
            );
            return None;
        }
    };
    let mut ok = true;
    let mut by = Vec::new();
    for b in &rm.by {
        match field_idx(b) {
            None => {
                ctx.err(
                    "schema",
                    c,
                    Some(b),
                    m,
                    "by names a field the collection does not declare",
                );
                ok = false;
            }
            Some(i) => {
                let f = &fields[i];
                if f.class == FieldClass::DirectIdentifier {
                    ctx.err(
                        "Q4",
                        c,
                        Some(b),
                        m,
                        "metric groups by a direct identifier, which would report on individuals",
                    );
                    ok = false;
                } else if matches!(
                    f.transform(),
                    Transform::Redact | Transform::Drop | Transform::Pseudonymize
                ) {
                    ctx.err(
                        "Q4",
                        c,
                        Some(b),
                        m,
                        format!(
                            "by names a field whose transform is {}; a group key is built only from a value the door keeps as it is",
                            f.transform().as_str()
                        ),
                    );
                    ok = false;
                } else if !matches!(
                    f.class,
                    FieldClass::Attribute | FieldClass::QuasiIdentifier | FieldClass::Timestamp
                ) {
                    ctx.err(
                        "schema",
                        c,
                        Some(b),
                        m,
                        "by needs a retained attribute, quasi_identifier or generalized timestamp",
                    );
                    ok = false;
                } else {
                    if f.ty() == FieldType::String && f.values.is_none() {
                        let msg = if f.on_pii == OnPii::Redact {
                            "grouping by a free-form string with on_pii: redact; values the PII scanner flags are counted under the fixed group [redacted] — prefer declared values or on_pii: reject"
                        } else if f.class == FieldClass::QuasiIdentifier {
                            "grouping by a free-form quasi-identifier; prefer a declared list of values"
                        } else {
                            ""
                        };
                        if !msg.is_empty() {
                            ctx.push("Q4", Severity::Warning, c, Some(b), m, msg);
                        }
                    }
                    by.push(i);
                }
            }
        }
    }
    let field = match (&rm.field, kind) {
        (None, MetricKind::Sum | MetricKind::Mean | MetricKind::Histogram) => {
            ctx.err(
                "schema",
                c,
                None,
                m,
                "this kind needs field: the measure it aggregates",
            );
            ok = false;
            None
        }
        (Some(fname), _) => match field_idx(fname) {
            Some(i) if fields[i].class == FieldClass::Measure && fields[i].is_retained() => Some(i),
            Some(_) => {
                ctx.err(
                    "schema",
                    c,
                    Some(fname),
                    m,
                    "field must be a retained measure",
                );
                ok = false;
                None
            }
            None => {
                ctx.err(
                    "schema",
                    c,
                    Some(fname),
                    m,
                    "field names a field the collection does not declare",
                );
                ok = false;
                None
            }
        },
        (None, _) => None,
    };
    let mut bins = Vec::new();
    if kind == MetricKind::Histogram {
        let dec = field.map(|i| fields[i].decimals).unwrap_or(0);
        match &rm.bins {
            Some(b) if b.len() >= 2 && b.windows(2).all(|w| w[0] < w[1]) => {
                bins = b.iter().map(|v| scaled(*v, dec)).collect()
            }
            _ => {
                ctx.err(
                    "schema",
                    c,
                    None,
                    m,
                    "histogram needs bins: at least two strictly ascending edges",
                );
                ok = false;
            }
        }
    } else if rm.bins.is_some() {
        ctx.err(
            "schema",
            c,
            None,
            m,
            "bins applies only to histogram metrics",
        );
    }
    let window = match rm.window.as_deref() {
        Some("day") => Window::Day,
        Some("week") | None => Window::Week,
        Some("month") => Window::Month,
        Some(_) => {
            ctx.err("schema", c, None, m, "window must be day, week or month");
            Window::Week
        }
    };
    let contributor = match rm.contributor.as_deref() {
        None => {
            ctx.err("schema", c, None, m, "contributor is missing: name the pseudonymized identifier whose distinct values count toward k");
            ok = false;
            None
        }
        Some(cn) => match field_idx(cn) {
            Some(i)
                if fields[i].class == FieldClass::DirectIdentifier
                    && fields[i].transform() == Transform::Pseudonymize =>
            {
                Some(i)
            }
            Some(_) => {
                ctx.err(
                    "schema",
                    c,
                    Some(cn),
                    m,
                    "contributor must be a direct_identifier with transform pseudonymize",
                );
                ok = false;
                None
            }
            None => {
                ctx.err(
                    "schema",
                    c,
                    Some(cn),
                    m,
                    "contributor names a field the collection does not declare",
                );
                ok = false;
                None
            }
        },
    };
    let epsilon = rm.epsilon.unwrap_or(0.5);
    if !(epsilon.is_finite() && (0.001..=10.0).contains(&epsilon)) {
        // Below 0.001 the noise drowns any count and its parts round to nothing.
        ctx.err("schema", c, None, m, "epsilon must lie in [0.001, 10]");
    }
    let delta = rm.delta.unwrap_or(d.delta);
    if !(delta > 0.0 && delta < 1e-3) {
        ctx.err("schema", c, None, m, "delta must lie in (0, 0.001)");
    }
    let mechanism = match rm.mechanism.as_deref() {
        None | Some("discrete_laplace") => Mechanism::DiscreteLaplace,
        Some("discrete_gaussian") => Mechanism::DiscreteGaussian,
        Some(_) => {
            ctx.err(
                "schema",
                c,
                None,
                m,
                "mechanism must be discrete_laplace or discrete_gaussian",
            );
            Mechanism::DiscreteLaplace
        }
    };
    let k = rm.min_group_size.unwrap_or(d.min_group_size);
    if k < 2 {
        ctx.err("Q4", c, None, m, format!("min_group_size {k} is below 2"));
    } else if k < d.min_group_size {
        ctx.err(
            "Q4",
            c,
            None,
            m,
            format!(
                "min_group_size {k} is below the organization floor {}",
                d.min_group_size
            ),
        );
    }
    let l0 = rm.max_groups_per_contributor.unwrap_or(1);
    let linf = rm.max_contributions_per_group.unwrap_or(1);
    if l0 == 0 || linf == 0 || l0 > 1000 || linf > 100_000 {
        ctx.err("schema", c, None, m, "max_groups_per_contributor and max_contributions_per_group must be positive (at most 1000 and 100000)");
    }
    match &rm.explain {
        None => ctx.err(
            "Q6",
            c,
            None,
            m,
            "explain is missing: measures, does_not_mean and misread_when",
        ),
        Some(e) => {
            for (k, v) in [
                ("measures", &e.measures),
                ("does_not_mean", &e.does_not_mean),
                ("misread_when", &e.misread_when),
            ] {
                if blank(v) {
                    ctx.err("Q6", c, None, m, format!("explain.{k} is missing or empty"));
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let e = rm.explain.as_ref();
    let get =
        |f: fn(&RawExplain) -> &Option<String>| e.and_then(|e| f(e).clone()).unwrap_or_default();
    Some(Metric {
        name: rm.name.clone(),
        collection: ci,
        kind,
        by,
        field,
        bins,
        window,
        contributor: contributor?,
        epsilon,
        delta,
        mechanism,
        min_group_size: k,
        max_groups_per_contributor: l0,
        max_contributions_per_group: linf,
        explain: Explain {
            measures: get(|e| &e.measures),
            does_not_mean: get(|e| &e.does_not_mean),
            misread_when: get(|e| &e.misread_when),
        },
    })
}
