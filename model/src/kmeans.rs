//! One-dimensional k-means, the start scikit-learn gives a Gaussian mixture
//! (`init_params="kmeans"`): greedy k-means++ seeding, then Lloyd iterations.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::lanes::{self, Kernel, LANES};
use rand_xoshiro::Xoshiro256PlusPlus;

const MAX_ITER: usize = 300;

/// Cluster labels in `0..k` for every value of `x`, numbered in the order the
/// k-means++ seeding picked the centres (the order the mixture's components take).
///
/// `x` must not be empty and `k` must be at least 1.
pub fn kmeans_labels(x: &[f64], k: usize, seed: u64) -> Vec<usize> {
    let mut sorted = x.to_vec();
    sorted.par_sort_unstable_by(f64::total_cmp);
    kmeans_labels_of_sorted(x, &sorted, k, seed)
}

/// [`kmeans_labels`] given `sorted`, the values of `x` in ascending `total_cmp` order.
pub(crate) fn kmeans_labels_of_sorted(x: &[f64], sorted: &[f64], k: usize, seed: u64) -> Vec<usize> {
    debug_assert!(!x.is_empty() && k >= 1 && sorted.len() == x.len());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut centres = plus_plus(x, k, &mut rng);
    // Lloyd iterations on the sorted values: in one dimension every cluster is a run of
    // the sorted values, so an iteration costs k binary searches and k range sums
    // (compensated prefix sums), not a pass over the data.
    let prefix = CompensatedPrefix::new(sorted);
    let mut previous = Vec::new();
    for _ in 0..MAX_ITER {
        let runs = runs(sorted, &centres);
        if runs == previous {
            break;
        }
        let mut start = 0;
        for &(end, label) in &runs {
            if end > start {
                centres[label] = prefix.sum(start, end) / (end - start) as f64;
            }
            start = end;
        }
        previous = runs;
    }
    let mut labels = vec![usize::MAX; x.len()];
    assign(x, &centres, &mut labels);
    labels
}

/// [`kmeans_labels`] for weighted points (`weight[i]` rows at `sorted[i]`, ascending):
/// the same k-means++ seeding and Lloyd steps, every sum and draw weighted, so a point of
/// weight w counts as w rows at its value. One label per point.
pub(crate) fn weighted_kmeans_labels(sorted: &[f64], weight: &[f64], k: usize, seed: u64) -> Vec<usize> {
    debug_assert!(!sorted.is_empty() && k >= 1 && sorted.len() == weight.len());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut centres = weighted_plus_plus(sorted, weight, k, &mut rng);
    let weighted: Vec<f64> = sorted.iter().zip(weight).map(|(x, w)| x * w).collect();
    let (sums, counts) = (CompensatedPrefix::new(&weighted), CompensatedPrefix::new(weight));
    let mut previous = Vec::new();
    for _ in 0..MAX_ITER {
        let runs = runs(sorted, &centres);
        if runs == previous {
            break;
        }
        let mut start = 0;
        for &(end, label) in &runs {
            let n = counts.sum(start, end);
            if end > start && n > 0.0 {
                centres[label] = sums.sum(start, end) / n;
            }
            start = end;
        }
        previous = runs;
    }
    let mut labels = vec![usize::MAX; sorted.len()];
    assign(sorted, &centres, &mut labels);
    labels
}

/// [`plus_plus`] with weights: draws in proportion to weight x squared distance.
fn weighted_plus_plus(x: &[f64], w: &[f64], k: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f64> {
    let trials = 2 + (k as f64).ln() as usize;
    let draw = |cumulative: &[f64], rng: &mut Xoshiro256PlusPlus| {
        let target = rng.random::<f64>() * cumulative.last().copied().unwrap_or(0.0);
        cumulative.partition_point(|c| *c < target).min(x.len() - 1)
    };
    let prefix = |terms: &mut dyn Iterator<Item = f64>| {
        let mut acc = 0.0;
        terms
            .map(|t| {
                acc += t;
                acc
            })
            .collect::<Vec<f64>>()
    };
    let first = x[draw(&prefix(&mut w.iter().copied()), rng)];
    let mut centres = vec![first];
    let mut closest: Vec<f64> = x.iter().map(|v| (v - first).powi(2)).collect();
    let potential_with = |closest: &[f64], c: f64| -> f64 {
        x.iter().zip(closest).zip(w).map(|((v, d), w)| w * d.min((v - c).powi(2))).sum()
    };
    let mut potential = potential_with(&closest, first);
    while centres.len() < k {
        let cumulative = prefix(&mut closest.iter().zip(w).map(|(d, w)| d * w));
        let mut best: Option<(f64, f64)> = None; // (potential, centre)
        for _ in 0..trials {
            let candidate = x[draw(&cumulative, rng)];
            let pot = potential_with(&closest, candidate);
            if best.is_none_or(|(p, _)| pot < p) {
                best = Some((pot, candidate));
            }
        }
        let (pot, centre) = best.unwrap_or((potential, first));
        for (d, v) in closest.iter_mut().zip(x) {
            *d = d.min((v - centre).powi(2));
        }
        potential = pot;
        centres.push(centre);
    }
    centres
}

/// Prefix sums carried as (high, low) pairs, so a range sum keeps full precision even
/// far into a long, heavy-tailed array.
struct CompensatedPrefix {
    high: Vec<f64>,
    low: Vec<f64>,
}

impl CompensatedPrefix {
    fn new(x: &[f64]) -> Self {
        let mut high = Vec::with_capacity(x.len() + 1);
        let mut low = Vec::with_capacity(x.len() + 1);
        let (mut h, mut l) = (0.0_f64, 0.0_f64);
        high.push(h);
        low.push(l);
        for &v in x {
            // Knuth's two-sum: h + v = s + err exactly.
            let s = h + v;
            let b = s - h;
            l += (h - (s - b)) + (v - b);
            h = s;
            high.push(h);
            low.push(l);
        }
        Self { high, low }
    }

    /// Sum of `x[start..end]`.
    fn sum(&self, start: usize, end: usize) -> f64 {
        (self.high[end] - self.high[start]) + (self.low[end] - self.low[start])
    }
}

/// The clusters of sorted values under `centres` as runs: `(end, label)` per run, in
/// value order; each value goes to its nearest centre, ties to the lower centre index
/// (as [`assign`] decides).
fn runs(sorted: &[f64], centres: &[f64]) -> Vec<(usize, usize)> {
    let (order, mids) = layout(centres);
    let mut runs = Vec::with_capacity(order.len());
    for (s, mid) in mids.iter().enumerate() {
        // Values equal to the midpoint go to the side with the lower centre index.
        let end = if order[s + 1].1 < order[s].1 {
            sorted.partition_point(|v| v < mid)
        } else {
            sorted.partition_point(|v| v <= mid)
        };
        runs.push((end, order[s].1));
    }
    runs.push((sorted.len(), order[order.len() - 1].1));
    runs
}

/// Sorted distinct centres, each carrying the lowest index that holds it, and the
/// midpoints between neighbours.
fn layout(centres: &[f64]) -> (Vec<(f64, usize)>, Vec<f64>) {
    let mut order: Vec<(f64, usize)> = centres.iter().copied().zip(0..).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order.dedup_by(|later, earlier| later.0 == earlier.0);
    let mids: Vec<f64> = order.windows(2).map(|w| (w[0].0 + w[1].0) / 2.0).collect();
    (order, mids)
}

/// Greedy k-means++ (as scikit-learn's `_kmeans_plusplus`): each new centre is the
/// best of `2 + ln k` candidates drawn in proportion to the squared distance.
fn plus_plus(x: &[f64], k: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f64> {
    let trials = 2 + (k as f64).ln() as usize;
    let first = x[rng.random_range(0..x.len())];
    let mut centres = vec![first];
    let mut closest: Vec<f64> = x.iter().map(|v| (v - first).powi(2)).collect();
    let mut potential: f64 = closest.iter().sum();
    let mut cumulative = vec![0.0; x.len()];
    while centres.len() < k {
        let mut acc = 0.0;
        for (c, d) in cumulative.iter_mut().zip(&closest) {
            acc += d;
            *c = acc;
        }
        let mut best: Option<(f64, f64)> = None; // (potential, centre)
        for _ in 0..trials {
            let target = rng.random::<f64>() * potential;
            let idx = cumulative.partition_point(|c| *c < target).min(x.len() - 1);
            let candidate = x[idx];
            let pot = potential_with(x, &closest, candidate);
            if best.is_none_or(|(p, _)| pot < p) {
                best = Some((pot, candidate));
            }
        }
        let (pot, centre) = best.unwrap_or((potential, first));
        closest.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(closest, x)| {
            for (d, v) in closest.iter_mut().zip(x) {
                *d = d.min((v - centre).powi(2));
            }
        });
        potential = pot;
        centres.push(centre);
    }
    centres
}

/// `sum_i min(closest_i, (x_i - centre)^2)`: the potential if `centre` were added.
/// Parallel over fixed chunks summed in order, so the thread count changes nothing.
fn potential_with(x: &[f64], closest: &[f64], centre: f64) -> f64 {
    let parts: Vec<f64> = x
        .par_chunks(CHUNK)
        .zip(closest.par_chunks(CHUNK))
        .map(|(x, closest)| lanes::dispatch(Potential { x, closest, centre }))
        .collect();
    parts.iter().sum()
}

/// Rows per parallel chunk of the k-means++ passes.
const CHUNK: usize = 65_536;

struct Potential<'a> {
    x: &'a [f64],
    closest: &'a [f64],
    centre: f64,
}

impl Kernel for Potential<'_> {
    type Output = f64;

    #[inline(always)]
    fn run<S: pulp::Simd>(self, _simd: S) -> f64 {
        let Self { x, closest, centre } = self;
        let mut acc = [0.0; LANES];
        let (xs, ds) = (x.chunks_exact(LANES), closest.chunks_exact(LANES));
        let tail: f64 = xs.remainder().iter().zip(ds.remainder()).map(|(v, d)| d.min((v - centre).powi(2))).sum();
        for (xv, dv) in xs.zip(ds) {
            for t in 0..LANES {
                let e = xv[t] - centre;
                acc[t] += lanes::min(dv[t], e * e);
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

/// Nearest centre for every value (ties go to the lower centre index, as argmin does).
fn assign(x: &[f64], centres: &[f64], labels: &mut [usize]) {
    // In one dimension the nearest centre is found by a binary search over the midpoints.
    let (order, mids) = layout(centres);
    for (label, v) in labels.iter_mut().zip(x) {
        let mut slot = mids.partition_point(|m| m < v);
        // A value exactly on a midpoint is equally far from both: take the lower index.
        if slot < mids.len() && mids[slot] == *v && order[slot + 1].1 < order[slot].1 {
            slot += 1;
        }
        *label = order[slot].1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_well_apart_groups() {
        let x: Vec<f64> = (0..300).map(|i| (i % 3) as f64 * 100.0 + (i as f64 * 0.01)).collect();
        let labels = kmeans_labels(&x, 3, 7);
        for group in 0..3 {
            let first = labels[group];
            assert!((0..300).filter(|i| i % 3 == group).all(|i| labels[i] == first));
        }
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn constant_input_gets_one_label() {
        let labels = kmeans_labels(&[5.0; 50], 10, 1);
        assert!(labels.iter().all(|&l| l == labels[0]));
    }
}
