//! In-batch aggregation: a batch's contributions summed per cell (one contributor in one
//! group of one metric window and bin) before they are written as runs.
//!
//! A batch of 32k events carries 65–90k contributions into 20–45k cells. Summed in one
//! hash table, nearly every probe missed the cache (a table of 45k cells is larger than a
//! core's L2), at 120–470 ns per event. So contributions are first appended to one of
//! [`PARTS`] partitions by their contributor's first byte (a keyed digest, so uniform),
//! then each partition is summed in a small table that stays in cache: two sequential
//! passes instead of one random one.

use rustc_hash::FxHashMap;

/// Partitions; a partition of a 45k-cell batch holds ~700 cells (a 48 KiB table).
const PARTS: usize = 64;

/// One cell: indexes into what the batch interned ((metric, window) runs and groups),
/// the bin, and the contributor's pseudonym.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Cell {
    pub run: u32,
    pub bin: i32,
    pub group: u32,
    pub contributor: [u8; 16],
}

/// Contributions of one batch, partitioned; kept between batches so their memory is
/// reused rather than faulted in (and zeroed) for every commit.
#[derive(Default)]
pub(crate) struct Cells {
    parts: Vec<Vec<(Cell, i64)>>,
    table: FxHashMap<Cell, (u32, i64)>,
}

/// Partition memory kept between batches; beyond it, one unusual batch does not bloat
/// every later one.
const KEPT_BYTES: usize = 64 << 20;

impl Cells {
    /// Empties every partition, keeping (bounded) memory.
    pub(crate) fn clear(&mut self) {
        let held: usize = self.parts.iter().map(Vec::capacity).sum::<usize>()
            * std::mem::size_of::<(Cell, i64)>();
        if held > KEPT_BYTES || self.parts.len() != PARTS {
            self.parts = (0..PARTS).map(|_| Vec::new()).collect();
        }
        self.parts.iter_mut().for_each(Vec::clear);
    }

    /// Adds one contribution of `value` to `cell`.
    pub(crate) fn add(&mut self, cell: Cell, value: i64) {
        self.parts[usize::from(cell.contributor[0]) % PARTS].push((cell, value));
    }

    /// Sums each partition and hands every cell with its count of contributions and
    /// (saturating) total to `f`, then empties the partitions.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(&Cell, i64, i64)) {
        for part in &mut self.parts {
            self.table.clear();
            for &(cell, value) in part.iter() {
                let e = self.table.entry(cell).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.saturating_add(value);
            }
            for (cell, &(n, total)) in &self.table {
                f(cell, i64::from(n), total);
            }
            part.clear();
        }
        if self.table.capacity() > 1 << 16 {
            self.table = FxHashMap::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Partitioned sums equal plain per-cell sums, batch after batch with one `Cells`.
        #[test]
        fn partitioned_sums_equal_plain_sums(batches in proptest::collection::vec(
            proptest::collection::vec((0u32..3, -1i32..2, 0u32..3, 0u8..=255, 0u8..4, -5i64..1_000), 0..300),
            1..4,
        )) {
            let mut cells = Cells::default();
            for batch in batches {
                cells.clear();
                let mut want: BTreeMap<(u32, i32, u32, [u8; 16]), (i64, i64)> = BTreeMap::new();
                for &(run, bin, group, c0, c1, value) in &batch {
                    let mut contributor = [7u8; 16];
                    contributor[0] = c0;
                    contributor[15] = c1;
                    cells.add(Cell { run, bin, group, contributor }, value);
                    let e = want.entry((run, bin, group, contributor)).or_default();
                    e.0 += 1;
                    e.1 += value;
                }
                let mut got = BTreeMap::new();
                cells.drain(|c, n, total| {
                    let fresh = got.insert((c.run, c.bin, c.group, c.contributor), (n, total));
                    assert!(fresh.is_none(), "a cell handed out twice");
                });
                prop_assert_eq!(got, want);
            }
        }
    }
}
