//! Contests: one principal cannot bury everyone's posture under open notes — at most
//! `OPEN_PER_PRINCIPAL` open at once, a slot freed by an answer, other principals
//! unaffected, every refusal audited without the note.

use veil_access::Role;
use veil_govern::contests::{self, DENIED, OPEN_PER_PRINCIPAL, PER_WINDOW};
use veil_govern::{Actor, GovernError};
use veil_store::{SqliteStore, Store};

const DAY: i64 = 86_400;
/// 2025-11-03 12:00 UTC.
const T0: i64 = 1_762_171_200;

const POLICY: &str = r#"
version: 1
organization: Test
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
"#;

fn actor<'a>(name: &'a str, roles: &'a [Role]) -> Actor<'a> {
    Actor {
        name,
        roles,
        operator: false,
    }
}

/// A fresh store (its directory kept alive by the caller) and the test policy.
fn rig() -> (tempfile::TempDir, SqliteStore, veil_policy::Policy) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        T0 - DAY,
        "test",
    )
    .unwrap();
    let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    (dir, store, policy)
}

#[test]
fn one_principal_has_at_most_its_share_of_open_contests() {
    let (_dir, mut store, policy) = rig();
    let (ana, bo, analyst) = (
        actor("ana", &[Role::Member]),
        actor("bo", &[Role::Member]),
        actor("analyst", &[Role::Analyst]),
    );
    // Each on a day of its own (a window takes at most PER_WINDOW from one principal).
    let file = |store: &mut SqliteStore, who: &Actor, i: usize| {
        let day = format!("2025-10-{:02}", 1 + i % 28);
        contests::file(store, &policy, who, "ones", &day, &format!("note {i}"), T0)
    };
    let mut first = None;
    for i in 0..OPEN_PER_PRINCIPAL {
        let c = file(&mut store, &ana, i).unwrap_or_else(|e| panic!("{i}: {e:?}"));
        first.get_or_insert(c.id);
    }
    let denied_before = store.audit_entries(&[DENIED]).unwrap().len();
    match file(&mut store, &ana, 99) {
        Err(GovernError::Refused { code, .. }) => assert_eq!(code, "too_many_open"),
        other => panic!("the 11th open contest was not refused: {other:?}"),
    }
    let denied = store.audit_entries(&[DENIED]).unwrap();
    assert_eq!(denied.len(), denied_before + 1, "the refusal is audited");
    assert!(
        !denied.last().unwrap().detail.contains("note 99"),
        "without the note"
    );
    assert_eq!(contests::list(&store).unwrap().len(), OPEN_PER_PRINCIPAL);
    // Another member is not held back by ana's notes.
    file(&mut store, &bo, 0).unwrap();
    // An answer frees one of ana's slots, and only one.
    contests::answer(&mut store, &analyst, &first.unwrap(), "looked at it", T0).unwrap();
    file(&mut store, &ana, 10).unwrap();
    assert!(matches!(
        file(&mut store, &ana, 11),
        Err(GovernError::Refused {
            code: "too_many_open",
            ..
        })
    ));
    let open = contests::list(&store)
        .unwrap()
        .into_iter()
        .filter(|c| c.is_open())
        .count();
    assert_eq!(open, OPEN_PER_PRINCIPAL + 1);
    assert!(store.audit_verify(&[]).unwrap().ok);
}

/// Answered or not, one principal's notes on one window stop at `PER_WINDOW`: answering
/// them (a principal who is also an analyst can) frees no room beside that window.
#[test]
fn one_window_takes_a_few_notes_from_one_principal() {
    let (_dir, mut store, policy) = rig();
    let both = [Role::Member, Role::Analyst];
    let dual = actor("dual", &both);
    let other = actor("other", &[Role::Member]);
    let mut file = |who: &Actor, day: &str, note: &str| {
        contests::file(&mut store, &policy, who, "ones", day, note, T0)
    };
    let mut ids = Vec::new();
    for i in 0..PER_WINDOW {
        ids.push(file(&dual, "2025-11-01", &format!("n{i}")).unwrap().id);
    }
    assert!(matches!(
        file(&dual, "2025-11-01", "again"),
        Err(GovernError::Refused {
            code: "too_many_on_window",
            ..
        })
    ));
    // Another window, or another principal on this one, is not held back.
    file(&dual, "2025-11-02", "other day").unwrap();
    file(&other, "2025-11-01", "me too").unwrap();
    // Answering its own notes frees no room beside the window.
    for id in &ids {
        contests::answer(&mut store, &dual, id, "answered myself", T0).unwrap();
    }
    assert!(matches!(
        contests::file(
            &mut store,
            &policy,
            &dual,
            "ones",
            "2025-11-01",
            "again",
            T0
        ),
        Err(GovernError::Refused {
            code: "too_many_on_window",
            ..
        })
    ));
    let beside = contests::for_metric(&store, "ones").unwrap();
    assert_eq!(beside["2025-11-01"].len(), PER_WINDOW + 1);
}
