//! The HTTP API (axum): submit shards, follow jobs.
//!
//! - `POST /transforming_data {"file_path": ...}`: the original service's contract. Fits a
//!   model when none exists, publishes the shard, waits for every chunk, answers with the
//!   time taken and the output directories.
//! - `GET /jobs/{id}`: status, progress, rows and output paths, from ClickHouse.
//! - `GET /healthz`: the process answers; `GET /readyz`: ClickHouse and Kafka answer.
//! - `GET /metrics`: Prometheus counters.

mod error;
mod metrics;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use shardflow_backends::{Config, Index, confine, inverse_dir, transform_dir};
use shardflow_model::Model;
use tokio::sync::Mutex;

pub use error::ApiError;

use crate::fit::{fit_shards, list_shards, register, write_model};
use crate::publish::{PublishError, Publisher};
use crate::shard::{AMOUNT, Shard};

/// What the handlers share.
pub struct AppState {
    config: Config,
    index: Index,
    publisher: Publisher,
    output_root: PathBuf,
    metrics: metrics::Metrics,
    /// One fit at a time: concurrent first requests must not fit twice.
    fit_lock: Mutex<()>,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ClickHouse did not answer or refused the DDL.
    #[error(transparent)]
    Index(#[from] shardflow_backends::IndexError),
    /// The broker did not answer or refused the topic.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The output directory cannot be created.
    #[error("output root {path}: {source}")]
    OutputRoot {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl AppState {
    /// Connect to ClickHouse (creating tables) and Kafka (creating the topic).
    ///
    /// # Errors
    /// [`StartError`] naming the service that failed.
    pub async fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let index = Index::connect(&config.clickhouse).await?;
        let publisher = Publisher::new(&config, index.clone()).await?;
        let root = &config.storage.output_root;
        let fail = |source| StartError::OutputRoot { path: root.display().to_string(), source };
        std::fs::create_dir_all(root).map_err(fail)?;
        let output_root = root.canonicalize().map_err(fail)?;
        Ok(Arc::new(Self {
            config,
            index,
            publisher,
            output_root,
            metrics: metrics::Metrics::new(),
            fit_lock: Mutex::new(()),
        }))
    }

    /// The model new jobs use: the latest registered for the dataset, or one fitted now
    /// on the shard's sibling shards (`Amount_Shard_*.parquet` beside it).
    async fn current_model(&self, shard: &Path) -> Result<Model, ApiError> {
        let _fitting = self.fit_lock.lock().await;
        if let Some(row) = self.index.latest_model(AMOUNT).await? {
            return Model::from_json(&row.model_json).map_err(|e| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "model_unusable",
                    format!("registered model {} cannot be loaded: {e}", row.model_id),
                )
            });
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
        let fit_config = self.config.fit.clone();
        let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let (model, metadata) = tokio::task::spawn_blocking(move || {
            fit_shards(&shards, AMOUNT, &fit_config, threads, &ProgressBar::hidden())
        })
        .await
        .map_err(|e| ApiError::internal(&e))??;
        let model_dir = self.config.storage.model_root.join(&model.model_id);
        write_model(&model_dir, &model, &metadata)?;
        register(&self.index, &model_dir, &model, &metadata).await?;
        tracing::info!(model = %model.model_id, "fitted a model for the first request");
        Ok(model)
    }

    /// Wait until every chunk has outputs or a dead letter. Dead letters make the job
    /// an error: the data could not all be transformed.
    async fn wait_for(&self, job_id: &str, chunks: u64) -> Result<(), ApiError> {
        let deadline = Instant::now() + self.config.api.wait_timeout;
        loop {
            let (done, _) = self.index.progress(job_id).await?;
            let dead = self.index.dead_letters(job_id).await?;
            if done + dead.len() as u64 >= chunks {
                return match dead.first() {
                    None => Ok(()),
                    Some(first) => Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "dead_letters",
                        format!(
                            "job {job_id}: {} of {chunks} chunks were dead-lettered (first, chunk {}: {}); see /jobs/{job_id}",
                            dead.len(),
                            first.chunk,
                            first.error
                        ),
                    )),
                };
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!("job {job_id} has {done} of {chunks} chunks done; follow it at /jobs/{job_id}"),
                ));
            }
            tokio::time::sleep(self.config.api.poll_interval).await;
        }
    }
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/transforming_data", post(transforming_data))
        .route("/jobs/{id}", get(job))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_errors))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` resolves.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// `POST /transforming_data` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformRequest {
    /// Shard to transform: absolute, or relative to the first data root.
    pub file_path: String,
}

/// `POST /transforming_data` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TransformResponse {
    /// Wall time, as `"3.56 seconds"`.
    pub total_time_taken: String,
    /// Directory of the transformed parts.
    pub transformed_file_path: String,
    /// Directory of the inverse-transformed parts.
    pub inverse_transformed_file_path: String,
    /// The job.
    pub job_id: String,
    /// Rows transformed.
    pub rows: u64,
    /// Chunks (Kafka messages, Parquet parts).
    pub chunks: u64,
}

async fn transforming_data(
    State(state): State<Arc<AppState>>,
    body: Result<Json<TransformRequest>, JsonRejection>,
) -> Result<Json<TransformResponse>, ApiError> {
    let started = Instant::now();
    let Json(request) = body?;
    let path = confine(&state.config.storage.data_roots, &request.file_path)?;
    // Validate before anything is written: a bad file leaves no job, message or output.
    let checked = path.clone();
    tokio::task::spawn_blocking(move || Shard::open(&checked, AMOUNT).map(|_| ()))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    let model = state.current_model(&path).await?;
    let published = state.publisher.publish(&path, &model, &ProgressBar::hidden()).await?;
    state.metrics.jobs.inc();
    state.metrics.rows.inc_by(published.rows);
    state.metrics.chunks.inc_by(published.chunks);
    state.wait_for(&published.job_id, published.chunks).await?;
    Ok(Json(TransformResponse {
        total_time_taken: format!("{:.2} seconds", started.elapsed().as_secs_f64()),
        transformed_file_path: transform_dir(&state.output_root, &published.job_id).display().to_string(),
        inverse_transformed_file_path: inverse_dir(&state.output_root, &published.job_id).display().to_string(),
        job_id: published.job_id,
        rows: published.rows,
        chunks: published.chunks,
    }))
}

/// `GET /jobs/{id}` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub job_id: String,
    /// `publishing`, `running`, `done` or `failed`.
    pub status: String,
    /// Dataset.
    pub dataset: String,
    /// Shard read.
    pub source: String,
    /// Model used.
    pub model_id: String,
    /// Rows published.
    pub rows: u64,
    /// Rows with outputs.
    pub rows_done: u64,
    /// Chunks published (0 while publishing).
    pub chunks_total: u64,
    /// Chunks with outputs.
    pub chunks_done: u64,
    /// Directory of the transformed parts.
    pub transformed_file_path: String,
    /// Directory of the inverse-transformed parts.
    pub inverse_transformed_file_path: String,
    /// Chunks that went to the dead-letter topic instead.
    pub chunks_dead_lettered: u64,
    /// Every chunk's outputs.
    pub outputs: Vec<OutputView>,
    /// Every dead-lettered chunk, with the reason.
    pub dead_letters: Vec<DeadLetterView>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
}

/// One chunk's outputs.
#[derive(Debug, Serialize, Deserialize)]
pub struct OutputView {
    /// Chunk sequence number.
    pub chunk: u64,
    /// Rows.
    pub rows: u64,
    /// Transformed part.
    pub transform_path: String,
    /// Inverse part.
    pub inverse_path: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// A dead-lettered chunk.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Chunk sequence number.
    pub chunk: i64,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Why it could not be processed.
    pub error: String,
}

async fn job(State(state): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Result<Json<JobView>, ApiError> {
    let Some(job) = state.index.job(&id).await? else {
        return Err(ApiError::not_found(format!("no job {id}")));
    };
    let outputs = state.index.outputs(&id).await?;
    let dead = state.index.dead_letters(&id).await?;
    let chunks_done = outputs.len() as u64;
    let status = match job.status.as_str() {
        // A job with dead letters is never reported as cleanly done.
        "published" if !dead.is_empty() && chunks_done + dead.len() as u64 >= job.chunks => "done_with_dead_letters",
        "published" if chunks_done >= job.chunks => "done",
        "published" => "running",
        other => other,
    };
    Ok(Json(JobView {
        status: status.to_string(),
        dataset: job.dataset,
        source: job.source,
        model_id: job.model_id,
        rows: job.rows,
        rows_done: outputs.iter().map(|o| o.rows).sum(),
        chunks_total: job.chunks,
        chunks_done,
        transformed_file_path: transform_dir(&state.output_root, &id).display().to_string(),
        inverse_transformed_file_path: inverse_dir(&state.output_root, &id).display().to_string(),
        outputs: outputs
            .into_iter()
            .map(|o| OutputView {
                chunk: o.chunk,
                rows: o.rows,
                transform_path: o.transform_path,
                inverse_path: o.inverse_path,
                partition: o.partition,
                offset: o.offset,
            })
            .collect(),
        chunks_dead_lettered: dead.len() as u64,
        dead_letters: dead
            .into_iter()
            .map(|d| DeadLetterView { chunk: d.chunk, partition: d.partition, offset: d.offset, error: d.error })
            .collect(),
        error: (!job.error.is_empty()).then_some(job.error),
        job_id: id,
    }))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    let (clickhouse, kafka) = tokio::join!(state.index.ping(), state.publisher.broker_answers());
    let ready = clickhouse.is_ok() && kafka.is_ok();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "clickhouse": clickhouse.err().map(|e| e.to_string()),
        "kafka": kafka.err().map(|e| e.to_string()),
    });
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn count_errors(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    if response.status().is_client_error() {
        state.metrics.client_errors.inc();
    } else if response.status().is_server_error() {
        state.metrics.server_errors.inc();
    }
    response
}
