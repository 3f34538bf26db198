//! The game-rounds pipeline's routes: upload a CSV, reconcile an upload with ClickHouse,
//! read the hourly aggregates.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, OriginalUri, Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use shardflow_rounds::reconcile::UploadState;
use shardflow_rounds::store::{AggregateFilter, HourSums, UploadRow};
use std::net::SocketAddr;
use utoipa::{IntoParams, ToSchema};

use super::body::{Multipart, MultipartRejection};
use super::error::ErrorBody;
use super::idempotency::{Claim, Route, still_running};
use super::upload::receive;
use super::{ApiError, AppState, Pagination, page, page_links, parse_time, rfc3339};
use shardflow_rounds::publish::{BadRow, RoundReader};
use shardflow_store::UploadStatus;

/// `POST /csv_upload` form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct CsvUpload {
    /// Game rounds: a header naming created_timestamp, game_instance_id, user_id, game_id,
    /// real_amount_bet, bonus_amount_bet, real_amount_win, bonus_amount_win, game_name and
    /// provider (any order, other columns ignored); UTF-8, or UTF-16 with a BOM.
    #[schema(value_type = String, format = Binary)]
    csv_file: Vec<u8>,
}

/// An upload and how it reconciles with ClickHouse.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadView {
    /// Upload id.
    pub upload_id: String,
    /// `publishing`, `failed`, `in_progress` (rows still on their way to ClickHouse),
    /// `complete` (every published row is in ClickHouse and every hour's sums match the
    /// CSV) or `mismatch`.
    pub status: String,
    /// True when `status` is `complete`.
    pub complete: bool,
    /// File name the client sent.
    pub file_name: String,
    /// Bytes received.
    pub bytes: u64,
    /// Data rows read, good and bad.
    pub rows_read: u64,
    /// Rows the broker acknowledged.
    pub rows_published: u64,
    /// Rows in ClickHouse `game_rounds`.
    pub rows_in_clickhouse: u64,
    /// Rows that could not be read; never published.
    pub bad_rows: u64,
    /// The first bad rows, with line and reason.
    pub bad_row_samples: Vec<BadRow>,
    /// Hours with rounds in the CSV.
    pub hours: u64,
    /// Hours whose count or sums in ClickHouse differ from the CSV's.
    pub hours_mismatched: Vec<HourComparison>,
    /// Why the upload failed, when it did.
    pub error: Option<String>,
    /// Where to look next.
    pub links: UploadLinks,
}

/// One hour, as the CSV has it and as ClickHouse has it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HourComparison {
    /// Start of the hour (RFC 3339, UTC).
    pub hour: String,
    /// Count and sums read from the CSV.
    pub csv: HourTotals,
    /// Count and sums in ClickHouse.
    pub clickhouse: HourTotals,
}

/// Count and sums of one hour.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct HourTotals {
    /// Rounds.
    pub rounds: u64,
    /// Sum of real_amount_bet (null as 0).
    pub real_amount_bet: f64,
    /// Sum of bonus_amount_bet.
    pub bonus_amount_bet: f64,
    /// Sum of real_amount_win.
    pub real_amount_win: f64,
    /// Sum of bonus_amount_win.
    pub bonus_amount_win: f64,
}

impl From<&HourSums> for HourTotals {
    fn from(h: &HourSums) -> Self {
        Self {
            rounds: h.rounds,
            real_amount_bet: h.real_amount_bet,
            bonus_amount_bet: h.bonus_amount_bet,
            real_amount_win: h.real_amount_win,
            bonus_amount_win: h.bonus_amount_win,
        }
    }
}

/// Where to look next.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadLinks {
    /// This reconciliation.
    pub upload: String,
    /// The hourly aggregates.
    pub aggregates: String,
}

/// An upload's row and its reconciliation with ClickHouse, as answered.
async fn reconcile(state: &AppState, upload: UploadRow) -> Result<UploadView, ApiError> {
    let found = shardflow_rounds::reconcile::reconcile(&state.rounds_store, &upload).await?;
    Ok(UploadView {
        status: found.state.as_str().to_string(),
        complete: found.state == UploadState::Complete,
        file_name: upload.file_name,
        bytes: upload.bytes,
        rows_read: upload.rows_read,
        rows_published: upload.rows_published,
        rows_in_clickhouse: found.rows_in_clickhouse,
        bad_rows: upload.bad_rows,
        bad_row_samples: serde_json::from_str(&upload.bad_row_samples).unwrap_or_default(),
        hours: found.hours,
        hours_mismatched: found
            .mismatched
            .iter()
            .map(|(csv, stored)| HourComparison { hour: rfc3339(csv.hour), csv: csv.into(), clickhouse: stored.into() })
            .collect(),
        error: (!upload.error.is_empty()).then_some(upload.error),
        links: UploadLinks {
            upload: format!("/uploads/{}", upload.upload_id),
            aggregates: "/aggregated_game_rounds".into(),
        },
        upload_id: upload.upload_id,
    })
}

/// Upload a game-rounds CSV (multipart field `csv_file`). It is streamed to disk, read row
/// by row and published to the rounds topic, one Avro record per row; the answer comes
/// when the broker has acknowledged every row. Bad rows are counted and reported with
/// their line, never published.
#[utoipa::path(post, path = "/csv_upload", tag = "game rounds",
    params(("Idempotency-Key" = Option<String>, Header, description = "Names the upload: a retry with the same key within api.idempotency_key_ttl gets the first upload and publishes nothing (without one, the same content from the same client within api.duplicate_window is the same upload)")),
    request_body(content = CsvUpload, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = UploadView, description = "Published; ClickHouse catches up (see /uploads/{id})"),
        (status = 400, body = ErrorBody, description = "No `csv_file` field, or the header lacks columns"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 408, body = ErrorBody, description = "The body sent no byte for api.body_timeout"),
        (status = 409, body = ErrorBody, description = "The first request with this Idempotency-Key is still being received"),
        (status = 413, body = ErrorBody, description = "Larger than api.max_upload_bytes, or past a multipart limit (api.max_part_header_bytes, api.max_parts, api.max_field_bytes)"),
        (status = 415, body = ErrorBody, description = "Not multipart/form-data, or not a CSV"),
        (status = 422, body = ErrorBody, description = "Idempotency-Key used before for other content"),
        (status = 503, body = ErrorBody, description = "ClickHouse or Kafka unavailable"),
    ))]
pub(crate) async fn csv_upload(
    State(state): State<Arc<AppState>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadView>, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let received = receive(&state, &headers, multipart, "csv_file", &id, "csv").await?;
    // Check the content before anything is recorded or sent: not CSV, or not ours, is refused whole.
    let checked = {
        let (path, id, max_record) = (received.path.clone(), id.clone(), state.config.api.max_record_bytes);
        tokio::task::spawn_blocking(move || RoundReader::open(&path, &id, max_record).map(|_| ()))
            .await
            .map_err(|e| ApiError::internal(&e))?
    };
    if let Err(e) = checked {
        let _ = tokio::fs::remove_file(&received.path).await;
        return Err(e.into());
    }
    let client = client.map(|Extension(ConnectInfo(address))| address);
    let id = match state.claim(Route::CsvUpload, &headers, client, &received.path, &id).await {
        Ok(Claim::First) => id,
        Ok(Claim::Retry { id: first, in_flight }) => match state.rounds_store.upload(&first).await {
            // A retry of an upload that published, or is publishing: its state, nothing new.
            Ok(Some(upload)) if in_flight || upload.status != UploadStatus::Failed => {
                let _ = tokio::fs::remove_file(&received.path).await;
                return Ok(Json(reconcile(&state, upload).await?));
            }
            Ok(None) if in_flight => {
                let _ = tokio::fs::remove_file(&received.path).await;
                return Err(still_running(&first));
            }
            // It failed, or stopped before recording itself: publish again under its id,
            // which adds no row twice (rounds are keyed by upload and line).
            Ok(_) => first,
            Err(e) => {
                let _ = tokio::fs::remove_file(&received.path).await;
                return Err(e.into());
            }
        },
        Err(e) => {
            let _ = tokio::fs::remove_file(&received.path).await;
            return Err(e);
        }
    };
    let _handling = state.claims.handling(&id);
    let upload = state.rounds.publish(&id, &received.file_name, &received.path, received.bytes).await?;
    Ok(Json(reconcile(&state, upload).await?))
}

/// An upload: rows read, published and in ClickHouse, bad rows, and every hour's count
/// and sums in ClickHouse compared with the CSV's.
#[utoipa::path(get, path = "/uploads/{id}", tag = "game rounds", params(("id" = String, Path, description = "Upload id")), responses(
    (status = 200, body = UploadView),
    (status = 404, body = ErrorBody, description = "No such upload"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<UploadView>, ApiError> {
    let UrlPath(id) = id?;
    let upload = state.rounds_store.upload(&id).await?.ok_or_else(|| ApiError::not_found(format!("no upload {id}")))?;
    Ok(Json(reconcile(&state, upload).await?))
}

/// `GET /aggregated_game_rounds` filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AggregateQuery {
    /// Only this player (`user_id`).
    pub player_id: Option<String>,
    /// Only this game.
    pub game_id: Option<String>,
    /// Hours at or after: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339.
    pub start_date: Option<String>,
    /// Hours before: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339.
    pub end_date: Option<String>,
    /// Page, from 1.
    #[param(minimum = 1)]
    pub page_num: Option<u64>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u64>,
}

/// One hour of one player's rounds of one game.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Aggregate {
    /// Start of the hour (RFC 3339, UTC).
    pub hour: String,
    /// The same hour as the original service answered it: `YYYY-MM-DD HH:MM:SS`, UTC.
    pub created_hour: String,
    /// Game.
    pub game_id: String,
    /// Player.
    pub user_id: String,
    /// Game name.
    pub game_name: String,
    /// Provider.
    pub provider: String,
    /// Rounds.
    pub rounds: u64,
    /// Sum of real_amount_bet (null as 0).
    pub total_real_amount_bet: f64,
    /// Sum of bonus_amount_bet.
    pub total_bonus_amount_bet: f64,
    /// Sum of real_amount_win.
    pub total_real_amount_win: f64,
    /// Sum of bonus_amount_win.
    pub total_bonus_amount_win: f64,
}

/// A page of aggregates.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregatePage {
    /// Aggregates in (hour, game, player) order.
    pub data: Vec<Aggregate>,
    /// Aggregates matching in all.
    pub total_results: u64,
    /// Neighbouring pages.
    pub pagination: Pagination,
}

/// Hourly sums of the four amounts per game and player, with filters and pages.
#[utoipa::path(get, path = "/aggregated_game_rounds", tag = "game rounds", params(AggregateQuery), responses(
    (status = 200, body = AggregatePage),
    (status = 400, body = ErrorBody, description = "A filter or page parameter is malformed"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn aggregated(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<AggregateQuery>, QueryRejection>,
) -> Result<Json<AggregatePage>, ApiError> {
    let Query(q) = query?;
    let (offset, limit) = page(q.page_num, q.page_size)?;
    let filter = AggregateFilter {
        user_id: q.player_id.filter(|p| !p.is_empty()),
        game_id: q.game_id.filter(|g| !g.is_empty()),
        start: q.start_date.as_deref().map(|t| parse_time("start_date", t)).transpose()?,
        end: q.end_date.as_deref().map(|t| parse_time("end_date", t)).transpose()?,
    };
    let (rows, total) = state.rounds_store.aggregates(&filter, offset, limit).await?;
    Ok(Json(AggregatePage {
        data: rows
            .into_iter()
            .map(|r| Aggregate {
                hour: rfc3339(r.hour),
                created_hour: chrono::DateTime::from_timestamp(i64::from(r.hour), 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                game_id: r.game_id,
                user_id: r.user_id,
                game_name: r.game_name,
                provider: r.provider,
                rounds: r.rounds,
                total_real_amount_bet: r.total_real_amount_bet,
                total_bonus_amount_bet: r.total_bonus_amount_bet,
                total_real_amount_win: r.total_real_amount_win,
                total_bonus_amount_win: r.total_bonus_amount_win,
            })
            .collect(),
        total_results: total,
        pagination: page_links(uri.path(), uri.query().unwrap_or(""), q.page_num.unwrap_or(1), limit, total),
    }))
}
