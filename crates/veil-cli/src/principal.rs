//! `veil principal add|rotate|list`: principals and their tokens in `veil.toml`. A token
//! is printed once and only its SHA-256 is written; the file is edited in place (comments
//! and layout kept), checked by loading it again before it replaces the old one, and every
//! change is audited without the token or its hash.

use crate::commands::{now, open};
use crate::config::{token_hash, Config};
use crate::{exit, Cli, OutFormat, PrincipalCmd};
use anyhow::{Context, Result};
use std::path::Path;
use veil_access::{Action, Role};
use veil_store::Store;

/// Dispatches `veil principal …`.
pub fn run(cli: &Cli, cmd: &PrincipalCmd) -> Result<u8> {
    let mut ctx = open(cli)?;
    ctx.allow(Action::ManagePrincipals)?;
    match cmd {
        PrincipalCmd::List { format } => {
            list(&ctx.cfg, *format)?;
            Ok(0)
        }
        PrincipalCmd::Add {
            name,
            roles,
            collections,
            consent,
            format,
        } => {
            if !valid_name(name) {
                return Err(exit(
                    2,
                    "a principal's name is 1 to 64 characters of a-z, A-Z, 0-9, '-', '_', '.', ':'",
                ));
            }
            if ctx.cfg.principals.iter().any(|p| &p.name == name) {
                return Err(exit(
                    2,
                    format!("principal {name} exists; `veil principal rotate {name}` gives it a new token"),
                ));
            }
            let roles = parse_roles(roles)?;
            let sends = collections.clone().unwrap_or_default();
            if roles.contains(&Role::Source) && sends.is_empty() {
                return Err(exit(
                    2,
                    "a source needs --collections: the collections it may send (none by default)",
                ));
            }
            for c in &sends {
                if ctx.policy.collection(c).is_none() {
                    return Err(exit(
                        2,
                        format!(
                            "the policy declares no collection {}",
                            veil_pipeline::safe_name(c)
                        ),
                    ));
                }
            }
            let token = new_token();
            let file = ctx.cfg.file.clone();
            edit(&file, |doc| {
                let mut t = toml_edit::Table::new();
                t["name"] = toml_edit::value(name.as_str());
                t["roles"] = toml_edit::value(array(roles.iter().map(|r| r.as_str())));
                if !sends.is_empty() {
                    t["collections"] = toml_edit::value(array(sends.iter().map(String::as_str)));
                }
                if let Some(c) = consent.as_ref().filter(|c| !c.is_empty()) {
                    t["consent"] = toml_edit::value(array(c.iter().map(String::as_str)));
                }
                t["token_sha256"] = toml_edit::value(token_hash(&token));
                let principals = doc
                    .entry("principal")
                    .or_insert(toml_edit::Item::ArrayOfTables(Default::default()));
                principals
                    .as_array_of_tables_mut()
                    .ok_or_else(|| exit(2, "`principal` in veil.toml is not an array of tables"))?
                    .push(t);
                Ok(())
            })?;
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            let detail = serde_json::json!({"principal": name, "roles": roles, "collections": sends, "consent": consent});
            ctx.store
                .audit(&ctx.actor, "principal_add", &detail, now())?;
            print_token(name, &token, *format, "added")?;
            Ok(0)
        }
        PrincipalCmd::Rotate { name, format } => {
            if !ctx.cfg.principals.iter().any(|p| &p.name == name) {
                return Err(exit(
                    2,
                    format!(
                        "no principal {} in {}",
                        veil_pipeline::safe_name(name),
                        ctx.cfg.file.display()
                    ),
                ));
            }
            let token = new_token();
            let file = ctx.cfg.file.clone();
            edit(&file, |doc| {
                let found = doc
                    .get_mut("principal")
                    .and_then(toml_edit::Item::as_array_of_tables_mut)
                    .and_then(|ps| {
                        ps.iter_mut()
                            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
                    })
                    .ok_or_else(|| exit(2, format!("no [[principal]] named {name}")))?;
                found["token_sha256"] = toml_edit::value(token_hash(&token));
                Ok(())
            })?;
            let detail = serde_json::json!({"principal": name});
            ctx.store
                .audit(&ctx.actor, "principal_rotate", &detail, now())?;
            print_token(name, &token, *format, "rotated")?;
            Ok(0)
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !s.starts_with("local:")
        && !s.starts_with("veil:")
}

fn parse_roles(roles: &[String]) -> Result<Vec<Role>> {
    let mut out = Vec::new();
    for r in roles {
        let role = Role::parse(r).ok_or_else(|| {
            exit(
                2,
                format!(
                    "unknown role {}; roles are {}",
                    veil_pipeline::safe_name(r),
                    Role::ALL.map(|r| r.as_str()).join(", ")
                ),
            )
        })?;
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(out)
}

fn array<'a>(items: impl Iterator<Item = &'a str>) -> toml_edit::Array {
    items.collect()
}

/// A new bearer token: 24 random bytes from the OS, hex, with a recognizable prefix.
pub(crate) fn new_token() -> String {
    let mut b = [0u8; 24];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut b);
    format!("veil_{}", hex::encode(b))
}

/// Rewrites `veil.toml` through `change`: the new text must load as a valid configuration
/// before it replaces the old file (same permissions, written beside it and renamed).
fn edit(file: &Path, change: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<()>) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| exit(2, format!("{}: {e}", file.display())))?;
    change(&mut doc)?;
    let tmp = file.with_extension("toml.new");
    std::fs::write(&tmp, doc.to_string())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    // The edited file must still be a configuration Veil accepts; the old one stays if not.
    let checked = {
        // Paths inside resolve against the folder, so load the new text from beside the old.
        Config::load(&tmp)
    };
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(exit(
            2,
            format!("the edited configuration would not load: {e:#}"),
        ));
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

fn print_token(name: &str, token: &str, format: OutFormat, what: &str) -> Result<()> {
    match format {
        OutFormat::Json => println!(
            "{}",
            serde_json::json!({"principal": name, "token": token, "token_sha256": token_hash(token)})
        ),
        OutFormat::Table => {
            println!("{what} principal {name}; its token (shown once; only its SHA-256 is stored in veil.toml):");
            println!("  {token}");
            println!("a running `veil serve` takes it in when restarted");
        }
        OutFormat::Csv => crate::commands::no_csv(format, "this command")?,
    }
    Ok(())
}

fn list(cfg: &Config, format: OutFormat) -> Result<()> {
    let rows: Vec<serde_json::Value> = cfg
        .principals
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "roles": p.roles,
                "collections": p.collections.clone().unwrap_or_default(),
                "consent": p.consent.clone().unwrap_or_default(),
                "client_certificate": p.cert_sha256.is_some(),
            })
        })
        .collect();
    match format {
        OutFormat::Json => println!("{}", serde_json::Value::Array(rows)),
        OutFormat::Table => {
            let w = cfg
                .principals
                .iter()
                .map(|p| p.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let rw = cfg
                .principals
                .iter()
                .map(|p| p.roles.join(", ").len())
                .max()
                .unwrap_or(5)
                .max(5);
            println!("{:<w$}  {:<rw$}  collections", "name", "roles");
            for p in &cfg.principals {
                let colls = p.collections.clone().unwrap_or_default().join(", ");
                println!(
                    "{:<w$}  {:<rw$}  {}",
                    p.name,
                    p.roles.join(", "),
                    if colls.is_empty() { "-" } else { &colls }
                );
            }
        }
        OutFormat::Csv => {
            println!("name,roles,collections,consent");
            for p in &cfg.principals {
                println!(
                    "{},{},{},{}",
                    p.name,
                    p.roles.join(" "),
                    p.collections.clone().unwrap_or_default().join(" "),
                    p.consent.clone().unwrap_or_default().join(" ")
                );
            }
        }
    }
    Ok(())
}
