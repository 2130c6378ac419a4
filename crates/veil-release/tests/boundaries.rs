//! Architecture boundaries the compiler cannot hold by itself, held by a test instead
//! (in the spirit of rust-analyzer's `tidy`): exact aggregates are read only by the
//! release step, and raw store access exists only in tests.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `src/` file of every crate, as (crate name, path, text).
fn crate_sources() -> Vec<(String, PathBuf, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut out = Vec::new();
    for c in std::fs::read_dir(crates).unwrap() {
        let c = c.unwrap().path();
        let mut files = Vec::new();
        if c.join("src").is_dir() {
            sources(&c.join("src"), &mut files);
        }
        for f in files {
            let name = c.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&f).unwrap();
            out.push((name, f, text));
        }
    }
    assert!(out.len() > 30, "the walk found the workspace's sources");
    out
}

#[test]
fn only_the_release_step_reads_exact_aggregates() {
    for (krate, path, text) in crate_sources() {
        if krate == "veil-release" || krate == "veil-store" {
            continue;
        }
        for needle in ["exact_aggregates", "SealedAggregates", "FROM aggregates"] {
            assert!(
                !text.contains(needle),
                "{} names {needle}: exact aggregates leave the store only through veil-release",
                path.display()
            );
        }
    }
}

#[test]
fn raw_store_access_is_for_tests_only() {
    for (_, path, text) in crate_sources() {
        for needle in [".connection()", ".staging_payloads("] {
            if let Some(at) = text.find(needle) {
                // Allowed only inside a `#[cfg(test)]` module of the same file.
                let before = &text[..at];
                assert!(
                    before.contains("#[cfg(test)]"),
                    "{} calls {needle} outside tests",
                    path.display()
                );
            }
        }
    }
}

/// The ingest path (and every collector built on it) carries no server stack: a collector
/// run on a laptop or in CI links the door and the store, not an HTTP server.
#[test]
fn the_ingest_path_and_collectors_need_no_server_stack() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut checked = 0;
    for name in ["veil-ingest", "veil-collect"] {
        let Ok(manifest) = std::fs::read_to_string(crates.join(name).join("Cargo.toml")) else {
            continue;
        };
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or_default()
            .split("\n[")
            .next()
            .unwrap_or_default();
        for server in ["axum", "hyper", "tower", "veil-gateway", "tokio-rustls"] {
            assert!(
                !deps.lines().any(|l| l.trim_start().starts_with(server)),
                "{name} depends on {server}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "veil-ingest exists");
}
