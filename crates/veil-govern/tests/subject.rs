//! Data-subject requests across two epochs and the spellings the door normalizes:
//! export finds exactly that person's rows, erase removes exactly them, sealed
//! aggregates do not change, and the identifier is never written anywhere.

use veil_govern::subject;
use veil_pipeline::{AcceptedBatch, Door, Limits, MissingId, Source};
use veil_store::{IngestBatch, SealedAggregates, SqliteStore, Store};

const DAY: i64 = 86_400;
/// Monday 2025-11-03 00:00 UTC (in the past: the chain's times never lie ahead).
const MON: i64 = 1_762_128_000;

const POLICY: &str = r#"
version: 1
organization: Test
defaults: { min_group_size: 2, seal_grace: 1h }
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
      - name: weekly
        kind: count
        by: [region]
        window: week
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
      - name: daily
        kind: count
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

struct Rig {
    dir: tempfile::TempDir,
    store: SqliteStore,
    policy: veil_policy::Policy,
}

impl Rig {
    fn ingest(&mut self, now: i64, events: &[(String, i64, &str)]) {
        let keys = self.store.key_ring().unwrap();
        let door = Door::new(
            &self.policy,
            &keys,
            Limits::default(),
            now,
            self.store.sealed_before(&self.policy).unwrap(),
        );
        let src = Source {
            name: "test".into(),
            collections: None,
            consent: None,
        };
        let mut accepted = AcceptedBatch::default();
        for (id, t, user) in events {
            let time = chrono::DateTime::from_timestamp(*t, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ");
            let user = serde_json::to_string(user).unwrap();
            let l = format!(
                r#"{{"event":"c.one","time":"{time}","id":"{id}","attrs":{{"user":{user},"region":"eu"}}}}"#
            );
            door.admit_into(l.as_bytes(), &src, MissingId::Unidentified, &mut accepted)
                .unwrap();
        }
        self.store
            .ingest(
                &self.policy,
                &keys,
                &[IngestBatch {
                    source: "test",
                    received_at: now,
                    accepted,
                    rejected: Vec::new(),
                }],
            )
            .unwrap();
    }
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::init(
        &dir.path().join("data"),
        &dir.path().join("vault"),
        MON - DAY,
        "test",
    )
    .unwrap();
    let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    store.note_policy(&policy, "test", MON - DAY).unwrap();
    Rig { dir, store, policy }
}

fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn export_finds_exactly_one_person_across_epochs_and_spellings_and_erase_removes_only_them() {
    let mut r = rig();
    // Monday: alice (as the door receives one spelling), bob and carol.
    r.ingest(
        MON + 12 * 3600,
        &[
            ("a1".into(), MON + 3600, "Alice@Example.com"),
            ("b1".into(), MON + 3600, "bob@example.com"),
            ("c1".into(), MON + 3600, "carol@example.com"),
        ],
    );
    // The daily window of Monday is sealed (2 people at least: released numbers exist).
    let keys = r.store.key_ring().unwrap();
    r.store
        .seal(&r.policy, &keys, MON + DAY + 2 * 3600, "test")
        .unwrap();
    let sealed_before = r.store.exact_aggregates("daily", "", 0, i64::MAX).unwrap();
    assert_eq!(sealed_before.len(), 1);
    // A new epoch from Tuesday noon; alice again under another spelling, and bob.
    r.store.rotate_keys(MON + DAY + 12 * 3600, "test").unwrap();
    r.ingest(
        MON + DAY + 14 * 3600,
        &[
            (
                "a2".into(),
                MON + DAY + 13 * 3600,
                "  ALICE@example.COM\u{200b}",
            ),
            ("a3".into(), MON + DAY + 13 * 3600, "alice@example.com"),
            ("b2".into(), MON + DAY + 13 * 3600, "bob@example.com"),
        ],
    );
    let keys = r.store.key_ring().unwrap();
    let now = MON + DAY + 15 * 3600;
    let x = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "alice@example.com",
        now,
    )
    .unwrap();
    assert_eq!(x.epochs_searched, vec![1, 2]);
    let rows = &x.staging["c.one"];
    assert_eq!(
        rows.len(),
        3,
        "alice's three events, one in epoch 1, two in epoch 2"
    );
    assert_eq!(
        rows.iter().map(|r| r.epoch.0).collect::<Vec<_>>(),
        vec![1, 2, 2]
    );
    // Per-contributor state of the open windows: the week (3 events) and Tuesday.
    let mut state: Vec<(String, i64)> = x
        .per_contributor_state
        .iter()
        .map(|c| (c.metric.clone(), c.n))
        .collect();
    state.sort();
    assert_eq!(
        state,
        vec![
            ("daily".into(), 2),
            ("weekly".into(), 1),
            ("weekly".into(), 2)
        ]
    );
    // Another spelling of the same person finds the same; a stranger finds nothing.
    let again = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        " ALICE@EXAMPLE.COM ",
        now,
    )
    .unwrap();
    assert_eq!(again.staging["c.one"].len(), 3);
    let none = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "dave@example.com",
        now,
    )
    .unwrap();
    assert!(none.staging.is_empty() && none.per_contributor_state.is_empty());

    let bob_before = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "bob@example.com",
        now,
    )
    .unwrap();
    let (events, records) = subject::erase(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "Alice@Example.com",
        now,
    )
    .unwrap();
    assert_eq!((events, records), (3, 3));
    let after = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "alice@example.com",
        now,
    )
    .unwrap();
    assert!(after.staging.is_empty() && after.per_contributor_state.is_empty());
    // Others untouched, to the record.
    let bob_after = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "bob@example.com",
        now,
    )
    .unwrap();
    assert_eq!(bob_after.staging["c.one"], bob_before.staging["c.one"]);
    assert_eq!(
        bob_after.per_contributor_state,
        bob_before.per_contributor_state
    );
    let carol = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "carol@example.com",
        now,
    )
    .unwrap();
    assert_eq!(carol.staging["c.one"].len(), 1);
    // Sealed aggregates (and so released numbers) are unchanged.
    assert_eq!(
        r.store.exact_aggregates("daily", "", 0, i64::MAX).unwrap(),
        sealed_before
    );
    // Sealing the week now counts bob and carol, not alice (two contributors; bob's two
    // events bounded to one by the default l∞ of 1).
    let keys = r.store.key_ring().unwrap();
    r.store
        .seal(&r.policy, &keys, MON + 8 * DAY + 2 * 3600, "test")
        .unwrap();
    let week = r
        .store
        .exact_aggregates("weekly", "", MON, MON + 1)
        .unwrap();
    assert_eq!((week[0].contributors, week[0].count), (2, 2));
    // Audited with counts; the identifier is nowhere in the log or any file.
    let log: Vec<String> = r
        .store
        .audit_entries(&[subject::EXPORT, subject::ERASE])
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert!(
        log.iter().any(|d| d.contains("\"staged_events\":3")),
        "{log:?}"
    );
    assert!(r.store.audit_verify(&[]).unwrap().ok);
    drop(r.store);
    let bytes = all_bytes(r.dir.path());
    for needle in ["alice", "Alice", "ALICE"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} written somewhere"
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// After the first epoch is shredded, a copy of the data directory taken before the
/// purge and restored next to the current vault yields nothing of that epoch for any
/// original identifier: its pseudonyms cannot be computed any more.
#[test]
fn a_restored_backup_gives_a_subject_request_nothing_of_a_shredded_epoch() {
    let mut r = rig();
    let people = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let evs: Vec<(String, i64, &str)> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("e1-{i}"), MON + 3600, *p))
        .collect();
    r.ingest(MON + 2 * 3600, &evs);
    r.store.rotate_keys(MON + DAY, "test").unwrap();
    let evs: Vec<(String, i64, &str)> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("e2-{i}"), MON + DAY + 3600, *p))
        .collect();
    r.ingest(MON + DAY + 2 * 3600, &evs);
    let data = r.dir.path().join("data");
    let backup = r.dir.path().join("backup");
    copy_dir(&data, &backup);
    // Fifteen days after epoch 1 ended (14-day default retention), windows sealed.
    let later = MON + 16 * DAY;
    let keys = r.store.key_ring().unwrap();
    r.store.seal(&r.policy, &keys, later, "test").unwrap();
    let report = r
        .store
        .purge(&r.policy, later, "test", veil_store::PurgeMode::Run)
        .unwrap();
    assert_eq!(report.epochs_shredded, vec![1]);
    drop(r.store);
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    let mut restored = SqliteStore::open(&data, &r.dir.path().join("vault")).unwrap();
    let keys = restored.key_ring().unwrap();
    for p in people {
        let x = subject::export(&mut restored, &r.policy, &keys, "privacy", p, later).unwrap();
        assert_eq!(x.epochs_searched, vec![2]);
        assert_eq!(x.epochs_shredded, vec![1]);
        let epochs: Vec<u32> = x.staging.values().flatten().map(|r| r.epoch.0).collect();
        assert_eq!(epochs, vec![2], "only the second epoch's event of {p}");
    }
}

/// Opt-out: later events of the person are dropped at the door and counted as
/// `opted_out` (in a later epoch too: the opt-out outlives rotations); earlier ones stay
/// until erased.
#[test]
fn an_opt_out_drops_later_events_counted_and_keeps_earlier_ones_until_erased() {
    let mut r = rig();
    r.ingest(
        MON + 2 * 3600,
        &[
            ("a1".into(), MON + 3600, "alice@example.com"),
            ("b1".into(), MON + 3600, "bob@example.com"),
        ],
    );
    let keys = r.store.key_ring().unwrap();
    let now = MON + 3 * 3600;
    assert!(subject::opt_out(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        " Alice@Example.com",
        now
    )
    .unwrap());
    assert!(!subject::opt_out(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "alice@example.com",
        now
    )
    .unwrap());
    // Before: still there.
    let keys = r.store.key_ring().unwrap();
    // Two digests: the normalized spelling and the one given (a field with normalization
    // turned off would see that one).
    assert_eq!(keys.opt_out_count(), 2);
    let x = subject::export(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "alice@example.com",
        now,
    )
    .unwrap();
    assert_eq!(x.staging["c.one"].len(), 1);
    // After, in this epoch and the next, under any spelling: dropped and counted.
    r.store.rotate_keys(MON + 4 * 3600, "test").unwrap();
    let keys = r.store.key_ring().unwrap();
    let door = Door::new(
        &r.policy,
        &keys,
        Limits::default(),
        MON + 6 * 3600,
        r.store.sealed_before(&r.policy).unwrap(),
    );
    let src = Source {
        name: "test".into(),
        collections: None,
        consent: None,
    };
    let mut batch = AcceptedBatch::default();
    let mut reasons = Vec::new();
    for (i, (t, user)) in [
        (MON + 3 * 3600 + 60, "alice@example.com"),
        (MON + 5 * 3600, "ALICE@example.com "),
        (MON + 5 * 3600, "bob@example.com"),
    ]
    .iter()
    .enumerate()
    {
        let time = chrono::DateTime::from_timestamp(*t, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let l = format!(
            r#"{{"event":"c.one","time":"{time}","id":"n{i}","attrs":{{"user":"{user}","region":"eu"}}}}"#
        );
        if let Err(rej) = door.admit_into(l.as_bytes(), &src, MissingId::Unidentified, &mut batch) {
            reasons.push(rej.reason().code());
        }
    }
    assert_eq!(reasons, vec!["opted_out", "opted_out"]);
    assert_eq!(batch.len(), 1, "bob's event passes");
    // Audited without the identifier.
    let log: Vec<String> = r
        .store
        .audit_entries(&["subject_opt_out"])
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| !d.contains("alice")));
    // Erasure removes what was stored before the opt-out.
    let (events, _) = subject::erase(
        &mut r.store,
        &r.policy,
        &keys,
        "privacy",
        "alice@example.com",
        now,
    )
    .unwrap();
    assert_eq!(events, 1);
}
