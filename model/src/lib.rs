//! The transform model: mode-specific normalization, as GAN tabular synthesizers
//! (CTGAN, CTAB-GAN) train on. Per continuous column a variational Gaussian mixture is
//! fitted; rows are encoded as a scaled offset (`alpha`) from a sampled component plus a
//! one-hot of that component, and decoded back. Categorical columns are one-hot over their
//! categories; mixed columns (continuous with modal values such as 0 or null) give each
//! modal value a slot of its own, as CTAB-GAN does. [`fit_column`] picks a column's kind
//! from the configuration or infers it.
//!
//! Pure computation on Arrow arrays: no files, no network, no async runtime.
//!
//! ```
//! use shardflow_model::{fit, MixtureParams, Model, ColumnModel};
//! use arrow_array::{Float64Array, RecordBatch};
//! use std::sync::Arc;
//!
//! let sample: Vec<f64> = (0..1000).map(|i| (i % 7) as f64 * 10.0).collect();
//! let params = MixtureParams::default().check().unwrap();
//! let model = Model::new("Amount", vec![ColumnModel::continuous("Amount", fit(&sample, &params).unwrap())]);
//! let batch = RecordBatch::try_from_iter([("Amount", Arc::new(Float64Array::from(vec![3.0, 42.0])) as _)]).unwrap();
//! let encoded = model.transform(&batch, 7).unwrap();
//! let decoded = model.inverse(&encoded).unwrap();
//! assert_eq!(decoded.num_rows(), 2);
//! ```
#![warn(missing_docs)]

mod binned;
mod categorical;
mod column;
mod estep;
mod gmm;
mod infer;
mod kmeans;
mod lanes;
mod mixed;
mod numeric;
mod onehot;
mod tail;
mod transform;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, UInt8Array};
use arrow_schema::{DataType, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use binned::{Histogram, KEY_BITS, MANTISSA_BITS, Point};
pub use categorical::fit_categories;
pub use column::{ColumnKind, ColumnModel, KindSource};
pub use gmm::{
    FitStrategy, Mixture, MixtureParams, ValidMixtureParams, fit, fit_from_labels, fit_histogram, fit_parts,
    fit_streaming, fit_warm_start,
};
pub use infer::{ColumnSpec, InferenceParams, Inferred, compare_tails, fit_column, fit_column_in_parts, infer_kind};
pub use kmeans::kmeans_labels;
pub use tail::{ClipStats, Tail, TailComparison, TailTransform, clip_stats};
pub use transform::{ALPHA_CLIP, Normalized, OneHot, denormalize, normalize};

/// The `model.json` format this build writes.
///
/// Version 2 added categorical and mixed columns, `kind_source`, and null slots; a
/// version-1 file (continuous columns only) reads unchanged, keeping its id.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest `model.json` format this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// What can go wrong fitting, loading or applying a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A hyper-parameter is out of range.
    #[error("invalid mixture parameters: {0}")]
    InvalidParams(String),
    /// Nothing to fit on.
    #[error("cannot fit a mixture on an empty sample")]
    EmptySample,
    /// NaN or infinity in a fitting sample.
    #[error("the fitting sample holds a non-finite value ({0})")]
    NonFinite(f64),
    /// The batch lacks a column the model needs.
    #[error("batch has no column `{column}` (columns: {available})")]
    MissingColumn {
        /// The column looked for.
        column: String,
        /// The columns the batch has, comma separated.
        available: String,
    },
    /// A column has a type the model cannot read.
    #[error("column `{column}` is {found}, expected {expected}")]
    ColumnType {
        /// The column.
        column: String,
        /// Its type.
        found: DataType,
        /// What the model reads.
        expected: &'static str,
    },
    /// `model.json` written by a newer or older, incompatible build.
    #[error(
        "model.json has format version {found}, this build reads versions {OLDEST_FORMAT_VERSION} to \
         {FORMAT_VERSION}"
    )]
    Version {
        /// The version in the file.
        found: u64,
    },
    /// `model.json` is not valid JSON of the expected shape.
    #[error("model.json is not a valid model: {0}")]
    Parse(#[from] serde_json::Error),
    /// A categorical column has more distinct values than allowed.
    #[error("column `{column}` has more than {max} distinct values")]
    TooManyCategories {
        /// The column.
        column: String,
        /// The limit.
        max: usize,
    },
    /// A numeric column has no finite value to fit a mixture on.
    #[error("column `{0}` has no finite value to fit on")]
    NoValues(String),
    /// A column configured as mixed has no value frequent enough to be a mode.
    #[error("column `{0}` is mixed, but no value holds the minimum share of its rows that makes a mode")]
    NoModes(String),
    /// A model whose columns lack what their kind needs.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// The stored id does not match the content.
    #[error("model id {stored} does not match its content (hash {computed}): the file was changed after fitting")]
    IdMismatch {
        /// The id in the file.
        stored: String,
        /// The hash of the content.
        computed: String,
    },
}

/// A fitted model over the columns of one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// Content hash: the first 16 hex digits of SHA-256 over the model with an empty id.
    pub model_id: String,
    /// Dataset the model was fitted on.
    pub dataset: String,
    /// One entry per encoded column.
    pub columns: Vec<ColumnModel>,
}

impl Model {
    /// A model over `columns`, its id computed from its content.
    pub fn new(dataset: impl Into<String>, columns: Vec<ColumnModel>) -> Self {
        let mut model =
            Self { format_version: FORMAT_VERSION, model_id: String::new(), dataset: dataset.into(), columns };
        model.model_id = model.content_hash();
        model
    }

    fn content_hash(&self) -> String {
        let unsigned = Self { model_id: String::new(), ..self.clone() };
        let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
        Sha256::digest(&bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Pretty JSON, as written to `model.json`.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse `model.json`, checking its format version, content hash and columns.
    ///
    /// A format-1 file loads as it is (its continuous columns are a subset of format 2)
    /// and keeps its id, so chunks it encodes keep their bytes.
    ///
    /// # Errors
    /// [`ModelError::Version`] for a format this build does not read,
    /// [`ModelError::Parse`] for malformed JSON, [`ModelError::IdMismatch`] when the
    /// content was edited, [`ModelError::Invalid`] when a column lacks what its kind needs.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let version = value.get("format_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if !(u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
            return Err(ModelError::Version { found: version });
        }
        let model: Self = serde_json::from_value(value)?;
        let computed = model.content_hash();
        if computed != model.model_id {
            return Err(ModelError::IdMismatch { stored: model.model_id, computed });
        }
        model.check()?;
        Ok(model)
    }

    /// Check every column (see [`ColumnModel::check`]) and that names are unique.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] naming the first column at fault.
    pub fn check(&self) -> Result<(), ModelError> {
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            c.check()?;
            if !seen.insert(c.name.as_str()) {
                return Err(ModelError::Invalid(format!("column `{}` appears twice", c.name)));
            }
        }
        Ok(())
    }

    /// Schema of the input the model reads (and the inverse writes).
    pub fn input_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.columns.iter().map(ColumnModel::input_field).collect::<Vec<_>>()))
    }

    /// Schema of the transformed output: per column, in order, alpha, modal slots and
    /// components (continuous, mixed), or one slot per category (categorical).
    pub fn transformed_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.columns.iter().flat_map(ColumnModel::output_fields).collect::<Vec<_>>()))
    }

    /// Encode `batch`; component draws come from `seed` (see [`chunk_seed`]). Values of
    /// categorical columns that the fit never saw become all-zero rows; values of numeric
    /// columns that are not numbers (text such as "abc") are encoded as null; see
    /// [`Model::transform_with_report`] for how many.
    ///
    /// Continuous and mixed columns read any type that casts to Float64: numbers, dates
    /// and timestamps (their epoch count), booleans, text.
    ///
    /// # Errors
    /// [`ModelError::MissingColumn`] when the batch lacks a model column,
    /// [`ModelError::ColumnType`] when a column's type cannot be read at all (a list in a
    /// numeric column). Values never fail the batch.
    pub fn transform(&self, batch: &RecordBatch, seed: u64) -> Result<RecordBatch, ModelError> {
        self.transform_with_report(batch, seed).map(|(batch, _)| batch)
    }

    /// [`Model::transform`], also counting the rows whose category was not seen at fit and
    /// the values of numeric columns that could not be read as numbers.
    ///
    /// # Errors
    /// As [`Model::transform`].
    pub fn transform_with_report(
        &self,
        batch: &RecordBatch,
        seed: u64,
    ) -> Result<(RecordBatch, TransformReport), ModelError> {
        let mut arrays: Vec<ArrayRef> = Vec::new();
        let mut report = TransformReport::default();
        for (i, c) in self.columns.iter().enumerate() {
            match c.kind {
                ColumnKind::Continuous | ColumnKind::Mixed => {
                    let (x, invalid) = numeric::read(&c.name, column(batch, &c.name)?.as_ref())?;
                    if invalid > 0 {
                        report.invalid.push((c.name.clone(), invalid));
                    }
                    let (out, clamped) =
                        mixed::encode(c.mixture()?, &c.modes, c.tail.as_ref(), &x, seed.wrapping_add(i as u64));
                    if clamped > 0 {
                        report.clamped.push((c.name.clone(), clamped));
                    }
                    arrays.push(Arc::new(out.alpha));
                    arrays.extend(out.modes.into_iter().chain(out.components).map(|a| Arc::new(a) as ArrayRef));
                }
                ColumnKind::Categorical => {
                    let (slots, unseen) = categorical::encode(&c.name, &c.categories, column(batch, &c.name)?)?;
                    if unseen > 0 {
                        report.unseen.push((c.name.clone(), unseen));
                    }
                    arrays.extend(slots.into_iter().map(|a| Arc::new(a) as ArrayRef));
                }
            }
        }
        let out = RecordBatch::try_new(self.transformed_schema(), arrays)
            .map_err(|e| ModelError::Invalid(format!("transformed columns do not match the model: {e}")))?;
        Ok((out, report))
    }

    /// Decode a transformed batch back to the input columns, of exactly
    /// [`Model::input_schema`]: integers, dates and timestamps rounded to the nearest
    /// count (null where outside the type's range), timestamps in their unit and time zone.
    ///
    /// # Errors
    /// [`ModelError::MissingColumn`] or [`ModelError::ColumnType`] when the batch is not
    /// shaped like [`Model::transformed_schema`].
    pub fn inverse(&self, batch: &RecordBatch) -> Result<RecordBatch, ModelError> {
        let block = |names: Vec<String>| names.iter().map(|n| one_hot_column(batch, n)).collect::<Result<Vec<_>, _>>();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for c in &self.columns {
            match c.kind {
                ColumnKind::Continuous | ColumnKind::Mixed => {
                    let alpha = float_column(batch, &c.alpha_name())?;
                    let modes = block(c.mode_names())?;
                    let components = block(c.one_hot_names())?;
                    let values = mixed::decode(c.mixture()?, &c.modes, c.tail.as_ref(), alpha, &modes, &components);
                    arrays.push(numeric::write(&c.name, values, c.data_type.as_ref())?);
                }
                ColumnKind::Categorical => {
                    let data_type = c.data_type.clone().unwrap_or(DataType::Utf8);
                    let slots = block(c.category_names())?;
                    arrays.push(categorical::decode(&c.name, &c.categories, &data_type, &slots, batch.num_rows())?);
                }
            }
        }
        RecordBatch::try_new(self.input_schema(), arrays)
            .map_err(|e| ModelError::Invalid(format!("decoded columns do not match the model: {e}")))
    }
}

/// What a transform noticed beyond its output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransformReport {
    /// Per categorical column with values the fit never saw: the column and how many rows
    /// (encoded as all-zero rows, decoded as null).
    pub unseen: Vec<(String, u64)>,
    /// Per continuous or mixed column with values that are not numbers (text such as
    /// "abc" in a number column): the column and how many rows (encoded as null: the null
    /// slot where the column has one, else a null row).
    pub invalid: Vec<(String, u64)>,
    /// Per column with a log tail: the column and how many values were below the fit's
    /// smallest value (`lower`), read as `lower` (they come back as `lower`).
    pub clamped: Vec<(String, u64)>,
}

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ModelError> {
    batch.column_by_name(name).ok_or_else(|| ModelError::MissingColumn {
        column: name.to_string(),
        available: batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
    })
}

fn float_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float64Array, ModelError> {
    let array = column(batch, name)?;
    array.as_any().downcast_ref::<Float64Array>().ok_or_else(|| ModelError::ColumnType {
        column: name.to_string(),
        found: array.data_type().clone(),
        expected: "Float64",
    })
}

fn one_hot_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<OneHot<'a>, ModelError> {
    let array = column(batch, name)?;
    if let Some(a) = array.as_any().downcast_ref::<UInt8Array>() {
        return Ok(OneHot::U8(a));
    }
    if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
        return Ok(OneHot::F64(a));
    }
    Err(ModelError::ColumnType {
        column: name.to_string(),
        found: array.data_type().clone(),
        expected: "UInt8 or Float64",
    })
}

/// The seed of a chunk's component draws, derived from (model, job, chunk) so that a
/// redelivered chunk is encoded to the same bytes.
pub fn chunk_seed(model_id: &str, job_id: &str, chunk: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(model_id.as_bytes());
    h.update([0]);
    h.update(job_id.as_bytes());
    h.update([0]);
    h.update(chunk.to_le_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests;
