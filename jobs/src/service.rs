//! The job service: what `POST /jobs`, `POST /shards`, `POST /transforming_data` and the
//! CLI call. A submission is checked (the shard opens, has its column, chunks fit in a
//! message, a named model exists), its job row is written, and the answer comes at once;
//! fitting (when the dataset has no model yet) and publishing run in a task the service
//! owns, never in a request's future, and that task always records how the job ended.
//! A process that starts finds the jobs a previous one left `fitting` or `publishing` and
//! finishes them ([`JobService::resume`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use prometheus_client::metrics::counter::Counter;
use shardflow_config::{Config, FitConfig, PublishConfig};
use shardflow_model::Model;
use shardflow_query::{Input as QueryInput, QueryError, Session, Sink};
use shardflow_storage::PathError;
use shardflow_storage::objects::{Input, Patience, Storage};
use shardflow_storage::shard::{AMOUNT, ShardError};
use shardflow_storage::table::{Table, list_shards};
use shardflow_store::{Index, IndexError, JobRow, JobStatus, ModelRow, model_source};
use tokio::sync::{Mutex, Semaphore};
use tracing::{error, info, warn};

use shardflow_store::lineage::{Dataset, StageRun};

use crate::fit::{FitError, advice, fit, record_dataset, register_at, save_model};
use crate::publish::{PublishError, Published, Publisher, new_job, record_final};

/// Why a submission was refused; nothing was recorded or sent.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// `chunk_rows` is 0 or makes messages larger than the broker takes.
    #[error(
        "chunk_rows = {chunk_rows} must be at least 1 and make messages of at most kafka.message_max_bytes = {max_bytes} bytes"
    )]
    BadChunkRows {
        /// What was asked for.
        chunk_rows: usize,
        /// `kafka.message_max_bytes`.
        max_bytes: usize,
    },
    /// The shard cannot be used.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The model named is not registered.
    #[error("no model {0}")]
    NoModel(String),
    /// The model named is registered but cannot be loaded.
    #[error("registered model {model_id} cannot be loaded: {reason}")]
    ModelUnusable {
        /// The model.
        model_id: String,
        /// Why.
        reason: String,
    },
    /// The file's columns are not the model's.
    #[error(
        "the file's columns do not match model {model_id} of dataset `{dataset}`: {}",
        column_diff(missing, unexpected)
    )]
    Columns {
        /// The dataset.
        dataset: String,
        /// The model.
        model_id: String,
        /// Columns the model reads that the file lacks.
        missing: Vec<String>,
        /// Columns the file has that the model does not read.
        unexpected: Vec<String>,
    },
    /// The request named no dataset, and the file's columns match none registered.
    #[error(
        "name the dataset of a file with columns {columns} (`dataset` in the request): it has no numeric `Amount` column and matches no registered dataset"
    )]
    NoDataset {
        /// The file's columns, comma separated.
        columns: String,
    },
    /// A dataset name that is empty, longer than 128 characters or holds control characters.
    #[error("dataset name {0:?} must be 1 to 128 characters, none of them control characters")]
    BadDataset(String),
    /// The request named a model of another dataset.
    #[error("model {model_id} belongs to dataset `{model_dataset}`, not `{dataset}`")]
    WrongDataset {
        /// The model.
        model_id: String,
        /// Its dataset.
        model_dataset: String,
        /// The dataset the request named.
        dataset: String,
    },
    /// ClickHouse did not answer.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The input cannot be read from where it lies (its object store refused or is
    /// unreachable, or the local copy cannot be written).
    #[error(transparent)]
    Input(#[from] PathError),
    /// The job's `sql` does not parse, is not one query, or names a column or table the
    /// file lacks.
    #[error("{0}")]
    BadQuery(String),
    /// The job's `sql` failed while it ran over the file, or its result cannot be written.
    #[error("{0}")]
    QueryFailed(String),
}

impl From<QueryError> for SubmitError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadQuery(_) => SubmitError::BadQuery(e.to_string()),
            other => SubmitError::QueryFailed(other.to_string()),
        }
    }
}

fn column_diff(missing: &[String], unexpected: &[String]) -> String {
    let list = |names: &[String]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    match (missing.is_empty(), unexpected.is_empty()) {
        (false, false) => format!("missing {}; unexpected {}", list(missing), list(unexpected)),
        (false, true) => format!("missing {}", list(missing)),
        _ => format!("unexpected {}", list(unexpected)),
    }
}

/// What a submission names: a dataset, a model, both (which must agree) or neither (the
/// dataset is then told from the file's columns).
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// The dataset.
    pub dataset: Option<String>,
    /// The model, loaded ([`JobService::named_model`]).
    pub model: Option<Model>,
    /// The job's id when the caller chose it (an upload's job is named by its upload, so
    /// that a retried upload finds it); else a new one.
    pub job_id: Option<String>,
    /// A query over the file (the table `data`): the job publishes its result's rows and
    /// columns instead of the file's ([`JobService::query`]).
    pub sql: Option<String>,
}

/// Memory a job's query may hold (its operators spill to disk beyond it).
const QUERY_MEMORY: usize = 512 << 20;

/// Why waiting for a job did not end in every chunk transformed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Fitting or publishing failed.
    #[error("job {job_id} failed: {reason}; see /jobs/{job_id}")]
    Failed {
        /// The job.
        job_id: String,
        /// What its row says.
        reason: String,
    },
    /// Some chunks went to the dead-letter topic.
    #[error(
        "job {job_id}: {dead} of {chunks} chunks were dead-lettered (first, chunk {first_chunk}: {first_error}); see /jobs/{job_id}"
    )]
    DeadLetters {
        /// The job.
        job_id: String,
        /// Chunks dead-lettered.
        dead: u64,
        /// Chunks in all.
        chunks: u64,
        /// The first dead-lettered chunk.
        first_chunk: i64,
        /// Why it was.
        first_error: String,
    },
    /// Not done within the wait.
    #[error("job {job_id} has {done} of {chunks} chunks done; follow it at /jobs/{job_id}")]
    Timeout {
        /// The job.
        job_id: String,
        /// Chunks with outputs.
        done: u64,
        /// Chunks in all (0 while still publishing).
        chunks: u64,
    },
    /// The job has no row (it was never submitted here).
    #[error("no job {0}")]
    NotFound(String),
    /// ClickHouse did not answer.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A job accepted: its row is recorded and its work has started.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// Job id.
    pub job_id: String,
    /// `fitting` or `publishing`.
    pub status: JobStatus,
    /// Rows in the shard (from its footer).
    pub rows: u64,
    /// Chunks it will be cut into.
    pub chunks: u64,
}

/// What a finished wait found.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Job id.
    pub job_id: String,
    /// Rows transformed.
    pub rows: u64,
    /// Chunks transformed.
    pub chunks: u64,
}

/// Counters of the jobs this process published, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct JobCounters {
    /// Jobs whose every chunk the broker acknowledged.
    pub jobs: Counter,
    /// Rows published.
    pub rows: Counter,
    /// Chunks published.
    pub chunks: Counter,
}

/// Submits, runs, resumes and waits for jobs.
pub struct JobService {
    config: Config,
    index: Index,
    publisher: Publisher,
    storage: Storage,
    /// One fit at a time: jobs waiting for the same dataset's model share the first fit.
    fit_lock: Mutex<()>,
    /// `publish.max_jobs` jobs publish at once; the others wait here.
    publish_slots: Semaphore,
    counters: JobCounters,
}

impl JobService {
    /// Create the chunk topic when missing and connect the producer.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the topic.
    pub async fn new(config: Config, index: Index, storage: Storage) -> Result<Arc<Self>, PublishError> {
        let publisher = Publisher::new(&config, index.clone()).await?;
        let publish_slots = Semaphore::new(config.publish.max_jobs.get());
        Ok(Arc::new(Self {
            config,
            index,
            publisher,
            storage,
            fit_lock: Mutex::new(()),
            publish_slots,
            counters: JobCounters::default(),
        }))
    }

    /// The roots inputs come from and outputs and models go to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// A readable local file of `input`: a local input as it is; an object copied, streaming,
    /// to `.remote/<uuid>/<name>` under the first local data root (removed when the job has
    /// published). The second value is the copy's directory, when one was made.
    ///
    /// # Errors
    /// [`PathError`] when the object cannot be read or the copy written.
    pub async fn local_copy(&self, input: &Input) -> Result<(PathBuf, Option<PathBuf>), PathError> {
        match input {
            Input::Local(path) => Ok((path.clone(), None)),
            Input::Remote { root, key } => {
                let scratch = self.config.storage.local_data_root().unwrap_or(Path::new("."));
                let dir = scratch.join(".remote").join(uuid::Uuid::now_v7().to_string());
                let path = dir.join(input.file_name());
                let bytes = root.download(key, &path).await?;
                info!(source = %input.name(), bytes, copy = %path.display(), "copied the input from its object store");
                Ok((path, Some(dir)))
            }
        }
    }

    /// The publisher (for `/readyz`).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The counters of published jobs.
    pub fn counters(&self) -> &JobCounters {
        &self.counters
    }

    /// Check `chunk_rows` (default `publish.chunk_rows`) against the broker's largest message.
    ///
    /// # Errors
    /// [`SubmitError::BadChunkRows`].
    pub fn chunk_rows(&self, requested: Option<usize>) -> Result<usize, SubmitError> {
        let chunk_rows = requested.unwrap_or(self.config.publish.chunk_rows.get());
        let max_bytes = self.config.kafka.message_max_bytes;
        if chunk_rows == 0 || PublishConfig::largest_message(chunk_rows) > max_bytes {
            return Err(SubmitError::BadChunkRows { chunk_rows, max_bytes });
        }
        Ok(chunk_rows)
    }

    /// The model a request names, loaded; `None` when it names none.
    ///
    /// # Errors
    /// [`SubmitError::NoModel`] or [`SubmitError::ModelUnusable`].
    pub async fn named_model(&self, model_id: Option<&str>) -> Result<Option<Model>, SubmitError> {
        match model_id {
            Some(id) => Ok(Some(self.model(id).await?)),
            None => Ok(None),
        }
    }

    /// A registered model by id.
    ///
    /// # Errors
    /// [`SubmitError::NoModel`] or [`SubmitError::ModelUnusable`].
    pub async fn model(&self, model_id: &str) -> Result<Model, SubmitError> {
        let row = self.index.model(model_id).await?.ok_or_else(|| SubmitError::NoModel(model_id.to_string()))?;
        load(row)
    }

    /// Check the shard at `path` (confined by the caller) against `target`, record a job
    /// for it and start fitting (when its dataset has no model yet) and publishing in the
    /// background. Returns once the job row is written.
    ///
    /// The dataset is the one named, the named model's, or else told from the file: the
    /// registered dataset with exactly the file's columns, or `Amount` for a file with a
    /// numeric `Amount` column. The file must have exactly the model's columns, except for
    /// `Amount`, the default dataset, which reads its one column from any file.
    ///
    /// # Errors
    /// [`SubmitError`]: nothing was recorded or sent.
    pub async fn submit(
        self: &Arc<Self>,
        input: &Input,
        target: Target,
        chunk_rows: Option<usize>,
    ) -> Result<Submitted, SubmitError> {
        let chunk_rows = self.chunk_rows(chunk_rows)?;
        if let Some(name) = target.dataset.as_deref() {
            check_dataset_name(name)?;
        }
        let (local, copy) = self.local_copy(input).await?;
        let mut removing = LocalCopy(copy);
        let mut source = input.name();
        let local = match target.sql.as_deref() {
            Some(sql) => {
                let (result, dir) = self.query(&local, sql).await?;
                // The result is the job's shard and its source, so that a resumed job
                // publishes the same rows; the copy of the input is not needed any more.
                removing = LocalCopy(Some(dir));
                source = result.display().to_string();
                result
            }
            None => local,
        };
        let path = local.as_path();
        let checked = path.to_path_buf();
        let (schema, rows) = tokio::task::spawn_blocking(move || {
            let table = Table::open(&checked, &[], None)?;
            Ok::<_, ShardError>((table.schema(), table.num_rows()?))
        })
        .await
        .map_err(|e| ShardError::Read { path: path.display().to_string(), reason: e.to_string() })??;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let (dataset, model) = match (target.dataset, target.model) {
            (Some(dataset), Some(model)) if model.dataset != dataset => {
                return Err(SubmitError::WrongDataset {
                    model_id: model.model_id,
                    model_dataset: model.dataset,
                    dataset,
                });
            }
            (_, Some(model)) => (model.dataset.clone(), Some(model)),
            (Some(dataset), None) => {
                let model = self.dataset_model(&dataset).await?;
                (dataset, model)
            }
            (None, None) => {
                let dataset = self.dataset_of(&schema).await?;
                let model = self.dataset_model(&dataset).await?;
                (dataset, model)
            }
        };
        if let Some(model) = &model {
            check_columns(&columns, model)?;
        } else if dataset == AMOUNT && !columns.iter().any(|c| c == AMOUNT) {
            return Err(ShardError::MissingColumn {
                path: path.display().to_string(),
                column: AMOUNT.to_string(),
                available: columns.join(", "),
            }
            .into());
        }
        let status = if model.is_some() { JobStatus::Publishing } else { JobStatus::Fitting };
        let mut job = new_job(&source, &dataset, chunk_rows, status);
        if let Some(id) = target.job_id {
            job.job_id = id;
        }
        if let Some(model) = &model {
            job.model_id.clone_from(&model.model_id);
        }
        self.index.insert_job(&job).await?;
        let submitted =
            Submitted { job_id: job.job_id.clone(), status, rows, chunks: rows.div_ceil(chunk_rows as u64) };
        self.spawn(job, path.to_path_buf(), removing, model);
        Ok(submitted)
    }

    /// Run `sql` over the local file `path` (any format `producer convert` reads, told by
    /// its extension) and write the result to `queries/<uuid>/data.parquet` under the first
    /// local data root. Returns the result's path and its directory (the caller removes it
    /// once the job has published).
    ///
    /// # Errors
    /// [`SubmitError::BadQuery`] when the query is refused before it runs (nothing is
    /// written), [`SubmitError::QueryFailed`] when it fails while running.
    pub async fn query(&self, path: &Path, sql: &str) -> Result<(PathBuf, PathBuf), SubmitError> {
        let input = QueryInput::new(&path.to_string_lossy(), None)?;
        let options = self.config.storage.options();
        let session = Session::open(&input, &options, Patience::Service, Some(QUERY_MEMORY)).await?;
        session.plan(sql).await?;
        let scratch = self.config.storage.local_data_root().unwrap_or(Path::new("."));
        let dir = scratch.join("queries").join(uuid::Uuid::now_v7().to_string());
        let result = dir.join("data.parquet");
        // Removed if the query fails half way.
        let mut removing = LocalCopy(Some(dir.clone()));
        let sink = Sink::new(&result.to_string_lossy(), Some("parquet"))?;
        let ran = session.run(sql, Some(&sink), 0, &options).await?;
        info!(source = %path.display(), rows = ran.rows, result = %result.display(), "ran the job's query");
        removing.0 = None;
        Ok((result, dir))
    }

    /// The dataset of a file no request named one for: the registered dataset whose
    /// columns are exactly the file's, else `Amount` for a file with a numeric `Amount`.
    async fn dataset_of(&self, schema: &arrow_schema::Schema) -> Result<String, SubmitError> {
        let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        names.sort_unstable();
        for row in self.index.datasets().await? {
            let Ok(columns) = serde_json::from_str::<arrow_schema::Schema>(&row.columns_json) else { continue };
            let mut theirs: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
            theirs.sort_unstable();
            if theirs == names && row.name != AMOUNT {
                return Ok(row.name);
            }
        }
        match schema.field_with_name(AMOUNT) {
            Ok(field) if field.data_type().is_numeric() => Ok(AMOUNT.to_string()),
            _ => Err(SubmitError::NoDataset { columns: names.join(", ") }),
        }
    }

    /// The model `dataset` uses: the one it was told to use, or its first fitted. A
    /// database from before datasets were recorded has models but no dataset row: the
    /// latest model is adopted (and recorded).
    ///
    /// # Errors
    /// [`SubmitError`] when ClickHouse fails or the model cannot be loaded.
    pub async fn dataset_model(&self, dataset: &str) -> Result<Option<Model>, SubmitError> {
        if let Some(row) = self.index.dataset(dataset).await?.filter(|r| !r.model_id.is_empty()) {
            return Ok(Some(self.model(&row.model_id).await?));
        }
        let Some(row) = self.index.latest_model(dataset).await? else { return Ok(None) };
        let model = load(row)?;
        record_dataset(&self.index, &model, model_source::FIRST_FIT).await?;
        Ok(Some(model))
    }

    /// Publish the shard at `path` as a job now, in this task, with `model` (the CLI's
    /// `producer publish`).
    ///
    /// # Errors
    /// [`PublishError`]; the job row then says `failed` with the reason.
    pub async fn publish_now(
        &self,
        path: &Path,
        model: &Model,
        progress: &ProgressBar,
    ) -> Result<Published, PublishError> {
        let published = self.publisher.publish(path, model, progress).await?;
        self.count(&published);
        Ok(published)
    }

    /// Finish every job a previous process left `fitting` or `publishing`, each from its
    /// first chunk, in the background. Returns how many were found.
    ///
    /// # Errors
    /// When ClickHouse does not answer.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, IndexError> {
        let jobs = self.index.unfinished_jobs().await?;
        let found = jobs.len();
        for job in jobs {
            info!(job = %job.job_id, status = %job.status, "resuming a job a previous process left unfinished");
            if !shardflow_storage::objects::is_url(&job.source) {
                let path = PathBuf::from(&job.source);
                self.spawn(job, path, LocalCopy(None), None);
                continue;
            }
            // An object is copied again; in the background, as the job's first step.
            let service = Arc::clone(self);
            tokio::spawn(async move {
                let copied = match service.storage.input(&job.source).await {
                    Ok(input) => service.local_copy(&input).await,
                    Err(e) => Err(e),
                };
                match copied {
                    Ok((path, copy)) => service.run(job, &path, LocalCopy(copy), None).await,
                    Err(e) => {
                        let reason = format!("cannot read {}: {e}", job.source);
                        service.fail(job, reason).await;
                    }
                }
            });
        }
        Ok(found)
    }

    fn spawn(self: &Arc<Self>, job: JobRow, path: PathBuf, copy: LocalCopy, model: Option<Model>) {
        let service = Arc::clone(self);
        tokio::spawn(async move { service.run(job, &path, copy, model).await });
    }

    /// Record that `job` failed for `reason`.
    async fn fail(&self, mut job: JobRow, reason: String) {
        warn!(job = %job.job_id, %reason, "the job failed");
        job.status = JobStatus::Failed;
        job.error = reason;
        if let Err(e) = record_final(&self.index, &mut job).await {
            error!(job = %job.job_id, error = %e, "cannot record that the job failed");
        }
    }

    /// Fit when needed, publish, and record how the job ended, whatever happens.
    async fn run(&self, job: JobRow, path: &Path, _copy: LocalCopy, model: Option<Model>) {
        let model = match model {
            Some(model) => Ok(model),
            None if !job.model_id.is_empty() => self.model(&job.model_id).await.map_err(|e| e.to_string()),
            None => self.model_for(&job.dataset, path, Some(&job.job_id)).await.map_err(|e| e.to_string()),
        };
        let model = match model {
            Ok(model) => model,
            Err(reason) => return self.fail(job, format!("no model: {reason}")).await,
        };
        // Never closed: a slot always comes.
        let Ok(_slot) = self.publish_slots.acquire().await else { return };
        match self.publisher.publish_job(job.clone(), path, &model, &ProgressBar::hidden()).await {
            Ok(published) => self.count(&published),
            Err(e) => warn!(job = %job.job_id, error = %e, "publishing failed"),
        }
    }

    fn count(&self, published: &Published) {
        self.counters.jobs.inc();
        self.counters.rows.inc_by(published.rows);
        self.counters.chunks.inc_by(published.chunks);
    }

    /// `dataset`'s model ([`JobService::dataset_model`]), else one fitted now, as the
    /// job's first step: for `Amount` on the shard's sibling shards (`Amount_Shard_*.parquet`
    /// beside it), for any other dataset on the shard itself, every column. Jobs that need
    /// a model at once share one fit; the model is registered as the dataset's.
    ///
    /// # Errors
    /// [`FitError`] when no model can be fitted.
    /// A fit made for job `job_id` is the job's fit run in the lineage: the shards in, the
    /// model out.
    pub async fn model_for(&self, dataset: &str, shard: &Path, job_id: Option<&str>) -> Result<Model, FitError> {
        let _fitting = self.fit_lock.lock().await;
        match self.dataset_model(dataset).await {
            Ok(Some(model)) => return Ok(model),
            Ok(None) => {}
            Err(SubmitError::Index(e)) => return Err(e.into()),
            Err(e) => return Err(FitError::NoShards(e.to_string())),
        }
        let started = std::time::SystemTime::now();
        let fitted = self.fit_and_register(dataset, shard).await;
        if let Some(job_id) = job_id {
            let lineage = self.publisher.lineage();
            let mut stage = StageRun::of_job(lineage.namespace(), job_id, "fit", None);
            let (inputs, outputs, error) = match &fitted {
                Ok((model, shards)) => {
                    stage = stage.with_model(&model.model_id);
                    let schema = model.input_schema();
                    let inputs =
                        shards.iter().map(|s| Dataset::location(&s.display().to_string()).with_arrow_schema(&schema));
                    (inputs.collect(), vec![Dataset::model(lineage.namespace(), &model.model_id)], None)
                }
                Err(e) => (vec![Dataset::location(&shard.display().to_string())], Vec::new(), Some(e.to_string())),
            };
            let events = stage.events(started, std::time::SystemTime::now(), inputs, outputs, error.as_deref());
            lineage.record_or_warn(job_id, &events).await;
        }
        fitted.map(|(model, _)| model)
    }

    /// Fit `dataset`'s model on `shard` and its siblings, save and register it; the model
    /// and the shards it saw.
    async fn fit_and_register(&self, dataset: &str, shard: &Path) -> Result<(Model, Vec<PathBuf>), FitError> {
        let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let (name, shard, base) = (dataset.to_string(), shard.to_path_buf(), self.config.fit.clone());
        let (model, metadata, shards) = tokio::task::spawn_blocking(move || {
            let (shards, config) = fit_inputs(&name, &shard, base)?;
            fit(&shards, &name, &config, threads, &ProgressBar::hidden()).map(|(m, meta)| (m, meta, shards))
        })
        .await
        .map_err(|e| FitError::NoShards(format!("the fit task failed: {e}")))??;
        let location = save_model(&self.storage.models, &model, &metadata).await?;
        register_at(&self.index, &location, &model, &metadata).await?;
        info!(model = %model.model_id, dataset, "fitted a model for the dataset's first job");
        Ok((model, shards))
    }

    /// Wait, polling every `api.poll_interval` for up to `api.wait_timeout`, until the job
    /// is published and every chunk has outputs or a dead letter.
    ///
    /// # Errors
    /// [`WaitError`]: the job failed, chunks were dead-lettered, or time ran out.
    pub async fn wait(&self, job_id: &str) -> Result<Finished, WaitError> {
        let deadline = Instant::now() + self.config.api.wait_timeout;
        loop {
            let job = self.index.job(job_id).await?.ok_or_else(|| WaitError::NotFound(job_id.to_string()))?;
            let mut done = 0;
            match job.status {
                JobStatus::Failed => return Err(WaitError::Failed { job_id: job.job_id, reason: job.error }),
                JobStatus::Published => {
                    let rows;
                    (done, rows) = self.index.progress(job_id).await?;
                    let (dead, first) = self.index.dead_letter_count(job_id).await?;
                    if done + dead >= job.chunks {
                        return match first {
                            None => Ok(Finished { job_id: job.job_id, rows, chunks: job.chunks }),
                            Some((first_chunk, first_error)) => Err(WaitError::DeadLetters {
                                job_id: job.job_id,
                                dead,
                                chunks: job.chunks,
                                first_chunk,
                                first_error,
                            }),
                        };
                    }
                }
                JobStatus::Fitting | JobStatus::Publishing => {}
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout { job_id: job.job_id, done, chunks: job.chunks });
            }
            tokio::time::sleep(self.config.api.poll_interval).await;
        }
    }
}

/// What a dataset's first fit reads, and with which configuration: for `Amount`, the
/// shard's sibling shards (`Amount_Shard_*.parquet` beside it) and that column alone; for
/// any other dataset, the shard itself, every column. What the configuration says about
/// columns the table lacks is about another dataset, and left out.
fn fit_inputs(dataset: &str, shard: &Path, mut config: FitConfig) -> Result<(Vec<PathBuf>, FitConfig), FitError> {
    let shards = if dataset == AMOUNT {
        let dir = shard.parent().unwrap_or(Path::new("."));
        let prefix = format!("{AMOUNT}_Shard_");
        let mut shards: Vec<PathBuf> = list_shards(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&prefix)))
            .collect();
        if !shards.iter().any(|p| p == shard) {
            shards.push(shard.to_path_buf());
        }
        config.columns = vec![AMOUNT.to_string()];
        config.kinds.clear();
        config.modes.clear();
        shards
    } else {
        vec![shard.to_path_buf()]
    };
    let head = Table::open(shard, &[], None)?.schema();
    let has = |name: &String| head.column_with_name(name).is_some();
    config.columns.retain(has);
    config.kinds.retain(|name, _| has(name));
    config.modes.retain(|name, _| has(name));
    config.tails.retain(|name, _| has(name));
    Ok((shards, config))
}

/// The directory of an input's local copy, removed when the job is done with it (dropped).
struct LocalCopy(Option<PathBuf>);

impl Drop for LocalCopy {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            warn!(copy = %dir.display(), error = %e, "cannot remove an input's local copy");
        }
    }
}

/// Refuse a dataset name that would be awkward everywhere it is shown.
fn check_dataset_name(name: &str) -> Result<(), SubmitError> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(SubmitError::BadDataset(name.chars().take(140).collect()));
    }
    Ok(())
}

/// Refuse a file whose columns are not the model's (for `Amount`, only a missing column).
fn check_columns(columns: &[String], model: &Model) -> Result<(), SubmitError> {
    let wanted: Vec<&String> = model.columns.iter().map(|c| &c.name).collect();
    let missing: Vec<String> = wanted.iter().filter(|w| !columns.contains(w)).map(|w| (*w).clone()).collect();
    let unexpected: Vec<String> = if model.dataset == AMOUNT {
        Vec::new()
    } else {
        columns.iter().filter(|c| !wanted.contains(c)).cloned().collect()
    };
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    Err(SubmitError::Columns { dataset: model.dataset.clone(), model_id: model.model_id.clone(), missing, unexpected })
}

/// A registered model's row, loaded.
fn load(row: ModelRow) -> Result<Model, SubmitError> {
    Model::from_json(&row.model_json)
        .map_err(|e| SubmitError::ModelUnusable { model_id: row.model_id, reason: format!("{e}{}", advice(&e)) })
}
