//! A small harness: a temporary Veil directory and the real `veil` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Veil {
    pub dir: tempfile::TempDir,
    /// Everything every command printed, for leak checks.
    pub printed: std::cell::RefCell<Vec<u8>>,
    /// What `veil init` printed (it holds the example principals' tokens).
    pub init_out: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Veil {
    /// `veil init` in a fresh temporary directory.
    pub fn init() -> Veil {
        tls_provider();
        let mut v = Veil {
            dir: tempfile::tempdir().unwrap(),
            printed: Default::default(),
            init_out: String::new(),
        };
        let r = v.run(&["init", v.dir.path().to_str().unwrap()]);
        assert_eq!(r.code, 0, "init failed: {}", r.stderr);
        v.init_out = r.stdout;
        v
    }

    /// The token `veil init` printed for an example principal.
    pub fn token(&self, principal: &str) -> String {
        self.init_out
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(principal)).then(|| w.next().unwrap_or("").to_owned())
            })
            .filter(|t| t.starts_with("veil_"))
            .unwrap_or_else(|| panic!("no token for {principal} in init output"))
    }

    /// Appends TOML to veil.toml (e.g. a `[limits]` table).
    pub fn append_config(&self, toml: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path().join("veil.toml"))
            .unwrap();
        writeln!(f, "\n{toml}").unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// The key vault `veil init` made beside the data directory.
    pub fn vault_dir(&self) -> PathBuf {
        self.path().join("vault")
    }

    /// The store, opened directly as the binary opens it.
    pub fn store(&self) -> veil_store::SqliteStore {
        veil_store::SqliteStore::open(&self.data_dir(), &self.vault_dir()).unwrap()
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
        self.run_env(args, stdin, &[])
    }

    /// Runs `veil ARGS` with extra environment variables (e.g. `VEIL_TOKEN`).
    pub fn run_env(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(env!("CARGO_BIN_EXE_veil"));
        c.args(args)
            .env("VEIL_CONFIG", self.path().join("veil.toml"))
            .env("USER", "tester");
        for (k, v) in env {
            c.env(k, v);
        }
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

/// A running `veil serve` on ephemeral ports, killed when dropped.
pub struct Gateway {
    pub child: std::process::Child,
    pub base: String,
    pub otlp: String,
    /// The OTLP/gRPC endpoint (`http://127.0.0.1:PORT`).
    pub grpc: String,
    /// Everything the server wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Gateway {
    /// Starts `veil serve` for `v` and waits until it listens.
    pub fn start(v: &Veil) -> Gateway {
        tls_provider();
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
            .arg("serve")
            .env("VEIL_CONFIG", v.path().join("veil.toml"))
            .env("VEIL_LISTEN", "127.0.0.1:0")
            .env("VEIL_OTLP_LISTEN", "127.0.0.1:0")
            .env("VEIL_OTLP_GRPC_LISTEN", "127.0.0.1:0")
            .env("USER", "tester")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(stderr);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    log.lock().unwrap().extend_from_slice(line.as_bytes());
                    if let Some(rest) = line.trim().strip_prefix("veil serve: ") {
                        let _ = tx.send(rest.to_owned());
                    }
                    line.clear();
                }
            });
        }
        let first = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("veil serve did not start");
        let second = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("veil serve printed no OTLP address");
        let third = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("veil serve printed no OTLP/gRPC address");
        let grpc = third.split_whitespace().last().unwrap().to_owned();
        let base = first.trim_end_matches('/').to_owned();
        let otlp = second
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches("/v1/logs")
            .to_owned();
        Gateway {
            child,
            base,
            otlp,
            grpc,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the server (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TLS crypto provider for test HTTP clients: the binary's `collect --to` builds
/// reqwest with rustls and ring but no bundled provider (no aws-lc build), and feature
/// unification gives the tests' reqwest the same, so each test process installs ring once.
pub fn tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// `veil PATH… --help`, or `None` when that is not a command.
pub fn help(path: &[String]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// The names listed under `Commands:` in a help text, without `help`.
pub fn subcommands(text: &str) -> Vec<String> {
    text.split("Commands:\n")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| *n != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
