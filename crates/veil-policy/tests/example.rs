use veil_policy::*;

#[test]
fn example_policy_compiles_without_errors() {
    let text = include_str!("../../../examples/policy.yaml");
    let (p, findings) = load_str(
        text,
        "policy.yaml",
        chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(p.collections().len(), 4);
    assert!(p.metric("builds").is_some());
}
