use veil_policy::*;

const POLICY: &str = include_str!("../../../examples/policy.yaml");
const TEAMS: &str = include_str!("../../../examples/teams.yaml");

fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
}

#[test]
fn example_policy_compiles_without_errors() {
    let (p, findings) = load_with_team_map(POLICY, "policy.yaml", today(), Some(TEAMS))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(p.collections().len(), 10);
    assert!(p.metric("builds").is_some());
    // Every delivery metric the collectors feed, by team and week, two teams per person,
    // each explained for the people it measures.
    for name in [
        "deployment_frequency",
        "lead_time_for_changes",
        "change_failure_rate",
        "failed_deployment_recovery_time",
        "deployment_rework_rate",
        "pull_request_cycle_time",
        "time_to_first_review",
        "build_success_rate",
        "commit_activity",
    ] {
        let (c, m) = p
            .metric(name)
            .unwrap_or_else(|| panic!("{name} is missing"));
        assert!(c.name.starts_with("dev."), "{name} in {}", c.name);
        assert_eq!(m.window, Window::Week, "{name}");
        assert_eq!(m.by.len(), 1, "{name}");
        assert_eq!(c.fields[m.by[0]].name(), "team", "{name}");
        assert_eq!(
            m.max_groups_per_contributor, 2,
            "{name}: a person in two teams counts in both"
        );
        assert!(
            m.explain.does_not_mean.contains("must not be used"),
            "{name}: the explain tells the people measured what it must not be used for"
        );
        if m.kind == MetricKind::Histogram {
            assert!(
                m.explain.measures.contains("median"),
                "{name}: durations are histograms with a median"
            );
        }
    }
    // The git collector's collection keeps the pseudonymized author, the team and the
    // lines added; what no metric needs is declared and dropped at the door.
    let (c, m) = p.metric("commit_activity").unwrap();
    assert_eq!(c.name, "dev.commit");
    assert_eq!(
        m.max_groups_per_contributor, 2,
        "a person in two teams counts in both"
    );
}

/// The example map: realistic teams of 6-15 people and one of 3, which is below k.
#[test]
fn example_team_map_has_real_team_sizes_and_one_below_k() {
    let (p, _) = load_with_team_map(POLICY, "policy.yaml", today(), Some(TEAMS)).unwrap();
    let m = p.team_map().expect("the example names a team map");
    let sizes: Vec<(String, u32)> = m
        .teams()
        .iter()
        .map(|t| (t.name().to_owned(), t.roster()))
        .collect();
    assert_eq!(
        sizes,
        [
            ("data", 6),
            ("infra", 3),
            ("payments", 12),
            ("search", 8),
            ("web", 15)
        ]
        .map(|(n, s)| (n.to_owned(), s))
    );
    let (c, builds) = p.metric("builds").unwrap();
    let team = &c.fields[builds.by[0]];
    assert!(team.from_team_map());
    assert_eq!(
        team.values().unwrap(),
        ["data", "infra", "payments", "search", "web", "unassigned"]
    );
    assert_eq!(p.roster(team, "infra"), Some(3));
    assert_eq!(p.roster(team, UNASSIGNED), None);
    assert_eq!(m.teams_of("someone@web.example.com"), vec!["web"]);
}

/// The team map is read relative to the policy file, and its problems name the map.
#[test]
fn team_map_is_read_beside_the_policy_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let err = load(&policy).unwrap_err().to_string();
    assert!(
        err.contains("teams.yaml") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(dir.path().join("teams.yaml"), TEAMS).unwrap();
    let (p, _) = load(&policy).unwrap();
    assert_eq!(p.team_map().unwrap().hash(), hash_text(TEAMS));
    std::fs::write(
        dir.path().join("teams.yaml"),
        "teams:\n  web:\n    members: [\"*@web.example.com\"]\n",
    )
    .unwrap();
    let err = load(&policy).unwrap_err().to_string();
    assert!(err.contains("give `size:`"), "{err}");
    // values_from without a team map, or with values, is a finding.
    let text = POLICY.replace("team_map: teams.yaml", "");
    let e = load_with_team_map(&text, "policy.yaml", today(), None).unwrap_err();
    let PolicyError::Invalid { findings, .. } = e else {
        panic!("{e:?}")
    };
    assert!(findings
        .iter()
        .any(|f| f.message.contains("values_from: team_map needs")));
}

/// A measure's unit is declared or implied by its name.
#[test]
fn measures_carry_their_unit() {
    let (p, _) = load_with_team_map(POLICY, "policy.yaml", today(), Some(TEAMS)).unwrap();
    let (c, m) = p.metric("build_duration").unwrap();
    assert_eq!(c.fields[m.field.unwrap()].unit(), Some("ms"));
    let (c, m) = p.metric("pr_cycle_time").unwrap();
    assert_eq!(c.fields[m.field.unwrap()].unit(), Some("h"));
}

/// A person the map puts in more teams than a by-team metric lets one person count in is
/// flagged at lint time (seal would bound them to fewer teams, silently).
#[test]
fn a_member_in_more_teams_than_a_metric_allows_is_a_warning() {
    let teams = format!("{TEAMS}  platform:\n    members: [alice.johnson0@example.com]\n");
    let (_, findings) = load_with_team_map(POLICY, "policy.yaml", today(), Some(&teams)).unwrap();
    let warned: Vec<&str> = findings
        .iter()
        .filter(|f| f.message.contains("belongs to 2 teams"))
        .filter_map(|f| f.metric.as_deref())
        .collect();
    // builds (l0 = 1) is warned; commit_activity (l0 = 2) is not.
    assert!(warned.contains(&"builds"), "{findings:#?}");
    assert!(!warned.contains(&"commit_activity"), "{findings:#?}");
    assert!(findings.iter().all(|f| f.severity == Severity::Warning));
}

/// `ignore_attributes` takes names and `prefix.*` patterns; a bare `*`, an empty entry or
/// another wildcard is an error, because dropping everything undeclared would hide a
/// misspelt field instead of rejecting it.
#[test]
fn ignore_attribute_patterns_are_checked() {
    let with = |list: &str| {
        POLICY.replacen(
            "  - name: ci.build_finished\n",
            &format!("  - name: ci.build_finished\n    ignore_attributes: {list}\n"),
            1,
        )
    };
    for bad in [
        "['*']",
        "['']",
        "['code.**']",
        "['a*b']",
        "['.*']",
        "['x y']",
    ] {
        let text = with(bad);
        let r = load_with_team_map(&text, "policy.yaml", today(), Some(TEAMS));
        let findings = match r {
            Ok((_, f)) => f,
            Err(PolicyError::Invalid { findings, .. }) => findings,
            Err(e) => panic!("{bad}: {e:?}"),
        };
        assert!(
            findings
                .iter()
                .any(|f| f.severity == Severity::Error && f.message.contains("ignore_attributes")),
            "{bad}: {findings:#?}"
        );
    }
    let (p, findings) = load_with_team_map(
        &with("[k8s.pod.name, 'custom.*']"),
        "policy.yaml",
        today(),
        Some(TEAMS),
    )
    .unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    let c = p.collection("ci.build_finished").unwrap();
    assert!(c.ignore.matches("k8s.pod.name"));
    assert!(c.ignore.matches("custom.anything.deep"));
    assert!(!c.ignore.matches("custom"));
    assert!(c.ignore.matches("code.function.name"), "the defaults stay");
    assert!(!p
        .collection("app.error")
        .unwrap()
        .ignore
        .matches("k8s.pod.name"));
}
