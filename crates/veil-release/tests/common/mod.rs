//! Shared helpers of the release tests: a policy with a team map written to a temp dir,
//! a store whose sealed windows are written directly (feature `test-access`) after
//! bounding each contributor with `veil_store::seal::aggregate` exactly as `veil seal`
//! does, and small date and document helpers.

#![allow(dead_code)] // each test binary uses a different part

use chrono::NaiveDate;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;
use veil_pipeline::window;
use veil_policy::{MetricKind, Policy};
use veil_release::{ReleaseDoc, ReleaseGroup};
use veil_store::seal::{aggregate, groupings, Bounds, ContribRow};
use veil_store::{AggRow, SqliteStore};

pub const DAY: i64 = 86_400;
pub const WEEK: i64 = 7 * DAY;
pub const COLLECTION: &str = "ci.build_finished";

/// Teams of the simulated organization and their rosters: one under k = 5, three over.
pub const TEAMS: [(&str, u32); 4] = [("tiny", 3), ("small", 8), ("mid", 10), ("big", 15)];

/// `teams.yaml` for [`TEAMS`]: members by name, except `big`, listed by pattern with a size.
pub fn teams_yaml() -> String {
    let mut s = String::from("teams:\n");
    for (team, n) in TEAMS {
        s.push_str(&format!("  {team}:\n"));
        if team == "big" {
            s.push_str(&format!(
                "    members: [\"*@big.example.com\"]\n    size: {n}\n"
            ));
        } else {
            s.push_str("    members:\n");
            for i in 0..n {
                s.push_str(&format!("      - person{i}@{team}.example.com\n"));
            }
        }
    }
    s
}

/// A policy for the simulated organization: `builds` (count by team, declared keys from
/// the team map, l0 = 1, l∞ = 10, ε = 1 per window) and `builds_by_branch` (count by a
/// free-form branch name), k = 5, δ = 1e-7, the given budget per period and mechanism.
pub fn policy_text(budget: f64, period_days: u32, mechanism: &str) -> String {
    format!(
        r#"version: 1
organization: Sim Corp
team_map: teams.yaml
defaults:
  min_group_size: 5
  aggregate_retention: 400d
  delta: 1.0e-7
  budget: {{ epsilon: {budget}, period: {period_days}d }}
collections:
  - name: ci.build_finished
    purpose: {{ what: CI build outcomes, question: where is the pipeline slow, audience: team leads }}
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-1
    owner: platform
    zone: operational
    fields:
      developer: {{ type: string, class: direct_identifier, transform: pseudonymize }}
      team:      {{ type: string, class: quasi_identifier, values_from: team_map }}
      branch:    {{ type: string, class: attribute, max_length: 64 }}
    metrics:
      - name: builds
        kind: count
        by: [team]
        window: week
        contributor: developer
        epsilon: 1.0
        mechanism: {mechanism}
        max_groups_per_contributor: 1
        max_contributions_per_group: 10
        explain: {{ measures: Builds per team and week., does_not_mean: Not productivity., misread_when: Monorepos build more. }}
      - name: builds_by_branch
        kind: count
        by: [branch]
        window: week
        contributor: developer
        epsilon: 1.0
        max_groups_per_contributor: 1
        max_contributions_per_group: 10
        explain: {{ measures: Builds per branch and week., does_not_mean: Not productivity., misread_when: Branch names change. }}
"#
    )
}

/// Writes `policy.yaml` and `teams.yaml` into `dir` and loads them as `veil` does.
pub fn load_policy(dir: &Path, text: &str) -> Policy {
    std::fs::write(dir.join("teams.yaml"), teams_yaml()).unwrap();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    veil_policy::load(&path)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0
}

/// The example policy and team map, as shipped.
pub fn example_policy() -> Policy {
    veil_policy::load_with_team_map(
        include_str!("../../../../examples/policy.yaml"),
        "policy.yaml",
        chrono::Utc::now().date_naive(),
        Some(include_str!("../../../../examples/teams.yaml")),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
    .0
}

/// A temp dir holding the simulated policy and a fresh store in `data/`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: SqliteStore,
    pub policy: Policy,
}

impl Env {
    pub fn new(budget: f64, period_days: u32, mechanism: &str, now: i64) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let policy = load_policy(dir.path(), &policy_text(budget, period_days, mechanism));
        let store = SqliteStore::init(
            &dir.path().join("data"),
            &dir.path().join("vault"),
            now,
            "test",
        )
        .unwrap();
        Env { dir, store, policy }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// The store's key vault, beside (never inside) its data directory.
    pub fn vault_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("vault")
    }

    /// Seals one window of `metric` from per-contributor rows, as `veil seal` would.
    pub fn seal(
        &self,
        metric: &str,
        window_start: i64,
        rows: &[ContribRow],
        rng: &mut ChaCha20Rng,
    ) {
        store_sealed(&self.store, &self.policy, metric, window_start, rows, rng);
    }
}

/// Midnight UTC of a date.
pub fn ts(y: i32, m: u32, d: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

pub fn date(t: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(t, 0).unwrap().date_naive()
}

/// A contributor id (what the door derives from a pseudonym): unique per (team, index).
pub fn person(team: usize, i: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = team as u8 + 1;
    id[1..5].copy_from_slice(&i.to_be_bytes());
    id
}

/// One person's rows of one window in one group: `n` rows adding up to `total`.
pub fn row(group: &str, id: [u8; 16], n: i64, total: i64) -> ContribRow {
    ContribRow {
        group: group.into(),
        contributor: id,
        bin: -1,
        n,
        total,
    }
}

/// The metric's declared bounds (l0, l∞, bins).
pub fn bounds(policy: &Policy, metric: &str) -> Bounds {
    let (_, m) = policy.metric(metric).unwrap();
    Bounds {
        l0: m.max_groups_per_contributor,
        linf: m.max_contributions_per_group,
        nbins: if m.kind == MetricKind::Histogram {
            m.bins.len() - 1
        } else {
            0
        },
    }
}

/// Sealed rows of one window for every grouping of `metric` (every subset of its `by`,
/// as `veil seal` writes them), bounded with `b`.
pub fn sealed_rows(
    policy: &Policy,
    metric: &str,
    window_start: i64,
    rows: &[ContribRow],
    b: Bounds,
    rng: &mut ChaCha20Rng,
) -> Vec<AggRow> {
    let (coll, m) = policy.metric(metric).unwrap();
    let dims: Vec<&str> = m.by.iter().map(|&i| coll.fields[i].name()).collect();
    let mut out = Vec::new();
    for keep in groupings(dims.len()) {
        let grouping = keep.iter().map(|&i| dims[i]).collect::<Vec<_>>().join(",");
        for g in aggregate(rows, &keep, b, rng) {
            out.push(AggRow {
                metric: m.name.clone(),
                grouping: grouping.clone(),
                window_start,
                group: g.group,
                contributors: g.contributors,
                count: g.count,
                sum: g.sum,
                bins: g.bins,
            });
        }
    }
    out
}

/// Writes one sealed window into the store's tables (aggregates and seal state) with the
/// metric's declared bounds; returns the rows written.
pub fn store_sealed(
    store: &SqliteStore,
    policy: &Policy,
    metric: &str,
    window_start: i64,
    rows: &[ContribRow],
    rng: &mut ChaCha20Rng,
) -> Vec<AggRow> {
    let (_, m) = policy.metric(metric).unwrap();
    let agg = sealed_rows(
        policy,
        metric,
        window_start,
        rows,
        bounds(policy, metric),
        rng,
    );
    let conn = store.connection();
    for a in &agg {
        conn.execute(
            "INSERT INTO aggregates (metric, grouping, window_start, grp, contributors, n, total, bins, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
            rusqlite::params![
                a.metric,
                a.grouping,
                a.window_start,
                a.group,
                a.contributors,
                a.count,
                a.sum,
                serde_json::to_string(&a.bins).unwrap()
            ],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO seal_state (metric, sealed_before) VALUES (?1, ?2) ON CONFLICT (metric) DO UPDATE SET sealed_before = MAX(sealed_before, excluded.sealed_before)",
        rusqlite::params![m.name, window::end(m.window, window_start)],
    )
    .unwrap();
    agg
}

/// Only the rows of one grouping (what the release step reads for it).
pub fn of_grouping(rows: &[AggRow], grouping: &str) -> Vec<AggRow> {
    rows.iter()
        .filter(|r| r.grouping == grouping)
        .cloned()
        .collect()
}

/// The first budget period (counted as the policy counts them) after the one holding
/// `after` that holds `weeks` whole weeks; returns (period start, first Monday inside it).
pub fn period_with_weeks(after: i64, period_days: i64, weeks: i64) -> (i64, i64) {
    let period = period_days * DAY;
    let mut p = period_of(after, period_days) + period;
    loop {
        let monday = window::start(veil_policy::Window::Week, p + 6 * DAY);
        if monday >= p && monday + weeks * WEEK <= p + period {
            return (p, monday);
        }
        p += period;
    }
}

/// The period start holding `t`, as the policy's budget counts periods.
pub fn period_of(t: i64, period_days: i64) -> i64 {
    veil_policy::Budget {
        epsilon: 0.0,
        period: period_days * DAY,
    }
    .period_start(t)
}

/// The group of `doc` with key `dim = value` in window `label`.
pub fn group<'a>(doc: &'a ReleaseDoc, dim: &str, value: &str, label: &str) -> &'a ReleaseGroup {
    doc.groups
        .iter()
        .find(|g| g.window == label && g.key.get(dim).map(String::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no group {dim}={value} in {label}"))
}

pub fn f(n: &Option<serde_json::Number>) -> Option<f64> {
    n.as_ref().and_then(|x| x.as_f64())
}

/// Every person of every team active in one week with 1–20 builds (l∞ = 10 caps some).
pub fn org_week(rng: &mut ChaCha20Rng) -> Vec<ContribRow> {
    let mut rows = Vec::new();
    for (t, (team, roster)) in TEAMS.iter().enumerate() {
        for i in 0..*roster {
            rows.push(row(team, person(t, i), rng.gen_range(1..=20), 0));
        }
    }
    rows
}

/// The `builds` query by team over `[from, to)`.
pub fn by_team(from: i64, to: i64) -> veil_release::Query {
    veil_release::Query {
        metric: "builds".into(),
        by: Some(vec!["team".into()]),
        from: Some(date(from)),
        to: Some(date(to)),
    }
}

/// The label of a weekly window.
pub fn week_label(w: i64) -> String {
    window::label(veil_policy::Window::Week, w)
}
