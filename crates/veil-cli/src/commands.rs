//! One function per command. Each loads what it needs, calls the libraries, prints.

use crate::config::{token_hash, Config};
use crate::{exit, AuditCmd, BenchCmd, Cli, Cmd, CollectCmd, KeysCmd, OutFormat, PolicyCmd};
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use veil_access::{Action, Caller, Role};
use veil_pipeline::{KeyRing, Limits, Source};
use veil_policy::{Policy, PolicyError, Severity};
use veil_release::{Format, Query, ReleaseError};
use veil_store::{SqliteStore, Store, StoreError};

/// The example policy `veil init` writes.
pub const EXAMPLE_POLICY: &str = include_str!("../../../examples/policy.yaml");

/// The example team map the example policy names (`team_map: teams.yaml`).
pub const EXAMPLE_TEAMS: &str = include_str!("../../../examples/teams.yaml");

/// The example policy with its team map, compiled (benchmarks and demos).
pub fn example_policy(text: &str) -> std::result::Result<Policy, veil_policy::PolicyError> {
    veil_policy::load_with_team_map(
        text,
        "policy.yaml",
        chrono::Utc::now().date_naive(),
        Some(EXAMPLE_TEAMS),
    )
    .map(|(p, _)| p)
}

/// Example principals `veil init` creates: name, roles, collections.
const EXAMPLE_PRINCIPALS: &[(&str, &[&str], Option<&[&str]>)] = &[
    (
        "ingest",
        &["source"],
        Some(&[
            "ci.build_finished",
            "pr.merged",
            "app.feature_used",
            "app.error",
        ]),
    ),
    (
        "collector",
        &["source"],
        Some(&[
            "dev.commit",
            "dev.pull_request",
            "dev.review",
            "dev.ci_run",
            "dev.deployment",
            "dev.change",
        ]),
    ),
    ("analyst", &["analyst"], None),
    ("viewer", &["viewer"], None),
    ("eng-lead", &["engineering"], None),
    ("privacy-officer", &["privacy", "auditor"], None),
    ("team-member", &["member"], None),
];

/// The operating-system account of the process (its real uid), for the
/// `local:<os-user>` principal. Never the environment: `USER=bob` must not make anyone
/// bob in the audit log or give them bob's budget.
fn os_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) if !u.name.is_empty() => u.name,
        _ => format!("uid-{uid}"),
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Everything a command needs from an initialized directory.
pub struct Ctx {
    pub cfg: Config,
    pub policy: Policy,
    pub store: SqliteStore,
    pub keys: KeyRing,
    pub actor: String,
    pub collections: Option<Vec<String>>,
    who: Who,
}

impl Ctx {
    /// The collections on consent the caller attests (`None`: the local operator).
    pub(crate) fn consent(&self) -> Option<Vec<String>> {
        self.who.consent.clone()
    }

    /// The caller's roles (none for the local operator).
    pub(crate) fn who_roles(&self) -> Vec<Role> {
        self.who.roles.clone().unwrap_or_default()
    }

    /// Whether the caller is the local operator (no `--as`).
    pub(crate) fn is_operator(&self) -> bool {
        self.who.roles.is_none()
    }

    /// Refuses (audited, exit 1) unless the caller may take `action`.
    pub(crate) fn allow(&mut self, action: Action) -> Result<()> {
        allow(&self.who, &mut self.store, action)
    }
}

pub(crate) fn load_policy(path: &Path) -> Result<Policy> {
    match veil_policy::load(path) {
        Ok((p, _warnings)) => Ok(p),
        Err(e @ PolicyError::Invalid { .. }) => Err(exit(2, e.to_string())),
        Err(e) => Err(exit(2, e.to_string())),
    }
}

/// Who runs a command: the principal's name, its roles (`None`: the local operator) and,
/// for a source, the collections it may send.
struct Who {
    name: String,
    roles: Option<Vec<Role>>,
    collections: Option<Vec<String>>,
    consent: Option<Vec<String>>,
}

fn actor(cli: &Cli, cfg: &Config) -> Result<Who> {
    match &cli.as_principal {
        None => Ok(Who {
            name: format!("local:{}", os_user()),
            roles: None,
            collections: None,
            consent: None,
        }),
        Some(name) => {
            let token = std::env::var("VEIL_TOKEN")
                .map_err(|_| exit(2, "--as needs the principal's token in VEIL_TOKEN"))?;
            match cfg.principal_by_token(&token) {
                Some(p) if &p.name == name => Ok(Who {
                    name: p.name.clone(),
                    roles: Some(p.roles.iter().filter_map(|r| Role::parse(r)).collect()),
                    collections: p.collections.clone().or_else(|| Some(Vec::new())),
                    consent: p.consent.clone().or_else(|| Some(Vec::new())),
                }),
                _ => Err(exit(
                    2,
                    format!("VEIL_TOKEN is not the token of principal {name}"),
                )),
            }
        }
    }
}

impl Who {
    fn caller(&self) -> Caller<'_> {
        match &self.roles {
            None => Caller::Operator,
            Some(r) => Caller::Principal(r),
        }
    }
}

/// The one authorization function, as the gateway uses it; a refusal is audited and
/// exits 1.
fn allow(who: &Who, store: &mut dyn Store, action: Action) -> Result<()> {
    veil_access::authorize(who.caller(), action).map_err(|f| {
        let detail = serde_json::json!({"interface": "cli", "action": format!("{action:?}"), "reason": "forbidden"});
        let _ = store.audit(&who.name, "denied", &detail, now());
        exit(1, format!("principal {} may not do this: {f}", who.name))
    })
}

/// The configuration and its policy, without opening the store (a collector sending to
/// a gateway needs the policy's team map and retention, not a data directory).
pub(crate) fn config_and_policy(cli: &Cli) -> Result<(Config, Policy)> {
    let file = Config::locate(cli.config.as_deref());
    let cfg = Config::load(&file).map_err(|e| exit(2, format!("{e:#}")))?;
    let policy = load_policy(&cfg.policy)?;
    Ok((cfg, policy))
}

pub(crate) fn open(cli: &Cli) -> Result<Ctx> {
    let file = Config::locate(cli.config.as_deref());
    let cfg = Config::load(&file).map_err(|e| exit(2, format!("{e:#}")))?;
    if cfg.store != "sqlite" {
        return Err(exit(2, "this build of Veil stores data in SQLite only; set store = \"sqlite\" (PostgreSQL support is planned)"));
    }
    let policy = load_policy(&cfg.policy)?;
    let mut store = SqliteStore::open(&cfg.data_dir, &cfg.vault).map_err(|e| match e {
        StoreError::NotInitialized => exit(
            2,
            format!(
                "{} is not initialized; run `veil init`",
                cfg.data_dir.display()
            ),
        ),
        e @ (StoreError::VaultMissing(_) | StoreError::VaultMismatch(_)) => exit(2, e.to_string()),
        e => e.into(),
    })?;
    let who = actor(cli, &cfg)?;
    let t = now();
    store.note_policy(&policy, &who.name, t)?;
    // Scheduled key rotation: a new epoch once the current one is older than key_rotation.
    let epochs = store.epochs()?;
    if let Some(cur) = epochs.iter().find(|e| e.end == i64::MAX) {
        if t - cur.created_at >= policy.defaults().key_rotation {
            store.rotate_keys(t, "veil:scheduler")?;
        }
    }
    let keys = store.key_ring()?;
    Ok(Ctx {
        cfg,
        policy,
        store,
        keys,
        actor: who.name.clone(),
        collections: who.collections.clone(),
        who,
    })
}

/// Dispatches a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match &cli.cmd {
        Cmd::Init { dir } => init(
            dir.clone().unwrap_or_else(|| PathBuf::from(".")),
            &mut std::io::stdout(),
        ),
        Cmd::Policy {
            cmd: PolicyCmd::Lint { file, format },
        } => lint(&cli, file.as_deref(), *format),
        Cmd::Policy {
            cmd: PolicyCmd::Explain { metric, format },
        } => explain(&cli, metric.as_deref(), *format),
        Cmd::Ingest {
            file,
            strict,
            format,
        } => ingest(&cli, file, *strict, *format),
        Cmd::Principal { cmd } => crate::principal::run(&cli, cmd),
        Cmd::Collect {
            cmd:
                CollectCmd::Git {
                    repos,
                    since,
                    until,
                    branch,
                    first_parent,
                    dry_run,
                    to,
                },
        } => crate::collect::git(
            &cli,
            repos,
            &crate::collect::GitArgs {
                since: since.clone(),
                until: until.clone(),
                branch: branch.clone(),
                first_parent: *first_parent,
                dry_run: *dry_run,
                to: to.clone(),
            },
        ),
        Cmd::Collect {
            cmd:
                CollectCmd::Github {
                    dir,
                    environments,
                    dry_run,
                    to,
                },
        } => crate::collect::github(&cli, dir, environments, *dry_run, to.as_deref()),
        Cmd::Seal { format } => seal(&cli, *format),
        Cmd::Purge { dry_run, format } => purge(&cli, *dry_run, *format),
        Cmd::Serve => serve(&cli),
        Cmd::Report {
            metric,
            by,
            from,
            to,
            format,
            dry_run,
        } => {
            let q = Query {
                metric: metric.clone(),
                by: by.clone(),
                from: *from,
                to: *to,
            };
            report(&cli, &q, *format, *dry_run, &mut std::io::stdout())
        }
        Cmd::Keys { cmd } => keys(&cli, cmd),
        Cmd::Grant { cmd } => crate::govern::grant(&cli, cmd),
        Cmd::Staging { cmd } => crate::govern::staging(&cli, cmd),
        Cmd::Subject { cmd } => crate::govern::subject(&cli, cmd),
        Cmd::Contest {
            metric,
            window,
            note,
            answer,
            list,
            format,
        } => crate::govern::contest(
            &cli,
            crate::govern::ContestArgs {
                metric: metric.as_deref(),
                window: window.as_deref(),
                note: note.as_deref(),
                answer: answer.as_deref(),
                list: *list,
                format: *format,
            },
        ),
        Cmd::Audit { cmd } => audit(&cli, cmd),
        Cmd::Status { format } => status(&cli, *format),
        Cmd::Generate {
            out,
            seed,
            days,
            scale,
            no_bad,
        } => {
            let g = crate::generate::Gen {
                seed: *seed,
                now: now(),
                days: *days,
                scale: *scale,
                bad: !no_bad,
            };
            let n = match out {
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = crate::generate::generate(&g, &mut w)?;
                    w.flush()?;
                    n
                }
                None => crate::generate::generate(&g, &mut std::io::stdout().lock())?,
            };
            eprintln!("wrote {n} events");
            Ok(0)
        }
        Cmd::Demo { dir } => demo(dir.clone().unwrap_or_else(|| PathBuf::from("veil-demo"))),
        Cmd::Bench {
            cmd:
                BenchCmd::Pipeline {
                    events,
                    no_ids,
                    rounds,
                },
        } => crate::bench::pipeline(*events, *no_ids, *rounds),
        Cmd::Bench {
            cmd: BenchCmd::Collect { repo, threads },
        } => crate::bench::collect(repo, *threads),
        Cmd::Bench {
            cmd: BenchCmd::Release { groups },
        } => crate::bench::release(*groups),
        Cmd::Bench {
            cmd: BenchCmd::Pii { rounds },
        } => crate::bench::pii(*rounds),
        Cmd::Bench {
            cmd:
                BenchCmd::Dashboard {
                    teams,
                    weeks,
                    rounds,
                },
        } => crate::bench::dashboard(*teams, *weeks, *rounds),
        Cmd::Bench {
            cmd:
                BenchCmd::Http {
                    events,
                    batch,
                    connections,
                    protocol,
                },
        } => crate::bench::http(*events, *batch, connections, *protocol),
    }
}

use crate::principal::new_token;

/// `veil init` where a `veil.toml` is already written (a server's own configuration):
/// creates the store and the vault it names, once; an initialized store is left alone.
fn init_store_of(cfg_path: &Path, out: &mut dyn Write) -> Result<u8> {
    let cfg = Config::load(cfg_path).map_err(|e| exit(2, format!("{e:#}")))?;
    // Only a store that does not exist yet is made: any other state (initialized, a vault
    // missing or foreign) is left for the operator, with the reason.
    match SqliteStore::open(&cfg.data_dir, &cfg.vault) {
        Err(StoreError::NotInitialized) => {}
        Ok(_) => {
            return Err(exit(
                2,
                format!(
                    "{} already exists and its store {} is initialized",
                    cfg_path.display(),
                    cfg.data_dir.display()
                ),
            ))
        }
        Err(e) => return Err(exit(2, e.to_string())),
    }
    let policy = load_policy(&cfg.policy)?;
    let actor = format!("local:{}", os_user());
    let mut store = SqliteStore::init(&cfg.data_dir, &cfg.vault, now(), &actor)?;
    store.note_policy(&policy, &actor, now())?;
    writeln!(
        out,
        "initialized the store of {}\n  data    {}\n  vault   {}\nadd principals with `veil principal add NAME --role ROLE`",
        cfg_path.display(),
        cfg.data_dir.display(),
        cfg.vault.display()
    )?;
    Ok(0)
}

/// `veil init [DIR]`.
pub fn init(dir: PathBuf, out: &mut dyn Write) -> Result<u8> {
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cfg_path = dir.join("veil.toml");
    if cfg_path.exists() {
        return init_store_of(&cfg_path, out);
    }
    let policy_path = dir.join("policy.yaml");
    if !policy_path.exists() {
        std::fs::write(&policy_path, EXAMPLE_POLICY)?;
        let teams = dir.join("teams.yaml");
        if !teams.exists() {
            std::fs::write(&teams, EXAMPLE_TEAMS)?;
        }
    }
    let mut toml = String::from(
        "# Veil configuration. Paths are relative to this file. VEIL_* variables override keys.\n\
         data_dir = \"data\"\nvault = \"vault\"                    # the key vault: outside data_dir, backed up apart from it\npolicy = \"policy.yaml\"\nstore = \"sqlite\"\nlisten = \"127.0.0.1:8700\"\notlp_listen = \"127.0.0.1:4318\"\notlp_grpc_listen = \"127.0.0.1:4317\"\n",
    );
    let mut tokens = Vec::new();
    for (name, roles, colls) in EXAMPLE_PRINCIPALS {
        let token = new_token();
        toml.push_str(&format!(
            "\n[[principal]]\nname = \"{name}\"\nroles = {:?}\n",
            roles
        ));
        if let Some(c) = colls {
            toml.push_str(&format!("collections = {:?}\n", c));
        }
        toml.push_str(&format!("token_sha256 = \"{}\"\n", token_hash(&token)));
        tokens.push((name, token));
    }
    std::fs::write(&cfg_path, toml)?;
    let cfg = Config::load(&cfg_path)?;
    let policy = load_policy(&cfg.policy)?;
    let user = os_user();
    let actor = format!("local:{user}");
    let mut store = SqliteStore::init(&cfg.data_dir, &cfg.vault, now(), &actor)?;
    store.note_policy(&policy, &actor, now())?;
    writeln!(out, "initialized Veil in {}", dir.display())?;
    writeln!(
        out,
        "  config  {}\n  policy  {}\n  data    {}\n  vault   {}",
        cfg_path.display(),
        policy_path.display(),
        cfg.data_dir.display(),
        cfg.vault.display()
    )?;
    writeln!(
        out,
        "tokens (shown once; only their SHA-256 is stored in veil.toml):"
    )?;
    for (name, token) in tokens {
        writeln!(out, "  {name:<16} {token}")?;
    }
    Ok(0)
}

/// What `veil policy lint` evaluates: rule, title, what it checks (docs/policy.md says
/// how to fix each).
const LINT_RULES: &[(&str, &str, &str)] = &[
    ("schema", "structure", "keys, types, names, durations, transforms allowed per class, measures with min and max, metric fields"),
    ("Q1", "purpose", "every collection says what it collects, which question it answers and for whom"),
    ("Q2", "minimization", "every kept field is used by a metric or justified"),
    ("Q3", "lawful basis", "a lawful basis and its reference; consent for employees is flagged"),
    ("Q4", "de-identification", "no direct identifier kept or grouped by; group sizes at or above the floor; team sizes"),
    ("Q5", "access & retention", "retention within the zone's ceiling; hr_review has approvers; grant durations"),
    ("Q6", "explainability", "every metric says what it measures, what it does not mean and when it misleads"),
    ("R", "risk register", "no keystrokes, screen capture, active window, idle time, mouse, webcam, clipboard, message content or browsing history without a live exception"),
    ("otel", "OpenTelemetry bridges", "records from standard logging bridges are not rejected for the attributes they add"),
];

fn lint(cli: &Cli, file: Option<&Path>, format: OutFormat) -> Result<u8> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => Config::load(&Config::locate(cli.config.as_deref()))
            .map(|c| c.policy)
            .unwrap_or_else(|_| PathBuf::from("policy.yaml")),
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| exit(2, format!("cannot read policy {name}: {e}")))?;
    let raw = veil_policy::parse(&text, &name).map_err(|e| exit(2, e.to_string()))?;
    let team_map = veil_policy::load_team_map(&raw, &name).map_err(|e| exit(2, e.to_string()))?;
    let (_, findings) = veil_policy::analyze(
        &raw,
        &veil_policy::hash_text(&text),
        chrono::Utc::now().date_naive(),
        team_map,
    );
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let checklist: Vec<serde_json::Value> = LINT_RULES
        .iter()
        .map(|(rule, title, checks)| {
            let e = findings
                .iter()
                .filter(|f| f.rule == *rule && f.severity == Severity::Error)
                .count();
            let w = findings
                .iter()
                .filter(|f| f.rule == *rule && f.severity == Severity::Warning)
                .count();
            let status = if e > 0 { "fail" } else if w > 0 { "warn" } else { "pass" };
            serde_json::json!({"rule": rule, "title": title, "checks": checks, "status": status, "errors": e, "warnings": w})
        })
        .collect();
    let metrics: usize = raw.collections.iter().map(|c| c.metrics.len()).sum();
    match format {
        OutFormat::Json => println!(
            "{}",
            serde_json::json!({"file": name, "errors": errors, "warnings": warnings, "checklist": checklist, "findings": findings})
        ),
        OutFormat::Csv => crate::commands::no_csv(format, "this command")?,
        OutFormat::Table => {
            for f in &findings {
                println!("{name}: {f}");
            }
            println!(
                "checklist over {} collections and {metrics} metrics:",
                raw.collections.len()
            );
            for c in &checklist {
                let (e, w) = (
                    c["errors"].as_u64().unwrap_or(0),
                    c["warnings"].as_u64().unwrap_or(0),
                );
                let counts = match (e, w) {
                    (0, 0) => String::new(),
                    (e, 0) => format!(" ({e} errors)"),
                    (0, w) => format!(" ({w} warnings)"),
                    (e, w) => format!(" ({e} errors, {w} warnings)"),
                };
                println!(
                    "  {:<6} {:<4} {:<22} {}{counts}",
                    c["rule"].as_str().unwrap_or(""),
                    c["status"].as_str().unwrap_or(""),
                    c["title"].as_str().unwrap_or(""),
                    c["checks"].as_str().unwrap_or("")
                );
            }
            println!(
                "{name}: {} ({} collections, {metrics} metrics; {errors} errors, {warnings} warnings)",
                if errors == 0 { "ok" } else { "FAILED" },
                raw.collections.len()
            );
        }
    }
    Ok(if errors == 0 { 0 } else { 1 })
}

fn explain(cli: &Cli, metric: Option<&str>, format: OutFormat) -> Result<u8> {
    let ctx = open(cli)?;
    let Some(metric) = metric else {
        return explain_all(&ctx.policy, format);
    };
    if format == OutFormat::Csv {
        crate::commands::no_csv(format, "this command")?;
    }
    let mut out: Vec<String> = Vec::new();
    let mut doc = serde_json::json!({});
    let mut groupings = Vec::new();
    let (c, m) = ctx.policy.metric(metric).ok_or_else(|| {
        exit(
            2,
            format!("unknown metric {}", veil_pipeline::safe_name(metric)),
        )
    })?;
    doc["metric"] = m.name.clone().into();
    doc["collection"] = c.name.clone().into();
    doc["purpose"] = c.purpose_sentence().into();
    doc["explain"] = serde_json::json!({"measures": m.explain.measures, "does_not_mean": m.explain.does_not_mean, "misread_when": m.explain.misread_when});
    doc["min_group_size"] = m.min_group_size.into();
    out.push(format!("{} ({}.{})", m.name, c.name, m.name));
    out.push(c.purpose_sentence());
    out.push(format!("  measures:      {}", m.explain.measures));
    out.push(format!("  does not mean: {}", m.explain.does_not_mean));
    out.push(format!("  misread when:  {}", m.explain.misread_when));
    for &bi in &m.by {
        let f = &c.fields[bi];
        if f.ty() == veil_policy::FieldType::String && f.values().is_none() {
            out.push(format!(
                "{}: a value the PII scanner flags is never a group key — {}",
                f.name(),
                match f.on_pii() {
                    veil_policy::OnPii::Reject => "the event is rejected (on_pii: reject)",
                    veil_policy::OnPii::Redact =>
                        "it is counted under the fixed group [redacted] (on_pii: redact)",
                }
            ));
        }
        if f.from_team_map() {
            out.push(format!(
                "{}: teams come from the team map; a person in two teams counts in both, people in none count under `unassigned`, and a team whose roster is below {} is never shown",
                f.name(),
                m.min_group_size
            ));
        }
    }
    // Every grouping a report may ask for: the rule that applies and what it shows.
    let dims: Vec<&str> = m.by.iter().map(|&i| c.fields[i].name()).collect();
    for mask in 0..(1u32 << dims.len()) {
        let by: Vec<String> = (0..dims.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| dims[i].to_owned())
            .collect();
        let p = veil_release::plan(
            &ctx.store,
            &ctx.policy,
            &Query {
                metric: metric.into(),
                by: Some(by.clone()),
                ..Default::default()
            },
            now(),
        )?;
        let rule = match p.rule {
            veil_release::Rule::DeclaredKeys => "declared keys (every key listed, no selection)",
            veil_release::Rule::FreeFormKeys => "free-form keys (pre-threshold and DP selection)",
        };
        out.push(format!(
            "by [{}]: {rule}; {}",
            by.join(", "),
            p.threshold_sentence()
        ));
        groupings.push(serde_json::json!({
            "by": by, "rule": rule, "threshold": p.threshold_sentence(),
            "shown_probability": {"3": p.shown_probability(3), "5": p.shown_probability(5), "10": p.shown_probability(10), "15": p.shown_probability(15)},
        }));
        let (_, m) = ctx.policy.metric(metric).expect("planned metric exists");
        let window = match m.window {
            veil_policy::Window::Day => "day",
            veil_policy::Window::Week => "week",
            veil_policy::Window::Month => "month",
        };
        out.push(format!(
            "  chance a group is shown in a {window}: 3 active {:.0}% · 5 active {:.0}% · 10 active {:.0}% · 15 active {:.0}%",
            100.0 * p.shown_probability(3),
            100.0 * p.shown_probability(5),
            100.0 * p.shown_probability(10),
            100.0 * p.shown_probability(15)
        ));
        if mask == (1u32 << dims.len()) - 1 {
            let unit = p
                .unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default();
            let what = match m.kind {
                veil_policy::MetricKind::Histogram => format!(
                    "each bin's count gets noise of scale {:.2} (95% interval ±{}); the median and quantiles are read from the noisy bins",
                    p.value_scale, p.interval_half_width
                ),
                veil_policy::MetricKind::Mean => format!(
                    "the sum gets noise of scale {:.2}{unit} (95% interval ±{}{unit}) and the row count its own; a mean over n rows is off by about ±{}{unit} ÷ n",
                    p.value_scale, p.interval_half_width, p.interval_half_width
                ),
                veil_policy::MetricKind::Sum => format!(
                    "the sum gets noise of scale {:.2}{unit} (95% interval ±{}{unit})",
                    p.value_scale, p.interval_half_width
                ),
                veil_policy::MetricKind::Count | veil_policy::MetricKind::Distinct => format!(
                    "the count gets noise of scale {:.2} (95% interval ±{})",
                    p.value_scale, p.interval_half_width
                ),
            };
            doc["noise"] = serde_json::json!({
                "mechanism": p.mechanism.to_string(), "epsilon_per_window": p.epsilon_per_window,
                "epsilon_count": p.epsilon_count, "epsilon_value": p.epsilon_value, "delta": p.delta,
                "value_scale": p.value_scale, "interval_half_width": p.interval_half_width,
                "unit": p.unit, "says": what,
            });
            out.push(format!(
                "noise: {} · ε={} per window ({} for the noisy active count, {} for the value), δ={}; {what}",
                p.mechanism, p.epsilon_per_window, p.epsilon_count, p.epsilon_value, p.delta,
            ));
        }
    }
    out.push(format!(
        "budget: ε={} per {} of {}'s data, over every metric, grouping and reader, forever; each window is released once, and a report is charged only for windows not released before",
        c.budget.epsilon,
        veil_policy::duration::human(c.budget.period).replace("-day", "-day period"),
        c.name
    ));
    doc["budget"] =
        serde_json::json!({"epsilon": c.budget.epsilon, "period_days": c.budget.period / 86_400});
    doc["groupings"] = serde_json::Value::Array(groupings);
    match format {
        OutFormat::Json => println!("{doc}"),
        _ => {
            for l in out {
                println!("{l}");
            }
        }
    }
    Ok(0)
}

/// `veil policy explain` without a metric: every collection, its purpose and fields, and
/// every metric with what it measures.
fn explain_all(policy: &Policy, format: OutFormat) -> Result<u8> {
    let collections: Vec<serde_json::Value> = policy
        .collections()
        .iter()
        .map(|c| {
            serde_json::json!({
                "collection": c.name,
                "zone": format!("{:?}", c.zone).to_lowercase(),
                "purpose": c.purpose_sentence(),
                "fields": c.fields.iter().map(|f| serde_json::json!({
                    "name": f.name(), "class": f.class().as_str(), "transform": f.transform().as_str(),
                })).collect::<Vec<_>>(),
                "ignore_attributes": c.ignore.patterns(),
                "metrics": c.metrics.iter().map(|m| serde_json::json!({
                    "name": m.name, "measures": m.explain.measures,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    match format {
        OutFormat::Json => println!("{}", serde_json::json!({"collections": collections})),
        OutFormat::Csv => {
            println!("collection,metric,measures");
            for c in policy.collections() {
                for m in &c.metrics {
                    println!("{},{},{}", c.name, m.name, csv_field(&m.explain.measures));
                }
            }
        }
        OutFormat::Table => {
            for c in policy.collections() {
                println!("{}", c.name);
                println!("  {}", c.purpose_sentence());
                let fields: Vec<String> = c
                    .fields
                    .iter()
                    .map(|f| {
                        format!(
                            "{} ({}, {})",
                            f.name(),
                            f.class().as_str(),
                            f.transform().as_str()
                        )
                    })
                    .collect();
                println!("  fields: {}", fields.join("; "));
                if c.metrics.is_empty() {
                    println!("  no metrics");
                }
                let w = c.metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
                for m in &c.metrics {
                    println!("  {:<w$}  {}", m.name, m.explain.measures);
                }
            }
            println!("`veil policy explain METRIC` tells a metric's threshold, noise and cost");
        }
    }
    Ok(0)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Refuses `--format csv` where the output is not a table of rows.
pub(crate) fn no_csv(format: OutFormat, command: &str) -> Result<()> {
    if format == OutFormat::Csv {
        return Err(exit(
            2,
            format!("{command} prints --format table or json, not csv"),
        ));
    }
    Ok(())
}

fn ingest(cli: &Cli, file: &str, strict: bool, format: OutFormat) -> Result<u8> {
    no_csv(format, "veil ingest")?;
    let mut ctx = open(cli)?;
    ctx.allow(Action::Ingest)?;
    let source = Source {
        name: ctx.actor.clone(),
        collections: ctx.collections.clone(),
        consent: ctx.consent(),
    };
    let mut input: Box<dyn std::io::BufRead> = if file == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 16, std::io::stdin()))
    } else {
        let f =
            std::fs::File::open(file).map_err(|e| exit(2, format!("cannot read {file}: {e}")))?;
        Box::new(std::io::BufReader::with_capacity(1 << 16, f))
    };
    let o = ingest_reporting(&mut ctx, &source, &mut input, now(), &|line| {
        format!("line {line}")
    })?;
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string(&o)?);
        let rejected: usize = o.rejected.values().sum();
        return Ok(if strict && rejected > 0 { 1 } else { 0 });
    }
    let rejected = print_outcome(&o);
    if o.without_id > 0 {
        println!(
            "{} events had no id: each is identified by its content and line number, so ingesting this file again counts nothing twice",
            o.without_id
        );
    }
    Ok(if strict && rejected > 0 { 1 } else { 0 })
}

/// Runs NDJSON through the one ingest path, printing the first 20 rejections (reason and
/// sentence, never a value) at `place(line)`; the caller prints the outcome.
pub(crate) fn ingest_reporting(
    ctx: &mut Ctx,
    source: &Source,
    input: &mut dyn std::io::BufRead,
    now: i64,
    place: &dyn Fn(u64) -> String,
) -> Result<veil_store::IngestOutcome> {
    let mut shown = 0;
    let mut on_reject = |(line, r): &veil_ingest::Rejected| {
        if shown < 20 {
            eprintln!("{}: {}: {}", place(*line), r.reason(), r.message());
        } else if shown == 20 {
            eprintln!("(more rejections not shown; all are counted below and kept in quarantine with values redacted)");
        }
        shown += 1;
    };
    Ok(veil_ingest::ingest_stream(
        &mut ctx.store,
        &ctx.policy,
        &ctx.keys,
        Limits::default(),
        source,
        input,
        now,
        &mut on_reject,
    )?)
}

/// Prints what an ingest did (counts and reasons, never a value); returns how many
/// events were rejected.
pub(crate) fn print_outcome(o: &veil_store::IngestOutcome) -> usize {
    let rejected: usize = o.rejected.values().sum();
    println!(
        "accepted {}, duplicates {} (already ingested, not counted again), rejected {}",
        o.accepted, o.duplicates, rejected
    );
    for (reason, n) in &o.rejected {
        println!("  {reason:<24} {n}");
    }
    if o.clamped + o.redacted > 0 {
        println!(
            "clamped {} measures into range; redacted personal data in {} strings",
            o.clamped, o.redacted
        );
    }
    if o.dropped_attributes > 0 {
        println!(
            "dropped {} undeclared attributes named in ignore_attributes (never stored)",
            o.dropped_attributes
        );
    }
    rejected
}

fn seal(cli: &Cli, format: OutFormat) -> Result<u8> {
    no_csv(format, "veil seal")?;
    let mut ctx = open(cli)?;
    ctx.allow(Action::Seal)?;
    let o = ctx.store.seal(&ctx.policy, &ctx.keys, now(), &ctx.actor)?;
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string(&o)?);
        return Ok(0);
    }
    println!("sealed {} windows", o.windows.len());
    for (m, w) in &o.windows {
        println!("  {m} {w}");
    }
    Ok(0)
}

/// `veil purge [--dry-run]`: retention, with what went (or would go) per zone.
fn purge(cli: &Cli, dry_run: bool, format: OutFormat) -> Result<u8> {
    let mut ctx = open(cli)?;
    ctx.allow(Action::Purge)?;
    let mode = if dry_run {
        veil_store::PurgeMode::DryRun
    } else {
        veil_store::PurgeMode::Run
    };
    let r = ctx.store.purge(&ctx.policy, now(), &ctx.actor, mode)?;
    match format {
        OutFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        OutFormat::Csv => no_csv(format, "veil purge")?,
        OutFormat::Table => print!("{}", purge_text(&r)),
    }
    Ok(0)
}

/// The purge report as lines a privacy officer reads.
pub(crate) fn purge_text(r: &veil_store::PurgeReport) -> String {
    let per = |m: &std::collections::BTreeMap<String, i64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(if r.dry_run {
        "would purge (dry run: nothing was changed or destroyed)\n"
    } else {
        "purged\n"
    });
    let mut line = |s: String| {
        out.push_str("  ");
        out.push_str(&s);
        out.push('\n');
    };
    if !r.staging_events.is_empty() {
        let n: i64 = r.staging_events.values().sum();
        line(format!(
            "staging: {n} events past retention ({})",
            per(&r.staging_events)
        ));
    }
    if r.dedupe_runs > 0 {
        line(format!(
            "idempotency: {} ids in {} runs",
            r.dedupe_ids, r.dedupe_runs
        ));
    }
    if r.contributor_runs > 0 {
        line(format!(
            "per-contributor state of metrics no longer declared: {} runs",
            r.contributor_runs
        ));
    }
    if r.quarantine_rows > 0 {
        line(format!("quarantine: {} rows", r.quarantine_rows));
    }
    if !r.aggregate_rows.is_empty() {
        let n: i64 = r.aggregate_rows.values().sum();
        line(format!(
            "aggregates: {n} rows past retention ({})",
            per(&r.aggregate_rows)
        ));
    }
    if !r.releases.is_empty() {
        line(format!("releases: {} stored releases", r.releases.len()));
    }
    for e in &r.epochs_shredded {
        line(format!(
            "keys: epoch {e} {} (crypto-shredding: nothing of it can be decrypted or linked to a person)",
            if r.dry_run { "would be shredded" } else { "shredded" }
        ));
    }
    for (e, why) in &r.epochs_held {
        line(format!("keys: epoch {e} kept: {why}"));
    }
    if r.is_empty() && r.epochs_held.is_empty() {
        line("nothing is past its retention".into());
    }
    out
}

/// `veil report`: a dry-run plan, or a release rendered from its stored record.
pub fn report(
    cli: &Cli,
    q: &Query,
    format: OutFormat,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let mut ctx = open(cli)?;
    let t = now();
    let map = |e: ReleaseError| match e {
        ReleaseError::BudgetExhausted { .. }
        | ReleaseError::NothingSealed { .. }
        | ReleaseError::NotReleased => exit(1, e.to_string()),
        ReleaseError::Store(s) => anyhow::Error::from(s),
        e => exit(2, e.to_string()),
    };
    ctx.allow(if dry_run {
        Action::PlanRelease
    } else {
        Action::ReadRelease
    })?;
    if dry_run {
        let p = veil_release::plan(&ctx.store, &ctx.policy, q, t).map_err(map)?;
        if format == OutFormat::Json {
            writeln!(out, "{}", serde_json::to_string_pretty(&p)?)?;
        } else {
            writeln!(out, "dry run: nothing released, no budget spent")?;
            writeln!(
                out,
                "metric {} by [{}] {} .. {}: {} sealed windows with data, {} released before (reused, free), {} new",
                p.metric,
                p.by.join(", "),
                p.from,
                p.to,
                p.windows.len(),
                p.reused_windows.len(),
                p.new_windows.len()
            )?;
            writeln!(
                out,
                "cost now ε={} (ε={} per new window, δ={})",
                // + 0.0: a sum of no windows is -0, which reads as a refund.
                p.cost + 0.0,
                p.epsilon_per_window,
                p.delta
            )?;
            for c in &p.charges {
                writeln!(
                    out,
                    "  budget of the period from {}: ε={} spent of {}, ε={} left after",
                    c.period, c.spent, p.budget, c.left_after
                )?;
            }
            writeln!(out, "shown when: {}", p.threshold_sentence())?;
            writeln!(
                out,
                "value noise {} scale {:.3}; 95% interval ±{}",
                p.mechanism, p.value_scale, p.interval_half_width
            )?;
        }
        return Ok(0);
    }
    let may_release = veil_access::authorize(ctx.who.caller(), Action::Release).is_ok();
    let mut rng = ChaCha20Rng::from_entropy();
    let r = veil_release::answer(
        &mut ctx.store,
        &ctx.policy,
        &ctx.actor,
        may_release,
        q,
        t,
        &mut rng,
    )
    .map_err(map)?;
    let f = match format {
        OutFormat::Table => Format::Table,
        OutFormat::Json => Format::Json,
        OutFormat::Csv => Format::Csv,
    };
    let text = veil_release::render(&r, f);
    // Notes from the people measured, beside the windows they contest.
    let contests = veil_govern::contests::for_metric(&ctx.store, &r.document().metric)?;
    let text = veil_govern::contests::annotate(
        &text,
        match format {
            OutFormat::Table => veil_govern::contests::ReportFormat::Table,
            OutFormat::Json => veil_govern::contests::ReportFormat::Json,
            OutFormat::Csv => veil_govern::contests::ReportFormat::Csv,
        },
        &contests,
    );
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    if r.cached() && format == OutFormat::Table {
        writeln!(
            out,
            "(every window was released before: these are the stored numbers; nothing was charged)"
        )?;
    }
    Ok(0)
}

fn keys(cli: &Cli, cmd: &KeysCmd) -> Result<u8> {
    let mut ctx = open(cli)?;
    ctx.allow(match cmd {
        KeysCmd::Rotate => Action::RotateKeys,
        KeysCmd::List { .. } => Action::ReadStatus,
    })?;
    if let KeysCmd::Rotate = cmd {
        let id = ctx.store.rotate_keys(now(), &ctx.actor)?;
        println!("started epoch {}", id.0);
    }
    let fmt = |t: i64| match t {
        i64::MIN => "-".to_owned(),
        i64::MAX => "(current)".to_owned(),
        t => chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default(),
    };
    let epochs = ctx.store.epochs()?;
    if let KeysCmd::List { format } = cmd {
        no_csv(*format, "veil keys list")?;
        if *format == OutFormat::Json {
            let rows: Vec<serde_json::Value> = epochs
                .iter()
                .map(|e| {
                    let at = |t: i64| (t != i64::MIN && t != i64::MAX).then_some(t);
                    serde_json::json!({
                        "epoch": e.id.0, "start": at(e.start), "end": at(e.end),
                        "state": match (e.keys.is_some(), e.end == i64::MAX) {
                            (false, _) => "shredded", (true, true) => "active", (true, false) => "retired",
                        },
                        "shredded_at": e.shredded_at,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"epochs": rows, "vault": ctx.store.vault_location()})
            );
            return Ok(0);
        }
    }
    println!("{:<6} {:<18} {:<18} status", "epoch", "from", "until");
    for e in epochs {
        let status = match (e.keys.is_some(), e.end == i64::MAX) {
            (false, _) => format!("shredded {}", e.shredded_at.map(fmt).unwrap_or_default()),
            (true, true) => "active".to_owned(),
            (true, false) => "retired (keys kept until its staging retention ends)".to_owned(),
        };
        println!(
            "{:<6} {:<18} {:<18} {}",
            e.id.0,
            fmt(e.start),
            fmt(e.end),
            status.trim_end()
        );
    }
    println!("vault: {}", ctx.store.vault_location());
    Ok(0)
}

fn audit(cli: &Cli, cmd: &AuditCmd) -> Result<u8> {
    let file = Config::locate(cli.config.as_deref());
    let cfg = Config::load(&file).map_err(|e| exit(2, format!("{e:#}")))?;
    // Verification must not append to the log it verifies: open the store directly
    // (a refusal is the one thing appended).
    let mut store =
        SqliteStore::open(&cfg.data_dir, &cfg.vault).map_err(|e| exit(2, e.to_string()))?;
    let who = actor(cli, &cfg)?;
    allow(&who, &mut store, Action::ReadAudit)?;
    match cmd {
        AuditCmd::Verify { anchor, format } => {
            no_csv(*format, "veil audit verify")?;
            let mut files = anchor.clone();
            files.extend(cfg.audit.anchor_file.iter().cloned());
            let mut anchors = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    exit(2, format!("cannot read anchor file {}: {e}", f.display()))
                })?;
                anchors.extend(
                    veil_store::Anchor::parse_all(&text)
                        .map_err(|e| exit(2, format!("anchor file {}: {e}", f.display())))?,
                );
            }
            let v = store.audit_verify(&anchors)?;
            if *format == OutFormat::Json {
                println!("{}", serde_json::to_string(&v)?);
                return Ok(if v.ok { 0 } else { 1 });
            }
            if v.ok {
                println!(
                    "audit log ok: {} entries, head {}{}",
                    v.entries,
                    v.head.unwrap_or_default(),
                    match anchors.len() {
                        0 => String::from("; no anchor given (`veil audit head` prints one to keep outside the data directory)"),
                        n => format!("; {n} anchor(s) held"),
                    }
                );
                Ok(0)
            } else {
                println!(
                    "audit log FAILED at entry #{}: {}",
                    v.first_bad.unwrap_or(0),
                    v.problem.unwrap_or_default()
                );
                Ok(1)
            }
        }
        AuditCmd::Head => {
            let head = store
                .audit_head()?
                .ok_or_else(|| exit(1, "the audit log is empty"))?;
            println!("{}", serde_json::to_string(&veil_store::Anchor::of(&head))?);
            Ok(0)
        }
        AuditCmd::Log { since, format } => {
            no_csv(*format, "veil audit log")?;
            let entries = store.audit_log(*since, usize::MAX)?;
            if *format == OutFormat::Json {
                for e in entries {
                    println!("{}", serde_json::to_string(&e)?);
                }
            } else {
                for e in entries {
                    println!(
                        "#{:<5} {} {:<18} {:<16} {}",
                        e.seq, e.at, e.actor, e.action, e.detail
                    );
                }
            }
            Ok(0)
        }
    }
}

fn status(cli: &Cli, format: OutFormat) -> Result<u8> {
    no_csv(format, "veil status")?;
    let mut ctx = open(cli)?;
    ctx.allow(Action::ReadStatus)?;
    let mut doc = veil_gateway::server::posture(&ctx.store, &ctx.policy, now())?;
    doc["config"] = serde_json::json!({"file": ctx.cfg.file, "data_dir": ctx.cfg.data_dir, "vault": ctx.store.vault_location(), "listen": ctx.cfg.listen, "otlp_listen": ctx.cfg.otlp_listen, "otlp_grpc_listen": ctx.cfg.otlp_grpc_listen});
    let ids = doc["direct_identifiers"]["total"].as_i64().unwrap_or(0);
    let pseudo = doc["direct_identifiers"]["pseudonymized"]
        .as_i64()
        .unwrap_or(0);
    let last_seal = doc["last_seal"].as_str().map(str::to_owned);
    let audit = &doc["audit"];
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} — policy {}",
            ctx.policy.organization(),
            &ctx.policy.hash()[..12]
        );
        let str_of = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            v => v.to_string(),
        };
        let mut rows = Vec::new();
        for c in ctx.policy.collections() {
            for (i, f) in c.fields.iter().enumerate() {
                rows.push(vec![
                    if i == 0 {
                        c.name.clone()
                    } else {
                        String::new()
                    },
                    f.name().to_owned(),
                    f.class().as_str().to_owned(),
                    f.transform().as_str().to_owned(),
                ]);
            }
        }
        section("collections and what the door keeps of each field");
        print!(
            "{}",
            table(&["collection", "field", "class", "transform"], &rows)
        );
        println!(
            "direct identifiers: {ids} declared, {pseudo} pseudonymized, {} dropped, 0 kept raw",
            ids - pseudo
        );
        section("rejections by reason (events)");
        let rows: Vec<Vec<String>> = doc["rejections_by_reason"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| vec![k.clone(), str_of(v)])
            .collect();
        print!("{}", table(&["reason", "events"], &rows));
        section("privacy budget (ε) for the data of the current period");
        let rows: Vec<Vec<String>> = doc["budget"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(c, v)| {
                vec![
                    c.clone(),
                    str_of(&v["period_from"]),
                    str_of(&v["spent"]),
                    str_of(&v["epsilon"]),
                    str_of(&v["left"]),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["collection", "period from", "spent", "of", "left"], &rows)
        );
        section("budget spent by principal (ε, all periods)");
        let rows: Vec<Vec<String>> = doc["budget_spent_by_principal"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| vec![k.clone(), str_of(v)])
            .collect();
        print!("{}", table(&["principal", "spent"], &rows));
        section("staging (encrypted events, kept until retention)");
        let rows: Vec<Vec<String>> = doc["staging"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|st| {
                vec![
                    str_of(&st["collection"]),
                    str_of(&st["epoch"]),
                    str_of(&st["events"]),
                    str_of(&st["oldest_day"]),
                    str_of(&st["retention"]),
                    if st["past_retention"] == true {
                        "some past retention: run veil purge".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "collection",
                    "epoch",
                    "events",
                    "oldest day",
                    "retention",
                    ""
                ],
                &rows
            )
        );
        section("retention of the other zones");
        let rows: Vec<Vec<String>> = [
            ("aggregates", "oldest_window"),
            ("quarantine", "oldest_received"),
        ]
        .iter()
        .map(|(zone, at)| {
            let z = &doc["oldest"][zone];
            vec![
                zone.to_string(),
                z[at].as_str().unwrap_or("none").to_owned(),
                str_of(&z["retention"]),
                if z["past_retention"] == true {
                    "some past retention: run veil purge".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
        print!("{}", table(&["zone", "oldest", "retention", ""], &rows));
        section("key epochs");
        let rows: Vec<Vec<String>> = doc["vault"]["epochs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                vec![
                    str_of(&e["epoch"]),
                    str_of(&e["state"]),
                    e["from"].as_str().unwrap_or("the beginning").to_owned(),
                    e["until"].as_str().unwrap_or("now").to_owned(),
                ]
            })
            .collect();
        print!("{}", table(&["epoch", "state", "from", "until"], &rows));
        println!();
        let grants = doc["grants"].as_array().map(Vec::len).unwrap_or(0);
        let facts = [
            (
                "last seal",
                last_seal.clone().unwrap_or_else(|| "never".into()),
            ),
            (
                "last purge",
                doc["last_purge"]["at"]
                    .as_str()
                    .unwrap_or("never")
                    .to_owned(),
            ),
            (
                "grants pending or live",
                format!("{grants} (veil grant list)"),
            ),
            ("identifiers opted out", str_of(&doc["opted_out"])),
            (
                "vault",
                doc["vault"]["location"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            (
                "audit",
                format!(
                    "{} entries, {}",
                    audit["entries"],
                    if audit["verified"] == true {
                        "verified".to_string()
                    } else {
                        format!("FAILED: {}", audit["problem"].as_str().unwrap_or_default())
                    }
                ),
            ),
        ];
        let w = facts.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in facts {
            println!("{k:<w$}  {v}");
        }
    }
    Ok(0)
}

/// A heading between the tables of a text report.
fn section(title: &str) {
    println!("\n{title}");
}

/// Rows as an aligned text table under its headers, indented two spaces (the release
/// renderer's columns); "(none)" when there are no rows.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "  (none)\n".into();
    }
    veil_release::aligned(headers, rows)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect()
}

/// `veil serve`: the gateway on the embedded store until SIGTERM or Ctrl-C.
fn serve(cli: &Cli) -> Result<u8> {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VEIL_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let ctx = open(cli)?;
    let cfg = veil_gateway::server::ServeConfig {
        listen: ctx.cfg.listen.clone(),
        otlp_listen: Some(ctx.cfg.otlp_listen.clone()).filter(|s| !s.is_empty()),
        otlp_grpc_listen: Some(ctx.cfg.otlp_grpc_listen.clone()).filter(|s| !s.is_empty()),
        principals: ctx.cfg.gateway_principals(),
        limits: ctx.cfg.server_limits(),
        event_limits: veil_pipeline::Limits::default(),
        tls: ctx.cfg.tls.clone(),
        anchor: (ctx.cfg.audit.anchor_file.is_some() || ctx.cfg.audit.anchor_command.is_some())
            .then(|| veil_gateway::server::anchor::AnchorSink {
                file: ctx.cfg.audit.anchor_file.clone(),
                command: ctx.cfg.audit.anchor_command.clone(),
                every: std::time::Duration::from_secs(ctx.cfg.audit.anchor_interval_secs),
            }),
        dashboard: ctx.cfg.dashboard.clone(),
        clock: veil_gateway::server::Clock::system(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server =
            veil_gateway::server::Server::bind(cfg, Box::new(ctx.store), ctx.policy).await?;
        let scheme = if ctx.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!("veil serve: {scheme}://{}", server.local_addr());
        if let Some(a) = server.otlp_addr() {
            eprintln!("veil serve: OTLP/HTTP logs on {scheme}://{a}/v1/logs");
        }
        if let Some(a) = server.grpc_addr() {
            eprintln!("veil serve: OTLP/gRPC logs on {scheme}://{a}");
        }
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn demo(dir: PathBuf) -> Result<u8> {
    if dir.join("veil.toml").exists() {
        return Err(exit(
            2,
            format!(
                "{} already holds a Veil; remove it or name another directory",
                dir.display()
            ),
        ));
    }
    println!("== 1. veil init {}", dir.display());
    init(dir.clone(), &mut std::io::stdout())?;
    let events = dir.join("events.ndjson");
    println!(
        "\n== 2. veil generate: synthetic events with planted personal data → {}",
        events.display()
    );
    let g = crate::generate::Gen {
        seed: 42,
        now: now(),
        days: 13,
        scale: 1.0,
        bad: true,
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(&events)?);
    let n = crate::generate::generate(&g, &mut w)?;
    w.flush()?;
    drop(w);
    println!("wrote {n} events");
    let cli = |cmd: Cmd| Cli {
        config: Some(dir.join("veil.toml")),
        as_principal: None,
        cmd,
    };
    println!("\n== 3. veil ingest {}", events.display());
    run(cli(Cmd::Ingest {
        file: events.display().to_string(),
        strict: false,
        format: OutFormat::Table,
    }))?;
    println!("\n== 4. veil seal");
    run(cli(Cmd::Seal {
        format: OutFormat::Table,
    }))?;
    for (metric, by) in [("builds", "team"), ("feature_usage", "feature,region")] {
        println!("\n== 5. veil report {metric} --by {by}");
        let q = Query {
            metric: metric.into(),
            by: Some(by.split(',').map(str::to_owned).collect()),
            from: None,
            to: None,
        };
        report(
            &cli(Cmd::Seal {
                format: OutFormat::Table,
            }),
            &q,
            OutFormat::Table,
            false,
            &mut std::io::stdout(),
        )?;
    }
    println!("\n== 6. veil audit verify");
    run(cli(Cmd::Audit {
        cmd: AuditCmd::Verify {
            anchor: Vec::new(),
            format: OutFormat::Table,
        },
    }))?;
    // The hints name this very binary, so they work as printed.
    let veil = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "veil".into());
    println!("\nTry next:\n  cd {}", dir.display());
    for args in [
        "status",
        "policy explain builds",
        "report build_duration --format json",
        "audit log",
        "serve   # then open the dashboard at http://127.0.0.1:8700/ and sign in with a token above",
    ] {
        println!("  {veil} {args}");
    }
    Ok(0)
}
