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

pub use analyze::{analyze, Finding, Severity};
pub use model::*;
pub use raw::RawPolicy;

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
    /// YAML syntax, an unknown key or a wrongly typed value; located in the file.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The policy parsed but has errors; the findings say which.
    #[error("policy {file} has {} error(s); run `veil policy lint` to see them", .findings.iter().filter(|f| f.severity == Severity::Error).count())]
    Invalid {
        file: String,
        findings: Vec<Finding>,
    },
}

/// Parses policy text; `file` only labels error messages.
pub fn parse(text: &str, file: &str) -> Result<RawPolicy, PolicyError> {
    serde_yaml::from_str::<RawPolicy>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        // serde_yaml appends " at line L column C"; the location already says that.
        let msg = e.to_string();
        let message = match msg.find(" at line ") {
            Some(i) => msg[..i].to_owned(),
            None => msg,
        };
        PolicyError::Parse {
            file: file.to_owned(),
            line,
            column,
            message,
        }
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
    match analyze(&raw, &hash_text(text), today) {
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
