//! `veil principal add|rotate|list`: principals and their tokens in `veil.toml`. A token
//! is printed once and only its SHA-256 is written; the file is edited in place (comments
//! and layout kept) under a lock, checked by loading it before it replaces the old one,
//! and every change is audited without the token or its hash.

use crate::commands::{no_csv, now, open};
use crate::config::{token_hash, Config};
use crate::{exit, Cli, OutFormat, PrincipalCmd};
use anyhow::{Context, Result};
use std::path::Path;
use veil_access::{Action, Role};
use veil_pipeline::safe_name;
use veil_store::Store;

/// Dispatches `veil principal …`.
pub fn run(cli: &Cli, cmd: &PrincipalCmd) -> Result<u8> {
    // A format that cannot be printed is refused before anything changes: a token made and
    // never shown would be a principal nobody can use.
    match cmd {
        PrincipalCmd::Add { format, .. } | PrincipalCmd::Rotate { format, .. } => {
            no_csv(*format, "veil principal add|rotate")?
        }
        PrincipalCmd::List { .. } => {}
    }
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
                    "a principal's name is 1 to 64 characters of a-z, A-Z, 0-9, '-', '_', '.', ':', and does not start with local: or veil:",
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
                        format!("the policy declares no collection {}", safe_name(c)),
                    ));
                }
            }
            let consent = consent.clone().unwrap_or_default();
            for c in &consent {
                if !sends.contains(c) {
                    return Err(exit(
                        2,
                        format!(
                            "--consent names {}, which is not among --collections",
                            safe_name(c)
                        ),
                    ));
                }
            }
            let token = new_token();
            let file = ctx.cfg.file.clone();
            edit(
                &file,
                |doc| {
                    let principals = doc
                    .entry("principal")
                    .or_insert(toml_edit::Item::ArrayOfTables(Default::default()))
                    .as_array_of_tables_mut()
                    .ok_or_else(|| {
                        exit(2, "write `principal` in veil.toml as [[principal]] tables to manage it here")
                    })?;
                    // Checked under the lock, against the file as it is now; names that differ
                    // only in case would read as the same principal in every log.
                    if principals.iter().any(|t| {
                        t.get("name")
                            .and_then(|n| n.as_str())
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                    }) {
                        return Err(exit(
                        2,
                        format!("principal {name} exists; `veil principal rotate {name}` gives it a new token"),
                    ));
                    }
                    let mut t = toml_edit::Table::new();
                    t["name"] = toml_edit::value(name.as_str());
                    t["roles"] = toml_edit::value(array(roles.iter().map(|r| r.as_str())));
                    if !sends.is_empty() {
                        t["collections"] =
                            toml_edit::value(array(sends.iter().map(String::as_str)));
                    }
                    if !consent.is_empty() {
                        t["consent"] = toml_edit::value(array(consent.iter().map(String::as_str)));
                    }
                    t["token_sha256"] = toml_edit::value(token_hash(&token));
                    principals.push(t);
                    Ok(())
                },
                |outcome| {
                    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                    let detail = serde_json::json!({"principal": name, "roles": roles, "collections": sends, "consent": consent, "outcome": outcome});
                    Ok(ctx
                        .store
                        .audit(&ctx.actor, "principal_add", &detail, now())
                        .map(|_| ())?)
                },
            )?;
            print_token(name, &token, *format, "added");
            Ok(0)
        }
        PrincipalCmd::Rotate { name, format } => {
            let token = new_token();
            let file = ctx.cfg.file.clone();
            edit(
                &file,
                |doc| {
                    let found = doc
                        .get_mut("principal")
                        .and_then(toml_edit::Item::as_array_of_tables_mut)
                        .and_then(|ps| {
                            ps.iter_mut()
                                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
                        })
                        .ok_or_else(|| {
                            exit(
                                2,
                                format!(
                                    "no principal {} among the [[principal]] tables of {}",
                                    safe_name(name),
                                    file.display()
                                ),
                            )
                        })?;
                    found["token_sha256"] = toml_edit::value(token_hash(&token));
                    Ok(())
                },
                |outcome| {
                    let detail = serde_json::json!({"principal": name, "outcome": outcome});
                    Ok(ctx
                        .store
                        .audit(&ctx.actor, "principal_rotate", &detail, now())
                        .map(|_| ())?)
                },
            )?;
            print_token(name, &token, *format, "rotated");
            Ok(0)
        }
    }
}

fn valid_name(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !lower.starts_with("local:")
        && !lower.starts_with("veil:")
}

fn parse_roles(roles: &[String]) -> Result<Vec<Role>> {
    let mut out = Vec::new();
    for r in roles {
        let role = Role::parse(r).ok_or_else(|| {
            exit(
                2,
                format!(
                    "unknown role {}; roles are {}",
                    safe_name(r),
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

/// Rewrites the configuration through `change`, one writer at a time: an exclusive lock on a
/// lock file beside it is held while the file is read, changed, checked and replaced. The
/// new text is written to a fresh temporary file in the same directory (never following a
/// link, created private, then given the old file's mode and owner), must load as a valid
/// configuration, and is renamed over the real file (a symlinked `veil.toml` is resolved,
/// so its target is what changes); the directory is synced after. `record` audits the
/// change *before* the file is replaced (outcome `applied`), so no principal can exist
/// unrecorded; should the replacement then fail, it records `failed` as well.
fn edit(
    file: &Path,
    change: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<()>,
    mut record: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let target =
        std::fs::canonicalize(file).with_context(|| format!("cannot find {}", file.display()))?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!(".{name}.lock")))
        .with_context(|| format!("cannot lock {}", target.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", target.display()))?;
    let text = std::fs::read_to_string(&target)
        .with_context(|| format!("cannot read {}", target.display()))?;
    let meta = std::fs::metadata(&target)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| exit(2, format!("{}: {e}", target.display())))?;
    change(&mut doc)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".new")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write beside {}", target.display()))?;
    tmp.write_all(doc.to_string().as_bytes())?;
    let f = tmp.as_file();
    // The old file's owner first (only root may give a file away; others keep their own),
    // then its mode: a configuration readable by the gateway's user stays so.
    let _ = std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid()));
    f.set_permissions(meta.permissions())?;
    f.sync_all()?;
    if let Err(e) = Config::load(tmp.path()) {
        return Err(exit(
            2,
            format!("the edited configuration would not load, so nothing was changed: {e:#}"),
        ));
    }
    record("applied")?;
    if let Err(e) = tmp.persist(&target) {
        let _ = record("failed");
        return Err(e.error).with_context(|| format!("cannot replace {}", target.display()));
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn print_token(name: &str, token: &str, format: OutFormat, what: &str) {
    match format {
        OutFormat::Json => println!(
            "{}",
            serde_json::json!({"principal": name, "token": token, "token_sha256": token_hash(token)})
        ),
        OutFormat::Table | OutFormat::Csv => {
            println!("{what} principal {name}; its token (shown once; only its SHA-256 is stored in veil.toml):");
            println!("  {token}");
            println!("a running `veil serve` takes it in when restarted");
        }
    }
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
    // Names typed into veil.toml by hand are shown as written, but never as terminal
    // control sequences.
    let shown = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect()
    };
    match format {
        OutFormat::Json => println!("{}", serde_json::Value::Array(rows)),
        OutFormat::Table => {
            let rows: Vec<Vec<String>> = cfg
                .principals
                .iter()
                .map(|p| {
                    let colls = p.collections.clone().unwrap_or_default();
                    vec![
                        shown(&p.name),
                        p.roles
                            .iter()
                            .map(|r| shown(r))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if colls.is_empty() {
                            "-".into()
                        } else {
                            colls
                                .iter()
                                .map(|c| shown(c))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::commands::table(&["name", "roles", "collections"], &rows)
            );
        }
        OutFormat::Csv => {
            println!("name,roles,collections,consent");
            for p in &cfg.principals {
                println!(
                    "{},{},{},{}",
                    crate::commands::csv_field(&p.name),
                    crate::commands::csv_field(&p.roles.join(" ")),
                    crate::commands::csv_field(
                        &p.collections.clone().unwrap_or_default().join(" ")
                    ),
                    crate::commands::csv_field(&p.consent.clone().unwrap_or_default().join(" "))
                );
            }
        }
    }
    Ok(())
}
