//! Governance through the binary: the vault apart from the data, `veil purge`, `veil keys`.
//! (What a purge deletes at which instant is tested with an injected clock at the store,
//! `crates/veil-store/tests/retention.rs`; here the commands, their output and audit.)

mod common;
use common::*;

#[test]
fn the_vault_lives_apart_and_a_missing_or_foreign_vault_is_a_clear_error() {
    let v = Veil::init();
    assert!(v.vault_dir().join("keys.json").exists());
    assert!(
        !all_files(&v.data_dir())
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains("keys")),
        "no key file in the data directory"
    );
    let r = v.run(&["status", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(doc["config"]["vault"]
        .as_str()
        .unwrap()
        .ends_with("keys.json"));
    let r = v.run(&["keys", "list"]);
    assert!(r.stdout.contains("vault: "), "{}", r.stdout);

    // A vault inside the data directory is refused at load.
    let cfg = v.path().join("veil.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("vault = \"vault\"", "vault = \"data/vault\""),
    )
    .unwrap();
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("vault must lie outside data_dir"),
        "{}",
        r.stderr
    );
    std::fs::write(&cfg, &text).unwrap();

    // A missing vault: the store does not open, and says where it looked.
    let moved = v.path().join("vault-elsewhere");
    std::fs::rename(v.vault_dir(), &moved).unwrap();
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("key vault is missing") && r.stderr.contains("restore it"),
        "{}",
        r.stderr
    );
    // VEIL_VAULT points at it.
    let r = v.run_env(&["status"], None, &[("VEIL_VAULT", "vault-elsewhere")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::rename(&moved, v.vault_dir()).unwrap();

    // Another installation's vault is refused, never used to make new keys.
    let other = Veil::init();
    let r = v.run_env(
        &["status"],
        None,
        &[("VEIL_VAULT", other.vault_dir().to_str().unwrap())],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("belongs to another data directory"),
        "{}",
        r.stderr
    );
}

#[test]
fn purge_says_what_would_go_then_what_went_and_audits_it() {
    let v = Veil::init();
    let r = v.run(&["purge", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("would purge (dry run"), "{}", r.stdout);
    assert!(
        r.stdout.contains("nothing is past its retention"),
        "{}",
        r.stdout
    );
    let log = v.run(&["audit", "log"]).stdout;
    assert!(!log.contains(" purge "), "a dry run is not a purge: {log}");

    let r = v.run(&["purge", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["epochs_shredded"], serde_json::json!([]));
    let log = v.run(&["audit", "log"]).stdout;
    assert!(
        log.contains(" purge "),
        "a purge asked for is audited: {log}"
    );

    // A retired epoch is kept until its retention ends, and the purge says why.
    assert_eq!(v.run(&["keys", "rotate"]).code, 0);
    let r = v.run(&["keys", "list"]);
    assert!(r.stdout.contains("retired"), "{}", r.stdout);
    let r = v.run(&["purge"]);
    assert!(!r.stdout.contains("shredded"), "{}", r.stdout);
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
    // The posture: epochs with their state, the last purge with its counts, the oldest
    // row per zone against its retention.
    let st: serde_json::Value =
        serde_json::from_str(&v.run(&["status", "--format", "json"]).stdout).unwrap();
    let states: Vec<&str> = st["vault"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retired", "active"]);
    assert!(st["last_purge"]["at"].is_string());
    assert!(st["last_purge"]["counts"]["staging_events"].is_object());
    assert_eq!(st["oldest"]["quarantine"]["past_retention"], false);
    assert_eq!(st["opted_out"], 0);
    assert_eq!(st["grants"], serde_json::json!([]));

    // Only an admin (or the local operator) purges.
    let r = v.run_env(
        &["--as", "analyst", "purge"],
        None,
        &[("VEIL_TOKEN", v.token("analyst").as_str())],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("may not"), "{}", r.stderr);
    let r = v.run(&["purge", "--format", "csv"]);
    assert_eq!(r.code, 2, "an unsupported format is an error: {}", r.stdout);
}

fn j(r: reqwest::blocking::Response) -> serde_json::Value {
    serde_json::from_str(&r.text().unwrap()).unwrap()
}

/// Grants over HTTP with the example principals: the same rules as the CLI (one
/// engine), the answers a client can act on (201, 409, 403, 200), and the rows.
#[test]
fn grants_over_http_open_staging_only_with_both_roles_and_only_for_the_requester() {
    let v = Veil::init();
    let events = v.generate(3, false);
    v.ingest(&events);
    let gw = Gateway::start(&v);
    let http = reqwest::blocking::Client::new();
    let as_ = |who: &str| v.token(who);
    let r = http
        .post(gw.url("/v1/grants"))
        .bearer_auth(as_("analyst"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"purpose": "incident 4711: failing builds", "scope": "ci.build_finished", "duration": "1d"})
                .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let g = j(r);
    let id = g["id"].as_str().unwrap().to_owned();
    assert_eq!(g["state"], "pending");
    let read = |who: &str| {
        http.get(gw.url(&format!("/v1/staging?grant={id}")))
            .bearer_auth(as_(who))
            .send()
            .unwrap()
    };
    assert_eq!(read("analyst").status().as_u16(), 409, "not live yet");
    let approve = |who: &str| {
        http.post(gw.url(&format!("/v1/grants/{id}/approve")))
            .bearer_auth(as_(who))
            .send()
            .unwrap()
    };
    assert_eq!(
        approve("analyst").status().as_u16(),
        403,
        "no approving role"
    );
    assert_eq!(approve("eng-lead").status().as_u16(), 200);
    let again = approve("eng-lead");
    assert_eq!(again.status().as_u16(), 403);
    let body = j(again);
    assert_eq!(body["error"]["reason"], "already_approved");
    assert_eq!(read("analyst").status().as_u16(), 409);
    let live = j(approve("privacy-officer"));
    assert_eq!(live["state"], "live");
    // Not the requester: refused even with a role that may read staging.
    assert_eq!(read("eng-lead").status().as_u16(), 403);
    let rows = j(read("analyst"));
    let rows = rows["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["attrs"].get("duration_ms").is_some()),
        "ci.build_finished rows only"
    );
    let text = serde_json::to_string(rows).unwrap();
    assert!(!text.contains('@'), "pseudonymous rows");
    // The list shows it live with its expiry; a viewer may not list or read.
    let list = j(http
        .get(gw.url("/v1/grants"))
        .bearer_auth(as_("privacy-officer"))
        .send()
        .unwrap());
    assert_eq!(list[0]["state"], "live");
    assert!(list[0]["expires_at"].is_i64());
    assert_eq!(read("viewer").status().as_u16(), 403);
    // Revoked: closed at once.
    let r = http
        .post(gw.url(&format!("/v1/grants/{id}/revoke")))
        .bearer_auth(as_("privacy-officer"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(read("analyst").status().as_u16(), 409);
    drop(gw);
    let log = v.run(&["audit", "log"]).stdout;
    for action in [
        "grant_request",
        "grant_approve",
        "grant_denied",
        "staging_read",
        "grant_revoke",
    ] {
        assert!(log.contains(action), "{action} missing from the audit log");
    }
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
}

/// Subject requests through the binary: export, opt-out (later events dropped and
/// counted as opted_out), erase; only role privacy; the identifier never printed back or
/// stored; the posture counts the opt-out.
#[test]
fn subject_requests_through_the_binary() {
    let v = Veil::init();
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ev = |id: &str, user: &str| {
        format!("{{\"event\":\"app.feature_used\",\"time\":\"{t}\",\"id\":\"{id}\",\"attrs\":{{\"user_id\":\"{user}\",\"feature\":\"search\",\"region\":\"eu\",\"app_version\":\"4.1\"}}}}\n")
    };
    let first = format!(
        "{}{}",
        ev("1", "zoe.q@corp.example"),
        ev("2", "max@corp.example")
    );
    assert!(v
        .run_in(&["ingest", "-"], Some(first.as_bytes()))
        .stdout
        .contains("accepted 2"));
    let priv_env = [("VEIL_TOKEN", v.token("privacy-officer"))];
    let env: Vec<(&str, &str)> = priv_env.iter().map(|(k, t)| (*k, t.as_str())).collect();
    let r = v.run_env(
        &[
            "--as",
            "privacy-officer",
            "subject",
            "export",
            "Zoe.Q@corp.example",
        ],
        None,
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let x: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        x["staging"]["app.feature_used"].as_array().unwrap().len(),
        1
    );
    assert!(
        !r.stdout.to_lowercase().contains("zoe"),
        "the identifier is not echoed"
    );
    let r = v.run_env(
        &[
            "--as",
            "privacy-officer",
            "subject",
            "opt-out",
            "zoe.q@corp.example",
        ],
        None,
        &env,
    );
    assert!(r.stdout.starts_with("opted out"), "{}", r.stdout);
    let later = format!(
        "{}{}",
        ev("3", "zoe.q@corp.example"),
        ev("4", "max@corp.example")
    );
    let r = v.run_in(&["ingest", "-"], Some(later.as_bytes()));
    assert!(r.stdout.contains("accepted 1"), "{}", r.stdout);
    assert!(r.stdout.contains("opted_out"), "{}", r.stdout);
    let status: serde_json::Value =
        serde_json::from_str(&v.run(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(status["opted_out"], 1);
    assert_eq!(status["rejections_by_reason"]["opted_out"], 1);
    let r = v.run_env(
        &[
            "--as",
            "privacy-officer",
            "subject",
            "erase",
            "zoe.q@corp.example",
        ],
        None,
        &env,
    );
    assert!(
        r.stdout.starts_with("erased 1 staged events"),
        "{}",
        r.stdout
    );
    // `-` reads the identifier from the first line of standard input (out of shell history
    // and the process list), normalized like an argument; an empty line is a usage error.
    let r = v.run_env(
        &["--as", "privacy-officer", "subject", "export", "-"],
        Some(b" Max@Corp.example\r\nignored second line\n"),
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let x: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        x["staging"]["app.feature_used"].as_array().unwrap().len(),
        2,
        "both of max's events, found from stdin"
    );
    for input in [&b""[..], b"\n", b"  \n"] {
        let r = v.run_env(
            &["--as", "privacy-officer", "subject", "erase", "-"],
            Some(input),
            &env,
        );
        assert_eq!(r.code, 2, "{input:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("no identifier on standard input"),
            "{}",
            r.stderr
        );
    }
    // Another role may not.
    let r = v.run_env(
        &["--as", "analyst", "subject", "export", "max@corp.example"],
        None,
        &[("VEIL_TOKEN", v.token("analyst").as_str())],
    );
    assert_eq!(r.code, 1);
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
    for (p, bytes) in all_files(&v.data_dir()) {
        assert!(
            !contains(&bytes, b"zoe"),
            "the identifier is in {}",
            p.display()
        );
    }
    assert!(
        !contains(&v.printed.borrow(), b"zoe.q@corp"),
        "nor in any output"
    );
}

/// Contests: a member's note with an email is refused; a clean one shows beside its
/// window in every later report (table, JSON, CSV) and in status, without its author; an
/// analyst answers; every step is audited and the log verifies.
#[test]
fn a_contest_shows_beside_its_window_in_every_report_and_status() {
    let v = Veil::init();
    let events = v.generate(9, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    let r = v.run(&["report", "builds", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let window = doc["groups"][0]["window"].as_str().unwrap().to_owned();
    let member = [("VEIL_TOKEN", v.token("team-member"))];
    let member: Vec<(&str, &str)> = member.iter().map(|(k, t)| (*k, t.as_str())).collect();
    let contest = |note: &str| {
        v.run_env(
            &[
                "--as",
                "team-member",
                "contest",
                "builds",
                "--window",
                &window,
                "--note",
                note,
            ],
            None,
            &member,
        )
    };
    let r = contest("ask jane.doe@example.com why");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("pii_detected"), "{}", r.stderr);
    let r = contest("the CI farm was down two days; builds were retried by hand");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.stdout.split_whitespace().next().unwrap().to_owned();
    // A viewer may not contest (members are the people measured).
    let r = v.run_env(
        &[
            "--as", "viewer", "contest", "builds", "--window", &window, "--note", "x",
        ],
        None,
        &[("VEIL_TOKEN", v.token("viewer").as_str())],
    );
    assert_eq!(r.code, 1);
    // Every later report shows it beside the window, in each format.
    let table = v.run(&["report", "builds"]).stdout;
    assert!(
        table.contains("contested windows") && table.contains("CI farm was down"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&v.run(&["report", "builds", "--format", "json"]).stdout).unwrap();
    assert_eq!(json["contests"][0]["window"], window.as_str());
    let csv = v.run(&["report", "builds", "--format", "csv"]).stdout;
    assert!(csv.lines().next().unwrap().ends_with(",contest"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&window) && l.contains("CI farm")),
        "{csv}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&v.run(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(status["open_contests"][0]["id"], id.as_str());
    // Nobody learns who filed it from a report or a list.
    assert!(!table.contains("team-member") && !csv.contains("team-member"));
    assert!(!v
        .run(&["contest", "--list", "--format", "json"])
        .stdout
        .contains("team-member"));
    // An analyst answers; the answer shows too, and the contest is no longer open.
    let r = v.run_env(
        &[
            "--as",
            "analyst",
            "contest",
            "--answer",
            &id,
            "--note",
            "thanks: the outage is now marked",
        ],
        None,
        &[("VEIL_TOKEN", v.token("analyst").as_str())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let table = v.run(&["report", "builds"]).stdout;
    assert!(
        table.contains("answered: \"thanks: the outage is now marked\""),
        "{table}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&v.run(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(status["open_contests"], serde_json::json!([]));
    let log = v.run(&["audit", "log"]).stdout;
    for a in ["contest_denied", " contest ", "contest_answer"] {
        assert!(log.contains(a), "{a} missing: {log}");
    }
    assert!(!log.contains("jane.doe"), "a refused note is not kept");
    assert_eq!(v.run(&["audit", "verify"]).code, 0);
}

/// Consent: a collection with `lawful_basis: consent` takes events only from a source
/// that attests consent for it (`consent` in its principal); others are refused as
/// consent_missing, counted, never stored. A principal may only attest what it sends.
#[test]
fn a_collection_on_consent_takes_events_only_from_a_source_that_attests_it() {
    let v = Veil::init();
    let policy = v.path().join("policy.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    // app.feature_used is the example's first collection on legitimate interest with a
    // product audience: put it on consent.
    let at = text.find("- name: app.feature_used").unwrap();
    let (head, tail) = text.split_at(at);
    let tail = tail.replacen(
        "lawful_basis: legitimate_interest",
        "lawful_basis: consent",
        1,
    );
    std::fs::write(&policy, format!("{head}{tail}")).unwrap();
    v.append_config(&format!(
        "[[principal]]\nname = \"consenting-app\"\nroles = [\"source\"]\ncollections = [\"app.feature_used\"]\nconsent = [\"app.feature_used\"]\ntoken_sha256 = \"{}\"",
        {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"veil_consenting_app_token"))
        }
    ));
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ev = format!("{{\"event\":\"app.feature_used\",\"time\":\"{t}\",\"attrs\":{{\"user_id\":\"u1@corp.example\",\"feature\":\"search\",\"region\":\"eu\",\"app_version\":\"4.1\"}}}}\n");
    let gw = Gateway::start(&v);
    let http = reqwest::blocking::Client::new();
    let send = |token: &str| {
        let r = http
            .post(gw.url("/v1/events"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(ev.clone())
            .send()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&r.text().unwrap()).unwrap()
    };
    let refused = send(&v.token("ingest"));
    assert_eq!(refused["accepted"], 0);
    assert_eq!(refused["rejected"][0]["reason"], "consent_missing");
    assert!(
        !refused.to_string().contains("u1@corp"),
        "no value in the answer"
    );
    let taken = send("veil_consenting_app_token");
    assert_eq!(taken["accepted"], 1, "{taken}");
    drop(gw);
    // The local operator's own ingest is its attestation.
    let r = v.run_in(&["ingest", "-"], Some(ev.as_bytes()));
    assert!(r.stdout.contains("accepted 1"), "{}", r.stdout);
    // Attesting a collection the principal may not send is a config error.
    v.append_config(&format!(
        "[[principal]]\nname = \"overreach\"\nroles = [\"source\"]\ncollections = [\"ci.build_finished\"]\nconsent = [\"app.feature_used\"]\ntoken_sha256 = \"{}\"",
        "0".repeat(64)
    ));
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("consent names app.feature_used, which it may not send"),
        "{}",
        r.stderr
    );
}
