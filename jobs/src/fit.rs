//! Fitting a model over every shard of a dataset, one path for every table: a seeded row
//! sample from each shard (Parquet or CSV, read `threads` at a time), then each column's
//! encoding — its kind given by `fit.kinds` / `fit.modes` or inferred, its mixture fitted
//! over the shards' samples as `fit.strategy` says (pooled by default, or shard after shard:
//! warm start or streaming update), or, for `every_row`, refitted on every row of every
//! shard in one more pass (exact histograms, merged). Written as `model.json` and `metadata.json` and
//! registered in ClickHouse.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{Array, RecordBatch};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use shardflow_config::{FitConfig, FitStrategy};
use shardflow_model::{
    ColumnKind, ColumnModel, FORMAT_VERSION, Histogram, Model, ModelError, TailComparison, ValidMixtureParams,
    compare_tails, fit_column_in_parts, fit_histogram,
};
use shardflow_storage::objects::Root;
use shardflow_storage::shard::{AMOUNT, ShardError, ShardStats};
use shardflow_storage::table::{ColumnStats, Table, conform, is_csv, sample_table};
use shardflow_storage::write_atomically;
use shardflow_store::{DatasetRow, Index, IndexError, ModelRow, model_source};

/// Why a fit failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No shard to fit on.
    #[error("no shards to fit on in {0}")]
    NoShards(String),
    /// A shard is unusable.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The mixture could not be fitted.
    #[error("fitting column `{column}`: {source}{}", advice(source))]
    Model {
        /// The column.
        column: String,
        /// The cause.
        source: ModelError,
    },
    /// Writing the model files failed.
    #[error("writing the model to {path}: {source}")]
    Write {
        /// Directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Registering in ClickHouse failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A fit on the consumer group failed: the broker, a member's report, or no answer.
    #[error("fit on the consumer group: {0}")]
    Group(String),
}

/// What a user of the configuration can do about a fit the model refused: the model
/// states facts, the caller knows which settings lead there.
pub fn advice(error: &ModelError) -> &'static str {
    match error {
        ModelError::NonFinite(_) => "; drop NaN and infinities first",
        ModelError::TooManyCategories { .. } => {
            "; drop the column from fit.columns, or raise fit.inference.max_categories"
        }
        ModelError::NoValues(_) => "; drop the column, or declare it categorical in fit.kinds",
        ModelError::NoModes(_) => "; give its modes in fit.modes, or lower fit.inference.mode_min_share",
        ModelError::Version { .. } | ModelError::IdMismatch { .. } => "; refit with `producer fit`",
        _ => "",
    }
}

/// `metadata.json`: what the model was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The model's id.
    pub model_id: String,
    /// `model.json` format version.
    pub format_version: u32,
    /// Dataset.
    pub dataset: String,
    /// Seed of the row samples and the k-means start.
    pub seed: u64,
    /// How the shards' samples were combined.
    pub strategy: FitStrategy,
    /// Rows sampled per shard at most.
    pub sample_rows_per_shard: usize,
    /// Unix seconds.
    pub created_at: u32,
    /// Per column.
    pub columns: Vec<ColumnMetadata>,
    /// Per shard.
    pub shards: Vec<ShardStats>,
}

/// One column in `metadata.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnMetadata {
    /// Name.
    pub name: String,
    /// `continuous`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Smallest value over all shards.
    pub min: f64,
    /// Largest value over all shards.
    pub max: f64,
    /// Rows over all shards.
    pub rows: u64,
    /// Null or non-finite rows over all shards.
    pub nulls: u64,
    /// Values the mixture was fitted on.
    pub sampled: u64,
    /// Mixture components kept.
    pub valid_components: usize,
    /// Iterations the (last) fit ran.
    pub n_iter: usize,
    /// Whether the lower bound settled.
    pub converged: bool,
    /// Continuous and mixed: rows clipped and share of the sum lost on the fitting sample
    /// without and with the log tail, and which the model uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tails: Option<TailComparison>,
}

/// Whether shards of `schema` (the columns fitted) are the main dataset: one number named
/// `Amount`, about which the configuration says nothing.
fn is_amount(schema: &arrow_schema::Schema, config: &FitConfig) -> bool {
    schema.fields().len() == 1
        && schema.field(0).name() == AMOUNT
        && schema.field(0).data_type().is_numeric()
        && config.kinds.is_empty()
        && config.modes.is_empty()
}

/// The dataset a directory of shards is, when not named: `Amount` for the main dataset
/// (see [`fit`]), else the directory's name.
///
/// # Errors
/// [`FitError`] when there is no shard or the first cannot be read.
pub fn dataset_of(dir: &Path, shards: &[PathBuf], config: &FitConfig) -> Result<String, FitError> {
    let first = shards.first().ok_or_else(|| FitError::NoShards(dir.display().to_string()))?;
    if is_amount(&Table::open(first, &config.columns, None)?.schema(), config) {
        return Ok(AMOUNT.to_string());
    }
    let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()));
    Ok(name.unwrap_or_else(|| "table".into()))
}

/// One shard's seeded sample, its row count and its columns' statistics.
pub type Sampled = Result<(RecordBatch, u64, Vec<ColumnStats>), ShardError>;

/// What a fit learns from its first shard before reading any other: the columns fitted (in
/// the order of `fit.columns` or of the shard), their schema, the schema further CSV shards
/// are read with, and whether the table is the main dataset.
#[derive(Clone, Debug)]
pub struct Head {
    csv_schema: Option<arrow_schema::SchemaRef>,
    schema: arrow_schema::SchemaRef,
    order: Vec<String>,
    amount: bool,
}

impl Head {
    /// Read the head of `first`; configured kinds, modes and tails must name real columns,
    /// even when `fit.columns` is empty.
    ///
    /// # Errors
    /// [`FitError::Shard`] when the shard is unusable or lacks a configured column.
    pub fn open(first: &Path, config: &FitConfig) -> Result<Self, FitError> {
        let named: Vec<String> =
            config.kinds.keys().chain(config.modes.keys()).chain(config.tails.keys()).cloned().collect();
        Table::open(first, &named, None)?;
        let table = Table::open(first, &config.columns, None)?;
        Ok(Self { csv_schema: table.csv_schema(), ..Self::of_schema(table.schema(), config) })
    }

    /// The head of a table known only by its schema (a sample another process drew): what
    /// the submitter of a fit on the consumer group, which may not see any shard, fits with.
    pub fn of_schema(schema: arrow_schema::SchemaRef, config: &FitConfig) -> Self {
        let order: Vec<String> = if config.columns.is_empty() {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        } else {
            config.columns.clone()
        };
        Self { csv_schema: None, amount: is_amount(&schema, config), schema, order }
    }

    /// The seeded sample of shard `index` at `path`: the seed depends on the index and
    /// `fit.mixture.seed` alone, so any process that samples the shard draws the same rows.
    pub fn sample(&self, path: &Path, index: usize, config: &FitConfig) -> Sampled {
        let shard_seed = config.mixture.seed ^ (index as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
        let csv = if is_csv(path) { self.csv_schema.clone() } else { None };
        let (sample, rows, stats) =
            sample_table(path, &self.order, csv, config.sample_rows_per_shard.get(), shard_seed)?;
        Ok((conform(path, sample, &self.schema)?, rows, stats))
    }

    /// Add every row of the shard at `path` to `histograms`, one per column of `columns`
    /// (the sample fit's, which fix each value's place in the mixture's space).
    ///
    /// # Errors
    /// [`FitError`] when the shard cannot be read or a column's values are unusable.
    pub fn add_to_histograms(
        &self,
        path: &Path,
        columns: &[ColumnModel],
        histograms: &mut Histograms,
    ) -> Result<(), FitError> {
        let numeric: Vec<String> =
            columns.iter().filter(|c| c.kind != ColumnKind::Categorical).map(|c| c.name.clone()).collect();
        let csv = if is_csv(path) { self.csv_schema.clone() } else { None };
        for batch in Table::open(path, &numeric, csv)?.batches(EVERY_ROW_BATCH)? {
            let batch = batch?;
            for (column, histogram) in columns.iter().zip(histograms.iter_mut()) {
                let (Some(histogram), Some(values)) = (histogram, batch.column_by_name(&column.name)) else {
                    continue;
                };
                column
                    .add_to_histogram(values.as_ref(), histogram)
                    .map_err(|source| FitError::Model { column: column.name.clone(), source })?;
            }
        }
        Ok(())
    }
}

/// Per continuous or mixed column, its histograms (in column order); `None` for the
/// categorical ones.
pub type Histograms = Vec<Option<Histogram>>;

/// Empty histograms for `columns`.
pub fn empty_histograms(columns: &[ColumnModel]) -> Histograms {
    columns.iter().map(|c| (c.kind != ColumnKind::Categorical).then(Histogram::new)).collect()
}

/// Add `part`'s rows to `all`: exact, so in any order.
pub fn merge_histograms(all: &mut Histograms, part: &Histograms) {
    for (all, part) in all.iter_mut().zip(part) {
        if let (Some(all), Some(part)) = (all, part) {
            all.merge(part);
        }
    }
}

/// The mixture fitted on the shards' samples, before any every-row pass.
pub struct SampleFit {
    /// The columns as the samples fitted them.
    pub columns: Vec<ColumnModel>,
    metadata_columns: Vec<ColumnMetadata>,
    indices: Vec<usize>,
    columns_stats: Vec<ColumnStats>,
    rows_total: u64,
    shard_stats: Vec<ShardStats>,
    params: ValidMixtureParams,
}

impl SampleFit {
    /// Fit every column of `schema` (in `order`) on the shards' samples, `files` naming the
    /// shards in the same order as `samples`.
    ///
    /// # Errors
    /// [`FitError`] for a shard that could not be sampled or a column that cannot be fitted.
    pub fn new(
        head: &Head,
        files: &[String],
        samples: Vec<Sampled>,
        config: &FitConfig,
    ) -> Result<SampleFit, FitError> {
        let (schema, amount) = (&head.schema, head.amount);
        let mut parts = Vec::with_capacity(samples.len());
        let mut shard_stats = Vec::with_capacity(samples.len());
        let mut columns_stats: Vec<ColumnStats> = Vec::new();
        let mut rows_total = 0;
        for (sampled, file) in samples.into_iter().zip(files) {
            let (sample, rows, stats) = sampled?;
            let numeric = |s: &ColumnStats| s.min <= s.max;
            shard_stats.push(ShardStats {
                file: file.clone(),
                rows,
                nulls: stats.iter().map(|s| s.nulls).sum(),
                sampled: sample.num_rows() as u64,
                min: stats.iter().filter(|s| numeric(s)).map(|s| s.min).fold(f64::INFINITY, f64::min),
                max: stats.iter().filter(|s| numeric(s)).map(|s| s.max).fold(f64::NEG_INFINITY, f64::max),
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
        }
        let first = files.first().map_or("the shards", String::as_str);
        let read = |e: arrow_schema::ArrowError| ShardError::Read { path: first.to_string(), reason: e.to_string() };
        let lengths: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
        let sample = arrow_select::concat::concat_batches(schema, &parts).map_err(read)?;
        drop(parts);

        let params = config.mixture.clone().check().map_err(|source| FitError::Model { column: "*".into(), source })?;
        let mut columns = Vec::with_capacity(head.order.len());
        let mut metadata_columns = Vec::with_capacity(head.order.len());
        let mut indices = Vec::with_capacity(head.order.len());
        for name in &head.order {
            let Some((index, _)) = schema.column_with_name(name) else { continue };
            indices.push(index);
            let mut spec = config.spec(name);
            if amount {
                spec.kind = Some(ColumnKind::Continuous);
            }
            let values = sample.column(index);
            let mut column = fit_column_in_parts(
                name,
                values.as_ref(),
                &lengths,
                &spec,
                &config.inference,
                &params,
                config.strategy,
            )
            .map_err(|source| FitError::Model { column: name.clone(), source })?;
            if amount {
                // The main dataset's column is continuous by definition, neither configured nor inferred.
                column.kind_source = None;
            }
            let sampled = values.len() - values.null_count();
            let tails =
                compare_tails(&column, values.as_ref(), &lengths, &spec, &config.inference, &params, config.strategy)
                    .map_err(|source| FitError::Model { column: name.clone(), source })?;
            let stats = columns_stats.get(index).ok_or_else(|| {
                read(arrow_schema::ArrowError::SchemaError(format!("no statistics for column `{name}`")))
            })?;
            metadata_columns.push(ColumnMetadata { tails, ..column_metadata(&column, stats, rows_total, sampled) });
            columns.push(column);
        }
        Ok(SampleFit { columns, metadata_columns, indices, columns_stats, rows_total, shard_stats, params })
    }

    /// `fit.strategy = every_row`: each continuous or mixed column's mixture refitted on the
    /// merged histograms of every row of every shard (see [`Head::add_to_histograms`]).
    ///
    /// # Errors
    /// [`FitError::Model`] when a column's grid cannot be fitted.
    pub fn refit(&mut self, merged: Histograms) -> Result<(), FitError> {
        for (i, histogram) in merged.into_iter().enumerate() {
            let Some(histogram) = histogram.filter(|h| !h.is_empty()) else { continue };
            let (Some(column), Some(meta), Some(&index)) =
                (self.columns.get_mut(i), self.metadata_columns.get_mut(i), self.indices.get(i))
            else {
                continue;
            };
            let mixture = fit_histogram(&histogram, &self.params)
                .map_err(|source| FitError::Model { column: column.name.clone(), source })?;
            *column = column.clone().with_mixture(mixture);
            let fresh = column_metadata(column, &self.columns_stats[index], self.rows_total, 0);
            *meta = ColumnMetadata { tails: meta.tails.take(), sampled: histogram.rows(), ..fresh };
        }
        Ok(())
    }

    /// Whether any column has a histogram to build (continuous or mixed).
    pub fn has_numeric(&self) -> bool {
        self.columns.iter().any(|c| c.kind != ColumnKind::Categorical)
    }

    /// The model and its metadata.
    ///
    /// # Errors
    /// [`FitError::Model`] when the model does not check.
    pub fn finish(self, dataset: &str, config: &FitConfig) -> Result<(Model, Metadata), FitError> {
        let model = Model::new(dataset, self.columns);
        model.check().map_err(|source| FitError::Model { column: "*".into(), source })?;
        let metadata = Metadata {
            model_id: model.model_id.clone(),
            format_version: FORMAT_VERSION,
            dataset: dataset.to_string(),
            seed: config.mixture.seed,
            strategy: config.strategy,
            sample_rows_per_shard: config.sample_rows_per_shard.get(),
            created_at: shardflow_store::unix_now(),
            columns: self.metadata_columns,
            shards: self.shard_stats,
        };
        Ok((model, metadata))
    }
}

/// Each shard's file name, as the metadata records it.
pub fn file_names(shards: &[PathBuf]) -> Vec<String> {
    shards.iter().map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()).collect()
}

/// Run `work` on every shard index, `threads` at a time; each worker folds its shards into
/// its own state (`init`), and the states come back in no particular order.
fn per_worker<S: Send>(
    shards: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(usize, &mut S) -> Result<(), FitError> + Sync,
) -> Vec<Result<S, FitError>> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, shards.max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut state = init();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= shards {
                            return Ok(state);
                        }
                        work(i, &mut state)?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(FitError::Shard(ShardError::Read {
                        path: "a fit".into(),
                        reason: "a fit thread failed".into(),
                    }))
                })
            })
            .collect()
    })
}

/// Fit one model over every shard: a seeded sample of up to `fit.sample_rows_per_shard`
/// rows from each (read `threads` at a time), then each column's encoding (see
/// [`shardflow_model::fit_column_in_parts`]), in the order of `fit.columns` or of the first
/// shard; for `every_row`, one more streaming pass over every row of every shard
/// ([`Head::add_to_histograms`], merged exactly) and each mixture refitted on its grid. A
/// dataset whose only column is a number named `Amount` (and that the configuration says
/// nothing about) is the main dataset: that column is continuous.
///
/// # Errors
/// [`FitError`] when a shard is unusable, a configured column is missing, or a column
/// cannot be fitted.
pub fn fit(
    shards: &[PathBuf],
    dataset: &str,
    config: &FitConfig,
    threads: usize,
    progress: &ProgressBar,
) -> Result<(Model, Metadata), FitError> {
    let first = shards.first().ok_or_else(|| FitError::NoShards("the request".into()))?;
    let head = Head::open(first, config)?;
    let mut samples: Vec<Option<Sampled>> = (0..shards.len()).map(|_| None).collect();
    let sampled = per_worker(shards.len(), threads, Vec::new, |i, done| {
        done.push((i, head.sample(&shards[i], i, config)));
        progress.inc(1);
        Ok(())
    });
    for worker in sampled {
        for (i, result) in worker? {
            samples[i] = Some(result);
        }
    }
    let samples = samples
        .into_iter()
        .zip(shards)
        .map(|(s, path)| {
            s.unwrap_or_else(|| {
                Err(ShardError::Read { path: path.display().to_string(), reason: "sampling thread failed".into() })
            })
        })
        .collect();
    let mut sample_fit = SampleFit::new(&head, &file_names(shards), samples, config)?;
    if config.strategy == FitStrategy::EveryRow && sample_fit.has_numeric() {
        progress.inc_length(shards.len() as u64);
        let columns = &sample_fit.columns;
        let parts = per_worker(
            shards.len(),
            threads,
            || empty_histograms(columns),
            |i, histograms| {
                head.add_to_histograms(&shards[i], columns, histograms)?;
                progress.inc(1);
                Ok(())
            },
        );
        let mut merged = empty_histograms(columns);
        for part in parts {
            merge_histograms(&mut merged, &part?);
        }
        sample_fit.refit(merged)?;
    }
    sample_fit.finish(dataset, config)
}

/// Rows per batch of the every-row pass.
const EVERY_ROW_BATCH: usize = 65_536;

/// Write `model.json` and `metadata.json` into `dir` (each atomically).
///
/// # Errors
/// [`FitError::Write`].
pub fn write_model(dir: &Path, model: &Model, metadata: &Metadata) -> Result<(), FitError> {
    let fail = |source| FitError::Write { path: dir.display().to_string(), source };
    let meta = serde_json::to_string_pretty(metadata).map_err(|e| fail(e.into()))?;
    write_atomically(&dir.join("model.json"), |f| std::io::Write::write_all(f, model.to_json().as_bytes()))
        .map_err(fail)?;
    write_atomically(&dir.join("metadata.json"), |f| std::io::Write::write_all(f, meta.as_bytes())).map_err(fail)
}

/// Save `model` under the model root, in its own directory (or prefix) named by its id:
/// `model.json` and `metadata.json`, each written atomically. Returns where it went.
///
/// # Errors
/// [`FitError::Write`] when a file or object cannot be written.
pub async fn save_model(root: &Root, model: &Model, metadata: &Metadata) -> Result<String, FitError> {
    match root {
        Root::Local(dir) => {
            let dir = dir.join(&model.model_id);
            let (model, metadata) = (model.clone(), metadata.clone());
            let at = dir.display().to_string();
            tokio::task::spawn_blocking(move || write_model(&dir, &model, &metadata))
                .await
                .map_err(|e| FitError::Write { path: at.clone(), source: std::io::Error::other(e) })??;
            Ok(at)
        }
        Root::Remote(root) => {
            let meta = serde_json::to_string_pretty(metadata)
                .map_err(|e| FitError::Write { path: root.url().to_string(), source: e.into() })?;
            for (name, bytes) in [("model.json", model.to_json()), ("metadata.json", meta)] {
                let key = root.key(&format!("{}/{name}", model.model_id));
                root.put(&key, bytes.into_bytes().into())
                    .await
                    .map_err(|e| FitError::Write { path: root.url_of(&key), source: std::io::Error::other(e) })?;
            }
            Ok(root.url_of(&root.key(&model.model_id)))
        }
    }
}

/// Register a written model in the `models` table; a dataset's first model becomes the
/// one it uses (recorded in `datasets`).
///
/// # Errors
/// [`FitError::Index`] when ClickHouse refuses.
pub async fn register(index: &Index, dir: &Path, model: &Model, metadata: &Metadata) -> Result<(), FitError> {
    register_at(index, &dir.display().to_string(), model, metadata).await
}

/// [`register`] for a model saved at `location` (a directory or an object-store prefix).
///
/// # Errors
/// [`FitError::Index`] when ClickHouse refuses.
pub async fn register_at(index: &Index, location: &str, model: &Model, metadata: &Metadata) -> Result<(), FitError> {
    let row = ModelRow {
        model_id: model.model_id.clone(),
        dataset: model.dataset.clone(),
        format_version: model.format_version,
        created_at: metadata.created_at,
        path: location.to_string(),
        components: u32::try_from(model.columns.iter().map(|c| c.one_hot.len()).sum::<usize>()).unwrap_or(u32::MAX),
        model_json: model.to_json(),
        metadata_json: serde_json::to_string(metadata).unwrap_or_default(),
    };
    index.insert_model(&row).await?;
    // A dataset's first model is the one it uses until told otherwise.
    if index.dataset(&model.dataset).await?.is_none_or(|d| d.model_id.is_empty()) {
        record_dataset(index, model, model_source::FIRST_FIT).await?;
    }
    Ok(())
}

/// Record that `model` (registered) is the one its dataset uses, and why (`source`, one
/// of [`model_source`]: `USE` for `producer model use` and `PUT /datasets/{name}/model`);
/// the dataset's columns are the model's input.
///
/// # Errors
/// When ClickHouse refuses.
pub async fn record_dataset(index: &Index, model: &Model, source: &str) -> Result<DatasetRow, IndexError> {
    let columns = serde_json::to_string(model.input_schema().as_ref()).unwrap_or_default();
    let dataset = DatasetRow::new(&model.dataset, &model.model_id, columns, source);
    index.insert_dataset(&dataset).await?;
    Ok(dataset)
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
        tails: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardflow_generate::{GenerateOptions, generate};
    use shardflow_model::Histogram;
    use shardflow_storage::table::list_shards;

    #[test]
    fn every_row_fits_the_merged_histogram_of_every_row() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let opts =
            GenerateOptions { rows: 60_000, shard_rows: 20_000, out: dir.path().to_path_buf(), seed: 3, threads: 2 };
        generate(&opts, &ProgressBar::hidden())?;
        let shards = list_shards(dir.path())?;
        let mut config = shardflow_config::Config::load(None)?.fit;
        config.sample_rows_per_shard = std::num::NonZeroUsize::new(1_000).ok_or_else(|| anyhow::anyhow!("zero"))?;
        config.strategy = FitStrategy::EveryRow;
        let (model, metadata) = fit(&shards, AMOUNT, &config, 2, &ProgressBar::hidden())?;
        let column = &model.columns[0];
        // Every finite row, read again here in shard order: the same histogram, the same fit.
        let mut histogram = Histogram::new();
        for path in &shards {
            for batch in Table::open(path, &[AMOUNT.to_string()], None)?.batches(4_096)? {
                column.add_to_histogram(batch?.column(0).as_ref(), &mut histogram)?;
            }
        }
        let params = config.mixture.clone().check()?;
        assert_eq!(column.mixture.as_ref(), Some(&fit_histogram(&histogram, &params)?));
        assert_eq!(metadata.columns[0].sampled, histogram.rows());
        assert!(histogram.rows() + metadata.columns[0].nulls <= 60_000 && histogram.rows() > 50_000);
        assert_eq!(metadata.strategy, FitStrategy::EveryRow);
        Ok(())
    }
}
