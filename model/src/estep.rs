//! The E-step fused with the M-step's sums, over the sample sorted once per fit. Rows are
//! cut into fixed tasks of [`TASK_ROWS`] (run in parallel) and each task into sub-blocks
//! of [`SUB_ROWS`]: a sub-block's responsibilities live only long enough to be reduced to
//! per-component moments, so memory is proportional to a sub-block, never to the sample.
//!
//! Sorted, a sub-block covers a narrow range of values. Components so far from all of it
//! that their responsibilities there are below e^[`SKIP`] of the best component's (far
//! under a rounding error of the row's total) are skipped (12% of the pairs on the bench
//! data, whose wide components overlap everywhere). The others' `e^ln rho` varies little
//! over the block: it is taken as its value at one point of the block times a short
//! series ([`exp_local`]), not a full `exp` per row.
//!
//! Every sum has a fixed order that depends on the data alone: lanes within a group,
//! groups within a sub-block, sub-blocks within a task, then tasks in order. The same
//! data therefore give the same bits on 1, 2 or 64 threads, and on any SIMD width.

use rayon::prelude::*;

use crate::binned::Point;
use crate::lanes::{self, Acc, Kernel, Lanes, exp, lane_sum, max};

/// Rows per parallel task.
pub(crate) const TASK_ROWS: usize = 16_384;
/// Rows whose responsibilities are held at once (`SUB_ROWS` x components x 8 bytes).
const SUB_ROWS: usize = 256;
/// A component whose `ln rho` is below the row's best by more than this everywhere in a
/// sub-block is skipped there: its responsibility is under e^-40 ≈ 4e-18, which changes
/// neither the row's total (relative 4e-18 per component, under half an ulp) nor any
/// count by more than `rows x 4e-18`, far inside the 1e-9 parity.
const SKIP: f64 = -40.0;
/// How far below a sub-block's ceiling of `ln rho` every row's maximum may lie for the
/// ceiling to serve as the shift of all its rows.
const ONE_TOP: f64 = 600.0;
/// Largest |u| for [`exp_local`].
const LOCAL: f64 = 1.0 / 16.0;
/// Largest |u| for [`exp_near`] (83% of the pairs on the bench data).
const NEAR: f64 = 1.0 / 256.0;

/// e^u for |u| ≤ [`NEAR`]: the degree-5 Taylor polynomial (remainder below 1e-17
/// relative).
#[inline(always)]
fn exp_near(u: f64) -> f64 {
    const C: [f64; 6] = [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0];
    let u2 = u * u;
    let pair = |i: usize| C[i + 1].mul_add(u, C[i]);
    pair(4).mul_add(u2, pair(2)).mul_add(u2, pair(0))
}

/// e^u for |u| ≤ [`LOCAL`]: the degree-8 Taylor polynomial (remainder below 5e-17
/// relative), by Estrin's scheme.
#[inline(always)]
fn exp_local(u: f64) -> f64 {
    const C: [f64; 9] =
        [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0];
    let u2 = u * u;
    let u4 = u2 * u2;
    let pair = |i: usize| C[i + 1].mul_add(u, C[i]);
    let low = pair(2).mul_add(u2, pair(0));
    let high = C[8].mul_add(u4, pair(6).mul_add(u2, pair(4)));
    high.mul_add(u4, low)
}

/// The sample sorted in ascending order (by `total_cmp`), as [`e_step`] needs it.
pub(crate) struct Sorted(Vec<f64>);

impl Sorted {
    /// A sorted copy of `x` (finite values).
    pub(crate) fn new(x: &[f64]) -> Self {
        let mut sorted = x.to_vec();
        sorted.par_sort_unstable_by(f64::total_cmp);
        Self(sorted)
    }

    /// The values, ascending.
    pub(crate) fn values(&self) -> &[f64] {
        &self.0
    }
}

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

/// Per component, the terms of ln rho(x) = constant - half_precision (x - mean)^2: what
/// the E-step needs of the posterior (computed from it in `gmm`, which calls this module;
/// this module never calls back).
pub(crate) struct LogRho {
    pub constant: Vec<f64>,
    pub mean: Vec<f64>,
    pub half_precision: Vec<f64>,
}

/// Responsibilities of every row under `lr`, reduced to [`Stats`]; parallel over
/// [`TASK_ROWS`]-row tasks on the current rayon pool.
pub(crate) fn e_step(x: &Sorted, lr: &LogRho) -> Stats {
    let k = lr.mean.len();
    let parts: Vec<Stats> = x.0.par_chunks(TASK_ROWS).map(|x| lanes::dispatch(TaskStats { x, lr })).collect();
    parts.iter().fold(Stats::zero(k), Stats::merge)
}

/// Points per parallel task of [`e_step_weighted`].
const POINT_TASK: usize = 4096;

/// [`e_step`] over weighted points (a histogram's bins): every row of a bin shares one
/// responsibility vector, the one that maximizes the bound given the bin's exact mean and
/// variance, `r ∝ exp(c - hp ((mean - mu)^2 + variance))`. Moments carry the bins'
/// variances, so they are the rows' exact moments under those responsibilities. Parallel
/// over fixed tasks merged in order: the same points give the same bits on any thread count.
pub(crate) fn e_step_weighted(points: &[Point], lr: &LogRho) -> Stats {
    let k = lr.mean.len();
    let parts: Vec<Stats> =
        points.par_chunks(POINT_TASK).map(|points| lanes::dispatch(WeightedTask { points, lr })).collect();
    parts.iter().fold(Stats::zero(k), Stats::merge)
}

/// One task of [`e_step_weighted`], compiled for the CPU's widest SIMD (its `mul_add`s
/// are then single instructions).
struct WeightedTask<'a> {
    points: &'a [Point],
    lr: &'a LogRho,
}

impl Kernel for WeightedTask<'_> {
    type Output = Stats;

    #[inline(always)]
    fn run<S: pulp::Simd>(self, _simd: S) -> Stats {
        let (points, lr) = (self.points, self.lr);
        let k = lr.mean.len();
        let mut stats = Stats::zero(k);
        let (mut z, mut e) = (vec![0.0; k], vec![0.0; k]);
        // Per component over a sub-block: sum r, sum r dx, sum r dx^2 and sum r variance,
        // dx taken from the sub-block's first point (so sums of squares stay accurate).
        let mut sums = vec![[0.0; 4]; k];
        for sub in points.chunks(SUB_ROWS) {
            let shift = sub[0].value;
            sums.iter_mut().for_each(|s| *s = [0.0; 4]);
            for p in sub {
                let mut top = f64::NEG_INFINITY;
                for (j, z) in z.iter_mut().enumerate() {
                    let d = p.value - lr.mean[j];
                    *z = (d.mul_add(d, p.variance)).mul_add(-lr.half_precision[j], lr.constant[j]);
                    top = max(top, *z);
                }
                let mut s = 0.0;
                for (e, z) in e.iter_mut().zip(&z) {
                    *e = exp(z - top);
                    s += *e;
                }
                let inv = p.weight / s;
                let dx = p.value - shift;
                // sum_k r (z - top - ln s), weighted.
                let mut entropy = -p.weight * s.ln();
                for ((sum, e), z) in sums.iter_mut().zip(&e).zip(&z) {
                    let r = e * inv;
                    entropy = r.mul_add(z - top, entropy);
                    sum[0] += r;
                    sum[1] = r.mul_add(dx, sum[1]);
                    sum[2] = (r * dx).mul_add(dx, sum[2]);
                    sum[3] = r.mul_add(p.variance, sum[3]);
                }
                stats.sum_r_ln_r += entropy;
            }
            for (m, &[n, s1, s2, v]) in stats.moments.iter_mut().zip(&sums) {
                if n > 0.0 {
                    let offset = s1 / n;
                    let m2 = (s2 - s1 * offset).max(0.0) + v;
                    *m = m.merge(Moments { n, mean: shift + offset, m2 });
                }
            }
        }
        stats
    }
}

/// One task's rows reduced to [`Stats`].
struct TaskStats<'a> {
    x: &'a [f64],
    lr: &'a LogRho,
}

impl Kernel for TaskStats<'_> {
    type Output = Stats;

    #[inline(always)]
    fn run<S: pulp::Simd>(self, simd: S) -> Stats {
        let (x, lr) = (self.x, self.lr);
        let k = lr.mean.len();
        let mut total = Stats::zero(k);
        let mut scratch = Scratch::new(k);
        for sub in x.chunks(SUB_ROWS) {
            total.sum_r_ln_r += scratch.sub_block(simd, sub, lr);
            for (&j, m) in scratch.active.iter().zip(&scratch.moments) {
                total.moments[j] = total.moments[j].merge(*m);
            }
        }
        total
    }
}

/// Buffers for one sub-block.
struct Scratch {
    /// The components not skipped in this sub-block, and their constants.
    active: Vec<usize>,
    constant: Vec<f64>,
    mean: Vec<f64>,
    half_precision: Vec<f64>,
    /// `exp(ln rho - top)` per active component and row (`[a * SUB_ROWS + row]`), `top`
    /// the row's shift (see [`Scratch::sub_block`]).
    e: Vec<f64>,
    /// Moments per active component.
    moments: Vec<Moments>,
}

impl Scratch {
    fn new(k: usize) -> Self {
        Self {
            active: Vec::with_capacity(k),
            constant: Vec::with_capacity(k),
            mean: Vec::with_capacity(k),
            half_precision: Vec::with_capacity(k),
            e: vec![0.0; k * SUB_ROWS],
            moments: Vec::with_capacity(k),
        }
    }

    /// Pick the components that matter somewhere in `[lo, hi]`: those whose largest
    /// `ln rho` there comes within [`SKIP`] of the largest smallest one (a lower bound of
    /// every row's maximum). Returns that lower bound and an upper bound of every row's
    /// maximum.
    #[inline(always)]
    fn select(&mut self, lo: f64, hi: f64, lr: &LogRho) -> (f64, f64) {
        let k = lr.mean.len();
        let at = |j: usize, v: f64| {
            let d = v - lr.mean[j];
            (d * d).mul_add(-lr.half_precision[j], lr.constant[j])
        };
        let mut floor = f64::NEG_INFINITY;
        for j in 0..k {
            floor = max(floor, at(j, lo).min(at(j, hi)));
        }
        self.active.clear();
        self.constant.clear();
        self.mean.clear();
        self.half_precision.clear();
        let mut ceiling = f64::NEG_INFINITY;
        for j in 0..k {
            let best = at(j, lr.mean[j].clamp(lo, hi));
            ceiling = max(ceiling, best);
            if best - floor >= SKIP {
                self.active.push(j);
                self.constant.push(lr.constant[j]);
                self.mean.push(lr.mean[j]);
                self.half_precision.push(lr.half_precision[j]);
            }
        }
        (floor, ceiling)
    }

    /// `sum r ln r` of up to [`SUB_ROWS`] sorted rows; their per-component moments are
    /// left in `moments`, one per component of `active`.
    #[inline(always)]
    fn sub_block<S: pulp::Simd>(&mut self, simd: S, sub: &[f64], lr: &LogRho) -> f64 {
        let len = sub.len();
        let (lo, hi) = (sub[0], sub[len - 1]);
        let (floor, ceiling) = self.select(lo, hi, lr);
        let k = self.active.len();
        // Pad a short block with its last value at weight 0. Sums of squares are taken
        // around a value of the block, so they stay as accurate as centred ones.
        let shift = sub[len / 2];
        let (padded, weights);
        let (x, w): (&[f64; SUB_ROWS], &[f64; SUB_ROWS]) = match <&[f64; SUB_ROWS]>::try_from(sub) {
            Ok(x) => (x, &[1.0; SUB_ROWS]),
            Err(_) => {
                padded = std::array::from_fn(|i| sub.get(i).copied().unwrap_or(hi));
                weights = std::array::from_fn(|i| if i < len { 1.0 } else { 0.0 });
                (&padded, &weights)
            }
        };

        // e = exp(ln rho - top) and s = sum_k e per row, for a `top` at least every
        // component's ln rho. A block's ceiling is one, and good enough when no row's
        // maximum is more than ONE_TOP below it (the row's best e stays above e^-600, far
        // from underflow): one pass. Otherwise (wide blocks in sparse tails) each row's
        // own maximum, in two passes.
        let mut top = [ceiling; SUB_ROWS];
        let mut s = [0.0; SUB_ROWS];
        let dx: [f64; SUB_ROWS] = std::array::from_fn(|i| x[i] - shift);
        let reach = (hi - shift).max(shift - lo);
        if ceiling - floor <= ONE_TOP {
            for (a, e) in self.e.chunks_exact_mut(SUB_ROWS).take(k).enumerate() {
                let (c, mu, hp) = (self.constant[a] - ceiling, self.mean[a], self.half_precision[a]);
                // ln rho(x) = ln rho(shift) + u, u = dx (-hp dx - slope): where |u| stays
                // small over the block (nearly always: sorted, a block is narrow next to
                // the components), e = e^ln rho(shift) e^u with a short series for e^u.
                let to_shift = shift - mu;
                let slope = 2.0 * hp * to_shift;
                let bound = slope.abs() * reach + hp * reach * reach;
                let at_shift = exp((to_shift * to_shift).mul_add(-hp, c));
                if bound <= NEAR {
                    for ((e, dx), s) in e.iter_mut().zip(&dx).zip(&mut s) {
                        *e = at_shift * exp_near(dx * (-hp).mul_add(*dx, -slope));
                        *s += *e;
                    }
                } else if bound <= LOCAL {
                    for ((e, dx), s) in e.iter_mut().zip(&dx).zip(&mut s) {
                        *e = at_shift * exp_local(dx * (-hp).mul_add(*dx, -slope));
                        *s += *e;
                    }
                } else {
                    for ((e, x), s) in e.iter_mut().zip(x).zip(&mut s) {
                        let d = x - mu;
                        *e = exp((d * d).mul_add(-hp, c));
                        *s += *e;
                    }
                }
            }
        } else {
            top.fill(f64::NEG_INFINITY);
            for (a, z) in self.e.chunks_exact_mut(SUB_ROWS).take(k).enumerate() {
                let (c, mu, hp) = (self.constant[a], self.mean[a], self.half_precision[a]);
                for ((z, x), top) in z.iter_mut().zip(x).zip(&mut top) {
                    let d = x - mu;
                    *z = (d * d).mul_add(-hp, c);
                    *top = max(*top, *z);
                }
            }
            for e in self.e.chunks_exact_mut(SUB_ROWS).take(k) {
                for ((e, top), s) in e.iter_mut().zip(&top).zip(&mut s) {
                    *e = exp(*e - top);
                    *s += *e;
                }
            }
        }
        // r = e w / s. sum_i sum_k r ln r = sum_i sum_k r (ln rho - top) - sum_i ln s, and
        // sum_k r (ln rho - top) = sum_k r ln rho - w top, so only per-component sums
        // are needed: sum_i r ln rho = c N - hp sum_i r (x - mu)^2.
        // ln s per row as exponent + ln mantissa: the mantissas (in [1, 2)) are multiplied
        // lane by lane over the block and the exponents summed, so the block costs one ln
        // per lane.
        let factor = |i: usize| if w[i] > 0.0 { s[i] } else { 1.0 };
        let inv: [f64; SUB_ROWS] = std::array::from_fn(|i| w[i] / s[i]);
        let mantissa: [f64; SUB_ROWS] = std::array::from_fn(|i| lanes::split(factor(i)).0);
        let exponent: [f64; SUB_ROWS] = std::array::from_fn(|i| lanes::split(factor(i)).1);
        let weighted_top: [f64; SUB_ROWS] = std::array::from_fn(|i| w[i] * top[i]);
        let (product, exponents, tops) = lane_sums(simd, &mantissa, &exponent, &weighted_top);
        let mut entropy = -lane_sum(&tops) - lanes::ln_of_product(&product, &exponents);
        self.moments.clear();
        for (a, e) in self.e.chunks_exact(SUB_ROWS).take(k).enumerate() {
            let (count, s1, s2) = component_sums(simd, e, &inv, &dx);
            if count > 0.0 {
                let offset = s1 / count;
                let m2 = (s2 - s1 * offset).max(0.0);
                // sum r (x - mu)^2 with x - mu = (x - shift) + (shift - mu).
                let to_mean = shift - self.mean[a];
                let spread = s2 + to_mean * (2.0 * s1 + to_mean * count);
                entropy += self.constant[a] * count - self.half_precision[a] * spread;
                self.moments.push(Moments { n: count, mean: shift + offset, m2 });
            } else {
                self.moments.push(Moments::default());
            }
        }
        entropy
    }
}
/// Per lane over a sub-block: the product of `mantissa` and the sums of `exponent` and
/// `weighted_top` (lane `t` takes rows `t`, `t + 8`, ...).
#[inline(always)]
fn lane_sums<S: pulp::Simd>(
    simd: S,
    mantissa: &[f64; SUB_ROWS],
    exponent: &[f64; SUB_ROWS],
    weighted_top: &[f64; SUB_ROWS],
) -> (Lanes, Lanes, Lanes) {
    let regs = Acc::<S>::REGS;
    let (mut product, mut exponents, mut tops) = (Acc::splat(simd, 1.0), Acc::zero(simd), Acc::zero(simd));
    let (m, e, t) = (S::as_simd_f64s(mantissa).0, S::as_simd_f64s(exponent).0, S::as_simd_f64s(weighted_top).0);
    for ((m, e), t) in m.chunks_exact(regs).zip(e.chunks_exact(regs)).zip(t.chunks_exact(regs)) {
        for v in 0..regs {
            *product.reg(v) = simd.mul_f64s(*product.reg(v), m[v]);
            *exponents.reg(v) = simd.add_f64s(*exponents.reg(v), e[v]);
            *tops.reg(v) = simd.add_f64s(*tops.reg(v), t[v]);
        }
    }
    (product.lanes(), exponents.lanes(), tops.lanes())
}

/// `sum r`, `sum r dx` and `sum r dx^2` over a sub-block, with `r = e inv`. Written with
/// explicit SIMD: LLVM leaves these three reductions partly scalar.
#[inline(always)]
fn component_sums<S: pulp::Simd>(simd: S, e: &[f64], inv: &[f64], dx: &[f64]) -> (f64, f64, f64) {
    let regs = Acc::<S>::REGS;
    let (mut n, mut s1, mut s2) = (Acc::zero(simd), Acc::zero(simd), Acc::zero(simd));
    let (e, inv, dx) = (S::as_simd_f64s(e).0, S::as_simd_f64s(inv).0, S::as_simd_f64s(dx).0);
    for ((e, inv), dx) in e.chunks_exact(regs).zip(inv.chunks_exact(regs)).zip(dx.chunks_exact(regs)) {
        for v in 0..regs {
            let r = simd.mul_f64s(e[v], inv[v]);
            let rd = simd.mul_f64s(r, dx[v]);
            *n.reg(v) = simd.add_f64s(*n.reg(v), r);
            *s1.reg(v) = simd.add_f64s(*s1.reg(v), rd);
            *s2.reg(v) = simd.mul_add_f64s(rd, dx[v], *s2.reg(v));
        }
    }
    (n.sum(), s1.sum(), s2.sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_step_matches_a_direct_computation() {
        // Two modes, a dense cluster and a sparse tail out to 1e5: the tail's sub-block is
        // too wide for one shift (the two-pass path), the others take the one-pass path,
        // with the series around a value of the block or without; some components are
        // skipped in some sub-blocks.
        let mut x: Vec<f64> =
            (0..2000).map(|i| if i % 2 == 0 { 0.0 } else { 50.0 } + ((i * 37) % 101) as f64 / 25.0).collect();
        x.extend((0..20).map(|i| 100.0 * 1.4_f64.powi(i)));
        // A dense cluster: narrow sub-blocks, where e^ln rho is expanded around a value.
        x.extend((0..3000).map(|i| 1.9 + f64::from(i) * 1e-4));
        let lr = LogRho {
            constant: vec![-1.0, -2.5, -9.0],
            mean: vec![2.0, 52.0, 1e4],
            half_precision: vec![0.5, 0.125, 0.5e-6],
        };
        let stats = e_step(&Sorted::new(&x), &lr);
        let (k, mut want, mut entropy) = (3, vec![Moments::default(); 3], 0.0);
        for &v in &x {
            let z: Vec<f64> =
                (0..k).map(|j| lr.constant[j] - (v - lr.mean[j]).powi(2) * lr.half_precision[j]).collect();
            let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = z.iter().map(|z| (z - top).exp()).sum();
            for j in 0..k {
                let r = (z[j] - top).exp() / s;
                want[j] = want[j].merge(Moments { n: r, mean: v, m2: 0.0 });
                if r > 0.0 {
                    entropy += r * (z[j] - top - s.ln());
                }
            }
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-11 * a.abs().max(b.abs()).max(1.0);
        for (got, want) in stats.moments.iter().zip(&want) {
            assert!(
                close(got.n, want.n) && close(got.mean, want.mean) && close(got.m2, want.m2),
                "{got:?} vs {want:?}"
            );
        }
        assert!(close(stats.sum_r_ln_r, entropy), "{} vs {entropy}", stats.sum_r_ln_r);
    }

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
