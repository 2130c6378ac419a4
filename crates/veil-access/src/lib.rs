//! Who may do what. One function, [`authorize`], decides for every interface — the CLI
//! (`--as`), the HTTP API and, later, the dashboard — so a role cannot do through one
//! door what another refuses.
//!
//! Callers are either a [`Caller::Operator`] (the local operating-system account that
//! runs the CLI without `--as`: whoever can read the data directory can do anything the
//! store allows, so Veil does not pretend otherwise) or a configured principal with
//! roles. Principals and their budgets bind through the gateway and `--as`.

#![forbid(unsafe_code)]

/// The roles of a principal (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Sends events (of its declared collections only).
    Source,
    /// Reads releases an analyst already made.
    Viewer,
    /// Makes releases, spending privacy budget.
    Analyst,
    /// Approves grants from the engineering side.
    Engineering,
    /// Approves grants from the privacy side; reads the audit log.
    Privacy,
    /// Reads and verifies the audit log.
    Auditor,
    /// Runs maintenance: sealing, key rotation.
    Admin,
    /// A person measured: files contests on released numbers, reads them.
    Member,
}

impl Role {
    /// Every role, in the spec's order.
    pub const ALL: [Role; 8] = [
        Role::Source,
        Role::Viewer,
        Role::Analyst,
        Role::Engineering,
        Role::Privacy,
        Role::Auditor,
        Role::Admin,
        Role::Member,
    ];

    /// The name used in `veil.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Engineering => "engineering",
            Role::Privacy => "privacy",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses a role name from `veil.toml`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Everything a caller can ask Veil to do that touches data, budget or the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Send events (`veil ingest`, `POST /v1/events`, `/v1/logs`).
    Ingest,
    /// Read a release already stored (no budget spent).
    ReadRelease,
    /// Make a new release, spending privacy budget.
    Release,
    /// See what a release would cost (`--dry-run`).
    PlanRelease,
    /// Read or verify the audit log, print its head.
    ReadAudit,
    /// Read the privacy posture (`veil status`, `GET /v1/status`, `veil keys list`).
    ReadStatus,
    /// Seal closed windows.
    Seal,
    /// End the current key epoch.
    RotateKeys,
    /// Apply retention: delete what is past it, destroy keys nothing needs.
    Purge,
    /// Ask for a grant to read one collection's staging.
    RequestGrant,
    /// Approve a grant (the two-role rule is checked by the grant itself).
    ApproveGrant,
    /// Revoke a grant (its requester, or engineering, privacy, admin).
    RevokeGrant,
    /// List grants and their state.
    ListGrants,
    /// Read staged rows under a live grant of one's own.
    ReadStaging,
    /// Export or erase what Veil holds linked to one identifier (data-subject requests).
    SubjectRequest,
    /// File a contest on a released window (the people measured).
    Contest,
    /// Answer a contest.
    AnswerContest,
    /// List contests (without who filed them).
    ListContests,
    /// Add principals and rotate their tokens in `veil.toml`.
    ManagePrincipals,
}

impl Action {
    /// Every action, for tables that must cover them all.
    pub const ALL: [Action; 19] = [
        Action::Ingest,
        Action::ReadRelease,
        Action::Release,
        Action::PlanRelease,
        Action::ReadAudit,
        Action::ReadStatus,
        Action::Seal,
        Action::RotateKeys,
        Action::Purge,
        Action::RequestGrant,
        Action::ApproveGrant,
        Action::RevokeGrant,
        Action::ListGrants,
        Action::ReadStaging,
        Action::SubjectRequest,
        Action::Contest,
        Action::AnswerContest,
        Action::ListContests,
        Action::ManagePrincipals,
    ];

    /// The roles that may take this action. Matched exhaustively: a new action must say
    /// who may take it before anything compiles.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Ingest => &[Role::Source],
            Action::ReadRelease => &[Role::Viewer, Role::Analyst, Role::Member],
            Action::Release | Action::PlanRelease => &[Role::Analyst],
            Action::ReadAudit => &[Role::Auditor, Role::Privacy],
            Action::ReadStatus => &[
                Role::Member,
                Role::Viewer,
                Role::Analyst,
                Role::Engineering,
                Role::Privacy,
                Role::Auditor,
                Role::Admin,
            ],
            Action::Seal | Action::RotateKeys | Action::Purge | Action::ManagePrincipals => {
                &[Role::Admin]
            }
            Action::RequestGrant
            | Action::RevokeGrant
            | Action::ListGrants
            | Action::ReadStaging => &[
                Role::Analyst,
                Role::Engineering,
                Role::Privacy,
                Role::Auditor,
                Role::Admin,
            ],
            Action::ApproveGrant => &[Role::Engineering, Role::Privacy],
            Action::SubjectRequest => &[Role::Privacy],
            Action::Contest => &[Role::Member],
            Action::AnswerContest => &[Role::Analyst],
            Action::ListContests => &[
                Role::Member,
                Role::Viewer,
                Role::Analyst,
                Role::Engineering,
                Role::Privacy,
                Role::Auditor,
                Role::Admin,
            ],
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The local operating-system account running the CLI without `--as`.
    Operator,
    /// A configured principal, with its roles.
    Principal(&'a [Role]),
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub action: Action,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = self.action.roles().iter().map(|r| r.as_str()).collect();
        write!(
            f,
            "this needs one of the roles {} (action {:?})",
            roles.join(", "),
            self.action
        )
    }
}

impl std::error::Error for Forbidden {}

/// The one authorization decision, for every interface.
pub fn authorize(caller: Caller, action: Action) -> Result<(), Forbidden> {
    let allowed = match caller {
        Caller::Operator => true,
        Caller::Principal(roles) => roles.iter().any(|r| action.roles().contains(r)),
    };
    if allowed {
        Ok(())
    } else {
        Err(Forbidden { action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_may_do_anything_principals_only_what_a_role_allows() {
        for a in Action::ALL {
            assert!(authorize(Caller::Operator, a).is_ok());
            assert!(authorize(Caller::Principal(&[]), a).is_err());
        }
        assert!(authorize(Caller::Principal(&[Role::Viewer]), Action::Release).is_err());
        assert!(authorize(Caller::Principal(&[Role::Source]), Action::Release).is_err());
        assert!(authorize(Caller::Principal(&[Role::Source]), Action::ReadStatus).is_err());
        assert!(authorize(Caller::Principal(&[Role::Analyst]), Action::Release).is_ok());
        assert!(authorize(
            Caller::Principal(&[Role::Viewer, Role::Auditor]),
            Action::ReadAudit
        )
        .is_ok());
    }
}
