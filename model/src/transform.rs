//! Mode-specific normalization of one continuous column and its inverse.
//!
//! Transform: per row draw a valid component `k` from its posterior probability
//! (seeded per row, see [`normalize`]), `alpha = (x - mean_k) / (4 std_k)` clipped to [-0.99, 0.99], plus a one-hot
//! over the valid components. Inverse: `k = argmax(one-hot)`, `x = alpha 4 std_k + mean_k`.

use arrow_array::{Array, Float64Array, UInt8Array};
use rayon::prelude::*;

use crate::gmm::Mixture;
use crate::lanes::{self, Kernel, exp_draw, max};

/// |alpha| never exceeds this.
pub const ALPHA_CLIP: f64 = 0.99;

/// The transform's output for one column: alpha and one array per valid component.
pub struct Normalized {
    /// Scaled offset from the chosen component's mean.
    pub alpha: Float64Array,
    /// 1 for the chosen component, in the order of [`Mixture::valid_components`].
    pub one_hot: Vec<UInt8Array>,
}

/// Rows per parallel task. Every row's draw depends on (seed, row index) alone, so the
/// split changes nothing in the output; it only sets the grain of the work.
const TASK_ROWS: usize = 65_536;
/// Rows held component-major at once in the transform (`SUB_ROWS` x components x 8 bytes).
const SUB_ROWS: usize = 256;

/// Rows of byte one-hot columns decoded at once.
const BYTE_ROWS: usize = 2048;

/// Precomputed per valid component: what the row loop needs, nothing else.
struct Valid {
    constant: Vec<f64>,
    /// `constant` less its maximum: `ln rho` shifted by a bound of every row's maximum.
    shifted: Vec<f64>,
    mean: Vec<f64>,
    half_precision: Vec<f64>,
    scale: Vec<f64>, // 4 std
}

impl Valid {
    fn new(mix: &Mixture) -> Self {
        let lr = mix.log_rho();
        let idx = mix.valid_components();
        let constant: Vec<f64> = idx.iter().map(|&j| lr.constant[j]).collect();
        let ceiling = constant.iter().copied().fold(f64::NEG_INFINITY, max);
        Self {
            shifted: constant.iter().map(|c| c - ceiling).collect(),
            constant,
            mean: idx.iter().map(|&j| mix.means[j]).collect(),
            half_precision: idx.iter().map(|&j| lr.half_precision[j]).collect(),
            scale: idx.iter().map(|&j| 4.0 * mix.stds[j]).collect(),
        }
    }
}

/// Uniform in [0, 1) for row `row` of a chunk seeded with `seed`: the `row`-th output of
/// SplitMix64 started at `seed`, computed directly (counter-based), so rows can be
/// processed in any order or split.
#[inline(always)]
fn uniform(seed: u64, row: u64) -> f64 {
    let mut z = seed.wrapping_add(row.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Normalize `x` with `mix`. Row `i` draws its component from its posterior probability
/// with the uniform number `(seed, i)` gives, so the output depends on (model, values,
/// seed) only, never on the thread count. Nulls stay null (alpha and every one-hot entry).
pub fn normalize(mix: &Mixture, x: &Float64Array, seed: u64) -> Normalized {
    let v = Valid::new(mix);
    let k = v.mean.len();
    let n = x.len();
    let mut alpha = vec![0.0; n];
    // One zeroed allocation per column (`vec![vec![0; n]; k]` would copy the first k - 1 times).
    let mut one_hot: Vec<Vec<u8>> = (0..k).map(|_| vec![0u8; n]).collect();
    if k > 0 {
        // Each task gets its rows of every one-hot column.
        let mut columns: Vec<Vec<&mut [u8]>> = (0..n.div_ceil(TASK_ROWS)).map(|_| Vec::with_capacity(k)).collect();
        for column in &mut one_hot {
            for (task, rows) in columns.iter_mut().zip(column.chunks_mut(TASK_ROWS)) {
                task.push(rows);
            }
        }
        x.values()
            .par_chunks(TASK_ROWS)
            .zip(alpha.par_chunks_mut(TASK_ROWS))
            .zip(columns.into_par_iter())
            .enumerate()
            .for_each(|(task, ((x, alpha), mut one_hot))| {
                let first_row = (task * TASK_ROWS) as u64;
                lanes::dispatch(Draw { v: &v, x, alpha, one_hot: &mut one_hot, seed, first_row });
            });
    }
    let nulls = x.nulls().cloned();
    let alpha = Float64Array::new(alpha.into(), nulls.clone());
    let one_hot = one_hot.into_iter().map(|bits| UInt8Array::new(bits.into(), nulls.clone())).collect();
    Normalized { alpha, one_hot }
}

/// One task of [`normalize`]: component draws and alphas for its rows.
struct Draw<'a, 'b> {
    v: &'a Valid,
    x: &'a [f64],
    alpha: &'a mut [f64],
    /// This task's rows of each one-hot column.
    one_hot: &'a mut [&'b mut [u8]],
    seed: u64,
    first_row: u64,
}

impl Kernel for Draw<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: pulp::Simd>(self, simd: S) {
        let Draw { v, x, alpha, one_hot, seed, first_row } = self;
        let k = v.mean.len();
        let mut e = vec![0.0; k * SUB_ROWS];
        let mut pick = [0.0; SUB_ROWS];
        let mut raw = [0.0; SUB_ROWS];
        for ((x, alpha), sub) in x.chunks(SUB_ROWS).zip(alpha.chunks_mut(SUB_ROWS)).zip(0u64..) {
            let len = x.len();
            // Full blocks are read in place; the last one is padded with zeros.
            let padded;
            let xs: &[f64; SUB_ROWS] = match <&[f64; SUB_ROWS]>::try_from(x) {
                Ok(xs) => xs,
                Err(_) => {
                    padded = std::array::from_fn(|i| x.get(i).copied().unwrap_or(0.0));
                    &padded
                }
            };
            // Exponentials of ln rho shifted by the largest constant, which no row's ln rho
            // exceeds, and their sums: one pass. A row far from every component (an
            // outlier) can underflow that way; then the block takes each row's own
            // maximum, in two passes.
            let mut total = [0.0; SUB_ROWS];
            for (j, e) in e.chunks_exact_mut(SUB_ROWS).enumerate() {
                let (c, mu, hp) = (v.shifted[j], v.mean[j], v.half_precision[j]);
                for ((e, x), total) in e.iter_mut().zip(xs).zip(&mut total) {
                    let d = x - mu;
                    *e = exp_draw((d * d).mul_add(-hp, c));
                    *total += *e;
                }
            }
            if total[..len].iter().any(|t| *t < EXACT_BELOW) {
                total = row_maximum_exps(v, xs, &mut e);
            }
            // Target u * total; the pick is the first component whose running sum passes it.
            let row0 = first_row + sub * SUB_ROWS as u64;
            let mut target = [0.0; SUB_ROWS];
            for ((t, total), i) in target.iter_mut().zip(&total).zip(0u64..) {
                *t = uniform(seed, row0 + i) * total;
            }
            pick_components(simd, v, &e, &target, xs, &mut raw, &mut pick);
            for (alpha, raw) in alpha.iter_mut().zip(&raw) {
                *alpha = raw.clamp(-ALPHA_CLIP, ALPHA_CLIP);
            }
            let from = sub as usize * SUB_ROWS;
            for (column, j) in one_hot.iter_mut().zip(0u16..) {
                let j = f64::from(j);
                for (bit, pick) in column[from..from + len].iter_mut().zip(&pick) {
                    *bit = u8::from(*pick == j);
                }
            }
        }
    }
}

/// Below this a row's sum of exponentials shifted by the largest constant may have lost
/// components to the exponential's floor (e^-700): the block is redone row by row.
const EXACT_BELOW: f64 = 1e-280;

/// Exponentials of `ln rho` shifted by each row's own maximum, into `e`; their sums.
#[inline(always)]
fn row_maximum_exps(v: &Valid, xs: &[f64; SUB_ROWS], e: &mut [f64]) -> [f64; SUB_ROWS] {
    let mut top = [f64::NEG_INFINITY; SUB_ROWS];
    for (j, e) in e.chunks_exact_mut(SUB_ROWS).enumerate() {
        let (c, mu, hp) = (v.constant[j], v.mean[j], v.half_precision[j]);
        for ((e, x), top) in e.iter_mut().zip(xs).zip(&mut top) {
            let d = x - mu;
            *e = (d * d).mul_add(-hp, c);
            *top = max(*top, *e);
        }
    }
    let mut total = [0.0; SUB_ROWS];
    for e in e.chunks_exact_mut(SUB_ROWS) {
        for ((e, top), total) in e.iter_mut().zip(&top).zip(&mut total) {
            *e = exp_draw(*e - top);
            *total += *e;
        }
    }
    total
}

/// Per row: the component drawn (the first whose running sum of `e` exceeds the target),
/// as a float index into `pick`, and the unclipped alpha into `raw`. Rows side by side in
/// SIMD registers, components one after the other, so nothing goes through memory but `e`.
#[inline(always)]
fn pick_components<S: pulp::Simd>(
    simd: S,
    v: &Valid,
    e: &[f64],
    target: &[f64; SUB_ROWS],
    xs: &[f64; SUB_ROWS],
    raw: &mut [f64; SUB_ROWS],
    pick: &mut [f64; SUB_ROWS],
) {
    let k = v.mean.len();
    let regs = SUB_ROWS / S::F64_LANES;
    let e = S::as_simd_f64s(e).0;
    let (target, xs) = (S::as_simd_f64s(target).0, S::as_simd_f64s(xs).0);
    let (raw, pick) = (S::as_mut_simd_f64s(raw).0, S::as_mut_simd_f64s(pick).0);
    for i in 0..regs {
        let mut acc = simd.splat_f64s(0.0);
        let mut chosen = simd.splat_f64s(0.0);
        let mut mean = simd.splat_f64s(v.mean[0]);
        let mut scale = simd.splat_f64s(v.scale[0]);
        for j in 0..k - 1 {
            acc = simd.add_f64s(acc, e[j * regs + i]);
            let passed = simd.less_than_or_equal_f64s(acc, target[i]);
            chosen = simd.select_f64s(passed, simd.splat_f64s((j + 1) as f64), chosen);
            mean = simd.select_f64s(passed, simd.splat_f64s(v.mean[j + 1]), mean);
            scale = simd.select_f64s(passed, simd.splat_f64s(v.scale[j + 1]), scale);
        }
        raw[i] = simd.div_f64s(simd.sub_f64s(xs[i], mean), scale);
        pick[i] = chosen;
    }
}

/// Undo [`normalize`]: the component is the argmax of the one-hot (first on ties, null
/// counting as 0); a null alpha gives a null value. Column by column within blocks of
/// rows, in parallel; every row is computed alone, so threads change nothing.
pub fn denormalize(mix: &Mixture, alpha: &Float64Array, one_hot: &[OneHot<'_>]) -> Float64Array {
    let v = Valid::new(mix);
    let n = alpha.len();
    let mut values = vec![0.0; n];
    if let Some(bytes) = as_bytes(&v, one_hot, n) {
        let table = |values: &[f64]| {
            let mut table = [0.0; 256];
            table[..values.len()].copy_from_slice(values);
            table
        };
        let (mean, scale) = (table(&v.mean), table(&v.scale));
        values.par_chunks_mut(TASK_ROWS).zip(alpha.values().par_chunks(TASK_ROWS)).enumerate().for_each(
            |(task, (out, alpha))| {
                let start = task * TASK_ROWS;
                lanes::dispatch(DecodeBytes { mean: &mean, scale: &scale, alpha, bytes: &bytes, start, out });
            },
        );
    } else if !v.mean.is_empty() {
        values.par_chunks_mut(TASK_ROWS).enumerate().for_each(|(task, out)| {
            lanes::dispatch(Decode { v: &v, alpha: alpha.values(), one_hot, start: task * TASK_ROWS, out });
        });
    }
    Float64Array::new(values.into(), alpha.nulls().cloned())
}

/// One task of [`denormalize`].
struct Decode<'a, 'b> {
    v: &'a Valid,
    alpha: &'a [f64],
    one_hot: &'a [OneHot<'b>],
    start: usize,
    out: &'a mut [f64],
}

impl Kernel for Decode<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: pulp::Simd>(self, _simd: S) {
        let Decode { v, alpha, one_hot, start, out } = self;
        let last = v.mean.len() - 1;
        for (out, from) in out.chunks_mut(SUB_ROWS).zip((start..).step_by(SUB_ROWS)) {
            let len = out.len();
            let mut best = [f64::NEG_INFINITY; SUB_ROWS];
            let mut mean = [v.mean[0]; SUB_ROWS];
            let mut scale = [v.scale[0]; SUB_ROWS];
            let mut value = [0.0; SUB_ROWS];
            // Columns beyond the model's components are ignored, as the old argmax clamped.
            for (j, column) in one_hot.iter().enumerate().take(last + 1) {
                read_one_hot(column, from, &mut value[..len]);
                let (m, s) = (v.mean[j], v.scale[j]);
                for i in 0..SUB_ROWS {
                    if value[i] > best[i] {
                        best[i] = value[i];
                        mean[i] = m;
                        scale[i] = s;
                    }
                }
            }
            let alpha = &alpha[from..from + len];
            for i in 0..len {
                out[i] = alpha[i] * scale[i] + mean[i];
            }
        }
    }
}

/// The one-hot columns the model reads as plain bytes, when they are what the transform
/// writes: UInt8 without nulls, at least `n` rows, at most 256 components (so a component
/// index fits a byte).
fn as_bytes<'a>(v: &Valid, one_hot: &[OneHot<'a>], n: usize) -> Option<Vec<&'a [u8]>> {
    let k = v.mean.len();
    if k == 0 || k > 256 || one_hot.is_empty() {
        return None;
    }
    one_hot
        .iter()
        .take(k)
        .map(|column| match column {
            OneHot::U8(a) if a.null_count() == 0 && a.len() >= n => a.values().get(..n),
            _ => None,
        })
        .collect()
}

/// One task of [`denormalize`] on byte columns: the argmax over bytes (first on ties), then
/// `alpha scale + mean` looked up by component index. Same values as [`Decode`].
struct DecodeBytes<'a, 'b> {
    mean: &'a [f64; 256],
    scale: &'a [f64; 256],
    alpha: &'a [f64],
    bytes: &'a [&'b [u8]],
    start: usize,
    out: &'a mut [f64],
}

impl Kernel for DecodeBytes<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: pulp::Simd>(self, _simd: S) {
        let DecodeBytes { mean, scale, alpha, bytes, start, out } = self;
        let mut best = [0u8; BYTE_ROWS];
        let mut pick = [0u8; BYTE_ROWS];
        for ((out, alpha), from) in
            out.chunks_mut(BYTE_ROWS).zip(alpha.chunks(BYTE_ROWS)).zip((start..).step_by(BYTE_ROWS))
        {
            let len = out.len();
            let (best, pick) = (&mut best[..len], &mut pick[..len]);
            pick.fill(0);
            for (j, column) in bytes.iter().enumerate() {
                let column = &column[from..from + len];
                if j == 0 {
                    best.copy_from_slice(column);
                    continue;
                }
                // j < 256: checked in `as_bytes`.
                let j = j as u8;
                for ((best, pick), &b) in best.iter_mut().zip(pick.iter_mut()).zip(column) {
                    let take = b > *best;
                    *best = if take { b } else { *best };
                    *pick = if take { j } else { *pick };
                }
            }
            for ((out, alpha), &p) in out.iter_mut().zip(alpha).zip(pick.iter()) {
                *out = alpha * scale[usize::from(p)] + mean[usize::from(p)];
            }
        }
    }
}

/// Rows `from..from + value.len()` of a one-hot column as f64; null, or past the end of
/// a short column, reads as 0.
#[inline(always)]
fn read_one_hot(column: &OneHot<'_>, from: usize, value: &mut [f64]) {
    let to = from + value.len();
    match column {
        OneHot::U8(a) if a.null_count() == 0 && a.len() >= to => {
            value.iter_mut().zip(&a.values()[from..to]).for_each(|(v, s)| *v = f64::from(*s))
        }
        OneHot::F64(a) if a.null_count() == 0 && a.len() >= to => value.copy_from_slice(&a.values()[from..to]),
        OneHot::U8(a) => value
            .iter_mut()
            .zip(from..)
            .for_each(|(v, r)| *v = if r < a.len() && a.is_valid(r) { f64::from(a.value(r)) } else { 0.0 }),
        OneHot::F64(a) => value
            .iter_mut()
            .zip(from..)
            .for_each(|(v, r)| *v = if r < a.len() && a.is_valid(r) { a.value(r) } else { 0.0 }),
    }
}

/// A one-hot column read back for the inverse: UInt8 as written, or Float64 as generators
/// emit.
#[derive(Clone, Copy, Debug)]
pub enum OneHot<'a> {
    /// As the transform writes it.
    U8(&'a UInt8Array),
    /// As a generator may emit it.
    F64(&'a Float64Array),
}
