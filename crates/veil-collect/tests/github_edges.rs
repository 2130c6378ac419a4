//! `veil collect github`'s reader and rules on the inputs a red-team read found: items
//! listed twice, a deployment whose history arrives later, statuses of the same second,
//! absurd dates, extra production environments, reviews of unmerged pull requests,
//! reviews after the merge, and a repository saved under another spelling of its name.

use serde_json::{json, Value};
use std::path::Path;
use veil_collect::github::{self, Derived, GithubError};

/// Writes `files` (path under DIR/acme/shop → pages) and returns DIR.
fn export(files: &[(&str, Vec<Value>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "acme/shop", files);
    dir
}

fn write(root: &Path, repo: &str, files: &[(&str, Vec<Value>)]) {
    for (path, pages) in files {
        let p = root.join(repo).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let text: String = pages.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(p, text).unwrap();
    }
}

fn derive(dir: &Path, envs: &[&str]) -> Derived {
    let envs: Vec<String> = envs.iter().map(|e| e.to_string()).collect();
    let ex = github::read_dir(dir, &envs).unwrap();
    assert_eq!(ex.len(), 1);
    github::derive(&ex[0], None)
}

fn of<'d>(d: &'d Derived, collection: &str) -> Vec<&'d github::Fact> {
    d.facts
        .iter()
        .filter(|f| f.collection == collection)
        .collect()
}

fn pull(n: u64, who: &str, merged: Option<&str>, sha: &str) -> Value {
    json!({"number": n, "user": {"login": who}, "created_at": "2026-11-03T09:00:00Z",
           "merged_at": merged, "merge_commit_sha": sha, "title": "t", "body": null})
}

fn deployment(id: u64, sha: &str, env: &str) -> Value {
    json!({"id": id, "sha": sha, "environment": env, "created_at": "2026-11-04T09:00:00Z",
           "creator": {"login": "deploy-bot"}})
}

fn status(id: u64, state: &str, at: &str) -> Value {
    json!({"id": id, "state": state, "created_at": at})
}

fn commit(sha: &str, parents: &[&str], who: &str) -> Value {
    json!({"sha": sha, "parents": parents.iter().map(|p| json!({"sha": p})).collect::<Vec<_>>(),
           "author": {"login": who}})
}

/// A deployment listed twice (a page shifted while `gh` paginated) is one deployment.
#[test]
fn an_item_listed_twice_is_read_once() {
    let dep = deployment(7, "c1", "production");
    let dir = export(&[
        (
            "pulls.json",
            vec![json!([pull(
                1,
                "alice",
                Some("2026-11-04T08:00:00Z"),
                "c1"
            )])],
        ),
        ("deployments.json", vec![json!([dep.clone()]), json!([dep])]),
        (
            "deployments/7/statuses.json",
            vec![json!([status(1, "success", "2026-11-04T10:00:00Z")])],
        ),
        ("commits.json", vec![json!([commit("c1", &[], "alice")])]),
    ]);
    let ex = github::read_dir(dir.path(), &[]).unwrap();
    assert_eq!(ex[0].repeated, 1);
    let d = github::derive(&ex[0], None);
    assert_eq!(of(&d, "dev.deployment").len(), 1);
    assert_eq!(of(&d, "dev.change").len(), 1);
}

/// A deployment whose commit the export's graph lacks is held back (it would otherwise
/// be credited to its creator's team now and to its changes' teams later: two ids); once
/// the history is saved it is sent, for the author of the change it shipped.
#[test]
fn a_deployment_without_its_history_is_held_until_the_history_arrives() {
    let files = |with_graph: bool| {
        let mut f = vec![
            (
                "pulls.json",
                vec![json!([pull(
                    1,
                    "alice",
                    Some("2026-11-04T08:00:00Z"),
                    "c1"
                )])],
            ),
            (
                "deployments.json",
                vec![json!([deployment(7, "c1", "production")])],
            ),
            (
                "deployments/7/statuses.json",
                vec![json!([status(1, "failure", "2026-11-04T10:00:00Z")])],
            ),
        ];
        if with_graph {
            f.push(("commits.json", vec![json!([commit("c1", &[], "alice")])]));
        }
        f
    };
    let before = derive(export(&files(false)).path(), &[]);
    assert_eq!(before.unknown_ancestry, 1);
    assert!(of(&before, "dev.deployment").is_empty());
    let after = derive(export(&files(true)).path(), &[]);
    assert_eq!(after.unknown_ancestry, 0);
    let deps = of(&after, "dev.deployment");
    assert_eq!(deps.len(), 1);
    assert!(
        deps[0].line.contains("\"author\":\"alice\""),
        "{}",
        deps[0].line
    );
}

/// Two final statuses in the same second: the one GitHub created last (higher id) wins,
/// whatever the file's order.
#[test]
fn statuses_of_the_same_second_are_ordered_by_id() {
    let dir = export(&[
        (
            "deployments.json",
            vec![json!([deployment(7, "c1", "production")])],
        ),
        (
            "deployments/7/statuses.json",
            vec![json!([
                status(12, "success", "2026-11-04T10:00:00Z"),
                status(11, "failure", "2026-11-04T10:00:00Z"),
            ])],
        ),
        ("commits.json", vec![json!([commit("c1", &[], "alice")])]),
    ]);
    let d = derive(dir.path(), &[]);
    let deps = of(&d, "dev.deployment");
    assert_eq!(deps.len(), 1);
    assert!(
        deps[0].line.contains("\"outcome\":\"success\""),
        "{}",
        deps[0].line
    );
}

/// A date GitHub never writes (year 9999) is a malformed item named by file and position,
/// not a fact the door would refuse on every run.
#[test]
fn an_absurd_date_is_a_malformed_item() {
    let dir = export(&[(
        "pulls.json",
        vec![json!([pull(
            1,
            "alice",
            Some("9999-12-31T23:59:59-23:59"),
            "c1"
        )])],
    )]);
    match github::read_dir(dir.path(), &[]) {
        Err(GithubError::Shape { item: 1, what, .. }) => assert_eq!(what, "pull request"),
        other => panic!("{other:?}"),
    }
}

/// `--environment` adds to `production`; `Production` is production, one failure streak.
#[test]
fn extra_environments_add_to_production_and_case_does_not_split_a_streak() {
    let dir = export(&[
        (
            "deployments.json",
            vec![json!([
                deployment(1, "c1", "Production"),
                deployment(2, "c1", "prod-eu"),
                deployment(3, "c1", "staging"),
                deployment(4, "c1", "production"),
            ])],
        ),
        (
            "deployments/1/statuses.json",
            vec![json!([status(1, "failure", "2026-11-04T10:00:00Z")])],
        ),
        (
            "deployments/2/statuses.json",
            vec![json!([status(2, "success", "2026-11-04T10:30:00Z")])],
        ),
        (
            "deployments/3/statuses.json",
            vec![json!([status(3, "success", "2026-11-04T10:40:00Z")])],
        ),
        (
            "deployments/4/statuses.json",
            vec![json!([status(4, "success", "2026-11-04T11:00:00Z")])],
        ),
        ("commits.json", vec![json!([commit("c1", &[], "alice")])]),
    ]);
    let d = derive(dir.path(), &["prod-eu"]);
    let deps = of(&d, "dev.deployment");
    assert_eq!(
        deps.len(),
        3,
        "production (twice, any case) and prod-eu; not staging"
    );
    // 1 failed at 10:00 in `production`; 4 recovers it at 11:00 (prod-eu is another streak).
    let recovered: Vec<&str> = deps
        .iter()
        .filter(|f| f.line.contains("recovery_hours"))
        .map(|f| f.line.as_str())
        .collect();
    assert_eq!(recovered.len(), 1);
    assert!(
        recovered[0].contains("\"recovery_hours\":1.0"),
        "{}",
        recovered[0]
    );
}

/// Reviews of an unmerged pull request count; a review after the merge is not the first
/// review's wait.
#[test]
fn reviews_of_unmerged_pulls_count_and_reviews_after_the_merge_do_not_wait() {
    let review = |id: u64, who: &str, at: &str| json!({"id": id, "user": {"login": who}, "state": "APPROVED", "submitted_at": at});
    let dir = export(&[
        (
            "pulls.json",
            vec![json!([
                pull(1, "alice", Some("2026-11-03T10:00:00Z"), "c1"),
                pull(2, "bob", None, ""),
            ])],
        ),
        (
            "pulls/1/reviews.json",
            vec![json!([review(1, "carol", "2026-11-03T12:00:00Z")])],
        ),
        (
            "pulls/2/reviews.json",
            vec![json!([review(2, "carol", "2026-11-03T11:00:00Z")])],
        ),
    ]);
    let d = derive(dir.path(), &[]);
    assert_eq!(of(&d, "dev.review").len(), 2);
    let pulls = of(&d, "dev.pull_request");
    assert_eq!(pulls.len(), 1);
    assert!(
        !pulls[0].line.contains("first_review_hours"),
        "{}",
        pulls[0].line
    );
}

/// `Acme/Shop` and `acme/shop` are one GitHub repository: the same facts, the same ids.
#[test]
fn a_repository_saved_under_another_case_keeps_its_ids() {
    let files = [(
        "pulls.json",
        vec![json!([pull(
            1,
            "alice",
            Some("2026-11-04T08:00:00Z"),
            "c1"
        )])],
    )];
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "acme/shop", &files);
    let b = tempfile::tempdir().unwrap();
    write(b.path(), "Acme/Shop", &files);
    let ids = |d: &Path| -> Vec<String> {
        derive(d, &[])
            .facts
            .iter()
            .map(|f| serde_json::from_str::<Value>(&f.line).unwrap()["id"].to_string())
            .collect()
    };
    assert_eq!(ids(a.path()), ids(b.path()));
}
