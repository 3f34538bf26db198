//! The fitted encoding of one column, and the output columns it produces.

use arrow_array::Array;
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::binned::Histogram;
use crate::gmm::Mixture;
use crate::tail::TailTransform;

/// How a column is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numeric: Gaussian mixture, alpha plus one-hot; nulls seen at fit get a slot.
    Continuous,
    /// Discrete values: one-hot over the categories in first-seen order, null included.
    Categorical,
    /// Numeric with modal values (such as 0 or null), each with its own one-hot slot, as
    /// CTAB-GAN encodes them; the other values as continuous.
    Mixed,
}

impl std::fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Continuous => "continuous",
            Self::Categorical => "categorical",
            Self::Mixed => "mixed",
        })
    }
}

/// Where a column's kind came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindSource {
    /// Named in the dataset configuration (`fit.kinds`, `fit.modes`).
    Config,
    /// Inferred from the fitting sample.
    Inferred,
}

impl std::fmt::Display for KindSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Inferred => "inferred",
        })
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The fitted encoding of one column.
///
/// One flat record for every kind, so that a format-1 file (continuous columns with
/// `name`, `kind`, `mixture`, `one_hot`) reads unchanged and hashes to the same id: the
/// fields added since are left out when empty. [`crate::Model::from_json`] checks that
/// each column has what its kind needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnModel {
    /// Column name in the input.
    pub name: String,
    /// How it is encoded.
    pub kind: ColumnKind,
    /// Continuous and mixed: the fitted mixture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<Mixture>,
    /// Continuous and mixed: the mixture components behind the component one-hot columns,
    /// in output order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_hot: Vec<usize>,
    /// Whether the kind was given or inferred (absent in format-1 files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_source: Option<KindSource>,
    /// Continuous and mixed: values with a one-hot slot of their own, in output order;
    /// `null` is the null slot. A continuous column has at most the null slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<Option<f64>>,
    /// Categorical: the categories in first-seen order; `null` is the null category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<Option<String>>,
    /// The input's Arrow type, which the inverse gives back; left out for a continuous or
    /// mixed column read as Float64 (the default there).
    #[serde(default, skip_serializing_if = "is_default")]
    pub data_type: Option<DataType>,
    /// Continuous and mixed: the transform the values go through before the mixture (a
    /// log for long tails); absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailTransform>,
}

impl ColumnModel {
    /// A continuous column encoded with `mixture`; its kind counts as inferred (see
    /// [`ColumnModel::with_source`]).
    pub fn continuous(name: impl Into<String>, mixture: Mixture) -> Self {
        let one_hot = mixture.valid_components();
        Self {
            name: name.into(),
            kind: ColumnKind::Continuous,
            mixture: Some(mixture),
            one_hot,
            kind_source: Some(KindSource::Inferred),
            modes: Vec::new(),
            categories: Vec::new(),
            data_type: None,
            tail: None,
        }
    }

    /// A mixed column: `modes` (null for the null mode) ahead of `mixture`'s components.
    pub fn mixed(name: impl Into<String>, mixture: Mixture, modes: Vec<Option<f64>>) -> Self {
        Self { kind: ColumnKind::Mixed, modes, ..Self::continuous(name, mixture) }
    }

    /// A categorical column over `categories` (first-seen order, `None` for null), whose
    /// input is of `data_type`.
    pub fn categorical(name: impl Into<String>, categories: Vec<Option<String>>, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            kind: ColumnKind::Categorical,
            mixture: None,
            one_hot: Vec::new(),
            kind_source: Some(KindSource::Inferred),
            modes: Vec::new(),
            categories,
            data_type: Some(data_type),
            tail: None,
        }
    }

    /// The same column with its kind's source set.
    #[must_use]
    pub fn with_source(self, source: KindSource) -> Self {
        Self { kind_source: Some(source), ..self }
    }

    /// The same column with `modes` as its modal slots (for a continuous column: `[None]`,
    /// the null slot, or nothing).
    #[must_use]
    pub fn with_modes(self, modes: Vec<Option<f64>>) -> Self {
        Self { modes, ..self }
    }

    /// The same column reading (and giving back) `data_type`; `None` is Float64 for a
    /// continuous or mixed column.
    #[must_use]
    pub fn with_data_type(self, data_type: Option<DataType>) -> Self {
        Self { data_type, ..self }
    }

    /// The same column with `tail` applied before its mixture.
    #[must_use]
    pub fn with_tail(self, tail: Option<TailTransform>) -> Self {
        Self { tail, ..self }
    }

    /// The same column encoded with `mixture` (its valid components as the one-hot).
    #[must_use]
    pub fn with_mixture(self, mixture: Mixture) -> Self {
        Self { one_hot: mixture.valid_components(), mixture: Some(mixture), ..self }
    }

    /// Add the values of `values` that this column's mixture models to `histogram`, in the
    /// mixture's space: finite values, modal values left out, through the tail transform
    /// (what a fit of this column on `values` would see). Categorical columns add nothing.
    ///
    /// # Errors
    /// [`ModelError::ColumnType`] unless `values` are numbers, dates or timestamps.
    pub fn add_to_histogram(&self, values: &dyn Array, histogram: &mut Histogram) -> Result<(), ModelError> {
        if self.kind == ColumnKind::Categorical {
            return Ok(());
        }
        let floats = crate::numeric::fit_values(&self.name, values)?;
        let modes: Vec<f64> = self.modes.iter().flatten().copied().collect();
        let mut add = |v: f64| {
            if v.is_finite() && !modes.contains(&v) {
                histogram.add(self.tail.map_or(v, |t| t.forward(v).0));
            }
        };
        if floats.null_count() == 0 {
            floats.values().iter().for_each(|&v| add(v));
        } else {
            floats.iter().flatten().for_each(add);
        }
        Ok(())
    }

    /// The mixture of a continuous or mixed column.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] for a categorical column or a column without one.
    pub fn mixture(&self) -> Result<&Mixture, ModelError> {
        self.mixture.as_ref().ok_or_else(|| self.invalid("has no mixture"))
    }

    fn invalid(&self, what: &str) -> ModelError {
        ModelError::Invalid(format!("column `{}` ({}) {what}", self.name, self.kind))
    }

    /// Check that the column has what its kind needs.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] saying what is missing or out of place.
    pub fn check(&self) -> Result<(), ModelError> {
        match self.kind {
            ColumnKind::Continuous | ColumnKind::Mixed => {
                let mixture = self.mixture()?;
                if self.one_hot.is_empty() || self.one_hot.iter().any(|&k| k >= mixture.weights.len()) {
                    return Err(self.invalid("has one-hot components that are not in its mixture"));
                }
                if self.kind == ColumnKind::Continuous && self.modes.iter().any(Option::is_some) {
                    return Err(self.invalid("has modal values: only a mixed column has them"));
                }
                if self.kind == ColumnKind::Mixed && self.modes.is_empty() {
                    return Err(self.invalid("has no modes"));
                }
                if !self.categories.is_empty() {
                    return Err(self.invalid("has categories"));
                }
                if matches!(self.tail, Some(TailTransform::Log { lower }) if !lower.is_finite()) {
                    return Err(self.invalid("has a log tail whose lower bound is not finite"));
                }
            }
            ColumnKind::Categorical => {
                if self.categories.is_empty() || self.data_type.is_none() {
                    return Err(self.invalid("needs categories and a data_type"));
                }
                if self.mixture.is_some() || !self.modes.is_empty() || self.tail.is_some() {
                    return Err(self.invalid("has a mixture, modes or a tail"));
                }
            }
        }
        Ok(())
    }

    /// Name of the alpha column in the transformed output (continuous and mixed).
    pub fn alpha_name(&self) -> String {
        format!("{}.normalized", self.name)
    }

    /// Names of the modal one-hot columns: `<name>.mode_<i>` for a value, `<name>.null`
    /// for null.
    pub fn mode_names(&self) -> Vec<String> {
        self.modes
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Some(_) => format!("{}.mode_{i}", self.name),
                None => format!("{}.null", self.name),
            })
            .collect()
    }

    /// Names of the component one-hot columns in the transformed output.
    pub fn one_hot_names(&self) -> Vec<String> {
        self.one_hot.iter().map(|k| format!("{}.component_{k}", self.name)).collect()
    }

    /// Names of the category one-hot columns: `<name>.category_<i>`.
    pub fn category_names(&self) -> Vec<String> {
        (0..self.categories.len()).map(|i| format!("{}.category_{i}", self.name)).collect()
    }

    /// The input field, of the fitted type: Float64 when a numeric kind records none.
    pub fn input_field(&self) -> Field {
        let data_type = match self.kind {
            ColumnKind::Categorical => self.data_type.clone().unwrap_or(DataType::Utf8),
            ColumnKind::Continuous | ColumnKind::Mixed => self.data_type.clone().unwrap_or(DataType::Float64),
        };
        Field::new(&self.name, data_type, true)
    }

    /// The transformed output's fields for this column, in order: alpha, modes,
    /// components; or the categories.
    pub fn output_fields(&self) -> Vec<Field> {
        let flag = |name: String| Field::new(name, DataType::UInt8, true);
        match self.kind {
            ColumnKind::Categorical => self.category_names().into_iter().map(flag).collect(),
            ColumnKind::Continuous | ColumnKind::Mixed => {
                std::iter::once(Field::new(self.alpha_name(), DataType::Float64, true))
                    .chain(self.mode_names().into_iter().map(flag))
                    .chain(self.one_hot_names().into_iter().map(flag))
                    .collect()
            }
        }
    }
}
