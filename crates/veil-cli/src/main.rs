//! `veil`: the command line. Glue only — it reads `veil.toml`, calls the libraries in
//! data-flow order and maps their typed errors to messages and exit codes
//! (0 success, 1 the command ran and found a problem, 2 bad usage or unreadable input;
//! a report whose reader closed the pipe ends by SIGPIPE, as other Unix tools do).

#![forbid(unsafe_code)]

mod bench;
mod collect;
mod commands;
mod config;
mod generate;
mod govern;
mod principal;
mod remote;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The door and the batch commit allocate many short-lived values; mimalloc halves their
/// cost against the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

/// Shorthand for an error with an exit code.
pub fn exit(code: u8, msg: impl Into<String>) -> anyhow::Error {
    Exit(code, msg.into()).into()
}

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Privacy-first telemetry: collect only what the policy allows, release only what cannot single anyone out"
)]
pub struct Cli {
    /// Config file (default: $VEIL_CONFIG, else ./veil.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Act as this principal from veil.toml; needs its token in VEIL_TOKEN.
    #[arg(long = "as", global = true)]
    pub as_principal: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Write veil.toml, an example policy.yaml, epoch keys and one token per example principal.
    ///
    /// Example: veil init my-veil
    Init {
        /// Where to initialize (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Lint or explain the policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Ingest NDJSON events from FILE or - (stdin) through the same pipeline as the server.
    ///
    /// Examples:
    ///   veil ingest events.ndjson
    ///   gunzip -c events.ndjson.gz | veil ingest - --strict --format json
    Ingest {
        /// An NDJSON file, one event per line, or - for stdin.
        file: String,
        /// Exit 1 if any event was rejected.
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Collect developer activity at its source (git history, GitHub exports) through the same door.
    Collect {
        #[command(subcommand)]
        cmd: CollectCmd,
    },
    /// Seal closed windows into aggregates (windows closed longer than the policy's
    /// seal_grace; `veil serve` does this on a schedule).
    ///
    /// Example: veil seal --format json
    Seal {
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Apply retention: delete staging events, idempotency ids, quarantine rows,
    /// aggregates and releases past their retention, and destroy the keys of epochs
    /// nothing needs any more (crypto-shredding). Audited with counts.
    ///
    /// Example: veil purge --dry-run
    Purge {
        /// Say what would go; change and destroy nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// The gateway: HTTP and OTLP/HTTP ingest, reports, audit, metrics (listen and limits
    /// from veil.toml). Stops cleanly on SIGTERM or Ctrl-C.
    ///
    /// Example: VEIL_LOG=debug veil serve --config /etc/veil/veil.toml
    Serve,
    /// Release a report (k-suppressed, differentially private, budgeted, audited).
    ///
    /// Examples:
    ///   veil report builds --by team --from 2026-11-01 --to 2026-12-01
    ///   veil report build_duration --format json
    ///   veil report builds --by team --dry-run
    Report {
        /// The metric (its name, or collection.metric); `veil policy explain` lists them.
        metric: String,
        /// Dimensions to group by (comma-separated); "" for the total.
        #[arg(long, value_delimiter = ',')]
        by: Option<Vec<String>>,
        /// First day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day (YYYY-MM-DD), exclusive.
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
        /// Show noise scale, interval width and cost without spending budget.
        #[arg(long)]
        dry_run: bool,
    },
    /// Grants: time-bound, dual-approved access to one collection's pseudonymous staged
    /// rows (one approval from role engineering, one from role privacy; never the
    /// requester's own).
    Grant {
        #[command(subcommand)]
        cmd: GrantCmd,
    },
    /// Staging, read under a live grant of your own (every read is audited).
    Staging {
        #[command(subcommand)]
        cmd: StagingCmd,
    },
    /// Data-subject requests: what Veil holds linked to one identifier (an email, a
    /// login), found through its pseudonym in every epoch whose keys still exist.
    Subject {
        #[command(subcommand)]
        cmd: SubjectCmd,
    },
    /// Contest a released number (role member): a short note on a metric's window, shown
    /// beside that window in every later report and in status; an analyst answers it.
    ///
    /// Examples:
    ///   veil --as ana contest deployment_frequency --window 2026-W45 --note "the release train was frozen that week"
    ///   veil --as analyst contest --answer c-0123456789abcdef --note "thanks, the freeze is now marked"
    ///   veil contest --list
    Contest {
        /// The metric whose window is contested.
        metric: Option<String>,
        /// The window as reports print it: 2026-W45, 2026-11-20 or 2026-11.
        #[arg(long)]
        window: Option<String>,
        /// The note (up to 500 characters; personal data is refused).
        #[arg(long)]
        note: Option<String>,
        /// Answer this contest (role analyst) with --note.
        #[arg(long, value_name = "ID")]
        answer: Option<String>,
        /// List every contest and its answers (never who filed it).
        #[arg(long)]
        list: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Epoch keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Principals and their tokens in veil.toml: a new token is printed once and only its
    /// SHA-256 is written; every change is audited.
    ///
    /// Examples:
    ///   veil principal add web-backend --role source --collections app.feature_used,app.error
    ///   veil principal add dana --role analyst
    ///   veil principal rotate web-backend
    ///   veil principal list
    Principal {
        #[command(subcommand)]
        cmd: PrincipalCmd,
    },
    /// Privacy posture at a glance.
    ///
    /// Example: veil status --format json
    Status {
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Write realistic synthetic events for the example policy (with planted PII).
    ///
    /// Example: veil generate --days 13 --out events.ndjson
    Generate {
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 13)]
        days: i64,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Leave out the events that must be rejected.
        #[arg(long)]
        no_bad: bool,
    },
    /// The quickstart: init, generate, ingest, seal and report in DIR (default ./veil-demo).
    ///
    /// Example: veil demo /tmp/veil-demo
    Demo {
        /// Where to run it (default ./veil-demo; it must not hold a Veil already).
        dir: Option<PathBuf>,
    },
    /// Benchmarks of the hot paths, with ratios to a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Check the policy against the six-question approval test and the risk register;
    /// prints each finding, then the checklist it evaluated.
    ///
    /// Example: veil policy lint policy.yaml --format json
    Lint {
        /// The policy file (default: the one veil.toml names, else ./policy.yaml).
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Explain a metric: purpose, meaning, threshold, noise and cost; without one, list
    /// every collection and metric.
    ///
    /// Examples:
    ///   veil policy explain
    ///   veil policy explain builds --format json
    Explain {
        /// The metric (its name, or collection.metric); omitted: list them all.
        metric: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
}

#[derive(Subcommand)]
pub enum PrincipalCmd {
    /// Add a principal with a new token (printed once).
    ///
    /// Example: veil principal add web-backend --role source --collections app.feature_used
    Add {
        /// The principal's name (budgets and audit entries bind to it).
        name: String,
        /// A role (repeatable or comma-separated): source, viewer, analyst, engineering,
        /// privacy, auditor, admin, member.
        #[arg(
            long = "role",
            value_name = "ROLE",
            required = true,
            value_delimiter = ','
        )]
        roles: Vec<String>,
        /// For a source: the collections it may send (comma-separated).
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// Collections on `lawful_basis: consent` for which this source attests consent.
        #[arg(long, value_delimiter = ',')]
        consent: Option<Vec<String>>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Give a principal a new token (printed once); the old one stops working when the
    /// gateway restarts.
    ///
    /// Example: veil principal rotate web-backend
    Rotate {
        /// The principal's name.
        name: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Every principal with its roles and collections (never a token or its hash).
    ///
    /// Example: veil principal list --format json
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
}

#[derive(Subcommand)]
pub enum CollectCmd {
    /// One `dev.commit` event per commit of each repository (author pseudonymized by the
    /// door, time generalized to the day, team from the team map; never a message, a path
    /// or a name). Incremental: a second run collects only new commits.
    ///
    /// Example: veil collect git ~/src/payments ~/src/web --since 2026-01-01
    Git {
        /// Repositories (work trees or bare git directories).
        #[arg(required = true)]
        repos: Vec<PathBuf>,
        /// Only commits authored on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only commits authored before this date (YYYY-MM-DD).
        #[arg(long)]
        until: Option<String>,
        /// Where to start walking (a branch, tag or commit); default HEAD.
        #[arg(long)]
        branch: Option<String>,
        /// Follow first parents only (the default walks merged history too).
        #[arg(long)]
        first_parent: bool,
        /// Walk and build every event, store and send nothing; print what would be sent.
        #[arg(long)]
        dry_run: bool,
        /// Send to a running gateway (its base URL) instead of the local store, as the
        /// source principal whose token is in VEIL_TOKEN; no cursor is kept.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
    /// Delivery facts from GitHub REST API JSON saved by `gh api --paginate` under
    /// DIR/OWNER/REPO/ (docs/collect.md gives the layout): `dev.pull_request`,
    /// `dev.review`, `dev.ci_run`, `dev.deployment` and `dev.change` events, one per team of
    /// the person each belongs to; titles, bodies, comments and branch names are never
    /// sent. Re-running over newer files counts nothing twice.
    ///
    /// Example: veil collect github exports/ --environment prod-eu
    Github {
        /// The directory holding OWNER/REPO/ exports.
        dir: PathBuf,
        /// More environments whose deployments count as production (repeatable), besides
        /// `production` and any GitHub marks `production_environment`.
        #[arg(long = "environment", value_name = "NAME")]
        environments: Vec<String>,
        /// Read and build every event, store and send nothing; print what would be sent.
        #[arg(long)]
        dry_run: bool,
        /// Send to a running gateway (its base URL) instead of the local store, as the
        /// source principal whose token is in VEIL_TOKEN.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum GrantCmd {
    /// Ask for access to one collection's staged rows.
    ///
    /// Example: veil --as eng-lead grant request --purpose "incident 4711: failing deploys" --scope ci.build_finished --duration 2d
    Request {
        /// Why (kept in the audit log; personal data is refused).
        #[arg(long)]
        purpose: String,
        /// The collection whose staged rows it opens.
        #[arg(long)]
        scope: String,
        /// How long it lasts once approved (e.g. 2d, 12h), at most the policy's
        /// `defaults.grant_max_duration` for the collection's zone.
        #[arg(long)]
        duration: String,
    },
    /// Approve a pending grant (as a principal with role engineering or privacy).
    ///
    /// Example: veil --as privacy-officer grant approve g-0123456789abcdef
    Approve {
        /// The grant's id (g-…).
        id: String,
    },
    /// End a pending or live grant now.
    ///
    /// Example: veil --as privacy-officer grant revoke g-0123456789abcdef
    Revoke {
        /// The grant's id (g-…).
        id: String,
    },
    /// Every grant with its state, approvals and expiry.
    ///
    /// Example: veil grant list --format json
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
}

#[derive(Subcommand)]
pub enum StagingCmd {
    /// Print the grant's staged rows as JSON (pseudonymous; audited with the row count).
    ///
    /// Example: veil --as eng-lead staging read --grant g-0123456789abcdef
    Read {
        /// The live grant to read under.
        #[arg(long)]
        grant: String,
    },
}

#[derive(Subcommand)]
pub enum SubjectCmd {
    /// Print as JSON everything linked to the identifier: staged events and
    /// per-contributor state (audited with counts; the identifier is never stored).
    ///
    /// Example: veil --as privacy-officer subject export alice@example.com
    Export {
        /// The identifier as the person gives it (normalized as the door normalizes it),
        /// or `-` to read it from the first line of standard input, out of shell history.
        id: String,
    },
    /// From now on, drop every event about this identifier at the door (counted as
    /// opted_out), in every key epoch present and future; what was stored before stays
    /// until erased or purged.
    ///
    /// Example: veil --as privacy-officer subject opt-out alice@example.com
    OptOut {
        /// The identifier as the person gives it (normalized as the door normalizes it),
        /// or `-` to read it from the first line of standard input, out of shell history.
        id: String,
    },
    /// Delete everything linked to the identifier (aggregates hold no one and stay).
    ///
    /// Examples:
    ///   veil --as privacy-officer subject erase alice@example.com
    ///   veil --as privacy-officer subject erase - < request.txt
    Erase {
        /// The identifier as the person gives it (normalized as the door normalizes it),
        /// or `-` to read it from the first line of standard input, out of shell history.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// List epochs; destroyed keys show as shredded.
    ///
    /// Example: veil keys list
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// End the current epoch and start a new one.
    ///
    /// Example: veil keys rotate
    Rotate,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Verify the hash chain, every stored release and the budget ledger against it,
    /// and every anchor; names the first bad entry.
    ///
    /// Example: veil audit verify --anchor ../anchors/veil-head.jsonl
    Verify {
        /// A file of anchors kept outside the data directory (one `veil audit head` JSON,
        /// or one per line): the chain must still hold each exactly. The gateway's
        /// `[audit] anchor_file`, when configured, is checked too.
        #[arg(long)]
        anchor: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Print the current head as JSON {seq, hash, at}, to keep outside the data directory.
    ///
    /// Example: veil audit head >> ../anchors/veil-head.jsonl
    Head,
    /// Print entries, oldest first.
    ///
    /// Example: veil audit log --since 120 --format json
    Log {
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        since: i64,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
}

/// The wire `veil bench http` sends events over.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum BenchProtocol {
    Ndjson,
    OtlpHttp,
    OtlpGrpc,
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// The in-process pipeline: parse, validate, scan, pseudonymize, aggregate, commit.
    ///
    /// Example: veil bench pipeline --events 1000000 --rounds 3
    Pipeline {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Strip event ids (no idempotency keys to store), to show their cost.
        #[arg(long)]
        no_ids: bool,
        /// Rounds of (parse, door, full path), interleaved so that the machine's noise
        /// hits every stage alike; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The PII scanner per value (typical values, the corpus's negatives and positives)
    /// against one memchr pass over the same strings.
    ///
    /// Example: veil bench pii
    Pii {
        /// Timed rounds of about a millisecond per measurement; the fastest is reported.
        #[arg(long, default_value_t = 300)]
        rounds: usize,
    },
    /// `veil collect git`'s walk and diff on a repository against
    /// `git log --numstat --no-renames --diff-merges=first-parent` on the same history, in
    /// the same run: commits per second and the ratio.
    ///
    /// Example: veil bench collect ~/src/linux --threads 2
    Collect {
        /// A git repository (a large one: tens of thousands of commits).
        repo: PathBuf,
        /// Threads for the walker (default: every core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// A release over a year of weekly windows for many groups.
    ///
    /// Example: veil bench release --groups 1000
    Release {
        #[arg(long, default_value_t = 1000)]
        groups: usize,
    },
    /// The dashboard's team-health page for many teams over a long range, rendered from a
    /// stored release (charts and the table view), against the API's JSON of the same
    /// release in the same run.
    ///
    /// Example: veil bench dashboard --teams 50 --weeks 104
    Dashboard {
        /// Teams in the team map and the release.
        #[arg(long, default_value_t = 50)]
        teams: usize,
        /// Weekly windows in the range.
        #[arg(long, default_value_t = 104)]
        weeks: usize,
        /// Renders per view; medians are reported.
        #[arg(long, default_value_t = 21)]
        rounds: usize,
    },
    /// The gateway over loopback: events/s and latency at several connection counts, and
    /// the ratio to the in-process pipeline measured in the same run; NDJSON, OTLP/HTTP or
    /// OTLP/gRPC.
    ///
    /// Example: veil bench http --events 400000 --connections 1,8,64 --protocol otlp-grpc
    Http {
        /// Events in all, per connection count.
        #[arg(long, default_value_t = 400_000)]
        events: usize,
        /// Events per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Connection counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        connections: Vec<usize>,
        /// How the events travel: NDJSON to /v1/events, OTLP/HTTP protobuf to /v1/logs, or
        /// OTLP/gRPC LogsService/Export (the same events as log records).
        #[arg(long, value_enum, default_value = "ndjson")]
        protocol: BenchProtocol,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A report piped into `head` ends quietly, as `ls | head` does. The gateway keeps std's
    // ignored SIGPIPE: a peer that hangs up must be an error on that connection, not a kill.
    if !matches!(cli.cmd, Cmd::Serve | Cmd::Bench { .. }) {
        sigpipe::reset();
    }
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<Exit>().map(|x| x.0).unwrap_or(1);
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
