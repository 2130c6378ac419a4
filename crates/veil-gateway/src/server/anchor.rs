//! Anchoring the audit head outside the data directory: the gateway hands each new head
//! to a file on another volume and/or a command (syslog, a git commit, a witness service)
//! that its config names, so a consistent rewrite of the whole chain by someone who can
//! write the data directory is caught by `veil audit verify` against a kept anchor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use veil_store::Anchor;

/// Where the gateway anchors heads (`[audit]` in `veil.toml`).
#[derive(Debug, Clone)]
pub struct AnchorSink {
    /// Appended with one JSON line per anchor, synced to disk.
    pub file: Option<PathBuf>,
    /// Run with one JSON line on stdin per anchor; must finish within ten seconds.
    pub command: Option<Vec<String>>,
    /// At most one periodic anchor per this interval (plus one at start and one at a
    /// clean shutdown).
    pub every: Duration,
}

/// Why an anchor could not be handed over. Names the file or program, never data.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("cannot append the audit anchor to {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the anchor command {program} failed: {why}")]
    Command { program: String, why: String },
}

/// Hands one anchor to every configured place.
pub fn deliver(sink: &AnchorSink, a: &Anchor) -> Result<(), AnchorError> {
    let line = serde_json::to_string(a).expect("anchors serialize") + "\n";
    if let Some(path) = &sink.file {
        append(path, &line).map_err(|source| AnchorError::File {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(argv) = &sink.command {
        run(argv, &line).map_err(|why| AnchorError::Command {
            program: argv.first().cloned().unwrap_or_default(),
            why,
        })?;
    }
    Ok(())
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

fn run(argv: &[String], line: &str) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("no program named")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(line.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) if s.success() => return Ok(()),
            Some(s) => return Err(format!("exited with {s}")),
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("did not finish within 10 s".into());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Every anchor kept in a file; `Err` says why the file is unusable (names the file,
/// never its content).
pub fn read(path: &Path) -> Result<Vec<Anchor>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read anchor file {}: {e}", path.display()))?;
    Anchor::parse_all(&text).map_err(|e| format!("anchor file {}: {e}", path.display()))
}
