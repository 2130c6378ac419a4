//! Retention and crypto-shredding at the store, with an injected clock: what a purge
//! deletes and keeps, what its audit entry says, and that a copy of the data directory
//! taken before the purge cannot be read with anything Veil holds afterwards.

use veil_pipeline::{AcceptedBatch, Door, Limits, MissingId, Source};
use veil_store::{
    IngestBatch, PeriodCharge, PurgeMode, ReleaseRecord, ReleasedWindows, SealedAggregates,
    SqliteStore, Store, Vault,
};

const DAY: i64 = 86_400;

const POLICY: &str = r#"
version: 1
organization: Test
defaults: { seal_grace: 1h, min_group_size: 2 }
collections:
  - name: t.event
    purpose: { what: test events, question: is retention applied, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    staging_retention: 3d
    aggregate_retention: 20d
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

/// Midnight UTC of a day in November 2025, plus `hours`: a year in the past, so even the
/// latest instant a test moves its clock to is before the wall clock (`audit verify`
/// refuses purge entries from the future).
fn nov(day: u32, hours: i64) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2025, 11, day)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
        + hours * 3600
}

fn line(id: &str, t: i64, user: &str) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(t, 0).unwrap();
    format!(
        r#"{{"event":"t.event","time":"{}","id":"{id}","attrs":{{"user":"{user}","region":"eu"}}}}"#,
        t.format("%Y-%m-%dT%H:%M:%SZ")
    )
    .into_bytes()
}

struct Rig {
    dir: tempfile::TempDir,
    store: SqliteStore,
    policy: veil_policy::Policy,
}

impl Rig {
    fn new(at: i64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::init(
            &dir.path().join("data"),
            &dir.path().join("vault"),
            at,
            "test",
        )
        .unwrap();
        let policy = policy();
        // As every command and the gateway do on open: the policy (and its retentions)
        // is in the audit log before anything else.
        store.note_policy(&policy, "test", at).unwrap();
        Rig { dir, store, policy }
    }

    /// Ingests events `(id, time, user)` as the gateway would at `now`, plus `bad`
    /// events the door rejects into quarantine.
    fn ingest(&mut self, now: i64, events: &[(&str, i64, &str)], bad: usize) {
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
            door.admit_into(
                &line(id, *t, user),
                &src,
                MissingId::Unidentified,
                &mut accepted,
            )
            .expect("the door passes it");
        }
        let mut rejected = Vec::new();
        for i in 0..bad {
            let l = format!(
                r#"{{"event":"t.event","time":"2025-11-01T00:00:00Z","id":"bad{i}","attrs":{{"user":"x","region":"mars"}}}}"#
            );
            rejected.push(
                door.admit_into(
                    l.as_bytes(),
                    &src,
                    MissingId::Unidentified,
                    &mut AcceptedBatch::default(),
                )
                .unwrap_err(),
            );
        }
        let o = self
            .store
            .ingest(
                &self.policy,
                &keys,
                &[IngestBatch {
                    source: "test",
                    received_at: now,
                    accepted,
                    rejected,
                }],
            )
            .unwrap()
            .remove(0);
        assert_eq!(o.accepted, events.len());
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn vault(&self) -> std::path::PathBuf {
        self.dir.path().join("vault")
    }

    fn count(&self, sql: &str) -> i64 {
        rusqlite::Connection::open(SqliteStore::db_path(&self.data()))
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    fn staged_on(&self, day: u32) -> i64 {
        self.count(&format!(
            "SELECT COALESCE(SUM(events), 0) FROM staging_segments WHERE day = {}",
            nov(day, 0) / DAY
        ))
    }

    fn last_entry(&self, action: &str) -> serde_json::Value {
        let e = self.store.last_audit(action).unwrap().expect("audited");
        serde_json::from_str(&e.detail).unwrap()
    }
}

/// Three days of staging retention, twenty of aggregates, a clock moved by hand: rows
/// older than their retention are gone after the purge, younger ones remain, the audit
/// entry counts exactly what went, and the idempotency memory shrinks with it.
#[test]
fn a_purge_deletes_exactly_what_is_past_retention_and_says_so() {
    let mut r = Rig::new(nov(1, 0));
    // Events on the 1st to the 6th, two people a day, each day ingested that day.
    for d in 1..=6u32 {
        let evs: Vec<(String, i64, String)> = (0..2)
            .map(|u| (format!("e{d}-{u}"), nov(d, 10), format!("u{u}@example.com")))
            .collect();
        let evs: Vec<(&str, i64, &str)> = evs
            .iter()
            .map(|(a, b, c)| (a.as_str(), *b, c.as_str()))
            .collect();
        r.ingest(nov(d, 12), &evs, if d == 1 { 3 } else { 0 });
        let keys = r.store.key_ring().unwrap();
        r.store.seal(&r.policy, &keys, nov(d, 12), "test").unwrap();
    }
    let memory_before = r.store.idempotency_ids_in_memory();
    assert_eq!(r.count("SELECT COUNT(*) FROM quarantine"), 3);
    // The 7th at noon: the 1st to the 3rd ended more than three days ago (the 3rd ended
    // on the 4th at midnight, 3.5 days before); the 4th ended 2.5 days ago.
    let now = nov(7, 12);
    let dry = r
        .store
        .purge(&r.policy, now, "test", PurgeMode::DryRun)
        .unwrap();
    assert_eq!(dry.staging_events.get("t.event"), Some(&6));
    assert_eq!(r.staged_on(1), 2, "a dry run changes nothing");
    let report = r
        .store
        .purge(&r.policy, now, "test", PurgeMode::Run)
        .unwrap();
    assert_eq!(
        report,
        veil_store::PurgeReport {
            dry_run: false,
            ..dry.clone()
        }
    );
    for d in 1..=3 {
        assert_eq!(r.staged_on(d), 0, "day {d} is past retention");
    }
    for d in 4..=6 {
        assert_eq!(r.staged_on(d), 2, "day {d} is not");
    }
    assert_eq!(report.quarantine_rows, 3, "quarantine rows of the 1st went");
    assert_eq!(r.count("SELECT COUNT(*) FROM quarantine"), 0);
    assert!(report.dedupe_ids > 0);
    let detail = r.last_entry("purge");
    assert_eq!(detail["staging_events"]["t.event"], 6);
    assert_eq!(detail["quarantine_rows"], 3);
    assert_eq!(detail["dedupe_ids"], report.dedupe_ids);
    assert!(
        r.store.idempotency_ids_in_memory() < memory_before,
        "the idempotency memory shrinks with the runs"
    );
    // Aggregates stay for twenty days: nothing went, every sealed window (the 1st to the
    // 5th; the 6th was still open at its last seal) is still there.
    assert!(report.aggregate_rows.is_empty());
    assert_eq!(
        r.store
            .exact_aggregates("daily", "region", 0, i64::MAX)
            .unwrap()
            .len(),
        5
    );
    // A second purge at the same instant finds nothing more, and says so in the log.
    let again = r
        .store
        .purge(&r.policy, now, "test", PurgeMode::Run)
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        r.last_entry("purge")["staging_events"],
        serde_json::json!({})
    );
    assert!(r.store.audit_verify(&[]).unwrap().ok);
}

/// Aggregates and the stored releases of their windows go once the window is past the
/// aggregate retention; the release's audit entry stays and `audit verify` accepts the
/// purge, while a release deleted by hand is still caught.
#[test]
fn aggregates_and_releases_go_with_the_aggregate_retention_and_verify_holds() {
    let mut r = Rig::new(nov(1, 0));
    for d in [1u32, 2, 10] {
        r.ingest(
            nov(d, 12),
            &[
                (&format!("a{d}"), nov(d, 10), "a@example.com"),
                (&format!("b{d}"), nov(d, 10), "b@example.com"),
            ],
            0,
        );
    }
    let keys = r.store.key_ring().unwrap();
    r.store.seal(&r.policy, &keys, nov(11, 12), "test").unwrap();
    // One release per day window, as the release layer stores them.
    for d in [1u32, 2, 10] {
        let rec = ReleaseRecord {
            release_id: format!("rel-{d}"),
            query_key: format!("q-{d}"),
            principal: "analyst".into(),
            collection: "t.event".into(),
            epsilon: 0.5,
            created_at: nov(11, 12),
            document: format!("{{\"day\":{d}}}"),
        };
        let windows = ReleasedWindows {
            metric: "daily".into(),
            grouping: "region".into(),
            starts: vec![nov(d, 0)],
        };
        let charge = PeriodCharge {
            period_start: nov(1, 0),
            period_end: nov(1, 0) + 30 * DAY,
            epsilon_micro: 500_000,
        };
        let detail = serde_json::json!({});
        let spent = r
            .store
            .spend_and_store(&rec, &windows, &[charge], 10_000_000, &detail, &|_| {
                rec.document.clone()
            })
            .unwrap();
        assert!(matches!(spent, veil_store::Spend::Spent { .. }));
    }
    assert!(r.store.audit_verify(&[]).unwrap().ok);
    // The 23rd: the windows of the 1st and 2nd ended more than 20 days before, the 10th
    // did not. Their aggregates go; the releases stay until the chain proves them past
    // retention too (each window counted as a month at most).
    let report = r
        .store
        .purge(&r.policy, nov(23, 1), "test", PurgeMode::Run)
        .unwrap();
    // Two windows, each as the total and by region.
    assert_eq!(report.aggregate_rows.get("daily"), Some(&4));
    assert!(report.releases.is_empty());
    let left = r
        .store
        .exact_aggregates("daily", "region", 0, i64::MAX)
        .unwrap();
    assert_eq!(
        left.iter().map(|a| a.window_start).collect::<Vec<_>>(),
        vec![nov(10, 0)]
    );
    // 51 days after the 2nd (a month plus the 20-day retention): rel-1 and rel-2 go.
    let later = nov(2, 0) + 51 * DAY + 3600;
    let report = r
        .store
        .purge(&r.policy, later, "test", PurgeMode::Run)
        .unwrap();
    assert_eq!(
        report.releases,
        vec!["rel-1".to_owned(), "rel-2".to_owned()]
    );
    assert_eq!(report.aggregate_rows.get("daily"), Some(&2));
    assert_eq!(
        r.last_entry("purge")["releases"],
        serde_json::json!(["rel-1", "rel-2"])
    );
    let ids: Vec<String> = r
        .store
        .releases()
        .unwrap()
        .into_iter()
        .map(|r| r.release_id)
        .collect();
    assert_eq!(ids, vec!["rel-10".to_owned()]);
    let v = r.store.audit_verify(&[]).unwrap();
    assert!(v.ok, "{:?}", v.problem);
    // The budget already spent on that data stays spent.
    assert_eq!(
        r.store
            .spent("t.event", nov(1, 0), nov(1, 0) + 30 * DAY)
            .unwrap(),
        1.5
    );
    // Deleting the release that is not past retention, by hand, is caught — also with
    // a well-formed `purge` entry appended that claims it.
    let c = rusqlite::Connection::open(SqliteStore::db_path(&r.data())).unwrap();
    for t in ["releases", "release_windows", "release_index"] {
        c.execute(&format!("DELETE FROM {t} WHERE release_id = 'rel-10'"), [])
            .unwrap();
    }
    let v = r.store.audit_verify(&[]).unwrap();
    assert!(!v.ok && v.problem.unwrap().contains("rel-10"));
    r.store
        .audit(
            "intruder",
            "purge",
            &serde_json::json!({"releases": ["rel-10"]}),
            later,
        )
        .unwrap();
    let v = r.store.audit_verify(&[]).unwrap();
    assert!(!v.ok, "a forged purge entry excuses nothing");
    assert!(v.problem.unwrap().contains("rel-10"));
}

/// A monthly window that started in an epoch keeps the epoch's keys until it is
/// sealed, even when no state of it is stored yet: events arriving later in that month
/// need them for their contributor ids, and would otherwise be accepted and not counted.
#[test]
fn an_epoch_is_not_shredded_while_a_window_that_started_in_it_is_open() {
    const MONTHLY: &str = "window: day";
    let text = POLICY.replace(MONTHLY, "window: month");
    let p = veil_policy::load_str(&text, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    let mut r = Rig::new(nov(1, 0));
    r.policy = p;
    r.store.note_policy(&r.policy, "test", nov(1, 0)).unwrap();
    r.store.rotate_keys(nov(5, 0), "test").unwrap();
    // The 9th: epoch 1 ended more than three days ago and holds nothing, but November
    // (which started in it) is open.
    let report = r
        .store
        .purge(&r.policy, nov(9, 0), "test", PurgeMode::Run)
        .unwrap();
    assert!(report.epochs_shredded.is_empty(), "{report:?}");
    assert_eq!(report.epochs_held.len(), 1);
    // Events later in November are counted: after the month is sealed, its aggregate
    // holds them.
    r.ingest(
        nov(10, 12),
        &[
            ("m1", nov(10, 10), "a@example.com"),
            ("m2", nov(10, 11), "b@example.com"),
        ],
        0,
    );
    let dec2 = nov(30, 0) + 2 * DAY;
    let keys = r.store.key_ring().unwrap();
    r.store.seal(&r.policy, &keys, dec2, "test").unwrap();
    let rows = r
        .store
        .exact_aggregates("daily", "", nov(1, 0), nov(2, 0))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].count, 2);
    // Sealed: now the epoch goes.
    let report = r
        .store
        .purge(&r.policy, dec2, "test", PurgeMode::Run)
        .unwrap();
    assert_eq!(report.epochs_shredded, vec![1]);
}

fn all_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Crypto-shredding against a backup: events of two epochs; a real file copy of the
/// data directory; the first epoch's retention passes and a purge destroys its keys;
/// the copy restored next to the current vault opens, but nothing of the first epoch in
/// it decrypts with any key Veil still holds, and no byte of the restored directory or
/// the vault is a key of that epoch.
#[test]
fn a_shredded_epoch_stays_unreadable_in_a_restored_backup() {
    let mut r = Rig::new(nov(1, 0));
    r.ingest(
        nov(2, 12),
        &[
            ("a1", nov(2, 10), "a@example.com"),
            ("b1", nov(2, 11), "b@example.com"),
        ],
        0,
    );
    // A second epoch from the 3rd on (before the first day's window is sealed: its
    // per-contributor state is in the backup too).
    r.store.rotate_keys(nov(3, 0), "test").unwrap();
    r.ingest(
        nov(3, 12),
        &[
            ("a2", nov(3, 10), "a@example.com"),
            ("c2", nov(3, 11), "c@example.com"),
        ],
        0,
    );
    let first = r.store.epochs().unwrap()[0].clone();
    let first_keys = first.keys.clone().expect("live before the purge");
    // The backup: a plain copy of every file, WAL and all, while the store is open.
    let backup = r.dir.path().join("backup");
    copy_dir(&r.data(), &backup);
    let staged_backup: i64 = rusqlite::Connection::open(SqliteStore::db_path(&backup))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM staging_segments WHERE epoch = 1",
            [],
            |x| x.get(0),
        )
        .unwrap();
    assert!(
        staged_backup > 0,
        "the backup holds the first epoch's staging"
    );
    // Before its retention ends, the first epoch is kept.
    let keys = r.store.key_ring().unwrap();
    r.store.seal(&r.policy, &keys, nov(4, 12), "test").unwrap();
    let early = r
        .store
        .purge(&r.policy, nov(4, 12), "test", PurgeMode::Run)
        .unwrap();
    assert!(early.epochs_shredded.is_empty());
    // The 6th at noon: the first epoch ended on the 3rd, more than three days before.
    let now = nov(6, 12);
    let report = r
        .store
        .purge(&r.policy, now, "test", PurgeMode::Run)
        .unwrap();
    assert_eq!(report.epochs_shredded, vec![1]);
    assert_eq!(r.last_entry("key_shred")["epochs"], serde_json::json!([1]));
    let listed = r.store.epochs().unwrap();
    assert!(listed[0].keys.is_none() && listed[0].shredded_at == Some(now));
    assert!(
        listed[1].keys.is_some(),
        "the second epoch is not past retention"
    );
    let (data, vault) = (r.data(), r.vault());
    let Rig {
        dir: _dir, store, ..
    } = r;
    drop(store);

    // Restore: the backup replaces the data directory, the vault is today's.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    let restored = SqliteStore::open(&data, &vault).unwrap();
    let ring = restored.key_ring().unwrap();
    assert!(ring.epochs().next().unwrap().keys.is_none());
    // No first-epoch staging segment opens with any data key the vault still holds.
    let held: Vec<veil_pipeline::Secret> = veil_store::FileVault::open(&vault)
        .unwrap()
        .epochs()
        .unwrap()
        .into_iter()
        .filter_map(|e| e.keys.map(|k| k.data))
        .collect();
    assert!(!held.is_empty());
    let conn = rusqlite::Connection::open(SqliteStore::db_path(&data)).unwrap();
    let mut st = conn
        .prepare("SELECT collection, day, nonce, ciphertext FROM staging_segments WHERE epoch = 1")
        .unwrap();
    let segs: Vec<(String, i64, Vec<u8>, Vec<u8>)> = st
        .query_map([], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!segs.is_empty());
    for (c, day, nonce, ct) in &segs {
        let aad = format!("veil-staging\0{c}\01\0{day}");
        for k in &held {
            assert!(veil_store::crypto::open(k, aad.as_bytes(), nonce, ct).is_none());
        }
        // With the destroyed key it would have opened: the test can fail.
        assert!(veil_store::crypto::open(&first_keys.data, aad.as_bytes(), nonce, ct).is_some());
    }
    // Per-contributor state of first-epoch windows in the backup: no held key opens it.
    let mut st = conn
        .prepare("SELECT metric, window_start, data FROM staging_contrib WHERE window_start < ?1")
        .unwrap();
    let runs: Vec<(String, i64, Vec<u8>)> = st
        .query_map([first.end], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        !runs.is_empty(),
        "the backup holds per-contributor state of the first epoch"
    );
    for (metric, start, run) in &runs {
        assert_eq!(run[0], 2, "an encrypted run");
        assert_eq!(u32::from_le_bytes(run[1..5].try_into().unwrap()), 1);
        let aad = format!("veil-contrib\0{metric}\0{start}\01");
        let (nonce, ct) = (&run[5..17], &run[17..]);
        for k in &held {
            assert!(veil_store::crypto::open(k, aad.as_bytes(), nonce, ct).is_none());
        }
        assert!(veil_store::crypto::open(&first_keys.data, aad.as_bytes(), nonce, ct).is_some());
    }
    // No file of the restored directory or the vault holds a key of that epoch.
    let mut files = all_files(&data);
    files.extend(all_files(&vault));
    for secret in [first_keys.hmac.expose(), first_keys.data.expose()] {
        let hexed = hex::encode(secret);
        for (p, bytes) in &files {
            assert!(
                !contains(bytes, secret),
                "a destroyed key in {}",
                p.display()
            );
            assert!(
                !contains(bytes, hexed.as_bytes()),
                "a destroyed key in {}",
                p.display()
            );
        }
    }
    // Pseudonyms of the first epoch cannot be recomputed: the ring has no key for it.
    let id = veil_pipeline::Identifier::new(std::borrow::Cow::Borrowed("a@example.com"), true);
    assert!(ring.pseudonym_at(nov(2, 10), &id).is_none());
    assert!(ring.pseudonym_at(nov(3, 10), &id).is_some());
}

/// One vault serves one data directory: a second store made or opened against it is
/// refused instead of sharing (and later shredding) its keys.
#[test]
fn a_vault_serves_one_data_directory() {
    let r = Rig::new(nov(1, 0));
    let other = r.dir.path().join("other");
    let e = SqliteStore::init(&other, &r.vault(), nov(1, 0), "test")
        .err()
        .expect("refused");
    assert!(matches!(e, veil_store::StoreError::VaultMismatch(_)), "{e}");
}
