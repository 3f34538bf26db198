//! Tables of several columns: a Parquet or CSV shard read as Arrow batches of the columns
//! wanted, a seeded row sample of every shard, and one model fitted column by column,
//! each column's kind given by `fit.kinds` / `fit.modes` or inferred.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, Float64Array, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};
use indicatif::ProgressBar;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shardflow_backends::config::{FitConfig, FitStrategy};
use shardflow_model::{ColumnKind, ColumnModel, FORMAT_VERSION, Model};

use crate::fit::{ColumnMetadata, FitError, Metadata, natural_key};
use crate::shard::{ShardError, ShardStats, sample_rows};

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
/// [`FitError::NoShards`] when there are none or the directory cannot be read.
pub fn list_table_shards(dir: &Path) -> Result<Vec<PathBuf>, FitError> {
    let none = || FitError::NoShards(dir.display().to_string());
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
    Csv { file: File, schema: SchemaRef },
}

/// A shard whose header was read: its full schema and the columns wanted.
pub struct Table {
    shown: String,
    source: Source,
    /// Indices of the wanted columns in the file, in file order.
    indices: Vec<usize>,
    schema: SchemaRef,
}

fn open_file(path: &Path) -> Result<File, ShardError> {
    let shown = path.display().to_string();
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ShardError::NotFound(shown),
        _ => ShardError::Read { path: shown, reason: e.to_string() },
    })
}

impl Table {
    /// Open a Parquet or CSV shard and find `columns` in it (every column when empty).
    /// A CSV file's types are inferred from its first rows, or taken from `csv_schema`
    /// (to read every shard of a dataset alike).
    ///
    /// # Errors
    /// [`ShardError`] saying what is wrong with the file or which column is missing.
    pub fn open(path: &Path, columns: &[String], csv_schema: Option<SchemaRef>) -> Result<Self, ShardError> {
        let shown = path.display().to_string();
        let file = open_file(path)?;
        let (source, full) = if is_csv(path) {
            let schema = match csv_schema {
                Some(schema) => schema,
                None => {
                    let format = arrow_csv::reader::Format::default().with_header(true);
                    let (schema, _) = format
                        .infer_schema(&file, Some(CSV_INFER_ROWS))
                        .map_err(|e| ShardError::NotCsv { path: shown.clone(), reason: e.to_string() })?;
                    Arc::new(schema)
                }
            };
            (Source::Csv { file: open_file(path)?, schema: schema.clone() }, schema)
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

    /// Rows in the shard: from the footer for Parquet, by reading it for CSV.
    ///
    /// # Errors
    /// [`ShardError::Read`] when a CSV file cannot be read to the end.
    pub fn rows(path: &Path, csv_schema: Option<SchemaRef>) -> Result<u64, ShardError> {
        let table = Self::open(path, &[], csv_schema)?;
        if let Source::Parquet(builder) = &table.source {
            return Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0));
        }
        let mut rows = 0;
        for batch in table.batches(BATCH_ROWS)? {
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
            Source::Csv { file, schema } => {
                let reader = arrow_csv::ReaderBuilder::new(schema)
                    .with_header(true)
                    .with_batch_size(batch_rows)
                    .with_projection(self.indices)
                    .build(file)
                    .map_err(|e| ShardError::NotCsv { path: self.shown.clone(), reason: e.to_string() })?;
                Ok(Box::new(reader.map(move |b| b.map_err(&read))))
            }
        }
    }
}

/// What one shard's pass saw of each column.
#[derive(Clone, Debug)]
pub(crate) struct ColumnStats {
    nulls: u64,
    min: f64,
    max: f64,
}

/// A seeded sample of up to `n` rows of a shard (every row when it has no more), the
/// shard's row count and per-column statistics over all its rows.
pub(crate) fn sample_table(
    path: &Path,
    columns: &[String],
    csv_schema: Option<SchemaRef>,
    n: usize,
    seed: u64,
) -> Result<(RecordBatch, u64, Vec<ColumnStats>), ShardError> {
    let rows = Table::rows(path, csv_schema.clone())?;
    let table = Table::open(path, columns, csv_schema)?;
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
fn conform(path: &Path, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ShardError> {
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

/// Fit one model over every shard: a seeded sample of up to
/// `fit.sample_rows_per_shard` rows from each (in order), then each column's encoding
/// (see [`shardflow_model::fit_column`]), in the order of `fit.columns` or of the first
/// shard.
///
/// # Errors
/// [`FitError`] when a shard is unusable, a configured column is missing, or a column
/// cannot be fitted.
pub fn fit_table(
    shards: &[PathBuf],
    dataset: &str,
    config: &FitConfig,
    progress: &ProgressBar,
) -> Result<(Model, Metadata), FitError> {
    let first = shards.first().ok_or_else(|| FitError::NoShards("the request".into()))?;
    let named: Vec<String> = config.kinds.keys().chain(config.modes.keys()).cloned().collect();
    // Configured kinds and modes must name real columns, even when fit.columns is empty.
    Table::open(first, &named, None)?;
    let head = Table::open(first, &config.columns, None)?;
    let csv_schema = head.csv_schema();
    let schema = head.schema();
    let order: Vec<String> = if config.columns.is_empty() {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    } else {
        config.columns.clone()
    };
    let seed = config.mixture.seed;
    let mut parts = Vec::with_capacity(shards.len());
    let mut shard_stats = Vec::with_capacity(shards.len());
    let mut columns_stats: Vec<ColumnStats> = Vec::new();
    let mut rows_total = 0;
    for (i, path) in shards.iter().enumerate() {
        let shard_seed = seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
        let csv = if is_csv(path) { csv_schema.clone() } else { None };
        let (sample, rows, stats) = sample_table(path, &order, csv, config.sample_rows_per_shard, shard_seed)?;
        let sample = conform(path, sample, &schema)?;
        shard_stats.push(ShardStats {
            file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            rows,
            nulls: stats.iter().map(|s| s.nulls).sum(),
            sampled: sample.num_rows() as u64,
            min: f64::NAN,
            max: f64::NAN,
        });
        if columns_stats.is_empty() {
            columns_stats = stats;
        } else {
            for (all, s) in columns_stats.iter_mut().zip(stats) {
                all.nulls += s.nulls;
                all.min = all.min.min(s.min);
                all.max = all.max.max(s.max);
            }
        }
        rows_total += rows;
        parts.push(sample);
        progress.inc(1);
    }
    let read =
        |e: arrow_schema::ArrowError| ShardError::Read { path: first.display().to_string(), reason: e.to_string() };
    let sample = arrow_select::concat::concat_batches(&schema, &parts).map_err(read)?;
    drop(parts);

    let params = config.mixture.clone().check().map_err(|source| FitError::Model { column: "*".into(), source })?;
    let mut columns = Vec::with_capacity(order.len());
    let mut metadata_columns = Vec::with_capacity(order.len());
    for name in &order {
        let Some((index, _)) = schema.column_with_name(name) else { continue };
        let values = sample.column(index);
        let column = shardflow_model::fit_column(name, values.as_ref(), &config.spec(name), &config.inference, &params)
            .map_err(|source| FitError::Model { column: name.clone(), source })?;
        metadata_columns.push(column_metadata(&column, &columns_stats[index], rows_total, sample.num_rows()));
        columns.push(column);
    }
    let model = Model::new(dataset, columns);
    model.check().map_err(|source| FitError::Model { column: "*".into(), source })?;
    let metadata = Metadata {
        model_id: model.model_id.clone(),
        format_version: FORMAT_VERSION,
        dataset: dataset.to_string(),
        seed,
        // Tables pool their samples whatever fit.strategy says (see the README).
        strategy: FitStrategy::Pooled,
        sample_rows_per_shard: config.sample_rows_per_shard,
        created_at: shardflow_backends::index::unix_now(),
        columns: metadata_columns,
        shards: shard_stats,
    };
    Ok((model, metadata))
}

fn column_metadata(column: &ColumnModel, stats: &ColumnStats, rows: u64, sampled: usize) -> ColumnMetadata {
    let numeric = column.kind != ColumnKind::Categorical && stats.min <= stats.max;
    let mixture = column.mixture.as_ref();
    ColumnMetadata {
        name: column.name.clone(),
        kind: column.kind.to_string(),
        min: if numeric { stats.min } else { f64::NAN },
        max: if numeric { stats.max } else { f64::NAN },
        rows,
        nulls: stats.nulls,
        sampled: sampled as u64,
        valid_components: column.output_fields().len() - usize::from(mixture.is_some()),
        n_iter: mixture.map_or(0, |m| m.n_iter),
        converged: mixture.is_none_or(|m| m.converged),
    }
}

/// Whether a dataset is the single-column `Amount` kind that [`crate::fit::fit_shards`]
/// fits (Parquet shards whose only column is a number named `column`, and no columns
/// named in the configuration), rather than a table fitted column by column.
///
/// # Errors
/// [`ShardError`] when the first shard cannot be read.
pub fn is_single_column(shards: &[PathBuf], column: &str, config: &FitConfig) -> Result<bool, ShardError> {
    if config.names_columns() || shards.iter().any(|p| is_csv(p)) {
        return Ok(false);
    }
    let Some(first) = shards.first() else { return Ok(false) };
    let schema: Arc<Schema> = Table::open(first, &[], None)?.schema();
    Ok(schema.fields().len() == 1 && schema.field(0).name() == column && schema.field(0).data_type().is_numeric())
}
