//! Categorical columns: a one-hot over the categories in first-seen order, null being a
//! category of its own. A value the fit never saw is encoded as an all-zero row, counted,
//! and decoded as null; it never fails the batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray, UInt8Array};
use arrow_schema::DataType;

use crate::ModelError;
use crate::onehot::{argmax, one_hot_columns};
use crate::transform::OneHot;

/// `array` as strings (the form categories are kept in), or why it cannot be.
fn as_strings(column: &str, array: &dyn Array) -> Result<StringArray, ModelError> {
    let type_error = || ModelError::ColumnType {
        column: column.to_string(),
        found: array.data_type().clone(),
        expected: "castable to Utf8",
    };
    let cast = arrow_cast::cast(array, &DataType::Utf8).map_err(|_| type_error())?;
    cast.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(type_error)
}

/// The categories of `sample` in first-seen order, null included where it occurs.
///
/// # Errors
/// [`ModelError::ColumnType`] when the column cannot be read as text,
/// [`ModelError::TooManyCategories`] when it holds more than `max` distinct values.
pub fn fit_categories(column: &str, sample: &dyn Array, max: usize) -> Result<Vec<Option<String>>, ModelError> {
    let strings = as_strings(column, sample)?;
    let mut seen: HashSet<Option<&str>> = HashSet::new();
    let mut categories = Vec::new();
    for value in strings.iter() {
        if seen.insert(value) {
            if categories.len() == max {
                return Err(ModelError::TooManyCategories { column: column.to_string(), max });
            }
            categories.push(value.map(str::to_string));
        }
    }
    if categories.is_empty() {
        return Err(ModelError::EmptySample);
    }
    Ok(categories)
}

/// Encode `x` as one UInt8 column per category; rows whose value is not a category are
/// all zero. Returns the columns and how many rows were unseen.
///
/// # Errors
/// [`ModelError::ColumnType`] when `x` cannot be read as text.
pub(crate) fn encode(
    column: &str,
    categories: &[Option<String>],
    x: &dyn Array,
) -> Result<(Vec<UInt8Array>, u64), ModelError> {
    let strings = as_strings(column, x)?;
    let index: HashMap<Option<&str>, usize> = categories.iter().enumerate().map(|(j, c)| (c.as_deref(), j)).collect();
    let hot: Vec<Option<usize>> = strings.iter().map(|v| index.get(&v).copied()).collect();
    let unseen = hot.iter().filter(|h| h.is_none()).count() as u64;
    Ok((one_hot_columns(&hot, categories.len()), unseen))
}

/// Decode one-hot columns back to values of `data_type`: the hottest category of each
/// row (the first on ties); an all-zero row (an unseen value) decodes to null.
///
/// # Errors
/// [`ModelError::ColumnType`] when the strings cannot be cast back to `data_type`.
pub(crate) fn decode(
    column: &str,
    categories: &[Option<String>],
    data_type: &DataType,
    block: &[OneHot<'_>],
    n: usize,
) -> Result<ArrayRef, ModelError> {
    let (best, value) = argmax(block, n);
    let strings: StringArray = best
        .iter()
        .zip(&value)
        .map(|(&j, &v)| if v > 0.0 { categories.get(j).and_then(Option::as_deref) } else { None })
        .collect();
    if data_type == &DataType::Utf8 {
        return Ok(Arc::new(strings));
    }
    arrow_cast::cast(&strings, data_type).map_err(|_| ModelError::ColumnType {
        column: column.to_string(),
        found: DataType::Utf8,
        expected: "categories castable back to the fitted type",
    })
}
