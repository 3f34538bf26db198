//! Serving a registered random forest: `POST /models/{id}/predict`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shardflow_pipeline::forest::Forest;
use shardflow_pipeline::run::FOREST_FILE;
use shardflow_storage::objects::Root;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// Most rows one request may ask about.
pub(crate) const MAX_ROWS: usize = 10_000;

/// One row: a number for each of the model's features (for the stocks forest
/// `vol_moving_avg` and `adj_close_rolling_med`), nothing else.
pub(crate) type Row = BTreeMap<String, serde_json::Value>;

/// `POST /models/{id}/predict` body: one row, or a list of at most 10000.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum PredictRequest {
    /// One row.
    #[schema(value_type = Object)]
    One(Row),
    /// Rows.
    #[schema(value_type = Vec<Object>)]
    Many(Vec<Row>),
}

/// The predictions, in the order of the rows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Prediction {
    /// The model.
    pub model_id: String,
    /// What is predicted (`Volume`).
    pub target: String,
    /// For one row: its prediction, rounded to an integer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<i64>,
    /// Every row's prediction, rounded to an integer.
    pub predictions: Vec<i64>,
}

/// What a registered forest's `model_json` says about it.
#[derive(Debug, Deserialize)]
struct ForestEntry {
    kind: String,
    target: String,
}

/// Predict with a registered random forest (the stocks pipeline's `register` stage made
/// it): one row or a list, each with a number for every feature of the model.
#[utoipa::path(post, path = "/models/{id}/predict", tag = "models", request_body = PredictRequest,
    params(("id" = String, Path, description = "Model id (a random forest)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Prediction),
        (status = 400, body = ErrorBody, description = "Malformed JSON"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 408, body = ErrorBody, description = "The body sent no byte for api.body_timeout"),
        (status = 409, body = ErrorBody, description = "The model is not a random forest, or its file cannot be read"),
        (status = 413, body = ErrorBody, description = "Body larger than 1 MiB"),
        (status = 415, body = ErrorBody, description = "Body is not JSON"),
        (status = 422, body = ErrorBody, description = "A row lacks a feature, has another field, or a value that is not a finite number; no rows or too many"),
        (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
    ))]
pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
    body: Result<Json<PredictRequest>, JsonRejection>,
) -> Result<Json<Prediction>, ApiError> {
    let UrlPath(id) = id?;
    let Json(request) = body?;
    let (rows, one) = match request {
        PredictRequest::One(row) => (vec![row], true),
        PredictRequest::Many(rows) => (rows, false),
    };
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rows", m);
    if rows.is_empty() || rows.len() > MAX_ROWS {
        return Err(invalid(format!("send 1 to {MAX_ROWS} rows, not {}", rows.len())));
    }
    let (forest, target) = forest(&state, &id).await?;
    let names = forest.feature_names();
    let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); names.len()];
    for (at, row) in rows.iter().enumerate() {
        if let Some(extra) = row.keys().find(|k| !names.contains(k)) {
            return Err(invalid(format!("row {at}: `{extra}` is not a feature of the model ({})", names.join(", "))));
        }
        for (name, column) in names.iter().zip(&mut columns) {
            let value = row.get(name).ok_or_else(|| invalid(format!("row {at}: `{name}` is missing")))?;
            let number = value
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| invalid(format!("row {at}: `{name}` is {value}, not a finite number")))?;
            column.push(number);
        }
    }
    let predicted = tokio::task::spawn_blocking(move || forest.predict(&columns))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "predict_panicked", e.to_string()))?
        .map_err(|e| invalid(e.to_string()))?;
    let predictions: Vec<i64> = predicted.iter().map(|v| v.round() as i64).collect();
    Ok(Json(Prediction { model_id: id, target, prediction: one.then(|| predictions[0]), predictions }))
}

/// The forest `id` (loaded once, then from memory) and its target.
async fn forest(state: &AppState, id: &str) -> Result<(Arc<Forest>, String), ApiError> {
    let row = state.index.model(id).await?.ok_or_else(|| ApiError::not_found(format!("no model {id}")))?;
    let unusable = |m: String| ApiError::new(StatusCode::CONFLICT, "not_a_forest", m);
    let entry: ForestEntry = serde_json::from_str(&row.model_json)
        .ok()
        .filter(|e: &ForestEntry| e.kind == "random_forest")
        .ok_or_else(|| unusable(format!("model {id} is not a random forest: it cannot predict")))?;
    if let Some(forest) = state.forests.lock().await.get(id) {
        return Ok((forest.clone(), entry.target));
    }
    let file = match &state.jobs.storage().models {
        Root::Local(_) => std::path::PathBuf::from(&row.path).join(FOREST_FILE),
        Root::Remote(root) => {
            let dir = std::env::temp_dir().join(format!("shardflow-forest-{}", uuid::Uuid::now_v7()));
            tokio::fs::create_dir_all(&dir).await.map_err(|e| unusable(e.to_string()))?;
            let file = dir.join(FOREST_FILE);
            root.download(&root.key(&format!("{id}/{FOREST_FILE}")), &file)
                .await
                .map_err(|e| unusable(format!("cannot fetch the forest of {id}: {e}")))?;
            file
        }
    };
    let loaded = tokio::task::spawn_blocking({
        let file = file.clone();
        move || Forest::load(&file)
    })
    .await
    .map_err(|e| unusable(e.to_string()))?
    .map_err(|e| unusable(format!("cannot load {}: {e}", file.display())));
    if matches!(state.jobs.storage().models, Root::Remote(_))
        && let Some(dir) = file.parent()
    {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
    let forest = Arc::new(loaded?);
    state.forests.lock().await.insert(id.to_string(), forest.clone());
    Ok((forest, entry.target))
}
