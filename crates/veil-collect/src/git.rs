//! Walk a git repository's history with gitoxide (`gix`) and compute, per commit,
//! the numbers `git log --numstat --no-renames` prints.
//!
//! Prototype for `veil collect git`. Everything gix-specific that bit us is marked
//! with `PITFALL:` so it can be carried over when this is adapted.
//!
//! Equivalence with git (verified by `tests/git.rs`):
//! * `MergeDiff::Skip`        == `git log --numstat --no-renames`
//!   (git's default for `log` is `--diff-merges=off`: merge commits print NO stats at all)
//! * `MergeDiff::FirstParent` == `git log --numstat --no-renames --diff-merges=first-parent`
//! * `first_parent_only`      == additionally `--first-parent`
//!   (note: `--first-parent` alone also implies `--diff-merges=first-parent` in git >= 2.31,
//!   so with `first_parent_only` always pair it with `MergeDiff::FirstParent` to match)
//! * author email/name         == `%aE` / `%aN` (mailmap-aware)
//! * since/until filter on the AUTHOR time (inclusive). This is NOT git's `--since/--until`,
//!   which filter on the committer time (and stop walking early); compare against a filtered
//!   full `git log` instead.

use std::sync::atomic::{AtomicUsize, Ordering};

use gix::bstr::ByteSlice;
use gix::object::tree::diff::Change;
use gix::objs::tree::EntryKind;
pub use gix::ObjectId;

/// Why a repository could not be walked. Messages name the repository and the step,
/// never an author or a path.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// gix's own message is not shown: it can quote commit ids, subjects or paths.
    #[error("cannot open the repository (is it a git work tree or a bare repository?)")]
    Open,
    #[error(
        "cannot resolve {start:?} to one commit (an unborn branch, a missing or ambiguous name)"
    )]
    Start { start: String },
    #[error("cannot read the history (a shallow clone, or missing or corrupt objects)")]
    Walk,
}

/// Internal steps keep gix's own errors; the public functions turn them into a
/// [`GitError`] with the step named.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

pub use crate::events::Commit as CommitStat;

/// What to report for merge commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeDiff {
    /// No diff for merges (0 files, 0/0 lines), like plain `git log --numstat`.
    #[default]
    Skip,
    /// Diff merges against their first parent, like `--diff-merges=first-parent` (or `-m --first-parent`).
    FirstParent,
}

/// Line diff algorithm. git's default (`diff.algorithm` unset) is Myers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    Myers,
    MyersMinimal,
    Histogram,
}

impl From<Algorithm> for gix::diff::blob::Algorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Myers => Self::Myers,
            Algorithm::MyersMinimal => Self::MyersMinimal,
            Algorithm::Histogram => Self::Histogram,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Anything `git rev-parse` understands that peels to a commit: `HEAD`, a branch, a tag, a hash.
    pub start: String,
    /// Follow only first parents (`git log --first-parent`).
    pub first_parent_only: bool,
    /// Keep only commits whose author time is `>= since` (unix seconds).
    pub since: Option<i64>,
    /// Keep only commits whose author time is `<= until` (unix seconds).
    pub until: Option<i64>,
    pub merges: MergeDiff,
    /// Forced regardless of the repository's `diff.algorithm`, so results do not depend on user config.
    pub algorithm: Algorithm,
    /// Worker threads for the diff phase; 0 or 1 = in the calling thread.
    pub threads: usize,
    /// Size of the pack delta-base cache per thread (`core.deltaBaseCacheLimit`).
    pub pack_cache_bytes: usize,
    /// Size of the decoded-object cache per thread (0 = off).
    pub object_cache_bytes: usize,
    /// Commits authored before this (Unix seconds) are counted as skipped, not diffed
    /// (history older than the collection's staging retention is out of scope).
    pub skip_before: Option<i64>,
    /// Commits already collected: they and their ancestors are not walked again (the
    /// cursor of an incremental run). Ids the repository no longer has are ignored.
    pub hidden: Vec<ObjectId>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            start: "HEAD".into(),
            first_parent_only: false,
            since: None,
            until: None,
            merges: MergeDiff::FirstParent,
            algorithm: Algorithm::Myers,
            threads: 1,
            pack_cache_bytes: 100 * 1024 * 1024,
            object_cache_bytes: 0,
            skip_before: None,
            hidden: Vec::new(),
        }
    }
}

/// Open the repository at `path` (a work tree, or a bare `.git` directory) for use from many threads.
fn open(path: &std::path::Path, opts: &WalkOptions) -> Result<gix::ThreadSafeRepository> {
    // PITFALL: without `core.deltaBaseCacheLimit` gix uses a tiny static 64-entry LRU for pack
    // delta bases; a memory-capped dynamic LRU (feature `pack-cache-lru-dynamic`, pulled in by
    // `max-performance`) is what makes deep delta chains cheap. Setting it as a config override at
    // open time is the supported way (env `GIX_PACK_CACHE_MEMORY` is the other one). The cache is
    // per `Repository` instance, i.e. per thread.
    let open_opts = gix::open::Options::default().config_overrides([format!(
        "core.deltaBaseCacheLimit={}",
        opts.pack_cache_bytes
    )]);
    // PITFALL: `gix::open` does not "discover" upwards like git; pass the work tree root or the git dir.
    let repo = gix::open_opts(path, open_opts)?;
    Ok(repo.into_sync())
}

/// All commits reachable from `opts.start` (all parents, or first parents only), filtered by author time.
/// Order: gix's default breadth-first from the tip, which for linear stretches is newest-first.
/// The commit `start` names, resolved once: the walk starts there and the cursor is
/// set to it. PITFALL: `rev_parse_single` returns whatever the spec names (an annotated
/// tag is a tag object); peel to the commit explicitly.
fn resolve_start(repo: &gix::Repository, start: &str) -> Result<ObjectId> {
    Ok(repo.rev_parse_single(start)?.object()?.peel_to_commit()?.id)
}

/// The commits to diff, and how many more in range were authored before
/// `opts.skip_before` (listed, not diffed).
fn list_commits(
    repo: &gix::Repository,
    tip: ObjectId,
    opts: &WalkOptions,
) -> Result<(Vec<ObjectId>, usize)> {
    // Commits of an earlier run are hidden with their ancestry (git's `^old`); a cursor
    // the repository no longer has (history rewritten) hides nothing: the event ids make
    // re-collected commits count once.
    let hidden: Vec<ObjectId> = opts
        .hidden
        .iter()
        .copied()
        .filter(|id| repo.find_commit(*id).is_ok())
        .collect();
    let mut walk = repo.rev_walk([tip]).with_hidden(hidden);
    if opts.first_parent_only {
        walk = walk.first_parent_only();
    }
    // Sorting: the default `BreadthFirst` visits every reachable commit exactly once and is the
    // cheapest. `ByCommitTime*` would mimic git's output order but we key results by id anyway.
    let filter = opts.since.is_some() || opts.until.is_some() || opts.skip_before.is_some();
    let (mut out, mut skipped) = (Vec::new(), 0);
    for info in walk.all()? {
        let info = info?;
        if filter {
            let commit = info.object()?;
            let t = commit.author()?.seconds();
            if opts.since.is_some_and(|s| t < s) || opts.until.is_some_and(|u| t > u) {
                continue;
            }
            if opts.skip_before.is_some_and(|s| t < s) {
                skipped += 1;
                continue;
            }
        }
        out.push(info.id);
    }
    Ok((out, skipped))
}

/// Per-thread diff state. Build ONE per thread and reuse it for every commit.
pub struct Differ<'repo> {
    repo: &'repo gix::Repository,
    // PITFALL: `Repository::diff_resource_cache*()` is expensive: it loads the index (in a bare
    // repo: builds one from HEAD's tree) to get an attribute stack. `Tree::changes()
    // ...for_each_to_obtain_tree()` and `Platform::stats()` create a fresh one on EVERY call,
    // which made a bare-repo walk ~13x slower. Create it once, pass it to
    // `for_each_to_obtain_tree_with_cache`, and clear it after each file.
    cache: gix::diff::blob::Platform,
    // PITFALL: `for_each_to_obtain_tree_with_cache(&tree, &mut cache, |change| ...)` borrows the
    // cache mutably for the whole traversal (it is meant for rename tracking), so the callback
    // cannot use the same cache for `change.diff(&mut cache)` (E0500). With rewrites disabled this
    // second cache is never touched; it only exists to avoid the per-call cache creation.
    tree_diff_cache: gix::diff::blob::Platform,
    empty_tree: gix::Tree<'repo>,
    opts: WalkOptions,
}

impl<'repo> Differ<'repo> {
    pub fn new(repo: &'repo gix::Repository, opts: &WalkOptions) -> Result<Self> {
        Ok(Differ {
            repo,
            cache: Self::new_cache(repo, opts)?,
            tree_diff_cache: Self::new_cache(repo, opts)?,
            empty_tree: repo.empty_tree(),
            opts: opts.clone(),
        })
    }

    fn new_cache(repo: &gix::Repository, opts: &WalkOptions) -> Result<gix::diff::blob::Platform> {
        let mut cache = repo.diff_resource_cache_for_tree_diff()?;
        // PITFALL: the algorithm comes from `diff.algorithm` (default "myers"); and the *Platform*
        // falls back to imara-diff's own default, which is Histogram, if `options.algorithm` is
        // None. Set it explicitly. We count with `Diff::compute` and no slider post-processing:
        // sliders move hunks but never change the +/- counts.
        cache.options.algorithm = Some(opts.algorithm.into());
        Ok(cache)
    }

    /// Compute the stat for one commit. `mailmap` may be empty (`gix::mailmap::Snapshot::default()`).
    pub fn stat(&mut self, id: ObjectId, mailmap: &gix::mailmap::Snapshot) -> Result<CommitStat> {
        let repo = self.repo;
        let commit = repo.find_commit(id)?;
        let (author_email, author_time) = {
            let sig = commit.author()?;
            // PITFALL: `SignatureRef::time` is the raw header string in gix >= 0.73; use
            // `.seconds()` (lenient) or `.time()?` (strict parse) to get the number.
            let author_time = sig.seconds();
            (resolve_author_email(mailmap, sig), author_time)
        };
        let parent_ids: Vec<ObjectId> = commit.parent_ids().map(|p| p.detach()).collect();
        let mut stat = CommitStat {
            id: id.to_string(),
            author_email,
            author_time,
            parents: parent_ids.len(),
            files_changed: 0,
            lines_added: 0,
            lines_deleted: 0,
        };
        if parent_ids.len() > 1 && self.opts.merges == MergeDiff::Skip {
            return Ok(stat);
        }

        let new_tree = commit.tree()?;
        let old_tree_storage;
        let old_tree = match parent_ids.first() {
            Some(parent) => {
                old_tree_storage = repo.find_commit(*parent)?.tree()?;
                &old_tree_storage
            }
            // Root commit: git (log.showRoot=true, the default) diffs against the empty tree.
            None => &self.empty_tree,
        };

        let cache = &mut self.cache;
        let (mut files, mut added, mut deleted) = (0u32, 0u64, 0u64);
        let mut changes = old_tree.changes()?;
        changes.options(|o| {
            // PITFALL: `Tree::changes()` reads `diff.renames` and, when unset, turns rename
            // tracking ON (git's `diff` default). We want `--no-renames` and it is also the
            // expensive part. Paths are kept because the resource cache looks up
            // `.gitattributes` (`binary`, `-diff`, `diff=driver`) by path.
            o.track_rewrites(None).track_path();
        });
        changes.for_each_to_obtain_tree_with_cache(
            &new_tree,
            &mut self.tree_diff_cache,
            |change| {
                // PITFALL: the tree diff reports TREE entries too (an added directory shows up as an
                // Addition with a tree mode, followed by its files). git's numstat only lists leaves.
                let (old_kind, new_kind) = match change {
                    Change::Addition { entry_mode, .. } => (None, Some(entry_mode.kind())),
                    Change::Deletion { entry_mode, .. } => (Some(entry_mode.kind()), None),
                    Change::Modification {
                        previous_entry_mode,
                        entry_mode,
                        ..
                    } => (Some(previous_entry_mode.kind()), Some(entry_mode.kind())),
                    Change::Rewrite { .. } => unreachable!("rewrite tracking is disabled"),
                };
                let is_tree = |k: Option<EntryKind>| matches!(k, Some(EntryKind::Tree));
                let is_gitlink = |k: Option<EntryKind>| matches!(k, Some(EntryKind::Commit));
                if is_tree(old_kind) || is_tree(new_kind) {
                    return Ok(std::ops::ControlFlow::Continue(()));
                }
                files += 1;
                // PITFALL: submodules (gitlinks, mode 160000) make `set_resource` fail with
                // `InvalidMode`. git diffs them as the one-line text "Subproject commit <sha>", so
                // numstat shows 1/0 (added), 0/1 (removed), 1/1 (changed).
                if is_gitlink(old_kind) || is_gitlink(new_kind) {
                    added += u64::from(new_kind.is_some());
                    deleted += u64::from(old_kind.is_some());
                    return Ok(std::ops::ControlFlow::Continue(()));
                }
                // Blob <-> symlink type changes come as ONE Modification and git also prints one
                // numstat line for them (the link target is diffed as text), so no special casing.
                let (a, d) = line_counts(change.diff(cache)?.resource_cache)?;
                added += a;
                deleted += d;
                // PITFALL: the resource cache only grows, and is keyed by (id, path) - clear it after
                // every file; `_keep_allocation` recycles the buffers.
                cache.clear_resource_cache_keep_allocation();
                Ok(std::ops::ControlFlow::Continue(()))
            },
        )?;
        stat.files_changed = files;
        stat.lines_added = added;
        stat.lines_deleted = deleted;
        Ok(stat)
    }
}

/// What one repository's walk found: the tip it started from (the next run's cursor)
/// and every commit not hidden, with its numbers.
#[derive(Debug, Clone)]
pub struct Walked {
    pub tip: ObjectId,
    pub commits: Vec<CommitStat>,
    /// Commits in range authored before `skip_before`: counted, not diffed.
    pub skipped: usize,
}

/// Told how far a walk is: the number of commits to diff, then each one diffed (from
/// any thread). The CLI shows a progress bar on a terminal; `()` shows nothing.
pub trait Progress: Sync {
    /// The walk found `total` commits to diff.
    fn start(&self, total: u64);
    /// `n` more commits were diffed.
    fn inc(&self, n: u64);
}

impl Progress for () {
    fn start(&self, _: u64) {}
    fn inc(&self, _: u64) {}
}

/// Opens, walks and diffs one repository (see [`WalkOptions`]): the collector's one call.
pub fn walk(path: &std::path::Path, opts: &WalkOptions) -> std::result::Result<Walked, GitError> {
    walk_with(path, opts, &())
}

/// [`walk`], telling `progress` how far it is.
pub fn walk_with(
    path: &std::path::Path,
    opts: &WalkOptions,
    progress: &dyn Progress,
) -> std::result::Result<Walked, GitError> {
    let repo = open(path, opts).map_err(|_| GitError::Open)?;
    let local = prepare(&repo, opts);
    let tip = resolve_start(&local, &opts.start).map_err(|_| GitError::Start {
        start: opts.start.clone(),
    })?;
    let (ids, skipped) = list_commits(&local, tip, opts).map_err(|_| GitError::Walk)?;
    // PITFALL: `open_mailmap()` swallows errors and returns an empty map when there is
    // none. It reads `.mailmap` from the work tree, or `HEAD:.mailmap` in a bare repo
    // (same as git), plus `mailmap.blob` / `mailmap.file`. Plain data: load once, share.
    let mailmap = local.open_mailmap();
    let commits = collect_ids(&repo, &ids, &mailmap, opts, progress).map_err(|_| GitError::Walk)?;
    Ok(Walked {
        tip,
        commits,
        skipped,
    })
}

/// Diff the given commits, in parallel if `opts.threads > 1`. Result order = `ids` order.
fn collect_ids(
    repo: &gix::ThreadSafeRepository,
    ids: &[ObjectId],
    mailmap: &gix::mailmap::Snapshot,
    opts: &WalkOptions,
    progress: &dyn Progress,
) -> Result<Vec<CommitStat>> {
    progress.start(ids.len() as u64);
    let threads = opts.threads.max(1).min(ids.len().max(1));
    if threads == 1 {
        let local = prepare(repo, opts);
        let mut differ = Differ::new(&local, opts)?;
        return ids
            .iter()
            .map(|id| {
                let s = differ.stat(*id, mailmap);
                progress.inc(1);
                s
            })
            .collect();
    }

    // Work is handed out in small contiguous batches from a shared counter: contiguous keeps
    // parent/child commits (which share most trees and blob delta bases) on the same thread's
    // caches; small batches keep threads balanced when a few huge commits or a since/until
    // window make static N-way chunks uneven.
    const BATCH: usize = 64;
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, CommitStat)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, CommitStat)>> {
                    // PITFALL: `gix::Repository` is `Send` but not `Sync`; every thread needs its
                    // own, obtained from the `ThreadSafeRepository` (needs the `parallel` feature,
                    // otherwise the sync handle is not `Send`). Each has its own object/pack caches
                    // and needs its own diff resource cache.
                    let local = prepare(repo, opts);
                    let mut differ = Differ::new(&local, opts)?;
                    let mut out = Vec::new();
                    loop {
                        let start = next.fetch_add(BATCH, Ordering::Relaxed);
                        if start >= ids.len() {
                            break;
                        }
                        for (i, id) in ids.iter().enumerate().skip(start).take(BATCH) {
                            out.push((i, differ.stat(*id, mailmap)?));
                            progress.inc(1);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let mut slots: Vec<Option<CommitStat>> = vec![None; ids.len()];
    for r in results {
        for (i, stat) in r? {
            slots[i] = Some(stat);
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every index processed"))
        .collect())
}

/// The author's email after `.mailmap`, as git's `%aE` (the name is never read: Veil
/// does not need it).
///
/// PITFALL: gix-mailmap matches emails case-insensitively (as git does) but, unlike git,
/// when the matching entry has no replacement email (`New Name <dave@example.com>`) it
/// still returns the entry's spelling of the email. Keep the commit's email whenever the
/// "replacement" only differs in ASCII case (the door case-folds emails anyway).
pub fn resolve_author_email(
    mailmap: &gix::mailmap::Snapshot,
    sig: gix::actor::SignatureRef<'_>,
) -> String {
    let email = match mailmap.try_resolve_ref(sig).and_then(|r| r.email) {
        Some(e) if !e.eq_ignore_ascii_case(sig.email) => e,
        _ => sig.email,
    };
    email.to_str_lossy().into_owned()
}

/// Added/deleted line counts for the two resources currently set in `cache`, like git's numstat.
///
/// PITFALL: gix's own `blob::diff::Platform::line_counts()` tokenizes with
/// `ByteLinesWithoutTerminator` ("line terminators are removed to improve diffs"), so a change that
/// only adds the missing newline of the last line ("two" -> "two\n") counts 0/0, and any
/// unterminated last line that gets lines appended counts one line too few on each side. git
/// compares lines WITH their terminator (that is also how CRLF <-> LF changes show up), so we
/// tokenize with `sources::byte_lines`, which keeps `\n` / `\r\n`.
///
/// Binary (either side has a NUL in its first 8000 bytes, like git's `buffer_is_binary`; or is
/// larger than `core.bigFileThreshold`, 512 MiB by default; or has the `binary` / `-diff`
/// attribute): git prints `-\t-\tpath`, so the file counts but no lines -> (0, 0).
fn line_counts(cache: &mut gix::diff::blob::Platform) -> gix::Result<(u64, u64)> {
    use gix::diff::blob::platform::prepare_diff::{Operation, TextChange};
    use gix::diff::blob::{sources::byte_lines, Diff, InternedInput};
    // `skip_internal_diff_if_external_is_configured` is false in caches made by
    // `diff_resource_cache*()`, so a `diff.<driver>.command` never turns this into ExternalCommand.
    let prep = cache.prepare_diff()?;
    Ok(match prep.operation {
        Operation::InternalDiff { algorithm, change } => match change {
            // Pure additions/deletions need no diff at all: every line is added/removed.
            TextChange::Addition { new } => (count_lines(new.as_slice()), 0),
            TextChange::Deletion { old } => (0, count_lines(old.as_slice())),
            TextChange::Modification(_) => {
                let (old, new) = change.patch_data();
                let input = InternedInput::new(byte_lines(old), byte_lines(new));
                let diff = Diff::compute(algorithm, &input);
                (
                    u64::from(diff.count_additions()),
                    u64::from(diff.count_removals()),
                )
            }
        },
        Operation::ExternalCommand { .. } => unreachable!("external diff commands are disabled"),
        Operation::SourceOrDestinationIsBinary | Operation::NeitherExists => (0, 0),
    })
}

/// Lines as git counts them: an unterminated last line is a line.
fn count_lines(buf: &[u8]) -> u64 {
    let newlines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(buf.last().is_some_and(|&b| b != b'\n'))
}

fn prepare(repo: &gix::ThreadSafeRepository, opts: &WalkOptions) -> gix::Repository {
    let mut local = repo.to_thread_local();
    // The object cache holds decoded objects (mostly trees: a commit's tree is the next commit's
    // parent tree). It is off by default in gix.
    if opts.object_cache_bytes > 0 {
        local.object_cache_size_if_unset(opts.object_cache_bytes);
    }
    local
}
