//! `veil collect github` through the binary, on the GitHub export fixture of
//! `veil-collect` (tests/fixtures/github), its times moved so the newest fact is two days
//! old: what is built and skipped, that a second run counts nothing twice, and that no
//! title, body, branch, login or email reaches the data directory or any output.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../veil-collect/tests/fixtures/github")
}

/// Copies the fixture, every RFC 3339 time moved by `shift` seconds.
fn copy_shifted(from: &Path, to: &Path, shift: i64) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_shifted(&p, &dest, shift);
        } else if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read(&p).unwrap();
            let mut out = String::new();
            for page in serde_json::Deserializer::from_slice(&text).into_iter() {
                let mut v: serde_json::Value = page.unwrap();
                shift_times(&mut v, shift);
                out.push_str(&v.to_string());
                out.push('\n');
            }
            std::fs::write(dest, out).unwrap();
        }
    }
}

fn shift_times(v: &mut serde_json::Value, shift: i64) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                let moved = chrono::DateTime::from_timestamp(t.timestamp() + shift, 0).unwrap();
                *s = moved.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| shift_times(x, shift)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| shift_times(x, shift)),
        _ => {}
    }
}

/// A Veil directory with the fixture's team map, and the export moved to recent days.
fn setup() -> (Veil, PathBuf) {
    let v = Veil::init();
    std::fs::copy(
        fixture_root().join("teams.yaml"),
        v.path().join("teams.yaml"),
    )
    .unwrap();
    // The newest fact (11-12 12:00) lands two whole days before today.
    let newest = chrono::DateTime::parse_from_rfc3339("2026-11-12T12:00:00Z")
        .unwrap()
        .timestamp();
    let now = chrono::Utc::now().timestamp();
    let shift = ((now - 2 * 86_400 - newest).div_euclid(86_400)) * 86_400;
    let export = v.path().join("export");
    copy_shifted(&fixture_root(), &export, shift);
    (v, export)
}

fn staged(v: &Veil) -> i64 {
    v.sqlite()
        .query_row(
            "SELECT COALESCE(SUM(events), 0) FROM staging_segments WHERE collection LIKE 'dev.%'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn collects_each_fact_once_and_nothing_identifying_is_kept_or_printed() {
    let (v, export) = setup();
    let dir = export.to_str().unwrap();

    let dry = v.run(&["collect", "github", dir, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    // 9 pull requests (#0 is too old), 8 reviews, 10 runs, 11 deployments (100 is too
    // old), 9 changes: one per team of each person, carol counting in both of hers.
    assert!(
        dry.stdout.contains("acme/shop: 9 pull requests, 9 workflow runs, 11 production deployments read; 47 events built (9 dev.change, 10 dev.ci_run, 11 dev.deployment, 9 dev.pull_request, 8 dev.review), 3 skipped (older than the staging retention)"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("1 deployments have no final status yet"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("nothing was stored"), "{}", dry.stdout);
    assert_eq!(staged(&v), 0);

    let first = v.run(&["collect", "github", dir]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("accepted 47,"), "{}", first.stdout);
    assert_eq!(staged(&v), 47);

    // The same export again (or a newer one holding the same facts): nothing twice.
    let again = v.run(&["collect", "github", dir]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("accepted 0, duplicates 47"),
        "{}",
        again.stdout
    );
    assert_eq!(staged(&v), 47);

    // The pending deployment finishes: the next export holds its success status, and
    // only it is new (a re-deploy of #8's commit, for alice's team).
    let statuses = export.join("acme/shop/deployments/111/statuses.json");
    let text = std::fs::read_to_string(&statuses).unwrap();
    let mut pages: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut done = pages[0][0].clone();
    done["state"] = "success".into();
    pages[0].as_array_mut().unwrap().push(done);
    std::fs::write(&statuses, pages[0].to_string()).unwrap();
    let later = v.run(&["collect", "github", dir]);
    assert_eq!(later.code, 0, "{}{}", later.stdout, later.stderr);
    assert!(
        later.stdout.contains("accepted 1, duplicates 47"),
        "{}",
        later.stdout
    );

    let outputs: String = [&dry, &first, &again, &later]
        .iter()
        .map(|r| format!("{}{}", r.stdout, r.stderr))
        .collect();
    let needles = [
        "SECRET-",
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "frank",
        "release-1",
        "@",
    ];
    for n in needles {
        assert!(!outputs.contains(n), "output holds {n:?}");
    }
    for (path, bytes) in all_files(&v.data_dir()) {
        // (`@` is left out here: the database's bytes hold it by chance.)
        for n in needles.iter().filter(|n| **n != "@").chain(&["acme"]) {
            assert!(
                !contains(&bytes, n.as_bytes()),
                "{} holds {n:?}",
                path.display()
            );
        }
    }
}

/// A principal that may not send the delivery collections is refused before anything is
/// read; a malformed export names the file and the item, never a value.
#[test]
fn refuses_a_principal_without_the_collections_and_explains_a_broken_file() {
    let (v, export) = setup();
    let dir = export.to_str().unwrap();
    let token = v.token("ingest");
    let refused = v.run_env(
        &["--as", "ingest", "collect", "github", dir],
        None,
        &[("VEIL_TOKEN", &token)],
    );
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("may not send `dev.pull_request` events"),
        "{}",
        refused.stderr
    );
    assert_eq!(staged(&v), 0);

    // A review whose `state` is a number: the file and the item, not the value.
    std::fs::write(
        export.join("acme/shop/pulls/1/reviews.json"),
        r#"[{"id": 1, "user": {"login": "SECRET-LOGIN"}, "state": 12345, "submitted_at": "2026-11-03T18:00:00Z"}]"#,
    )
    .unwrap();
    let broken = v.run(&["collect", "github", dir]);
    assert_eq!(broken.code, 2, "{}{}", broken.stdout, broken.stderr);
    assert!(
        broken
            .stderr
            .contains("reviews.json: item 1 is not a review as the GitHub REST API returns it"),
        "{}",
        broken.stderr
    );
    assert!(!broken.stderr.contains("12345") && !broken.stderr.contains("SECRET"));
    assert_eq!(staged(&v), 0, "nothing half-written");
}

/// `--to URL`: the export goes to a running gateway as the `collector` source principal,
/// and a second run counts nothing twice.
#[test]
fn to_a_gateway_counts_each_fact_once() {
    let (v, export) = setup();
    let gw = Gateway::start(&v);
    let token = v.token("collector");
    let run = || {
        v.run_env(
            &[
                "collect",
                "github",
                export.to_str().unwrap(),
                "--to",
                &gw.base,
            ],
            None,
            &[("VEIL_TOKEN", &token)],
        )
    };
    // A first look needs no token and sends nothing.
    let dry = v.run(&[
        "collect",
        "github",
        export.to_str().unwrap(),
        "--to",
        &gw.base,
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(dry.stdout.contains("47 events built"), "{}", dry.stdout);
    let first = run();
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("accepted 47,"), "{}", first.stdout);
    let again = run();
    assert!(
        again.stdout.contains("accepted 0, duplicates 47"),
        "{}",
        again.stdout
    );
}

/// `--to https://…`: a gateway with its own certificate authority is trusted through
/// `VEIL_CA_FILE`, and refused without it (nothing sent).
#[test]
fn to_a_tls_gateway_trusts_its_authority_only_when_told() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let (v, export) = setup();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(v.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(v.path().join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(v.path().join("ca.pem"), ca.pem()).unwrap();
    v.append_config("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"");
    let gw = Gateway::start(&v);
    assert!(gw.base.starts_with("https://"), "{}", gw.base);
    let token = v.token("collector");
    let ca_file = v.path().join("ca.pem");
    let run = |env: &[(&str, &str)]| {
        v.run_env(
            &[
                "collect",
                "github",
                export.to_str().unwrap(),
                "--to",
                &gw.base,
            ],
            None,
            env,
        )
    };
    let untrusted = run(&[("VEIL_TOKEN", &token)]);
    assert_eq!(
        untrusted.code, 1,
        "{}{}",
        untrusted.stdout, untrusted.stderr
    );
    assert!(
        untrusted.stderr.contains("TLS certificate is not trusted"),
        "{}",
        untrusted.stderr
    );
    let trusted = run(&[
        ("VEIL_TOKEN", &token),
        ("VEIL_CA_FILE", ca_file.to_str().unwrap()),
    ]);
    assert_eq!(trusted.code, 0, "{}{}", trusted.stdout, trusted.stderr);
    assert!(
        trusted.stdout.contains("accepted 47,"),
        "{}",
        trusted.stdout
    );
}
