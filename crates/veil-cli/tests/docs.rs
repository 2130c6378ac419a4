//! The user documentation is true: every `veil` command and flag it names exists, every
//! configuration key and reason code is documented and the complete example configuration
//! loads, and the "use your own data" walkthrough runs as written in a fresh directory.

mod common;

use common::{help, subcommands, Veil};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every page under docs/, the README, and the deployment files.
fn pages() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    for f in ["README.md", "deploy/veil.service", "Dockerfile"] {
        out.push((f.to_owned(), read(f)));
    }
    assert!(out.len() >= 14, "{} pages", out.len());
    out
}

/// The code of a Markdown page: fenced blocks and inline spans (a non-Markdown file is
/// all code).
fn code_of(name: &str, text: &str) -> Vec<String> {
    if !name.ends_with(".md") {
        return text.lines().map(str::to_owned).collect();
    }
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_owned());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    out
}

/// The `veil …` invocations in a line of code: the words after each `veil ` that starts a
/// command (at the line's start, after a space, `/`, `(` or `$`).
fn invocations(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(i) = line[from..].find("veil ") {
        let at = from + i;
        from = at + 5;
        let before = at.checked_sub(1).map(|j| b[j]);
        if before.is_some_and(|c| !matches!(c, b' ' | b'/' | b'(' | b'$' | b'\t')) {
            continue;
        }
        let words: Vec<String> = line[at + 5..]
            .split_whitespace()
            .take_while(|w| !matches!(*w, "|" | ">" | ">>" | "&" | "&&" | ";" | "#" | "2>"))
            .map(|w| {
                w.trim_matches(|c| c == '`' || c == ')' || c == ';')
                    .split("\\|")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        out.push(words);
    }
    out
}

#[test]
fn every_command_and_flag_the_docs_name_exists() {
    let mut helps: HashMap<Vec<String>, Option<String>> = HashMap::new();
    let mut help_of = |p: &[String]| helps.entry(p.to_vec()).or_insert_with(|| help(p)).clone();
    let mut checked = 0;
    for (page, text) in pages() {
        for line in code_of(&page, &text) {
            for mut words in invocations(&line) {
                if words.first().is_some_and(|w| w == "veil") {
                    words.remove(0); // `sudo -u veil veil init`: the first is a user
                }
                // Global options first.
                let mut i = 0;
                while i < words.len() && (words[i] == "--config" || words[i] == "--as") {
                    i += 2;
                }
                let Some(first) = words.get(i) else { continue };
                if first.starts_with('-')
                    || !first.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                {
                    continue; // not an invocation (`useradd … veil -g veil`, prose)
                }
                let mut path: Vec<String> = Vec::new();
                loop {
                    let h = help_of(&path).expect("help");
                    let subs = subcommands(&h);
                    match words.get(i) {
                        Some(w) if subs.contains(w) => {
                            path.push(w.clone());
                            i += 1;
                        }
                        Some(w) if path.is_empty() || !subs.is_empty() => {
                            panic!(
                                "{page}: `veil {}`: {w} is not a command here ({line})",
                                path.join(" ")
                            )
                        }
                        _ => break,
                    }
                }
                let h = help_of(&path).expect("help");
                for w in &words[i..] {
                    if let Some(flag) = w.strip_prefix("--") {
                        let flag = flag.split('=').next().unwrap();
                        assert!(
                            h.contains(&format!("--{flag}")),
                            "{page}: `veil {}` has no --{flag} ({line})",
                            path.join(" ")
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "only {checked} invocations found");
}

/// The string literals of a `const NAME: &[&str] = &[…];` in a source file.
fn const_list(src: &str, name: &str) -> Vec<String> {
    let start = src
        .find(&format!("const {name}: &[&str] = &["))
        .unwrap_or_else(|| panic!("const {name}"));
    let body = &src[start..];
    let body = &body[..body.find("];").unwrap()];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_config_key_is_documented_and_the_complete_example_loads() {
    let doc = read("docs/config.md");
    let src = read("crates/veil-cli/src/config.rs");
    let mut keys = 0;
    for list in ["TOP", "PRINCIPAL", "LIMITS", "TLS", "AUDIT", "DASHBOARD"] {
        for k in const_list(&src, list) {
            assert!(
                doc.contains(&format!("`{k}`")),
                "docs/config.md does not document {k}"
            );
            keys += 1;
        }
    }
    assert!(keys >= 30, "{keys}");
    // Every VEIL_* variable the CLI reads is documented.
    let src_all = src.clone() + &read("crates/veil-cli/src/commands.rs");
    let code_vars: BTreeSet<String> = src_all
        .split('"')
        .filter(|s| s.starts_with("VEIL_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect();
    for v in &code_vars {
        assert!(doc.contains(v), "docs/config.md does not mention {v}");
    }
    // The complete file, every key set, loads as a configuration.
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    for list in ["TOP", "PRINCIPAL", "LIMITS", "TLS", "AUDIT", "DASHBOARD"] {
        for k in const_list(&src, list) {
            assert!(
                example.contains(&format!("{k} ="))
                    || example.contains(&format!("[{k}]"))
                    || example.contains(&format!("[[{k}]]")),
                "the complete example does not set {k}"
            );
        }
    }
    let v = Veil::init();
    std::fs::write(v.path().join("veil.toml"), example).unwrap();
    let r = v.run(&["principal", "list", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("web-backend") && r.stdout.contains("dana"));
}

#[test]
fn every_reason_code_and_policy_key_is_documented() {
    let envelope = read("docs/envelope.md");
    let reject = read("crates/veil-pipeline/src/reject.rs");
    let codes: Vec<&str> = reject
        .lines()
        .filter_map(|l| l.split("=> \"").nth(1))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(codes.len() >= 20, "{codes:?}");
    for c in &codes {
        assert!(
            envelope.contains(&format!("| `{c}` |")),
            "docs/envelope.md lacks reason {c}"
        );
    }
    let policy = read("docs/policy.md");
    let raw = read("crates/veil-policy/src/raw.rs");
    for line in raw.lines() {
        let Some(field) = line
            .trim()
            .strip_prefix("pub ")
            .and_then(|l| l.split_once(':'))
            .map(|(f, _)| f)
        else {
            continue;
        };
        if field.contains(' ') || field.contains('(') {
            continue;
        }
        let key = if field == "ty" { "type" } else { field };
        assert!(
            policy.contains(&format!("`{key}`")) || policy.contains(&format!("{key}:")),
            "docs/policy.md does not document {key}"
        );
    }
}

#[test]
fn the_walkthrough_runs_in_a_fresh_directory() {
    let page = read("docs/walkthrough.md");
    let mut script = String::from("set -euo pipefail\n");
    let mut rest = page.as_str();
    while let Some(i) = rest.find("```sh\n") {
        let block = &rest[i + 6..];
        let end = block.find("```").unwrap();
        script.push_str(&block[..end]);
        rest = &block[end + 3..];
    }
    // Free ports for this run, so tests beside it and a local gateway do not collide.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (api, otlp) = (free(), free());
    let script = script
        .replace("127.0.0.1:8700", &format!("127.0.0.1:{api}"))
        .replace("127.0.0.1:4318", &format!("127.0.0.1:{otlp}"));
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_veil")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("VEIL_LISTEN", format!("127.0.0.1:{api}"))
        .env("VEIL_OTLP_LISTEN", format!("127.0.0.1:{otlp}"))
        .env("VEIL_OTLP_GRPC_LISTEN", "127.0.0.1:0")
        .env_remove("VEIL_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("./policy.yaml: ok (1 collections, 2 metrics"),
        "{stdout}"
    );
    // Both single events and the forty were accepted, and the curl one counted once.
    assert!(stdout.contains("\"accepted\":1,"), "{stdout}");
    assert!(stdout.contains("\"accepted\":40,"), "{stdout}");
    // The report shows eu, and says why the others are not shown.
    let eu = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("eu") && l.trim_end().ends_with("yes"))
        .unwrap_or_else(|| panic!("no released eu row:\n{stdout}"));
    let active: u32 = eu
        .split_whitespace()
        .find_map(|w| w.strip_prefix('~'))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((25..=60).contains(&active), "{eu}");
    assert!(stdout.contains("no: fewer than 5 active"), "{stdout}");
    // The Python bridge's record was stored, and its code attributes were not.
    let v = dir.path().join("shop");
    let r = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["audit", "log", "--format", "json"])
        .current_dir(&v)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&r.stdout);
    // The bridge's three code.* attributes, dropped and counted.
    assert!(log.contains(r#"dropped_attributes\":3"#), "{log}");
    for (p, bytes) in common::all_files(&v.join("data")) {
        assert!(!common::contains(&bytes, b"send.py"), "{}", p.display());
        assert!(
            !common::contains(&bytes, b"ben@example.com"),
            "{}",
            p.display()
        );
    }
}
