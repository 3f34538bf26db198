//! Continuous columns with modal values, as CTAB-GAN encodes "mixed" columns: each modal
//! value (such as 0, or null) gets a one-hot slot of its own ahead of the mixture's
//! components, with alpha 0; every other value is normalized with the mixture. A
//! continuous column fitted with nulls uses the same layout with null as its only mode.
//!
//! Without modes or a tail this is exactly [`normalize`] and [`denormalize`], byte for
//! byte.

use arrow_array::{Array, Float64Array, UInt8Array};
use arrow_buffer::NullBuffer;

use crate::gmm::Mixture;
use crate::onehot::{argmax, one_hot_columns};
use crate::tail::{TailTransform, forward_array};
use crate::transform::{OneHot, denormalize, normalize};

/// A numeric column encoded: alpha, one slot per mode, one slot per valid component.
pub(crate) struct Encoded {
    pub alpha: Float64Array,
    pub modes: Vec<UInt8Array>,
    pub components: Vec<UInt8Array>,
}

/// The slot of `modes` that row `i` of `x` falls in, if any: a null falls in the null
/// mode, a value in the mode equal to it.
fn mode_of(modes: &[Option<f64>], x: &Float64Array, i: usize) -> Option<usize> {
    if x.is_null(i) {
        modes.iter().position(Option::is_none)
    } else {
        let v = x.value(i);
        modes.iter().position(|m| *m == Some(v))
    }
}

/// A null buffer from per-row validity; none when every row is valid.
fn validity(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|&v| v) { None } else { Some(NullBuffer::from(valid)) }
}

/// Encode `x`; component draws come from `seed`. Rows that are null without a null mode
/// stay null in every output column. Non-modal values go through `tail` first; returns
/// how many were below its `lower` (clamped).
pub(crate) fn encode(
    mix: &Mixture,
    modes: &[Option<f64>],
    tail: Option<&TailTransform>,
    x: &Float64Array,
    seed: u64,
) -> (Encoded, u64) {
    if modes.is_empty() {
        let (forward, clamped) = match tail {
            Some(t) => forward_array(t, x, |_| false),
            // Without a tail the values are read in place.
            None => (x.clone(), 0),
        };
        let out = normalize(mix, &forward, seed);
        return (Encoded { alpha: out.alpha, modes: Vec::new(), components: out.one_hot }, clamped);
    }
    let n = x.len();
    let hot: Vec<Option<usize>> = (0..n).map(|i| mode_of(modes, x, i)).collect();
    // Modal rows are normalized from the mixture's mean (any finite value would do: their
    // alpha and components are zeroed below), so every row draws from the generator alike.
    let fill: f64 = mix.weights.iter().zip(&mix.means).map(|(w, m)| w * m).sum();
    let mut clamped = 0;
    let values: Vec<f64> = (0..n)
        .map(|i| {
            if hot[i].is_some() || x.is_null(i) {
                return fill;
            }
            let Some(t) = tail else { return x.value(i) };
            let (y, low) = t.forward(x.value(i));
            clamped += u64::from(low);
            y
        })
        .collect();
    let nulls = validity((0..n).map(|i| x.is_valid(i) || hot[i].is_some()).collect());
    let out = normalize(mix, &Float64Array::new(values.into(), nulls.clone()), seed);
    let zero_modal = |values: &[f64]| -> Vec<f64> {
        values.iter().zip(&hot).map(|(&v, h)| if h.is_some() { 0.0 } else { v }).collect()
    };
    let alpha = Float64Array::new(zero_modal(out.alpha.values()).into(), nulls.clone());
    let components = out
        .one_hot
        .iter()
        .map(|c| {
            let bits: Vec<u8> = c.values().iter().zip(&hot).map(|(&b, h)| if h.is_some() { 0 } else { b }).collect();
            UInt8Array::new(bits.into(), nulls.clone())
        })
        .collect();
    let modes = one_hot_columns(&hot, modes.len())
        .into_iter()
        .map(|c| UInt8Array::new(c.values().clone(), nulls.clone()))
        .collect();
    (Encoded { alpha, modes, components }, clamped)
}

/// Decode: a row whose hottest mode slot beats every component slot is that mode's value
/// (null for the null mode); any other row is denormalized, then taken back through
/// `tail`. A null alpha gives null.
pub(crate) fn decode(
    mix: &Mixture,
    modes: &[Option<f64>],
    tail: Option<&TailTransform>,
    alpha: &Float64Array,
    mode_block: &[OneHot<'_>],
    components: &[OneHot<'_>],
) -> Float64Array {
    let mut base = denormalize(mix, alpha, components);
    if let Some(t) = tail {
        base = base.unary(|y| t.inverse(y));
    }
    if modes.is_empty() {
        return base;
    }
    let n = alpha.len();
    let (mode, mode_value) = argmax(mode_block, n);
    let (_, component_value) = argmax(components, n);
    let mut values = base.values().to_vec();
    let mut valid: Vec<bool> = (0..n).map(|i| alpha.is_valid(i)).collect();
    for i in 0..n {
        if valid[i] && mode_value[i] > component_value[i] {
            match modes.get(mode[i]).copied().flatten() {
                Some(v) => values[i] = v,
                None => valid[i] = false,
            }
        }
    }
    Float64Array::new(values.into(), validity(valid))
}
