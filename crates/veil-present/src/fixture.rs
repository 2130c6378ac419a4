//! A synthetic team release, for the dashboard's benchmark and tests: what a stored
//! release of a team metric looks like, with roster and too-few-active gaps, never
//! made from data.

use veil_release::{ReleaseDoc, ReleaseGroup, Rule, Suppressed};

/// A team map of `n` teams (`team-00`, …) with public rosters of 8, as `teams.yaml` text.
pub fn team_map(n: usize) -> String {
    let mut s = String::from("teams:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  team-{i:02}:\n    members: [\"*@t{i:02}.example\"]\n    size: 8\n"
        ));
    }
    s
}

/// A release of `builds` by team over `weeks` weekly windows: every 7th team below its
/// roster floor, and a few windows with too few active people.
pub fn team_release(teams: &[String], weeks: usize, extra_threshold: &str) -> ReleaseDoc {
    let windows: Vec<String> = (0..weeks)
        .map(|w| format!("{}-W{:02}", 2025 + w / 52, w % 52 + 1))
        .collect();
    let mut groups = Vec::with_capacity(teams.len() * weeks);
    for (i, t) in teams.iter().enumerate() {
        for (j, w) in windows.iter().enumerate() {
            let roster = i % 7 == 3;
            let suppressed = roster || (i + j) % 11 == 0;
            let v = (10 + (i * 7 + j * 3) % 40) as i64;
            groups.push(ReleaseGroup {
                key: [("team".to_owned(), t.clone())].into_iter().collect(),
                window: w.clone(),
                value: (!suppressed).then(|| v.into()),
                interval: (!suppressed).then(|| [(v - 6).max(0).into(), (v + 6).into()]),
                suppressed,
                reason: suppressed.then_some(if roster {
                    Suppressed::RosterBelowK
                } else {
                    Suppressed::TooFewActive
                }),
                active: None,
                bins: None,
                quantiles: None,
            });
        }
    }
    ReleaseDoc {
        release_id: "fixture".into(),
        parts: vec![],
        metric: "builds".into(),
        kind: "count".into(),
        by: vec!["team".into()],
        from: "2025-01-01".into(),
        to: "2026-12-31".into(),
        unit: None,
        rule: Rule::DeclaredKeys,
        epsilon: 2.0,
        epsilon_per_window: 2.0,
        charged: 0.0,
        delta: 0.0,
        mechanism: "discrete_laplace".into(),
        budget_left: 10.0,
        min_group_size: 5,
        threshold: format!("a group is shown when at least 5 are active{extra_threshold}"),
        interval_level: 0.95,
        interval_half_width: 6.0,
        windows,
        not_released: vec![],
        unlisted_groups_suppressed: false,
        groups,
    }
}
