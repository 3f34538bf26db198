//! Numeric columns of any Arrow type, read as Float64 for the mixture and written back in
//! their own type.
//!
//! Integers and floats are read as their value; Date32, Date64 and Timestamp (any unit,
//! any time zone) as their epoch count (days, milliseconds, the unit's count), as RDT's
//! UnixTimestampEncoder does. A Float64 column is read as it is, without a copy. Values
//! beyond 2^53 (nanosecond timestamps of today are near 2^61) are read to the nearest f64,
//! so they come back to within its spacing (256 ns for a nanosecond timestamp of 2026).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, cast::AsArray, types::Float64Type};
use arrow_schema::DataType;

use crate::ModelError;

/// Whether a column of `data_type` is a number over its epoch count.
pub(crate) fn is_temporal(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
}

/// Whether a fit reads `data_type` as numbers.
pub(crate) fn is_number(data_type: &DataType) -> bool {
    data_type.is_numeric() || is_temporal(data_type)
}

/// The integer type a temporal type is counted in.
fn count_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Date32 => Some(DataType::Int32),
        DataType::Date64 | DataType::Timestamp(..) => Some(DataType::Int64),
        _ => None,
    }
}

fn type_error(column: &str, array: &dyn Array, expected: &'static str) -> ModelError {
    ModelError::ColumnType { column: column.to_string(), found: array.data_type().clone(), expected }
}

/// `array` as Float64: itself when it is Float64, else cast (temporal types through their
/// epoch count); values that cannot be read (text that is not a number) become null.
fn to_floats(column: &str, array: &dyn Array, expected: &'static str) -> Result<Float64Array, ModelError> {
    if let Some(floats) = array.as_any().downcast_ref::<Float64Array>() {
        // Clones the buffers' Arcs, not the values.
        return Ok(floats.clone());
    }
    let cast = |a: &dyn Array, to: &DataType| arrow_cast::cast(a, to).map_err(|_| type_error(column, array, expected));
    let floats = match count_type(array.data_type()) {
        Some(count) => cast(cast(array, &count)?.as_ref(), &DataType::Float64)?,
        None => cast(array, &DataType::Float64)?,
    };
    floats.as_primitive_opt::<Float64Type>().cloned().ok_or_else(|| type_error(column, array, expected))
}

/// A fitting sample as Float64.
///
/// # Errors
/// [`ModelError::ColumnType`] unless the column is a number, a date or a timestamp.
pub(crate) fn fit_values(column: &str, sample: &dyn Array) -> Result<Float64Array, ModelError> {
    const EXPECTED: &str = "a number, a date or a timestamp";
    if !is_number(sample.data_type()) {
        return Err(type_error(column, sample, EXPECTED));
    }
    to_floats(column, sample, EXPECTED)
}

/// A column to transform as Float64, and how many of its non-null values could not be
/// read as a number (they are null in the result). Anything Arrow casts to Float64 is
/// read, text included ("12.5" is 12.5, "abc" is counted and null).
///
/// # Errors
/// [`ModelError::ColumnType`] for a type that cannot be cast to Float64 at all (a list).
pub(crate) fn read(column: &str, array: &dyn Array) -> Result<(Float64Array, u64), ModelError> {
    const EXPECTED: &str = "castable to Float64";
    let known = is_number(array.data_type());
    if !known && !arrow_cast::can_cast_types(array.data_type(), &DataType::Float64) {
        return Err(type_error(column, array, EXPECTED));
    }
    let floats = to_floats(column, array, EXPECTED)?;
    let invalid = if known { 0 } else { floats.null_count().saturating_sub(array.logical_null_count()) };
    Ok((floats, invalid as u64))
}

/// Decoded values written in `data_type` (`None`: Float64, as they are): integers, dates
/// and timestamps rounded to the nearest count; a value outside the type's range is null.
///
/// # Errors
/// [`ModelError::Invalid`] when the model records a type that numbers cannot be cast to.
pub(crate) fn write(column: &str, values: Float64Array, data_type: Option<&DataType>) -> Result<ArrayRef, ModelError> {
    let Some(data_type) = data_type.filter(|t| **t != DataType::Float64) else {
        return Ok(Arc::new(values));
    };
    let invalid = |e: arrow_schema::ArrowError| {
        ModelError::Invalid(format!("column `{column}`: decoded numbers do not cast to its type {data_type}: {e}"))
    };
    let whole = data_type.is_integer() || is_temporal(data_type);
    let values: ArrayRef = if whole { Arc::new(values.unary::<_, Float64Type>(f64::round)) } else { Arc::new(values) };
    match count_type(data_type) {
        Some(count) => arrow_cast::cast(arrow_cast::cast(&values, &count).map_err(invalid)?.as_ref(), data_type),
        None => arrow_cast::cast(&values, data_type),
    }
    .map_err(invalid)
}
