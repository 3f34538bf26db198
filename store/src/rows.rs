//! The typed rows of shardflow's tables, the summaries the API lists, and the clocks that
//! stamp them.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{JobState, JobStatus};

/// One state of a job (the row with the highest `version` is current).
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct JobRow {
    /// Job id.
    pub job_id: String,
    /// Dataset (the model's).
    pub dataset: String,
    /// File the job reads.
    pub source: String,
    /// Model the chunks are transformed with (empty while the job waits for a fit).
    pub model_id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Rows per chunk: publishing the job again cuts the same chunks.
    pub chunk_rows: u64,
    /// Rows published (final once `published`).
    pub rows: u64,
    /// Chunks published (final once `published`).
    pub chunks: u64,
    /// Why publishing failed, or empty.
    pub error: String,
    /// Unix seconds the job was created.
    pub created_at: u32,
    /// Unix seconds of this state.
    pub updated_at: u32,
    /// Orders the states of a job (nanoseconds since the epoch).
    pub version: u64,
}

/// The outputs of one chunk.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct OutputRow {
    /// Job id.
    pub job_id: String,
    /// Chunk sequence number.
    pub chunk: u64,
    /// Kafka partition the chunk came from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Rows in the chunk.
    pub rows: u64,
    /// Transformed Parquet part.
    pub transform_path: String,
    /// Inverse-transformed Parquet part.
    pub inverse_path: String,
    /// Milliseconds to decode the Avro payload.
    pub decode_ms: f64,
    /// Milliseconds for transform and inverse.
    pub transform_ms: f64,
    /// Milliseconds to write both parts.
    pub write_ms: f64,
    /// Which worker did it (host/pid).
    pub worker: String,
    /// Unix seconds.
    pub created_at: u32,
}

/// A message that can never be processed, kept with its raw payload.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// Topic it was read from.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Job id header, or empty.
    pub job_id: String,
    /// Chunk header, or -1.
    pub chunk: i64,
    /// Why it cannot be processed.
    pub error: String,
    /// The payload as it arrived.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Which worker gave up on it.
    pub worker: String,
    /// Unix seconds.
    pub created_at: u32,
}

/// A dead letter's place and reason, as a job's view shows it (its payload stays in ClickHouse).
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct DeadLetterReason {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Chunk header, or -1.
    pub chunk: i64,
    /// Why it cannot be processed.
    pub error: String,
}

/// A registered model.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct ModelRow {
    /// Content hash.
    pub model_id: String,
    /// Dataset it was fitted on.
    pub dataset: String,
    /// `model.json` format version.
    pub format_version: u32,
    /// Unix seconds.
    pub created_at: u32,
    /// Directory holding `model.json` and `metadata.json`.
    pub path: String,
    /// Valid components over all columns.
    pub components: u32,
    /// The whole `model.json`.
    pub model_json: String,
    /// The whole `metadata.json`.
    pub metadata_json: String,
}

/// A job with its progress and derived status, as listed.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job id.
    pub job_id: String,
    /// Dataset.
    pub dataset: String,
    /// File the job reads.
    pub source: String,
    /// Model used.
    pub model_id: String,
    /// Where the job is, with the consumers' progress.
    pub status: JobState,
    /// Rows published.
    pub rows: u64,
    /// Chunks published (0 while publishing).
    pub chunks: u64,
    /// Chunks with outputs.
    pub chunks_done: u64,
    /// Rows with outputs.
    pub rows_done: u64,
    /// Chunks dead-lettered.
    pub chunks_dead_lettered: u64,
    /// Why publishing failed, or empty.
    pub error: String,
    /// Unix seconds.
    pub created_at: u32,
    /// Unix seconds of the job row's last state.
    pub updated_at: u32,
}

/// Which jobs to list; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only this job.
    pub job_id: Option<String>,
    /// Only jobs in this status.
    pub status: Option<JobState>,
    /// Only this dataset.
    pub dataset: Option<String>,
    /// Created at or after (unix seconds).
    pub since: Option<u32>,
    /// Created before (unix seconds).
    pub until: Option<u32>,
}

/// A registered model, without its JSON.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Content hash.
    pub model_id: String,
    /// Dataset.
    pub dataset: String,
    /// `model.json` format version.
    pub format_version: u32,
    /// Unix seconds.
    pub created_at: u32,
    /// Directory holding the files.
    pub path: String,
    /// Valid components over all columns.
    pub components: u32,
}

/// A value bound to one `?` of a summary query.
#[derive(Clone, Copy)]
pub(crate) enum Bound<'a> {
    Text(&'a str),
    Time(u32),
}

pub(crate) fn bind_all(mut query: clickhouse::query::Query, values: &[Bound<'_>]) -> clickhouse::query::Query {
    for value in values {
        query = match *value {
            Bound::Text(text) => query.bind(text),
            Bound::Time(seconds) => query.bind(seconds),
        };
    }
    query
}

/// The `WHERE` on `jobs FINAL` that `filter` asks for (empty for none), and its values.
pub(crate) fn job_conditions(filter: &JobFilter) -> (String, Vec<Bound<'_>>) {
    let (mut conditions, mut values) = (Vec::new(), Vec::new());
    if let Some(id) = &filter.job_id {
        conditions.push("job_id = ?");
        values.push(Bound::Text(id));
    }
    if let Some(dataset) = &filter.dataset {
        conditions.push("dataset = ?");
        values.push(Bound::Text(dataset));
    }
    if let Some(since) = filter.since {
        conditions.push("created_at >= toDateTime(?)");
        values.push(Bound::Time(since));
    }
    if let Some(until) = filter.until {
        conditions.push("created_at < toDateTime(?)");
        values.push(Bound::Time(until));
    }
    let sql = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    (sql, values)
}

/// Jobs with their progress: a job is `done` when every chunk has outputs, and never
/// `done` when a chunk was dead-lettered. One definition, used by one job and by lists.
/// The statuses' names come from [`JobStatus`] and [`JobState`], the one place they are spelt.
///
/// Outputs and dead letters are counted inside subqueries filtered to the jobs selected
/// (one job by `outputs`' key), reading only the columns counted, so that one job's
/// summary does not read other jobs' history. Returns the SQL and its values in order.
pub(crate) fn job_summaries(filter: &JobFilter) -> (String, Vec<Bound<'_>>) {
    let published = JobStatus::Published.as_str();
    let (running, done, with_dead) =
        (JobState::Running.as_str(), JobState::Done.as_str(), JobState::DoneWithDeadLetters.as_str());
    let (jobs, job_values) = job_conditions(filter);
    let (history, history_values) = match &filter.job_id {
        Some(id) => ("WHERE job_id = ?".to_string(), vec![Bound::Text(id.as_str())]),
        None if jobs.is_empty() => (String::new(), Vec::new()),
        None => (format!("WHERE job_id IN (SELECT job_id FROM jobs FINAL {jobs})"), job_values.clone()),
    };
    let state = if filter.status.is_some() { "WHERE state = ?" } else { "" };
    let sql = format!(
        "SELECT job_id, dataset, source, model_id, \
             multiIf(status = '{published}' AND dead > 0 AND done + dead >= chunks, '{with_dead}', \
                     status = '{published}' AND done >= chunks, '{done}', \
                     status = '{published}', '{running}', status) AS state, \
             rows, chunks, done, rows_done, dead, error, created_at, updated_at \
         FROM (SELECT job_id, dataset, source, model_id, status, rows, chunks, error, created_at, updated_at \
               FROM jobs FINAL {jobs}) \
         ANY LEFT JOIN ( \
             SELECT job_id, sum(o) AS done, sum(r) AS rows_done, sum(d) AS dead FROM ( \
                 SELECT job_id, toUInt64(1) AS o, rows AS r, toUInt64(0) AS d FROM outputs FINAL {history} \
                 UNION ALL SELECT job_id, toUInt64(0), toUInt64(0), toUInt64(1) FROM dead_letters FINAL {history}) \
             GROUP BY job_id) USING job_id \
         {state}"
    );
    let mut values = job_values;
    values.extend(history_values.iter().copied());
    values.extend(history_values);
    if let Some(status) = filter.status {
        values.push(Bound::Text(status.as_str()));
    }
    (sql, values)
}

/// Seconds since the epoch, as ClickHouse `DateTime` stores them.
pub fn unix_now() -> u32 {
    u32::try_from(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)).unwrap_or(u32::MAX)
}

/// Nanoseconds since the epoch: orders successive states of a row.
pub fn version_now() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)).unwrap_or(u64::MAX)
}

/// A name an upload route claimed for the request that made `id` (table `upload_keys`).
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct UploadKeyRow {
    /// `csv_upload` or `shards`.
    pub route: String,
    /// `key:<Idempotency-Key>` or `content:<client address>:<sha256>`.
    pub name: String,
    /// The upload or job id the first request made.
    pub id: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: u32,
}
