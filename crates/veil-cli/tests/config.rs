//! Acceptance: veil.toml problems are reported all at once, each with its line; tokens are
//! only ever stored as hashes; VEIL_* variables override keys.

mod common;
use common::*;

#[test]
fn every_config_problem_is_reported_at_once_with_its_line() {
    let v = Veil::init();
    let cfg = v.path().join("veil.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text.contains("veil_"),
        "tokens are never written, only their SHA-256"
    );
    let broken = text.replacen("listen = ", "lisen = ", 1).replacen(
        "roles = [\"analyst\"]",
        "roles = [\"analyst\", \"overlord\"]\ncolour = \"red\"",
        1,
    );
    std::fs::write(&cfg, &broken).unwrap();
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = |needle: &str| {
        broken
            .lines()
            .position(|l| l.trim_start().starts_with(needle))
            .unwrap()
            + 1
    };
    assert!(
        r.stderr
            .contains(&format!("veil.toml:{}: unknown key lisen", line("lisen"))),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("veil.toml:{}: unknown key colour", line("colour"))),
        "{}",
        r.stderr
    );
    // Fix the key names; the unknown role is then reported (semantic checks run after the shape).
    std::fs::write(
        &cfg,
        broken
            .replacen("lisen = ", "listen = ", 1)
            .replacen("colour = \"red\"\n", "", 1),
    )
    .unwrap();
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown role overlord"), "{}", r.stderr);
}

#[test]
fn environment_overrides_single_keys() {
    let v = Veil::init();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(
        v.path().join("policy.yaml"),
        elsewhere.path().join("p.yaml"),
    )
    .unwrap();
    std::fs::copy(
        v.path().join("teams.yaml"),
        elsewhere.path().join("teams.yaml"),
    )
    .unwrap();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_veil"));
    c.args(["policy", "explain", "builds"])
        .env("VEIL_CONFIG", v.path().join("veil.toml"))
        .env("VEIL_POLICY", elsewhere.path().join("p.yaml"));
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.env("VEIL_POLICY", elsewhere.path().join("missing.yaml"));
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "the override is really used");
}

#[test]
fn gateway_sections_are_checked_like_the_rest() {
    let v = Veil::init();
    v.append_config("[limits]\nqueue_events = 100\nqueue_evnets = 5\n\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"yes\"");
    let r = v.run(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown key queue_evnets in [limits]"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("unknown key client_auth in [tls]"),
        "{}",
        r.stderr
    );
    // A TLS file that does not exist stops `veil serve` with the file's name, before listening.
    let v = Veil::init();
    v.append_config("[tls]\ncert = \"missing.pem\"\nkey = \"k.pem\"");
    let r = v.run(&["serve"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("missing.pem"), "{}", r.stderr);
}

/// No veil.toml where Veil looked: the error says where that was and what to do.
#[test]
fn a_missing_config_says_where_it_looked_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("status")
        .current_dir(dir.path())
        .env_remove("VEIL_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let looked = dir.path().join("veil.toml");
    assert!(err.contains(&looked.display().to_string()), "{err}");
    for hint in ["veil init", "--config", "VEIL_CONFIG"] {
        assert!(err.contains(hint), "{hint} missing: {err}");
    }
}
