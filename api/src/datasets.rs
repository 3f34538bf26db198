//! Datasets: their columns, the models fitted for them, the one they use, their jobs.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path as UrlPath, State};
use serde::{Deserialize, Serialize};
use shardflow_jobs::fit::record_dataset;
use shardflow_model::Model;
use shardflow_store::{DatasetRow, JobFilter, model_source};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState, rfc3339};

/// A dataset as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetItem {
    /// Name.
    pub name: String,
    /// The model its jobs use when a request names none.
    pub model_id: String,
    /// `first fit` (its first model, fitted from its own shards) or `use` (chosen).
    pub model_source: String,
    /// When the dataset's row last changed (RFC 3339, UTC).
    pub updated_at: String,
}

impl From<&DatasetRow> for DatasetItem {
    fn from(row: &DatasetRow) -> Self {
        Self {
            name: row.name.clone(),
            model_id: row.model_id.clone(),
            model_source: row.model_source.clone(),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// `GET /datasets` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetList {
    /// Datasets, by name.
    pub data: Vec<DatasetItem>,
}

/// One column of a dataset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetColumn {
    /// Name.
    pub name: String,
    /// Arrow type, as the inverse gives it back (`Float64`, `Utf8`, `Timestamp(ms, "UTC")`…).
    pub data_type: String,
    /// `continuous`, `categorical` or `mixed`, in the model the dataset uses.
    pub kind: String,
    /// `config` or `inferred` (absent for the main dataset's column).
    pub kind_source: Option<String>,
}

/// A model fitted for a dataset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetModel {
    /// Model id.
    pub model_id: String,
    /// When it was registered (RFC 3339, UTC).
    pub created_at: String,
    /// Whether the dataset uses it.
    pub in_use: bool,
}

/// A job of a dataset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetJob {
    /// Job id.
    pub job_id: String,
    /// Its state.
    pub status: String,
    /// The model it ran with.
    pub model_id: String,
    /// Rows published.
    pub rows: u64,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
}

/// `GET /datasets/{name}` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetView {
    /// What the list shows.
    #[serde(flatten)]
    pub dataset: DatasetItem,
    /// Its columns, in the model's order.
    pub columns: Vec<DatasetColumn>,
    /// Models fitted for it, newest first.
    pub models: Vec<DatasetModel>,
    /// Its latest jobs (up to 100), newest first.
    pub jobs: Vec<DatasetJob>,
    /// Jobs in all.
    pub total_jobs: u64,
}

/// `PUT /datasets/{name}/model` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UseModel {
    /// A registered model of this dataset.
    pub model_id: String,
}

/// List the datasets.
#[utoipa::path(get, path = "/datasets", tag = "datasets", responses(
    (status = 200, body = DatasetList),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<DatasetList>, ApiError> {
    let rows = state.index.datasets().await?;
    Ok(Json(DatasetList { data: rows.iter().map(DatasetItem::from).collect() }))
}

/// A dataset: its columns and kinds, its models, its jobs.
#[utoipa::path(get, path = "/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "Dataset name")),
    responses(
        (status = 200, body = DatasetView),
        (status = 404, body = ErrorBody, description = "No such dataset"),
        (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
    ))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<DatasetView>, ApiError> {
    let UrlPath(name) = name?;
    let row = state.index.dataset(&name).await?.ok_or_else(|| ApiError::not_found(format!("no dataset `{name}`")))?;
    Ok(Json(view(&state, &row).await?))
}

/// Make a registered model the one the dataset's jobs use.
#[utoipa::path(put, path = "/datasets/{name}/model", tag = "datasets", request_body = UseModel,
    params(("name" = String, Path, description = "Dataset name")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DatasetView, description = "The dataset now uses the model"),
        (status = 400, body = ErrorBody, description = "Malformed JSON"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 409, body = ErrorBody, description = "The model cannot be loaded"),
        (status = 415, body = ErrorBody, description = "Body is not JSON"),
        (status = 422, body = ErrorBody, description = "The model belongs to another dataset"),
        (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
    ))]
pub(crate) async fn use_model(
    State(state): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
    body: Result<Json<UseModel>, JsonRejection>,
) -> Result<Json<DatasetView>, ApiError> {
    let UrlPath(name) = name?;
    let Json(body) = body?;
    let model = state.jobs.model(&body.model_id).await?;
    if model.dataset != name {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_dataset",
            format!("model {} belongs to dataset `{}`, not `{name}`", model.model_id, model.dataset),
        ));
    }
    let dataset = record_dataset(&state.index, &model, model_source::USE).await?;
    Ok(Json(view(&state, &dataset).await?))
}

async fn view(state: &AppState, row: &DatasetRow) -> Result<DatasetView, ApiError> {
    let model: Option<Model> = match state.index.model(&row.model_id).await? {
        Some(m) => Model::from_json(&m.model_json).ok(),
        None => None,
    };
    let columns = match &model {
        Some(model) => model
            .columns
            .iter()
            .map(|c| DatasetColumn {
                name: c.name.clone(),
                data_type: c.input_field().data_type().to_string(),
                kind: c.kind.to_string(),
                kind_source: c.kind_source.map(|s| s.to_string()),
            })
            .collect(),
        None => Vec::new(),
    };
    let models = state
        .index
        .dataset_models(&row.name)
        .await?
        .into_iter()
        .map(|(model_id, created)| DatasetModel {
            in_use: model_id == row.model_id,
            model_id,
            created_at: rfc3339(created),
        })
        .collect();
    let filter = JobFilter { dataset: Some(row.name.clone()), ..JobFilter::default() };
    let (jobs, total_jobs) = state.index.jobs(&filter, 0, 100).await?;
    let jobs = jobs
        .into_iter()
        .map(|j| DatasetJob {
            job_id: j.job_id,
            status: j.status.to_string(),
            model_id: j.model_id,
            rows: j.rows,
            created_at: rfc3339(j.created_at),
        })
        .collect();
    Ok(DatasetView { dataset: DatasetItem::from(row), columns, models, jobs, total_jobs })
}
