//! The command line explains itself: every subcommand's help has an example and describes
//! its arguments; principals are managed without a token ever being stored; `policy
//! explain` and `policy lint` say what they evaluated; `--format` is honoured or refused.

mod common;

use common::{subcommands, Veil};
use std::process::Command;

#[test]
fn every_subcommand_has_an_example_and_described_arguments() {
    let mut todo = vec![Vec::<String>::new()];
    let mut leaves = 0;
    while let Some(path) = todo.pop() {
        let text = common::help(&path).expect("help");
        let subs = subcommands(&text);
        if !path.is_empty() && subs.is_empty() {
            leaves += 1;
            assert!(
                text.contains("Example"),
                "`veil {}` has no example",
                path.join(" ")
            );
            // Each positional argument line is followed by its description.
            if let Some(args) = text.split("Arguments:\n").nth(1) {
                let lines: Vec<&str> = args.lines().take_while(|l| !l.is_empty()).collect();
                for (i, l) in lines.iter().enumerate() {
                    let t = l.trim_start();
                    if t.starts_with('<') || t.starts_with('[') {
                        let same_line = t
                            .split_once("  ")
                            .is_some_and(|(_, d)| !d.trim().is_empty());
                        let next = lines.get(i + 1).is_some_and(|n| {
                            let n = n.trim_start();
                            !n.starts_with('<') && !n.starts_with('[') && !n.is_empty()
                        });
                        assert!(
                            same_line || next,
                            "`veil {}`: argument {t} has no description",
                            path.join(" ")
                        );
                    }
                }
            }
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            todo.push(p);
        }
    }
    assert!(leaves >= 30, "{leaves} leaf commands");
}

#[test]
fn principals_are_added_rotated_and_listed_and_no_token_is_stored() {
    let v = Veil::init();
    let r = v.run(&[
        "principal",
        "add",
        "web-backend",
        "--role",
        "source",
        "--collections",
        "app.feature_used,app.error",
        "--format",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let token = doc["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("veil_") && token.len() > 40);
    let r = v.run(&["principal", "add", "dana", "--role", "analyst,viewer"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dana = r
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("veil_"))
        .unwrap()
        .to_owned();

    let cfg = std::fs::read_to_string(v.path().join("veil.toml")).unwrap();
    assert!(
        !cfg.contains(&token) && !cfg.contains(&dana),
        "a token is never written"
    );
    assert!(cfg.contains("# Veil configuration"), "comments are kept");
    // The new principals act with their tokens.
    let r = v.run_env(&["--as", "dana", "status"], None, &[("VEIL_TOKEN", &dana)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = v.run_env(
        &["--as", "dana", "principal", "list"],
        None,
        &[("VEIL_TOKEN", &dana)],
    );
    assert_eq!(
        r.code, 1,
        "only an admin or the operator manages principals"
    );

    // Rotation: the old token stops working, the new one works.
    let r = v.run(&["principal", "rotate", "dana", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let new: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let new = new["token"].as_str().unwrap();
    assert_ne!(new, dana);
    let r = v.run_env(&["--as", "dana", "status"], None, &[("VEIL_TOKEN", &dana)]);
    assert_eq!(r.code, 2, "the old token is refused: {}", r.stderr);
    let r = v.run_env(&["--as", "dana", "status"], None, &[("VEIL_TOKEN", new)]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Listing: names, roles, collections; never a token or a hash.
    let r = v.run(&["principal", "list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web-backend")
        .unwrap();
    assert_eq!(web["roles"], serde_json::json!(["source"]));
    assert_eq!(
        web["collections"],
        serde_json::json!(["app.feature_used", "app.error"])
    );
    assert!(!r.stdout.contains("token"), "{}", r.stdout);
    let r = v.run(&["principal", "list"]);
    assert!(r.stdout.contains("web-backend") && r.stdout.contains("analyst, viewer"));

    // Refusals leave veil.toml as it was.
    let before = std::fs::read_to_string(v.path().join("veil.toml")).unwrap();
    for (args, says) in [
        (
            vec!["principal", "add", "dana", "--role", "viewer"],
            "exists",
        ),
        (
            vec!["principal", "add", "x", "--role", "wizard"],
            "unknown role",
        ),
        (
            vec!["principal", "add", "x", "--role", "source"],
            "needs --collections",
        ),
        (
            vec![
                "principal",
                "add",
                "x",
                "--role",
                "source",
                "--collections",
                "nope",
            ],
            "no collection",
        ),
        (
            vec!["principal", "add", "bad name", "--role", "viewer"],
            "name",
        ),
        (vec!["principal", "rotate", "nobody"], "no principal"),
    ] {
        let r = v.run(&args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    assert_eq!(
        before,
        std::fs::read_to_string(v.path().join("veil.toml")).unwrap()
    );

    // Audited, without the token or its hash.
    let log = v.run(&["audit", "log", "--format", "json"]).stdout;
    assert!(log.contains("principal_add") && log.contains("principal_rotate"));
    // Recorded before veil.toml changed, and only for changes that were made.
    assert_eq!(log.matches("principal_add").count(), 2, "{log}");
    assert!(log.contains(r#"\"outcome\":\"applied\""#), "{log}");
    assert!(!log.contains(&token) && !log.contains(&dana) && !log.contains(new));
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(new.as_bytes()));
    assert!(!log.contains(&hash));
}

#[test]
fn explain_lists_everything_and_lint_prints_its_checklist() {
    let v = Veil::init();
    let r = v.run(&["policy", "explain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r_json = v.run(&["policy", "explain", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&r_json.stdout).unwrap();
    let mut metrics = 0;
    for c in doc["collections"].as_array().unwrap() {
        assert!(r.stdout.contains(c["collection"].as_str().unwrap()));
        for m in c["metrics"].as_array().unwrap() {
            metrics += 1;
            let name = m["name"].as_str().unwrap();
            assert!(r.stdout.contains(name), "{name}");
            // And each explains itself as JSON too.
            let one = v.run(&["policy", "explain", name, "--format", "json"]);
            assert_eq!(one.code, 0, "{name}: {}", one.stderr);
            let one: serde_json::Value = serde_json::from_str(&one.stdout).unwrap();
            assert_eq!(one["metric"], name);
            assert!(one["noise"]["epsilon_per_window"].as_f64().unwrap() > 0.0);
            assert!(!one["groupings"].as_array().unwrap().is_empty());
        }
    }
    assert!(metrics >= 15, "{metrics}");

    // Lint: the checklist, each rule with its state, and every finding's rule is on it.
    let bad = std::fs::read_to_string(v.path().join("policy.yaml"))
        .unwrap()
        .replacen(
            "      question: where is our delivery pipeline slow or flaky\n",
            "",
            1,
        );
    let file = v.path().join("bad.yaml");
    std::fs::write(&file, &bad).unwrap();
    let r = v.run(&["policy", "lint", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    for rule in ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "R ", "otel"] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(rule)),
            "{rule} missing from\n{}",
            r.stdout
        );
    }
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("Q1") && l.contains("fail")),
        "{}",
        r.stdout
    );
    let r = v.run(&["policy", "lint", file.to_str().unwrap(), "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rules: Vec<&str> = doc["checklist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rule"].as_str().unwrap())
        .collect();
    for f in doc["findings"].as_array().unwrap() {
        assert!(rules.contains(&f["rule"].as_str().unwrap()), "{f}");
    }
    let q1 = doc["checklist"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule"] == "Q1")
        .unwrap();
    assert_eq!(q1["status"], "fail");
}

#[test]
fn format_is_honoured_or_refused() {
    let v = Veil::init();
    for args in [
        vec!["keys", "list"],
        vec!["audit", "verify"],
        vec!["seal"],
        vec!["status"],
        vec!["grant", "list"],
        vec!["principal", "list"],
        vec!["purge", "--dry-run"],
        vec!["policy", "lint"],
        vec!["policy", "explain"],
    ] {
        let mut json = args.clone();
        json.extend(["--format", "json"]);
        let r = v.run(&json);
        assert_eq!(r.code, 0, "{json:?}: {}", r.stderr);
        assert!(
            serde_json::from_str::<serde_json::Value>(&r.stdout).is_ok(),
            "{json:?} printed no JSON: {}",
            r.stdout
        );
        let mut yaml = args.clone();
        yaml.extend(["--format", "yaml"]);
        let r = v.run(&yaml);
        assert_eq!(r.code, 2, "{yaml:?}");
        // Refused as a value of --format (the option exists), not as an unknown flag.
        assert!(
            r.stderr.contains("invalid value 'yaml' for '--format"),
            "{yaml:?}: {}",
            r.stderr
        );
    }
    let r = v.run(&["ingest", "-", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let o: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(o["accepted"], 0);
    for args in [
        vec!["status", "--format", "csv"],
        vec!["keys", "list", "--format", "csv"],
        vec!["audit", "log", "--format", "csv"],
        vec!["seal", "--format", "csv"],
    ] {
        let r = v.run(&args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains("not csv"), "{args:?}: {}", r.stderr);
    }
}

/// A server's own veil.toml: `veil init DIR` creates the store and vault it names, once, and
/// writes nothing else; a second run refuses and changes nothing.
#[test]
fn init_over_an_existing_config_creates_its_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for f in ["policy.yaml", "teams.yaml"] {
        std::fs::copy(root.join("examples").join(f), etc.join(f)).unwrap();
    }
    let cfg = "data_dir = \"../data\"\nvault = \"../vault\"\npolicy = \"policy.yaml\"\n";
    std::fs::write(etc.join("veil.toml"), cfg).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(args)
            .env_remove("VEIL_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&["init", etc.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data").is_dir() && dir.path().join("vault/keys.json").is_file());
    assert_eq!(std::fs::read_to_string(etc.join("veil.toml")).unwrap(), cfg);
    let out = run(&["init", etc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is initialized"));
    let cfg_path = etc.join("veil.toml");
    let out = run(&["--config", cfg_path.to_str().unwrap(), "audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Edits of veil.toml are serialized and safe: parallel adds all land, a symlinked
/// veil.toml keeps its link and its target changes, the file keeps its mode.
#[test]
fn principal_edits_are_serialized_and_keep_links_and_modes() {
    use std::os::unix::fs::PermissionsExt;
    let v = Veil::init();
    // veil.toml as a link to a file elsewhere, readable by its group only.
    let real = v.path().join("etc-veil.toml");
    std::fs::rename(v.path().join("veil.toml"), &real).unwrap();
    std::os::unix::fs::symlink(&real, v.path().join("veil.toml")).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    // All eight started before any is waited for: they run at once.
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_veil"))
                .args([
                    "principal",
                    "add",
                    &format!("p{i}"),
                    "--role",
                    "viewer",
                    "--format",
                    "json",
                ])
                .env("VEIL_CONFIG", v.path().join("veil.toml"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let children: Vec<_> = children.into_iter().map(|c| c.wait_with_output()).collect();
    let mut tokens = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.unwrap();
        assert!(
            out.status.success(),
            "p{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        tokens.push(doc["token"].as_str().unwrap().to_owned());
    }
    assert!(std::fs::symlink_metadata(v.path().join("veil.toml"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
        0o640
    );
    for (i, t) in tokens.iter().enumerate() {
        let r = v.run_env(
            &["--as", &format!("p{i}"), "status"],
            None,
            &[("VEIL_TOKEN", t)],
        );
        assert_eq!(r.code, 0, "p{i}: {}", r.stderr);
    }
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(v.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".new"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `veil status | head -1` and `veil policy explain | head -1`: a reader that stops early
/// ends the command the way it ends `ls` (SIGPIPE), never with a panic on stderr.
#[test]
fn a_closed_stdout_ends_a_report_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let v = Veil::init();
    for args in [&["status"][..], &["policy", "explain"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        // The reader is gone before the first line is written: every write is a broken pipe.
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(args)
            .env("VEIL_CONFIG", v.path().join("veil.toml"))
            .env("USER", "tester")
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "veil {args:?}: {stderr}"
        );
        assert_eq!(
            out.status.signal(),
            Some(13),
            "veil {args:?} should end by SIGPIPE: {:?}",
            out.status
        );
    }
}
