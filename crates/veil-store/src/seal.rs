//! Sealing: per-contributor state of a closed window becomes bounded group aggregates.
//!
//! Pure functions, shared by every backend. Contribution bounding happens here, once, so
//! a sealed aggregate already has the sensitivity the release layer assumes:
//! each contributor touches at most l0 groups (a uniformly random subset when more) and
//! adds at most l∞ rows to each.

use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use veil_pipeline::GROUP_SEP;

/// One row of per-contributor state for a (metric, window).
#[derive(Debug, Clone)]
pub struct ContribRow {
    pub group: String,
    pub contributor: [u8; 16],
    pub bin: i32,
    pub n: i64,
    pub total: i64,
}

/// One bounded group of one grouping of a sealed window.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedGroup {
    /// Group values joined by U+001F, in the grouping's dimension order.
    pub group: String,
    /// Exact number of distinct contributors (after bounding).
    pub contributors: i64,
    /// Bounded row count.
    pub count: i64,
    /// Bounded sum of the measure (scaled integer units).
    pub sum: i64,
    /// Bounded per-bin row counts (histograms), else empty.
    pub bins: Vec<i64>,
}

/// Bounds for one metric.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub l0: u32,
    pub linf: u32,
    /// Number of histogram bins (0 for other kinds).
    pub nbins: usize,
}

/// Projects `group` (all `by` dimensions) onto the dimension positions in `keep`.
pub fn project(group: &str, keep: &[usize]) -> String {
    let parts: Vec<&str> = group.split(GROUP_SEP).collect();
    let mut out = String::new();
    for (i, &k) in keep.iter().enumerate() {
        if i > 0 {
            out.push(GROUP_SEP);
        }
        out.push_str(parts.get(k).copied().unwrap_or(""));
    }
    out
}

/// Aggregates one window's rows for one grouping (a subset of the metric's `by`
/// positions), bounding each contributor's influence.
pub fn aggregate(
    rows: &[ContribRow],
    keep: &[usize],
    b: Bounds,
    rng: &mut impl Rng,
) -> Vec<SealedGroup> {
    // contributor -> group -> (n, total, bins)
    let mut per: HashMap<[u8; 16], BTreeMap<String, (i64, i64, Vec<i64>)>> = HashMap::new();
    for r in rows {
        let g = project(&r.group, keep);
        let e = per
            .entry(r.contributor)
            .or_default()
            .entry(g)
            .or_insert_with(|| (0, 0, vec![0; b.nbins]));
        e.0 += r.n;
        e.1 = e.1.saturating_add(r.total);
        if r.bin >= 0 && (r.bin as usize) < b.nbins {
            e.2[r.bin as usize] += r.n;
        }
    }
    let mut out: BTreeMap<String, SealedGroup> = BTreeMap::new();
    let mut contributors: Vec<_> = per.into_iter().collect();
    contributors.sort_by_key(|a| a.0); // deterministic order; randomness only from rng
    for (_, groups) in contributors {
        let mut groups: Vec<_> = groups.into_iter().collect();
        if groups.len() > b.l0 as usize {
            groups.shuffle(rng);
            groups.truncate(b.l0 as usize);
        }
        for (g, (n, total, bins)) in groups {
            let linf = b.linf as i64;
            let (bn, btotal) = if n > linf {
                // Keep l∞ rows' worth: the mean row value times l∞ (rounded toward zero).
                (linf, ((total as i128 * linf as i128) / n as i128) as i64)
            } else {
                (n, total)
            };
            let bbins = bound_bins(&bins, bn);
            let e = out.entry(g.clone()).or_insert_with(|| SealedGroup {
                group: g,
                contributors: 0,
                count: 0,
                sum: 0,
                bins: vec![0; b.nbins],
            });
            e.contributors += 1;
            e.count += bn;
            e.sum = e.sum.saturating_add(btotal);
            for (acc, x) in e.bins.iter_mut().zip(bbins) {
                *acc += x;
            }
        }
    }
    out.into_values().collect()
}

/// Scales a contributor's bin counts down to `cap` rows in total, proportionally
/// (largest remainders get the leftover), so no bin is favoured.
fn bound_bins(bins: &[i64], cap: i64) -> Vec<i64> {
    let total: i64 = bins.iter().sum();
    if total <= cap {
        return bins.to_vec();
    }
    let mut out: Vec<i64> = bins.iter().map(|&x| x * cap / total).collect();
    let mut rem: Vec<(i64, usize)> = bins
        .iter()
        .enumerate()
        .map(|(i, &x)| (x * cap % total, i))
        .collect();
    rem.sort_by(|a, b| b.cmp(a));
    let mut left = cap - out.iter().sum::<i64>();
    for (_, i) in rem {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// Every subset of `0..n` (as position lists in order): the groupings sealed per window,
/// so coarser reports count distinct contributors exactly instead of adding up groups.
pub fn groupings(n: usize) -> Vec<Vec<usize>> {
    (0..(1u32 << n))
        .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn row(g: &str, c: u8, n: i64, total: i64) -> ContribRow {
        ContribRow {
            group: g.into(),
            contributor: [c; 16],
            bin: -1,
            n,
            total,
        }
    }

    #[test]
    fn bounds_rows_and_groups_per_contributor() {
        let rows = vec![
            row("a", 1, 100, 1000),
            row("b", 1, 1, 5),
            row("c", 1, 1, 5),
            row("a", 2, 3, 30),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let out = aggregate(
            &rows,
            &[0],
            Bounds {
                l0: 2,
                linf: 10,
                nbins: 0,
            },
            &mut rng,
        );
        let total_contribs: i64 = out.iter().map(|g| g.contributors).sum();
        assert_eq!(
            total_contribs, 3,
            "contributor 1 keeps 2 of its 3 groups, contributor 2 one"
        );
        for g in &out {
            assert!(g.count <= 10 * g.contributors);
        }
    }

    #[test]
    fn coarser_grouping_counts_people_once() {
        let sep = GROUP_SEP;
        let rows = vec![
            row(&format!("web{sep}success"), 1, 2, 0),
            row(&format!("web{sep}failure"), 1, 1, 0),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let out = aggregate(
            &rows,
            &[0],
            Bounds {
                l0: 4,
                linf: 50,
                nbins: 0,
            },
            &mut rng,
        );
        assert_eq!(
            out,
            vec![SealedGroup {
                group: "web".into(),
                contributors: 1,
                count: 3,
                sum: 0,
                bins: vec![]
            }]
        );
        assert_eq!(groupings(2), vec![vec![], vec![0], vec![1], vec![0, 1]]);
    }

    #[test]
    fn bins_scale_proportionally() {
        assert_eq!(bound_bins(&[10, 10, 0], 4), vec![2, 2, 0]);
        assert_eq!(bound_bins(&[1, 2], 5), vec![1, 2]);
        assert_eq!(bound_bins(&[3, 1], 2).iter().sum::<i64>(), 2);
    }
}
