//! The release step itself: suppression, selection, noise, budget, storage, audit.

use crate::noise;
use crate::plan::{plan, NoiseParams, Plan, Query};
use crate::ReleaseError;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use veil_pipeline::GROUP_SEP;
use veil_policy::{MetricKind, Policy};
use veil_store::{ReleaseRecord, Spend, Store, StoreError};

/// The release document (spec §6): what JSON, CSV, table and HTTP all show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseDoc {
    pub release_id: String,
    pub metric: String,
    pub kind: String,
    pub by: Vec<String>,
    pub from: String,
    pub to: String,
    pub epsilon: f64,
    pub delta: f64,
    pub mechanism: String,
    pub budget_left: f64,
    pub min_group_size: u32,
    /// Half-width of the 95% interval of one noisy value (one bin for histograms).
    pub interval_half_width: f64,
    pub windows: Vec<String>,
    /// True when groups outside a declared value list are omitted rather than listed as suppressed.
    pub unlisted_groups_suppressed: bool,
    pub groups: Vec<ReleaseGroup>,
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
    pub bins: Option<Vec<HistBin>>,
}

/// One noisy histogram bin: `[lo, hi)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistBin {
    pub lo: f64,
    pub hi: f64,
    pub count: i64,
}

/// A release handed out: the stored record, whether it was served from storage, and the
/// reader's own budget left (what the rendered document shows, spec §6). Only this crate
/// makes one, and renderers take nothing else: no number reaches an output that did not
/// come from a stored, audited release.
#[derive(Debug, Clone)]
pub struct Released {
    record: ReleaseRecord,
    cached: bool,
    budget_left: f64,
}

impl Released {
    /// The stored record (its document is what every format renders).
    pub fn record(&self) -> &ReleaseRecord {
        &self.record
    }

    /// Whether the same query was answered before (nothing was charged now).
    pub fn cached(&self) -> bool {
        self.cached
    }

    /// The reader's budget left in the period, shown in the rendered document.
    pub fn budget_left(&self) -> f64 {
        self.budget_left
    }
}

/// The first phase of an answer: a stored release, or what a new one needs.
pub enum Lookup {
    Stored(Released),
    /// Nothing stored yet and the caller may release: the plan and its sealed rows.
    Fresh(Box<Draft>),
}

/// A new release before its noise: the plan and the sealed aggregates it covers.
pub struct Draft {
    plan: Plan,
    rows: Vec<veil_store::AggRow>,
    principal: String,
    now: i64,
}

/// A new release with its noise drawn, not yet stored or charged.
pub struct Drafted {
    plan: Plan,
    doc: ReleaseDoc,
    record: ReleaseRecord,
    detail: serde_json::Value,
}

fn sample(
    rng: &mut dyn RngCore,
    gaussian: bool,
    t: u128,
    s: u128,
    var_num: u128,
    var_den: u128,
) -> i128 {
    if gaussian {
        noise::discrete_gaussian(rng, var_num, var_den)
    } else {
        noise::discrete_laplace(rng, t, s)
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
        if keys.len() * values.len() > 10_000 {
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

/// Suppression, selection and noise for sealed aggregate rows: the randomized core of a
/// release, with no storage and no budget. Returns the groups and how many were
/// released and suppressed. `domain` lists public group keys (declared values); without
/// it only released groups are listed.
pub fn noisy_groups(
    policy: &Policy,
    p: &Plan,
    rows: &[veil_store::AggRow],
    domain: Option<&[String]>,
    rng: &mut dyn RngCore,
) -> (Vec<ReleaseGroup>, usize, usize) {
    let (_, m) = policy.metric(&p.metric).expect("planned metric exists");
    let by_key: HashMap<(i64, &str), &veil_store::AggRow> = rows
        .iter()
        .map(|r| ((r.window_start, r.group.as_str()), r))
        .collect();
    let np: NoiseParams = p.noise;
    let k = m.min_group_size as i64;
    let mut groups = Vec::new();
    let (mut released, mut suppressed) = (0usize, 0usize);
    for (wi, &w) in p.windows.iter().enumerate() {
        let keys: Vec<String> = match domain {
            Some(d) => d.to_vec(),
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
            let row = by_key.get(&(w, key.as_str()));
            let n = row.map(|r| r.contributors).unwrap_or(0);
            // 1. k pre-threshold; 2. DP selection on n − (k − 1).
            let selected = n >= k && {
                let z = noise::discrete_laplace(rng, np.sel_t, np.sel_s);
                (n - (k - 1)) as i128 + z >= p.selection_threshold as i128
            };
            let key_map: BTreeMap<String, String> =
                p.by.iter()
                    .cloned()
                    .zip(key.split(GROUP_SEP).map(str::to_owned))
                    .collect();
            let window = p.window_labels[wi].clone();
            if !selected {
                suppressed += 1;
                if domain.is_some() {
                    groups.push(ReleaseGroup {
                        key: key_map,
                        window,
                        value: None,
                        interval: None,
                        suppressed: true,
                        bins: None,
                    });
                }
                continue;
            }
            released += 1;
            let r = row.expect("selected groups have data");
            let hw = np.half_width as f64;
            let val = |rng: &mut dyn RngCore| {
                sample(rng, np.gaussian, np.val_t, np.val_s, np.var_num, np.var_den) as f64
            };
            let unit = np.unit as f64;
            // Every kind by name: a new kind must say how it is released before this compiles.
            let additive = |exact: i64, rng: &mut dyn RngCore| {
                let v = exact as f64 + val(rng);
                (
                    Some(num(v / unit, np.unit)),
                    Some([num((v - hw) / unit, np.unit), num((v + hw) / unit, np.unit)]),
                    None,
                )
            };
            let (value, interval, bins) = match p.metric_kind {
                MetricKind::Count => additive(r.count, rng),
                MetricKind::Distinct => additive(r.contributors, rng),
                MetricKind::Sum => additive(r.sum, rng),
                MetricKind::Mean => {
                    let s = r.sum as f64 + val(rng);
                    let c = r.count as f64
                        + sample(
                            rng,
                            np.gaussian,
                            np.count_t,
                            np.count_s,
                            np.count_var_num,
                            np.var_den,
                        ) as f64;
                    let chw = if np.gaussian {
                        noise::gaussian_half_width(
                            ((np.count_var_num as f64) / np.var_den as f64).sqrt(),
                            0.95,
                        ) as f64
                    } else {
                        noise::laplace_half_width(np.count_t as f64 / np.count_s as f64, 0.95)
                            as f64
                    };
                    let mean = s / c.max(1.0) / unit;
                    let lo = (s - hw) / (c + chw).max(1.0) / unit;
                    let hi = (s + hw) / (c - chw).max(1.0) / unit;
                    (
                        Some(num(mean, 1000)),
                        Some([num(lo.min(mean), 1000), num(hi.max(mean), 1000)]),
                        None,
                    )
                }
                MetricKind::Histogram => {
                    // histogram: noisy bins (post-processed to ≥ 0), median read off them.
                    let (_, m) = policy.metric(&p.metric).expect("exists");
                    let counts: Vec<i64> = r
                        .bins
                        .iter()
                        .map(|&b| (b as f64 + val(rng)).max(0.0) as i64)
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
                    let median = quantile(&hb, 0.5);
                    (median.map(|x| num(x, 1000)), None, Some(hb))
                }
            };
            groups.push(ReleaseGroup {
                key: key_map,
                window,
                value,
                interval,
                suppressed: false,
                bins,
            });
        }
    }

    (groups, released, suppressed)
}

/// Answers a query for a principal who may release: a stored release when the same query
/// was answered before (nothing charged), otherwise a new one if the budget allows it.
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

/// Answers a query: what is stored, else — only when `may_release` — a new release. A
/// reader who may not release and asks for something not released gets
/// [`ReleaseError::NotReleased`], audited.
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
        Lookup::Stored(r) => Ok(r),
        Lookup::Fresh(d) => {
            let drafted = draw(policy, d, rng);
            commit(store, policy, drafted)
        }
    }
}

/// Phase one, on the store: plan (bounded; see [`plan`]), serve a stored answer, refuse a
/// reader who may not release, or read the sealed rows a new release needs. Cheap: no
/// noise is drawn here, so a store owned by one thread is not held for long.
pub fn lookup(
    store: &mut dyn Store,
    policy: &Policy,
    principal: &str,
    may_release: bool,
    q: &Query,
    now: i64,
) -> Result<Lookup, ReleaseError> {
    let p = plan(&*store, policy, principal, q, now)?;
    let budget_left = (p.budget - p.budget_spent).max(0.0);
    if let Some(record) = store.release_by_key(&p.query_key)? {
        store.audit(
            principal,
            "release_served",
            &serde_json::json!({"release_id": record.release_id, "metric": p.metric}),
            now,
        )?;
        return Ok(Lookup::Stored(Released {
            record,
            cached: true,
            budget_left,
        }));
    }
    if !may_release {
        // The caller audits the refusal (the CLI at once, the gateway as a count per
        // minute, so a reader cannot make the writer sync once per request).
        return Err(ReleaseError::NotReleased);
    }
    if p.windows.is_empty() {
        // Nothing to release: refuse before anything is charged.
        return Err(ReleaseError::NothingSealed { metric: p.metric });
    }
    let rows = store.exact_aggregates(&p.metric, &p.by.join(","), p.from_ts, p.to_ts)?;
    Ok(Lookup::Fresh(Box::new(Draft {
        plan: p,
        rows,
        principal: principal.to_owned(),
        now,
    })))
}

/// Phase two, off the store: suppression, selection and noise. Pure CPU.
pub fn draw(policy: &Policy, d: Box<Draft>, rng: &mut dyn RngCore) -> Drafted {
    let Draft {
        plan: p,
        rows,
        principal,
        now,
    } = *d;
    let domain = public_domain(policy, &p);
    let (groups, released, suppressed) = noisy_groups(policy, &p, &rows, domain.as_deref(), rng);
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let release_id = format!("r-{}", hex::encode(id));
    let doc = ReleaseDoc {
        release_id: release_id.clone(),
        metric: p.metric.clone(),
        kind: p.kind.to_owned(),
        by: p.by.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        epsilon: p.epsilon,
        delta: p.delta,
        mechanism: p.mechanism.to_owned(),
        budget_left: 0.0,
        min_group_size: p.min_group_size,
        interval_half_width: p.interval_half_width,
        windows: p.window_labels.clone(),
        unlisted_groups_suppressed: domain.is_none(),
        groups,
    };
    let record = ReleaseRecord {
        release_id: release_id.clone(),
        query_key: p.query_key.clone(),
        principal,
        collection: p.collection.clone(),
        epsilon: p.epsilon,
        created_at: now,
        document: String::new(),
    };
    let mut detail = serde_json::json!({
        "release_id": release_id, "metric": p.metric, "by": p.by, "from": p.from, "to": p.to,
        "epsilon": p.epsilon, "delta": p.delta, "groups_released": released,
    });
    // With declared keys the suppressed count is public (keys × windows − released);
    // with free-form keys it would count every group in the data, singletons included.
    if domain.is_some() {
        detail["groups_suppressed"] = serde_json::json!(suppressed);
    }
    Drafted {
        plan: p,
        doc,
        record,
        detail,
    }
}

/// Phase three, on the store: charge the budget and store the document in one
/// transaction, or refuse and store nothing.
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
    } = d;
    let render = |left: f64| {
        let mut d = doc.clone();
        d.budget_left = (left * 1e6).round() / 1e6;
        serde_json::to_string(&d).expect("release documents serialize")
    };
    let budget = policy
        .metric(&p.metric)
        .map(|(c, _)| c.budget.epsilon)
        .expect("exists");
    let left = match store.spend_and_store(&record, p.period_start, budget, &detail, &render) {
        Ok(Spend::Spent { left }) => left,
        Ok(Spend::Refused { left }) => {
            return Err(ReleaseError::BudgetExhausted {
                collection: p.collection,
                cost: p.epsilon,
                left,
                renews: p.budget_renews,
            });
        }
        Err(StoreError::Conflict) => {
            // A concurrent identical query won the race: serve its answer.
            let record = store
                .release_by_key(&p.query_key)?
                .ok_or(StoreError::Conflict)?;
            let budget_left = (p.budget
                - store.spent(&record.principal, &p.collection, p.period_start)?)
            .max(0.0);
            return Ok(Released {
                record,
                cached: true,
                budget_left,
            });
        }
        Err(e) => return Err(e.into()),
    };
    // The charge committed: answer with exactly what was stored (the same rendering), so
    // nothing after the commit can turn a charged release into an error.
    let record = ReleaseRecord {
        document: render(left),
        ..record
    };
    Ok(Released {
        record,
        cached: false,
        budget_left: left,
    })
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
