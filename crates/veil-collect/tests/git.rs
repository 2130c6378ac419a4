//! Builds a repository with the real `git` binary, then checks the collector's walker
//! against `git log --numstat --no-renames` (with the matching merge and first-parent
//! flags), commit by commit: authors through `.mailmap`, times, parents, files changed and
//! Myers line counts, including merges, binary files, renames, submodules and symlinks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use veil_collect::git::{self as walk, CommitStat, MergeDiff, WalkOptions};

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// Incremented per commit so every commit has its own distinct time.
    clock: i64,
}

const T0: i64 = 1_700_000_000;

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        std::fs::create_dir(&dir).unwrap();
        let mut r = Repo {
            _tmp: tmp,
            dir,
            clock: T0,
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("git");
        c.current_dir(&self.dir)
            // isolate from the user's / system config (diff.algorithm, mailmap.file, ...)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self._tmp.path())
            .env("GIT_COMMITTER_NAME", "Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        c
    }

    fn git(&mut self, args: &[&str]) -> String {
        self.git_env(args, &[])
    }

    fn git_env(&mut self, args: &[&str], env: &[(&str, String)]) -> String {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, path: &str, content: impl AsRef<[u8]>) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Commit everything (`git add -A`) as `author` ("Name <email>").
    /// Author time = clock, committer time = clock + 3600 so `%at` really is the author's.
    fn commit(&mut self, author: &str, msg: &str, extra: &[&str]) -> String {
        self.git(&["add", "-A"]);
        self.commit_index(author, msg, extra)
    }

    fn commit_index(&mut self, author: &str, msg: &str, extra: &[&str]) -> String {
        let mut args = vec!["commit", "-q", "-m", msg];
        args.extend_from_slice(extra);
        self.as_author(author, &args)
    }

    fn merge(&mut self, author: &str, branches: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["merge", "-q", "--no-ff", "--no-edit"];
        args.extend_from_slice(extra);
        args.extend_from_slice(branches);
        self.as_author(author, &args)
    }

    /// Runs a committing git command as `author` ("Name <email>"), one clock step later
    /// (author time = clock, committer time an hour after); returns the new HEAD.
    fn as_author(&mut self, author: &str, args: &[&str]) -> String {
        self.clock += 1000;
        let (name, email) = author.split_once(" <").unwrap();
        let env = [
            ("GIT_AUTHOR_NAME", name.to_string()),
            ("GIT_AUTHOR_EMAIL", email.trim_end_matches('>').to_string()),
            ("GIT_AUTHOR_DATE", format!("@{} +0200", self.clock)),
            (
                "GIT_COMMITTER_DATE",
                format!("@{} +0000", self.clock + 3600),
            ),
        ];
        self.git_env(args, &env);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }
}

fn lines(range: std::ops::Range<u32>, tag: &str) -> String {
    range.map(|i| format!("{tag} line {i}\n")).collect()
}

/// The fixture. Returns the repo; branches: main (HEAD), side, other.
fn build_fixture() -> Repo {
    let mut r = Repo::new();
    let alice = "Alice <alice@example.com>";
    let bob_alias = "bobby <bob.alias@example.com>"; // mailmapped to Bob Canonical <bob@example.com>
    let bob = "Bob Canonical <bob@example.com>";
    let carol = "Carol <carol@old.example.com>"; // email-only mapping -> carol@example.com, name kept
    let dave = "Dave <DAVE@Example.com>"; // name-only mapping, matched case-insensitively

    // 1. root commit: text files, a binary file, the .mailmap
    r.write(
        ".mailmap",
        "Bob Canonical <bob@example.com> <bob.alias@example.com>\n\
         <carol@example.com> <carol@old.example.com>\n\
         David D <dave@example.com>\n",
    );
    r.write("a.txt", lines(0..20, "a"));
    r.write("b.txt", lines(0..5, "b"));
    r.write("c.txt", lines(0..30, "c"));
    r.write("bin.dat", b"\x00\x01\x02binary\x00\xff\n".repeat(10));
    r.write("noeol.txt", "one\ntwo"); // no trailing newline
    r.commit(alice, "root", &[]);

    // 2. modify in the middle: replace 2 lines, insert 3, delete 1
    let mut a: Vec<String> = lines(0..20, "a").lines().map(String::from).collect();
    a[5] = "a changed 5".into();
    a[6] = "a changed 6".into();
    a.insert(10, "inserted x".into());
    a.insert(10, "inserted y".into());
    a.insert(10, "inserted z".into());
    a.remove(15);
    r.write("a.txt", a.join("\n") + "\n");
    r.write("noeol.txt", "one\ntwo\nthree"); // last line gains EOL + new line: 2 added, 1 deleted
    r.commit(bob_alias, "edit middle", &[]);

    // 3. delete a file, add a nested file (tree entries must not be counted)
    std::fs::remove_file(r.dir.join("b.txt")).unwrap();
    r.write("dir/sub/deep.txt", lines(0..4, "deep"));
    r.commit(carol, "delete b, add nested", &[]);

    // 4. rename with a small edit (--no-renames: delete + add) + binary modification
    r.git(&["mv", "c.txt", "renamed.txt"]);
    let mut c = lines(0..30, "c");
    c.push_str("extra\n");
    r.write("renamed.txt", c);
    r.write("bin.dat", b"\x00\x01\x02changed\x00\xff\n".repeat(12));
    r.commit(bob, "rename", &[]);

    // side branch from here
    r.git(&["branch", "side"]);

    // 5. main: change the top of a.txt, text -> binary, mode change
    let a2 = std::fs::read_to_string(r.dir.join("a.txt")).unwrap();
    r.write(
        "a.txt",
        format!("new top\n{}", a2.split_once('\n').unwrap().1),
    );
    r.write("dir/sub/deep.txt", b"now\x00binary\n");
    r.git(&["update-index", "--chmod=+x", "noeol.txt"]);
    r.commit(alice, "main work", &[]);

    // 6. side: two commits, dave (name-only mailmap, email in other case)
    r.git(&["checkout", "-q", "side"]);
    let mut a3 = std::fs::read_to_string(r.dir.join("a.txt")).unwrap();
    a3.push_str("side tail 1\nside tail 2\n");
    r.write("a.txt", a3);
    r.write("side.txt", lines(0..7, "side"));
    r.commit(dave, "side 1", &[]);
    r.write("side.txt", lines(0..3, "side"));
    r.commit(dave, "side 2", &[]);

    // 7. merge side into main
    r.git(&["checkout", "-q", "main"]);
    r.merge(alice, &["side"], &[]);

    // 8. typechange file -> symlink, gitlinks (submodule entries), an empty commit
    std::fs::remove_file(r.dir.join("renamed.txt")).unwrap();
    std::os::unix::fs::symlink("a.txt", r.dir.join("renamed.txt")).unwrap();
    r.git(&["add", "-A"]);
    let fake_sub = "1111111111111111111111111111111111111111";
    r.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{fake_sub},vendor/sub"),
    ]);
    r.commit_index(carol, "symlink + submodule", &[]);
    let fake_sub2 = "2222222222222222222222222222222222222222";
    r.git(&[
        "update-index",
        "--cacheinfo",
        &format!("160000,{fake_sub2},vendor/sub"),
    ]);
    r.commit_index(bob, "bump submodule", &[]);
    r.git(&["update-index", "--force-remove", "vendor/sub"]);
    r.commit_index(bob, "drop submodule", &[]);
    r.commit(alice, "empty", &["--allow-empty"]);

    // 9. an unrelated second root, merged in; then an octopus merge
    r.git(&["checkout", "-q", "--orphan", "other"]);
    r.git(&["rm", "-rq", "--cached", "."]);
    for entry in std::fs::read_dir(&r.dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != ".git" {
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    r.write("other/readme.md", lines(0..9, "other"));
    r.commit(dave, "second root", &[]);
    r.git(&["checkout", "-q", "main"]);
    r.merge(bob, &["other"], &["--allow-unrelated-histories"]);

    r.git(&["checkout", "-q", "-b", "o1", "main~1"]);
    r.write("o1.txt", "o1\n");
    r.commit(carol, "o1", &[]);
    r.git(&["checkout", "-q", "-b", "o2", "main~1"]);
    r.write("o2.txt", "o2\n");
    r.commit(carol, "o2", &[]);
    r.git(&["checkout", "-q", "main"]);
    r.merge(alice, &["o1", "o2"], &[]); // octopus: 3 parents
    r.write("a.txt", "rewritten\n");
    r.commit(bob_alias, "final rewrite", &[]);
    r
}

/// Parse `git log <flags> --format=...` into the same shape as the walker output.
fn git_log(r: &Repo, rev: &str, flags: &[&str]) -> BTreeMap<String, CommitStat> {
    let mut c = r.cmd();
    c.args([
        "log",
        "--numstat",
        "--no-renames",
        "--format=%x01%H%x02%aE%x02%aN%x02%at%x02%P",
    ]);
    c.args(flags).arg(rev);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for record in text.split('\x01').skip(1) {
        let mut it = record.lines();
        let header: Vec<&str> = it.next().unwrap().split('\x02').collect();
        let mut s = CommitStat {
            id: header[0].into(),
            author_email: header[1].into(),
            author_time: header[3].parse().unwrap(),
            parents: header[4].split_whitespace().count(),
            files_changed: 0,
            lines_added: 0,
            lines_deleted: 0,
        };
        for l in it.filter(|l| !l.is_empty()) {
            let mut cols = l.splitn(3, '\t');
            let (add, del) = (cols.next().unwrap(), cols.next().unwrap());
            s.files_changed += 1;
            // binary: "-\t-\tpath" -> the file counts, the lines do not
            s.lines_added += add.parse::<u64>().unwrap_or(0);
            s.lines_deleted += del.parse::<u64>().unwrap_or(0);
        }
        map.insert(s.id.clone(), s);
    }
    map
}

fn walker(dir: &Path, opts: &WalkOptions) -> BTreeMap<String, CommitStat> {
    let stats = walk::walk(dir, opts).unwrap().commits;
    let n = stats.len();
    let map: BTreeMap<_, _> = stats.into_iter().map(|s| (s.id.clone(), s)).collect();
    assert_eq!(map.len(), n, "walker reported a commit twice");
    map
}

fn assert_same(
    what: &str,
    git: &BTreeMap<String, CommitStat>,
    ours: &BTreeMap<String, CommitStat>,
) {
    let git_ids: Vec<_> = git.keys().collect();
    let our_ids: Vec<_> = ours.keys().collect();
    assert_eq!(git_ids, our_ids, "{what}: commit sets differ");
    for (id, g) in git {
        assert_eq!(
            &ours[id], g,
            "{what}: commit {id} differs (left: walker, right: git)"
        );
    }
}

fn opts(f: impl FnOnce(&mut WalkOptions)) -> WalkOptions {
    let mut o = WalkOptions::default();
    f(&mut o);
    o
}

#[test]
fn matches_git_log_numstat() {
    let r = build_fixture();

    // default git log: merges show no stats at all
    let git_default = git_log(&r, "HEAD", &[]);
    assert_eq!(git_default.len(), 18);
    let ours = walker(&r.dir, &opts(|o| o.merges = MergeDiff::Skip));
    assert_same("default", &git_default, &ours);
    assert!(git_default
        .values()
        .filter(|s| s.parents > 1)
        .all(|s| s.files_changed == 0));
    // the explicit flag for that default
    assert_same(
        "diff-merges=off",
        &git_log(&r, "HEAD", &["--diff-merges=off"]),
        &ours,
    );

    // merges diffed against the first parent
    let git_fp = git_log(&r, "HEAD", &["--diff-merges=first-parent"]);
    let ours_fp = walker(&r.dir, &opts(|o| o.merges = MergeDiff::FirstParent));
    assert_same("diff-merges=first-parent", &git_fp, &ours_fp);
    assert!(git_fp
        .values()
        .filter(|s| s.parents > 1)
        .all(|s| s.files_changed > 0));
    // `-m --first-parent`-less `-m` would show one diff per parent; first-parent is the one we want.

    // --first-parent walk (implies --diff-merges=first-parent in modern git)
    let ours = walker(
        &r.dir,
        &opts(|o| {
            o.first_parent_only = true;
            o.merges = MergeDiff::FirstParent
        }),
    );
    assert_same(
        "--first-parent",
        &git_log(&r, "HEAD", &["--first-parent"]),
        &ours,
    );
    let ours = walker(
        &r.dir,
        &opts(|o| {
            o.first_parent_only = true;
            o.merges = MergeDiff::Skip
        }),
    );
    assert_same(
        "--first-parent --diff-merges=off",
        &git_log(&r, "HEAD", &["--first-parent", "--diff-merges=off"]),
        &ours,
    );

    // another start ref
    let ours = walker(
        &r.dir,
        &opts(|o| {
            o.start = "side".into();
            o.merges = MergeDiff::Skip
        }),
    );
    assert_same("side", &git_log(&r, "side", &[]), &ours);

    // author-time window (git's --since/--until use the committer date, so filter git's output)
    let (since, until) = (T0 + 3000, T0 + 9000);
    let ours = walker(
        &r.dir,
        &opts(|o| {
            o.since = Some(since);
            o.until = Some(until);
            o.merges = MergeDiff::Skip
        }),
    );
    let mut expected = git_default.clone();
    expected.retain(|_, s| s.author_time >= since && s.author_time <= until);
    assert!(!expected.is_empty() && expected.len() < git_default.len());
    assert_same("since/until", &expected, &ours);

    // parallel == serial
    for threads in [2, 3, 8] {
        let ours = walker(
            &r.dir,
            &opts(|o| {
                o.threads = threads;
                o.merges = MergeDiff::FirstParent
            }),
        );
        assert_same(&format!("{threads} threads"), &git_fp, &ours);
    }

    // spot checks that the fixture exercises what it should
    let by_msg = |msg: &str| {
        r.cmd()
            .args(["rev-parse", &format!(":/^{msg}")])
            .output()
            .unwrap()
    };
    let id = |msg: &str| {
        String::from_utf8(by_msg(msg).stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let s = &git_default[&id("edit middle")];
    assert_eq!(s.author_email, "bob@example.com");
    assert_eq!((s.files_changed, s.lines_added, s.lines_deleted), (2, 7, 4));
    let s = &git_default[&id("rename")];
    assert_eq!(
        (s.files_changed, s.lines_added, s.lines_deleted),
        (3, 31, 30)
    );
    let s = &git_default[&id("side 1")];
    assert_eq!(s.author_email, "DAVE@Example.com");
    let s = &git_default[&id("delete b")];
    assert_eq!(s.author_email, "carol@example.com");
    let s = &git_default[&id("root")];
    assert_eq!(
        (s.parents, s.files_changed, s.author_time),
        (0, 6, T0 + 1000)
    );
    let s = &git_default[&id("bump submodule")];
    assert_eq!((s.files_changed, s.lines_added, s.lines_deleted), (1, 1, 1));
}

/// An incremental walk: commits reachable from the previous tip are hidden, a tip the
/// repository no longer has hides nothing, and commits authored before `skip_before` are
/// counted, not diffed.
#[test]
fn hidden_tips_and_skipped_history() {
    let mut r = Repo::new();
    let alice = "Alice <alice@example.com>";
    r.write("a.txt", "one\n");
    r.commit(alice, "first", &[]);
    r.write("a.txt", "one\ntwo\n");
    r.commit(alice, "second", &[]);
    let first = walk::walk(&r.dir, &WalkOptions::default()).unwrap();
    assert_eq!(first.commits.len(), 2);
    r.write("a.txt", "one\ntwo\nthree\n");
    let third = r.commit(alice, "third", &[]);
    let next = walk::walk(&r.dir, &opts(|o| o.hidden = vec![first.tip])).unwrap();
    assert_eq!(next.commits.len(), 1, "only the new commit");
    assert_eq!(next.commits[0].id, third);
    assert_eq!(
        (next.commits[0].lines_added, next.commits[0].lines_deleted),
        (1, 0)
    );
    assert_eq!(next.tip.to_string(), third);
    // A cursor from a rewritten history hides nothing.
    let gone = walk::ObjectId::from_hex(b"1234567890123456789012345678901234567890").unwrap();
    let all = walk::walk(&r.dir, &opts(|o| o.hidden = vec![gone])).unwrap();
    assert_eq!(all.commits.len(), 3);
    // The first two commits are older than the cut: listed and counted, never diffed.
    let cut = T0 + 2500;
    let recent = walk::walk(&r.dir, &opts(|o| o.skip_before = Some(cut))).unwrap();
    assert_eq!((recent.commits.len(), recent.skipped), (1, 2));
    assert!(recent.commits.iter().all(|c| c.author_time >= cut));
}
