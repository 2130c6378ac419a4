//! The binary run of per-contributor state that one ingest batch appends for one
//! (metric, window). Sealing sums the runs of a window.
//!
//! Layout, all integers LEB128 varints (signed ones zigzag-encoded): a format byte, the
//! number of records, the number of distinct groups and each group's length and UTF-8 bytes, then one record
//! per (group, contributor, bin): group index, the 16-byte contributor, bin + 1, n, total.
//! Group strings are written once per run, not once per record: the runs are most of
//! what an ingest commit writes, so their size is its cost.

use crate::{crypto, Result, StoreError};
use rustc_hash::FxHashMap;
use veil_pipeline::varint::{put, unzigzag, zigzag, Reader};
use veil_pipeline::Secret;

const FORMAT: u8 = 1;

/// First byte of a stored run encrypted at rest: then the epoch (u32 LE) whose data key
/// sealed it, the 12-byte nonce, and the AES-256-GCM ciphertext ‖ tag of a plain run.
/// Runs written before encryption start with [`FORMAT`] and are still read.
const SEALED: u8 = 2;

fn aad(metric: &str, window_start: i64, epoch: u32) -> Vec<u8> {
    format!("veil-contrib\0{metric}\0{window_start}\0{epoch}").into_bytes()
}

/// Encrypts a finished run under the data key of the epoch in which its window starts,
/// bound to its metric and window: per-contributor state is never at rest in clear, and
/// shredding that epoch shreds it.
pub(crate) fn seal_run(
    key: &Secret,
    epoch: u32,
    metric: &str,
    window_start: i64,
    plain: &[u8],
) -> Vec<u8> {
    let (nonce, ct) = crypto::seal(key, &aad(metric, window_start, epoch), plain);
    let mut out = Vec::with_capacity(1 + 4 + nonce.len() + ct.len());
    out.push(SEALED);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// The plain run of a stored blob, and whether it is a legacy run written before
/// encryption (whose contributor fields are window pseudonyms, not contributor ids);
/// `Ok(None)` when its epoch's data key is gone (shredded: unreadable by design).
pub(crate) fn open_run(
    key_of: &dyn Fn(u32) -> Option<Secret>,
    metric: &str,
    window_start: i64,
    stored: &[u8],
) -> Result<Option<(Vec<u8>, bool)>> {
    let bad = || StoreError::Corrupt("a contribution run failed authentication".into());
    match stored.first() {
        Some(&FORMAT) => Ok(Some((stored.to_vec(), true))),
        Some(&SEALED) if stored.len() >= 1 + 4 + 12 + 16 => {
            let epoch = u32::from_le_bytes(stored[1..5].try_into().map_err(|_| bad())?);
            let Some(key) = key_of(epoch) else {
                return Ok(None);
            };
            crypto::open(
                &key,
                &aad(metric, window_start, epoch),
                &stored[5..17],
                &stored[17..],
            )
            .map(|p| Some((p, false)))
            .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Builds one run.
#[derive(Default)]
pub(crate) struct RunWriter {
    /// The batch's group id → this run's group index.
    groups: FxHashMap<u32, u64>,
    names: Vec<u8>,
    body: Vec<u8>,
    /// Records written.
    pub rows: i64,
}

impl RunWriter {
    /// Adds one record; `group_id` identifies `group` within the batch.
    pub(crate) fn push(
        &mut self,
        group_id: u32,
        group: &str,
        contributor: &[u8; 16],
        bin: i32,
        n: i64,
        total: i64,
    ) {
        let next = self.groups.len() as u64;
        let gi = *self.groups.entry(group_id).or_insert_with(|| {
            put(&mut self.names, group.len() as u64);
            self.names.extend_from_slice(group.as_bytes());
            next
        });
        put(&mut self.body, gi);
        self.body.extend_from_slice(contributor);
        put(&mut self.body, zigzag(i64::from(bin) + 1));
        put(&mut self.body, zigzag(n));
        put(&mut self.body, zigzag(total));
        self.rows += 1;
    }

    /// The encoded run.
    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.names.len() + self.body.len());
        out.push(FORMAT);
        put(&mut out, self.rows as u64);
        put(&mut out, self.groups.len() as u64);
        out.extend_from_slice(&self.names);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Calls `f(group, contributor, bin, n, total)` for every record of a run.
pub(crate) fn decode(data: &[u8], f: &mut dyn FnMut(&str, [u8; 16], i32, i64, i64)) -> Result<()> {
    let bad = || StoreError::Corrupt("a contribution run is malformed".into());
    let mut r = Reader(data);
    if r.bytes(1).ok_or_else(bad)? != [FORMAT] {
        return Err(bad());
    }
    let rows = r.var().ok_or_else(bad)?;
    let ngroups = r.var().ok_or_else(bad)?;
    let mut groups = Vec::with_capacity((ngroups as usize).min(data.len()));
    for _ in 0..ngroups {
        let len = r.var().ok_or_else(bad)? as usize;
        let g = std::str::from_utf8(r.bytes(len).ok_or_else(bad)?).map_err(|_| bad())?;
        groups.push(g);
    }
    let mut seen = 0u64;
    while !r.is_empty() {
        let gi = r.var().ok_or_else(bad)? as usize;
        let g = groups.get(gi).ok_or_else(bad)?;
        let c: [u8; 16] = r.bytes(16).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let bin = unzigzag(r.var().ok_or_else(bad)?) - 1;
        let bin = i32::try_from(bin).map_err(|_| bad())?;
        let n = unzigzag(r.var().ok_or_else(bad)?);
        let total = unzigzag(r.var().ok_or_else(bad)?);
        f(g, c, bin, n, total);
        seen += 1;
    }
    if seen != rows {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn runs_round_trip(recs in proptest::collection::vec(
            ("[a-z\u{1f}é]{0,12}", any::<[u8; 16]>(), -1i32..1000, any::<i64>(), any::<i64>()), 0..40)) {
            let mut w = RunWriter::default();
            let mut ids: Vec<&str> = Vec::new();
            for (g, c, bin, n, t) in &recs {
                let id = ids.iter().position(|x| x == g).unwrap_or_else(|| {
                    ids.push(g);
                    ids.len() - 1
                });
                w.push(id as u32, g, c, *bin, *n, *t);
            }
            prop_assert_eq!(w.rows, recs.len() as i64);
            let data = w.finish();
            let mut back = Vec::new();
            decode(&data, &mut |g, c, bin, n, t| back.push((g.to_owned(), c, bin, n, t))).unwrap();
            prop_assert_eq!(back, recs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data, &mut |_, _, _, _, _| {});
        }
    }

    #[test]
    fn sealed_runs_open_only_under_their_key_metric_and_window() {
        let mut w = RunWriter::default();
        w.push(0, "payments", &[7; 16], -1, 3, 42);
        let plain = w.finish();
        let key = Secret::from_bytes([9; 32]);
        let stored = seal_run(&key, 3, "builds", 1000, &plain);
        assert!(
            !stored.windows(8).any(|x| x == b"payments"),
            "no group in clear"
        );
        let keys = |e: u32| (e == 3).then(|| key.clone());
        assert_eq!(
            open_run(&keys, "builds", 1000, &stored).unwrap(),
            Some((plain.clone(), false))
        );
        assert!(open_run(&keys, "other", 1000, &stored).is_err());
        assert!(open_run(&keys, "builds", 1001, &stored).is_err());
        assert_eq!(open_run(&|_| None, "builds", 1000, &stored).unwrap(), None);
        // A legacy plain run still reads.
        assert_eq!(
            open_run(&keys, "builds", 1000, &plain).unwrap(),
            Some((plain, true))
        );
    }

    #[test]
    fn truncated_runs_are_corrupt_not_short() {
        let mut w = RunWriter::default();
        w.push(0, "payments", &[7; 16], -1, 3, 42);
        let data = w.finish();
        for cut in 1..data.len() {
            assert!(
                decode(&data[..cut], &mut |_, _, _, _, _| {}).is_err(),
                "cut at {cut}"
            );
        }
    }
}
