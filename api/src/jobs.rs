//! Jobs: submit a shard (by path, generated, or the original `/transforming_data`
//! contract), list and follow jobs, find their outputs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use shardflow_storage::objects::Input;
use shardflow_store::{JobFilter, JobSummary, UnknownStatus};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, AppState, Pagination, page, page_links, parse_time, rfc3339};
use shardflow_generate::{GenerateOptions, generate};
use shardflow_jobs::service::{Submitted, Target};

/// `POST /transforming_data` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransformRequest {
    /// Shard to transform: absolute, or relative to the first data root.
    pub file_path: String,
}

/// `POST /transforming_data` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransformResponse {
    /// Wall time, as `"3.56 seconds"`.
    pub total_time_taken: String,
    /// Directory of the transformed parts (an object-store prefix's URL when the output
    /// root is in one).
    pub transformed_file_path: String,
    /// Directory (or prefix URL) of the inverse-transformed parts.
    pub inverse_transformed_file_path: String,
    /// The job.
    pub job_id: String,
    /// Rows transformed.
    pub rows: u64,
    /// Chunks (Kafka messages, Parquet parts).
    pub chunks: u64,
}

/// Transform a shard and wait for it: fits a model first when none is registered.
#[utoipa::path(post, path = "/transforming_data", tag = "jobs", request_body = TransformRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = TransformResponse, description = "Every chunk transformed"),
        (status = 400, body = ErrorBody, description = "Malformed JSON or not a usable shard"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 403, body = ErrorBody, description = "Path outside the data roots"),
        (status = 408, body = ErrorBody, description = "The body sent no byte for api.body_timeout"),
        (status = 404, body = ErrorBody, description = "No such file"),
        (status = 413, body = ErrorBody, description = "Body larger than 1 MiB"),
        (status = 415, body = ErrorBody, description = "Body is not JSON"),
        (status = 422, body = ErrorBody, description = "Wrong fields, or chunks dead-lettered"),
        (status = 503, body = ErrorBody, description = "ClickHouse or Kafka unavailable"),
        (status = 504, body = ErrorBody, description = "Not done within api.wait_timeout"),
    ))]
pub(crate) async fn transforming_data(
    State(state): State<Arc<AppState>>,
    body: Result<Json<TransformRequest>, JsonRejection>,
) -> Result<Json<TransformResponse>, ApiError> {
    let started = Instant::now();
    let Json(request) = body?;
    let input = state.jobs.storage().input(&request.file_path).await?;
    // The job runs in the service's task: if this client goes away, it still finishes.
    let submitted = state.jobs.submit(&input, Target::default(), None).await?;
    let finished = state.jobs.wait(&submitted.job_id).await?;
    Ok(Json(TransformResponse {
        total_time_taken: format!("{:.2} seconds", started.elapsed().as_secs_f64()),
        transformed_file_path: output_dir(&state, TRANSFORM, &finished.job_id),
        inverse_transformed_file_path: output_dir(&state, INVERSE, &finished.job_id),
        job_id: finished.job_id,
        rows: finished.rows,
        chunks: finished.chunks,
    }))
}

/// `POST /jobs` body: exactly one of `file_path` and `generate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobRequest {
    /// A Parquet or CSV shard: absolute, or relative to the first data root.
    pub file_path: Option<String>,
    /// Generate a shard of synthetic amounts instead.
    pub generate: Option<GenerateRequest>,
    /// Dataset of the shard (default: the registered dataset with the file's columns, or
    /// `Amount` for a file with an `Amount` column). One without a model is fitted first.
    pub dataset: Option<String>,
    /// Model to transform with (default: the one the dataset uses; one is fitted if none).
    pub model_id: Option<String>,
    /// Rows per chunk (default: publish.chunk_rows).
    pub chunk_rows: Option<usize>,
    /// A query over the file, which is the table `data` (for example
    /// `SELECT * FROM data WHERE Amount > 0`): the job publishes only the query's rows and
    /// columns. The file may then be CSV, Parquet, NDJSON, Arrow IPC or Avro (by its
    /// extension). Bad SQL, or a column the file lacks, is 422 `bad_query` before any job
    /// is recorded.
    pub sql: Option<String>,
    /// Answer only when every chunk is done (200), instead of at once (202).
    #[serde(default)]
    pub wait: bool,
}

/// A generated shard.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    /// Rows, from 1 to api.max_generated_rows (100,000,000 by default).
    pub rows: u64,
    /// Seed: the same seed gives the same rows.
    #[serde(default)]
    pub seed: u64,
}

/// A job accepted: recorded, its fit (when needed) and publishing under way.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// Job id.
    pub job_id: String,
    /// `fitting` (no model yet) or `publishing`.
    pub status: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Chunks it is cut into.
    pub chunks: u64,
    /// Where to follow it.
    pub links: JobLinks,
}

/// Where to follow a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobLinks {
    /// `GET` the job.
    pub job: String,
    /// `GET` its outputs.
    pub outputs: String,
}

impl Accepted {
    /// A job already recorded, as a retry of its submission is answered.
    pub(super) fn of_job(job: &shardflow_store::JobRow) -> Self {
        Self {
            job_id: job.job_id.clone(),
            status: job.status.to_string(),
            rows: job.rows,
            chunks: job.chunks,
            links: JobLinks { job: format!("/jobs/{}", job.job_id), outputs: format!("/jobs/{}/outputs", job.job_id) },
        }
    }

    pub(super) fn new(submitted: Submitted) -> Self {
        let links = JobLinks {
            job: format!("/jobs/{}", submitted.job_id),
            outputs: format!("/jobs/{}/outputs", submitted.job_id),
        };
        Self {
            job_id: submitted.job_id,
            status: submitted.status.to_string(),
            rows: submitted.rows,
            chunks: submitted.chunks,
            links,
        }
    }
}

/// Submit a shard already under a data root, or a generated one.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Recorded; fitting (when needed) and publishing go on in the background"),
        (status = 200, body = JobView, description = "With wait: every chunk transformed"),
        (status = 400, body = ErrorBody, description = "Malformed JSON, both or neither of file_path and generate, or not a usable shard"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 403, body = ErrorBody, description = "Path outside the data roots"),
        (status = 408, body = ErrorBody, description = "The body sent no byte for api.body_timeout"),
        (status = 404, body = ErrorBody, description = "No such file or model"),
        (status = 409, body = ErrorBody, description = "The model cannot be loaded"),
        (status = 413, body = ErrorBody, description = "Body larger than 1 MiB"),
        (status = 415, body = ErrorBody, description = "Body is not JSON"),
        (status = 422, body = ErrorBody, description = "Wrong fields, bad chunk_rows or rows, bad sql (bad_query, query_failed), or chunks dead-lettered"),
        (status = 503, body = ErrorBody, description = "ClickHouse or Kafka unavailable"),
        (status = 504, body = ErrorBody, description = "With wait: not done within api.wait_timeout"),
    ))]
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    // Everything that can refuse the request is checked before a shard is generated.
    state.jobs.chunk_rows(request.chunk_rows)?;
    let model = state.jobs.named_model(request.model_id.as_deref()).await?;
    let input = match (&request.file_path, &request.generate) {
        (Some(file), None) => state.jobs.storage().input(file).await?,
        (None, Some(generated)) => Input::Local(generate_shard(&state, generated).await?),
        _ => return Err(ApiError::bad_request("give exactly one of file_path and generate")),
    };
    let target = Target { dataset: request.dataset.clone(), model, job_id: None, sql: request.sql.clone() };
    let submitted = state.jobs.submit(&input, target, request.chunk_rows).await?;
    if !request.wait {
        return Ok((StatusCode::ACCEPTED, Json(Accepted::new(submitted))).into_response());
    }
    state.jobs.wait(&submitted.job_id).await?;
    Ok(Json(job_view(&state, &submitted.job_id).await?).into_response())
}

/// Write one generated shard under `<first data root>/generated/<id>/`.
async fn generate_shard(state: &AppState, request: &GenerateRequest) -> Result<PathBuf, ApiError> {
    let most = state.config.api.max_generated_rows;
    if !(1..=most).contains(&request.rows) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_rows",
            format!("generate.rows must be between 1 and api.max_generated_rows = {most}"),
        ));
    }
    let out = local_data_root(state).join("generated").join(uuid::Uuid::now_v7().to_string());
    let options = GenerateOptions {
        rows: request.rows,
        shard_rows: request.rows,
        out: out.clone(),
        seed: request.seed,
        threads: 1,
    };
    tokio::task::spawn_blocking(move || generate(&options, &ProgressBar::hidden()))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    Ok(out.join(shardflow_generate::shard_file_name(1)))
}

/// A job as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobItem {
    /// Job id.
    pub job_id: String,
    /// `fitting`, `publishing`, `running`, `done`, `done_with_dead_letters` or `failed`.
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
    /// Chunks that went to the dead-letter topic instead.
    pub chunks_dead_lettered: u64,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    /// When it was submitted (RFC 3339, UTC).
    pub created_at: String,
    /// When its job row last changed (RFC 3339, UTC).
    pub updated_at: String,
}

impl From<JobSummary> for JobItem {
    fn from(j: JobSummary) -> Self {
        Self {
            job_id: j.job_id,
            status: j.status.to_string(),
            dataset: j.dataset,
            source: j.source,
            model_id: j.model_id,
            rows: j.rows,
            rows_done: j.rows_done,
            chunks_total: j.chunks,
            chunks_done: j.chunks_done,
            chunks_dead_lettered: j.chunks_dead_lettered,
            error: (!j.error.is_empty()).then_some(j.error),
            created_at: rfc3339(j.created_at),
            updated_at: rfc3339(j.updated_at),
        }
    }
}

/// `GET /jobs` filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobQuery {
    /// Only jobs in this status (`fitting`, `publishing`, `running`, `done`, `done_with_dead_letters`, `failed`).
    pub status: Option<String>,
    /// Only this dataset.
    pub dataset: Option<String>,
    /// Submitted at or after: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339.
    pub since: Option<String>,
    /// Submitted before: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339.
    pub until: Option<String>,
    /// Page, from 1.
    #[param(minimum = 1)]
    pub page_num: Option<u64>,
    /// Jobs per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u64>,
}

/// A page of jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobPage {
    /// Jobs, newest first.
    pub data: Vec<JobItem>,
    /// Jobs matching in all.
    pub total_results: u64,
    /// Neighbouring pages.
    pub pagination: Pagination,
}

/// List jobs, newest first, with filters and pages.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(JobQuery), responses(
    (status = 200, body = JobPage),
    (status = 400, body = ErrorBody, description = "A filter or page parameter is malformed"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query?;
    let (offset, limit) = page(q.page_num, q.page_size)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let filter = JobFilter {
        job_id: None,
        status: status.map(str::parse).transpose().map_err(|e: UnknownStatus| ApiError::bad_request(e.to_string()))?,
        dataset: q.dataset.filter(|d| !d.is_empty()),
        since: q.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until: q.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
    };
    let (jobs, total) = state.index.jobs(&filter, offset, limit).await?;
    Ok(Json(JobPage {
        data: jobs.into_iter().map(JobItem::from).collect(),
        total_results: total,
        pagination: page_links(uri.path(), uri.query().unwrap_or(""), q.page_num.unwrap_or(1), limit, total),
    }))
}

/// `GET /jobs/{id}` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Status and progress.
    #[serde(flatten)]
    pub job: JobItem,
    /// Directory of the transformed parts (an object-store prefix's URL when the output
    /// root is in one).
    pub transformed_file_path: String,
    /// Directory (or prefix URL) of the inverse-transformed parts.
    pub inverse_transformed_file_path: String,
    /// Every chunk's outputs.
    pub outputs: Vec<OutputView>,
    /// Every dead-lettered chunk, with the reason.
    pub dead_letters: Vec<DeadLetterView>,
    /// Per column, values the transform could not encode as they were, over every chunk
    /// done: `unseen` (a category the fit never saw: encoded as no category, decoded as
    /// null) and `invalid` (not a number in a numeric column: encoded as null).
    pub value_issues: Vec<ValueIssueView>,
}

/// Values of one column that were not encoded as they were.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValueIssueView {
    /// Column.
    pub column: String,
    /// `unseen` or `invalid`.
    pub kind: String,
    /// Rows, over every chunk done.
    pub rows: u64,
}

/// One chunk's outputs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutputView {
    /// Chunk sequence number.
    pub chunk: u64,
    /// Rows.
    pub rows: u64,
    /// Transformed part (a path, or an object's URL).
    pub transform_path: String,
    /// Inverse part (a path, or an object's URL).
    pub inverse_path: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Milliseconds to decode the message.
    pub decode_ms: f64,
    /// Milliseconds to transform and inverse-transform.
    pub transform_ms: f64,
    /// Milliseconds to write both parts.
    pub write_ms: f64,
    /// Worker that did it (host/pid).
    pub worker: String,
    /// When (RFC 3339, UTC).
    pub created_at: String,
}

/// A dead-lettered chunk.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// Where a job's parts of one kind are ([`TRANSFORM`] or [`INVERSE`]): a directory, or an
/// object-store prefix's URL.
fn output_dir(state: &AppState, kind: fn(&str) -> String, job_id: &str) -> String {
    state.jobs.storage().output.display(&kind(job_id))
}

const TRANSFORM: fn(&str) -> String = shardflow_storage::transform_name;
const INVERSE: fn(&str) -> String = shardflow_storage::inverse_name;

/// The first local data root (config validation makes sure there is one).
pub(crate) fn local_data_root(state: &AppState) -> &std::path::Path {
    state.config.storage.local_data_root().unwrap_or(std::path::Path::new("data"))
}

async fn job_view(state: &AppState, id: &str) -> Result<JobView, ApiError> {
    let job = state.index.job_summary(id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let outputs = outputs_of(state, id).await?;
    let dead = state.index.dead_letter_reasons(id).await?;
    let issues = state.index.value_issues(id).await?;
    Ok(JobView {
        value_issues: issues
            .into_iter()
            .map(|i| ValueIssueView { column: i.column, kind: i.kind, rows: i.rows })
            .collect(),
        job: job.into(),
        transformed_file_path: output_dir(state, TRANSFORM, id),
        inverse_transformed_file_path: output_dir(state, INVERSE, id),
        outputs,
        dead_letters: dead
            .into_iter()
            .map(|d| DeadLetterView { chunk: d.chunk, partition: d.partition, offset: d.offset, error: d.error })
            .collect(),
    })
}

async fn outputs_of(state: &AppState, id: &str) -> Result<Vec<OutputView>, ApiError> {
    Ok(state
        .index
        .outputs(id)
        .await?
        .into_iter()
        .map(|o| OutputView {
            chunk: o.chunk,
            rows: o.rows,
            transform_path: o.transform_path,
            inverse_path: o.inverse_path,
            partition: o.partition,
            offset: o.offset,
            decode_ms: o.decode_ms,
            transform_ms: o.transform_ms,
            write_ms: o.write_ms,
            worker: o.worker,
            created_at: rfc3339(o.created_at),
        })
        .collect())
}

/// A job: status, progress, outputs and dead letters.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id")), responses(
    (status = 200, body = JobView),
    (status = 404, body = ErrorBody, description = "No such job"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let UrlPath(id) = id?;
    Ok(Json(job_view(&state, &id).await?))
}

/// `GET /jobs/{id}/outputs` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OutputList {
    /// Job id.
    pub job_id: String,
    /// Every part, in chunk order.
    pub outputs: Vec<OutputView>,
}

/// Every output part of a job, with its path, rows, partition, offset and timings.
#[utoipa::path(get, path = "/jobs/{id}/outputs", tag = "jobs", params(("id" = String, Path, description = "Job id")), responses(
    (status = 200, body = OutputList),
    (status = 404, body = ErrorBody, description = "No such job"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn outputs(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<OutputList>, ApiError> {
    let UrlPath(id) = id?;
    if state.index.job(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no job {id}")));
    }
    Ok(Json(OutputList { outputs: outputs_of(&state, &id).await?, job_id: id }))
}
