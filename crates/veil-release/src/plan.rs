//! Planning a release: the normalized query, its windows, noise scales, thresholds and
//! cost — everything `--dry-run` shows, computed without touching data or budget.

use crate::noise;
use crate::ReleaseError;
use chrono::NaiveDate;
use serde::Serialize;
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

/// Which release rule a grouping gets (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Every dimension has declared values: every key of every window is listed, no
    /// partition selection, a group is shown when its noisy active count reaches
    /// `min_group_size` (and its team roster does). δ = 0 for Laplace noise.
    DeclaredKeys,
    /// Some dimension is free-form: groups under `min_group_size` are dropped, the rest
    /// pass DP partition selection on the same noisy count that is released.
    FreeFormKeys,
}

/// One budget period a release charges: the collection's data of that period.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodCost {
    /// First day of the period (budget periods are counted from Monday 1970-01-05).
    pub period: String,
    #[serde(skip)]
    pub period_start: i64,
    #[serde(skip)]
    pub period_end: i64,
    /// ε this release charges to the period.
    pub epsilon: f64,
    /// ε already spent on the period, by every principal.
    pub spent: f64,
    /// ε left in the period after this release.
    pub left_after: f64,
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
    pub rule: Rule,
    /// Whether a dimension is a team of the team map (its roster floor applies).
    pub roster_floor: bool,
    pub from: String,
    pub to: String,
    #[serde(skip)]
    pub from_ts: i64,
    #[serde(skip)]
    pub to_ts: i64,
    /// Sealed windows in range, from the metric's first window with data on.
    #[serde(skip)]
    pub windows: Vec<i64>,
    pub window_labels: Vec<String>,
    /// Windows released before: reused, charged nothing.
    #[serde(skip)]
    pub reused: Vec<(i64, String)>,
    pub reused_windows: Vec<String>,
    /// Windows this query would release now.
    #[serde(skip)]
    pub new_windows: Vec<i64>,
    pub new_window_labels: Vec<String>,
    /// The most one person loses through one window of this metric and grouping.
    pub epsilon_per_window: f64,
    /// The most one person active in every listed window loses through them all.
    pub epsilon: f64,
    /// Of each window's ε: the noisy active count (threshold and `active`).
    pub epsilon_count: f64,
    /// Of each window's ε: the value noise (0 when the value is the active count).
    pub epsilon_value: f64,
    pub delta: f64,
    pub mechanism: &'static str,
    pub min_group_size: u32,
    /// Discrete Laplace scale of the noisy active count.
    pub count_scale: f64,
    /// Free-form keys: keep a group when (active − (k − 1)) + noise ≥ this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_threshold: Option<i64>,
    /// Scale of the value noise (Laplace b, or Gaussian σ), in the value's units.
    pub value_scale: f64,
    /// Half-width of the 95% noise interval of one value, in the value's units.
    pub interval_half_width: f64,
    /// The measure's unit, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// ε charged now (new windows × ε per window, for every budget period each touches).
    pub cost: f64,
    pub budget: f64,
    /// The periods the new windows' data belongs to, and what each has left.
    pub charges: Vec<PeriodCost>,
    /// ε left in the budget period of the newest listed window (after this release).
    pub budget_left: f64,
    #[serde(skip)]
    pub noise: NoiseParams,
}

/// Exact integer parameters for the samplers. Scales are `t/s` rationals; measures are
/// in scaled integer units (value × 10^decimals).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoiseParams {
    /// Noisy active count: discrete Laplace t/s.
    pub cnt_t: u128,
    pub cnt_s: u128,
    /// Whether the value is the active count itself (distinct, or count with l∞ = 1).
    pub value_is_count: bool,
    /// Value noise (Laplace): scale t/s.
    pub val_t: u128,
    pub val_s: u128,
    /// Value noise (Gaussian): σ² = num/den.
    pub var_num: u128,
    pub var_den: u128,
    pub gaussian: bool,
    /// Mean: the row count's Laplace scale t/s (the value noise is on the sum around the
    /// midpoint, doubled to stay integral).
    pub rows_t: u128,
    pub rows_s: u128,
    /// 10^decimals of the measure (1 for counts).
    pub unit: i64,
    /// Half-width of the 95% interval of the value in scaled integer units.
    pub half_width: i64,
    /// Mean: 97.5% half-widths of the doubled centred sum and of the row count, so the
    /// box of both covers the mean at least 95% of the time.
    pub mean_sum_hw: i64,
    pub mean_rows_hw: i64,
}

/// Most windows one release covers: more than any retention allows (730 days).
pub const MAX_WINDOWS: usize = 800;

/// Most groups one release lists (declared keys × windows), so drawing its noise stays
/// well under a second.
pub const MAX_GROUPS: usize = 100_000;

/// Partition-selection threshold for keep-if `x + Z ≥ T`, Z ~ DLap(b), when one person
/// can create a group whose statistic is at most `linf` and can touch `partitions` groups:
/// `T = linf + ⌈b·ln(1 / ((1 + e^(−1/b))·δp))⌉` with `δp = 1 − (1 − δ)^(1/partitions)`,
/// because P(Z ≥ m) = e^(−m/b) / (1 + e^(−1/b)) for the discrete Laplace.
pub fn selection_threshold(b: f64, delta: f64, partitions: u64, linf: i64) -> i64 {
    let dp = -((-delta).ln_1p() / partitions as f64).exp_m1();
    let q = noise::laplace_q(b);
    linf + (b * (1.0 / ((1.0 + q) * dp)).ln()).ceil() as i64
}

/// P(Z ≥ m) for Z ~ discrete Laplace of scale b.
fn laplace_tail(b: f64, m: i64) -> f64 {
    let q = noise::laplace_q(b);
    if m >= 1 {
        q.powi(m as i32) / (1.0 + q)
    } else {
        1.0 - q.powi((1 - m) as i32) / (1.0 + q)
    }
}

impl Plan {
    /// Probability that a group with `active` distinct contributors (all within the
    /// bounds) is shown in one window, before any roster floor.
    pub fn shown_probability(&self, active: i64) -> f64 {
        let k = self.min_group_size as i64;
        let b = self.count_scale;
        match (self.rule, self.selection_threshold) {
            (Rule::FreeFormKeys, Some(t)) => {
                if active < k {
                    0.0
                } else {
                    laplace_tail(b, t - (active - (k - 1)))
                }
            }
            _ => laplace_tail(b, k - active),
        }
    }

    /// The rule in one sentence, for headers and `policy explain`.
    pub fn threshold_sentence(&self) -> String {
        let k = self.min_group_size;
        let roster = if self.roster_floor {
            format!("; a team whose roster is below {k} is never shown")
        } else {
            String::new()
        };
        match self.rule {
            Rule::DeclaredKeys => format!(
                "a group is shown when its noisy count of active people is at least {k}{roster}"
            ),
            Rule::FreeFormKeys => format!(
                "a group is listed only with at least {k} active people and a noisy count past the selection threshold {}{roster}",
                self.selection_threshold.unwrap_or_default() + k as i64 - 1
            ),
        }
    }
}

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

/// Plans a release at `now` without spending anything.
pub fn plan(store: &dyn Store, policy: &Policy, q: &Query, now: i64) -> Result<Plan, ReleaseError> {
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
    by_positions.sort_unstable(); // equivalent orders share one release
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
    // Windows before the metric's first data are not listed (spec §6).
    let first = store.first_window(&m.name)?.unwrap_or(i64::MAX);
    let mut windows = Vec::new();
    let mut w = from_ts;
    while w < to_ts {
        if w >= first {
            windows.push(w);
        }
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
    let declared = by_positions
        .iter()
        .all(|&p| coll.fields[m.by[p]].values().is_some());
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
    let roster_floor = by_positions
        .iter()
        .any(|&p| coll.fields[m.by[p]].from_team_map());
    let rule = if declared {
        Rule::DeclaredKeys
    } else {
        Rule::FreeFormKeys
    };

    // Privacy unit: one person. Within a window a person touches at most l0 groups with
    // at most l∞ rows each (bounded at seal), so one window's release costs that person at
    // most ε. Across windows nothing bounds a person, so a release is charged ε for every
    // window it releases, to every budget period the window's data lies in.
    let epsilon = m.epsilon;
    let l0 = m.max_groups_per_contributor as u128;
    let linf = m.max_contributions_per_group as u128;
    let value_is_count =
        m.kind == MetricKind::Distinct || (m.kind == MetricKind::Count && linf == 1);
    // A mean's error is dominated by its sum's noise, so the sum gets half of ε and the
    // active count and the row count a quarter each; other kinds split ε evenly between
    // the active count and the value.
    let (eps_cnt, eps_val) = if value_is_count {
        (epsilon, 0.0)
    } else if m.kind == MetricKind::Mean {
        (epsilon / 4.0, epsilon * 0.75)
    } else {
        (epsilon / 2.0, epsilon / 2.0)
    };
    let (cnt_t, cnt_s) = (l0 * 1_000_000, micro(eps_cnt));
    let b_cnt = cnt_t as f64 / cnt_s as f64;
    let selection =
        (rule == Rule::FreeFormKeys).then(|| selection_threshold(b_cnt, m.delta, l0 as u64, 1));

    let field = m.field.map(|i| &coll.fields[i]);
    let unit = field.map(|f| 10i64.pow(f.decimals())).unwrap_or(1);
    let (fmin, fmax) = field
        .map(|f| (f.min().unwrap_or(0), f.max().unwrap_or(0)))
        .unwrap_or((0, 0));
    // L1 sensitivity of the value per group a person touches, in scaled units.
    let per_group: u128 = match m.kind {
        MetricKind::Count | MetricKind::Histogram => linf,
        MetricKind::Distinct => 1,
        MetricKind::Sum => linf * fmin.unsigned_abs().max(fmax.unsigned_abs()).max(1) as u128,
        // The doubled sum around the midpoint: each row moves it by at most max − min.
        MetricKind::Mean => linf * (fmax - fmin).unsigned_abs().max(1) as u128,
    };
    let (eps_each, eps_rows) = if m.kind == MetricKind::Mean {
        (epsilon / 2.0, epsilon / 4.0)
    } else {
        (eps_val, 0.0)
    };
    let gaussian = m.mechanism == Mechanism::DiscreteGaussian && !value_is_count;
    let mut np = NoiseParams {
        cnt_t,
        cnt_s,
        value_is_count,
        unit,
        gaussian,
        ..Default::default()
    };
    let value_scale_scaled;
    if value_is_count {
        value_scale_scaled = b_cnt;
        np.half_width = noise::laplace_half_width(b_cnt, 0.95);
    } else if gaussian {
        // zCDP: ρ from (ε, δ) via ε = ρ + 2·sqrt(ρ·ln(1/δ)); σ = Δ₂ / sqrt(2ρ), Δ₂ = sqrt(l0)·Δ∞.
        let l = (1.0 / m.delta).ln();
        let rho = ((l + eps_each).sqrt() - l.sqrt()).powi(2);
        let var = l0 as f64 * (per_group as f64).powi(2) / (2.0 * rho);
        np.var_num = (var * 1e4).ceil() as u128;
        np.var_den = 10_000;
        value_scale_scaled = var.sqrt();
        np.half_width = noise::gaussian_half_width(value_scale_scaled, 0.95);
        np.mean_sum_hw = noise::gaussian_half_width(value_scale_scaled, 0.975);
    } else {
        np.val_t = l0 * per_group * 1_000_000;
        np.val_s = micro(eps_each.max(1e-6));
        value_scale_scaled = np.val_t as f64 / np.val_s as f64;
        np.half_width = noise::laplace_half_width(value_scale_scaled, 0.95);
        np.mean_sum_hw = noise::laplace_half_width(value_scale_scaled, 0.975);
    }
    if m.kind == MetricKind::Mean {
        np.rows_t = l0 * linf * 1_000_000;
        np.rows_s = micro(eps_rows.max(1e-6));
        np.mean_rows_hw = noise::laplace_half_width(np.rows_t as f64 / np.rows_s as f64, 0.975);
    }

    // What is released already, what is new, and what the new windows cost.
    let grouping = by.join(",");
    let reused: Vec<(i64, String)> = store
        .released_windows(&m.name, &grouping, from_ts, to_ts)?
        .into_iter()
        .filter(|(w, _)| windows.contains(w))
        .collect();
    let new_windows: Vec<i64> = windows
        .iter()
        .copied()
        .filter(|w| !reused.iter().any(|(r, _)| r == w))
        .collect();
    let budget = coll.budget;
    let mut per_period: std::collections::BTreeMap<i64, u32> = Default::default();
    for &w in &new_windows {
        for p in budget.periods_of(w, window::end(m.window, w)) {
            *per_period.entry(p).or_default() += 1;
        }
    }
    let mut charges = Vec::new();
    for (&p, &n) in &per_period {
        let spent = store.spent(&coll.name, p, p + budget.period)?;
        let eps = epsilon * n as f64;
        charges.push(PeriodCost {
            period: date(p),
            period_start: p,
            period_end: p + budget.period,
            epsilon: eps,
            spent,
            left_after: budget.epsilon - spent - eps,
        });
    }
    let newest = windows.last().copied().unwrap_or(now);
    let newest_period = budget.period_start(newest);
    let budget_left = match charges.iter().find(|c| c.period_start == newest_period) {
        Some(c) => c.left_after,
        None => {
            budget.epsilon
                - store.spent(&coll.name, newest_period, newest_period + budget.period)?
        }
    };
    // δ: free-form selection spends the policy's δ once, Gaussian values once more;
    // declared keys with Laplace noise are pure ε-DP.
    let delta = m.delta * (u8::from(rule == Rule::FreeFormKeys) + u8::from(gaussian)) as f64;
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
        rule,
        roster_floor,
        from: date(from_ts),
        to: date(to_ts),
        from_ts,
        to_ts,
        window_labels: windows
            .iter()
            .map(|&w| window::label(m.window, w))
            .collect(),
        reused_windows: reused
            .iter()
            .map(|(w, _)| window::label(m.window, *w))
            .collect(),
        new_window_labels: new_windows
            .iter()
            .map(|&w| window::label(m.window, w))
            .collect(),
        epsilon_per_window: epsilon,
        epsilon: epsilon * windows.len() as f64,
        epsilon_count: eps_cnt,
        epsilon_value: eps_val,
        delta,
        mechanism: if gaussian {
            "discrete_gaussian"
        } else {
            "discrete_laplace"
        },
        min_group_size: m.min_group_size,
        count_scale: b_cnt,
        selection_threshold: selection,
        // A histogram's bins are counts, not measures: no unit scaling.
        value_scale: if m.kind == MetricKind::Histogram {
            value_scale_scaled
        } else {
            value_scale_scaled / unit as f64
        },
        interval_half_width: if m.kind == MetricKind::Histogram {
            np.half_width as f64
        } else {
            np.half_width as f64 / unit as f64
        },
        unit: field.and_then(|f| f.unit()).map(str::to_owned),
        cost: charges.iter().map(|c| c.epsilon).sum(),
        budget: budget.epsilon,
        charges,
        budget_left,
        windows,
        reused,
        new_windows,
        noise: np,
    })
}
