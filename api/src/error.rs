//! The API's one error type: a status, a stable code and a message, sent as
//! `{"error": {"code": ..., "message": ...}}`. Internal causes are logged, not sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shardflow_storage::PathError;
use shardflow_store::IndexError;

use shardflow_jobs::fit::FitError;
use shardflow_jobs::publish::PublishError;
use shardflow_jobs::service::{SubmitError, WaitError};
use shardflow_rounds::publish::{CsvError, RoundsError};
use shardflow_storage::shard::ShardError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An answer with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 404 for a missing resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 for a request that makes no sense.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A failure of ours: logged in full, answered with a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has the cause")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`not_found`, `path_forbidden`, ...).
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", rejection.body_text())
    }
}

impl From<CsvError> for ApiError {
    fn from(e: CsvError) -> Self {
        match e {
            CsvError::NotCsv(_) => Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_csv", e.to_string()),
            CsvError::MissingColumns { .. } => Self::new(StatusCode::BAD_REQUEST, "missing_columns", e.to_string()),
            CsvError::Io(_) => Self::internal(&e),
        }
    }
}

impl From<RoundsError> for ApiError {
    fn from(e: RoundsError) -> Self {
        match e {
            RoundsError::Csv(e) => e.into(),
            RoundsError::Index(e) => e.into(),
            RoundsError::Kafka(_) | RoundsError::Registry(_) => {
                tracing::error!(cause = %e, "broker or registry unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    "the Kafka broker is unavailable; retry later",
                )
            }
            RoundsError::Codec(_) | RoundsError::Reader(_) => Self::internal(&e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if let Some(timeout) = super::body::caused_by::<super::body::BodyTimeout>(&rejection) {
            return super::body::timed_out(timeout);
        }
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the JSON body is larger than 1 MiB");
        }
        let status = match rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_request", rejection.body_text())
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "file_not_found", e.to_string()),
            PathError::Outside(_) => Self::new(StatusCode::FORBIDDEN, "path_forbidden", e.to_string()),
            PathError::NotAFile(_) => Self::new(StatusCode::BAD_REQUEST, "not_a_file", e.to_string()),
            PathError::Store { ref reason, .. } if reason == "permission denied" => {
                Self::new(StatusCode::FORBIDDEN, "store_forbidden", e.to_string())
            }
            PathError::Store { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
        }
    }
}

impl From<ShardError> for ApiError {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "file_not_found", e.to_string()),
            ShardError::NoShards(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_fit", e.to_string()),
            ShardError::NotParquet { .. } => Self::new(StatusCode::BAD_REQUEST, "not_parquet", e.to_string()),
            ShardError::NotCsv { .. } => Self::new(StatusCode::BAD_REQUEST, "not_csv", e.to_string()),
            ShardError::MissingColumn { .. } | ShardError::ColumnType { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "bad_shard_schema", e.to_string())
            }
            ShardError::Read { .. } => Self::new(StatusCode::BAD_REQUEST, "unreadable_shard", e.to_string()),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        tracing::error!(cause = %e, "index unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "index_unavailable",
            "the ClickHouse index is unavailable; retry later",
        )
    }
}

impl From<FitError> for ApiError {
    fn from(e: FitError) -> Self {
        match e {
            FitError::Shard(e) => e.into(),
            FitError::Index(e) => e.into(),
            FitError::NoShards(_) | FitError::Model { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_fit", e.to_string())
            }
            FitError::Write { .. } => Self::internal(&e),
            FitError::Group(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "group_fit_failed", e.to_string()),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Shard(e) => e.into(),
            PublishError::Index(e) => e.into(),
            PublishError::Kafka(_) => {
                tracing::error!(cause = %e, "broker unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    "the Kafka broker is unavailable; retry later",
                )
            }
            PublishError::Codec(_) => Self::internal(&e),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::BadChunkRows { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_chunk_rows", e.to_string())
            }
            SubmitError::Shard(e) => e.into(),
            SubmitError::Input(e) => e.into(),
            SubmitError::NoModel(_) => Self::not_found(e.to_string()),
            SubmitError::ModelUnusable { .. } => Self::new(StatusCode::CONFLICT, "model_unusable", e.to_string()),
            SubmitError::Columns { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "columns_mismatch", e.to_string())
            }
            SubmitError::NoDataset { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "no_dataset", e.to_string()),
            SubmitError::BadDataset(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_dataset", e.to_string()),
            SubmitError::BadQuery(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", e.to_string()),
            SubmitError::QueryFailed(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "query_failed", e.to_string()),
            SubmitError::WrongDataset { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_dataset", e.to_string())
            }
            SubmitError::Index(e) => e.into(),
        }
    }
}

impl From<WaitError> for ApiError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::Failed { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "job_failed", e.to_string()),
            WaitError::DeadLetters { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "dead_letters", e.to_string()),
            WaitError::Timeout { .. } => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
            WaitError::NotFound(_) => Self::not_found(e.to_string()),
            WaitError::Index(e) => e.into(),
        }
    }
}
