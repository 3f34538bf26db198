//! Tables of several columns: a Parquet or CSV shard read as Arrow batches of the columns
//! wanted, a seeded row sample of every shard, and one model fitted column by column,
//! each column's kind given by `fit.kinds` / `fit.modes` or inferred.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, Float64Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use encoding_rs_io::DecodeReaderBytes;

use crate::shard::{ShardError, sample_rows};
use crate::text::{DEFAULT_MAX_RECORD_BYTES, LongRecord, NULL_PATTERN, RecordCap, TextError, open_text};

/// Rows read per batch.
const BATCH_ROWS: usize = 65_536;
/// Rows read to infer a CSV file's column types.
const CSV_INFER_ROWS: usize = 10_000;

/// Whether `path` names a CSV file (else it is read as Parquet).
pub fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// The `*.parquet` and `*.csv` files of a directory, in natural order.
///
/// # Errors
/// [`ShardError::NoShards`] when there are none or the directory cannot be read.
pub fn list_table_shards(dir: &Path) -> Result<Vec<PathBuf>, ShardError> {
    let none = || ShardError::NoShards(dir.display().to_string());
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| none())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && (is_csv(p) || p.extension().is_some_and(|e| e == "parquet")))
        .collect();
    shards.sort_by_key(|p| natural_key(&p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()));
    if shards.is_empty() { Err(none()) } else { Ok(shards) }
}

enum Source {
    Parquet(ParquetRecordBatchReaderBuilder<File>),
    Csv { path: PathBuf, schema: SchemaRef, max_record_bytes: u64 },
}

/// How a shard's bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// CSV text in the dialect of [`crate::text`].
    Csv,
}

/// A shard whose header was read: its full schema and the columns wanted.
pub struct Table {
    shown: String,
    source: Source,
    /// Indices of the wanted columns in the file, in file order.
    indices: Vec<usize>,
    schema: SchemaRef,
}

/// The CSV dialect of [`crate::text`], for arrow-csv: a header row, empty or `NaN` is null.
fn csv_format() -> arrow_csv::reader::Format {
    let format = arrow_csv::reader::Format::default().with_header(true);
    match regex::Regex::new(NULL_PATTERN) {
        Ok(nulls) => format.with_null_regex(nulls),
        Err(_) => format, // The pattern is a constant the tests compile.
    }
}

/// The column types of a CSV shard, inferred from its first 10,000 rows.
///
/// # Errors
/// [`ShardError::NotCsv`] when it is not CSV text with a header row.
pub fn infer_csv_schema(path: &Path) -> Result<SchemaRef, ShardError> {
    infer_csv_schema_within(path, DEFAULT_MAX_RECORD_BYTES)
}

/// As [`infer_csv_schema`], refusing a record longer than `max_record_bytes`.
///
/// # Errors
/// [`ShardError::NotCsv`] when it is not CSV text with a header row, or has a longer record.
pub fn infer_csv_schema_within(path: &Path, max_record_bytes: u64) -> Result<SchemaRef, ShardError> {
    let not_csv = |reason: String| ShardError::NotCsv { path: path.display().to_string(), reason };
    let (schema, _) = csv_format()
        .infer_schema(open_csv(path, max_record_bytes)?, Some(CSV_INFER_ROWS))
        .map_err(|e| not_csv(e.to_string()))?;
    Ok(Arc::new(schema))
}

/// A CSV shard as decoded text (UTF-8, or UTF-16 behind a BOM), each record at most
/// `max_record_bytes` (csv-core's default terminator ends a record at `\r` too).
fn open_csv(path: &Path, max_record_bytes: u64) -> Result<RecordCap<DecodeReaderBytes<File, Vec<u8>>>, ShardError> {
    let text = open_text(path).map_err(|e| match e {
        TextError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ShardError::NotFound(path.display().to_string())
        }
        other => ShardError::NotCsv { path: path.display().to_string(), reason: other.to_string() },
    })?;
    Ok(RecordCap::new(text, max_record_bytes, LongRecord::Refuse, true))
}

fn open_file(path: &Path) -> Result<File, ShardError> {
    let shown = path.display().to_string();
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ShardError::NotFound(shown),
        _ => ShardError::Read { path: shown, reason: e.to_string() },
    })
}

impl Table {
    /// Open a Parquet or CSV shard (told by its extension, see [`is_csv`]) and find
    /// `columns` in it (every column when empty). A CSV file's types are inferred from its
    /// first rows, or taken from `csv_schema` (to read every shard of a dataset alike).
    ///
    /// # Errors
    /// [`ShardError`] saying what is wrong with the file or which column is missing.
    pub fn open(path: &Path, columns: &[String], csv_schema: Option<SchemaRef>) -> Result<Self, ShardError> {
        let format = if is_csv(path) { Format::Csv } else { Format::Parquet };
        Self::open_as(path, format, columns, csv_schema)
    }

    /// As [`Table::open`], reading the file as `format` whatever its name (an upload).
    ///
    /// # Errors
    /// [`ShardError`] saying what is wrong with the file or which column is missing.
    pub fn open_as(
        path: &Path,
        format: Format,
        columns: &[String],
        csv_schema: Option<SchemaRef>,
    ) -> Result<Self, ShardError> {
        let shown = path.display().to_string();
        let file = open_file(path)?;
        let (source, full) = if format == Format::Csv {
            let schema = match csv_schema {
                Some(schema) => schema,
                None => {
                    drop(file);
                    infer_csv_schema(path)?
                }
            };
            let source = Source::Csv {
                path: path.to_path_buf(),
                schema: schema.clone(),
                max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            };
            (source, schema)
        } else {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| ShardError::NotParquet { path: shown.clone(), reason: e.to_string() })?;
            let schema = builder.schema().clone();
            (Source::Parquet(builder), schema)
        };
        let mut indices = Vec::new();
        for name in columns {
            let Some((index, _)) = full.column_with_name(name) else {
                return Err(ShardError::MissingColumn {
                    path: shown,
                    column: name.clone(),
                    available: full.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                });
            };
            indices.push(index);
        }
        if columns.is_empty() {
            indices = (0..full.fields().len()).collect();
        }
        indices.sort_unstable();
        indices.dedup();
        let schema = Arc::new(
            full.project(&indices).map_err(|e| ShardError::Read { path: shown.clone(), reason: e.to_string() })?,
        );
        Ok(Self { shown, source, indices, schema })
    }

    /// Refuse a CSV record longer than `max` bytes (default
    /// [`DEFAULT_MAX_RECORD_BYTES`]); no effect on Parquet.
    #[must_use]
    pub fn with_max_record_bytes(mut self, max: u64) -> Self {
        if let Source::Csv { max_record_bytes, .. } = &mut self.source {
            *max_record_bytes = max;
        }
        self
    }

    /// The wanted columns, in file order.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The schema a CSV shard was read with, to read the dataset's other CSV shards alike.
    pub fn csv_schema(&self) -> Option<SchemaRef> {
        match &self.source {
            Source::Csv { schema, .. } => Some(schema.clone()),
            Source::Parquet(_) => None,
        }
    }

    /// Rows in this shard: from the footer for Parquet, by reading it for CSV.
    ///
    /// # Errors
    /// [`ShardError::Read`] when a CSV file cannot be read to the end.
    pub fn num_rows(&self) -> Result<u64, ShardError> {
        let (path, schema, max_record_bytes) = match &self.source {
            Source::Parquet(builder) => {
                return Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0));
            }
            Source::Csv { path, schema, max_record_bytes } => (path.clone(), schema.clone(), *max_record_bytes),
        };
        // No column projected: the reader only counts the rows, parsing no field.
        let counting = Self {
            shown: self.shown.clone(),
            source: Source::Csv { path, schema, max_record_bytes },
            indices: Vec::new(),
            schema: self.schema.clone(),
        };
        let mut rows = 0;
        for batch in counting.batches(BATCH_ROWS)? {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    }

    /// Read every wanted value once, keeping none: a file with an intact footer and a
    /// corrupt page (or a CSV with a bad line far down) fails here, before anything made
    /// from it goes out. Returns the rows read.
    ///
    /// # Errors
    /// [`ShardError::Read`] naming what could not be read.
    pub fn verify(self, batch_rows: usize) -> Result<u64, ShardError> {
        let mut rows = 0;
        for batch in self.batches(batch_rows)? {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    }

    /// Stream the wanted columns in batches of at most `batch_rows` rows.
    ///
    /// # Errors
    /// [`ShardError::Read`] when the reader cannot be set up or a batch cannot be read.
    pub fn batches(
        self,
        batch_rows: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, ShardError>> + Send>, ShardError> {
        let shown = self.shown.clone();
        let read = move |e: arrow_schema::ArrowError| ShardError::Read { path: shown.clone(), reason: e.to_string() };
        match self.source {
            Source::Parquet(builder) => {
                let mask = ProjectionMask::roots(builder.parquet_schema(), self.indices.iter().copied());
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(batch_rows)
                    .build()
                    .map_err(|e| ShardError::Read { path: self.shown.clone(), reason: e.to_string() })?;
                Ok(Box::new(reader.map(move |b| b.map_err(&read))))
            }
            Source::Csv { path, schema, max_record_bytes } => {
                let reader = arrow_csv::ReaderBuilder::new(schema)
                    .with_format(csv_format())
                    .with_batch_size(batch_rows)
                    .with_projection(self.indices)
                    .build(open_csv(&path, max_record_bytes)?)
                    .map_err(|e| ShardError::NotCsv { path: self.shown.clone(), reason: e.to_string() })?;
                Ok(Box::new(reader.map(move |b| b.map_err(&read))))
            }
        }
    }
}

/// What one shard's pass saw of each column.
#[derive(Clone, Debug)]
pub struct ColumnStats {
    /// Null values.
    pub nulls: u64,
    /// Smallest finite value (numeric columns).
    pub min: f64,
    /// Largest finite value (numeric columns).
    pub max: f64,
}

/// A seeded sample of up to `n` rows of a shard (every row when it has no more), the
/// shard's row count and per-column statistics over all its rows.
pub fn sample_table(
    path: &Path,
    columns: &[String],
    csv_schema: Option<SchemaRef>,
    n: usize,
    seed: u64,
) -> Result<(RecordBatch, u64, Vec<ColumnStats>), ShardError> {
    let table = Table::open(path, columns, csv_schema)?;
    let rows = table.num_rows()?;
    let schema = table.schema();
    let picks = sample_rows(usize::try_from(rows).unwrap_or(usize::MAX), n, seed);
    let mut stats = vec![ColumnStats { nulls: 0, min: f64::INFINITY, max: f64::NEG_INFINITY }; schema.fields().len()];
    let (mut parts, mut offset, mut next) = (Vec::new(), 0usize, 0usize);
    let read =
        |e: arrow_schema::ArrowError| ShardError::Read { path: path.display().to_string(), reason: e.to_string() };
    for batch in table.batches(BATCH_ROWS)? {
        let batch = batch?;
        for (s, column) in stats.iter_mut().zip(batch.columns()) {
            s.nulls += column.null_count() as u64;
            if column.data_type().is_numeric() {
                let floats = arrow_cast::cast(column, &DataType::Float64).map_err(read)?;
                if let Some(floats) = floats.as_any().downcast_ref::<Float64Array>() {
                    for v in floats.iter().flatten().filter(|v| v.is_finite()) {
                        s.min = s.min.min(v);
                        s.max = s.max.max(v);
                    }
                }
            }
        }
        let keep: BooleanArray = (offset..offset + batch.num_rows())
            .map(|row| {
                Some(match &picks {
                    None => true,
                    Some(p) if next < p.len() && p[next] == row => {
                        next += 1;
                        true
                    }
                    Some(_) => false,
                })
            })
            .collect();
        offset += batch.num_rows();
        parts.push(arrow_select::filter::filter_record_batch(&batch, &keep).map_err(read)?);
    }
    let sample = arrow_select::concat::concat_batches(&schema, &parts).map_err(read)?;
    Ok((sample, rows, stats))
}

/// Cast `batch` to `schema` (a later shard to the first shard's types).
///
/// # Errors
/// [`ShardError::Read`] when a column is missing or cannot be cast.
pub fn conform(path: &Path, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ShardError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let mismatch = |reason: String| ShardError::Read { path: path.display().to_string(), reason };
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column =
            batch.column_by_name(field.name()).ok_or_else(|| mismatch(format!("no column `{}`", field.name())))?;
        columns.push(arrow_cast::cast(column, field.data_type()).map_err(|e| {
            mismatch(format!(
                "column `{}` is {} here but {} in the first shard: {e}",
                field.name(),
                column.data_type(),
                field.data_type()
            ))
        })?);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| mismatch(e.to_string()))
}

/// The shards of a directory: `*.parquet`, in natural order (`_2` before `_10`).
///
/// # Errors
/// [`ShardError::NoShards`] when there are none or the directory cannot be read.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, ShardError> {
    let none = || ShardError::NoShards(dir.display().to_string());
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| none())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet") && p.is_file())
        .collect();
    shards.sort_by_key(|p| natural_key(&p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()));
    if shards.is_empty() { Err(none()) } else { Ok(shards) }
}

/// A sort key putting numbers in file names in numeric order.
pub fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["Amount_Shard_10.parquet", "Amount_Shard_2.parquet", "Amount_Shard_1.parquet"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, vec!["Amount_Shard_1.parquet", "Amount_Shard_2.parquet", "Amount_Shard_10.parquet"]);
    }
}
