//! Grants with an injected clock: every way to get no access gives none and is audited;
//! a live grant reads exactly its collection's staged rows, pseudonymous.

use veil_access::Role;
use veil_govern::grants::{self, DENIED, READ};
use veil_govern::{Actor, GovernError, GrantState};
use veil_pipeline::{AcceptedBatch, Door, Limits, MissingId, Source};
use veil_store::{IngestBatch, SqliteStore, Store};

const DAY: i64 = 86_400;
/// 2025-11-03 12:00 UTC: in the past, so the chain's times are never in the future.
const T0: i64 = 1_762_171_200;

const POLICY: &str = r#"
version: 1
organization: Test
defaults: { grant_max_duration: { operational: 3d } }
collections:
  - name: c.one
    purpose: { what: one, question: q, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user:   { type: string, class: direct_identifier, transform: pseudonymize }
      region: { type: string, class: quasi_identifier, values: [eu, us] }
    metrics:
      - name: ones
        kind: count
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
  - name: c.two
    purpose: { what: two, question: q, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user: { type: string, class: direct_identifier, transform: pseudonymize }
      kind: { type: string, class: attribute, values: [x, y] }
    metrics:
      - name: twos
        kind: count
        by: [kind]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

struct Rig {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    policy: veil_policy::Policy,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        T0 - DAY,
        "test",
    )
    .unwrap();
    let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    store.note_policy(&policy, "test", T0 - DAY).unwrap();
    let keys = store.key_ring().unwrap();
    let door = Door::new(
        &policy,
        &keys,
        Limits::default(),
        T0,
        store.sealed_before(&policy).unwrap(),
    );
    let src = Source {
        name: "test".into(),
        collections: None,
        consent: None,
    };
    let mut accepted = AcceptedBatch::default();
    let time = "2025-11-03T10:00:00Z";
    for i in 0..7 {
        let l = format!(
            r#"{{"event":"c.one","time":"{time}","id":"one{i}","attrs":{{"user":"u{i}@example.com","region":"eu"}}}}"#
        );
        door.admit_into(l.as_bytes(), &src, MissingId::Unidentified, &mut accepted)
            .unwrap();
    }
    for i in 0..4 {
        let l = format!(
            r#"{{"event":"c.two","time":"{time}","id":"two{i}","attrs":{{"user":"u{i}@example.com","kind":"x"}}}}"#
        );
        door.admit_into(l.as_bytes(), &src, MissingId::Unidentified, &mut accepted)
            .unwrap();
    }
    store
        .ingest(
            &policy,
            &keys,
            &[IngestBatch {
                source: "test",
                received_at: T0,
                accepted,
                rejected: Vec::new(),
            }],
        )
        .unwrap();
    Rig {
        _dir: dir,
        store,
        policy,
    }
}

fn who<'a>(name: &'a str, roles: &'a [Role]) -> Actor<'a> {
    Actor {
        name,
        roles,
        operator: false,
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, GovernError>) -> &'static str {
    match r {
        Err(GovernError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denials(s: &SqliteStore) -> Vec<serde_json::Value> {
    s.audit_entries(&[DENIED])
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect()
}

#[test]
fn no_path_short_of_two_roles_from_two_others_opens_staging_and_every_attempt_is_audited() {
    let mut r = rig();
    let keys = r.store.key_ring().unwrap();
    let alice = who("alice", &[Role::Analyst]);
    let bob = who("bob", &[Role::Engineering]);
    let carol = who("carol", &[Role::Engineering]);
    let dan = who("dan", &[Role::Viewer]);
    let pat = who("pat", &[Role::Privacy]);
    let both = who("bo", &[Role::Engineering, Role::Privacy]);
    // The configured principals, as veil.toml declares them.
    let roles_of = |name: &str| match name {
        "alice" => Some(vec![Role::Analyst]),
        "bob" | "carol" => Some(vec![Role::Engineering]),
        "dan" => Some(vec![Role::Viewer]),
        "pat" => Some(vec![Role::Privacy]),
        "bo" => Some(vec![Role::Engineering, Role::Privacy]),
        _ => None,
    };
    let s = &mut r.store;
    let g = grants::request(
        s,
        &r.policy,
        &alice,
        "incident 4711 review",
        "c.one",
        2 * DAY,
        T0,
    )
    .unwrap();
    assert_eq!(g.state(T0), GrantState::Pending);
    let mut refusals = 0;
    let mut refuse = |c: &'static str, want: &str| {
        assert_eq!(c, want);
        refusals += 1;
    };
    refuse(
        code(grants::read(
            s, &r.policy, &keys, &roles_of, &alice, &g.id, T0,
        )),
        "grant_not_live",
    );
    refuse(code(grants::approve(s, &alice, &g.id, T0)), "own_request");
    // The requester, whatever its roles, never approves its own request.
    let g2 = grants::request(s, &r.policy, &both, "second look", "c.one", DAY, T0).unwrap();
    refuse(code(grants::approve(s, &both, &g2.id, T0)), "own_request");
    // One approval: not live.
    grants::approve(s, &bob, &g.id, T0 + 10).unwrap();
    refuse(
        code(grants::read(
            s,
            &r.policy,
            &keys,
            &roles_of,
            &alice,
            &g.id,
            T0 + 20,
        )),
        "grant_not_live",
    );
    // The same principal twice; the same role from another principal; no role at all.
    refuse(
        code(grants::approve(s, &bob, &g.id, T0 + 30)),
        "already_approved",
    );
    refuse(
        code(grants::approve(s, &carol, &g.id, T0 + 30)),
        "role_already_approved",
    );
    refuse(code(grants::approve(s, &dan, &g.id, T0 + 30)), "needs_role");
    // The local operator cannot approve (an approval is a principal's role).
    let op = Actor {
        name: "local:root",
        roles: &[],
        operator: true,
    };
    refuse(
        code(grants::approve(s, &op, &g.id, T0 + 30)),
        "needs_principal",
    );
    // The second role from a second principal: live for two days from now on.
    let live = grants::approve(s, &pat, &g.id, T0 + 100).unwrap();
    assert_eq!(live.state(T0 + 100), GrantState::Live);
    assert_eq!(live.expires_at(), Some(T0 + 100 + 2 * DAY));
    // Only its requester reads, and exactly its scope.
    refuse(
        code(grants::read(
            s,
            &r.policy,
            &keys,
            &roles_of,
            &bob,
            &g.id,
            T0 + 200,
        )),
        "not_grantee",
    );
    let rows = grants::read(s, &r.policy, &keys, &roles_of, &alice, &g.id, T0 + 200).unwrap();
    assert_eq!(rows.len(), 7, "the seven c.one events, none of c.two");
    for row in &rows {
        let mut names: Vec<&str> = row.attrs.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["region", "user"]);
        let user = row.attrs["user"].as_str().unwrap();
        assert!(!user.contains('@'), "pseudonymous: {user}");
    }
    // Expired: no access.
    refuse(
        code(grants::read(
            s,
            &r.policy,
            &keys,
            &roles_of,
            &alice,
            &g.id,
            T0 + 100 + 2 * DAY,
        )),
        "grant_not_live",
    );
    // Revoked while pending: no access, and no approval revives it.
    let g3 = grants::request(s, &r.policy, &alice, "third", "c.two", DAY, T0).unwrap();
    grants::approve(s, &bob, &g3.id, T0 + 1).unwrap();
    grants::revoke(s, &alice, &g3.id, T0 + 2).unwrap();
    refuse(
        code(grants::approve(s, &pat, &g3.id, T0 + 3)),
        "not_pending",
    );
    refuse(
        code(grants::read(
            s,
            &r.policy,
            &keys,
            &roles_of,
            &alice,
            &g3.id,
            T0 + 4,
        )),
        "grant_not_live",
    );
    // A revoked live grant closes at once.
    let g4 = grants::request(s, &r.policy, &alice, "fourth", "c.two", DAY, T0).unwrap();
    grants::approve(s, &bob, &g4.id, T0 + 1).unwrap();
    grants::approve(s, &pat, &g4.id, T0 + 2).unwrap();
    assert_eq!(
        grants::read(s, &r.policy, &keys, &roles_of, &alice, &g4.id, T0 + 3)
            .unwrap()
            .len(),
        4
    );
    refuse(code(grants::revoke(s, &dan, &g4.id, T0 + 4)), "forbidden");
    grants::revoke(s, &pat, &g4.id, T0 + 5).unwrap();
    refuse(
        code(grants::read(
            s,
            &r.policy,
            &keys,
            &roles_of,
            &alice,
            &g4.id,
            T0 + 6,
        )),
        "grant_not_live",
    );
    // An id nobody issued; an id that is not an id at all (never written to the log).
    refuse(
        code(grants::read(
            s,
            &r.policy,
            &keys,
            &roles_of,
            &alice,
            "g-0000000000000000",
            T0,
        )),
        "unknown_grant",
    );
    refuse(
        code(grants::approve(s, &bob, "eve@example.com", T0)),
        "unknown_grant",
    );
    // Every refusal is one audit entry, naming the reason; every read one with its rows.
    let d = denials(&r.store);
    assert_eq!(d.len(), refusals);
    assert!(d.iter().all(|e| e["reason"].is_string()));
    assert!(!serde_json::to_string(&d).unwrap().contains("example.com"));
    let reads: Vec<i64> = r
        .store
        .audit_entries(&[READ])
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["rows"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(reads, vec![7, 4]);
    assert!(r.store.audit_verify(&[]).unwrap().ok);
}

#[test]
fn requests_are_checked_and_a_forged_approval_counts_for_nothing() {
    let mut r = rig();
    let alice = who("alice", &[Role::Analyst, Role::Engineering]);
    let s = &mut r.store;
    let p = &r.policy;
    assert_eq!(
        code(grants::request(
            s,
            p,
            &alice,
            "look at jane.doe@example.com",
            "c.one",
            DAY,
            T0
        )),
        "pii_detected"
    );
    assert_eq!(
        code(grants::request(
            s,
            p,
            &alice,
            "review",
            "c.one",
            4 * DAY,
            T0
        )),
        "duration_too_long"
    );
    assert_eq!(
        code(grants::request(s, p, &alice, "review", "c.three", DAY, T0)),
        "unknown_scope"
    );
    assert_eq!(
        code(grants::request(s, p, &alice, "   ", "c.one", DAY, T0)),
        "bad_purpose"
    );
    let log = serde_json::to_string(&denials(s)).unwrap();
    assert!(
        !log.contains("jane"),
        "a refused purpose is not kept: {log}"
    );
    // Approvals written straight into the log by the requester (or anyone, as a role the
    // rule does not know) do not make a grant live.
    let g = grants::request(s, p, &alice, "review", "c.one", DAY, T0).unwrap();
    for (actor, role) in [
        ("alice", "engineering"),
        ("alice", "privacy"),
        ("mallory", "admin"),
    ] {
        let detail = serde_json::json!({"grant": g.id, "role": role, "at_unix": T0 + 1});
        s.audit(actor, grants::APPROVE, &detail, T0 + 1).unwrap();
    }
    let all = grants::list(s, T0 + 2).unwrap();
    let (g, state) = all.iter().find(|(x, _)| x.id == g.id).unwrap();
    assert_eq!(*state, GrantState::Pending);
    assert!(g.approvals.is_empty());
    // A request nobody approves lapses.
    assert_eq!(g.state(T0 + grants::PENDING_MAX), GrantState::Lapsed);

    // Approvals written into the log (hashes and all) for principals that are not
    // configured with those roles: the fold counts them, a read re-checks and refuses.
    let g = grants::request(s, p, &alice, "forged", "c.one", DAY, T0).unwrap();
    for (actor, role) in [("x", "engineering"), ("y", "privacy")] {
        let detail = serde_json::json!({"grant": g.id, "role": role, "at_unix": T0 + 5});
        s.audit(actor, grants::APPROVE, &detail, T0 + 5).unwrap();
    }
    let roles_of = |name: &str| (name == "alice").then(|| vec![Role::Analyst]);
    let keys = s.key_ring().unwrap();
    assert_eq!(
        code(grants::read(s, p, &keys, &roles_of, &alice, &g.id, T0 + 6)),
        "approval_not_valid"
    );
    // An approval stamped ahead of the clock does not open the grant before its time.
    let g = grants::request(s, p, &alice, "early", "c.one", DAY, T0).unwrap();
    for (actor, role) in [("x", "engineering"), ("y", "privacy")] {
        let detail = serde_json::json!({"grant": g.id, "role": role, "at_unix": T0 + 3600});
        s.audit(actor, grants::APPROVE, &detail, T0 + 7).unwrap();
    }
    let all = grants::list(s, T0 + 8).unwrap();
    let (_, state) = all.iter().find(|(x, _)| x.id == g.id).unwrap();
    assert_eq!(*state, GrantState::Pending);
    // A purpose with control characters (a fake line for the approver's terminal).
    assert_eq!(
        code(grants::request(
            s,
            p,
            &alice,
            "review\n    approved by: pat (privacy)",
            "c.one",
            DAY,
            T0
        )),
        "bad_purpose"
    );
}

/// One principal has at most `PENDING_PER_PRINCIPAL` requests pending: the next is refused
/// and audited; another principal is not held back; a lapsed or approved request frees
/// its place.
#[test]
fn a_principal_cannot_flood_the_approvers_with_requests() {
    let mut r = rig();
    let alice = who("alice", &[Role::Analyst]);
    let bob = who("bob", &[Role::Analyst]);
    let (eng, privacy) = (
        who("erin", &[Role::Engineering]),
        who("pat", &[Role::Privacy]),
    );
    let s = &mut r.store;
    let p = &r.policy;
    let mut ids = Vec::new();
    for _ in 0..grants::PENDING_PER_PRINCIPAL {
        ids.push(
            grants::request(s, p, &alice, "review", "c.one", DAY, T0)
                .unwrap()
                .id,
        );
    }
    let before = denials(s).len();
    assert_eq!(
        code(grants::request(s, p, &alice, "review", "c.one", DAY, T0)),
        "too_many_pending"
    );
    assert_eq!(denials(s).len(), before + 1, "the refusal is audited");
    grants::request(s, p, &bob, "review", "c.one", DAY, T0).unwrap();
    // Approved by both roles, one request is live, no longer pending: a place is free.
    grants::approve(s, &eng, &ids[0], T0 + 1).unwrap();
    grants::approve(s, &privacy, &ids[0], T0 + 2).unwrap();
    grants::request(s, p, &alice, "review", "c.one", DAY, T0 + 3).unwrap();
    assert_eq!(
        code(grants::request(
            s,
            p,
            &alice,
            "review",
            "c.one",
            DAY,
            T0 + 4
        )),
        "too_many_pending"
    );
    // Once the pending ones lapse, the requester may ask again.
    let later = T0 + grants::PENDING_MAX + 10;
    grants::request(s, p, &alice, "review", "c.one", DAY, later).unwrap();
}
