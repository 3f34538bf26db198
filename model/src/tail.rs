//! Long-tailed columns, as CTAB-GAN treats them: `y = ln(x - lower + 1)` before the
//! mixture, `x = e^y - 1 + lower` after the inverse, with `lower` the smallest value of
//! the fitting sample. On a tail spanning orders of magnitude the mixture's broadest
//! component cannot reach the largest values within alpha's clip (±0.99, i.e. 3.96 std):
//! they come back clipped, and the column's sum falls short. In log space they are a few
//! std away.
//!
//! A value below `lower` at transform time (the fit never saw one so small) still goes
//! through as long as `x - lower + 1 > 0`, and comes back as it was; one at or below
//! `lower - 1`, where the logarithm has no value, is read as `lower` and counted
//! ([`crate::TransformReport::clamped`]); NaN stays NaN.

use arrow_array::{Array, Float64Array};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// What a column's tail gets before its mixture, as a dataset configures it (`fit.tails`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tail {
    /// The values as they are.
    None,
    /// `ln(x - lower + 1)`, `lower` the fit sample's minimum.
    Log,
}

impl std::fmt::Display for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Log => "log",
        })
    }
}

/// A fitted tail transform, recorded in `model.json` (`"tail": {"log": {"lower": 0.01}}`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TailTransform {
    /// `y = ln(x - lower + 1)`, values at or below `lower - 1` read as `lower`.
    Log {
        /// The smallest (non-modal, finite) value of the fit sample.
        lower: f64,
    },
}

impl TailTransform {
    /// A value into the mixture's space, and whether it was out of the logarithm's
    /// domain (at or below `lower - 1`: clamped to `lower`).
    #[inline]
    pub fn forward(&self, x: f64) -> (f64, bool) {
        match *self {
            Self::Log { lower } => {
                if x - lower <= -1.0 {
                    (0.0, true)
                } else {
                    // NaN fails both comparisons and stays NaN.
                    ((x - lower).ln_1p(), false)
                }
            }
        }
    }

    /// A value of the mixture's space back to the column's.
    #[inline]
    pub fn inverse(&self, y: f64) -> f64 {
        match *self {
            Self::Log { lower } => y.exp_m1() + lower,
        }
    }

    /// Which choice this is.
    pub fn tail(&self) -> Tail {
        match self {
            Self::Log { .. } => Tail::Log,
        }
    }
}

/// `values` forward through `tail`, rows where `keep` holds left as they are (modal rows:
/// their slot is found on the raw value); how many were clamped.
pub(crate) fn forward_array(
    tail: &TailTransform,
    x: &Float64Array,
    keep: impl Fn(usize) -> bool,
) -> (Float64Array, u64) {
    let mut clamped = 0;
    let values: Vec<f64> = x
        .values()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if x.is_null(i) || keep(i) {
                return v;
            }
            let (y, low) = tail.forward(v);
            clamped += u64::from(low);
            y
        })
        .collect();
    (Float64Array::new(values.into(), x.nulls().cloned()), clamped)
}

/// The fitted transform for `spec` (given) or inferred from `values` (the finite,
/// non-modal fitting values, every part): log when every value is at least 0 and their
/// skewness reaches `min_skewness`. `None` for no transform.
pub(crate) fn choose(spec: Option<Tail>, values: &[&[f64]], min_skewness: f64) -> Option<TailTransform> {
    let all = || values.iter().flat_map(|p| p.iter().copied());
    let lower = all().fold(f64::INFINITY, f64::min);
    if !lower.is_finite() {
        return None;
    }
    let log = match spec {
        Some(Tail::Log) => true,
        Some(Tail::None) => false,
        None => lower >= 0.0 && skewness(all()) >= min_skewness,
    };
    log.then_some(TailTransform::Log { lower })
}

/// Sample skewness `m3 / m2^1.5` (0 for a constant sample).
pub(crate) fn skewness(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let (n, sum) = values.clone().fold((0.0, 0.0), |(n, s), v| (n + 1.0, s + v));
    if n == 0.0 {
        return 0.0;
    }
    let mean = sum / n;
    let (m2, m3) = values.fold((0.0, 0.0), |(m2, m3), v| {
        let d = v - mean;
        (d.mul_add(d, m2), (d * d).mul_add(d, m3))
    });
    let (m2, m3) = (m2 / n, m3 / n);
    if m2 > 0.0 { m3 / m2.powf(1.5) } else { 0.0 }
}

/// What a column's encoding loses on a sample to alpha's clip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClipStats {
    /// Values compared (non-null in the sample and in the inverse).
    pub rows: u64,
    /// Rows whose alpha was clipped at ±[`crate::ALPHA_CLIP`].
    pub clipped: u64,
    /// Share of `rows` clipped.
    pub clipped_share: f64,
    /// `|sum(sample) - sum(inverse)| / |sum(sample)|` over those rows.
    pub sum_lost: f64,
}

/// Both tail choices of one numeric column measured on its fitting sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TailComparison {
    /// The choice the model made.
    pub chosen: Tail,
    /// Sample skewness of the values the mixture is fitted on (before the transform),
    /// which the inference compares with `log_tail_min_skewness`.
    pub skewness: f64,
    /// Without a transform.
    pub none: ClipStats,
    /// With the log transform.
    pub log: ClipStats,
}

/// Transform `sample` with `column` alone (seeded by `seed`) and decode it back: how many
/// rows were clipped and how much of the sum was lost.
///
/// # Errors
/// [`ModelError`] when the sample does not suit the column (as [`crate::Model::transform`]).
pub fn clip_stats(column: &crate::ColumnModel, sample: &dyn Array, seed: u64) -> Result<ClipStats, ModelError> {
    let model = crate::Model::new("", vec![column.clone()]);
    let batch =
        arrow_array::RecordBatch::try_new(model.input_schema(), vec![arrow_array::make_array(sample.to_data())])
            .map_err(|e| ModelError::Invalid(format!("column `{}`: {e}", column.name)))?;
    let encoded = model.transform(&batch, seed)?;
    let decoded = model.inverse(&encoded)?;
    let (input, _) = crate::numeric::read(&column.name, sample)?;
    let (output, _) = crate::numeric::read(&column.name, decoded.column(0).as_ref())?;
    let alpha = crate::numeric::read(&column.name, crate::column(&encoded, &column.alpha_name())?.as_ref())?.0;
    let mut stats = ClipStats::default();
    let (mut sum_in, mut sum_out) = (0.0, 0.0);
    for i in 0..input.len() {
        if input.is_null(i) || output.is_null(i) || !input.value(i).is_finite() {
            continue;
        }
        stats.rows += 1;
        stats.clipped += u64::from(alpha.is_valid(i) && alpha.value(i).abs() >= crate::ALPHA_CLIP);
        sum_in += input.value(i);
        sum_out += output.value(i);
    }
    stats.clipped_share = if stats.rows > 0 { stats.clipped as f64 / stats.rows as f64 } else { 0.0 };
    stats.sum_lost = if sum_in != 0.0 { (sum_in - sum_out).abs() / sum_in.abs() } else { 0.0 };
    Ok(stats)
}
