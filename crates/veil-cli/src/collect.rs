//! `veil collect git`: walk each repository (gitoxide, both cores), build one `dev.commit`
//! envelope per commit and team, and hand them to the one ingest path. Prints counts per
//! repository, never an author, a message or a path.

use crate::commands::{config_and_policy, ingest_reporting, open, print_outcome, Ctx};
use crate::{exit, Cli};
use anyhow::Result;
use sha2::Digest;
use std::path::{Path, PathBuf};
use veil_access::Action;
use veil_collect::git::{self, WalkOptions};
use veil_collect::github;
use veil_collect::{commit_envelopes, generalized_time, COMMIT_EVENT};
use veil_pipeline::Source;
use veil_policy::Policy;
use veil_store::Store;

/// The options of `veil collect git`, as given.
pub struct GitArgs {
    pub since: Option<String>,
    pub until: Option<String>,
    pub branch: Option<String>,
    pub first_parent: bool,
    pub dry_run: bool,
    /// A running gateway to send to instead of the local store.
    pub to: Option<String>,
}

fn day(s: &str, flag: &str) -> Result<i64> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp()
        })
        .map_err(|_| exit(2, format!("{flag} takes a date as YYYY-MM-DD")))
}

/// A repository's name as events carry it: its directory, without `.git`.
fn repository_name(path: &Path) -> String {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut name = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == ".git" {
        name = canon
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    name.strip_suffix(".git").map(str::to_owned).unwrap_or(name)
}

/// A progress bar on a terminal's stderr; nothing otherwise (logs and pipes stay clean).
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(name: &str) -> Bar {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {bar:40} {pos}/{len} commits ({per_sec}, {eta} left)",
            )
            .expect("a valid template"),
        );
        b.set_prefix(name.to_owned());
        Bar(Some(b))
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl git::Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }

    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

/// Where collected events go: the local store (through the one ingest path), or a
/// running gateway's `/v1/events` with a source token.
enum Sink {
    Local(Box<Ctx>, Source),
    Remote(crate::remote::Gateway, Box<Policy>),
    /// `--dry-run --to URL`: the policy only; nothing is sent, no token needed.
    Nowhere(Box<Policy>),
}

impl Sink {
    /// The local store as `name` (one source name for every run, whoever runs it: a fact
    /// re-collected by another user or principal is the same event, counted once), or the
    /// gateway at `to` as the principal whose token is in `VEIL_TOKEN` (the gateway's own
    /// source name and permissions apply).
    fn open(cli: &Cli, to: Option<&str>, name: &str, dry_run: bool) -> Result<Sink> {
        if let Some(url) = to {
            let (_, policy) = config_and_policy(cli)?;
            if dry_run {
                return Ok(Sink::Nowhere(Box::new(policy)));
            }
            return Ok(Sink::Remote(
                crate::remote::Gateway::new(url)?,
                Box::new(policy),
            ));
        }
        let mut ctx = open(cli)?;
        ctx.allow(Action::Ingest)?;
        let source = Source {
            name: name.to_owned(),
            collections: ctx.collections.clone(),
            consent: ctx.consent(),
        };
        Ok(Sink::Local(Box::new(ctx), source))
    }

    fn policy(&self) -> &Policy {
        match self {
            Sink::Local(ctx, _) => &ctx.policy,
            Sink::Remote(_, p) | Sink::Nowhere(p) => p,
        }
    }

    /// Refuses a local principal that may not send one of `collections` (a gateway
    /// refuses for itself, with 403).
    fn check(&self, collections: &[&str]) -> Result<()> {
        let Sink::Local(ctx, source) = self else {
            return Ok(());
        };
        if let Some(allowed) = &source.collections {
            if let Some(missing) = collections
                .iter()
                .find(|c| !allowed.iter().any(|a| a == *c))
            {
                return Err(exit(
                    1,
                    format!("principal {} may not send `{missing}` events: add it to the principal's collections", ctx.actor),
                ));
            }
        }
        Ok(())
    }

    /// The local store, for a cursor; none when sending to a gateway.
    fn store(&mut self) -> Option<&mut veil_store::SqliteStore> {
        match self {
            Sink::Local(ctx, _) => Some(&mut ctx.store),
            Sink::Remote(..) | Sink::Nowhere(_) => None,
        }
    }

    /// Sends one repository's events and prints what the door did. False when an event
    /// was rejected for a reason a rerun can fix (anything but too old or late): the
    /// caller keeps its cursor, and says the next run `again` covers them.
    fn send(&mut self, name: &str, lines: &str, now: i64, again: &str) -> Result<bool> {
        let o = match self {
            Sink::Local(ctx, source) => {
                ingest_reporting(ctx, source, &mut lines.as_bytes(), now, &|n| {
                    format!("{name}: event {n}")
                })?
            }
            Sink::Remote(gw, _) => gw.send(name, lines)?,
            Sink::Nowhere(_) => return Ok(true),
        };
        print_outcome(&o);
        let blocking: usize = o
            .rejected
            .iter()
            .filter(|(reason, _)| {
                // Final answers: sending the same event again cannot change them.
                !matches!(
                    reason.as_str(),
                    "late" | "time_too_old" | "opted_out" | "epoch_shredded"
                )
            })
            .map(|(_, n)| n)
            .sum();
        if blocking > 0 {
            eprintln!("{name}: {blocking} events were rejected; the next run {again} again");
        }
        Ok(blocking == 0)
    }
}

/// Runs `veil collect git`.
pub fn git(cli: &Cli, repos: &[PathBuf], args: &GitArgs) -> Result<u8> {
    let mut sink = Sink::open(cli, args.to.as_deref(), "collector:git", args.dry_run)?;
    let Some(coll) = sink
        .policy()
        .collections()
        .iter()
        .find(|c| c.name == COMMIT_EVENT)
        .cloned()
    else {
        return Err(exit(
            2,
            format!("the policy has no `{COMMIT_EVENT}` collection: add it (examples/policy.yaml has one) to say what of a commit is kept"),
        ));
    };
    let now = chrono::Utc::now().timestamp();
    // History older than the staging retention is out of scope: counted, never an error.
    // The door checks the generalized (day) time, so the cutoff is on that.
    let retention = coll.staging_retention;
    let cutoff = now - retention;
    let since = args
        .since
        .as_deref()
        .map(|s| day(s, "--since"))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| day(s, "--until"))
        .transpose()?;
    let branch = args.branch.clone().unwrap_or_else(|| "HEAD".into());
    sink.check(&[COMMIT_EVENT])?;
    // A filtered run (a window, first parents only) leaves commits outside it uncollected:
    // it must not move the cursor past them.
    let filtered = args.since.is_some() || args.until.is_some() || args.first_parent;
    let mut failed = false;
    for path in repos {
        let name = repository_name(path);
        // The key names no branch or repository in the clear (a branch may be named after
        // a person or a ticket).
        let cursor_key = format!(
            "git:{}",
            hex::encode(&sha2::Sha256::digest(format!("{name}\0{branch}").as_bytes())[..16])
        );
        // Sending to a gateway keeps no cursor: every run sends the retention's commits
        // and the gateway counts each once (a walk without diffs of older history is cheap).
        let hidden = match sink.store() {
            Some(store) => store
                .collector_cursor(&cursor_key)?
                .and_then(|c| git::ObjectId::from_hex(c.as_bytes()).ok()),
            None => None,
        };
        let opts = WalkOptions {
            start: branch.clone(),
            first_parent_only: args.first_parent,
            since,
            until: until.map(|u| u - 1),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            hidden: hidden.into_iter().collect(),
            // A commit is kept when its day is within the retention: from the first whole
            // day at or after the cutoff.
            skip_before: Some((cutoff + 86_399).div_euclid(86_400) * 86_400),
            ..WalkOptions::default()
        };
        let bar = Bar::new(&name);
        let walked = git::walk_with(path, &opts, &bar);
        bar.finish();
        let walked = match walked {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{name}: {e}");
                failed = true;
                continue;
            }
        };
        // The walker skipped by author time; the door checks the day: one more guard.
        let (recent, old): (Vec<_>, Vec<_>) = walked
            .commits
            .iter()
            .partition(|c| generalized_time(c.author_time) >= cutoff);
        let skipped = walked.skipped + old.len();
        let mut lines = String::new();
        let mut events = 0usize;
        for c in &recent {
            for l in commit_envelopes(c, &name, sink.policy().team_map()) {
                lines.push_str(&l);
                lines.push('\n');
                events += 1;
            }
        }
        println!(
            "{name}: {} commits walked, {events} events built, {} skipped (older than the {}-day staging retention)",
            walked.commits.len() + walked.skipped,
            skipped,
            retention / 86_400
        );
        if args.dry_run {
            continue;
        }
        // Move the cursor only when every event was counted (or is out of scope: too old
        // or for a sealed window). A rejection — a principal that may not send commits, a
        // commit dated in the future — leaves it where it was, so fixing the cause and
        // running again collects those commits; ids keep the rest counted once.
        if !sink.send(&name, &lines, now, "walks these commits")? {
            failed = true;
        } else if let Some(store) = sink.store().filter(|_| !filtered) {
            store.set_collector_cursor(&cursor_key, &walked.tip.to_string())?;
        }
    }
    if args.dry_run {
        println!("dry run: nothing was stored or sent");
    }
    Ok(u8::from(failed))
}

/// Runs `veil collect github`: every saved repository under `dir`, in name order.
pub fn github(
    cli: &Cli,
    dir: &Path,
    environments: &[String],
    dry_run: bool,
    to: Option<&str>,
) -> Result<u8> {
    let mut sink = Sink::open(cli, to, "collector:github", dry_run)?;
    // Facts for a collection the policy does not declare are not built: the policy says
    // what is collected, the collector only reads.
    let declared: Vec<&'static str> = github::GITHUB_EVENTS
        .into_iter()
        .filter(|e| sink.policy().collections().iter().any(|c| c.name == *e))
        .collect();
    if declared.is_empty() {
        return Err(exit(
            2,
            format!(
                "the policy declares none of {}: add them (examples/policy.yaml has each) to say what of GitHub's data is kept",
                github::GITHUB_EVENTS.join(", ")
            ),
        ));
    }
    for e in github::GITHUB_EVENTS {
        if !declared.contains(&e) {
            println!("{e}: not in the policy, not collected");
        }
    }
    sink.check(&declared)?;
    let exports = github::read_dir(dir, environments).map_err(|e| exit(2, e.to_string()))?;
    let now = chrono::Utc::now().timestamp();
    let cutoffs: std::collections::HashMap<&str, i64> = declared
        .iter()
        .filter_map(|e| {
            let c = sink.policy().collections().iter().find(|c| c.name == *e)?;
            Some((*e, now - c.staging_retention))
        })
        .collect();
    let mut failed = false;
    for ex in &exports {
        let d = github::derive(ex, sink.policy().team_map());
        let mut lines = String::new();
        let mut built: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut skipped = 0usize;
        for f in &d.facts {
            if !cutoffs.contains_key(f.collection) {
                continue;
            }
            // History older than the staging retention is out of scope: counted, never
            // an error (the door would refuse it as too old).
            if f.time < cutoffs[f.collection] {
                skipped += 1;
                continue;
            }
            *built.entry(f.collection).or_default() += 1;
            lines.push_str(&f.line);
            lines.push('\n');
        }
        let name = &ex.repository;
        let per: Vec<String> = built.iter().map(|(c, n)| format!("{n} {c}")).collect();
        println!(
            "{name}: {} pull requests, {} workflow runs, {} production deployments read; {} events built ({}), {skipped} skipped (older than the staging retention)",
            ex.pulls.len(),
            ex.runs.len(),
            ex.deployments.len(),
            built.values().sum::<usize>(),
            if per.is_empty() { "none".to_owned() } else { per.join(", ") },
        );
        if d.pending_deployments > 0 {
            println!(
                "{name}: {} deployments have no final status yet; a later run collects them",
                d.pending_deployments
            );
        }
        if d.unknown_ancestry > 0 {
            println!(
                "{name}: {} deployments ran a commit that commits.json does not hold, so whose changes they shipped is unknown; they are held back until an export holds the history of the branch they deployed from",
                d.unknown_ancestry
            );
        }
        if ex.no_person + d.uncredited > 0 {
            println!(
                "{name}: {} facts name no person (a deleted account) and were not sent",
                ex.no_person + d.uncredited
            );
        }
        if ex.repeated > 0 {
            println!(
                "{name}: {} items were listed twice (a page shifted while gh paginated) and read once",
                ex.repeated
            );
        }
        if dry_run {
            continue;
        }
        if !sink.send(name, &lines, now, "sends these facts")? {
            failed = true;
        }
    }
    if dry_run {
        println!("dry run: nothing was stored or sent");
    }
    Ok(u8::from(failed))
}
