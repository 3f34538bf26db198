//! Pipelines of stages with lineage: `POST /pipelines/stocks/runs` starts a run of the
//! stocks pipeline in a task the API owns (one run at a time; the others wait their
//! turn), `GET /pipelines/stocks/runs/{id}` reports it, `.../lineage` is its graph.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shardflow_pipeline::run::{RunReport, Runner, STOCKS, StocksParams};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::lineage::{LineageGraph, LineageQuery, graph_of};
use super::{ApiError, AppState};

/// `POST /pipelines/stocks/runs` body: every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunRequest {
    /// A directory (inside a data root) that `producer generate --dataset stocks` wrote;
    /// absent: the run generates one.
    pub input: Option<String>,
    /// Rows to generate without `input`: 1 to `api.max_generated_rows` (default 1000000, or that cap).
    #[schema(minimum = 1)]
    pub rows: Option<u64>,
    /// Symbols to generate without `input` (2 to 10000, default 100).
    #[schema(minimum = 2, maximum = 10000)]
    pub symbols: Option<usize>,
    /// Seed of the generator, the sample, the split and the forest (default 42).
    pub seed: Option<u64>,
    /// Trees, 1 to 1000 (default 100).
    #[schema(minimum = 1, maximum = 1000)]
    pub trees: Option<usize>,
    /// Rows sampled to train and test on, at least 10 (default 200000).
    #[schema(minimum = 10)]
    pub sample_rows: Option<usize>,
    /// Share held out for testing, between 0 and 1 (default 0.2).
    pub test_fraction: Option<f64>,
    /// Fewest rows in a leaf, at least 1 (default 5).
    #[schema(minimum = 1)]
    pub min_samples_leaf: Option<usize>,
    /// Deepest a tree grows, at least 1 (default: unbounded).
    #[schema(minimum = 1)]
    pub max_depth: Option<usize>,
    /// Answer when the run has ended (200 with its report) instead of at once (202).
    pub wait: Option<bool>,
}

/// A run's report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PipelineRun {
    /// The pipeline.
    pub pipeline: String,
    /// The run id (the parent run of every stage in the lineage).
    pub run_id: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// Each stage: `stage`, `status` (`succeeded`, `skipped`, `failed`), `fingerprint`,
    /// `seconds`, `outputs` (`dir`, `datasets`, `summary`), `error`.
    #[schema(value_type = Vec<Object>)]
    pub stages: Vec<serde_json::Value>,
    /// The forest it registered (serve it at `/models/{id}/predict`).
    pub model_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds in all.
    pub seconds: f64,
}

impl From<RunReport> for PipelineRun {
    fn from(r: RunReport) -> Self {
        Self {
            stages: r.stages.iter().filter_map(|s| serde_json::to_value(s).ok()).collect(),
            pipeline: r.pipeline,
            run_id: r.run_id,
            status: r.status,
            model_id: r.model_id,
            error: r.error,
            seconds: r.seconds,
        }
    }
}

/// `202` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RunAccepted {
    /// The run id.
    pub run_id: String,
    /// `running`.
    pub status: String,
    /// Where to follow it.
    pub links: RunLinks,
}

/// Where a run is reported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RunLinks {
    /// Its report.
    pub run: String,
    /// Its lineage.
    pub lineage: String,
}

fn params(state: &AppState, request: RunRequest) -> Result<StocksParams, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters", m);
    let cap = state.config.api.max_generated_rows;
    let defaults = StocksParams::default();
    let input = match request.input {
        Some(dir) => Some(confined_dir(state, &dir)?),
        None => None,
    };
    let rows = request.rows.unwrap_or(defaults.rows.min(cap));
    if input.is_none() && rows > cap {
        return Err(invalid(format!("rows is {rows}; at most api.max_generated_rows = {cap}")));
    }
    let params = StocksParams {
        input,
        rows,
        symbols: request.symbols.unwrap_or(defaults.symbols),
        seed: request.seed.unwrap_or(defaults.seed),
        sample_rows: request.sample_rows.unwrap_or(defaults.sample_rows),
        test_fraction: request.test_fraction.unwrap_or(defaults.test_fraction),
        trees: request.trees.unwrap_or(defaults.trees),
        min_samples_leaf: request.min_samples_leaf.unwrap_or(defaults.min_samples_leaf),
        max_depth: request.max_depth,
    };
    if !(2..=10_000).contains(&params.symbols) || (params.input.is_none() && params.rows < params.symbols as u64) {
        return Err(invalid("symbols must be 2 to 10000 and at most rows".into()));
    }
    params.check().map_err(|e| invalid(e.to_string()))?;
    Ok(params)
}

/// `dir`, made canonical, when it is a directory inside a local data root.
fn confined_dir(state: &AppState, dir: &str) -> Result<PathBuf, ApiError> {
    let path = PathBuf::from(dir);
    let canonical = path.canonicalize().map_err(|_| ApiError::not_found(format!("no directory {dir}")))?;
    if !canonical.is_dir() {
        return Err(ApiError::bad_request(format!("{dir} is not a directory")));
    }
    let roots = state.jobs.storage().local_roots();
    if !roots.iter().any(|root| canonical.starts_with(root)) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "path_forbidden", format!("{dir} is outside the data roots")));
    }
    Ok(canonical)
}

/// Run the stocks pipeline: features for ETFs and for stocks at once, their merge, a
/// random forest trained on a seeded sample with a held-out split, registered as a
/// model. Unchanged stages are skipped; a failed stage fails the run with its reason and
/// leaves earlier outputs in place.
#[utoipa::path(post, path = "/pipelines/stocks/runs", tag = "pipelines", request_body = RunRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, body = RunAccepted, description = "Started (or waiting for the run before it)"),
        (status = 200, body = PipelineRun, description = "With wait: the run ended (its status says how)"),
        (status = 400, body = ErrorBody, description = "Malformed JSON, or input is not a directory"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 403, body = ErrorBody, description = "Input outside the data roots"),
        (status = 404, body = ErrorBody, description = "No such input directory"),
        (status = 408, body = ErrorBody, description = "The body sent no byte for api.body_timeout"),
        (status = 413, body = ErrorBody, description = "Body larger than 1 MiB"),
        (status = 415, body = ErrorBody, description = "Body is not JSON"),
        (status = 422, body = ErrorBody, description = "A parameter is out of range"),
        (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
    ))]
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let wait = request.wait.unwrap_or(false);
    let params = params(&state, request)?;
    let run_id = Runner::new_run_id();
    state.pipelines.record_started(&run_id, &params).await?;
    let task = {
        let (state, run_id) = (state.clone(), run_id.clone());
        // The run is the API's, not the request's: it goes on if the client leaves.
        tokio::spawn(async move {
            let _turn = state.pipeline_turn.lock().await;
            state.pipelines.run_stocks(&run_id, &params).await
        })
    };
    if wait {
        let report =
            task.await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "run_panicked", e.to_string()))?;
        let report =
            report.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters", e.to_string()))?;
        return Ok((StatusCode::OK, Json(PipelineRun::from(report))).into_response());
    }
    let links = RunLinks {
        run: format!("/pipelines/{STOCKS}/runs/{run_id}"),
        lineage: format!("/pipelines/{STOCKS}/runs/{run_id}/lineage"),
    };
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id, status: "running".into(), links })).into_response())
}

/// A run of the stocks pipeline: its status and each stage's (skipped ones say so).
#[utoipa::path(get, path = "/pipelines/stocks/runs/{id}", tag = "pipelines",
    params(("id" = String, Path, description = "Run id")), responses(
    (status = 200, body = PipelineRun),
    (status = 404, body = ErrorBody, description = "No such run"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<PipelineRun>, ApiError> {
    let UrlPath(id) = id?;
    let report = state.pipelines.report(&id).await?.ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(report.into()))
}

/// A run's lineage: each stage's run, the datasets it read and wrote.
#[utoipa::path(get, path = "/pipelines/stocks/runs/{id}/lineage", tag = "pipelines",
    params(("id" = String, Path, description = "Run id"), LineageQuery), responses(
    (status = 200, body = LineageGraph),
    (status = 400, body = ErrorBody, description = "A parameter is malformed"),
    (status = 404, body = ErrorBody, description = "No such run"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn lineage(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<LineageQuery>, QueryRejection>,
) -> Result<Json<LineageGraph>, ApiError> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    if state.pipelines.report(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no run {id}")));
    }
    Ok(Json(graph_of(state.pipelines.lineage(), &id, q.events.unwrap_or(false)).await?))
}
