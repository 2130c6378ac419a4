//! A small harness: a temporary Veil directory and the real `veil` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Veil {
    pub dir: tempfile::TempDir,
    /// Everything every command printed, for leak checks.
    pub printed: std::cell::RefCell<Vec<u8>>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Veil {
    /// `veil init` in a fresh temporary directory.
    pub fn init() -> Veil {
        let v = Veil {
            dir: tempfile::tempdir().unwrap(),
            printed: Default::default(),
        };
        let r = v.run(&["init", v.dir.path().to_str().unwrap()]);
        assert_eq!(r.code, 0, "init failed: {}", r.stderr);
        v
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn db(&self) -> PathBuf {
        self.data_dir().join("veil.db")
    }

    fn record(&self, o: &Output) {
        self.printed.borrow_mut().extend_from_slice(&o.stdout);
        self.printed.borrow_mut().extend_from_slice(&o.stderr);
    }

    /// Runs `veil ARGS` with this directory's config.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(args, None)
    }

    pub fn run_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut c = Command::new(env!("CARGO_BIN_EXE_veil"));
        c.args(args)
            .env("VEIL_CONFIG", self.path().join("veil.toml"))
            .env("USER", "tester");
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(data) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = s.write_all(&data);
            });
        }
        let o = child.wait_with_output().unwrap();
        self.record(&o);
        let r = Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        };
        assert!(
            !r.stderr.contains("panicked"),
            "veil panicked: {}",
            r.stderr
        );
        r
    }

    /// Writes generated events (seeded, relative to now) and returns their path.
    pub fn generate(&self, seed: u64, bad: bool) -> PathBuf {
        let out = self.path().join(format!("events-{seed}.ndjson"));
        let seed_s = seed.to_string();
        let mut args = vec![
            "generate",
            "--seed",
            &seed_s,
            "--out",
            out.to_str().unwrap(),
        ];
        if !bad {
            args.push("--no-bad");
        }
        let r = self.run(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        out
    }

    pub fn ingest(&self, file: &Path) -> Run {
        let r = self.run(&["ingest", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "ingest failed: {}", r.stderr);
        r
    }

    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db()).unwrap()
    }
}

/// Every file under `dir`, recursively, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
