//! The E-step fused with the M-step's sums. Rows are cut into fixed tasks of
//! [`TASK_ROWS`] (run in parallel) and each task into sub-blocks of [`SUB_ROWS`]: a
//! sub-block's responsibilities live only long enough to be reduced to per-component
//! moments, so memory is proportional to a sub-block, never to the sample.
//!
//! Every sum has a fixed order that depends on the data alone: lanes within a group,
//! groups within a sub-block, sub-blocks within a task, then tasks in order. The same
//! data therefore give the same bits on 1, 2 or 64 threads, and on any SIMD width.

use rayon::prelude::*;

use crate::gmm::LogRho;
use crate::lanes::{self, Kernel, LANES, Lanes, LnProduct, exp, max};

/// Rows per parallel task.
pub(crate) const TASK_ROWS: usize = 16_384;
/// Rows whose responsibilities are held at once (2 x `SUB_ROWS` x components x 8 bytes).
const SUB_ROWS: usize = 256;

/// A component's share of some rows: weighted count, weighted mean, and weighted sum of
/// squared deviations from that mean (centred, so no `E[x^2] - mean^2` cancellation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Moments {
    /// Sum of responsibilities.
    pub n: f64,
    /// Responsibility-weighted mean (0 when `n` is 0).
    pub mean: f64,
    /// Sum of `r (x - mean)^2`.
    pub m2: f64,
}

impl Moments {
    /// The moments of both parts together (Chan, Golub and LeVeque's pairwise update).
    pub(crate) fn merge(self, other: Self) -> Self {
        if other.n == 0.0 {
            return self;
        }
        if self.n == 0.0 {
            return other;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        Self {
            n,
            mean: self.mean + delta * (other.n / n),
            m2: self.m2 + other.m2 + delta * delta * (self.n * other.n / n),
        }
    }
}

/// What one pass over the data gives the M-step and the lower bound.
pub(crate) struct Stats {
    /// Per component.
    pub moments: Vec<Moments>,
    /// `sum_i sum_k r_ik ln r_ik`.
    pub sum_r_ln_r: f64,
}

impl Stats {
    fn zero(k: usize) -> Self {
        Self { moments: vec![Moments::default(); k], sum_r_ln_r: 0.0 }
    }

    fn merge(mut self, other: &Self) -> Self {
        for (a, b) in self.moments.iter_mut().zip(&other.moments) {
            *a = a.merge(*b);
        }
        self.sum_r_ln_r += other.sum_r_ln_r;
        self
    }
}

/// Moments of one-hot responsibilities (`labels[i]` owns row `i`): the start scikit-learn
/// gives the variational iterations. Labels must be `< k`.
pub(crate) fn label_moments(x: &[f64], labels: &[usize], k: usize) -> Vec<Moments> {
    let mut sums = vec![(0.0, 0.0); k];
    for (&v, &l) in x.iter().zip(labels) {
        sums[l].0 += 1.0;
        sums[l].1 += v;
    }
    let mut moments: Vec<Moments> =
        sums.iter().map(|&(n, s)| Moments { n, mean: if n > 0.0 { s / n } else { 0.0 }, m2: 0.0 }).collect();
    for (&v, &l) in x.iter().zip(labels) {
        let d = v - moments[l].mean;
        moments[l].m2 += d * d;
    }
    moments
}

/// Responsibilities of every row under `lr`, reduced to [`Stats`]; parallel over
/// [`TASK_ROWS`]-row tasks on the current rayon pool.
pub(crate) fn e_step(x: &[f64], lr: &LogRho) -> Stats {
    let k = lr.mean.len();
    let parts: Vec<Stats> = x.par_chunks(TASK_ROWS).map(|x| lanes::dispatch(TaskStats { x, lr })).collect();
    parts.iter().fold(Stats::zero(k), Stats::merge)
}

/// Sum of the lanes in a fixed order.
#[inline(always)]
fn lane_sum(a: &Lanes) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// One task's rows reduced to [`Stats`].
struct TaskStats<'a> {
    x: &'a [f64],
    lr: &'a LogRho,
}

impl Kernel for TaskStats<'_> {
    type Output = Stats;

    #[inline(always)]
    fn run(self) -> Stats {
        let (x, lr) = (self.x, self.lr);
        let k = lr.mean.len();
        let mut total = Stats::zero(k);
        let mut scratch = Scratch::new(k);
        for sub in x.chunks(SUB_ROWS) {
            let (moments, sum_r_ln_r) = scratch.sub_block(sub, lr);
            for (t, m) in total.moments.iter_mut().zip(moments) {
                *t = t.merge(*m);
            }
            total.sum_r_ln_r += sum_r_ln_r;
        }
        total
    }
}

/// Buffers for one sub-block, component-major (`[j * SUB_ROWS + row]`), so that every
/// step is a plain loop over rows that LLVM turns into vector instructions.
struct Scratch {
    /// `ln rho - max_k ln rho` per component and row.
    z: Vec<f64>,
    /// `exp(z)`, then the responsibilities.
    r: Vec<f64>,
    moments: Vec<Moments>,
}

impl Scratch {
    fn new(k: usize) -> Self {
        Self { z: vec![0.0; k * SUB_ROWS], r: vec![0.0; k * SUB_ROWS], moments: vec![Moments::default(); k] }
    }

    /// Per-component moments and `sum r ln r` of up to [`SUB_ROWS`] rows.
    #[inline(always)]
    fn sub_block(&mut self, sub: &[f64], lr: &LogRho) -> (&[Moments], f64) {
        // Pad a short block with its last value at weight 0.
        let last = sub.last().copied().unwrap_or(0.0);
        let mut x = [last; SUB_ROWS];
        x[..sub.len()].copy_from_slice(sub);
        let mut w = [0.0; SUB_ROWS];
        w[..sub.len()].iter_mut().for_each(|w| *w = 1.0);

        let mut top = [f64::NEG_INFINITY; SUB_ROWS];
        for (j, z) in self.z.chunks_exact_mut(SUB_ROWS).enumerate() {
            let (c, mu, hp) = (lr.constant[j], lr.mean[j], lr.half_precision[j]);
            for ((z, x), top) in z.iter_mut().zip(&x).zip(&mut top) {
                let d = x - mu;
                *z = c - d * d * hp;
                *top = max(*top, *z);
            }
        }
        let mut s = [0.0; SUB_ROWS];
        for (z, e) in self.z.chunks_exact_mut(SUB_ROWS).zip(self.r.chunks_exact_mut(SUB_ROWS)) {
            for (((z, e), top), s) in z.iter_mut().zip(e.iter_mut()).zip(&top).zip(&mut s) {
                *z -= top;
                *e = exp(*z);
                *s += *e;
            }
        }
        // r = e w / s; sum r ln r = sum r z - sum ln s (one ln per lane via LnProduct).
        let mut inv = [0.0; SUB_ROWS];
        let mut norm = LnProduct::new();
        for ((inv, s), w) in inv.chunks_exact_mut(LANES).zip(s.chunks_exact(LANES)).zip(w.chunks_exact(LANES)) {
            let factor: Lanes = std::array::from_fn(|t| if w[t] > 0.0 { s[t] } else { 1.0 });
            norm.mul(&factor);
            for t in 0..LANES {
                inv[t] = w[t] / s[t];
            }
        }
        let mut entropy = [0.0; LANES];
        for ((z, r), m) in self.z.chunks_exact(SUB_ROWS).zip(self.r.chunks_exact_mut(SUB_ROWS)).zip(&mut self.moments) {
            let mut n = [0.0; LANES];
            let mut sx = [0.0; LANES];
            let (z, r) = (z.as_chunks::<LANES>().0, r.as_chunks_mut::<LANES>().0);
            let (inv, xs) = (inv.as_chunks::<LANES>().0, x.as_chunks::<LANES>().0);
            for g in 0..SUB_ROWS / LANES {
                let (z, r, inv, x) = (&z[g], &mut r[g], &inv[g], &xs[g]);
                for t in 0..LANES {
                    r[t] *= inv[t];
                    n[t] += r[t];
                    sx[t] = r[t].mul_add(x[t], sx[t]);
                    entropy[t] = r[t].mul_add(z[t], entropy[t]);
                }
            }
            let count = lane_sum(&n);
            let mean = if count > 0.0 { lane_sum(&sx) / count } else { 0.0 };
            let mut m2 = [0.0; LANES];
            for (r, x) in r.iter().zip(xs) {
                for t in 0..LANES {
                    let d = x[t] - mean;
                    m2[t] = (r[t] * d).mul_add(d, m2[t]);
                }
            }
            *m = Moments { n: count, mean, m2: lane_sum(&m2) };
        }
        (&self.moments, lane_sum(&entropy) - norm.ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_moments_equal_the_direct_ones() {
        let x: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 * 0.5 + 3.0).collect();
        let w: Vec<f64> = (0..1000).map(|i| ((i * 13) % 7) as f64 / 7.0).collect();
        let direct = {
            let n: f64 = w.iter().sum();
            let mean = x.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / n;
            let m2 = x.iter().zip(&w).map(|(x, w)| w * (x - mean).powi(2)).sum::<f64>();
            Moments { n, mean, m2 }
        };
        let merged = x.chunks(77).zip(w.chunks(77)).fold(Moments::default(), |acc, (x, w)| {
            let n: f64 = w.iter().sum();
            let mean = if n > 0.0 { x.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() / n } else { 0.0 };
            let m2 = x.iter().zip(w).map(|(x, w)| w * (x - mean).powi(2)).sum::<f64>();
            acc.merge(Moments { n, mean, m2 })
        });
        assert!((merged.n - direct.n).abs() <= 1e-12 * direct.n);
        assert!((merged.mean - direct.mean).abs() <= 1e-12 * direct.mean.abs());
        assert!((merged.m2 - direct.m2).abs() <= 1e-12 * direct.m2);
    }
}
