//! Acceptance: `veil policy lint` fails per rule family with the collection and field named,
//! passes the example policy, and uses exit codes 0/1/2.

mod common;
use common::*;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lint")
        .join(name)
}

#[test]
fn each_rule_family_fails_its_fixture_naming_collection_and_field() {
    let v = Veil::init();
    let manifest: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("manifest.json")).unwrap()).unwrap();
    let mut rules = std::collections::BTreeSet::new();
    for m in manifest {
        let file = fixture(m["file"].as_str().unwrap());
        let rule = m["rule"].as_str().unwrap();
        rules.insert(rule.to_owned());
        let r = v.run(&["policy", "lint", file.to_str().unwrap(), "--format", "json"]);
        assert_eq!(
            r.code,
            1,
            "{}: expected lint errors\n{}{}",
            file.display(),
            r.stdout,
            r.stderr
        );
        let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let findings = out["findings"].as_array().unwrap();
        let hit = findings
            .iter()
            .find(|f| f["rule"] == rule && f["severity"] == "error");
        let hit =
            hit.unwrap_or_else(|| panic!("{}: no {rule} error in {findings:#?}", file.display()));
        assert_eq!(hit["collection"], m["collection"], "{}", file.display());
        if let Some(field) = m["field"].as_str() {
            assert_eq!(hit["field"], field, "{}", file.display());
        }
        // The text format names them too.
        let t = v.run(&["policy", "lint", file.to_str().unwrap()]);
        assert_eq!(t.code, 1);
        assert!(
            t.stdout.contains(&format!("[{rule}]"))
                && t.stdout.contains(m["collection"].as_str().unwrap()),
            "{}",
            t.stdout
        );
    }
    assert_eq!(
        rules.into_iter().collect::<Vec<_>>(),
        ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "R"]
    );
}

#[test]
fn example_policy_passes_and_a_valid_exception_is_honoured() {
    let v = Veil::init();
    let r = v.run(&["policy", "lint"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("ok"), "{}", r.stdout);
    let r = v.run(&[
        "policy",
        "lint",
        fixture("r_valid_exception.yaml").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = v.run(&[
        "policy",
        "lint",
        fixture("ok_minimal.yaml").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn unreadable_or_unknown_keys_exit_2_with_file_line_and_column() {
    let v = Veil::init();
    let f = fixture("bad_unknown_key.yaml");
    let r = v.run(&["policy", "lint", f.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("bad_unknown_key.yaml:9:") && r.stderr.contains("retension"),
        "{}",
        r.stderr
    );
    let r = v.run(&["policy", "lint", fixture("bad_yaml.yaml").to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bad_yaml.yaml:"), "{}", r.stderr);
    let r = v.run(&["policy", "lint", "/nonexistent/policy.yaml"]);
    assert_eq!(r.code, 2);
}

#[test]
fn explain_prints_purpose_meaning_threshold_noise_and_cost() {
    let v = Veil::init();
    let r = v.run(&["policy", "explain", "builds"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("We collect CI build outcomes to answer 'where is our delivery pipeline slow or flaky', for team leads, with 14-day retention."), "{}", r.stdout);
    for needle in [
        "does not mean",
        "misread when",
        "at least 5",
        "roster is below 5",
        "10 active 100%",
        "discrete_laplace",
        "ε=2 per window",
        "δ=0",
        "budget",
    ] {
        assert!(r.stdout.contains(needle), "missing {needle}: {}", r.stdout);
    }
    assert!(r.stdout.contains("shown in a week"), "{}", r.stdout);
    // A daily metric's chances are per day.
    let daily = v.run(&["policy", "explain", "active_users"]);
    assert_eq!(daily.code, 0, "{}", daily.stderr);
    assert!(
        daily.stdout.contains("shown in a day") && !daily.stdout.contains("shown in a week"),
        "{}",
        daily.stdout
    );
}
