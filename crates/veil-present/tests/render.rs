//! Pages rendered from hostile text stay inert: a team name, a metric's explain text, a
//! contest note or a grant purpose holding markup comes out as text. Also the page budget:
//! 50 teams × two years of weekly windows stays under 300 KB in both views.

use veil_present::{Page, Releases, Viewer};
use veil_release::ReleaseDoc;

const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

fn policy(explain: &str, team: &str) -> veil_policy::Policy {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let text = std::fs::read_to_string(format!("{dir}/policy.yaml")).unwrap();
    let text = text.replace(
        "Teams with a monorepo trigger more builds per change than others.",
        &explain.replace('\\', "\\\\").replace('"', "\\\""),
    );
    let teams = std::fs::read_to_string(format!("{dir}/teams.yaml")).unwrap();
    let teams = teams.replacen("  infra:", &format!("  {team:?}:"), 1);
    veil_policy::load_with_team_map(
        &text,
        &format!("{dir}/policy.yaml"),
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        Some(&teams),
    )
    .map(|(p, _)| p)
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The policy's teams, as its team map lists them.
fn team_names(p: &veil_policy::Policy) -> Vec<String> {
    p.team_map()
        .unwrap()
        .teams()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

fn viewer() -> Viewer {
    Viewer {
        name: "v".into(),
        roles: vec!["viewer".into()],
        csrf: "t".into(),
        pages: Page::ALL.to_vec(),
    }
}

fn doc(teams: &[String], weeks: usize) -> ReleaseDoc {
    veil_present::fixture::team_release(teams, weeks, &format!(" {HOSTILE}"))
}

fn releases<'a>(p: &'a veil_policy::Policy, d: &'a ReleaseDoc, as_table: bool) -> Releases<'a> {
    Releases {
        policy: p,
        metric: "builds",
        doc: Some(d),
        pending: vec![],
        contested: [d.windows[0].clone()].into_iter().collect(),
        late: [(d.windows[1].clone(), 3)].into_iter().collect(),
        cost: None,
        notice: Some(HOSTILE.into()),
        weeks: 104,
        as_table,
        groups_page: 0,
        may_contest: true,
    }
}

/// No tag from the hostile text survives: only the template's own tags are in the page,
/// and no tag carries an event handler.
fn inert(html: &str) {
    assert!(!html.contains("<script"), "a script tag");
    assert!(!html.contains("<img"), "an img tag");
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("tags close") + open;
        // Attribute values cannot hold a raw quote (it is escaped), so what is left outside
        // quotes is the tag's own names.
        let tag: String = rest[open..close].split('"').step_by(2).collect();
        assert!(
            !tag.contains("onerror") && !tag.contains("onload"),
            "an event handler in {tag}"
        );
        rest = &rest[close + 1..];
    }
    assert!(
        html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"),
        "the text is shown, escaped"
    );
}

#[test]
fn hostile_team_names_and_metric_text_are_inert() {
    // The team map refuses a team name with markup outright...
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let teams = std::fs::read_to_string(format!("{dir}/teams.yaml")).unwrap();
    let hostile_map = teams.replacen("  infra:", &format!("  {HOSTILE:?}:"), 1);
    assert!(veil_policy::TeamMap::parse(&hostile_map, "teams.yaml").is_err());
    // ...and a group key that holds some anyway (a stored release is data) renders as text,
    // as does hostile explain text.
    let p = policy(&format!("misread {HOSTILE}"), "infra");
    let mut teams: Vec<String> = team_names(&p);
    teams.push(HOSTILE.to_owned());
    let d = doc(&teams, 12);
    for table in [false, true] {
        let html = veil_present::releases(&viewer(), &releases(&p, &d, table), true);
        inert(&html);
        assert!(
            html.contains("misread &#60;script&#62;"),
            "the explain text is shown"
        );
    }
    inert(&veil_present::about(None, &p, None));
}

#[test]
fn hostile_notes_and_purposes_are_inert() {
    let posture = serde_json::json!({
        "organization": HOSTILE,
        "open_contests": [{"metric": "builds", "window": "2026-W01", "note": HOSTILE}],
        "grants": [{"id": "g1", "scope": "ci.build_finished", "requester": HOSTILE, "state": "pending"}],
        "rejections_by_reason": {HOSTILE: 1},
    });
    inert(&veil_present::posture(&viewer(), &posture, None));
    let rows = vec![veil_present::GrantRow {
        id: "g1".into(),
        requester: "a".into(),
        scope: "ci.build_finished".into(),
        purpose: HOSTILE.into(),
        state: "pending".into(),
        approvals: String::new(),
        expiry: String::new(),
        may_approve: true,
        may_revoke: true,
    }];
    let p = policy("x", "infra");
    inert(&veil_present::grants(
        &viewer(),
        &rows,
        true,
        &p,
        Some(HOSTILE),
    ));
    let audit = vec![veil_present::AuditRow {
        seq: 1,
        at: "t".into(),
        actor: HOSTILE.into(),
        action: "a".into(),
        detail: HOSTILE.into(),
    }];
    let q = veil_present::AuditQuery {
        action: HOSTILE.into(),
        principal: HOSTILE.into(),
        since: 1,
        next: Some(2),
        actions: vec![HOSTILE.into()],
    };
    inert(&veil_present::audit(&viewer(), &audit, &q));
    inert(&veil_present::message(
        Some(&viewer()),
        HOSTILE,
        HOSTILE,
        "/",
    ));
    inert(&veil_present::signin(Some(HOSTILE), "t", true));
}

#[test]
fn a_window_that_missed_late_events_is_marked_in_both_views() {
    let p = policy("x", "infra");
    let teams: Vec<String> = vec!["data".into(), "payments".into()];
    let d = doc(&teams, 4);
    let r = releases(&p, &d, false);
    let html = veil_present::releases(&viewer(), &r, true);
    assert!(html.contains("class=\"late\""), "a marker on the chart");
    assert!(html.contains("3 late event(s) refused after this window was sealed"));
    let html = veil_present::releases(&viewer(), &releases(&p, &d, true), true);
    assert!(
        html.contains("misses 3 late event(s)"),
        "and a note in the table"
    );
}

#[test]
fn fifty_teams_over_two_years_stay_under_the_page_budget() {
    let p = policy("x", "infra");
    let teams: Vec<String> = (0..50).map(|i| format!("team-{i:02}")).collect();
    let d = doc(&teams, 104);
    for table in [false, true] {
        let html = veil_present::releases(&viewer(), &releases(&p, &d, table), true);
        assert!(html.len() < 300_000, "table={table}: {} bytes", html.len());
        // Every team is there (the table pages them), and gaps say why.
        assert_eq!(html.contains("team-49"), !table);
        assert_eq!(html.contains("groups 41–"), table, "the pager");
        assert!(html.contains("roster below 5"));
    }
}

#[test]
fn teams_are_listed_alphabetically_whatever_their_values() {
    let p = policy("x", "infra");
    let teams: Vec<String> = team_names(&p);
    let mut d = doc(&teams, 4);
    // Values that rank the teams in neither alphabetical nor reverse order, and groups
    // stored in reverse: the page must order by name itself.
    for g in &mut d.groups {
        if !g.suppressed {
            let i = teams
                .iter()
                .position(|t| Some(t) == g.key.get("team"))
                .unwrap() as i64;
            let v = (i * 37) % 11 * 10;
            g.value = Some(v.into());
            g.interval = Some([v.into(), v.into()]);
        }
    }
    d.groups.reverse();
    let html = veil_present::releases(&viewer(), &releases(&p, &d, false), true);
    let order: Vec<&str> = html
        .match_indices("<h3 id=\"g")
        .map(|(i, _)| {
            let rest = &html[i..];
            let s = rest.find('>').unwrap() + 1;
            &rest[s..s + rest[s..].find('<').unwrap()]
        })
        .collect();
    let mut sorted: Vec<&str> = order[..order.len() - 1].to_vec();
    sorted.sort();
    assert_eq!(&order[..order.len() - 1], &sorted[..]);
    assert_eq!(order.last(), Some(&"unassigned"));
}
