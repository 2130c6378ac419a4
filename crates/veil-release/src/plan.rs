//! Planning a release: the normalized query, its windows, noise scales, thresholds and
//! cost — everything `--dry-run` shows, computed without touching data or budget.

use crate::noise;
use crate::ReleaseError;
use chrono::NaiveDate;
use serde::Serialize;
use sha2::{Digest, Sha256};
use veil_pipeline::window;
use veil_policy::{Mechanism, MetricKind, Policy};
use veil_store::Store;

/// A report query as a principal asks it.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub metric: String,
    /// Dimensions to group by; `None` means the metric's full `by`.
    pub by: Option<Vec<String>>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// A planned release: what it covers, how noisy it will be and what it costs.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub metric: String,
    pub collection: String,
    pub kind: &'static str,
    /// The kind itself, for exhaustive matches (`kind` is its name in documents).
    #[serde(skip)]
    pub metric_kind: MetricKind,
    pub by: Vec<String>,
    /// Positions of `by` within the metric's declared dimensions.
    #[serde(skip)]
    pub by_positions: Vec<usize>,
    pub from: String,
    pub to: String,
    #[serde(skip)]
    pub from_ts: i64,
    #[serde(skip)]
    pub to_ts: i64,
    /// Window starts covered (sealed windows only).
    #[serde(skip)]
    pub windows: Vec<i64>,
    pub window_labels: Vec<String>,
    pub epsilon: f64,
    pub epsilon_selection: f64,
    pub epsilon_value: f64,
    pub delta: f64,
    pub mechanism: &'static str,
    pub min_group_size: u32,
    /// Discrete Laplace scale of the selection noise.
    pub selection_scale: f64,
    /// Keep a group when (contributors − (k − 1)) + noise ≥ this.
    pub selection_threshold: i64,
    /// Scale of the value noise (Laplace b, or Gaussian σ), in the value's units.
    pub value_scale: f64,
    /// Half-width of the 95% noise interval of one value, in the value's units.
    pub interval_half_width: f64,
    pub budget: f64,
    pub budget_spent: f64,
    pub budget_left_after: f64,
    pub budget_renews: String,
    #[serde(skip)]
    pub period_start: i64,
    #[serde(skip)]
    pub query_key: String,
    #[serde(skip)]
    pub noise: NoiseParams,
}

/// Exact integer parameters for the samplers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoiseParams {
    /// Selection: discrete Laplace scale t/s.
    pub sel_t: u128,
    pub sel_s: u128,
    /// Value noise (Laplace): scale t/s in scaled integer units.
    pub val_t: u128,
    pub val_s: u128,
    /// Value noise (Gaussian): σ² = num/den in scaled integer units.
    pub var_num: u128,
    pub var_den: u128,
    pub gaussian: bool,
    /// Count noise of a mean (the sum uses val_*): Laplace t/s or Gaussian σ² num/den.
    pub count_t: u128,
    pub count_s: u128,
    pub count_var_num: u128,
    /// 10^decimals of the measure (1 for counts).
    pub unit: i64,
    /// Half-width of the 95% interval in scaled integer units.
    pub half_width: i64,
}

/// Most windows one release covers: more than any retention allows (730 days).
pub const MAX_WINDOWS: usize = 800;

/// Most groups one release lists (declared keys × windows), so drawing its noise stays
/// well under a second.
pub const MAX_GROUPS: usize = 100_000;

fn micro(x: f64) -> u128 {
    ((x * 1e6).round() as u128).max(1)
}

fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn midnight(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp()
}

/// Partition-selection threshold for keep-if `x + Z ≥ T`, Z ~ DLap(b), when one person
/// can create a group whose statistic is at most `linf` and can touch `partitions` groups:
/// `T = linf + ⌈b·ln(1 / ((1 + e^(−1/b))·δp))⌉` with `δp = 1 − (1 − δ)^(1/partitions)`,
/// because P(Z ≥ m) = e^(−m/b) / (1 + e^(−1/b)) for the discrete Laplace.
pub fn selection_threshold(b: f64, delta: f64, partitions: u64, linf: i64) -> i64 {
    let dp = -((-delta).ln_1p() / partitions as f64).exp_m1();
    let q = noise::laplace_q(b);
    linf + (b * (1.0 / ((1.0 + q) * dp)).ln()).ceil() as i64
}

/// Plans a release for `principal` at `now` without spending anything.
pub fn plan(
    store: &dyn Store,
    policy: &Policy,
    principal: &str,
    q: &Query,
    now: i64,
) -> Result<Plan, ReleaseError> {
    let (coll, m) = policy
        .metric(&q.metric)
        .ok_or_else(|| ReleaseError::UnknownMetric(veil_pipeline::safe_name(&q.metric)))?;
    let dims: Vec<&str> = m.by.iter().map(|&i| coll.fields[i].name()).collect();
    let mut by_positions = Vec::new();
    for d in
        q.by.clone()
            .unwrap_or_else(|| dims.iter().map(|s| s.to_string()).collect())
    {
        let d = d.trim().to_owned();
        if d.is_empty() {
            continue;
        }
        match dims.iter().position(|x| *x == d) {
            Some(p) if !by_positions.contains(&p) => by_positions.push(p),
            Some(_) => {}
            None => {
                return Err(ReleaseError::BadGrouping {
                    metric: m.name.clone(),
                    dim: veil_pipeline::safe_name(&d),
                    allowed: dims.join(", "),
                })
            }
        }
    }
    by_positions.sort_unstable(); // equivalent orders share one query key
    let by: Vec<String> = by_positions.iter().map(|&p| dims[p].to_owned()).collect();

    // Range: whole windows; only sealed windows are ever released.
    let metric_index = policy
        .metrics()
        .position(|(_, x)| x.name == m.name)
        .expect("metric exists");
    let sealed_before = store.sealed_before(policy)?[metric_index];
    // Validated before anything is built: calendar dates (the parser's), not after today,
    // not before the earliest window the aggregate retention keeps. Planning then costs
    // at most the windows of one retention period.
    let earliest = window::start(m.window, now - coll.aggregate_retention);
    let to_req = q.to.map(midnight).unwrap_or(now);
    if to_req > now - now.rem_euclid(86_400) + 86_400 {
        return Err(ReleaseError::AfterNow);
    }
    let from_req = match q.from {
        Some(d) => midnight(d),
        None => (to_req - 30 * 86_400).max(earliest),
    };
    if from_req >= to_req {
        return Err(ReleaseError::BadRange);
    }
    if from_req < earliest {
        return Err(ReleaseError::BeforeRetention {
            metric: m.name.clone(),
            earliest: date(earliest),
        });
    }
    let from_ts = window::start(m.window, from_req);
    let to_ts =
        window::end(m.window, window::start(m.window, to_req - 1)).min(sealed_before.max(from_ts));
    let mut windows = Vec::new();
    let mut w = from_ts;
    while w < to_ts {
        windows.push(w);
        if windows.len() > MAX_WINDOWS {
            return Err(ReleaseError::TooManyWindows {
                metric: m.name.clone(),
                windows: windows.len(),
                max: MAX_WINDOWS,
            });
        }
        w = window::end(m.window, w);
    }
    // A grouping of declared values lists every key of every window: bound the listing.
    let keys: usize = by_positions
        .iter()
        .map(|&p| coll.fields[m.by[p]].values().map_or(1, <[String]>::len))
        .product();
    if keys.saturating_mul(windows.len()) > MAX_GROUPS {
        return Err(ReleaseError::TooManyGroups {
            groups: keys.saturating_mul(windows.len()),
            max: MAX_GROUPS,
        });
    }
    // Privacy unit: one contributor in one window. Windows hold disjoint person-windows,
    // so a release over many windows costs its ε once (parallel composition); a person
    // active in W windows of it has at most W·ε across them. Bounds are per window.

    // Budget split: half for selection, half for values (a mean splits its half again).
    let epsilon = m.epsilon;
    let (eps_sel, eps_val) = (epsilon / 2.0, epsilon / 2.0);
    let l0 = m.max_groups_per_contributor as u128;
    let linf = m.max_contributions_per_group as u128;
    let partitions = l0;
    let (sel_t, sel_s) = (partitions * 1_000_000, micro(eps_sel));
    let b_sel = sel_t as f64 / sel_s as f64;
    let threshold = selection_threshold(b_sel, m.delta, partitions as u64, 1);

    let field = m.field.map(|i| &coll.fields[i]);
    let unit = field.map(|f| 10i64.pow(f.decimals())).unwrap_or(1);
    let per_partition: u128 = match m.kind {
        MetricKind::Count | MetricKind::Histogram => linf,
        MetricKind::Distinct => 1,
        MetricKind::Sum | MetricKind::Mean => {
            let f = field.expect("compiled: sum and mean have a field");
            linf * f
                .min()
                .unwrap_or(0)
                .unsigned_abs()
                .max(f.max().unwrap_or(0).unsigned_abs())
                .max(1) as u128
        }
    };
    let eps_each = if m.kind == MetricKind::Mean {
        eps_val / 2.0
    } else {
        eps_val
    };
    let gaussian = m.mechanism == Mechanism::DiscreteGaussian;
    let mut np = NoiseParams {
        sel_t,
        sel_s,
        unit,
        gaussian,
        ..Default::default()
    };
    let value_scale_scaled;
    if gaussian {
        // zCDP: ρ from (ε, δ) via ε = ρ + 2·sqrt(ρ·ln(1/δ)); σ = Δ₂ / sqrt(2ρ), Δ₂ = sqrt(W·l0)·Δ∞.
        let l = (1.0 / m.delta).ln();
        let rho = ((l + eps_each).sqrt() - l.sqrt()).powi(2);
        let d2sq = partitions as f64 * (per_partition as f64).powi(2);
        let var = d2sq / (2.0 * rho);
        np.var_num = (var * 1e4).ceil() as u128;
        np.var_den = 10_000;
        np.count_var_num =
            ((partitions as f64 * (linf as f64).powi(2) / (2.0 * rho)) * 1e4).ceil() as u128;
        value_scale_scaled = var.sqrt();
        np.half_width = noise::gaussian_half_width(value_scale_scaled, 0.95);
    } else {
        np.val_t = partitions * per_partition * 1_000_000;
        np.val_s = micro(eps_each);
        np.count_t = partitions * linf * 1_000_000;
        np.count_s = micro(eps_each);
        value_scale_scaled = np.val_t as f64 / np.val_s as f64;
        np.half_width = noise::laplace_half_width(value_scale_scaled, 0.95);
    }

    let budget = coll.budget;
    let period_start = now - now.rem_euclid(budget.period);
    let spent = store.spent(principal, &coll.name, period_start)?;
    let query_key = hex::encode(Sha256::digest(
        format!("v1\0{}\0{}\0{}\0{}", m.name, by.join(","), from_ts, to_ts).as_bytes(),
    ));
    let delta = if gaussian { 2.0 * m.delta } else { m.delta };
    Ok(Plan {
        metric: m.name.clone(),
        collection: coll.name.clone(),
        metric_kind: m.kind,
        kind: match m.kind {
            MetricKind::Count => "count",
            MetricKind::Sum => "sum",
            MetricKind::Mean => "mean",
            MetricKind::Distinct => "distinct",
            MetricKind::Histogram => "histogram",
        },
        by,
        by_positions,
        from: date(from_ts),
        to: date(to_ts),
        from_ts,
        to_ts,
        window_labels: windows
            .iter()
            .map(|&w| window::label(m.window, w))
            .collect(),
        windows,
        epsilon,
        epsilon_selection: eps_sel,
        epsilon_value: eps_val,
        delta,
        mechanism: m.mechanism.as_str(),
        min_group_size: m.min_group_size,
        selection_scale: b_sel,
        selection_threshold: threshold,
        value_scale: value_scale_scaled / unit as f64,
        interval_half_width: np.half_width as f64 / unit as f64,
        budget: budget.epsilon,
        budget_spent: spent,
        budget_left_after: budget.epsilon - spent - epsilon,
        budget_renews: chrono::DateTime::from_timestamp(period_start + budget.period, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default(),
        period_start,
        query_key,
        noise: np,
    })
}
