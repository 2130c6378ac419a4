//! The idempotency index of the embedded store: which (source, event id) pairs were
//! already accepted, as 16-byte keyed digests of the pair (never the id itself).
//!
//! One B-tree row per event cost more than the whole door, so the index is kept the way
//! an LSM tree keeps it: each ingest batch appends one sorted run (a blob of keys) inside
//! the batch's own transaction, and the process holds every key in a hash set. Runs are
//! merged in tiers of [`TIER`] so a long-lived gateway committing small batches keeps
//! O(log n) runs and rewrites each key O(log n) times; a run of [`SETTLED`] keys or more
//! is left as it is.
//!
//! Invariants: a key is in a committed run if and only if its event was committed; the
//! in-memory set is refreshed from runs written by other processes inside the writer's
//! transaction (`BEGIN IMMEDIATE` serializes writers), so two processes ingesting into
//! one data directory still never count an event twice. The set holds keyed digests
//! only — never an id.

use crate::{Result, StoreError};
use rusqlite::{params, Transaction};

/// Runs of one size tier merged together.
const TIER: usize = 8;

/// Runs this large are never merged again: their per-row overhead is already negligible
/// next to their keys, and rewriting them would cost every large batch a second write.
const SETTLED: usize = 1 << 16;

/// A dedupe key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key([u8; 16]);

/// One stored run: its row id, how many keys it holds, and the event minutes they span
/// (what retention will prune runs by).
#[derive(Clone, Copy)]
struct Run {
    id: i64,
    n: usize,
    minutes: (i64, i64),
}

/// The in-memory view of the stored runs.
#[derive(Default)]
pub(crate) struct SeenIndex {
    keys: rustc_hash::FxHashSet<Key>,
    /// Highest run id whose keys are in `keys`.
    loaded_upto: i64,
}

/// What one batch's check decided, to undo if its transaction does not commit.
pub(crate) struct Claimed {
    keys: Vec<Key>,
    loaded_upto: i64,
}

impl SeenIndex {
    /// Loads runs written since the last call (by this or any other process). Must run
    /// inside the writer's transaction so nothing can be written in between.
    fn refresh(&mut self, tx: &Transaction) -> Result<()> {
        let mut st =
            tx.prepare_cached("SELECT id, keys FROM staging_seen_runs WHERE id > ?1 ORDER BY id")?;
        let mut rows = st.query([self.loaded_upto])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let blob = r.get_ref(1)?.as_blob().unwrap_or_default();
            if blob.is_empty() || blob.len() % 16 != 0 {
                return Err(StoreError::Corrupt("a dedupe run has a partial key".into()));
            }
            self.keys.reserve(blob.len() / 16);
            for k in blob.chunks_exact(16) {
                self.keys.insert(Key(k.try_into().expect("sixteen bytes")));
            }
            self.loaded_upto = self.loaded_upto.max(id);
        }
        Ok(())
    }

    /// Marks which of `batch` (one optional key and event time per event) were seen
    /// before, in this batch or in any committed one, and appends the fresh keys as a new
    /// run.
    pub(crate) fn claim(
        &mut self,
        tx: &Transaction,
        batch: &[Option<([u8; 16], i64)>],
        now: i64,
    ) -> Result<(Vec<bool>, Claimed)> {
        let before = self.loaded_upto;
        if let Err(e) = self.refresh(tx) {
            self.loaded_upto = before;
            return Err(e);
        }
        self.keys.reserve(batch.len());
        let mut fresh = Vec::with_capacity(batch.len());
        let mut minutes = (i64::MAX, i64::MIN);
        let dup = batch
            .iter()
            .map(|k| match k {
                Some((k, t)) if self.keys.insert(Key(*k)) => {
                    fresh.push(Key(*k));
                    let m = t.div_euclid(60);
                    minutes = (minutes.0.min(m), minutes.1.max(m));
                    false
                }
                Some(_) => true,
                None => false,
            })
            .collect();
        let claimed = Claimed {
            keys: fresh,
            loaded_upto: before,
        };
        if let Err(e) = self.write_run(tx, &claimed.keys, minutes, now) {
            self.release(claimed);
            return Err(e);
        }
        Ok((dup, claimed))
    }

    /// Forgets keys claimed by a batch whose transaction failed.
    pub(crate) fn release(&mut self, c: Claimed) {
        for k in c.keys {
            self.keys.remove(&k);
        }
        // Run ids of a rolled-back transaction can be taken again by another writer.
        self.loaded_upto = c.loaded_upto;
    }

    fn write_run(
        &mut self,
        tx: &Transaction,
        fresh: &[Key],
        minutes: (i64, i64),
        now: i64,
    ) -> Result<()> {
        if fresh.is_empty() {
            return Ok(());
        }
        let mut sorted = fresh.to_vec();
        sorted.sort_unstable();
        insert_run(tx, &sorted, minutes, now)?;
        self.loaded_upto = tx.last_insert_rowid();
        self.compact(tx, now)
    }

    /// Merges the newest runs while the last [`TIER`] of them share a size tier.
    fn compact(&mut self, tx: &Transaction, now: i64) -> Result<()> {
        loop {
            let runs: Vec<Run> = {
                let mut st = tx.prepare_cached(
                    "SELECT id, n, min_minute, max_minute FROM staging_seen_runs ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = st.query_map([TIER as i64], |r| {
                    Ok(Run {
                        id: r.get(0)?,
                        n: r.get::<_, i64>(1)? as usize,
                        minutes: (r.get(2)?, r.get(3)?),
                    })
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let tier = |n: usize| (usize::BITS - (n / 1024).leading_zeros()) / 3;
            if runs.len() < TIER
                || runs[0].n >= SETTLED
                || runs.iter().any(|r| tier(r.n) != tier(runs[0].n))
            {
                return Ok(());
            }
            let mut merged: Vec<Key> = Vec::with_capacity(runs.iter().map(|r| r.n).sum());
            {
                let mut get =
                    tx.prepare_cached("SELECT keys FROM staging_seen_runs WHERE id = ?1")?;
                for r in &runs {
                    let blob: Vec<u8> = get.query_row([r.id], |row| row.get(0))?;
                    merged.extend(
                        blob.chunks_exact(16)
                            .map(|k| Key(k.try_into().expect("sixteen bytes"))),
                    );
                }
            }
            merged.sort(); // a merge of sorted runs: the stable sort finds and merges them
            merged.dedup();
            let oldest = runs.iter().map(|r| r.id).min().unwrap_or(0);
            tx.execute("DELETE FROM staging_seen_runs WHERE id >= ?1", [oldest])?;
            let minutes = runs.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(r.minutes.0), hi.max(r.minutes.1))
            });
            insert_run(tx, &merged, minutes, now)?;
            self.loaded_upto = self.loaded_upto.max(tx.last_insert_rowid());
        }
    }
}

fn insert_run(tx: &Transaction, sorted: &[Key], (lo, hi): (i64, i64), now: i64) -> Result<()> {
    let mut blob = Vec::with_capacity(sorted.len() * 16);
    for k in sorted {
        blob.extend_from_slice(&k.0);
    }
    tx.prepare_cached(
        "INSERT INTO staging_seen_runs (n, min_minute, max_minute, keys, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![sorted.len() as i64, lo, hi, blob, now])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, TransactionBehavior};

    fn db(path: &std::path::Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")
            .unwrap();
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS staging_seen_runs (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, min_minute INTEGER NOT NULL, max_minute INTEGER NOT NULL, keys BLOB NOT NULL, created_at INTEGER NOT NULL);",
        )
        .unwrap();
        c
    }

    fn key(i: u32) -> Option<([u8; 16], i64)> {
        let mut k = [0u8; 16];
        k[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        k[8..12].copy_from_slice(&i.to_le_bytes());
        Some((k, i64::from(i) * 9))
    }

    fn claim(c: &mut Connection, s: &mut SeenIndex, keys: &[Option<([u8; 16], i64)>]) -> Vec<bool> {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let (dup, _) = s.claim(&tx, keys, 0).unwrap();
        tx.commit().unwrap();
        dup
    }

    #[test]
    fn small_batches_are_compacted_and_every_key_stays_known() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = db(&dir.path().join("t.db"));
        let mut s = SeenIndex::default();
        let all: Vec<_> = (0..20_000).map(key).collect();
        for chunk in all.chunks(100) {
            assert!(claim(&mut c, &mut s, chunk).iter().all(|d| !d));
        }
        let runs: i64 = c
            .query_row("SELECT COUNT(*) FROM staging_seen_runs", [], |r| r.get(0))
            .unwrap();
        assert!(
            runs < 3 * TIER as i64,
            "{runs} runs after 200 batches: compaction did not run"
        );
        let stored: i64 = c
            .query_row("SELECT SUM(n) FROM staging_seen_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 20_000, "a merge lost or duplicated keys");
        // This process and a fresh one (loading only from the runs) both know every key.
        assert!(claim(&mut c, &mut s, &all).iter().all(|d| *d));
        let mut fresh = SeenIndex::default();
        assert!(claim(&mut c, &mut fresh, &all).iter().all(|d| *d));
        // Events without ids are never duplicates; a repeat inside one batch is.
        let dup = claim(&mut c, &mut s, &[None, None, key(99_999), key(99_999)]);
        assert_eq!(dup, vec![false, false, false, true]);
    }

    #[test]
    fn settled_runs_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = db(&dir.path().join("t.db"));
        let mut s = SeenIndex::default();
        let all: Vec<_> = (0..(TIER as u32 + 1) * SETTLED as u32).map(key).collect();
        for chunk in all.chunks(SETTLED) {
            assert!(claim(&mut c, &mut s, chunk).iter().all(|d| !d));
        }
        let runs: i64 = c
            .query_row("SELECT COUNT(*) FROM staging_seen_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, TIER as i64 + 1, "large runs were merged");
        let mut fresh = SeenIndex::default();
        assert!(claim(&mut c, &mut fresh, &all).iter().all(|d| *d));
    }

    #[test]
    fn two_processes_on_one_directory_never_both_accept_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (mut c1, mut c2) = (db(&path), db(&path));
        let (mut a, mut b) = (SeenIndex::default(), SeenIndex::default());
        let first: Vec<_> = (0..500).map(key).collect();
        let overlap: Vec<_> = (250..750).map(key).collect();
        assert!(claim(&mut c1, &mut a, &first).iter().all(|d| !d));
        let dup = claim(&mut c2, &mut b, &overlap);
        assert_eq!(dup.iter().filter(|d| **d).count(), 250);
        // And back: the first process sees what the second wrote.
        let dup = claim(&mut c1, &mut a, &(600..800).map(key).collect::<Vec<_>>());
        assert_eq!(dup.iter().filter(|d| **d).count(), 150);
    }

    #[test]
    fn a_rolled_back_batch_leaves_its_keys_claimable() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = db(&dir.path().join("t.db"));
        let mut s = SeenIndex::default();
        let batch: Vec<_> = (0..10).map(key).collect();
        {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            let (dup, claimed) = s.claim(&tx, &batch, 0).unwrap();
            assert!(dup.iter().all(|d| !d));
            drop(tx); // rolled back, as when a later insert of the batch fails
            s.release(claimed);
        }
        assert!(claim(&mut c, &mut s, &batch).iter().all(|d| !d));
        assert!(claim(&mut c, &mut s, &batch).iter().all(|d| *d));
    }
}
