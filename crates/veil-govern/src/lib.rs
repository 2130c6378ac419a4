//! Governance over the zones (spec §2 Grant, §5): time-bound, dual-approved grants to
//! read staging; data-subject export, erasure and opt-out; contests of released numbers.
//! One implementation that the CLI and the gateway both call, so a rule cannot hold at
//! one door and not at the other.
//!
//! State is folded from the audit chain itself (every request, approval, revocation is
//! an entry): a grant cannot be made live by writing a row, only by an entry that
//! `veil audit verify` covers. Every attempt, refused or not, is audited.

#![forbid(unsafe_code)]

pub mod contests;
pub mod grants;
pub mod subject;

pub use grants::{Grant, GrantState};

use veil_access::Role;
use veil_store::StoreError;

/// Who is acting: a configured principal with its roles, or the local operator (who
/// may request and read, but never approve: approvals need a principal's role).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub roles: &'a [Role],
    pub operator: bool,
}

/// Why a governance action failed.
#[derive(Debug, thiserror::Error)]
pub enum GovernError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Refused by a rule; `code` is stable, `message` a sentence naming no personal data.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

impl GovernError {
    fn refused(code: &'static str, message: impl Into<String>) -> Self {
        GovernError::Refused {
            code,
            message: message.into(),
        }
    }
}

/// Result alias for governance actions.
pub type Result<T> = std::result::Result<T, GovernError>;
