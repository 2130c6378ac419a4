//! `veil collect git` through the binary, on a repository the test builds with git itself:
//! what is collected, that nothing identifying reaches the data directory or any output,
//! and that incremental and interrupted runs count every commit exactly once.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch repository with recent commits by people of the example team map.
struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    clock: i64,
}

impl Repo {
    fn new(name: &str) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        // Ten days ago, inside the example's 14-day staging retention.
        let clock = chrono::Utc::now().timestamp() - 10 * 86_400;
        let r = Repo {
            _tmp: tmp,
            dir,
            clock,
        };
        r.git(&["init", "-q", "-b", "main"], &[]);
        r
    }

    fn git(&self, args: &[&str], env: &[(&str, String)]) -> String {
        let mut c = Command::new("git");
        c.current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self._tmp.path())
            .env("GIT_COMMITTER_NAME", "Committer Person")
            .env("GIT_COMMITTER_EMAIL", "committer.person@example.com")
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, path: &str, content: &[u8]) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Commits everything as `name <email>`, an hour after the previous commit.
    fn commit(&mut self, name: &str, email: &str, msg: &str) {
        self.clock += 3600;
        let date = format!("{} +0000", self.clock);
        self.git(&["add", "-A"], &[]);
        self.git(
            &["commit", "-q", "-m", msg],
            &[
                ("GIT_AUTHOR_NAME", name.into()),
                ("GIT_AUTHOR_EMAIL", email.into()),
                ("GIT_AUTHOR_DATE", date.clone()),
                ("GIT_COMMITTER_DATE", date),
            ],
        );
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

/// People of the example map: two in `data`, one in `payments`, one in no team; the
/// second spelling of Alice is mapped to her by `.mailmap`.
const ALICE: (&str, &str) = ("Alice Johnson", "alice.johnson0@example.com");
const ALICE_ALIAS: (&str, &str) = ("alice j", "ajohnson.laptop@home.example.net");
const BOB: (&str, &str) = ("Bob Fernandes", "bob.fernandes1@example.com");
const JUDY: (&str, &str) = ("Judy Tanaka", "judy.tanaka9@example.com");
const STRANGER: (&str, &str) = ("Quentin Outsider", "quentin.outsider@elsewhere.example.org");
const SECRET_PATH: &str = "src/payroll_adjustments_confidential.rs";
const SECRET_MESSAGE: &str = "Fix the overtime bug Quentin reported in ticket";

fn build(repo: &mut Repo) {
    // Older than the 14-day staging retention: walked, counted as skipped, never sent.
    let recent = repo.clock;
    repo.clock -= 30 * 86_400;
    repo.write("OLD.md", b"history\n");
    repo.commit(JUDY.0, JUDY.1, "Ancient history");
    repo.clock = recent;
    repo.write(
        ".mailmap",
        format!("{} <{}> <{}>\n", ALICE.0, ALICE.1, ALICE_ALIAS.1).as_bytes(),
    );
    repo.write("README.md", b"hello\n");
    repo.commit(ALICE.0, ALICE.1, "Initial commit");
    repo.write(SECRET_PATH, b"fn a() {}\nfn b() {}\n");
    repo.commit(BOB.0, BOB.1, SECRET_MESSAGE);
    repo.write("logo.bin", &[0u8, 1, 2, 0, 255, 7]);
    repo.commit(ALICE_ALIAS.0, ALICE_ALIAS.1, "Add the logo");
    repo.write("README.md", b"hello\nworld\n");
    repo.commit(JUDY.0, JUDY.1, "Say more");
    repo.write("notes.txt", b"one\n");
    repo.commit(STRANGER.0, STRANGER.1, "Outside help");
}

fn collect(v: &Veil, repo: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["collect", "git", repo.to_str().unwrap()];
    args.extend_from_slice(extra);
    v.run(&args)
}

#[test]
fn collected_commits_carry_no_identity_and_count_once() {
    let v = Veil::init();
    let mut repo = Repo::new("quentin-outsider-tools");
    build(&mut repo);

    // The dry run walks and builds, and stores nothing.
    let dry = collect(&v, repo.path(), &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("quentin-outsider-tools: 6 commits walked, 5 events built, 1 skipped"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("nothing was stored"), "{}", dry.stdout);
    let staged = |v: &Veil| -> i64 {
        v.sqlite()
            .query_row(
                "SELECT COALESCE(SUM(events), 0) FROM staging_segments WHERE collection = 'dev.commit'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(staged(&v), 0);

    let first = collect(&v, repo.path(), &[]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("accepted 5,"), "{}", first.stdout);
    assert_eq!(staged(&v), 5);

    // Nothing new: nothing walked, nothing counted.
    let again = collect(&v, repo.path(), &[]);
    assert!(
        again
            .stdout
            .contains("quentin-outsider-tools: 0 commits walked"),
        "{}",
        again.stdout
    );
    assert_eq!(staged(&v), 5);

    // Two new commits: exactly those.
    repo.write("README.md", b"hello\nworld\nagain\n");
    repo.commit(BOB.0, BOB.1, "More");
    repo.write("notes.txt", b"one\ntwo\n");
    repo.commit(JUDY.0, JUDY.1, "Notes");
    let third = collect(&v, repo.path(), &[]);
    assert!(
        third
            .stdout
            .contains("quentin-outsider-tools: 2 commits walked"),
        "{}",
        third.stdout
    );
    assert!(third.stdout.contains("accepted 2,"), "{}", third.stdout);
    assert_eq!(staged(&v), 7);

    // An interrupted run (the cursor never moved) collects everything again: counted once.
    v.sqlite()
        .execute("DELETE FROM meta WHERE key LIKE 'cursor:%'", [])
        .unwrap();
    let rerun = collect(&v, repo.path(), &[]);
    assert!(
        rerun
            .stdout
            .contains("quentin-outsider-tools: 8 commits walked"),
        "{}",
        rerun.stdout
    );
    assert!(
        rerun.stdout.contains("accepted 0, duplicates 7"),
        "{}",
        rerun.stdout
    );
    assert_eq!(staged(&v), 7);

    // Nothing identifying anywhere: data directory (database, WAL, shm) or any output.
    let mut needles: Vec<String> = Vec::new();
    for (name, email) in [ALICE, ALICE_ALIAS, BOB, JUDY, STRANGER] {
        needles.push(name.to_owned());
        needles.push(email.to_owned());
        needles.push(email.to_lowercase());
        needles.push(email.split('@').next().unwrap().to_owned());
    }
    needles.extend(
        [
            SECRET_PATH,
            "payroll_adjustments",
            SECRET_MESSAGE,
            "overtime",
            "Committer Person",
            "logo.bin",
            "Ancient history",
            "OLD.md",
        ]
        .map(String::from),
    );
    let log = repo.git(&["log", "--format=%H"], &[]);
    needles.extend(log.lines().map(String::from));
    needles.extend(log.lines().map(|h| h[..12].to_owned()));
    let outputs = [&dry, &first, &again, &third, &rerun]
        .iter()
        .map(|r| format!("{}{}", r.stdout, r.stderr))
        .collect::<String>();
    // The repository's name is printed back to the user who gave it, never stored (the
    // example policy drops `repository`, and the cursor key is a hash).
    for (path, bytes) in all_files(&v.data_dir()) {
        assert!(
            !contains(&bytes, b"quentin-outsider-tools"),
            "{} holds the repository name",
            path.display()
        );
    }
    for n in &needles {
        assert!(!outputs.contains(n.as_str()), "output holds {n:?}");
        for (path, bytes) in all_files(&v.data_dir()) {
            assert!(
                !contains(&bytes, n.as_bytes()),
                "{} holds {n:?}",
                path.display()
            );
        }
    }
}

/// A rejected commit (here: dated in the future) keeps the cursor where it was, and a
/// filtered run never moves it: the next full run walks those commits again, and the ids
/// keep everything else counted once.
#[test]
fn rejected_or_filtered_runs_do_not_move_the_cursor() {
    let v = Veil::init();
    let mut repo = Repo::new("tools");
    repo.write("a.txt", b"a\n");
    repo.commit(BOB.0, BOB.1, "One");
    // A window: collected, but the cursor stays.
    let since = (chrono::Utc::now() - chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
    let windowed = collect(&v, repo.path(), &["--since", &since]);
    assert!(
        windowed.stdout.contains("tools: 0 commits walked"),
        "{}",
        windowed.stdout
    );
    let full = collect(&v, repo.path(), &[]);
    assert!(
        full.stdout.contains("tools: 1 commits walked"),
        "{}",
        full.stdout
    );
    assert!(full.stdout.contains("accepted 1,"), "{}", full.stdout);
    // A commit from three days ahead is refused by the door: counted, reported, exit 1.
    let saved = repo.clock;
    repo.clock = chrono::Utc::now().timestamp() + 3 * 86_400;
    repo.write("b.txt", b"b\n");
    repo.commit(JUDY.0, JUDY.1, "From the future");
    repo.clock = saved;
    let refused = collect(&v, repo.path(), &[]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stdout.contains("time_in_future"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("walks these commits again"),
        "{}",
        refused.stderr
    );
    let again = collect(&v, repo.path(), &[]);
    assert!(
        again.stdout.contains("tools: 1 commits walked"),
        "{}",
        again.stdout
    );
    // A cursor overwritten in the database (garbage, or another repository's) is no
    // cursor: everything is walked again and counted once, nothing panics.
    for forged in ["not-a-cursor", "1:00:00", "999:0011:2233"] {
        v.sqlite()
            .execute(
                "UPDATE meta SET value = ?1 WHERE key LIKE 'cursor:%'",
                [forged],
            )
            .unwrap();
        let r = collect(&v, repo.path(), &[]);
        assert!(
            r.stdout.contains("tools: 2 commits walked"),
            "{forged}: {}{}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stdout.contains("accepted 0, duplicates 1"),
            "{forged}: {}",
            r.stdout
        );
    }
    for r in [&windowed, &full, &refused, &again] {
        assert!(!format!("{}{}", r.stdout, r.stderr).contains("From the future"));
    }
}

/// `--to URL`: the same events go to a running gateway as the `collector` source
/// principal; a second run sends them again (no cursor is kept) and the gateway counts
/// each once; a principal that may not send `dev.commit` is refused by the gateway.
#[test]
fn to_a_gateway_counts_each_commit_once() {
    let v = Veil::init();
    let mut repo = Repo::new("tools");
    build(&mut repo);
    let gw = Gateway::start(&v);
    let token = v.token("collector");
    let to = |token: &str| {
        v.run_env(
            &[
                "collect",
                "git",
                repo.path().to_str().unwrap(),
                "--to",
                &gw.base,
            ],
            None,
            &[("VEIL_TOKEN", token)],
        )
    };
    let first = to(&token);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("accepted 5,"), "{}", first.stdout);
    let again = to(&token);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("accepted 0, duplicates 5"),
        "{}",
        again.stdout
    );
    let refused = to(&v.token("ingest"));
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("the gateway refused the events (403"),
        "{}",
        refused.stderr
    );
    let missing = v.run(&[
        "collect",
        "git",
        repo.path().to_str().unwrap(),
        "--to",
        &gw.base,
    ]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("VEIL_TOKEN"), "{}", missing.stderr);
    for r in [&first, &again, &refused] {
        let out = format!("{}{}", r.stdout, r.stderr);
        for (name, email) in [ALICE, ALICE_ALIAS, BOB, JUDY, STRANGER] {
            assert!(!out.contains(name) && !out.contains(email), "{out}");
        }
    }
}
