//! The HTTP API (axum). Every route is described in the OpenAPI document generated from
//! this code (`GET /openapi.json`, browsable at `/docs` with no internet needed).
//!
//! - Jobs: `POST /transforming_data` (the original service's contract: fit when needed,
//!   publish, wait), `POST /jobs`, `POST /shards` (multipart upload), `GET /jobs`,
//!   `GET /jobs/{id}`, `GET /jobs/{id}/outputs`.
//! - Models: `GET /models`, `GET /models/{id}`.
//! - Game rounds: `POST /csv_upload`, `GET /uploads/{id}`, `GET /aggregated_game_rounds`.
//! - Operations: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Every error is `{"error": {"code", "message"}}`. When `api.token` is set, every
//! mutating route requires `Authorization: Bearer <token>`.
#![warn(missing_docs)]

mod body;
mod connections;
mod datasets;
mod error;
mod idempotency;
mod jobs;
mod lineage;
mod metrics;
mod models;
mod pipelines;
mod predict;
mod retention;
mod start;
mod upload;
mod uploads;

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shardflow_config::Config;
use shardflow_store::Index;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ErrorBody};
pub use jobs::{Accepted, JobItem, JobView, OutputView, TransformResponse};
pub use start::serve_starting;
pub use uploads::{Aggregate, AggregatePage, UploadView};

use shardflow_jobs::publish::PublishError;
use shardflow_jobs::service::JobService;
use shardflow_rounds::publish::{RoundsError, RoundsPublisher};

/// What the handlers share.
pub struct AppState {
    config: Config,
    index: Index,
    jobs: Arc<JobService>,
    rounds: RoundsPublisher,
    rounds_store: shardflow_rounds::store::RoundsStore,
    metrics: metrics::Metrics,
    claims: idempotency::Claims,
    /// Runs pipelines (`POST /pipelines/stocks/runs`), one at a time.
    pipelines: shardflow_pipeline::run::Runner,
    pipeline_turn: tokio::sync::Mutex<()>,
    /// Forests loaded for `POST /models/{id}/predict`.
    forests: tokio::sync::Mutex<std::collections::HashMap<String, Arc<shardflow_pipeline::forest::Forest>>>,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ClickHouse did not answer or refused the DDL.
    #[error(transparent)]
    Index(#[from] shardflow_store::IndexError),
    /// The broker did not answer or refused the topic.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The rounds topic or schema could not be set up.
    #[error(transparent)]
    Rounds(#[from] RoundsError),
    /// A storage root cannot be opened (a client that cannot be built, an output
    /// directory that cannot be made).
    #[error(transparent)]
    Storage(#[from] shardflow_storage::objects::LocationError),
}

impl AppState {
    /// Connect to ClickHouse (creating tables) and Kafka (creating the topics), and resume
    /// the jobs a previous process left unfinished.
    ///
    /// # Errors
    /// [`StartError`] naming the service that failed.
    pub async fn new(config: Config) -> Result<Arc<Self>, StartError> {
        // A root that cannot be opened is the config's fault: found before any service.
        let storage = open_storage(&config)?;
        let index = Index::connect(&config.clickhouse).await?;
        let jobs = JobService::new(config.clone(), index.clone(), storage).await?;
        let rounds = RoundsPublisher::new(&config, index.clone()).await?;
        jobs.resume().await?;
        let work = config.storage.local_data_root().map(|r| r.join("pipelines").join(shardflow_pipeline::run::STOCKS));
        let pipelines = shardflow_pipeline::run::Runner::new(
            index.clone(),
            jobs.publisher().lineage().clone(),
            work.unwrap_or_default(),
            jobs.storage().models.clone(),
        );
        let state = Arc::new(Self {
            pipelines,
            pipeline_turn: tokio::sync::Mutex::new(()),
            forests: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            config,
            index: index.clone(),
            metrics: metrics::Metrics::new(jobs.counters()),
            jobs: jobs.clone(),
            rounds,
            rounds_store: shardflow_rounds::store::RoundsStore::new(index.clone()),
            claims: idempotency::Claims::default(),
        });
        retention::spawn(state.clone());
        Ok(state)
    }
}

/// Open the configured storage roots.
///
/// # Errors
/// [`shardflow_storage::objects::LocationError`] when one cannot be opened.
pub fn open_storage(
    config: &Config,
) -> Result<shardflow_storage::objects::Storage, shardflow_storage::objects::LocationError> {
    let storage = &config.storage;
    shardflow_storage::objects::Storage::open(
        &storage.data_roots,
        &storage.output_root,
        &storage.model_root,
        &storage.options(),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shardflow",
        description = "Submit shards for the mode-specific normalization transform, follow jobs, find outputs; \
                       upload game-round CSVs and query their hourly aggregates. Errors are \
                       {\"error\": {\"code\", \"message\"}}; mutating routes need `Authorization: Bearer <token>` \
                       when the server has a token configured."
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and their OpenAPI document.
pub fn router(state: Arc<AppState>) -> axum::Router {
    // Uploads stream to disk and count their own bytes (api.max_upload_bytes, and the
    // multipart limits of `body`); every other body is read whole, so it stays small.
    // Every body must keep arriving (api.body_timeout, the outermost layer).
    let uploads = OpenApiRouter::new()
        .routes(routes!(upload::shards))
        .routes(routes!(uploads::csv_upload))
        .layer(DefaultBodyLimit::disable());
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::transforming_data))
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::outputs))
        .routes(routes!(lineage::job))
        .routes(routes!(models::list))
        .routes(routes!(models::get))
        .routes(routes!(predict::predict))
        .routes(routes!(pipelines::start))
        .routes(routes!(pipelines::get))
        .routes(routes!(pipelines::lineage))
        .routes(routes!(datasets::list))
        .routes(routes!(datasets::get))
        .routes(routes!(datasets::use_model))
        .routes(routes!(uploads::get))
        .routes(routes!(uploads::aggregated))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .layer(DefaultBodyLimit::max(1 << 20))
        .merge(uploads)
        .split_for_parts();
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi);
    api.route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), body::body_timeout))
        .with_state(state)
        .merge(docs)
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
    let header_timeout = state.config.api.header_timeout;
    connections::serve(listener, router(state), header_timeout, shutdown).await
}

/// `GET /healthz` answer.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `unavailable` or `starting`.
    pub status: String,
    /// ClickHouse's error, when it does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<String>,
    /// The broker's error, when it does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
    /// While starting: why the last attempt to start failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), ..Health::default() })
}

/// ClickHouse and the broker answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Health, description = "Both answer"),
    (status = 503, body = Health, description = "One does not"),
))]
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Health>) {
    let (clickhouse, kafka) = tokio::join!(state.index.ping(), state.jobs.publisher().broker_answers());
    let ready = clickhouse.is_ok() && kafka.is_ok();
    let body = Health {
        status: if ready { "ready" } else { "unavailable" }.into(),
        clickhouse: clickhouse.err().map(|e| e.to_string()),
        kafka: kafka.err().map(|e| e.to_string()),
        waiting_for: None,
    };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /docs", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Reads open whatever the tokens: probes, metrics and the API's own description.
fn open_read(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json") || path.starts_with("/docs")
}

/// When a token is configured, every mutating request must carry it; when a read token
/// is, so must every read that exposes per-player sums, models or server paths (the
/// mutating token is accepted there too).
async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let api = &state.config.api;
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let accepted: Vec<&[u8]> = if mutating {
        api.write_token().into_iter().map(str::as_bytes).collect()
    } else if open_read(request.uri().path()) || api.read_token().is_none() {
        Vec::new()
    } else {
        api.read_token().into_iter().chain(api.write_token()).map(str::as_bytes).collect()
    };
    if accepted.is_empty() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1); the token is not.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start().as_bytes());
    let refusal = match given {
        None => "this route needs Authorization: Bearer <token>",
        Some(given) if !accepted.iter().fold(false, |ok, token| ok | constant_time_eq(given, token)) => {
            "the bearer token is wrong"
        }
        Some(_) => "",
    };
    if refusal.is_empty() {
        return next.run(request).await;
    }
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", refusal).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

/// Compare without stopping at the first difference, so timing tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn count_errors(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() {
        state.metrics.client_errors.inc();
    } else if response.status().is_server_error() {
        state.metrics.server_errors.inc();
    }
    response
}

/// `page_num` (from 1) and `page_size` (1 to 1000, default 100) as offset and limit.
fn page(page_num: Option<u64>, page_size: Option<u64>) -> Result<(u64, u64), ApiError> {
    let (num, size) = (page_num.unwrap_or(1), page_size.unwrap_or(100));
    if num == 0 || !(1..=1000).contains(&size) {
        return Err(ApiError::bad_request("page_num starts at 1; page_size is between 1 and 1000"));
    }
    Ok(((num - 1).saturating_mul(size), size))
}

/// Links to the pages around `page_num`, keeping the request's other parameters.
fn page_links(path: &str, query: &str, page_num: u64, page_size: u64, total: u64) -> Pagination {
    let others: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page_num=") && !p.starts_with("page_size="))
        .collect();
    let link = |n: u64| {
        let mut params = others.clone();
        let (num, size) = (format!("page_num={n}"), format!("page_size={page_size}"));
        params.push(&num);
        params.push(&size);
        format!("{path}?{}", params.join("&"))
    };
    Pagination {
        next: (page_num.saturating_mul(page_size) < total).then(|| link(page_num + 1)),
        previous: (page_num > 1).then(|| link(page_num - 1)),
    }
}

/// Links to the neighbouring pages.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pagination {
    /// The next page, when there is one.
    pub next: Option<String>,
    /// The previous page, when there is one.
    pub previous: Option<String>,
}

/// A date (`2024-01-31`, midnight UTC) or an RFC 3339 time, as unix seconds.
fn parse_time(name: &str, text: &str) -> Result<u32, ApiError> {
    let text = text.trim();
    let seconds = if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp())
    } else if let Ok(time) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        // The game-rounds CSV's own format, read as UTC as its timestamps are.
        Some(time.and_utc().timestamp())
    } else {
        chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp())
    };
    seconds.and_then(|s| u32::try_from(s).ok()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} {text:?} is not a date (YYYY-MM-DD), a UTC time (YYYY-MM-DD HH:MM:SS) or an RFC 3339 time after 1970"
        ))
    })
}

/// Unix seconds as RFC 3339 UTC.
fn rfc3339(seconds: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(seconds), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
