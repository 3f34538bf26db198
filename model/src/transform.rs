//! Mode-specific normalization of one continuous column and its inverse.
//!
//! Transform: per row draw a valid component `k` from its posterior probability
//! (seeded), `alpha = (x - mean_k) / (4 std_k)` clipped to [-0.99, 0.99], plus a one-hot
//! over the valid components. Inverse: `k = argmax(one-hot)`, `x = alpha 4 std_k + mean_k`.

use arrow_array::{Array, Float64Array, UInt8Array};
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::gmm::Mixture;

/// |alpha| never exceeds this.
pub const ALPHA_CLIP: f64 = 0.99;

/// The transform's output for one column: alpha and one array per valid component.
pub struct Normalized {
    /// Scaled offset from the chosen component's mean.
    pub alpha: Float64Array,
    /// 1 for the chosen component, in the order of [`Mixture::valid_components`].
    pub one_hot: Vec<UInt8Array>,
}

/// Precomputed per valid component: what the row loop needs, nothing else.
struct Valid {
    constant: Vec<f64>,
    mean: Vec<f64>,
    half_precision: Vec<f64>,
    scale: Vec<f64>, // 4 std
}

impl Valid {
    fn new(mix: &Mixture) -> Self {
        let lr = mix.log_rho();
        let idx = mix.valid_components();
        Self {
            constant: idx.iter().map(|&j| lr.constant[j]).collect(),
            mean: idx.iter().map(|&j| mix.means[j]).collect(),
            half_precision: idx.iter().map(|&j| lr.half_precision[j]).collect(),
            scale: idx.iter().map(|&j| 4.0 * mix.stds[j]).collect(),
        }
    }
}

/// Uniform in [0, 1) from the top 53 bits.
fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Normalize `x` with `mix`, drawing components from a generator seeded with `seed`.
/// Nulls stay null (alpha and every one-hot entry).
pub fn normalize(mix: &Mixture, x: &Float64Array, seed: u64) -> Normalized {
    let v = Valid::new(mix);
    let k = v.mean.len();
    let n = x.len();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut alpha = Vec::with_capacity(n);
    let mut chosen = Vec::with_capacity(n);
    let mut logs = vec![0.0; k];
    for &value in x.values().iter() {
        let mut max = f64::NEG_INFINITY;
        for (j, l) in logs.iter_mut().enumerate() {
            let d = value - v.mean[j];
            *l = v.constant[j] - d * d * v.half_precision[j];
            max = max.max(*l);
        }
        let mut total = 0.0;
        for l in logs.iter_mut() {
            *l = (*l - max).exp();
            total += *l;
        }
        let target = unit(&mut rng) * total;
        let mut pick = k - 1;
        let mut acc = 0.0;
        for (j, p) in logs.iter().enumerate() {
            acc += p;
            if target < acc {
                pick = j;
                break;
            }
        }
        alpha.push(((value - v.mean[pick]) / v.scale[pick]).clamp(-ALPHA_CLIP, ALPHA_CLIP));
        chosen.push(pick);
    }
    let nulls = x.nulls().cloned();
    let alpha = Float64Array::new(alpha.into(), nulls.clone());
    let one_hot = (0..k)
        .map(|j| {
            let bits: Vec<u8> = chosen.iter().map(|&c| u8::from(c == j)).collect();
            UInt8Array::new(bits.into(), nulls.clone())
        })
        .collect();
    Normalized { alpha, one_hot }
}

/// Undo [`normalize`]: the component is the argmax of the one-hot (first on ties, null
/// counting as 0); a null alpha gives a null value. Column by column, so the loops
/// vectorize.
pub fn denormalize(mix: &Mixture, alpha: &Float64Array, one_hot: &[OneHot<'_>]) -> Float64Array {
    let v = Valid::new(mix);
    let n = alpha.len();
    let mut best_value = vec![f64::NEG_INFINITY; n];
    let mut best = vec![0u8; n];
    for (j, column) in one_hot.iter().enumerate() {
        let j = u8::try_from(j).unwrap_or(u8::MAX);
        let mut consider = |i: usize, value: f64| {
            if value > best_value[i] {
                best_value[i] = value;
                best[i] = j;
            }
        };
        match column {
            OneHot::U8(a) if a.null_count() == 0 => {
                a.values().iter().enumerate().for_each(|(i, x)| consider(i, f64::from(*x)))
            }
            OneHot::F64(a) if a.null_count() == 0 => a.values().iter().enumerate().for_each(|(i, x)| consider(i, *x)),
            OneHot::U8(a) => (0..n).for_each(|i| consider(i, if a.is_valid(i) { f64::from(a.value(i)) } else { 0.0 })),
            OneHot::F64(a) => (0..n).for_each(|i| consider(i, if a.is_valid(i) { a.value(i) } else { 0.0 })),
        }
    }
    let values: Vec<f64> = alpha
        .values()
        .iter()
        .zip(&best)
        .map(|(a, &k)| {
            let k = usize::from(k).min(v.scale.len().saturating_sub(1));
            a * v.scale[k] + v.mean[k]
        })
        .collect();
    Float64Array::new(values.into(), alpha.nulls().cloned())
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
