//! The features stage and the merge after it: per-symbol rolling features of daily prices.
//!
//! Per symbol file, as the original pandas code did it: rows with a null in any column
//! (or a NaN price) are dropped, then exact duplicate rows (the first kept), the rest is
//! ordered by `Date` (stably: rows of one date keep their order), and two columns are added:
//! [`VOL_MOVING_AVG`], `Volume.rolling(30, min_periods=1).mean()`, and
//! [`ADJ_CLOSE_ROLLING_MED`], `Adj Close.rolling(30, min_periods=1).median()` (the mean of
//! the two middle values for an even count). The mean is a running sum of the integer
//! volumes, exact, divided once per row; the median keeps the window sorted and moves one
//! value in and one out by binary search. Both are O(n) in the rows for a fixed window.
//!
//! Files are independent: [`features`] computes them in parallel on the current rayon pool,
//! each written under a temporary name and renamed, so the bytes are the same whatever the
//! thread count. [`merge`] then concatenates directories of feature files into one file.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use shardflow_storage::write_atomically;

/// The rolling window, in rows.
pub const WINDOW: usize = 30;
/// The rolling mean of `Volume`.
pub const VOL_MOVING_AVG: &str = "vol_moving_avg";
/// The rolling median of `Adj Close`.
pub const ADJ_CLOSE_ROLLING_MED: &str = "adj_close_rolling_med";

/// The input columns, in the order they are written.
const SYMBOL: &str = "Symbol";
const SECURITY_NAME: &str = "Security Name";
const DATE: &str = "Date";
const PRICES: [&str; 5] = ["Open", "High", "Low", "Close", "Adj Close"];
const ADJ_CLOSE: usize = 4;
const VOLUME: &str = "Volume";

const READ_BATCH_ROWS: usize = 65_536;
const ROW_GROUP_ROWS: usize = 1_048_576;
/// Rows of one date compared pairwise for duplicates; larger groups go through a set.
const PAIRWISE_GROUP: usize = 16;

/// What [`features`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureStats {
    /// Symbol files read (and written).
    pub files: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows dropped for a null (or a NaN price).
    pub nulls_removed: u64,
    /// Rows dropped as an exact duplicate of an earlier row.
    pub duplicates_removed: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl FeatureStats {
    fn add(&mut self, other: &Self) {
        self.files += other.files;
        self.rows_in += other.rows_in;
        self.nulls_removed += other.nulls_removed;
        self.duplicates_removed += other.duplicates_removed;
        self.rows_out += other.rows_out;
        self.bytes_out += other.bytes_out;
    }
}

/// What [`merge`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Feature files read.
    pub files: u64,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Why the features or merge stage failed. Only I/O errors ([`FeaturesError::is_retryable`])
/// may go away by themselves; the others need other input.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// A directory could not be listed.
    #[error("listing {path}: {source}")]
    ReadDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be opened or read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not Parquet, or is damaged.
    #[error("{path} is not a readable Parquet file: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The cause.
        source: ParquetError,
    },
    /// A symbol file lacks a column.
    #[error("{path} has no column `{column}` (columns: {columns})")]
    MissingColumn {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// The columns it has.
        columns: String,
    },
    /// A column's type cannot be read as the stage needs it.
    #[error("{path}: column `{column}` is {found}, expected {expected}")]
    ColumnType {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// Its type.
        found: DataType,
        /// What the stage reads.
        expected: &'static str,
    },
    /// An Arrow computation failed on a file's data.
    #[error("{path}: {source}")]
    Arrow {
        /// The file.
        path: String,
        /// The cause.
        source: ArrowError,
    },
    /// A symbol file holds more rows than row indices of 32 bits reach.
    #[error("{path} has {rows} rows, more than the {max} a symbol file may hold")]
    TooManyRows {
        /// The file.
        path: String,
        /// Its rows.
        rows: usize,
        /// The limit.
        max: u64,
    },
    /// A file given to [`merge`] is not a feature file.
    #[error("{path} is not a feature file: {reason}")]
    NotFeatures {
        /// The file.
        path: String,
        /// What differs.
        reason: String,
    },
    /// The output would overwrite an input.
    #[error("{output} is also an input: write the output elsewhere")]
    OutputIsInput {
        /// The output directory or file.
        output: String,
    },
    /// Writing an output failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl FeaturesError {
    /// Whether running the stage again may succeed: I/O errors only.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::ReadDir { .. } | Self::Read { .. } | Self::Write { .. })
    }
}

/// The columns of a feature file: the symbol file's, then [`VOL_MOVING_AVG`] and
/// [`ADJ_CLOSE_ROLLING_MED`]; nothing is null.
pub fn feature_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new(SYMBOL, DataType::Utf8, false),
        Field::new(SECURITY_NAME, DataType::Utf8, false),
        Field::new(DATE, DataType::Utf8, false),
    ];
    fields.extend(PRICES.map(|p| Field::new(p, DataType::Float64, false)));
    fields.push(Field::new(VOLUME, DataType::Int64, false));
    fields.push(Field::new(VOL_MOVING_AVG, DataType::Float64, false));
    fields.push(Field::new(ADJ_CLOSE_ROLLING_MED, DataType::Float64, false));
    Arc::new(Schema::new(fields))
}

/// `values.rolling(window, min_periods=1).mean()`: the mean of the last `window` values
/// (fewer at the start). The sum is kept exactly in integers.
pub fn rolling_mean(values: &[i64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut sum: i128 = 0;
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        sum += i128::from(*v);
        if i >= window {
            sum -= i128::from(values[i - window]);
        }
        out.push(sum as f64 / (i + 1).min(window) as f64);
    }
    out
}

/// `values.rolling(window, min_periods=1).median()`: the median of the last `window` values
/// (fewer at the start), the mean of the two middle ones for an even count.
pub fn rolling_median(values: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut sorted: Vec<f64> = Vec::with_capacity(window + 1);
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if i >= window {
            let old = values[i - window];
            let at = sorted.partition_point(|x| x.total_cmp(&old).is_lt());
            let _ = sorted.remove(at);
        }
        let at = sorted.partition_point(|x| x.total_cmp(v).is_le());
        sorted.insert(at, *v);
        let n = sorted.len();
        out.push(if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 });
    }
    out
}

/// The `*.parquet` files of `dir` (not hidden ones: temporaries), sorted by name.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, FeaturesError> {
    let list_err = |source| FeaturesError::ReadDir { path: dir.display().to_string(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".parquet") {
            continue;
        }
        if entry.file_type().map_err(list_err)?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// A symbol file's columns, read as the stage needs them.
struct SymbolTable {
    symbol: StringArray,
    name: StringArray,
    date: StringArray,
    prices: [Float64Array; 5],
    volume: Int64Array,
}

/// Which types a column may have, and what it is read as.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Price,
    Volume,
}

impl Kind {
    fn target(self) -> DataType {
        match self {
            Self::Text => DataType::Utf8,
            Self::Price => DataType::Float64,
            Self::Volume => DataType::Int64,
        }
    }

    fn accepts(self, column: &str, found: &DataType) -> bool {
        use DataType::*;
        match self {
            // A date may come as text or as a Parquet DATE (cast to YYYY-MM-DD).
            Self::Text => matches!(found, Utf8 | LargeUtf8 | Utf8View) || (column == DATE && *found == Date32),
            Self::Price | Self::Volume => found.is_numeric(),
        }
    }

    fn expected(self, column: &str) -> &'static str {
        match self {
            Self::Text if column == DATE => "text (YYYY-MM-DD) or a date",
            Self::Text => "text",
            Self::Price => "a number (read as Float64)",
            Self::Volume => "a number (read as Int64)",
        }
    }
}

fn input_columns() -> [(&'static str, Kind); 9] {
    let [open, high, low, close, adj] = PRICES;
    [
        (SYMBOL, Kind::Text),
        (SECURITY_NAME, Kind::Text),
        (DATE, Kind::Text),
        (open, Kind::Price),
        (high, Kind::Price),
        (low, Kind::Price),
        (close, Kind::Price),
        (adj, Kind::Price),
        (VOLUME, Kind::Volume),
    ]
}

fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, FeaturesError> {
    let file = File::open(path).map_err(|source| FeaturesError::Read { path: shown(path), source })?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|source| FeaturesError::Parquet { path: shown(path), source })
}

fn read_symbol_file(path: &Path) -> Result<SymbolTable, FeaturesError> {
    let builder = open_parquet(path)?;
    let schema = builder.schema().clone();
    let columns = input_columns();
    let mut roots = Vec::with_capacity(columns.len());
    for (column, kind) in columns {
        let Ok(at) = schema.index_of(column) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(FeaturesError::MissingColumn {
                path: shown(path),
                column: column.into(),
                columns: names.join(", "),
            });
        };
        let found = schema.field(at).data_type();
        if !kind.accepts(column, found) {
            return Err(FeaturesError::ColumnType {
                path: shown(path),
                column: column.into(),
                found: found.clone(),
                expected: kind.expected(column),
            });
        }
        roots.push(at);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|source| FeaturesError::Parquet { path: shown(path), source })?;
    let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); columns.len()];
    let arrow_err = |source| FeaturesError::Arrow { path: shown(path), source };
    for batch in reader {
        let batch = batch.map_err(arrow_err)?;
        for ((column, kind), part) in columns.iter().zip(parts.iter_mut()) {
            let array = batch.column_by_name(column).ok_or_else(|| FeaturesError::MissingColumn {
                path: shown(path),
                column: (*column).into(),
                columns: "(the projected batch lost it)".into(),
            })?;
            part.push(arrow_cast::cast(array, &kind.target()).map_err(arrow_err)?);
        }
    }
    let mut whole = Vec::with_capacity(columns.len());
    for ((_, kind), part) in columns.iter().zip(&parts) {
        whole.push(match part.as_slice() {
            [] => arrow_array::new_empty_array(&kind.target()),
            [one] => one.clone(),
            parts => {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                arrow_select::concat::concat(&refs).map_err(arrow_err)?
            }
        });
    }
    let text = |i: usize| -> Result<StringArray, FeaturesError> {
        whole[i].as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| not_cast(path, columns[i].0))
    };
    let price = |i: usize| -> Result<Float64Array, FeaturesError> {
        whole[i].as_any().downcast_ref::<Float64Array>().cloned().ok_or_else(|| not_cast(path, columns[i].0))
    };
    let volume = whole[8].as_any().downcast_ref::<Int64Array>().cloned().ok_or_else(|| not_cast(path, VOLUME))?;
    Ok(SymbolTable {
        symbol: text(0)?,
        name: text(1)?,
        date: text(2)?,
        prices: [price(3)?, price(4)?, price(5)?, price(6)?, price(7)?],
        volume,
    })
}

fn not_cast(path: &Path, column: &str) -> FeaturesError {
    FeaturesError::Arrow {
        path: shown(path),
        source: ArrowError::CastError(format!("column `{column}` was not cast to its type")),
    }
}

/// Which rows survive, in output order, and how many were dropped.
struct Kept {
    rows: Vec<u32>,
    nulls: u64,
    duplicates: u64,
}

impl SymbolTable {
    fn len(&self) -> usize {
        self.date.len()
    }

    /// No null anywhere and no NaN price.
    fn complete(&self, i: usize) -> bool {
        self.symbol.is_valid(i)
            && self.name.is_valid(i)
            && self.date.is_valid(i)
            && self.volume.is_valid(i)
            && self.prices.iter().all(|p| p.is_valid(i) && !p.value(i).is_nan())
    }

    /// Equal in every column (rows of one date: the date is not compared again).
    fn same_row(&self, a: usize, b: usize) -> bool {
        self.volume.value(a) == self.volume.value(b)
            && self.prices.iter().all(|p| p.value(a) == p.value(b))
            && self.symbol.value(a) == self.symbol.value(b)
            && self.name.value(a) == self.name.value(b)
    }

    /// Drop incomplete rows, order by date (stably), drop repeats of an earlier row.
    fn keep(&self) -> Kept {
        let n = self.len();
        let mut rows: Vec<u32> = (0..n as u32).filter(|i| self.complete(*i as usize)).collect();
        let nulls = (n - rows.len()) as u64;
        let date = |i: u32| self.date.value(i as usize);
        if rows.windows(2).any(|w| date(w[0]) > date(w[1])) {
            rows.sort_by(|a, b| date(*a).cmp(date(*b)));
        }
        // Exact duplicates share the date: look only within runs of one date, whose rows
        // are in file order, so the first of equal rows is the one kept.
        let mut kept = Vec::with_capacity(rows.len());
        let mut start = 0;
        while start < rows.len() {
            let day = date(rows[start]);
            let end = start + rows[start..].iter().position(|r| date(*r) != day).unwrap_or(rows.len() - start);
            let group = &rows[start..end];
            if group.len() <= PAIRWISE_GROUP {
                let first = kept.len();
                for &r in group {
                    if !kept[first..].iter().any(|&k: &u32| self.same_row(k as usize, r as usize)) {
                        kept.push(r);
                    }
                }
            } else {
                let mut seen = HashSet::with_capacity(group.len());
                for &r in group {
                    let i = r as usize;
                    // +0.0 makes -0.0 and 0.0 one key, as they compare equal.
                    let prices = self.prices.each_ref().map(|p| (p.value(i) + 0.0).to_bits());
                    if seen.insert((self.symbol.value(i), self.name.value(i), prices, self.volume.value(i))) {
                        kept.push(r);
                    }
                }
            }
            start = end;
        }
        let duplicates = (rows.len() - kept.len()) as u64;
        Kept { rows: kept, nulls, duplicates }
    }
}

/// Snappy; dictionaries only for the names, which repeat on every row of a symbol (prices,
/// volumes and dates hardly repeat: interning them cost a fifth of the stage's time).
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(SYMBOL), true)
        .set_column_dictionary_enabled(ColumnPath::from(SECURITY_NAME), true)
        .build()
}

/// The feature batch of one symbol file.
fn feature_batch(path: &Path, table: &SymbolTable, kept: &Kept) -> Result<RecordBatch, FeaturesError> {
    let arrow_err = |source| FeaturesError::Arrow { path: shown(path), source };
    let volumes: Vec<i64> = kept.rows.iter().map(|&r| table.volume.value(r as usize)).collect();
    let adj = &table.prices[ADJ_CLOSE];
    let adj_close: Vec<f64> = kept.rows.iter().map(|&r| adj.value(r as usize)).collect();
    let mean = rolling_mean(&volumes, WINDOW);
    let median = rolling_median(&adj_close, WINDOW);

    let identity = kept.rows.len() == table.len() && kept.rows.iter().enumerate().all(|(i, &r)| i == r as usize);
    let indices = UInt32Array::from(kept.rows.clone());
    let pick = |array: &dyn Array| -> Result<ArrayRef, FeaturesError> {
        if identity {
            Ok(arrow_array::make_array(array.to_data()))
        } else {
            arrow_select::take::take(array, &indices, None).map_err(arrow_err)
        }
    };
    let mut columns = vec![pick(&table.symbol)?, pick(&table.name)?, pick(&table.date)?];
    for price in &table.prices {
        columns.push(pick(price)?);
    }
    columns.push(Arc::new(Int64Array::from(volumes)));
    columns.push(Arc::new(Float64Array::from(mean)));
    columns.push(Arc::new(Float64Array::from(median)));
    RecordBatch::try_new(feature_schema(), columns).map_err(arrow_err)
}

fn features_of_file(input: &Path, output: &Path) -> Result<FeatureStats, FeaturesError> {
    let table = read_symbol_file(input)?;
    if table.len() as u64 > u64::from(u32::MAX) {
        return Err(FeaturesError::TooManyRows { path: shown(input), rows: table.len(), max: u64::from(u32::MAX) });
    }
    let kept = table.keep();
    let batch = feature_batch(input, &table, &kept)?;
    let write_err = |source| FeaturesError::Write { path: shown(output), source };
    write_atomically(output, |file| {
        let mut writer =
            ArrowWriter::try_new(file, batch.schema(), Some(writer_properties())).map_err(std::io::Error::other)?;
        writer.write(&batch).map_err(std::io::Error::other)?;
        writer.close().map(|_| ()).map_err(std::io::Error::other)
    })
    .map_err(write_err)?;
    let bytes_out = std::fs::metadata(output).map_err(write_err)?.len();
    Ok(FeatureStats {
        files: 1,
        rows_in: table.len() as u64,
        nulls_removed: kept.nulls,
        duplicates_removed: kept.duplicates,
        rows_out: kept.rows.len() as u64,
        bytes_out,
    })
}

/// The same directory or file, as far as the file system tells.
fn same_place(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Compute features for every per-symbol Parquet file in `input_dir` (sorted by file name),
/// writing `out_dir/<same name>.parquet` with columns Symbol, Security Name, Date, Open,
/// High, Low, Close, Adj Close, Volume, vol_moving_avg (Float64), adj_close_rolling_med
/// (Float64). Files processed in parallel with rayon; output bytes identical whatever the
/// thread count.
///
/// Input columns may be any text type (`Date` also a Parquet date), any number type for
/// the prices (read as Float64) and `Volume` (read as Int64); other columns are ignored.
/// Files already in `out_dir` that `input_dir` has no file for are left alone.
///
/// # Errors
/// [`FeaturesError`] naming the file: a missing column or one of another type, a file that
/// is not Parquet, `out_dir` being `input_dir`, or a failed read or write. The first
/// failing file in name order is reported; the files before it are written.
pub fn features(input_dir: &Path, out_dir: &Path) -> Result<FeatureStats, FeaturesError> {
    if same_place(input_dir, out_dir) {
        return Err(FeaturesError::OutputIsInput { output: shown(out_dir) });
    }
    let files = parquet_files(input_dir)?;
    std::fs::create_dir_all(out_dir).map_err(|source| FeaturesError::Write { path: shown(out_dir), source })?;
    let results: Vec<Result<FeatureStats, FeaturesError>> = files
        .par_iter()
        .map(|input| {
            let name = input.file_name().unwrap_or_default();
            features_of_file(input, &out_dir.join(name))
        })
        .collect();
    let mut stats = FeatureStats::default();
    for result in results {
        stats.add(&result?);
    }
    Ok(stats)
}

/// Check that a file's columns are the feature columns, in order, of the same types.
fn check_features_schema(path: &Path, found: &Schema, expected: &Schema) -> Result<(), FeaturesError> {
    let describe = |s: &Schema| {
        s.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
    };
    let same = found.fields().len() == expected.fields().len()
        && found
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if same {
        Ok(())
    } else {
        Err(FeaturesError::NotFeatures {
            path: shown(path),
            reason: format!("its columns are {} (expected {})", describe(found), describe(expected)),
        })
    }
}

/// Merge the feature files of several directories (in the order given, files sorted by
/// name) into one Parquet file `out` (written atomically: temp file then rename).
///
/// Files are streamed batch by batch; memory is about one row group of the output.
///
/// # Errors
/// [`FeaturesError::NotFeatures`] for a file whose columns are not the feature columns (or
/// that has nulls), [`FeaturesError::OutputIsInput`] when `out` is one of the inputs, and
/// read and write failures. Nothing is written at `out` then.
pub fn merge(dirs: &[&Path], out: &Path) -> Result<MergeStats, FeaturesError> {
    let mut files = Vec::new();
    for dir in dirs {
        files.extend(parquet_files(dir)?);
    }
    if files.iter().any(|f| same_place(f, out)) {
        return Err(FeaturesError::OutputIsInput { output: shown(out) });
    }
    let schema = feature_schema();
    let mut failure: Option<FeaturesError> = None;
    let mut rows = 0u64;
    let written = write_atomically(out, |file| {
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(writer_properties())).map_err(std::io::Error::other)?;
        for path in &files {
            let copied = copy_features(path, &schema, &mut writer);
            match copied {
                Ok(n) => rows += n,
                Err(e) => {
                    let message = e.to_string();
                    failure = Some(e);
                    return Err(std::io::Error::other(message));
                }
            }
        }
        writer.close().map(|_| ()).map_err(std::io::Error::other)
    });
    if let Some(e) = failure {
        return Err(e);
    }
    written.map_err(|source| FeaturesError::Write { path: shown(out), source })?;
    let bytes = std::fs::metadata(out).map_err(|source| FeaturesError::Write { path: shown(out), source })?.len();
    Ok(MergeStats { files: files.len() as u64, rows, bytes })
}

/// Append one feature file's rows to `writer`; its row count.
fn copy_features(path: &Path, schema: &SchemaRef, writer: &mut ArrowWriter<&mut File>) -> Result<u64, FeaturesError> {
    let builder = open_parquet(path)?;
    check_features_schema(path, builder.schema(), schema)?;
    let reader = builder
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|source| FeaturesError::Parquet { path: shown(path), source })?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|source| FeaturesError::Arrow { path: shown(path), source })?;
        let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
            .map_err(|e| FeaturesError::NotFeatures { path: shown(path), reason: e.to_string() })?;
        writer.write(&batch).map_err(|source| FeaturesError::Parquet { path: shown(path), source })?;
        rows += batch.num_rows() as u64;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "at {i}: {x} against {y}");
        }
    }

    #[test]
    fn rolling_mean_by_hand() {
        assert_eq!(rolling_mean(&[10, 20, 30, 40], 3), [10.0, 15.0, 20.0, 30.0]);
        let values: Vec<i64> = (1..=35).collect();
        let mean = rolling_mean(&values, WINDOW);
        // Fewer than 30 values at the start: the mean of all so far.
        assert_eq!(mean[0], 1.0);
        assert_eq!(mean[1], 1.5);
        assert_eq!(mean[29], 15.5);
        // Then the last 30: 2..=31 and 6..=35.
        assert_eq!(mean[30], 16.5);
        assert_eq!(mean[34], 20.5);
        assert!(rolling_mean(&[], WINDOW).is_empty());
        // Large volumes stay exact.
        assert_eq!(rolling_mean(&[i64::MAX, i64::MAX], 2), [i64::MAX as f64, i64::MAX as f64]);
    }

    #[test]
    fn rolling_median_by_hand() {
        // Even counts take the mean of the two middle values.
        assert_eq!(rolling_median(&[3.0, 1.0, 2.0, 4.0], WINDOW), [3.0, 2.0, 2.0, 2.5]);
        assert_eq!(rolling_median(&[5.0, 1.0, 4.0, 2.0, 3.0], 3), [5.0, 3.0, 4.0, 2.0, 3.0]);
        assert_eq!(rolling_median(&[1.0, 1.0, 2.0, 1.0, 3.0, 3.0], 4), [1.0, 1.0, 1.0, 1.0, 1.5, 2.5]);
    }

    #[test]
    fn rolling_median_matches_sorting_every_window() {
        // Values with many ties, as prices have.
        let values: Vec<f64> = (0..500u64).map(|i| ((i * 7919) % 41) as f64 * 0.25).collect();
        let fast = rolling_median(&values, WINDOW);
        let slow: Vec<f64> = (0..values.len())
            .map(|i| {
                let mut w = values[i.saturating_sub(WINDOW - 1)..=i].to_vec();
                w.sort_by(f64::total_cmp);
                let n = w.len();
                if n % 2 == 1 { w[n / 2] } else { (w[n / 2 - 1] + w[n / 2]) / 2.0 }
            })
            .collect();
        assert_eq!(fast, slow);
    }

    /// A row of a hand-made symbol file: date, open..adj close, volume.
    type HandRow<'a> = (&'a str, [Option<f64>; 5], Option<i64>);

    fn write_symbol_file(path: &Path, rows: &[HandRow]) {
        let mut symbol = StringBuilder::new();
        let mut name = StringBuilder::new();
        let mut date = StringBuilder::new();
        let mut prices: [Float64Builder; 5] = std::array::from_fn(|_| Float64Builder::new());
        let mut volume = Int64Builder::new();
        for (d, p, v) in rows {
            symbol.append_value("ABC");
            name.append_value("Abc Corp");
            date.append_value(d);
            for (b, x) in prices.iter_mut().zip(p) {
                b.append_option(*x);
            }
            volume.append_option(*v);
        }
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(symbol.finish()), Arc::new(name.finish()), Arc::new(date.finish())];
        columns.extend(prices.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(volume.finish()));
        let mut fields = vec![
            Field::new(SYMBOL, DataType::Utf8, false),
            Field::new(SECURITY_NAME, DataType::Utf8, false),
            Field::new(DATE, DataType::Utf8, false),
        ];
        fields.extend(PRICES.map(|p| Field::new(p, DataType::Float64, true)));
        fields.push(Field::new(VOLUME, DataType::Int64, true));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
        let mut writer =
            ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        let _ = writer.close().expect("close");
    }

    fn read_all(path: &Path) -> RecordBatch {
        let reader = open_parquet(path).expect("open").build().expect("reader");
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
        arrow_select::concat::concat_batches(&feature_schema(), &batches).expect("concat")
    }

    fn f64s(batch: &RecordBatch, name: &str) -> Vec<f64> {
        let column = batch.column_by_name(name).expect("column");
        column.as_any().downcast_ref::<Float64Array>().expect("Float64").values().to_vec()
    }

    fn strs(batch: &RecordBatch, name: &str) -> Vec<String> {
        let column = batch.column_by_name(name).expect("column");
        let column = column.as_any().downcast_ref::<StringArray>().expect("Utf8");
        column.iter().map(|v| v.unwrap_or_default().to_string()).collect()
    }

    fn p(x: f64) -> [Option<f64>; 5] {
        [Some(x), Some(x + 1.0), Some(x - 1.0), Some(x), Some(x / 2.0)]
    }

    #[test]
    fn drops_nulls_and_duplicates_orders_by_date_and_adds_features() {
        let input = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let mut with_null = p(9.0);
        with_null[2] = None;
        let mut with_nan = p(9.0);
        with_nan[0] = Some(f64::NAN);
        let rows: Vec<HandRow> = vec![
            ("2020-01-03", p(12.0), Some(300)),
            ("2020-01-01", p(10.0), Some(100)),
            ("2020-01-02", with_null, Some(900)),
            ("2020-01-01", p(10.0), Some(100)), // a duplicate of the second row
            ("2020-01-06", p(14.0), None),
            ("2020-01-02", p(11.0), Some(200)),
            ("2020-01-07", with_nan, Some(900)),
            ("2020-01-06", p(16.0), Some(400)), // same date as a dropped row, other values
            ("2020-01-03", p(12.0), Some(301)), // same date and prices, other volume: kept
        ];
        write_symbol_file(&input.path().join("ABC.parquet"), &rows);
        let stats = features(input.path(), out.path()).expect("features");
        assert_eq!(
            stats,
            FeatureStats {
                files: 1,
                rows_in: 9,
                nulls_removed: 3,
                duplicates_removed: 1,
                rows_out: 5,
                bytes_out: std::fs::metadata(out.path().join("ABC.parquet")).expect("output").len(),
            }
        );
        let batch = read_all(&out.path().join("ABC.parquet"));
        assert_eq!(batch.schema(), feature_schema());
        assert_eq!(strs(&batch, DATE), ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-03", "2020-01-06"]);
        let volume = batch.column_by_name(VOLUME).expect("Volume");
        let volume = volume.as_any().downcast_ref::<Int64Array>().expect("Int64").values().to_vec();
        assert_eq!(volume, [100, 200, 300, 301, 400]);
        assert_eq!(f64s(&batch, "Open"), [10.0, 11.0, 12.0, 12.0, 16.0]);
        // Means of 100; 100, 200; ... 100 to 400; medians of the Adj Close 5; 5, 5.5; ... 5 to 8.
        close(&f64s(&batch, VOL_MOVING_AVG), &[100.0, 150.0, 200.0, 225.25, 260.2]);
        close(&f64s(&batch, ADJ_CLOSE_ROLLING_MED), &[5.0, 5.25, 5.5, 5.75, 6.0]);
        assert_eq!(strs(&batch, SYMBOL), ["ABC"; 5]);
        // No temporary left behind.
        let names: Vec<String> = std::fs::read_dir(out.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ABC.parquet"]);
    }

    #[test]
    fn a_window_of_30_slides() {
        let input = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        // 40 increasing dates (text: they need not be real days), volume i, adj close 2i.
        let dates: Vec<String> = (0..40).map(|i| format!("2020-02-{i:02}")).collect();
        let rows: Vec<HandRow> = dates
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let x = i as f64 + 1.0;
                (d.as_str(), [Some(x), Some(x), Some(x), Some(x), Some(2.0 * x)], Some(i as i64 + 1))
            })
            .collect();
        write_symbol_file(&input.path().join("X.parquet"), &rows);
        features(input.path(), out.path()).expect("features");
        let batch = read_all(&out.path().join("X.parquet"));
        let mean = f64s(&batch, VOL_MOVING_AVG);
        let median = f64s(&batch, ADJ_CLOSE_ROLLING_MED);
        // Row 29 sees 1..=30; row 39 sees 11..=40 (mean 25.5, adj close median 2 * 25.5).
        assert_eq!((mean[29], median[29]), (15.5, 31.0));
        assert_eq!((mean[39], median[39]), (25.5, 51.0));
        // An odd count at the start: row 2 sees 1, 2, 3.
        assert_eq!((mean[2], median[2]), (2.0, 4.0));
    }

    fn write_batch(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let mut writer =
            ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        let _ = writer.close().expect("close");
    }

    #[test]
    fn names_a_missing_column_and_a_wrong_type() {
        let input = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        write_batch(&input.path().join("A.parquet"), vec![(SYMBOL, text("A"))]);
        let e = features(input.path(), out.path()).expect_err("missing columns");
        assert_eq!(
            e.to_string(),
            format!("{} has no column `Security Name` (columns: Symbol)", input.path().join("A.parquet").display())
        );
        assert!(!e.is_retryable());

        let days = Arc::new(Int64Array::from(vec![20_200_401])) as ArrayRef;
        write_batch(
            &input.path().join("A.parquet"),
            vec![(SYMBOL, text("A")), (SECURITY_NAME, text("A Inc.")), (DATE, days)],
        );
        let e = features(input.path(), out.path()).expect_err("a number for a date");
        assert!(
            matches!(&e, FeaturesError::ColumnType { column, found: DataType::Int64, .. } if column == DATE),
            "{e}"
        );

        let e = features(input.path(), input.path()).expect_err("same directory");
        assert!(matches!(e, FeaturesError::OutputIsInput { .. }), "{e}");
        let e = features(&input.path().join("nowhere"), out.path()).expect_err("no directory");
        assert!(matches!(e, FeaturesError::ReadDir { .. }) && e.is_retryable(), "{e}");
    }

    #[test]
    fn removes_the_generated_dirt_and_is_deterministic() {
        use shardflow_generate::stocks::{ETFS_DIR, STOCKS_DIR, StocksOptions, generate_stocks};
        let data = tempfile::tempdir().expect("tempdir");
        let opts = StocksOptions { rows: 60_000, symbols: 6, seed: 5, out: data.path().to_path_buf() };
        let manifest = generate_stocks(&opts, &indicatif::ProgressBar::hidden()).expect("generate");
        let run = |threads: usize, out: &Path| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            let etfs = pool.install(|| features(&data.path().join(ETFS_DIR), &out.join(ETFS_DIR))).expect("etfs");
            let stocks =
                pool.install(|| features(&data.path().join(STOCKS_DIR), &out.join(STOCKS_DIR))).expect("stocks");
            (etfs, stocks)
        };
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let (etfs, stocks) = run(1, a.path());
        assert_eq!(run(2, b.path()), (etfs, stocks));
        assert_eq!((etfs.files, stocks.files), (1, 5));
        let mut all = etfs;
        all.add(&stocks);
        assert_eq!(all.rows_in, 60_000);
        assert_eq!((all.nulls_removed, all.duplicates_removed), (manifest.nulls, manifest.duplicates));
        assert_eq!(all.rows_out, 60_000 - manifest.nulls - manifest.duplicates);
        for f in &manifest.files {
            let (x, y) = (std::fs::read(a.path().join(&f.file)), std::fs::read(b.path().join(&f.file)));
            assert_eq!(x.expect("read"), y.expect("read"), "{} differs between thread counts", f.file);
        }

        // Merge: ETFs first, then stocks, each sorted by file name.
        let merged = a.path().join("merged/features.parquet");
        let dirs = [a.path().join(ETFS_DIR), a.path().join(STOCKS_DIR)];
        let stats = merge(&[&dirs[0], &dirs[1]], &merged).expect("merge");
        assert_eq!((stats.files, stats.rows), (6, all.rows_out));
        assert_eq!(stats.bytes, std::fs::metadata(&merged).expect("merged").len());
        let batch = read_all(&merged);
        let symbols = strs(&batch, SYMBOL);
        let mut order: Vec<String> = symbols.clone();
        order.dedup();
        let mut etf_symbols: Vec<String> = manifest.files[..1].iter().map(|f| f.symbol.clone()).collect();
        let mut stock_symbols: Vec<String> = manifest.files[1..].iter().map(|f| f.symbol.clone()).collect();
        etf_symbols.sort();
        stock_symbols.sort();
        etf_symbols.extend(stock_symbols);
        assert_eq!(order, etf_symbols);
        assert_eq!(batch.num_rows() as u64, all.rows_out);

        // A file of other columns is refused and nothing is written.
        let refused = a.path().join("refused.parquet");
        let e = merge(&[&data.path().join(ETFS_DIR)], &refused).expect_err("not features");
        assert!(matches!(e, FeaturesError::NotFeatures { .. }), "{e}");
        assert!(!refused.exists());
        let e = merge(&[&dirs[0]], &dirs[0].join(&manifest.files[0].file[ETFS_DIR.len() + 1..])).expect_err("input");
        assert!(matches!(e, FeaturesError::OutputIsInput { .. }), "{e}");
    }
}
