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
use shardflow_config::{Config, PublishConfig};
use shardflow_model::Model;
use shardflow_storage::shard::{AMOUNT, Shard, ShardError};
use shardflow_storage::table::list_shards;
use shardflow_store::{Index, IndexError, JobRow, JobStatus, ModelRow};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::fit::{FitError, advice, fit, register, write_model};
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
    /// ClickHouse did not answer.
    #[error(transparent)]
    Index(#[from] IndexError),
}

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
    /// One fit at a time: jobs waiting for the same dataset's model share the first fit.
    fit_lock: Mutex<()>,
    counters: JobCounters,
}

impl JobService {
    /// Create the chunk topic when missing and connect the producer.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the topic.
    pub async fn new(config: Config, index: Index) -> Result<Arc<Self>, PublishError> {
        let publisher = Publisher::new(&config, index.clone()).await?;
        Ok(Arc::new(Self { config, index, publisher, fit_lock: Mutex::new(()), counters: JobCounters::default() }))
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

    /// Check the shard at `path` (confined by the caller), record a job for it and start
    /// fitting (when the dataset has no model and `model` is `None`) and publishing in the
    /// background. Returns once the job row is written. `model` is the one the request
    /// named ([`JobService::named_model`]).
    ///
    /// # Errors
    /// [`SubmitError`]: nothing was recorded or sent.
    pub async fn submit(
        self: &Arc<Self>,
        path: &Path,
        model: Option<Model>,
        chunk_rows: Option<usize>,
    ) -> Result<Submitted, SubmitError> {
        let chunk_rows = self.chunk_rows(chunk_rows)?;
        let checked = path.to_path_buf();
        let rows = tokio::task::spawn_blocking(move || Shard::open(&checked, AMOUNT).map(|s| s.rows()))
            .await
            .map_err(|e| ShardError::Read { path: path.display().to_string(), reason: e.to_string() })??;
        let model = match model {
            Some(model) => Some(model),
            None => self.index.latest_model(AMOUNT).await?.map(load).transpose()?,
        };
        let status = if model.is_some() { JobStatus::Publishing } else { JobStatus::Fitting };
        let mut job = new_job(path, AMOUNT, chunk_rows, status);
        if let Some(model) = &model {
            job.model_id.clone_from(&model.model_id);
        }
        self.index.insert_job(&job).await?;
        let submitted =
            Submitted { job_id: job.job_id.clone(), status, rows, chunks: rows.div_ceil(chunk_rows as u64) };
        self.spawn(job, path.to_path_buf(), model);
        Ok(submitted)
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
            let path = PathBuf::from(&job.source);
            self.spawn(job, path, None);
        }
        Ok(found)
    }

    fn spawn(self: &Arc<Self>, job: JobRow, path: PathBuf, model: Option<Model>) {
        let service = Arc::clone(self);
        tokio::spawn(async move { service.run(job, &path, model).await });
    }

    /// Fit when needed, publish, and record how the job ended, whatever happens.
    async fn run(&self, mut job: JobRow, path: &Path, model: Option<Model>) {
        let model = match model {
            Some(model) => Ok(model),
            None if !job.model_id.is_empty() => self.model(&job.model_id).await.map_err(|e| e.to_string()),
            None => self.model_for(path).await.map_err(|e| e.to_string()),
        };
        let model = match model {
            Ok(model) => model,
            Err(reason) => {
                warn!(job = %job.job_id, %reason, "no model for the job");
                job.status = JobStatus::Failed;
                job.error = format!("no model: {reason}");
                if let Err(e) = record_final(&self.index, &mut job).await {
                    error!(job = %job.job_id, error = %e, "cannot record that the job failed");
                }
                return;
            }
        };
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

    /// The `Amount` dataset's model: the latest registered, else one fitted now on the
    /// shard's sibling shards (`Amount_Shard_*.parquet` beside it). Jobs that need it at
    /// once share one fit.
    ///
    /// # Errors
    /// [`FitError`] when no model can be fitted.
    pub async fn model_for(&self, shard: &Path) -> Result<Model, FitError> {
        let _fitting = self.fit_lock.lock().await;
        if let Some(row) = self.index.latest_model(AMOUNT).await? {
            return Model::from_json(&row.model_json)
                .map_err(|source| FitError::Model { column: AMOUNT.into(), source });
        }
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
        // The `Amount` column alone, whatever else the shards hold or the configuration
        // says about other datasets' columns.
        let fit_config = shardflow_config::FitConfig {
            columns: vec![AMOUNT.to_string()],
            kinds: Default::default(),
            modes: Default::default(),
            ..self.config.fit.clone()
        };
        let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let (model, metadata) =
            tokio::task::spawn_blocking(move || fit(&shards, AMOUNT, &fit_config, threads, &ProgressBar::hidden()))
                .await
                .map_err(|e| FitError::NoShards(format!("the fit task failed: {e}")))??;
        let model_dir = self.config.storage.model_root.join(&model.model_id);
        write_model(&model_dir, &model, &metadata)?;
        register(&self.index, &model_dir, &model, &metadata).await?;
        info!(model = %model.model_id, "fitted a model for the first job");
        Ok(model)
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
                    let dead = self.index.dead_letters(job_id).await?;
                    if done + dead.len() as u64 >= job.chunks {
                        return match dead.first() {
                            None => Ok(Finished { job_id: job.job_id, rows, chunks: job.chunks }),
                            Some(first) => Err(WaitError::DeadLetters {
                                job_id: job.job_id,
                                dead: dead.len() as u64,
                                chunks: job.chunks,
                                first_chunk: first.chunk,
                                first_error: first.error.clone(),
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

/// A registered model's row, loaded.
fn load(row: ModelRow) -> Result<Model, SubmitError> {
    Model::from_json(&row.model_json)
        .map_err(|e| SubmitError::ModelUnusable { model_id: row.model_id, reason: format!("{e}{}", advice(&e)) })
}
