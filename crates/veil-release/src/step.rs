//! The release step itself: roster floor, noisy threshold or selection, noise, budget,
//! storage, audit — and answering from windows released before.

use crate::noise;
use crate::plan::{plan, NoiseParams, Plan, Query, Rule};
use crate::ReleaseError;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use veil_pipeline::GROUP_SEP;
use veil_policy::{MetricKind, Policy};
use veil_store::{PeriodCharge, ReleaseRecord, ReleasedWindows, Spend, Store, StoreError};

/// The release document (spec §6): what JSON, CSV, table and HTTP all show. Stored once
/// per release (its new windows); an answer is assembled from stored ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseDoc {
    pub release_id: String,
    /// Every stored release the answer's windows come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    pub metric: String,
    pub kind: String,
    pub by: Vec<String>,
    pub from: String,
    pub to: String,
    /// The measure's unit (values, intervals, bins and quantiles are in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `declared_keys` or `free_form_keys` (spec §6). Documents stored before rules
    /// existed used partition selection.
    #[serde(default = "legacy_rule")]
    pub rule: Rule,
    /// The most one person active in every listed window loses through these numbers.
    pub epsilon: f64,
    /// The most one person loses through one window (0 in documents stored before
    /// windows were charged one by one: each of their windows cost their `epsilon`).
    #[serde(default)]
    pub epsilon_per_window: f64,
    /// ε this answer charged (0 when every window was released before).
    #[serde(default)]
    pub charged: f64,
    pub delta: f64,
    pub mechanism: String,
    /// ε left in the budget period of the newest listed window.
    pub budget_left: f64,
    pub min_group_size: u32,
    /// The rule that decides what is shown, in one sentence.
    #[serde(default)]
    pub threshold: String,
    /// Coverage of every `interval`.
    #[serde(default = "interval_level")]
    pub interval_level: f64,
    /// Half-width of the 95% interval of one noisy value: of one bin's count for a
    /// histogram, of the noisy sum for a mean (each mean's own interval is in its group).
    pub interval_half_width: f64,
    pub windows: Vec<String>,
    /// Windows in range not released yet (a reader who may not release sees the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_released: Vec<String>,
    /// True when groups that were not selected are omitted rather than listed.
    pub unlisted_groups_suppressed: bool,
    pub groups: Vec<ReleaseGroup>,
}

fn legacy_rule() -> Rule {
    Rule::FreeFormKeys
}

fn interval_level() -> f64 {
    0.95
}

impl ReleaseDoc {
    /// What one person active in one window of this stored release loses.
    fn window_epsilon(&self) -> f64 {
        if self.epsilon_per_window > 0.0 {
            self.epsilon_per_window
        } else {
            self.epsilon
        }
    }
}

/// Why a group is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppressed {
    /// The team's roster (a public size) is below `min_group_size`: never shown.
    RosterBelowK,
    /// The noisy count of active people is below `min_group_size`.
    TooFewActive,
    /// Too few rows for the mean or quantiles to mean anything.
    TooFewValues,
}

impl Suppressed {
    /// A human phrase, for tables.
    pub fn phrase(self, k: u32) -> String {
        match self {
            Suppressed::RosterBelowK => format!("roster below {k}"),
            Suppressed::TooFewActive => format!("fewer than {k} active"),
            Suppressed::TooFewValues => "too few values".to_owned(),
        }
    }
}

/// One group of one window in a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseGroup {
    pub key: BTreeMap<String, String>,
    pub window: String,
    pub value: Option<serde_json::Number>,
    pub interval: Option<[serde_json::Number; 2]>,
    pub suppressed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Suppressed>,
    /// Noisy count of distinct active people (the count the threshold read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<HistBin>>,
    /// Quantiles read off the noisy bins (`p50`, `p90`, `p95`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<BTreeMap<String, serde_json::Number>>,
}

/// One noisy histogram bin: `[lo, hi)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistBin {
    pub lo: f64,
    pub hi: f64,
    pub count: i64,
}

/// An answer handed out: assembled only from stored, audited releases. Only this crate
/// makes one, and renderers take nothing else: no number reaches an output that did not
/// come from a stored release.
#[derive(Debug, Clone)]
pub struct Released {
    doc: ReleaseDoc,
    cached: bool,
}

impl Released {
    /// The answer's document (what every format renders).
    pub fn document(&self) -> &ReleaseDoc {
        &self.doc
    }

    /// Whether every window was released before (nothing was charged now).
    pub fn cached(&self) -> bool {
        self.cached
    }

    /// ε left in the budget period of the newest listed window.
    pub fn budget_left(&self) -> f64 {
        self.doc.budget_left
    }

    /// The document as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.doc).expect("release documents serialize")
    }
}

/// The first phase of an answer: stored windows only, or what new ones need.
pub enum Lookup {
    Stored(Box<Released>),
    /// Windows not released yet and the caller may release: the plan and sealed rows.
    Fresh(Box<Draft>),
}

/// A new release before its noise: the plan and the sealed aggregates of its new windows.
pub struct Draft {
    plan: Plan,
    rows: Vec<veil_store::AggRow>,
    principal: String,
    query: Query,
    now: i64,
}

/// A new release with its noise drawn, not yet stored or charged.
pub struct Drafted {
    plan: Plan,
    doc: ReleaseDoc,
    record: ReleaseRecord,
    detail: serde_json::Value,
    query: Query,
    now: i64,
}

fn sample_value(rng: &mut dyn RngCore, np: &NoiseParams) -> i128 {
    if np.gaussian {
        noise::discrete_gaussian(rng, np.var_num, np.var_den)
    } else {
        noise::discrete_laplace(rng, np.val_t, np.val_s)
    }
}

fn num(x: f64, unit: i64) -> serde_json::Number {
    if unit == 1 {
        serde_json::Number::from(x.round() as i64)
    } else {
        let decimals = (unit as f64).log10().round() as i32;
        let p = 10f64.powi(decimals);
        serde_json::Number::from_f64((x * p).round() / p)
            .unwrap_or_else(|| serde_json::Number::from(0))
    }
}

/// Public group keys: the cross product of declared values, when every dimension has them.
pub fn public_domain(policy: &Policy, p: &Plan) -> Option<Vec<String>> {
    let (coll, m) = policy.metric(&p.metric)?;
    let mut keys = vec![String::new()];
    for (i, &pos) in p.by_positions.iter().enumerate() {
        let values = coll.fields[m.by[pos]].values()?;
        if keys.len() * values.len() > crate::plan::MAX_GROUPS {
            return None;
        }
        keys = keys
            .iter()
            .flat_map(|k| {
                values.iter().map(move |v| {
                    if i == 0 {
                        v.clone()
                    } else {
                        format!("{k}{GROUP_SEP}{v}")
                    }
                })
            })
            .collect();
    }
    Some(keys)
}

/// Whether any team in `key` has a roster below `min_group_size` (a public fact: costs
/// nothing and needs no data). `fields` are the grouping's dimensions.
fn roster_below(policy: &Policy, fields: &[&veil_policy::Field], k: u32, key: &str) -> bool {
    fields
        .iter()
        .zip(key.split(GROUP_SEP))
        .any(|(f, value)| policy.roster(f, value).is_some_and(|r| r < k))
}

/// The randomized core of a release for `windows` (a subset of the plan's), with no
/// storage and no budget: roster floor, noisy threshold (declared keys) or pre-threshold
/// and selection (free-form keys), then value noise. Returns the groups and how many were
/// shown and suppressed.
pub fn noisy_groups(
    policy: &Policy,
    p: &Plan,
    windows: &[i64],
    rows: &[veil_store::AggRow],
    rng: &mut dyn RngCore,
) -> (Vec<ReleaseGroup>, usize, usize) {
    let (coll, m) = policy.metric(&p.metric).expect("planned metric exists");
    let by_key: HashMap<(i64, &str), &veil_store::AggRow> = rows
        .iter()
        .map(|r| ((r.window_start, r.group.as_str()), r))
        .collect();
    let domain = match p.rule {
        Rule::DeclaredKeys => public_domain(policy, p),
        Rule::FreeFormKeys => None,
    };
    let np: NoiseParams = p.noise;
    let k = m.min_group_size as i64;
    let field = m.field.map(|i| &coll.fields[i]);
    let (fmin, fmax) = field
        .map(|f| (f.min().unwrap_or(0), f.max().unwrap_or(0)))
        .unwrap_or((0, 0));
    let unit = np.unit as f64;
    let dims: Vec<&veil_policy::Field> = p
        .by_positions
        .iter()
        .map(|&pos| &coll.fields[m.by[pos]])
        .collect();
    let mut groups = Vec::new();
    let (mut shown, mut suppressed) = (0usize, 0usize);
    for &w in windows {
        let label = p
            .windows
            .iter()
            .position(|x| *x == w)
            .map(|i| p.window_labels[i].clone())
            .unwrap_or_default();
        let keys: Vec<String> = match &domain {
            Some(d) => d.clone(),
            None => {
                let mut v: Vec<String> = rows
                    .iter()
                    .filter(|r| r.window_start == w)
                    .map(|r| r.group.clone())
                    .collect();
                v.sort();
                v
            }
        };
        for key in keys {
            let key_map: BTreeMap<String, String> =
                p.by.iter()
                    .cloned()
                    .zip(key.split(GROUP_SEP).map(str::to_owned))
                    .collect();
            let hidden = |reason: Suppressed| ReleaseGroup {
                key: key_map.clone(),
                window: label.clone(),
                value: None,
                interval: None,
                suppressed: true,
                reason: Some(reason),
                active: None,
                bins: None,
                quantiles: None,
            };
            // 1. The roster floor: public, so it decides before any data is read.
            if p.roster_floor && roster_below(policy, &dims, m.min_group_size, &key) {
                suppressed += 1;
                groups.push(hidden(Suppressed::RosterBelowK));
                continue;
            }
            let row = by_key.get(&(w, key.as_str())).copied();
            let n = row.map(|r| r.contributors).unwrap_or(0);
            // 2. One noisy count of active people decides and is released.
            let z = noise::discrete_laplace(rng, np.cnt_t, np.cnt_s) as i64;
            let pass = match (p.rule, p.selection_threshold) {
                (Rule::FreeFormKeys, Some(t)) => n >= k && (n - (k - 1)) + z >= t,
                _ => n + z >= k,
            };
            if !pass {
                suppressed += 1;
                if domain.is_some() {
                    groups.push(hidden(Suppressed::TooFewActive));
                }
                continue;
            }
            let active = n + z;
            let (count, sum, bins) = row.map(|r| (r.count, r.sum, r.bins.clone())).unwrap_or((
                0,
                0,
                vec![0; m.bins.len().saturating_sub(1)],
            ));
            let hw = np.half_width as f64;
            // 3. The value, kept inside what it can be.
            let additive = |v: f64, lo: f64, hi: f64| {
                let c = |x: f64| x.clamp(lo, hi) / unit;
                (
                    Some(num(c(v), np.unit)),
                    Some([num(c(v - hw), np.unit), num(c(v + hw), np.unit)]),
                )
            };
            let nonneg = (0.0, f64::INFINITY);
            let mut g = ReleaseGroup {
                key: key_map.clone(),
                window: label.clone(),
                value: None,
                interval: None,
                suppressed: false,
                reason: None,
                active: Some(active),
                bins: None,
                quantiles: None,
            };
            match p.metric_kind {
                MetricKind::Count | MetricKind::Distinct if np.value_is_count => {
                    (g.value, g.interval) = additive(active as f64, nonneg.0, nonneg.1);
                }
                MetricKind::Count | MetricKind::Distinct => {
                    let exact = if p.metric_kind == MetricKind::Count {
                        count
                    } else {
                        n
                    };
                    let v = exact as f64 + sample_value(rng, &np) as f64;
                    (g.value, g.interval) = additive(v, nonneg.0, nonneg.1);
                }
                MetricKind::Sum => {
                    let v = sum as f64 + sample_value(rng, &np) as f64;
                    let lo = if fmin >= 0 { 0.0 } else { f64::NEG_INFINITY };
                    let hi = if fmax <= 0 { 0.0 } else { f64::INFINITY };
                    (g.value, g.interval) = additive(v, lo, hi);
                }
                MetricKind::Mean => {
                    // The doubled sum around the midpoint, and the row count, each noisy.
                    let centred = 2 * sum as i128 - count as i128 * (fmin as i128 + fmax as i128);
                    let s2 = (centred + sample_value(rng, &np)) as f64;
                    let c =
                        (count as i128 + noise::discrete_laplace(rng, np.rows_t, np.rows_s)) as f64;
                    let (shw, chw) = (np.mean_sum_hw as f64, np.mean_rows_hw as f64);
                    // Fewer than k noisy values: a mean of so few says little and moves
                    // with each one (post-processing of the noisy count: free).
                    if c < k as f64 {
                        suppressed += 1;
                        groups.push(ReleaseGroup {
                            active: Some(active),
                            ..hidden(Suppressed::TooFewValues)
                        });
                        continue;
                    }
                    let mid = (fmin + fmax) as f64 / 2.0;
                    let (lo_b, hi_b) = (fmin as f64, fmax as f64);
                    let at = |s: f64, n: f64| (mid + s / (2.0 * n)).clamp(lo_b, hi_b);
                    let mean = at(s2, c);
                    // The box of both noisy parts at 97.5% each; a shown group has at
                    // least one row, so the count's lower corner is never below 1.
                    let c_lo = (c - chw).max(1.0);
                    let corners = [
                        at(s2 - shw, c_lo),
                        at(s2 - shw, c + chw),
                        at(s2 + shw, c_lo),
                        at(s2 + shw, c + chw),
                    ];
                    let lo = corners.iter().copied().fold(mean, f64::min);
                    let hi = corners.iter().copied().fold(mean, f64::max);
                    g.value = Some(num(mean / unit, 1000));
                    g.interval = Some([num(lo / unit, 1000), num(hi / unit, 1000)]);
                }
                MetricKind::Histogram => {
                    let counts: Vec<i64> = bins
                        .iter()
                        .map(|&b| (b as f64 + sample_value(rng, &np) as f64).max(0.0) as i64)
                        .collect();
                    let hb: Vec<HistBin> = counts
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| HistBin {
                            lo: m.bins[i] as f64 / unit,
                            hi: m.bins[i + 1] as f64 / unit,
                            count: c,
                        })
                        .collect();
                    let (qlo, qhi) = (
                        (m.bins[0].max(fmin)) as f64 / unit,
                        (m.bins[m.bins.len() - 1].min(fmax)) as f64 / unit,
                    );
                    let qs: BTreeMap<String, serde_json::Number> =
                        [("p50", 0.5), ("p90", 0.9), ("p95", 0.95)]
                            .iter()
                            .filter_map(|(name, q)| {
                                quantile(&hb, *q)
                                    .map(|x| (name.to_string(), num(x.clamp(qlo, qhi), 1000)))
                            })
                            .collect();
                    if qs.is_empty() {
                        suppressed += 1;
                        groups.push(ReleaseGroup {
                            active: Some(active),
                            ..hidden(Suppressed::TooFewValues)
                        });
                        continue;
                    }
                    g.value = qs.get("p50").cloned();
                    g.bins = Some(hb);
                    g.quantiles = Some(qs);
                }
            }
            shown += 1;
            groups.push(g);
        }
    }
    (groups, shown, suppressed)
}

/// Answers a query for a principal who may release: windows released before are reused,
/// new ones released if the budget allows it.
pub fn release(
    store: &mut dyn Store,
    policy: &Policy,
    principal: &str,
    q: &Query,
    now: i64,
    rng: &mut dyn RngCore,
) -> Result<Released, ReleaseError> {
    answer(store, policy, principal, true, q, now, rng)
}

/// Answers a query: what is stored, else — only when `may_release` — a new release of the
/// missing windows. A reader who may not release and asks for windows none of which were
/// released gets [`ReleaseError::NotReleased`], audited.
pub fn answer(
    store: &mut dyn Store,
    policy: &Policy,
    principal: &str,
    may_release: bool,
    q: &Query,
    now: i64,
    rng: &mut dyn RngCore,
) -> Result<Released, ReleaseError> {
    let looked = match lookup(store, policy, principal, may_release, q, now) {
        Err(ReleaseError::NotReleased) => {
            store.audit(
                principal,
                "release_refused",
                &serde_json::json!({"metric": q.metric, "refused": "not_released"}),
                now,
            )?;
            return Err(ReleaseError::NotReleased);
        }
        other => other?,
    };
    match looked {
        Lookup::Stored(r) => Ok(*r),
        Lookup::Fresh(d) => {
            let drafted = draw(policy, d, rng);
            commit(store, policy, drafted)
        }
    }
}

/// Phase one, on the store: plan (bounded; see [`plan`]), answer from stored windows,
/// refuse a reader who may not release, or read the sealed rows new windows need. Cheap:
/// no noise is drawn here, so a store owned by one thread is not held for long.
pub fn lookup(
    store: &mut dyn Store,
    policy: &Policy,
    principal: &str,
    may_release: bool,
    q: &Query,
    now: i64,
) -> Result<Lookup, ReleaseError> {
    let p = plan(&*store, policy, q, now)?;
    if !may_release && p.reused.is_empty() {
        // The caller audits the refusal (the CLI at once, the gateway as a count per
        // minute, so a reader cannot make the writer sync once per request).
        return Err(ReleaseError::NotReleased);
    }
    if p.windows.is_empty() {
        // Nothing to release: refuse before anything is charged.
        return Err(ReleaseError::NothingSealed { metric: p.metric });
    }
    if p.new_windows.is_empty() || !may_release {
        let left = left_now(&*store, policy, &p)?;
        let r = assemble(&*store, policy, &p, None, 0.0, left)?;
        store.audit(
            principal,
            "release_served",
            &serde_json::json!({"release_ids": r.doc.parts, "metric": p.metric, "by": p.by, "windows": r.doc.windows.len()}),
            now,
        )?;
        return Ok(Lookup::Stored(Box::new(r)));
    }
    // Refuse before any sealed row is read or any noise drawn when the budget cannot pay
    // (the store checks again, atomically, at commit).
    if let Some((c, left)) = short_period(policy, &p) {
        store.audit(
            principal,
            "release_refused",
            &serde_json::json!({
                "metric": p.metric, "by": p.by, "windows": p.new_window_labels,
                "cost": p.cost, "refused": "budget_exhausted",
                "period": c.period, "budget_left": left,
            }),
            now,
        )?;
        return Err(budget_exhausted(&p, left, c.period_start));
    }
    let lo = *p.new_windows.first().expect("non-empty");
    let hi = *p.new_windows.last().expect("non-empty") + 1;
    let rows = store
        .exact_aggregates(&p.metric, &p.by.join(","), lo, hi)?
        .into_iter()
        .filter(|r| p.new_windows.contains(&r.window_start))
        .collect();
    Ok(Lookup::Fresh(Box::new(Draft {
        plan: p,
        rows,
        principal: principal.to_owned(),
        query: q.clone(),
        now,
    })))
}

/// Phase two, off the store: roster floor, threshold or selection, noise. Pure CPU.
pub fn draw(policy: &Policy, d: Box<Draft>, rng: &mut dyn RngCore) -> Drafted {
    let Draft {
        plan: p,
        rows,
        principal,
        query,
        now,
    } = *d;
    let (groups, released, suppressed) = noisy_groups(policy, &p, &p.new_windows, &rows, rng);
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let release_id = format!("r-{}", hex::encode(id));
    let labels = p.new_window_labels.clone();
    let epsilon = p.epsilon_per_window * labels.len() as f64;
    let doc = ReleaseDoc {
        release_id: release_id.clone(),
        parts: Vec::new(),
        metric: p.metric.clone(),
        kind: p.kind.to_owned(),
        by: p.by.clone(),
        from: labels.first().cloned().unwrap_or_default(),
        to: labels.last().cloned().unwrap_or_default(),
        unit: p.unit.clone(),
        rule: p.rule,
        epsilon,
        epsilon_per_window: p.epsilon_per_window,
        charged: p.cost,
        delta: p.delta,
        mechanism: p.mechanism.to_owned(),
        budget_left: 0.0,
        min_group_size: p.min_group_size,
        threshold: p.threshold_sentence(),
        interval_level: 0.95,
        interval_half_width: p.interval_half_width,
        windows: labels.clone(),
        not_released: Vec::new(),
        unlisted_groups_suppressed: p.rule == Rule::FreeFormKeys,
        groups,
    };
    let charged_micro: i64 = charges(&p).iter().map(|c| c.epsilon_micro).sum();
    let record = ReleaseRecord {
        release_id: release_id.clone(),
        query_key: hex::encode(Sha256::digest(
            format!(
                "v2\0{}\0{}\0{:?}\0{release_id}",
                p.metric,
                p.by.join(","),
                p.new_windows
            )
            .as_bytes(),
        )),
        principal,
        collection: p.collection.clone(),
        epsilon: charged_micro as f64 / 1e6,
        created_at: now,
        document: String::new(),
    };
    // The noisy outcome sits under `outcome`, which the store records only with a stored
    // release (a refused draw was paid by no one). With declared keys the suppressed count
    // is public (keys × windows − released); with free-form keys it would count every
    // group in the data, singletons included.
    let mut outcome = serde_json::json!({ "groups_released": released });
    if p.rule == Rule::DeclaredKeys {
        outcome["groups_suppressed"] = serde_json::json!(suppressed);
    }
    let detail = serde_json::json!({
        "release_id": release_id, "metric": p.metric, "by": p.by, "windows": labels,
        "rule": p.rule, "epsilon": epsilon, "delta": p.delta, "outcome": outcome,
    });
    Drafted {
        plan: p,
        doc,
        record,
        detail,
        query,
        now,
    }
}

/// The first budget period the plan's new windows cannot be paid from, with the ε left
/// in it, counted in micro-ε exactly as the store counts.
fn short_period<'p>(policy: &Policy, p: &'p Plan) -> Option<(&'p crate::PeriodCost, f64)> {
    let (coll, _) = policy.metric(&p.metric)?;
    let budget = (coll.budget.epsilon * 1e6).round() as i64;
    p.charges.iter().zip(charges(p)).find_map(|(c, charge)| {
        let spent = (c.spent * 1e6).round() as i64;
        (spent + charge.epsilon_micro > budget).then(|| (c, (budget - spent).max(0) as f64 / 1e6))
    })
}

/// The refusal a user reads: what the release costs, what is left, in which period.
fn budget_exhausted(p: &Plan, left: f64, period_start: i64) -> ReleaseError {
    ReleaseError::BudgetExhausted {
        collection: p.collection.clone(),
        cost: p.cost,
        left,
        period: chrono::DateTime::from_timestamp(period_start, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
    }
}

/// The charges of a plan's new windows: ε per window to every period its data lies in.
fn charges(p: &Plan) -> Vec<PeriodCharge> {
    // Rounded up to a whole micro-ε: the ledger never holds less than the loss.
    let per = (p.epsilon_per_window * 1e6 - 1e-6).ceil() as i64;
    p.charges
        .iter()
        .map(|c| PeriodCharge {
            period_start: c.period_start,
            period_end: c.period_end,
            epsilon_micro: per * (c.epsilon / p.epsilon_per_window).round() as i64,
        })
        .collect()
}

/// Phase three, on the store: charge the budget, index the windows and store the
/// document in one transaction, or refuse and store nothing. Then answer with the stored
/// windows and the new ones.
pub fn commit(
    store: &mut dyn Store,
    policy: &Policy,
    d: Drafted,
) -> Result<Released, ReleaseError> {
    let Drafted {
        plan: p,
        doc,
        record,
        detail,
        query,
        now,
    } = d;
    let render = |left: f64| {
        let mut d = doc.clone();
        d.budget_left = (left * 1e6).round() / 1e6;
        serde_json::to_string(&d).expect("release documents serialize")
    };
    let (coll, _) = policy.metric(&p.metric).expect("exists");
    let budget_micro = (coll.budget.epsilon * 1e6).round() as i64;
    let windows = ReleasedWindows {
        metric: p.metric.clone(),
        grouping: p.by.join(","),
        starts: p.new_windows.clone(),
    };
    match store.spend_and_store(
        &record,
        &windows,
        &charges(&p),
        budget_micro,
        &detail,
        &render,
    ) {
        Ok(Spend::Spent { .. }) => {}
        Ok(Spend::Refused { left, period_start }) => {
            return Err(budget_exhausted(&p, left, period_start));
        }
        Err(StoreError::Conflict) => {
            // A concurrent query released some of these windows first: answer with what
            // is stored now (new windows left over are released by the next ask).
            return match lookup(store, policy, &record.principal, false, &query, now)? {
                Lookup::Stored(r) => Ok(*r),
                Lookup::Fresh(_) => Err(StoreError::Conflict.into()),
            };
        }
        Err(e) => return Err(e.into()),
    }
    // The charge committed: answer with exactly what was stored, so nothing after the
    // commit can turn a charged release into an error.
    let left = left_now(&*store, policy, &p)?;
    assemble(&*store, policy, &p, Some(doc), p.cost, left)
}

/// ε left now in the budget period of the plan's newest window.
fn left_now(store: &dyn Store, policy: &Policy, p: &Plan) -> Result<f64, ReleaseError> {
    let (coll, _) = policy.metric(&p.metric).expect("planned metric exists");
    let newest = p.windows.last().copied().unwrap_or_default();
    let start = coll.budget.period_start(newest);
    let spent = store.spent(&p.collection, start, start + coll.budget.period)?;
    Ok((coll.budget.epsilon - spent).max(0.0))
}

/// An answer from stored windows (and a release just made): every group of every listed
/// window comes from a stored, audit-checked release document.
fn assemble(
    store: &dyn Store,
    policy: &Policy,
    p: &Plan,
    fresh: Option<ReleaseDoc>,
    charged: f64,
    budget_left: f64,
) -> Result<Released, ReleaseError> {
    let mut parts: Vec<String> = Vec::new();
    let mut by_window: HashMap<String, Vec<ReleaseGroup>> = HashMap::new();
    // What each listed window cost and the largest k it was released under: the answer
    // states what its stored numbers were released with, not today's policy.
    let mut window_eps: HashMap<String, f64> = HashMap::new();
    let mut k = p.min_group_size;
    // Likewise the widest noise, the largest δ and selection if any part used it.
    let (mut half_width, mut delta, mut rule) = (0.0f64, 0.0f64, Rule::DeclaredKeys);
    let mut widen = |d: &ReleaseDoc| {
        half_width = half_width.max(d.interval_half_width);
        delta = delta.max(d.delta);
        if d.rule == Rule::FreeFormKeys {
            rule = Rule::FreeFormKeys;
        }
    };
    // Each stored release once, in order of first use: one release's windows need not be
    // adjacent (a release of weeks 1 and 3 around a week 2 released before).
    let mut ids: Vec<&str> = Vec::new();
    for (_, id) in &p.reused {
        if !ids.contains(&id.as_str()) {
            ids.push(id);
        }
    }
    for id in ids {
        let record = store.release_by_id(id)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "release {id} is indexed but not stored; run `veil audit verify`"
            ))
        })?;
        let doc: ReleaseDoc = serde_json::from_str(&record.document).map_err(|_| {
            StoreError::Corrupt(format!("stored release {id} is not a release document"))
        })?;
        // The index must name a release that released the window: one that did not (an
        // edited index row) would list the window with numbers missing or foreign.
        for (w, _) in p.reused.iter().filter(|(_, r)| r == id) {
            let label = &p.window_labels[p.windows.iter().position(|x| x == w).unwrap_or(0)];
            if !doc.windows.contains(label) || doc.metric != p.metric || doc.by != p.by {
                return Err(StoreError::Corrupt(format!(
                    "the release index names release {id} for a window it did not release; run `veil audit verify`"
                ))
                .into());
            }
        }
        // Only the windows the index gives this release: two old releases may both hold
        // a window, and only the one the index names is served (never two draws).
        let mine: std::collections::HashSet<&str> = p
            .reused
            .iter()
            .filter(|(_, r)| r == id)
            .filter_map(|(w, _)| p.windows.iter().position(|x| x == w))
            .map(|i| p.window_labels[i].as_str())
            .collect();
        for w in &mine {
            window_eps.insert((*w).to_owned(), doc.window_epsilon());
        }
        k = k.max(doc.min_group_size);
        widen(&doc);
        for g in doc
            .groups
            .into_iter()
            .filter(|g| mine.contains(g.window.as_str()))
        {
            by_window.entry(g.window.clone()).or_default().push(g);
        }
        parts.push(record.release_id);
    }
    let mut release_id = parts.last().cloned().unwrap_or_default();
    let mut listed = p.reused.iter().map(|(w, _)| *w).collect::<Vec<_>>();
    if let Some(f) = fresh {
        for w in &f.windows {
            window_eps.insert(w.clone(), f.window_epsilon());
        }
        widen(&f);
        for g in f.groups {
            by_window.entry(g.window.clone()).or_default().push(g);
        }
        release_id = f.release_id.clone();
        parts.push(f.release_id);
        listed.extend(p.new_windows.iter().copied());
    }
    let mut windows = Vec::new();
    let mut not_released = Vec::new();
    let mut groups = Vec::new();
    let (mut epsilon, mut epsilon_per_window) = (0.0f64, 0.0f64);
    for (w, label) in p.windows.iter().zip(&p.window_labels) {
        if listed.contains(w) {
            windows.push(label.clone());
            groups.extend(by_window.remove(label).unwrap_or_default());
            epsilon += window_eps
                .get(label)
                .copied()
                .unwrap_or(p.epsilon_per_window);
            epsilon_per_window = epsilon_per_window.max(
                window_eps
                    .get(label)
                    .copied()
                    .unwrap_or(p.epsilon_per_window),
            );
        } else {
            not_released.push(label.clone());
        }
    }
    // Floors are free post-processing: a team whose roster is below k today (or below
    // the k a window was released with) is not shown, whatever was stored.
    // Every listed window comes from a part; with none, the plan describes the answer.
    let parts_seen = !parts.is_empty();
    apply_floors(policy, p, k, &mut groups);
    let budget_left = budget_left * 1e6;
    let doc = ReleaseDoc {
        release_id,
        parts,
        metric: p.metric.clone(),
        kind: p.kind.to_owned(),
        by: p.by.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        unit: p.unit.clone(),
        rule: if parts_seen { rule } else { p.rule },
        epsilon: (epsilon * 1e6).round() / 1e6,
        epsilon_per_window,
        charged,
        delta: if parts_seen { delta } else { p.delta },
        mechanism: p.mechanism.to_owned(),
        budget_left: budget_left.round() / 1e6,
        min_group_size: k,
        threshold: p.threshold_sentence(),
        interval_level: 0.95,
        interval_half_width: if parts_seen {
            half_width
        } else {
            p.interval_half_width
        },
        windows,
        not_released,
        unlisted_groups_suppressed: if parts_seen {
            rule == Rule::FreeFormKeys
        } else {
            p.rule == Rule::FreeFormKeys
        },
        groups,
    };
    Ok(Released {
        doc,
        cached: charged == 0.0,
    })
}

/// Suppresses every shown group with a team whose roster is below `k` (a public size)
/// as `roster_below_k`, or whose stored noisy active count is below `k` as
/// `too_few_active`: post-processing of what was released, so it costs nothing.
fn apply_floors(policy: &Policy, p: &Plan, k: u32, groups: &mut [ReleaseGroup]) {
    let Some((coll, m)) = policy.metric(&p.metric) else {
        return;
    };
    let teams: Vec<&veil_policy::Field> = p
        .by_positions
        .iter()
        .map(|&pos| &coll.fields[m.by[pos]])
        .filter(|f| f.from_team_map())
        .collect();
    for g in groups.iter_mut().filter(|g| !g.suppressed) {
        let roster_below = teams.iter().any(|f| {
            g.key
                .get(f.name())
                .and_then(|v| policy.roster(f, v))
                .is_some_and(|r| r < k)
        });
        let reason = if roster_below {
            Some(Suppressed::RosterBelowK)
        } else if g.active.is_some_and(|a| a < i64::from(k)) {
            Some(Suppressed::TooFewActive)
        } else {
            None
        };
        if reason.is_some() {
            *g = ReleaseGroup {
                key: std::mem::take(&mut g.key),
                window: std::mem::take(&mut g.window),
                value: None,
                interval: None,
                suppressed: true,
                reason,
                active: None,
                bins: None,
                quantiles: None,
            };
        }
    }
}

/// The `p`-quantile read off noisy bins by linear interpolation (post-processing).
pub fn quantile(bins: &[HistBin], p: f64) -> Option<f64> {
    let total: i64 = bins.iter().map(|b| b.count).sum();
    if total <= 0 {
        return None;
    }
    let target = p * total as f64;
    let mut acc = 0.0;
    for b in bins {
        let next = acc + b.count as f64;
        if next >= target && b.count > 0 {
            return Some(b.lo + (b.hi - b.lo) * ((target - acc) / b.count as f64));
        }
        acc = next;
    }
    bins.last().map(|b| b.hi)
}
