//! Grants (spec §2): time-bound access to pseudonymous event-level rows of one
//! collection in staging, for a stated purpose; live only once two different principals
//! other than the requester approved it, one with role `engineering` and one with role
//! `privacy`; expires by itself; revocable; every read audited with its row count.

use crate::{Actor, GovernError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veil_access::Role;
use veil_pipeline::KeyRing;
use veil_policy::Policy;
use veil_store::{audit::entry_hash, AuditEntry, StagedRow, Store};

/// Audit action of a request.
pub const REQUEST: &str = "grant_request";
/// Audit action of an approval.
pub const APPROVE: &str = "grant_approve";
/// Audit action of a revocation.
pub const REVOKE: &str = "grant_revoke";
/// Audit action of any refused grant action (request, approval, revocation, read).
pub const DENIED: &str = "grant_denied";
/// Audit action of a read under a grant.
pub const READ: &str = "staging_read";

/// A request nobody fully approved lapses after this long.
pub const PENDING_MAX: i64 = 7 * 86_400;

/// The most requests one principal may have pending at once: a backlog for the approvers
/// to read, not a flood that buries the posture page.
pub const PENDING_PER_PRINCIPAL: usize = 5;

/// The longest purpose sentence accepted.
const PURPOSE_MAX: usize = 500;

/// One approval as the chain recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub principal: String,
    pub role: String,
    pub at: i64,
}

/// A grant, folded from its audit entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    pub id: String,
    pub requester: String,
    pub purpose: String,
    /// The one collection whose staging rows it opens.
    pub scope: String,
    pub duration_secs: i64,
    pub requested_at: i64,
    pub approvals: Vec<Approval>,
    /// When the second required approval made it live.
    pub live_from: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Where a grant stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Waiting for approvals.
    Pending,
    /// Reads are allowed.
    Live,
    /// Its duration after approval ran out.
    Expired,
    /// Revoked before it expired.
    Revoked,
    /// Not approved within [`PENDING_MAX`].
    Lapsed,
}

impl GrantState {
    /// The name shown in lists and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Live => "live",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::Lapsed => "lapsed",
        }
    }
}

impl Grant {
    /// When it stops being live (`None` until approved).
    pub fn expires_at(&self) -> Option<i64> {
        self.live_from.map(|t| t.saturating_add(self.duration_secs))
    }

    /// Its state at `now`.
    pub fn state(&self, now: i64) -> GrantState {
        if self.revoked_at.is_some_and(|r| r <= now) {
            return GrantState::Revoked;
        }
        match self.expires_at() {
            // An approval stamped ahead of the clock does not open the grant early (nor
            // stretch it past its duration from the real approval).
            Some(_) if self.live_from.is_some_and(|t| t > now) => GrantState::Pending,
            Some(end) if now < end => GrantState::Live,
            Some(_) => GrantState::Expired,
            None if now < self.requested_at + PENDING_MAX => GrantState::Pending,
            None => GrantState::Lapsed,
        }
    }
}

#[derive(Deserialize)]
struct Detail {
    grant: String,
    at_unix: i64,
    purpose: Option<String>,
    scope: Option<String>,
    duration_secs: Option<i64>,
    role: Option<String>,
}

/// Every grant the chain records, by id. Entries whose hash does not match their content
/// are skipped (and `audit verify` names them); an approval is counted only when the
/// two-person rule holds for it, whatever the entry says.
pub fn fold(entries: &[AuditEntry]) -> BTreeMap<String, Grant> {
    let mut out: BTreeMap<String, Grant> = BTreeMap::new();
    for e in entries {
        if entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash {
            continue;
        }
        let Ok(d) = serde_json::from_str::<Detail>(&e.detail) else {
            continue;
        };
        match e.action.as_str() {
            REQUEST => {
                let (Some(purpose), Some(scope), Some(duration_secs)) =
                    (d.purpose, d.scope, d.duration_secs)
                else {
                    continue;
                };
                out.entry(d.grant.clone()).or_insert(Grant {
                    id: d.grant,
                    requester: e.actor.clone(),
                    purpose,
                    scope,
                    duration_secs,
                    requested_at: d.at_unix,
                    approvals: Vec::new(),
                    live_from: None,
                    revoked_at: None,
                });
            }
            APPROVE => {
                let Some(g) = out.get_mut(&d.grant) else {
                    continue;
                };
                let Some(role) = d.role.filter(|r| r == "engineering" || r == "privacy") else {
                    continue;
                };
                if g.live_from.is_some()
                    || g.revoked_at.is_some()
                    || e.actor == g.requester
                    || g.approvals
                        .iter()
                        .any(|a| a.principal == e.actor || a.role == role)
                    || d.at_unix >= g.requested_at + PENDING_MAX
                    || d.at_unix < g.requested_at
                {
                    continue;
                }
                g.approvals.push(Approval {
                    principal: e.actor.clone(),
                    role,
                    at: d.at_unix,
                });
                if g.approvals.len() == 2 {
                    g.live_from = Some(d.at_unix);
                }
            }
            REVOKE => {
                if let Some(g) = out.get_mut(&d.grant) {
                    // The earliest revocation counts: a later one cannot reopen it.
                    g.revoked_at = Some(g.revoked_at.map_or(d.at_unix, |r| r.min(d.at_unix)));
                }
            }
            _ => {}
        }
    }
    out
}

/// Every grant with its state at `now`, oldest first.
pub fn list(store: &dyn Store, now: i64) -> Result<Vec<(Grant, GrantState)>> {
    let mut v: Vec<(Grant, GrantState)> = all(store)?
        .into_values()
        .map(|g| {
            let s = g.state(now);
            (g, s)
        })
        .collect();
    v.sort_by(|a, b| (a.0.requested_at, &a.0.id).cmp(&(b.0.requested_at, &b.0.id)));
    Ok(v)
}

fn all(store: &dyn Store) -> Result<BTreeMap<String, Grant>> {
    Ok(fold(&store.audit_entries(&[REQUEST, APPROVE, REVOKE])?))
}

/// A grant id as Veil makes them (`g-` and 16 hex digits): anything else a caller typed
/// is never written to the log (it could be anything, a person's email included).
fn valid_id(id: &str) -> bool {
    id.len() == 18 && id.starts_with("g-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Audits a refused attempt and returns the refusal.
fn deny(
    store: &mut dyn Store,
    who: &Actor,
    attempt: &str,
    grant: Option<&str>,
    code: &'static str,
    message: String,
    now: i64,
) -> GovernError {
    let grant = grant.filter(|g| valid_id(g)).unwrap_or("<invalid>");
    let detail =
        serde_json::json!({"grant": grant, "attempt": attempt, "reason": code, "at_unix": now});
    if let Err(e) = store.audit(who.name, DENIED, &detail, now) {
        return e.into();
    }
    GovernError::refused(code, message)
}

/// `veil grant request`: records a request for `duration` seconds of access to one
/// collection's staging, for `purpose`. Refused (and audited) when the purpose is
/// empty, too long or holds personal data, the collection is unknown, or the duration
/// is above the policy's maximum for the collection's zone, or the requester already has
/// [`PENDING_PER_PRINCIPAL`] requests pending.
pub fn request(
    store: &mut dyn Store,
    policy: &Policy,
    who: &Actor,
    purpose: &str,
    scope: &str,
    duration: i64,
    now: i64,
) -> Result<Grant> {
    let purpose = purpose.trim();
    let refuse = |store: &mut dyn Store, code, msg: String| {
        Err(deny(store, who, "request", None, code, msg, now))
    };
    if purpose.is_empty()
        || purpose.chars().count() > PURPOSE_MAX
        || purpose.chars().any(char::is_control)
    {
        return refuse(
            store,
            "bad_purpose",
            format!("a grant needs a purpose of 1 to {PURPOSE_MAX} characters on one line, without control characters"),
        );
    }
    if let Some(kind) = veil_pipeline::pii::first(purpose) {
        return refuse(
            store,
            "pii_detected",
            format!(
                "the purpose looks like it contains {}; describe the purpose without personal data (it is kept in the audit log)",
                kind.describe()
            ),
        );
    }
    let Some(c) = policy.collection(scope) else {
        return refuse(
            store,
            "unknown_scope",
            "the scope names no collection of the policy".into(),
        );
    };
    let max = policy.defaults().grant_max(c.zone);
    if duration <= 0 || duration > max {
        return refuse(
            store,
            "duration_too_long",
            format!(
                "a grant to {} (zone {:?}) may last at most {}",
                c.name,
                c.zone,
                veil_policy::duration::human(max)
            ),
        );
    }
    let pending = all(store)?
        .values()
        .filter(|g| g.requester == who.name && g.state(now) == GrantState::Pending)
        .count();
    if pending >= PENDING_PER_PRINCIPAL {
        return refuse(
            store,
            "too_many_pending",
            format!("you have {PENDING_PER_PRINCIPAL} requests pending; wait for an approval or for one to lapse"),
        );
    }
    let id = format!("g-{}", hex::encode(rand::random::<[u8; 8]>()));
    let detail = serde_json::json!({"grant": id, "purpose": purpose, "scope": c.name,
        "duration_secs": duration, "at_unix": now});
    store.audit(who.name, REQUEST, &detail, now)?;
    Ok(all(store)?
        .remove(&id)
        .expect("the request was just recorded"))
}

fn find(store: &mut dyn Store, who: &Actor, attempt: &str, id: &str, now: i64) -> Result<Grant> {
    match all(store)?.remove(id) {
        Some(g) => Ok(g),
        None => Err(deny(
            store,
            who,
            attempt,
            Some(id),
            "unknown_grant",
            "there is no grant with this id".into(),
            now,
        )),
    }
}

/// `veil grant approve`: one of the two approvals. Refused (and audited) for the
/// requester, a principal that already approved, one without a missing role
/// (`engineering` or `privacy`), the local operator, or a grant that is not pending.
pub fn approve(store: &mut dyn Store, who: &Actor, id: &str, now: i64) -> Result<Grant> {
    let g = find(store, who, "approve", id, now)?;
    let state = g.state(now);
    let refusal: Option<(&'static str, String)> = if state != GrantState::Pending {
        Some((
            "not_pending",
            format!("the grant is {}, not pending", state.as_str()),
        ))
    } else if who.operator {
        Some((
            "needs_principal",
            "approvals need a principal with role engineering or privacy (use --as NAME)".into(),
        ))
    } else if who.name == g.requester {
        Some((
            "own_request",
            "the requester cannot approve its own grant".into(),
        ))
    } else if g.approvals.iter().any(|a| a.principal == who.name) {
        Some((
            "already_approved",
            "this principal already approved; the second approval must come from another principal"
                .into(),
        ))
    } else {
        None
    };
    if let Some((code, msg)) = refusal {
        return Err(deny(store, who, "approve", Some(id), code, msg, now));
    }
    let missing = [
        (Role::Engineering, "engineering"),
        (Role::Privacy, "privacy"),
    ]
    .into_iter()
    .find(|(r, name)| who.roles.contains(r) && !g.approvals.iter().any(|a| a.role == *name));
    let Some((_, role)) = missing else {
        let (code, msg) = if who.roles.contains(&Role::Engineering)
            || who.roles.contains(&Role::Privacy)
        {
            (
                "role_already_approved",
                "the grant already has this role's approval; it needs the other role (engineering and privacy)",
            )
        } else {
            (
                "needs_role",
                "approving a grant needs role engineering or privacy",
            )
        };
        return Err(deny(store, who, "approve", Some(id), code, msg.into(), now));
    };
    let detail = serde_json::json!({"grant": id, "role": role, "at_unix": now});
    store.audit(who.name, APPROVE, &detail, now)?;
    Ok(all(store)?.remove(id).expect("the grant exists"))
}

/// `veil grant revoke`: ends a pending or live grant now. The requester may revoke its
/// own; otherwise it takes role engineering, privacy or admin (or the local operator).
/// Whether `who` may revoke `g` (whatever its state): its requester, or engineering,
/// privacy or admin. Pages offer the button by this, and [`revoke`] checks it.
pub fn may_revoke(who: &Actor, g: &Grant) -> bool {
    who.operator
        || who.name == g.requester
        || who
            .roles
            .iter()
            .any(|r| matches!(r, Role::Engineering | Role::Privacy | Role::Admin))
}

pub fn revoke(store: &mut dyn Store, who: &Actor, id: &str, now: i64) -> Result<Grant> {
    let g = find(store, who, "revoke", id, now)?;
    let state = g.state(now);
    let may = may_revoke(who, &g);
    let refusal = if !matches!(state, GrantState::Pending | GrantState::Live) {
        Some((
            "not_revocable",
            format!("the grant is already {}", state.as_str()),
        ))
    } else if !may {
        Some((
            "forbidden",
            "revoking another principal's grant needs role engineering, privacy or admin".into(),
        ))
    } else {
        None
    };
    if let Some((code, msg)) = refusal {
        return Err(deny(store, who, "revoke", Some(id), code, msg, now));
    }
    let detail = serde_json::json!({"grant": id, "at_unix": now});
    store.audit(who.name, REVOKE, &detail, now)?;
    Ok(all(store)?.remove(id).expect("the grant exists"))
}

/// Who holds which roles now (the configured principals): a read re-checks every
/// approval against it, so approvals written into the log by hand for principals that do
/// not exist, or no longer hold the role, open nothing.
pub type RolesOf<'a> = &'a dyn Fn(&str) -> Option<Vec<Role>>;

/// `veil staging read --grant ID`: the pseudonymous staged rows of the grant's one
/// collection, only for its requester and only while it is live; the read is audited
/// with its row count (a refusal with its reason). Before reading, the audit chain must
/// verify, both approvers must still hold their roles, and the grant must fit the
/// current policy (its collection declared, its duration within the zone's maximum).
pub fn read(
    store: &mut dyn Store,
    policy: &Policy,
    keys: &KeyRing,
    roles_of: RolesOf,
    who: &Actor,
    id: &str,
    now: i64,
) -> Result<Vec<StagedRow>> {
    let g = find(store, who, "read", id, now)?;
    let state = g.state(now);
    let refusal: Option<(&'static str, String)> = if state != GrantState::Live {
        Some((
            "grant_not_live",
            format!("the grant is {}; reads need a live grant", state.as_str()),
        ))
    } else if who.name != g.requester {
        Some((
            "not_grantee",
            "only the principal that requested a grant reads under it".into(),
        ))
    } else if !g.approvals.iter().all(|a| {
        let role = if a.role == "engineering" {
            Role::Engineering
        } else {
            Role::Privacy
        };
        roles_of(&a.principal).is_some_and(|r| r.contains(&role))
    }) {
        Some((
            "approval_not_valid",
            "an approver of this grant is not a configured principal with the role it approved as"
                .into(),
        ))
    } else if policy
        .collection(&g.scope)
        .is_none_or(|c| g.duration_secs > policy.defaults().grant_max(c.zone))
    {
        Some((
            "scope_changed",
            "the grant's collection is no longer declared, or its duration is above the current maximum for its zone".into(),
        ))
    } else if !store.audit_verify(&[])?.ok {
        Some((
            "audit_unverified",
            "the audit log does not verify (`veil audit verify`); no grant opens staging until it does".into(),
        ))
    } else {
        None
    };
    if let Some((code, msg)) = refusal {
        return Err(deny(store, who, "read", Some(id), code, msg, now));
    }
    let rows = store.staging_events(&g.scope, keys)?;
    let detail =
        serde_json::json!({"grant": id, "scope": g.scope, "rows": rows.len(), "at_unix": now});
    store.audit(who.name, READ, &detail, now)?;
    Ok(rows)
}
