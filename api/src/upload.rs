//! Uploads: a multipart field streamed to a file under the first data root, never held
//! whole in memory, refused with 413 past `api.max_upload_bytes` (the partial file is
//! removed) or past the multipart limits of [`super::body`]; and `POST /shards`, which
//! submits an uploaded Parquet or CSV shard, each CSV row at most `api.max_record_bytes`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use shardflow_storage::shard::ShardError;
use shardflow_storage::table::{Format, Table, infer_csv_schema_within};
use shardflow_storage::text::{TextError, excerpt, is_null, open_text};
use shardflow_storage::write_atomically;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::body::{FormLimits, Multipart, MultipartRejection, multipart_error};
use super::error::ErrorBody;
use super::idempotency::{Claim, Route, still_running};
use super::jobs::Accepted;
use super::{ApiError, AppState};
use shardflow_jobs::service::Target;
use shardflow_storage::shard::AMOUNT;

/// A file received.
pub(super) struct Received {
    /// Where it is kept.
    pub path: PathBuf,
    /// The name the client gave (for display only; never used as a path).
    pub file_name: String,
    /// Its size.
    pub bytes: u64,
}

/// Stream the multipart field `field` into `<first data root>/uploads/<id>.<extension>`.
pub(super) async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
    field: &str,
    id: &str,
    extension: &str,
) -> Result<Received, ApiError> {
    let api = &state.config.api;
    let limit = api.max_upload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the upload is larger than api.max_upload_bytes = {limit} bytes"),
        )
    };
    // Refuse a declared size at once; a body without one is counted as it streams.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(64 * 1024)) {
        return Err(too_large());
    }
    let limits = FormLimits {
        file_field: field,
        file_bytes: limit,
        field_bytes: api.max_field_bytes,
        header_bytes: api.max_part_header_bytes,
    };
    let mut multipart = multipart?.fields(&limits);
    let unreadable = |e: multer::Error| multipart_error(&e, field, limit);
    let dir = crate::jobs::local_data_root(state).join("uploads");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ApiError::internal(&e))?;
    let path = dir.join(format!("{id}.{extension}"));
    let partial = dir.join(format!("{id}.{extension}.part"));
    let mut parts = 0;
    while let Some(mut part) = multipart.next_field().await.map_err(unreadable)? {
        parts += 1;
        if parts > api.max_parts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the form has more than api.max_parts = {} parts", api.max_parts),
            ));
        }
        // Another field is skipped by the next `next_field`, under api.max_field_bytes.
        if part.name() != Some(field) {
            continue;
        }
        let file_name = part.file_name().unwrap_or("").to_string();
        let mut file =
            tokio::io::BufWriter::new(tokio::fs::File::create(&partial).await.map_err(|e| ApiError::internal(&e))?);
        let mut bytes = 0u64;
        let written: Result<(), ApiError> = async {
            while let Some(chunk) = part.chunk().await.map_err(unreadable)? {
                bytes += chunk.len() as u64;
                if bytes > limit {
                    return Err(too_large());
                }
                file.write_all(&chunk).await.map_err(|e| ApiError::internal(&e))?;
            }
            file.flush().await.map_err(|e| ApiError::internal(&e))?;
            file.get_ref().sync_all().await.map_err(|e| ApiError::internal(&e))?;
            tokio::fs::rename(&partial, &path).await.map_err(|e| ApiError::internal(&e))
        }
        .await;
        if let Err(e) = written {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        return Ok(Received { path, file_name, bytes });
    }
    Err(ApiError::bad_request(format!("the multipart body has no field `{field}` holding the file")))
}

/// Parquet files begin with these bytes.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// `POST /shards` form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ShardUpload {
    /// A Parquet file, or a CSV (UTF-8 or UTF-16 with a BOM, a header row; empty, `NA`,
    /// `NaN` or `null` is null) whose column types are inferred from its first rows. For
    /// the `Amount` dataset only that column is kept, and every value must be a number.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Query of `POST /shards`.
#[derive(Debug, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShardOptions {
    /// Dataset of the table (default: the registered dataset with the file's columns, or
    /// `Amount` for a file with an `Amount` column). One without a model is fitted first.
    pub dataset: Option<String>,
    /// Model to transform with (default: the one the dataset uses).
    pub model_id: Option<String>,
    /// Rows per chunk (default: publish.chunk_rows).
    pub chunk_rows: Option<usize>,
}

/// Upload a Parquet or CSV shard (multipart field `file`) and submit it as a job. The
/// type is told from the content, not the name.
#[utoipa::path(post, path = "/shards", tag = "jobs",
    params(ShardOptions, ("Idempotency-Key" = Option<String>, Header, description = "Names the upload: a retry with the same key within api.idempotency_key_ttl gets the first job and publishes nothing (without one, the same content from the same client within api.duplicate_window is the same job)")),
    request_body(content = ShardUpload, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Stored and recorded; publishing goes on in the background"),
        (status = 400, body = ErrorBody, description = "No `file` field, or not a usable shard"),
        (status = 401, body = ErrorBody, description = "Token missing or wrong"),
        (status = 408, body = ErrorBody, description = "The body sent no byte for api.body_timeout"),
        (status = 409, body = ErrorBody, description = "The first request with this Idempotency-Key is still being received"),
        (status = 413, body = ErrorBody, description = "Larger than api.max_upload_bytes, or past a multipart limit (api.max_part_header_bytes, api.max_parts, api.max_field_bytes)"),
        (status = 415, body = ErrorBody, description = "Not multipart/form-data"),
        (status = 422, body = ErrorBody, description = "Bad chunk_rows, or an Idempotency-Key used before for other content"),
        (status = 503, body = ErrorBody, description = "ClickHouse or Kafka unavailable"),
    ))]
pub(crate) async fn shards(
    State(state): State<Arc<AppState>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    options: Result<axum::extract::Query<ShardOptions>, axum::extract::rejection::QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let axum::extract::Query(options) = options?;
    let id = uuid::Uuid::now_v7().to_string();
    let received = receive(&state, &headers, multipart, "file", &id, "upload").await?;
    // A retry names the job of the first request: its state, nothing published again.
    let client = client.map(|Extension(ConnectInfo(address))| address);
    let claimed = async {
        match state.claim(Route::Shards, &headers, client, &received.path, &id).await? {
            Claim::First => Ok(Ok(id)),
            Claim::Retry { id: first, in_flight } => match state.index.job(&first).await? {
                Some(job) => Ok(Err(job)),
                None if in_flight => Err(still_running(&first)),
                // The first request stopped before recording its job: go on under its id.
                None => Ok(Ok(first)),
            },
        }
    };
    let id = match claimed.await {
        Ok(Ok(id)) => id,
        Ok(Err(job)) => {
            let _ = tokio::fs::remove_file(&received.path).await;
            return Ok((StatusCode::ACCEPTED, Json(Accepted::of_job(&job))));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&received.path).await;
            return Err(e);
        }
    };
    let _handling = state.claims.handling(&id);
    let shard = received.path.with_extension("parquet");
    let converted = {
        let (from, to, dataset) = (received.path.clone(), shard.clone(), options.dataset.clone());
        let max_record = state.config.api.max_record_bytes;
        tokio::task::spawn_blocking(move || as_parquet(&from, &to, dataset.as_deref(), max_record))
            .await
            .map_err(|e| ApiError::internal(&e))?
    };
    let _ = tokio::fs::remove_file(&received.path).await;
    converted?;
    let submitted = match state.jobs.named_model(options.model_id.as_deref()).await {
        Ok(model) => {
            let target = Target { dataset: options.dataset.clone(), model, job_id: Some(id.clone()), sql: None };
            state
                .jobs
                .submit(&shardflow_storage::objects::Input::Local(shard.clone()), target, options.chunk_rows)
                .await
        }
        Err(e) => Err(e),
    };
    if submitted.is_err() {
        let _ = tokio::fs::remove_file(&shard).await;
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted::new(submitted?))))
}

/// Keep a Parquet upload as is; convert a CSV one to Parquet: its `Amount` column for the
/// `Amount` dataset (named, or not named and the CSV has that column), every column
/// otherwise. A CSV row longer than `max_record` bytes refuses the file.
fn as_parquet(upload: &Path, shard: &Path, dataset: Option<&str>, max_record: u64) -> Result<(), ApiError> {
    let mut head = [0u8; 4];
    let is_parquet = std::fs::File::open(upload)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == PARQUET_MAGIC);
    if is_parquet {
        return std::fs::rename(upload, shard).map_err(|e| ApiError::internal(&e));
    }
    check_text(upload)?;
    let inferred = infer_csv_schema_within(upload, max_record).map_err(|e| bad_csv(format!("CSV: {}", reason(e))))?;
    let amount = inferred.fields().iter().find(|f| f.name().trim().eq_ignore_ascii_case(AMOUNT)).map(|f| f.name());
    match (dataset, amount) {
        (_, Some(column)) if dataset.is_none_or(|d| d == AMOUNT) => {
            amount_to_parquet(upload, shard, &inferred, column, max_record)
        }
        (Some(AMOUNT), None) => {
            let names: Vec<&str> = inferred.fields().iter().map(|f| f.name().as_str()).collect();
            Err(bad_csv(format!("the CSV has no `{AMOUNT}` column (columns: {})", names.join(", "))))
        }
        _ => {
            let table = Table::open_as(upload, Format::Csv, &[], Some(inferred.clone()))
                .map_err(|e| bad_csv(format!("CSV: {}", reason(e))))?
                .with_max_record_bytes(max_record);
            write_shard(shard, table, inferred, |batch, _| Ok(batch))
        }
    }
}

fn bad_csv(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_csv", message)
}

/// The reader's own words, without the server's path of the upload.
fn reason(e: ShardError) -> String {
    match e {
        ShardError::NotCsv { reason, .. } | ShardError::Read { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// 415 for an upload that is not text either.
fn check_text(csv_path: &Path) -> Result<(), ApiError> {
    open_text(csv_path).map(drop).map_err(|e| match e {
        TextError::Io(e) => ApiError::internal(&e),
        other => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_a_shard",
            format!("the upload is neither Parquet nor CSV: {other}"),
        ),
    })
}

/// Stream a CSV `table` into a Parquet shard of `schema`, each batch through `convert`
/// (given the CSV line of the batch's first row): the first batch that does not read or
/// convert refuses the whole file (400 with the reason), as a shard is all or nothing.
fn write_shard(
    shard: &Path,
    table: Table,
    schema: SchemaRef,
    mut convert: impl FnMut(RecordBatch, usize) -> Result<RecordBatch, String>,
) -> Result<(), ApiError> {
    let mut failure = None;
    write_atomically(shard, |file| {
        let mut refuse = |message: String| {
            failure = Some(bad_csv(message));
            std::io::Error::other("bad CSV")
        };
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None).map_err(std::io::Error::other)?;
        let batches = table.batches(65_536).map_err(|e| refuse(format!("CSV: {}", reason(e))))?;
        let mut line = 2; // the first row after the header
        for batch in batches {
            let batch = batch.map_err(|e| refuse(format!("CSV: {}", reason(e))))?;
            let rows = batch.num_rows();
            let batch = convert(batch, line).map_err(&mut refuse)?;
            writer.write(&batch).map_err(std::io::Error::other)?;
            line += rows;
        }
        writer.close().map(|_| ()).map_err(std::io::Error::other)
    })
    .map_err(|e| failure.take().unwrap_or_else(|| ApiError::internal(&e)))
}

/// Stream a CSV's `Amount` column (named `column` in it) into a Parquet shard, refusing
/// the whole file (400, with the line) at the first value that is not a finite number.
fn amount_to_parquet(
    csv_path: &Path,
    shard: &Path,
    inferred: &Schema,
    column: &str,
    max_record: u64,
) -> Result<(), ApiError> {
    // Every column as inferred, the amount as text whatever its first rows looked like: each
    // value is then parsed here, so that a bad one is refused with its line.
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| if f.name() == column { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
        .collect();
    let table = Table::open_as(csv_path, Format::Csv, &[column.to_string()], Some(Arc::new(Schema::new(fields))))
        .map_err(|e| bad_csv(format!("CSV: {}", reason(e))))?
        .with_max_record_bytes(max_record);
    let schema = Arc::new(Schema::new(vec![Field::new(AMOUNT, DataType::Float64, true)]));
    write_shard(shard, table, schema.clone(), |batch, line| {
        let Some(texts) = batch.column(0).as_any().downcast_ref::<StringArray>() else {
            return Err(format!("CSV: the `{AMOUNT}` column could not be read as text"));
        };
        let mut values = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let text = text.unwrap_or("").trim();
            values.push(match text.parse::<f64>() {
                _ if is_null(text) => None,
                Ok(x) if x.is_finite() => Some(x),
                _ => return Err(format!("CSV line {}: {AMOUNT} {} is not a finite number", line + i, excerpt(text))),
            });
        }
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))]).map_err(|e| e.to_string())
    })
}
