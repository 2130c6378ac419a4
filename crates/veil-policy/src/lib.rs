//! Policy-as-code for Veil: the YAML file that declares every collection, parsed with
//! unknown keys refused, compiled with every default applied, and linted against the
//! six-question approval test plus the risk register (spec §3).
//!
//! Main types: [`RawPolicy`] (as written), [`Policy`] (compiled, the only form the rest of
//! Veil accepts), [`Finding`] (one lint or compile problem).

#![forbid(unsafe_code)]

mod analyze;
pub mod duration;
mod model;
pub mod raw;
mod team_map;

pub use analyze::{analyze, Finding, Severity};
pub use model::*;
pub use raw::RawPolicy;
pub use team_map::{Team, TeamMap, TeamMapError, UNASSIGNED};

use sha2::{Digest, Sha256};
use std::path::Path;

/// Why a policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read at all.
    #[error("cannot read policy {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// YAML syntax, an unknown or repeated key, a missing or wrongly typed value, or a
    /// file over the parser's limits; located in the file (1-based line and column; 0:0
    /// only if the parser knows no position).
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The team map the policy names could not be read or is not valid.
    #[error("policy {file} names team_map {map}: {message}")]
    TeamMap {
        file: String,
        map: String,
        message: String,
    },
    /// The policy parsed but has errors; the findings say which.
    #[error("policy {file} has {} error(s); run `veil policy lint` to see them", .findings.iter().filter(|f| f.severity == Severity::Error).count())]
    Invalid {
        file: String,
        findings: Vec<Finding>,
    },
}

/// The most YAML nodes (and alias-replayed events) one policy may hold: the example
/// policy has about a thousand, so this is headroom, not a constraint.
const MAX_NODES: usize = 100_000;

/// Parses policy text; `file` only labels error messages.
///
/// Duplicate mapping keys are refused (two `fields:` entries of one name must not
/// silently become one); booleans are YAML 1.2's `true`/`false` only (no `yes`/`no`);
/// nesting depth, node count and alias expansion are bounded, so a hostile file (an
/// alias "billion laughs") fails in milliseconds instead of exhausting memory.
pub fn parse(text: &str, file: &str) -> Result<RawPolicy, PolicyError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: MAX_NODES,
            max_depth: 32,
            flow_nesting_limit: 32,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_NODES,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<RawPolicy>(text, options).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((0, 0));
        PolicyError::Parse {
            file: file.to_owned(),
            line,
            column,
            message: parse_message(&e, text),
        }
    })
}

/// The parser's message without its " at line L, column C" suffix: `PolicyError::Parse`
/// puts the location in front, as `file:line:column` (for an alias, where it is used; the
/// message adds where its anchor is). A scalar of the wrong type also names what was
/// written (the parser alone says only "invalid u32").
fn parse_message(e: &serde_saphyr::Error, text: &str) -> String {
    struct NoLocation;
    impl serde_saphyr::Localizer for NoLocation {
        fn attach_location<'a>(
            &self,
            base: std::borrow::Cow<'a, str>,
            _: serde_saphyr::Location,
        ) -> std::borrow::Cow<'a, str> {
            base
        }
        fn alias_used_at(&self, _: serde_saphyr::Location) -> String {
            String::new()
        }
        fn alias_defined_at(&self, defined: serde_saphyr::Location) -> String {
            format!(
                " (its anchor is at {}:{})",
                defined.line(),
                defined.column()
            )
        }
    }
    struct Plain<'t>(&'t str);
    impl serde_saphyr::MessageFormatter for Plain<'_> {
        fn localizer(&self) -> &dyn serde_saphyr::Localizer {
            &NoLocation
        }
        fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> std::borrow::Cow<'a, str> {
            if let serde_saphyr::Error::InvalidScalar { ty, location } = err {
                let span = location.span();
                let written = span
                    .byte_offset()
                    .zip(span.byte_len())
                    .and_then(|(at, len)| {
                        self.0
                            .get(usize::try_from(at).ok()?..usize::try_from(at + len).ok()?)
                    });
                if let Some(w) = written.filter(|w| !w.is_empty()) {
                    return format!("expected {ty}, found `{w}`").into();
                }
            }
            serde_saphyr::UserMessageFormatter.format_message(err)
        }
    }
    let plain = Plain(text);
    e.render_with_options(serde_saphyr::render_options! {
        formatter: &plain,
        snippets: serde_saphyr::SnippetMode::Off,
    })
}

/// Hex SHA-256 of the policy bytes: the identity recorded in the audit log.
pub fn hash_text(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Parses, compiles and lints policy text; warnings come back alongside the policy.
pub fn load_str(
    text: &str,
    file: &str,
    today: chrono::NaiveDate,
) -> Result<(Policy, Vec<Finding>), PolicyError> {
    let raw = parse(text, file)?;
    let team_map = load_team_map(&raw, file)?;
    match analyze(&raw, &hash_text(text), today, team_map) {
        (Some(p), findings) => Ok((p, findings)),
        (None, findings) => Err(PolicyError::Invalid {
            file: file.to_owned(),
            findings,
        }),
    }
}

/// The team map a parsed policy names (read relative to `file`'s folder), if any: what
/// [`analyze`] needs besides the policy itself.
pub fn load_team_map(raw: &RawPolicy, file: &str) -> Result<Option<TeamMap>, PolicyError> {
    raw.team_map
        .as_deref()
        .map(|rel| read_team_map(file, rel))
        .transpose()
}

/// Reads the team map named by a policy, relative to the policy file's folder.
fn read_team_map(file: &str, rel: &str) -> Result<TeamMap, PolicyError> {
    let path = Path::new(file).parent().unwrap_or(Path::new(".")).join(rel);
    let fail = |message: String| PolicyError::TeamMap {
        file: file.to_owned(),
        map: rel.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    TeamMap::parse(&text, &path.display().to_string()).map_err(|e| fail(e.to_string()))
}

/// Parses, compiles and lints policy text with the team map's text supplied by the
/// caller (for embedded examples and tests); `map_text` is used only when the policy
/// names a team map.
pub fn load_with_team_map(
    text: &str,
    file: &str,
    today: chrono::NaiveDate,
    map_text: Option<&str>,
) -> Result<(Policy, Vec<Finding>), PolicyError> {
    let raw = parse(text, file)?;
    let team_map = match (&raw.team_map, map_text) {
        (Some(rel), Some(t)) => Some(TeamMap::parse(t, rel).map_err(|e| PolicyError::TeamMap {
            file: file.to_owned(),
            map: rel.clone(),
            message: e.to_string(),
        })?),
        (Some(rel), None) => Some(read_team_map(file, rel)?),
        (None, _) => None,
    };
    match analyze(&raw, &hash_text(text), today, team_map) {
        (Some(p), findings) => Ok((p, findings)),
        (None, findings) => Err(PolicyError::Invalid {
            file: file.to_owned(),
            findings,
        }),
    }
}

/// Reads and loads a policy file, dated today (UTC) for exception expiry.
pub fn load(path: &Path) -> Result<(Policy, Vec<Finding>), PolicyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: file.clone(),
        source,
    })?;
    load_str(&text, &file, chrono::Utc::now().date_naive())
}
