//! One authorization function for every interface: for each role, each action and each
//! interface that offers it, the CLI (`--as`) and the HTTP API allow and refuse exactly
//! what `veil_access::authorize` decides (issue 13 §4).

mod common;
use common::*;
use veil_access::{authorize, Action, Caller, Role};

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn token(role: Role) -> String {
    format!("veil_test_token_{}", role.as_str())
}

fn event() -> String {
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    format!("{{\"event\":\"app.feature_used\",\"time\":\"{t}\",\"attrs\":{{\"user_id\":\"a@x.example\",\"feature\":\"search\",\"region\":\"eu\",\"app_version\":\"4.1\"}}}}\n")
}

#[test]
fn cli_and_http_agree_with_the_one_authorization_function() {
    let v = Veil::init();
    for r in Role::ALL {
        v.append_config(&format!(
            "[[principal]]\nname = \"p-{}\"\nroles = [\"{}\"]\ncollections = [\"app.feature_used\"]\ntoken_sha256 = \"{}\"",
            r.as_str(),
            r.as_str(),
            hex_sha256(&token(r))
        ));
    }
    let events = v.generate(9, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    assert_eq!(
        v.run(&["report", "builds"]).code,
        0,
        "a stored release to read"
    );
    let gw = Gateway::start(&v);
    let http = reqwest::blocking::Client::new();
    let day = |d: i64| {
        (chrono::Utc::now() - chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let mut checked = 0;
    for role in Role::ALL {
        let name = format!("p-{}", role.as_str());
        let tok = token(role);
        let env = [("VEIL_TOKEN", tok.as_str())];
        for action in Action::ALL {
            let want = authorize(Caller::Principal(&[role]), action).is_ok();
            // Windows nobody released yet, so "release" always means spending: a day of
            // its own per role (daily active users), by region on the CLI and as the
            // total over HTTP (each (metric, grouping, window) is released once).
            let (fresh_from, fresh_to) = (day(2 + role as i64), day(1 + role as i64));
            let cli_args: Option<Vec<String>> = match action {
                Action::Ingest => Some(vec!["ingest".into(), "-".into()]),
                Action::ReadRelease => Some(vec!["report".into(), "builds".into()]),
                Action::Release => Some(vec![
                    "report".into(),
                    "active_users".into(),
                    "--by".into(),
                    "region".into(),
                    "--from".into(),
                    fresh_from.clone(),
                    "--to".into(),
                    fresh_to.clone(),
                ]),
                Action::PlanRelease => {
                    Some(vec!["report".into(), "builds".into(), "--dry-run".into()])
                }
                Action::ReadAudit => Some(vec!["audit".into(), "log".into()]),
                Action::ReadStatus => Some(vec!["status".into()]),
                Action::Seal => Some(vec!["seal".into()]),
                Action::RotateKeys => Some(vec!["keys".into(), "rotate".into()]),
                Action::Purge => Some(vec!["purge".into(), "--dry-run".into()]),
                Action::RequestGrant => Some(
                    [
                        "grant",
                        "request",
                        "--purpose",
                        "incident review",
                        "--scope",
                        "ci.build_finished",
                        "--duration",
                        "1d",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                Action::ListGrants => Some(vec!["grant".into(), "list".into()]),
                // Whether these succeed depends on a grant's state and the two-person
                // rule as well as the role: tests/grants.rs covers them.
                Action::ApproveGrant | Action::RevokeGrant | Action::ReadStaging => None,
                Action::SubjectRequest => Some(
                    ["subject", "export", "nobody@example.com"]
                        .map(String::from)
                        .to_vec(),
                ),
                Action::ListContests => Some(vec!["contest".into(), "--list".into()]),
                Action::ManagePrincipals => Some(vec!["principal".into(), "list".into()]),
                // Whether these succeed depends on the metric, window and note as well
                // as the role: tests/governance.rs covers them.
                Action::Contest | Action::AnswerContest => None,
            };
            if let Some(args) = cli_args {
                let mut full = vec!["--as", name.as_str()];
                full.extend(args.iter().map(String::as_str));
                let stdin = event();
                let r = v.run_env(&full, Some(stdin.as_bytes()), &env);
                assert_eq!(
                    r.code == 0,
                    want,
                    "CLI {role:?} {action:?}: exit {} {}{}",
                    r.code,
                    r.stdout,
                    r.stderr
                );
                if !want {
                    assert!(
                        r.stderr.contains("may not") || r.stderr.contains("not released"),
                        "{}",
                        r.stderr
                    );
                }
                checked += 1;
            }
            let req = match action {
                Action::Ingest => Some(
                    http.post(gw.url("/v1/events"))
                        .header("content-type", "application/x-ndjson")
                        .body(event()),
                ),
                Action::ReadRelease => Some(http.get(gw.url("/v1/reports/builds"))),
                Action::Release => Some(http.get(gw.url(&format!(
                    "/v1/reports/active_users?by=&from={fresh_from}&to={fresh_to}"
                )))),
                Action::ReadAudit => Some(http.get(gw.url("/v1/audit"))),
                Action::ReadStatus => Some(http.get(gw.url("/v1/status"))),
                Action::ListGrants => Some(http.get(gw.url("/v1/grants"))),
                Action::PlanRelease
                | Action::Seal
                | Action::RotateKeys
                | Action::Purge
                | Action::RequestGrant
                | Action::ApproveGrant
                | Action::RevokeGrant
                | Action::ReadStaging
                | Action::SubjectRequest
                | Action::Contest
                | Action::AnswerContest
                | Action::ManagePrincipals => None,
                Action::ListContests => Some(http.get(gw.url("/v1/contests"))),
            };
            if let Some(req) = req {
                let resp = req.bearer_auth(&tok).send().unwrap();
                let code = resp.status().as_u16();
                assert_eq!(
                    code == 200,
                    want,
                    "HTTP {role:?} {action:?}: {code} {}",
                    resp.text().unwrap_or_default()
                );
                if !want {
                    assert_eq!(code, 403);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 7 * 8 + 7 * 5, "{checked}");
    // Denials through either door are audited.
    let log = v.run(&["audit", "log"]).stdout;
    assert!(log.contains("denied"), "{log}");
    assert!(log.contains("\"interface\":\"cli\""), "{log}");
    assert!(
        log.contains("not_released"),
        "a viewer's refusal is audited: {log}"
    );
}

#[test]
fn the_local_principal_is_the_os_account_not_the_environment() {
    let v = Veil::init();
    let events = v.generate(9, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    let a = v.run_env(
        &["report", "builds", "--dry-run", "--format", "json"],
        None,
        &[("USER", "alice"), ("LOGNAME", "alice")],
    );
    let b = v.run_env(
        &["report", "builds"],
        None,
        &[("USER", "bob"), ("LOGNAME", "bob")],
    );
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let log = v.run(&["audit", "log"]).stdout;
    assert!(
        !log.contains("local:alice") && !log.contains("local:bob"),
        "{log}"
    );
    let me = nix_user();
    assert!(log.contains(&format!("local:{me}")), "{me}: {log}");
}

fn nix_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
