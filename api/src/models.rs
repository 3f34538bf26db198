//! Registered models.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path as UrlPath, Query, State};
use serde::{Deserialize, Serialize};
use shardflow_store::ModelSummary;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, AppState, Pagination, page, page_links, rfc3339};

/// A registered model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ModelItem {
    /// Content hash of `model.json`.
    pub model_id: String,
    /// Dataset it was fitted on.
    pub dataset: String,
    /// `model.json` format version.
    pub format_version: u32,
    /// When it was registered (RFC 3339, UTC).
    pub created_at: String,
    /// Directory holding `model.json` and `metadata.json`.
    pub path: String,
    /// Valid mixture components over all columns.
    pub components: u32,
}

impl From<ModelSummary> for ModelItem {
    fn from(m: ModelSummary) -> Self {
        Self {
            model_id: m.model_id,
            dataset: m.dataset,
            format_version: m.format_version,
            created_at: rfc3339(m.created_at),
            path: m.path,
            components: m.components,
        }
    }
}

/// `GET /models` page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ModelQuery {
    /// Page, from 1.
    #[param(minimum = 1)]
    pub page_num: Option<u64>,
    /// Models per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u64>,
}

/// A page of models.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ModelPage {
    /// Models, newest first.
    pub data: Vec<ModelItem>,
    /// Models in all.
    pub total_results: u64,
    /// Neighbouring pages.
    pub pagination: Pagination,
}

/// List registered models, newest first.
#[utoipa::path(get, path = "/models", tag = "models", params(ModelQuery), responses(
    (status = 200, body = ModelPage),
    (status = 400, body = ErrorBody, description = "A page parameter is malformed"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<ModelQuery>, QueryRejection>,
) -> Result<Json<ModelPage>, ApiError> {
    let Query(q) = query?;
    let (offset, limit) = page(q.page_num, q.page_size)?;
    let (models, total) = state.index.models(offset, limit).await?;
    Ok(Json(ModelPage {
        data: models.into_iter().map(ModelItem::from).collect(),
        total_results: total,
        pagination: page_links(uri.path(), uri.query().unwrap_or(""), q.page_num.unwrap_or(1), limit, total),
    }))
}

/// `GET /models/{id}` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ModelView {
    /// What the list shows.
    #[serde(flatten)]
    pub model: ModelItem,
    /// The whole `model.json`: columns, kinds, mixture components.
    #[schema(value_type = Object)]
    pub model_json: serde_json::Value,
    /// The whole `metadata.json`: shards, sample sizes, fit timings.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// A model with its parameters and fit metadata.
#[utoipa::path(get, path = "/models/{id}", tag = "models", params(("id" = String, Path, description = "Model id")), responses(
    (status = 200, body = ModelView),
    (status = 404, body = ErrorBody, description = "No such model"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<ModelView>, ApiError> {
    let UrlPath(id) = id?;
    let row = state.index.model(&id).await?.ok_or_else(|| ApiError::not_found(format!("no model {id}")))?;
    let parse = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    Ok(Json(ModelView {
        model_json: parse(&row.model_json),
        metadata: parse(&row.metadata_json),
        model: ModelItem {
            model_id: row.model_id,
            dataset: row.dataset,
            format_version: row.format_version,
            created_at: rfc3339(row.created_at),
            path: row.path,
            components: row.components,
        },
    }))
}
