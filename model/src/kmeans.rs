//! One-dimensional k-means, the start scikit-learn gives a Gaussian mixture
//! (`init_params="kmeans"`): greedy k-means++ seeding, then Lloyd iterations.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const MAX_ITER: usize = 300;

/// Cluster labels in `0..k` for every value of `x`, numbered in the order the
/// k-means++ seeding picked the centres (the order the mixture's components take).
///
/// `x` must not be empty and `k` must be at least 1.
pub fn kmeans_labels(x: &[f64], k: usize, seed: u64) -> Vec<usize> {
    debug_assert!(!x.is_empty() && k >= 1);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut centres = plus_plus(x, k, &mut rng);
    let mut labels = vec![usize::MAX; x.len()];
    for _ in 0..MAX_ITER {
        let changed = assign(x, &centres, &mut labels);
        if !changed {
            break;
        }
        update_centres(x, &labels, &mut centres);
    }
    labels
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
            let pot: f64 = x.iter().zip(&closest).map(|(v, d)| d.min((v - candidate).powi(2))).sum();
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

/// Nearest centre for every value (ties go to the lower centre index, as argmin does);
/// returns whether any label changed.
fn assign(x: &[f64], centres: &[f64], labels: &mut [usize]) -> bool {
    // Sorted distinct centres, each carrying the lowest index that holds it; in one
    // dimension the nearest centre is found by a binary search over the midpoints.
    let mut order: Vec<(f64, usize)> = centres.iter().copied().zip(0..).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order.dedup_by(|later, earlier| later.0 == earlier.0);
    let mids: Vec<f64> = order.windows(2).map(|w| (w[0].0 + w[1].0) / 2.0).collect();
    let mut changed = false;
    for (label, v) in labels.iter_mut().zip(x) {
        let mut slot = mids.partition_point(|m| m < v);
        // A value exactly on a midpoint is equally far from both: take the lower index.
        if slot < mids.len() && mids[slot] == *v && order[slot + 1].1 < order[slot].1 {
            slot += 1;
        }
        let new = order[slot].1;
        changed |= *label != new;
        *label = new;
    }
    changed
}

fn update_centres(x: &[f64], labels: &[usize], centres: &mut [f64]) {
    let mut sums = vec![0.0; centres.len()];
    let mut counts = vec![0usize; centres.len()];
    for (v, &l) in x.iter().zip(labels) {
        sums[l] += v;
        counts[l] += 1;
    }
    for ((c, s), n) in centres.iter_mut().zip(sums).zip(counts) {
        if n > 0 {
            *c = s / n as f64;
        }
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
