//! Choosing a column's kind (given, or inferred from a sample) and fitting its encoding.

use arrow_array::Array;
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::categorical::fit_categories;
use crate::gmm::{FitStrategy, ValidMixtureParams, fit_parts};
use crate::tail::{Tail, TailComparison, choose as choose_tail, clip_stats};
use crate::{ColumnKind, ColumnModel, KindSource, ModelError};

/// How column kinds are inferred from a sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceParams {
    /// A numeric column with at most this many distinct values, each seen 10 times on
    /// average, is categorical.
    pub categorical_max_distinct: usize,
    /// A numeric value holding at least this share of a column's non-null values makes
    /// the column mixed, with that value as a mode.
    pub mode_min_share: f64,
    /// Modes inferred per mixed column at most (the most frequent first).
    pub max_modes: usize,
    /// Categories a categorical column may have; more is an error (drop the column, or
    /// raise this).
    pub max_categories: usize,
    /// A continuous or mixed column (not a date or timestamp) whose non-modal values are
    /// all at least 0 and have a sample skewness of at least this gets the log tail
    /// transform (CTAB-GAN's long-tail treatment), unless `fit.tails` says otherwise.
    pub log_tail_min_skewness: f64,
}

impl Default for InferenceParams {
    fn default() -> Self {
        Self {
            categorical_max_distinct: 10,
            mode_min_share: 0.1,
            max_modes: 3,
            max_categories: 1000,
            log_tail_min_skewness: LOG_TAIL_MIN_SKEWNESS,
        }
    }
}

/// The default [`InferenceParams::log_tail_min_skewness`].
const LOG_TAIL_MIN_SKEWNESS: f64 = 10.0;

impl InferenceParams {
    /// Check the values.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming the value out of range.
    pub fn check(&self) -> Result<(), ModelError> {
        if !(self.mode_min_share > 0.0 && self.mode_min_share <= 1.0) {
            return Err(ModelError::InvalidParams("mode_min_share must be in (0, 1]".into()));
        }
        if self.log_tail_min_skewness.is_nan() {
            return Err(ModelError::InvalidParams("log_tail_min_skewness must be a number (inf: never)".into()));
        }
        if self.max_categories == 0 {
            return Err(ModelError::InvalidParams("max_categories must be at least 1".into()));
        }
        Ok(())
    }
}

/// What the dataset configuration says about one column; anything left `None` is inferred.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColumnSpec {
    /// The kind, when the configuration gives it.
    pub kind: Option<ColumnKind>,
    /// The modal values of a mixed column, when the configuration gives them (giving modes
    /// implies `mixed`).
    pub modes: Option<Vec<f64>>,
    /// The tail transform of a continuous or mixed column, when the configuration gives it.
    pub tail: Option<Tail>,
}

/// A kind with the modal values it needs (for mixed columns, without null).
#[derive(Clone, Debug, PartialEq)]
pub struct Inferred {
    /// The kind.
    pub kind: ColumnKind,
    /// Modal values, most frequent first; empty unless mixed.
    pub modes: Vec<f64>,
}

fn is_text_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Dictionary(..)
            | DataType::Binary
            | DataType::LargeBinary
    )
}

/// The finite values of a numeric sample (nulls and NaN/infinity left out); dates and
/// timestamps as their epoch counts.
fn finite_values(column: &str, sample: &dyn Array) -> Result<Vec<f64>, ModelError> {
    Ok(crate::numeric::fit_values(column, sample)?.iter().flatten().filter(|v| v.is_finite()).collect())
}

/// Distinct values of `values` with their counts, most frequent first (ties: smaller
/// value first).
fn value_counts(values: &[f64]) -> Vec<(f64, usize)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for v in sorted {
        match counts.last_mut() {
            // 0.0 and -0.0 are one value, as the transform compares them.
            Some((last, n)) if *last == v => *n += 1,
            _ => counts.push((v, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.total_cmp(&b.0)));
    counts
}

/// Infer a column's kind from a sample: text, booleans and dictionaries are categorical;
/// a number column (not a date or timestamp) with few distinct values, each repeated, is
/// categorical; one with a
/// value holding at least [`InferenceParams::mode_min_share`] of its rows is mixed; any
/// other is continuous.
///
/// # Errors
/// [`ModelError::ColumnType`] for a column that is neither text-like nor numeric.
pub fn infer_kind(column: &str, sample: &dyn Array, params: &InferenceParams) -> Result<Inferred, ModelError> {
    if is_text_like(sample.data_type()) {
        return Ok(Inferred { kind: ColumnKind::Categorical, modes: Vec::new() });
    }
    let values = finite_values(column, sample)?;
    let counts = value_counts(&values);
    // Dates and timestamps are points in time, never categories (a few repeated days are
    // still a date column).
    let temporal = crate::numeric::is_temporal(sample.data_type());
    if !temporal
        && !counts.is_empty()
        && counts.len() <= params.categorical_max_distinct
        && values.len() >= 10 * counts.len()
    {
        return Ok(Inferred { kind: ColumnKind::Categorical, modes: Vec::new() });
    }
    let modes = modes_of(&values, &counts, params);
    // A column that is nothing but its modes has nothing left to fit a mixture on.
    let modal: usize = counts.iter().take(modes.len()).map(|(_, n)| n).sum();
    if !modes.is_empty() && modal < values.len() {
        return Ok(Inferred { kind: ColumnKind::Mixed, modes });
    }
    Ok(Inferred { kind: ColumnKind::Continuous, modes: Vec::new() })
}

/// The values holding at least [`InferenceParams::mode_min_share`] of `values`, most
/// frequent first, [`InferenceParams::max_modes`] at most.
fn modes_of(values: &[f64], counts: &[(f64, usize)], params: &InferenceParams) -> Vec<f64> {
    let threshold = params.mode_min_share * values.len() as f64;
    counts.iter().take(params.max_modes).filter(|(_, n)| *n as f64 >= threshold).map(|(v, _)| *v).collect()
}

/// Fit one column's encoding on `sample`, its kind taken from `spec` or inferred.
///
/// Categorical: the categories in first-seen order. Continuous: a mixture over the finite
/// values, plus a null slot when the sample holds nulls. Mixed: the modes (given, or
/// inferred), plus null when the sample holds nulls, and a mixture over the other values.
///
/// # Errors
/// [`ModelError`] when the column's type does not suit its kind, it has no values to
/// fit, or it has too many categories.
pub fn fit_column(
    name: &str,
    sample: &dyn Array,
    spec: &ColumnSpec,
    inference: &InferenceParams,
    mixture: &ValidMixtureParams,
) -> Result<ColumnModel, ModelError> {
    fit_column_in_parts(name, sample, &[sample.len()], spec, inference, mixture, FitStrategy::Pooled)
}

/// As [`fit_column`], for a sample made of several shards' samples one after another
/// (`parts` holds their lengths, in order): the kind, modes and categories come from the
/// whole sample, the mixture from the parts combined by `strategy` (see [`fit_parts`]).
///
/// # Errors
/// As [`fit_column`].
pub fn fit_column_in_parts(
    name: &str,
    sample: &dyn Array,
    parts: &[usize],
    spec: &ColumnSpec,
    inference: &InferenceParams,
    mixture: &ValidMixtureParams,
    strategy: FitStrategy,
) -> Result<ColumnModel, ModelError> {
    // The finite values of every part, those equal to a mode left out.
    let part_values = |modes: &[f64]| -> Result<Vec<Vec<f64>>, ModelError> {
        let mut offset = 0;
        let mut values = Vec::with_capacity(parts.len());
        for &len in parts {
            let len = len.min(sample.len().saturating_sub(offset));
            let part = finite_values(name, sample.slice(offset, len).as_ref())?;
            values.push(part.into_iter().filter(|v| !modes.contains(v)).collect());
            offset += len;
        }
        Ok(values)
    };
    let (inferred, source) = match (spec.kind, &spec.modes) {
        (Some(ColumnKind::Mixed) | None, Some(modes)) => {
            (Inferred { kind: ColumnKind::Mixed, modes: modes.clone() }, KindSource::Config)
        }
        (Some(ColumnKind::Mixed), None) => {
            let values = finite_values(name, sample)?;
            let modes = modes_of(&values, &value_counts(&values), inference);
            if modes.is_empty() {
                return Err(ModelError::NoModes(name.to_string()));
            }
            (Inferred { kind: ColumnKind::Mixed, modes }, KindSource::Config)
        }
        (Some(kind), _) => (Inferred { kind, modes: Vec::new() }, KindSource::Config),
        (None, None) => (infer_kind(name, sample, inference)?, KindSource::Inferred),
    };
    let null_mode = (sample.null_count() > 0).then_some(None);
    // The input type the inverse gives back; Float64 is the default and left unrecorded,
    // so models of Float64 columns keep their files and ids.
    let data_type = Some(sample.data_type().clone()).filter(|t| *t != DataType::Float64);
    let temporal = crate::numeric::is_temporal(sample.data_type());
    // The tail from the values the mixture sees, then those values through it.
    let through_tail = |values: Vec<Vec<f64>>| {
        let slices: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
        let min_skewness = if temporal { f64::INFINITY } else { inference.log_tail_min_skewness };
        let tail = choose_tail(spec.tail, &slices, min_skewness);
        let values = match &tail {
            Some(t) => values.into_iter().map(|p| p.into_iter().map(|v| t.forward(v).0).collect()).collect(),
            None => values,
        };
        (values, tail)
    };
    let model = match inferred.kind {
        ColumnKind::Categorical => {
            let categories = fit_categories(name, sample, inference.max_categories)?;
            ColumnModel::categorical(name, categories, sample.data_type().clone())
        }
        ColumnKind::Continuous => {
            let (values, tail) = through_tail(part_values(&[])?);
            let mix = fit_parts(&values, strategy, mixture).map_err(|e| in_column(name, e))?;
            ColumnModel::continuous(name, mix)
                .with_modes(null_mode.into_iter().collect())
                .with_data_type(data_type)
                .with_tail(tail)
        }
        ColumnKind::Mixed => {
            let rest = part_values(&inferred.modes)?;
            // With only modal values left, fit on them: a degenerate mixture that no row uses.
            let (fit_on, tail) =
                if rest.iter().all(Vec::is_empty) { (part_values(&[])?, None) } else { through_tail(rest) };
            let mix = fit_parts(&fit_on, strategy, mixture).map_err(|e| in_column(name, e))?;
            let modes = inferred.modes.iter().map(|&m| Some(m)).chain(null_mode).collect();
            ColumnModel::mixed(name, mix, modes).with_data_type(data_type).with_tail(tail)
        }
    };
    Ok(model.with_source(source))
}

/// Both tail choices for a fitted continuous or mixed `column` (`None` for a categorical
/// one), measured on its fitting sample: the other choice is fitted on the same sample,
/// with the same kind and modes, and both are transformed and decoded (see [`clip_stats`]).
/// The arguments are those `column` was fitted with ([`fit_column_in_parts`]).
///
/// # Errors
/// As [`fit_column_in_parts`].
pub fn compare_tails(
    column: &ColumnModel,
    sample: &dyn Array,
    parts: &[usize],
    spec: &ColumnSpec,
    inference: &InferenceParams,
    mixture: &ValidMixtureParams,
    strategy: FitStrategy,
) -> Result<Option<TailComparison>, ModelError> {
    if column.kind == ColumnKind::Categorical {
        return Ok(None);
    }
    let chosen = column.tail.map_or(Tail::None, |t| t.tail());
    let other = if chosen == Tail::Log { Tail::None } else { Tail::Log };
    let modes: Vec<f64> = column.modes.iter().flatten().copied().collect();
    let spec = ColumnSpec {
        kind: Some(column.kind),
        modes: (!modes.is_empty()).then_some(modes).or_else(|| spec.modes.clone()),
        tail: Some(other),
    };
    let alternative = fit_column_in_parts(&column.name, sample, parts, &spec, inference, mixture, strategy)?;
    let seed = mixture.get().seed;
    let (mine, theirs) = (clip_stats(column, sample, seed)?, clip_stats(&alternative, sample, seed)?);
    let (none, log) = if chosen == Tail::Log { (theirs, mine) } else { (mine, theirs) };
    let values = finite_values(&column.name, sample)?;
    let skewness = crate::tail::skewness(values.iter().copied().filter(|v| !column.modes.contains(&Some(*v))));
    Ok(Some(TailComparison { chosen, skewness, none, log }))
}

fn in_column(column: &str, source: ModelError) -> ModelError {
    match source {
        ModelError::EmptySample => ModelError::NoValues(column.to_string()),
        other => other,
    }
}
