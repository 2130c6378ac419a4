//! `veil grant …` and `veil staging read`: the CLI face of `veil-govern`.

use crate::commands::{now, open};
use crate::{exit, Cli, GrantCmd, OutFormat, StagingCmd, SubjectCmd};
use anyhow::Result;
use veil_access::Action;
use veil_govern::{GovernError, Grant, GrantState};

/// The caller, owned, so the store can be borrowed mutably while it acts.
struct Me {
    name: String,
    roles: Vec<veil_access::Role>,
    operator: bool,
}

impl Me {
    fn of(ctx: &crate::commands::Ctx) -> Me {
        Me {
            name: ctx.actor.clone(),
            roles: ctx.who_roles(),
            operator: ctx.is_operator(),
        }
    }

    fn actor(&self) -> veil_govern::Actor<'_> {
        veil_govern::Actor {
            name: &self.name,
            roles: &self.roles,
            operator: self.operator,
        }
    }
}

/// A refusal exits 1 with its sentence (it is already in the audit log).
fn refused(e: GovernError) -> anyhow::Error {
    match e {
        GovernError::Refused { code, message } => exit(1, format!("refused ({code}): {message}")),
        e => e.into(),
    }
}

fn stamp(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn describe(g: &Grant, state: GrantState) -> String {
    let approvals: Vec<String> = g
        .approvals
        .iter()
        .map(|a| format!("{} ({})", a.principal, a.role))
        .collect();
    let until = match (state, g.expires_at()) {
        (GrantState::Live, Some(t)) => format!("until {}", stamp(t)),
        (GrantState::Pending, _) => format!(
            "needs {}",
            ["engineering", "privacy"]
                .iter()
                .filter(|r| !g.approvals.iter().any(|a| &a.role == *r))
                .copied()
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        _ => String::new(),
    };
    format!(
        "{}  {:<8} {:<22} by {:<16} for {:<6} {}\n    purpose: {}\n    approved by: {}",
        g.id,
        state.as_str(),
        g.scope,
        g.requester,
        veil_policy::duration::human(g.duration_secs),
        until,
        g.purpose,
        if approvals.is_empty() {
            "nobody yet".to_owned()
        } else {
            approvals.join(", ")
        }
    )
}

/// `veil grant request|approve|revoke|list`.
pub fn grant(cli: &Cli, cmd: &GrantCmd) -> Result<u8> {
    let mut ctx = open(cli)?;
    ctx.allow(match cmd {
        GrantCmd::Request { .. } => Action::RequestGrant,
        GrantCmd::Approve { .. } => Action::ApproveGrant,
        GrantCmd::Revoke { .. } => Action::RevokeGrant,
        GrantCmd::List { .. } => Action::ListGrants,
    })?;
    let t = now();
    let me = Me::of(&ctx);
    let who = me.actor();
    let g = match cmd {
        GrantCmd::Request {
            purpose,
            scope,
            duration,
        } => {
            let d = veil_policy::duration::parse(duration)
                .ok_or_else(|| exit(2, "--duration must be a duration like 2d, 12h or 30m"))?;
            veil_govern::grants::request(&mut ctx.store, &ctx.policy, &who, purpose, scope, d, t)
        }
        GrantCmd::Approve { id } => veil_govern::grants::approve(&mut ctx.store, &who, id, t),
        GrantCmd::Revoke { id } => veil_govern::grants::revoke(&mut ctx.store, &who, id, t),
        GrantCmd::List { format } => {
            let all = veil_govern::grants::list(&ctx.store, t)?;
            match format {
                OutFormat::Json => {
                    let v: Vec<serde_json::Value> = all
                        .iter()
                        .map(|(g, s)| {
                            let mut v = serde_json::to_value(g).expect("a grant serializes");
                            v["state"] = s.as_str().into();
                            v["expires_at"] = g.expires_at().into();
                            v
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                OutFormat::Table => {
                    if all.is_empty() {
                        println!("no grants");
                    }
                    for (g, s) in &all {
                        println!("{}", describe(g, *s));
                    }
                }
                OutFormat::Csv => crate::commands::no_csv(*format, "veil grant list")?,
            }
            return Ok(0);
        }
    }
    .map_err(refused)?;
    println!("{}", describe(&g, g.state(t)));
    Ok(0)
}

/// `veil staging read --grant ID`.
pub fn staging(cli: &Cli, cmd: &StagingCmd) -> Result<u8> {
    let StagingCmd::Read { grant } = cmd;
    let mut ctx = open(cli)?;
    ctx.allow(Action::ReadStaging)?;
    let me = Me::of(&ctx);
    let who = me.actor();
    let principals = ctx.cfg.principals.clone();
    let roles_of = move |name: &str| {
        principals.iter().find(|p| p.name == name).map(|p| {
            p.roles
                .iter()
                .filter_map(|r| veil_access::Role::parse(r))
                .collect()
        })
    };
    let rows = veil_govern::grants::read(
        &mut ctx.store,
        &ctx.policy,
        &ctx.keys,
        &roles_of,
        &who,
        grant,
        now(),
    )
    .map_err(refused)?;
    let doc = serde_json::json!({"grant": grant, "rows": rows});
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

/// `veil subject export|erase ID`.
pub fn subject(cli: &Cli, cmd: &SubjectCmd) -> Result<u8> {
    let mut ctx = open(cli)?;
    ctx.allow(Action::SubjectRequest)?;
    let actor = ctx.actor.clone();
    let (SubjectCmd::Export { id } | SubjectCmd::OptOut { id } | SubjectCmd::Erase { id }) = cmd;
    let id = subject_id(id)?;
    let id = id.as_str();
    match cmd {
        SubjectCmd::Export { .. } => {
            let x = veil_govern::subject::export(
                &mut ctx.store,
                &ctx.policy,
                &ctx.keys,
                &actor,
                id,
                now(),
            )?;
            println!("{}", serde_json::to_string_pretty(&x)?);
        }
        SubjectCmd::OptOut { .. } => {
            let new = veil_govern::subject::opt_out(
                &mut ctx.store,
                &ctx.policy,
                &ctx.keys,
                &actor,
                id,
                now(),
            )?;
            println!(
                "{}: later events about this person are dropped at the door and counted as opted_out; what was stored before stays until `veil subject erase` or retention removes it",
                if new { "opted out" } else { "already opted out" }
            );
        }
        SubjectCmd::Erase { .. } => {
            let (events, records) = veil_govern::subject::erase(
                &mut ctx.store,
                &ctx.policy,
                &ctx.keys,
                &actor,
                id,
                now(),
            )?;
            println!(
                "erased {events} staged events and {records} per-contributor records in the epochs whose keys exist; aggregates hold no one and are unchanged"
            );
        }
    }
    Ok(0)
}

/// The identifier a subject request names: the argument, or with `-` the first line of
/// standard input, which keeps a person's email out of shell history and the process list.
fn subject_id(arg: &str) -> Result<String> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| {
        exit(
            2,
            format!("cannot read the identifier from standard input: {e}"),
        )
    })?;
    let id = line.trim_end_matches(['\n', '\r']);
    if id.trim().is_empty() {
        return Err(exit(
            2,
            "no identifier on standard input: give it as the first line (`-` reads it from there)",
        ));
    }
    Ok(id.to_owned())
}

/// What `veil contest` was asked.
pub struct ContestArgs<'a> {
    pub metric: Option<&'a str>,
    pub window: Option<&'a str>,
    pub note: Option<&'a str>,
    pub answer: Option<&'a str>,
    pub list: bool,
    pub format: OutFormat,
}

fn show_contest(c: &veil_govern::contests::Contest) -> String {
    let mut s = format!(
        "{}  {} {}  {}\n    note: {}",
        c.id,
        c.metric,
        c.window,
        if c.is_open() { "open" } else { "answered" },
        c.note
    );
    for a in &c.answers {
        s.push_str(&format!("\n    answer ({}): {}", a.by, a.note));
    }
    s
}

/// `veil contest`: file (member), answer (analyst) or list.
pub fn contest(cli: &Cli, a: ContestArgs) -> Result<u8> {
    let mut ctx = open(cli)?;
    let t = now();
    let me = Me::of(&ctx);
    let who = me.actor();
    if a.list {
        ctx.allow(Action::ListContests)?;
        let all = veil_govern::contests::list(&ctx.store)?;
        match a.format {
            OutFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
            OutFormat::Table => {
                if all.is_empty() {
                    println!("no contests");
                }
                for c in &all {
                    println!("{}", show_contest(c));
                }
            }
            OutFormat::Csv => crate::commands::no_csv(a.format, "veil contest --list")?,
        }
        return Ok(0);
    }
    let note = a
        .note
        .ok_or_else(|| exit(2, "--note TEXT is required (or --list)"))?;
    let c = match (a.answer, a.metric, a.window) {
        (Some(id), None, None) => {
            ctx.allow(Action::AnswerContest)?;
            veil_govern::contests::answer(&mut ctx.store, &who, id, note, t)
        }
        (None, Some(metric), Some(window)) => {
            ctx.allow(Action::Contest)?;
            veil_govern::contests::file(&mut ctx.store, &ctx.policy, &who, metric, window, note, t)
        }
        _ => {
            return Err(exit(
                2,
                "give METRIC --window W --note TEXT to contest, --answer ID --note TEXT to answer, or --list",
            ))
        }
    }
    .map_err(refused)?;
    println!("{}", show_contest(&c));
    Ok(0)
}
