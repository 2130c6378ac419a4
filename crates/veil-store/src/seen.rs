//! The idempotency index of the embedded store: which (source, event id) pairs were
//! already accepted, as 16-byte keyed digests of the pair (never the id itself).
//!
//! One B-tree row per event cost more than the whole door, so the index is kept the way
//! an LSM tree keeps it: each ingest batch appends one sorted run (a blob of keys) inside
//! the batch's own transaction. Runs are merged in tiers of [`TIER`] so a long-lived
//! gateway committing small batches keeps O(log n) runs and rewrites each key O(log n)
//! times; a run of [`SETTLED`] keys or more is left as it is.
//!
//! In memory the process holds the same sorted runs plus a Bloom filter over every key:
//! a fresh key (nearly every key) costs one cache line of the filter, and only a filter
//! hit searches the runs. A hash set of every key cost twice the memory and, on VMs where
//! first-touched memory is slow, most of the claim's time while it grew.
//!
//! Invariants: a key is in a committed run if and only if its event was committed; the
//! in-memory runs are refreshed from runs written by other processes inside the writer's
//! transaction (`BEGIN IMMEDIATE` serializes writers), so two processes ingesting into
//! one data directory still never count an event twice; a batch's own run reaches memory
//! only after its transaction commits ([`SeenIndex::committed`]); run ids only grow
//! (a merge inserts its output before deleting its inputs, and whatever deletes runs later,
//! such as retention, must never delete the newest), because a refresh loads exactly the
//! ids above the highest it has seen. Memory holds keyed digests only — never an id.

use crate::{Result, StoreError};
use rusqlite::{params, Transaction};

/// Runs of one size tier merged together.
const TIER: usize = 8;

/// Runs this large are never merged again: their per-row overhead is already negligible
/// next to their keys, and rewriting them would cost every large batch a second write.
const SETTLED: usize = 1 << 16;

/// A dedupe key, as a big-endian integer: the same order as its bytes (what stored runs
/// are sorted by), at the price of an integer comparison instead of a `memcmp`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key(u128);

impl Key {
    fn of(bytes: &[u8]) -> Key {
        Key(u128::from_be_bytes(
            bytes.try_into().expect("sixteen bytes"),
        ))
    }
}

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
    /// Each stored run this process knows, by run id, as sorted chunks: a merge made by
    /// this process keeps its inputs' vectors instead of copying them into a new one
    /// (fresh memory is slow to touch on the VMs this runs on, and lookups are rare).
    runs: Vec<(i64, Vec<Vec<Key>>)>,
    /// Every key of `runs` (and possibly keys of rolled-back batches: a superset only
    /// costs a search).
    bloom: Bloom,
    /// Highest run id whose keys are in `runs`.
    loaded_upto: i64,
    /// A batch's keys with their positions and event times, sorted; kept between batches.
    order: Vec<(Key, u32, i64)>,
    /// The bytes of the run being written, kept between batches (a fresh buffer per
    /// batch was first-touched memory on every commit).
    blob: Vec<u8>,
    /// A merge's input runs, read from the store; kept like `blob`.
    merge_in: Vec<u8>,
}

/// What one batch's claim changed in the stored runs, applied to memory once its
/// transaction commits and dropped if it does not.
pub(crate) struct Claimed(Vec<Change>);

/// One change to the stored runs, in the order the transaction made them.
enum Change {
    Added(i64, Vec<Key>),
    /// These runs, oldest first, became the run with this id.
    Merged(Vec<i64>, i64),
}

impl SeenIndex {
    /// Loads runs written since the last call (by this or any other process) and forgets
    /// runs another process merged away. Must run inside the writer's transaction so
    /// nothing can be written in between.
    fn refresh(&mut self, tx: &Transaction) -> Result<()> {
        if !self.runs.is_empty() {
            let mut st = tx.prepare_cached("SELECT id FROM staging_seen_runs WHERE id <= ?1")?;
            let live: rustc_hash::FxHashSet<i64> = st
                .query_map([self.loaded_upto], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if live.len() != self.runs.len() {
                self.runs.retain(|(id, _)| live.contains(id));
                // Runs were merged or pruned away: a filter sized for what is left, so
                // memory follows retention instead of every key ever seen.
                self.bloom = Bloom::default();
                self.bloom.grow(self.len(), &self.runs);
            }
        }
        let mut st =
            tx.prepare_cached("SELECT id, keys FROM staging_seen_runs WHERE id > ?1 ORDER BY id")?;
        let mut rows = st.query([self.loaded_upto])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let blob = r.get_ref(1)?.as_blob().unwrap_or_default();
            if blob.is_empty() || blob.len() % 16 != 0 {
                return Err(StoreError::Corrupt("a dedupe run has a partial key".into()));
            }
            let keys: Vec<Key> = blob.chunks_exact(16).map(Key::of).collect();
            if !keys.is_sorted() {
                return Err(StoreError::Corrupt("a dedupe run is not sorted".into()));
            }
            self.bloom.grow(self.len() + keys.len(), &self.runs);
            keys.iter().for_each(|k| self.bloom.insert(k));
            self.runs.push((id, vec![keys]));
            self.loaded_upto = id;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.runs.iter().flat_map(|(_, c)| c).map(Vec::len).sum()
    }

    /// Forgets runs whose newest event minute is before `before_minute` — ids of events
    /// the door now refuses as older than retention, so remembering them protects
    /// nothing — but never the newest run (run ids only grow). Returns (runs, ids)
    /// deleted; memory follows at the next refresh, inside the next writer transaction.
    pub(crate) fn prune(&mut self, tx: &Transaction, before_minute: i64) -> Result<(usize, usize)> {
        let (runs, keys): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM staging_seen_runs
             WHERE max_minute < ?1 AND id < (SELECT MAX(id) FROM staging_seen_runs)",
            [before_minute],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM staging_seen_runs
             WHERE max_minute < ?1 AND id < (SELECT MAX(id) FROM staging_seen_runs)",
            [before_minute],
        )?;
        Ok((runs as usize, keys as usize))
    }

    /// Applies a committed prune to memory now (a refresh would too).
    pub(crate) fn pruned(&mut self, tx: &Transaction) -> Result<()> {
        self.refresh(tx)
    }

    /// Keys held in memory (for tests and the benchmark's memory figure).
    #[allow(dead_code)]
    pub(crate) fn keys_in_memory(&self) -> usize {
        self.len()
    }

    /// Whether a committed run holds `k`.
    fn known(&self, k: &Key) -> bool {
        self.bloom.may_hold(k)
            && self
                .runs
                .iter()
                .flat_map(|(_, c)| c)
                .any(|r| r.binary_search(k).is_ok())
    }

    /// Marks which of a batch's `events` (one optional key and event time each, in
    /// order) were seen before, in this batch or in any committed one, and appends the
    /// fresh keys as a new run. The returned [`Claimed`] goes to [`Self::committed`] once
    /// the transaction commits.
    pub(crate) fn claim(
        &mut self,
        tx: &Transaction,
        events: impl Iterator<Item = Option<([u8; 16], i64)>>,
        now: i64,
    ) -> Result<(Vec<bool>, Claimed)> {
        self.refresh(tx)?;
        // Keys in order, each with its position and time: a key's first occurrence in the batch
        // comes first among its equals, and the Bloom filter is probed in key order, which
        // walks its blocks front to back instead of jumping across megabytes.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        let mut n = 0;
        order.extend(events.enumerate().filter_map(|(i, k)| {
            n = i + 1;
            k.map(|(k, t)| (Key::of(&k), i as u32, t))
        }));
        order.sort_unstable();
        let mut dup = vec![false; n];
        let mut keys: Vec<Key> = Vec::with_capacity(order.len());
        let mut minutes = (i64::MAX, i64::MIN);
        let mut last: Option<Key> = None;
        for &(k, i, t) in order.iter() {
            if last.replace(k) == Some(k) || self.known(&k) {
                dup[i as usize] = true; // seen earlier in this batch, or in a committed one
            } else {
                keys.push(k);
                widen(&mut minutes, t);
            }
        }
        self.order = order;
        let mut claimed = Claimed(Vec::new());
        if !keys.is_empty() {
            let id = insert_run(tx, &mut self.blob, &keys, minutes, now)?;
            claimed.0.push(Change::Added(id, keys));
            self.compact(tx, now, &mut claimed)?;
        }
        Ok((dup, claimed))
    }

    /// Applies a committed batch's runs to memory.
    pub(crate) fn committed(&mut self, c: Claimed) {
        for change in c.0 {
            match change {
                Change::Added(id, keys) => {
                    self.bloom.grow(self.len() + keys.len(), &self.runs);
                    keys.iter().for_each(|k| self.bloom.insert(k));
                    self.loaded_upto = self.loaded_upto.max(id);
                    self.runs.push((id, vec![keys]));
                }
                Change::Merged(inputs, into) => {
                    let mut chunks = Vec::new();
                    let mut found = 0;
                    for input in &inputs {
                        if let Some(at) = self.runs.iter().position(|(id, _)| id == input) {
                            chunks.append(&mut self.runs.remove(at).1);
                            found += 1;
                        }
                    }
                    if found != inputs.len() {
                        // Cannot happen (the claim's refresh loaded every stored run), but
                        // if it did, reload every run from the store on the next claim.
                        self.runs.clear();
                        self.loaded_upto = 0;
                        continue;
                    }
                    if chunks.len() > TIER {
                        // Merges of merges: one vector, so lookups stay a few searches.
                        let mut one: Vec<Key> = chunks.concat();
                        one.sort_unstable();
                        chunks = vec![one];
                    }
                    self.loaded_upto = self.loaded_upto.max(into);
                    self.runs.push((into, chunks));
                }
            }
        }
    }

    /// Merges the newest runs while the last [`TIER`] of them share a size tier.
    fn compact(&mut self, tx: &Transaction, now: i64, claimed: &mut Claimed) -> Result<()> {
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
            // Oldest first, so the merged run lists its inputs in id order.
            let inputs: Vec<i64> = runs.iter().rev().map(|r| r.id).collect();
            let mut spans = Vec::with_capacity(inputs.len());
            self.merge_in.clear();
            self.merge_in.reserve(runs.iter().map(|r| r.n * 16).sum());
            {
                let mut get =
                    tx.prepare_cached("SELECT keys FROM staging_seen_runs WHERE id = ?1")?;
                for id in &inputs {
                    let start = self.merge_in.len();
                    get.query_row([id], |row| {
                        self.merge_in.extend_from_slice(row.get_ref(0)?.as_blob()?);
                        Ok(())
                    })?;
                    spans.push(start..self.merge_in.len() - (self.merge_in.len() - start) % 16);
                }
            }
            let n = merge_runs(&self.merge_in, spans, &mut self.blob)?;
            let minutes = runs.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(r.minutes.0), hi.max(r.minutes.1))
            });
            // Inserted before its inputs are deleted, so it takes a new, highest id: run
            // ids only ever grow, which is what lets another process's refresh trust them.
            let id = insert_blob(tx, &mut self.blob, n, minutes, now)?;
            if self.merge_in.capacity() > 16 << 20 {
                self.merge_in = Vec::new();
            }
            let mut del = tx.prepare_cached("DELETE FROM staging_seen_runs WHERE id = ?1")?;
            for r in &inputs {
                del.execute([r])?;
            }
            claimed.0.push(Change::Merged(inputs, id));
        }
    }
}

/// Merges sorted runs of 16-byte keys (`spans` of `data`) into `out`, each key once;
/// returns how many keys it wrote. A run out of order is corruption, not something to
/// merge around.
fn merge_runs(data: &[u8], spans: Vec<std::ops::Range<usize>>, out: &mut Vec<u8>) -> Result<usize> {
    use std::cmp::Reverse;
    let key_at = |at: usize| Key::of(&data[at..at + 16]);
    let mut heads: std::collections::BinaryHeap<Reverse<(Key, usize, usize)>> = spans
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| Reverse((key_at(s.start), s.start, s.end)))
        .collect();
    out.clear();
    out.reserve(data.len());
    let (mut n, mut last) = (0, None);
    while let Some(mut top) = heads.peek_mut() {
        let Reverse((k, at, end)) = *top;
        if last.is_some_and(|l| l > k) {
            return Err(StoreError::Corrupt("a dedupe run is not sorted".into()));
        }
        if last != Some(k) {
            out.extend_from_slice(&k.0.to_be_bytes());
            n += 1;
            last = Some(k);
        }
        if at + 16 < end {
            *top = Reverse((key_at(at + 16), at + 16, end));
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
    }
    Ok(n)
}

/// A blocked Bloom filter over dedupe keys: each key sets [`Bloom::BITS`] bits in one
/// 64-byte block, so a lookup touches one cache line. Keys are keyed SipHash digests,
/// already uniform, so their own bytes pick the block and the bits (no second hash, which
/// is why this is not a general-purpose Bloom crate). At 16 to 32 bits per key a fresh
/// key is mistaken for a known one, and searched for in the runs, 0.03–0.3% of the time.
#[derive(Default)]
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    /// Bits set per key: seven 9-bit positions from the key's second half.
    const BITS: u32 = 7;

    fn slots(k: &Key, n: usize) -> (usize, u64) {
        let (hi, lo) = ((k.0 >> 64) as u64, k.0 as u64);
        (((u128::from(hi) * n as u128) >> 64) as usize, lo)
    }

    fn may_hold(&self, k: &Key) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let (b, mut bits) = Self::slots(k, self.blocks.len());
        let block = &self.blocks[b];
        (0..Self::BITS).all(|_| {
            let p = (bits & 511) as usize;
            bits >>= 9;
            block[p >> 6] & (1 << (p & 63)) != 0
        })
    }

    fn insert(&mut self, k: &Key) {
        let (b, mut bits) = Self::slots(k, self.blocks.len());
        let block = &mut self.blocks[b];
        for _ in 0..Self::BITS {
            let p = (bits & 511) as usize;
            bits >>= 9;
            block[p >> 6] |= 1 << (p & 63);
        }
    }

    /// Makes room for `n` keys at 16 to 32 bits each, rebuilding from `runs` (in
    /// doublings, so each key is re-inserted O(1) times on average).
    fn grow(&mut self, n: usize, runs: &[(i64, Vec<Vec<Key>>)]) {
        if n <= self.blocks.len() * 32 {
            return;
        }
        let blocks = n.max(1 << 15).next_power_of_two() / 32;
        self.blocks = vec![[0u64; 8]; blocks];
        runs.iter()
            .flat_map(|(_, c)| c.iter().flatten())
            .for_each(|k| self.insert(k));
    }
}

/// Widens a run's span of event minutes to cover an event at `t`.
fn widen(minutes: &mut (i64, i64), t: i64) {
    let m = t.div_euclid(60);
    *minutes = (minutes.0.min(m), minutes.1.max(m));
}

fn insert_run(
    tx: &Transaction,
    blob: &mut Vec<u8>,
    sorted: &[Key],
    minutes: (i64, i64),
    now: i64,
) -> Result<i64> {
    blob.clear();
    blob.reserve(sorted.len() * 16);
    for k in sorted {
        blob.extend_from_slice(&k.0.to_be_bytes());
    }
    insert_blob(tx, blob, sorted.len(), minutes, now)
}

/// Stores a run already encoded in `blob` (`n` keys).
fn insert_blob(
    tx: &Transaction,
    blob: &mut Vec<u8>,
    n: usize,
    (lo, hi): (i64, i64),
    now: i64,
) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO staging_seen_runs (n, min_minute, max_minute, keys, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![n as i64, lo, hi, &blob[..], now])?;
    if blob.capacity() > 16 << 20 {
        *blob = Vec::new(); // one huge batch's run is not worth keeping
    }
    Ok(tx.last_insert_rowid())
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
        let (dup, claimed) = s.claim(&tx, keys.iter().copied(), 0).unwrap();
        tx.commit().unwrap();
        s.committed(claimed);
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Against a plain set of every key seen: the first occurrence of a new key is
        /// fresh, every later one (in the same batch or a later one) a duplicate.
        #[test]
        fn claims_agree_with_a_set_of_every_key_seen(
            batches in proptest::collection::vec(
                proptest::collection::vec(proptest::option::weighted(0.9, 0u32..40), 0..30),
                1..12,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut c = db(&dir.path().join("t.db"));
            let mut s = SeenIndex::default();
            let mut seen = std::collections::HashSet::new();
            for b in &batches {
                let keys: Vec<_> = b.iter().map(|k| k.and_then(key)).collect();
                let want: Vec<bool> = b.iter().map(|k| k.is_some_and(|k| !seen.insert(k))).collect();
                proptest::prop_assert_eq!(claim(&mut c, &mut s, &keys), want);
            }
        }
    }

    #[test]
    fn a_merge_writes_each_key_once_in_order_and_refuses_an_unsorted_run() {
        let bytes = |ks: &[u128]| ks.iter().flat_map(|k| k.to_be_bytes()).collect::<Vec<u8>>();
        let data = [
            bytes(&[1, 5, 9]),
            bytes(&[2, 5]),
            bytes(&[]),
            bytes(&[0, 10]),
        ]
        .concat();
        let spans = vec![0..48, 48..80, 80..80, 80..112];
        let mut out = Vec::new();
        assert_eq!(merge_runs(&data, spans, &mut out).unwrap(), 6);
        assert_eq!(out, bytes(&[0, 1, 2, 5, 9, 10]));
        let data = [bytes(&[1, 5]), bytes(&[7, 3])].concat();
        assert!(merge_runs(&data, vec![0..32, 32..64], &mut out).is_err());
    }

    #[test]
    fn pruning_forgets_old_runs_but_never_the_newest_and_memory_follows() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = db(&dir.path().join("p.db"));
        let mut s = SeenIndex::default();
        // Three large runs (never merged) of events at minutes 0, 100 and 200.
        for (run, minute) in [(0u32, 0i64), (1, 100), (2, 200)] {
            let keys: Vec<Option<([u8; 16], i64)>> = (0..SETTLED as u32)
                .map(|i| key(run * SETTLED as u32 + i).map(|(k, _)| (k, minute * 60)))
                .collect();
            claim(&mut c, &mut s, &keys);
        }
        assert_eq!(s.keys_in_memory(), 3 * SETTLED);
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        // Everything is older than minute 1000, yet the newest run stays.
        assert_eq!(s.prune(&tx, 1000).unwrap(), (2, 2 * SETTLED));
        tx.commit().unwrap();
        let tx = c.transaction().unwrap();
        s.pruned(&tx).unwrap();
        drop(tx);
        assert_eq!(s.keys_in_memory(), SETTLED);
        assert!(s.bloom.blocks.len() * 32 <= 4 * SETTLED.max(1 << 15));
        // The kept run's keys are still known; a pruned one is claimable again.
        let kept = key(2 * SETTLED as u32).map(|(k, _)| (k, 200 * 60));
        let gone = key(0).map(|(k, _)| (k, 0));
        assert_eq!(claim(&mut c, &mut s, &[kept, gone]), vec![true, false]);
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
    fn the_bloom_filter_never_misses_a_key_and_rarely_mistakes_one() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            // splitmix64: uniform keys, like the keyed digests the filter sees
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut key = || Key((u128::from(next()) << 64) | u128::from(next()));
        let held: Vec<Key> = (0..200_000).map(|_| key()).collect();
        let mut b = Bloom::default();
        // Grown in steps, as batches arrive: every rebuild must keep every key.
        for (i, chunk) in held.chunks(30_000).enumerate() {
            let before = &held[..i * 30_000];
            b.grow(before.len() + chunk.len(), &[(0, vec![before.to_vec()])]);
            chunk.iter().for_each(|k| b.insert(k));
        }
        assert!(held.iter().all(|k| b.may_hold(k)), "a held key was missed");
        let probes = 200_000;
        let wrong = (0..probes).filter(|_| b.may_hold(&key())).count();
        eprintln!("bloom: {wrong} of {probes} fresh keys looked known");
        assert!(
            wrong * 200 < probes,
            "{wrong} of {probes} fresh keys looked known (over 0.5%)"
        );
    }

    #[test]
    fn another_process_merging_runs_this_one_half_knows_loses_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (mut c1, mut c2) = (db(&path), db(&path));
        let (mut a, mut b) = (SeenIndex::default(), SeenIndex::default());
        let all: Vec<_> = (0..TIER as u32 * 100).map(key).collect();
        let mut chunks = all.chunks(100);
        for chunk in chunks.by_ref().take(3) {
            assert!(claim(&mut c1, &mut a, chunk).iter().all(|d| !d));
        }
        // The second process writes the rest, and its last batch merges all TIER runs,
        // three of which the first process holds in memory.
        for chunk in chunks {
            assert!(claim(&mut c2, &mut b, chunk).iter().all(|d| !d));
        }
        let runs: i64 = c1
            .query_row("SELECT COUNT(*) FROM staging_seen_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 1, "the runs were not merged");
        assert!(claim(&mut c1, &mut a, &all).iter().all(|d| *d));
        assert_eq!(a.runs.len(), 1, "runs merged away are still held");
        assert_eq!(a.len(), all.len());
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
            let (dup, claimed) = s.claim(&tx, batch.iter().copied(), 0).unwrap();
            assert!(dup.iter().all(|d| !d));
            drop(tx); // rolled back, as when a later insert of the batch fails
            drop(claimed);
        }
        assert!(claim(&mut c, &mut s, &batch).iter().all(|d| !d));
        assert!(claim(&mut c, &mut s, &batch).iter().all(|d| *d));
    }
}
