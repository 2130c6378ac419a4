//! Late events at the store: a seal that overtakes the door, and the seal grace.

use veil_pipeline::{AcceptedBatch, Door, Limits, MissingId, Source};
use veil_store::{IngestBatch, SealedAggregates, SqliteStore, Store};

const POLICY: &str = r#"
version: 1
organization: Test
defaults: { seal_grace: 1h }
collections:
  - name: t.event
    purpose: { what: test events, question: are late events counted, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user:   { type: string, class: direct_identifier, transform: pseudonymize }
      region: { type: string, class: quasi_identifier, values: [eu, us] }
    metrics:
      - name: daily
        kind: count
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

fn policy() -> veil_policy::Policy {
    veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0
}

/// Unix seconds of a UTC time in November 2026.
fn nov(day: u32, hour: u32, min: u32, sec: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, 11, day)
        .unwrap()
        .and_hms_opt(hour, min, sec)
        .unwrap()
        .and_utc()
        .timestamp()
}

fn line(id: &str, t: i64, user: &str) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(t, 0).unwrap();
    format!(
        r#"{{"event":"t.event","time":"{}","id":"{id}","attrs":{{"user":"{user}@example.com","region":"eu"}}}}"#,
        t.format("%Y-%m-%dT%H:%M:%SZ")
    )
    .into_bytes()
}

fn src() -> Source {
    Source {
        name: "test".into(),
        collections: None,
        consent: None,
    }
}

/// Events admitted by `door` into one batch (every one must pass the door).
fn admitted(door: &Door, lines: &[Vec<u8>]) -> AcceptedBatch {
    let mut b = AcceptedBatch::default();
    for l in lines {
        door.admit_into(l, &src(), MissingId::Unidentified, &mut b)
            .expect("the door passes it");
    }
    b
}

fn commit(
    store: &mut SqliteStore,
    p: &veil_policy::Policy,
    now: i64,
    accepted: AcceptedBatch,
) -> veil_store::IngestOutcome {
    let keys = store.key_ring().unwrap();
    let batch = IngestBatch {
        source: "test",
        received_at: now,
        accepted,
        rejected: Vec::new(),
    };
    store.ingest(p, &keys, &[batch]).unwrap().remove(0)
}

fn staged(dir: &std::path::Path) -> i64 {
    rusqlite::Connection::open(SqliteStore::db_path(dir))
        .unwrap()
        .query_row(
            "SELECT COALESCE(SUM(events), 0) FROM staging_segments",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// A seal that runs between the door and the commit (a concurrent `veil seal`, or the
/// gateway's maintenance while `veil ingest` runs): the commit re-checks, and the event
/// the seal overtook is reported `late` by its position — not accepted, not staged, not
/// added to the sealed numbers — while the rest of the batch commits. Before, it was
/// counted as accepted and its contributions silently skipped.
#[test]
fn an_event_a_seal_overtook_is_reported_late_at_commit_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy();
    let now = nov(20, 12, 0, 0);
    let mut store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        now - 10 * 86_400,
        "test",
    )
    .unwrap();
    let keys = store.key_ring().unwrap();
    let fresh_door = |store: &SqliteStore| {
        Door::new(
            &p,
            &keys,
            Limits::default(),
            now,
            store.sealed_before(&p).unwrap(),
        )
    };
    // One event on the 18th, committed and later sealed.
    let first = admitted(&fresh_door(&store), &[line("a", nov(18, 10, 0, 0), "a")]);
    assert_eq!(commit(&mut store, &p, now, first).accepted, 1);
    // The door looks before the seal: everything passes it.
    let stale = fresh_door(&store);
    let batch = admitted(
        &stale,
        &[
            line("b", nov(20, 9, 0, 0), "b"),
            line("c", nov(18, 11, 0, 0), "c"), // the 18th: sealed before the commit
            line("d", nov(20, 10, 0, 0), "d"),
        ],
    );
    assert_eq!(batch.len(), 3);
    let sealed = store.seal(&p, &keys, now, "test").unwrap();
    assert!(
        sealed
            .windows
            .contains(&("daily".into(), "2026-11-18".into())),
        "{sealed:?}"
    );
    let day = (nov(18, 0, 0, 0), nov(19, 0, 0, 0));
    let before = store.exact_aggregates("daily", "", day.0, day.1).unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].count, 1);

    let o = commit(&mut store, &p, now, batch);
    assert_eq!(o.accepted, 2, "{o:?}");
    assert_eq!(o.duplicates, 0);
    assert_eq!(o.rejected.get("late"), Some(&1), "{o:?}");
    assert_eq!(o.late, vec![1], "reported at its position in the batch");
    assert_eq!(
        store.exact_aggregates("daily", "", day.0, day.1).unwrap(),
        before,
        "sealed numbers never change"
    );
    assert_eq!(
        staged(&dir.path().join("data")),
        3,
        "the late event was not staged"
    );
    assert_eq!(store.quarantine_counts().unwrap().get("late"), Some(&1));
    let audit = store.last_audit("ingest").unwrap().unwrap();
    assert!(audit.detail.contains(r#""late":1"#), "{}", audit.detail);
    // Sent again with the seal known, the door says `late` too: the id was not taken as
    // seen by the refused attempt, and nothing was counted for it.
    let r = fresh_door(&store)
        .admit(&line("c", nov(18, 11, 0, 0), "c"), &src())
        .unwrap_err();
    assert_eq!(r.reason().code(), "late");
}

/// A window is sealed only once it closed at least `seal_grace` ago (here 1h): one
/// second earlier its events are still taken and counted.
#[test]
fn a_window_seals_only_once_it_closed_seal_grace_ago() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy();
    let t0 = nov(19, 0, 0, 0); // the 18th closes
    let mut store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        t0 - 10 * 86_400,
        "test",
    )
    .unwrap();
    let keys = store.key_ring().unwrap();
    let door = |store: &SqliteStore, now: i64| {
        Door::new(
            &p,
            &keys,
            Limits::default(),
            now,
            store.sealed_before(&p).unwrap(),
        )
    };
    let e = admitted(&door(&store, t0), &[line("a", nov(18, 22, 0, 0), "a")]);
    assert_eq!(commit(&mut store, &p, t0, e).accepted, 1);

    let almost = t0 + 3600 - 1;
    let o = store.seal(&p, &keys, almost, "test").unwrap();
    assert!(o.windows.is_empty(), "sealed within the grace: {o:?}");
    // Still open: a late-arriving event of the 18th is accepted and counted.
    let e = admitted(&door(&store, almost), &[line("b", nov(18, 23, 0, 0), "b")]);
    assert_eq!(commit(&mut store, &p, almost, e).accepted, 1);

    let o = store.seal(&p, &keys, t0 + 3600, "test").unwrap();
    assert_eq!(
        o.windows,
        vec![("daily".to_owned(), "2026-11-18".to_owned())]
    );
    let rows = store
        .exact_aggregates("daily", "", nov(18, 0, 0, 0), t0)
        .unwrap();
    assert_eq!((rows[0].count, rows[0].contributors), (2, 2));
    // From now on the 18th is late at the door.
    let r = door(&store, t0 + 3600)
        .admit(&line("c", nov(18, 23, 30, 0), "c"), &src())
        .unwrap_err();
    assert_eq!(r.reason().code(), "late");
}
