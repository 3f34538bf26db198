//! The transform model: mode-specific normalization, as GAN tabular synthesizers
//! (CTGAN, CTAB-GAN) train on. Per continuous column a variational Gaussian mixture is
//! fitted; rows are encoded as a scaled offset (`alpha`) from a sampled component plus a
//! one-hot of that component, and decoded back.
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

mod estep;
mod gmm;
mod kmeans;
mod lanes;
mod transform;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, UInt8Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use gmm::{Mixture, MixtureParams, ValidMixtureParams, fit, fit_from_labels, fit_streaming, fit_warm_start};
pub use kmeans::kmeans_labels;
pub use transform::{ALPHA_CLIP, Normalized, OneHot, denormalize, normalize};

/// The `model.json` format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

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
    #[error("the fitting sample holds a non-finite value ({0}); drop NaN and infinities first")]
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
        "model.json has format version {found}, this build reads version {FORMAT_VERSION}; \
         refit with `producer fit` to write a current model"
    )]
    Version {
        /// The version in the file.
        found: u64,
    },
    /// `model.json` is not valid JSON of the expected shape.
    #[error("model.json is not a valid model: {0}")]
    Parse(#[from] serde_json::Error),
    /// The stored id does not match the content.
    #[error(
        "model id {stored} does not match its content (hash {computed}); the file was changed after fitting: refit"
    )]
    IdMismatch {
        /// The id in the file.
        stored: String,
        /// The hash of the content.
        computed: String,
    },
}

/// How a column is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numeric: Gaussian mixture, alpha plus one-hot.
    Continuous,
}

/// The fitted encoding of one column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnModel {
    /// Column name in the input.
    pub name: String,
    /// How it is encoded.
    pub kind: ColumnKind,
    /// The fitted mixture.
    pub mixture: Mixture,
    /// The mixture components behind the one-hot columns, in output order.
    pub one_hot: Vec<usize>,
}

impl ColumnModel {
    /// A continuous column encoded with `mixture`.
    pub fn continuous(name: impl Into<String>, mixture: Mixture) -> Self {
        let one_hot = mixture.valid_components();
        Self { name: name.into(), kind: ColumnKind::Continuous, mixture, one_hot }
    }

    /// Name of the alpha column in the transformed output.
    pub fn alpha_name(&self) -> String {
        format!("{}.normalized", self.name)
    }

    /// Names of the one-hot columns in the transformed output.
    pub fn one_hot_names(&self) -> Vec<String> {
        self.one_hot.iter().map(|k| format!("{}.component_{k}", self.name)).collect()
    }
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

    /// Parse `model.json`, checking its format version and content hash.
    ///
    /// # Errors
    /// [`ModelError::Version`] for another format version, [`ModelError::Parse`] for
    /// malformed JSON, [`ModelError::IdMismatch`] when the content was edited.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let version = value.get("format_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if version != u64::from(FORMAT_VERSION) {
            return Err(ModelError::Version { found: version });
        }
        let model: Self = serde_json::from_value(value)?;
        let computed = model.content_hash();
        if computed != model.model_id {
            return Err(ModelError::IdMismatch { stored: model.model_id, computed });
        }
        Ok(model)
    }

    /// Schema of the input the model reads (and the inverse writes).
    pub fn input_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|c| Field::new(&c.name, DataType::Float64, true)).collect::<Vec<_>>(),
        ))
    }

    /// Schema of the transformed output.
    pub fn transformed_schema(&self) -> SchemaRef {
        let mut fields = Vec::new();
        for c in &self.columns {
            fields.push(Field::new(c.alpha_name(), DataType::Float64, true));
            fields.extend(c.one_hot_names().into_iter().map(|n| Field::new(n, DataType::UInt8, true)));
        }
        Arc::new(Schema::new(fields))
    }

    /// Encode `batch`; component draws come from `seed` (see [`chunk_seed`]).
    ///
    /// # Errors
    /// [`ModelError::MissingColumn`] or [`ModelError::ColumnType`] when the batch does
    /// not carry the model's columns as Float64.
    pub fn transform(&self, batch: &RecordBatch, seed: u64) -> Result<RecordBatch, ModelError> {
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, c) in self.columns.iter().enumerate() {
            let x = float_column(batch, &c.name)?;
            let out = normalize(&c.mixture, x, seed.wrapping_add(i as u64));
            arrays.push(Arc::new(out.alpha));
            arrays.extend(out.one_hot.into_iter().map(|a| Arc::new(a) as ArrayRef));
        }
        Ok(RecordBatch::try_new(self.transformed_schema(), arrays).expect("arrays match the transformed schema"))
    }

    /// Decode a transformed batch back to the input columns.
    ///
    /// # Errors
    /// [`ModelError::MissingColumn`] or [`ModelError::ColumnType`] when the batch is not
    /// shaped like [`Model::transformed_schema`].
    pub fn inverse(&self, batch: &RecordBatch) -> Result<RecordBatch, ModelError> {
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for c in &self.columns {
            let alpha = float_column(batch, &c.alpha_name())?;
            let one_hot =
                c.one_hot_names().iter().map(|name| one_hot_column(batch, name)).collect::<Result<Vec<_>, _>>()?;
            arrays.push(Arc::new(denormalize(&c.mixture, alpha, &one_hot)));
        }
        Ok(RecordBatch::try_new(self.input_schema(), arrays).expect("arrays match the input schema"))
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ModelError> {
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
