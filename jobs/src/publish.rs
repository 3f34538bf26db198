//! Publishing a shard: read the model's columns as a stream, cut them into chunks, encode
//! each as an Avro Object Container File ([`shardflow_schemas::ocf`]) and send one Kafka
//! message per chunk through an idempotent producer. A chunk whose file would exceed
//! `kafka.message_max_bytes` (wide rows, long strings) is cut in halves until it fits, the
//! same way every time. At most
//! `max_in_flight` chunks wait for delivery at once, so a slow broker slows the reader
//! instead of growing memory. The shard is read through once before the first chunk goes
//! out, so a corrupt page far down fails the job with nothing sent. The job row records
//! rows and chunks once every chunk is acknowledged.

use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use shardflow_config::Config;
use shardflow_config::{KafkaConfig, PublishConfig, WireFormat};
use shardflow_kafka::in_flight::{InFlight, Outgoing};
use shardflow_kafka::{self as kafka, headers};
use shardflow_model::Model;
use shardflow_schemas::{ChunkCodec, CodecError, ocf};
use shardflow_store::lineage::{Dataset, Lineage, StageRun};
use shardflow_store::{Index, IndexError, JobRow, JobStatus};
use shardflow_store::{unix_now, version_now};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span};

use arrow_array::RecordBatch;
use shardflow_storage::shard::{AMOUNT, ShardError};
use shardflow_storage::table::Table;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The shard is unusable (the client's to fix).
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// A chunk could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The broker refused or did not acknowledge a chunk.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// ClickHouse refused the job row.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A job whose every chunk the broker acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// Job id.
    pub job_id: String,
    /// Rows sent.
    pub rows: u64,
    /// Chunks sent.
    pub chunks: u64,
}

/// Sends shards to the chunk topic and records jobs.
pub struct Publisher {
    producer: FutureProducer,
    index: Index,
    lineage: Lineage,
    kafka: KafkaConfig,
    publish: PublishConfig,
}

impl Publisher {
    /// Create the topic when missing and connect the producer.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the topic.
    pub async fn new(config: &Config, index: Index) -> Result<Self, PublishError> {
        kafka::ensure_topic(&config.kafka, &config.kafka.topic).await?;
        Ok(Self {
            producer: kafka::producer(&config.kafka)?,
            lineage: Lineage::new(index.clone(), &config.lineage),
            index,
            kafka: config.kafka.clone(),
            publish: config.publish.clone(),
        })
    }

    /// Whether the broker answers.
    ///
    /// # Errors
    /// The client's error when it does not.
    pub async fn broker_answers(&self) -> Result<(), rdkafka::error::KafkaError> {
        kafka::broker_answers(&self.producer, &self.kafka.topic).await
    }

    /// Publish the shard at `path` (already validated with [`Shard::open`]) as a new job
    /// transformed with `model`, in chunks of `publish.chunk_rows`. Returns when every
    /// chunk is acknowledged.
    ///
    /// # Errors
    /// [`PublishError`]; the job row then says `failed` with the reason.
    pub async fn publish(&self, path: &Path, model: &Model, progress: &ProgressBar) -> Result<Published, PublishError> {
        let mut job =
            new_job(&path.display().to_string(), &model.dataset, self.publish.chunk_rows.get(), JobStatus::Publishing);
        job.model_id.clone_from(&model.model_id);
        self.index.insert_job(&job).await?;
        self.publish_job(job, path, model, progress).await
    }

    /// Publish `job`, whose row is recorded (by the submission, or left `publishing` or
    /// `fitting` by a process that stopped): record it `publishing` with `model` unless it
    /// already says so, send every chunk from the first, in chunks of `job.chunk_rows`, then
    /// record `published` or `failed`. Chunks are cut the same way every time and their outputs are keyed by
    /// (job, chunk), so publishing a job again is safe.
    ///
    /// # Errors
    /// [`PublishError`]; the job row then says `failed` with the reason.
    pub async fn publish_job(
        &self,
        mut job: JobRow,
        path: &Path,
        model: &Model,
        progress: &ProgressBar,
    ) -> Result<Published, PublishError> {
        let span = info_span!("publish", job = %job.job_id, source = %path.display());
        async {
            if job.status != JobStatus::Publishing || job.model_id != model.model_id {
                job.model_id.clone_from(&model.model_id);
                job.dataset.clone_from(&model.dataset);
                job.status = JobStatus::Publishing;
                job.version = version_now();
                job.updated_at = unix_now();
                self.index.insert_job(&job).await?;
            }
            let chunk_rows = usize::try_from(job.chunk_rows).unwrap_or(usize::MAX).max(1);
            let started = std::time::SystemTime::now();
            let result = self.send_chunks(&job.job_id, path, model, chunk_rows, progress).await;
            self.record_lineage(&job, model, started, &result).await;
            match &result {
                Ok(done) => {
                    job.status = JobStatus::Published;
                    job.rows = done.rows;
                    job.chunks = done.chunks;
                    info!(rows = done.rows, chunks = done.chunks, "published");
                }
                Err(e) => {
                    job.status = JobStatus::Failed;
                    job.error = e.to_string();
                }
            }
            record_final(&self.index, &mut job).await?;
            result
        }
        .instrument(span)
        .await
    }

    /// The job's publish run: the shard (the job's source, the model's columns) in, the
    /// chunk topic out, with the rows sent.
    async fn record_lineage(
        &self,
        job: &JobRow,
        model: &Model,
        started: std::time::SystemTime,
        result: &Result<Published, PublishError>,
    ) {
        let stage =
            StageRun::of_job(self.lineage.namespace(), &job.job_id, "publish", None).with_model(&model.model_id);
        let schema = model.input_schema();
        let shard = Dataset::location(&job.source).with_arrow_schema(&schema);
        let topic = Dataset::topic(&self.kafka.brokers, &self.kafka.topic).with_arrow_schema(&schema);
        let (outputs, error) = match result {
            Ok(done) => (vec![topic.with_row_count(done.rows)], None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let inputs = vec![shard, Dataset::model(self.lineage.namespace(), &model.model_id)];
        let events = stage.events(started, std::time::SystemTime::now(), inputs, outputs, error.as_deref());
        self.lineage.record_or_warn(&job.job_id, &events).await;
    }

    /// The recorder of the job stages' lineage.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    async fn send_chunks(
        &self,
        job_id: &str,
        path: &Path,
        model: &Model,
        chunk_rows: usize,
        progress: &ProgressBar,
    ) -> Result<Published, PublishError> {
        // Reading and encoding are blocking work: a thread feeds encoded chunks through
        // a small channel, so it never runs far ahead of the broker.
        let (tx, mut rx) = mpsc::channel::<Result<(u64, Vec<u8>), PublishError>>(2);
        let reader_path = path.to_path_buf();
        let columns: Vec<String> = model.columns.iter().map(|c| c.name.clone()).collect();
        let max_bytes = self.kafka.message_max_bytes;
        let v1 = match self.publish.wire {
            WireFormat::Ocf => None,
            WireFormat::AmountDatum if model.dataset == AMOUNT && columns == [AMOUNT] => Some(ChunkCodec::amount()?),
            WireFormat::AmountDatum => {
                return Err(CodecError::Encode(format!(
                    "publish.wire = amount-datum carries the {AMOUNT} dataset only, not `{}`",
                    model.dataset
                ))
                .into());
            }
        };
        let reader = tokio::task::spawn_blocking(move || {
            // Every page is read once before the first chunk goes out: a corrupt page
            // half-way fails the job with nothing published, not after half of it.
            let batches = match Table::open(&reader_path, &columns, None)
                .and_then(|t| t.verify(chunk_rows))
                .and_then(|_| Table::open(&reader_path, &columns, None))
                .and_then(|t| t.batches(chunk_rows))
            {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            for batch in batches {
                let encoded = batch
                    .map_err(PublishError::from)
                    .and_then(|b| Ok(in_model_order(&reader_path, &b, &columns)?))
                    .and_then(|b| match &v1 {
                        Some(codec) => Ok(vec![(b.num_rows() as u64, codec.encode(&as_float64(b)?)?)]),
                        None => encode_fitting(&b, max_bytes),
                    });
                let chunks = match encoded {
                    Ok(chunks) => chunks,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                for chunk in chunks {
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
            }
        });

        let progress = progress.clone();
        let mut in_flight = InFlight::new(&self.producer, &self.kafka.topic, self.publish.max_in_flight.get())
            .on_ack(move |rows| progress.inc(rows));
        let mut chunks = 0u64;
        let mut rows = 0u64;
        let mut failure = None;
        while let Some(item) = rx.recv().await {
            let (n, payload) = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let message = self.chunk_message(job_id, chunks, model, payload, n);
            chunks += 1;
            rows += n;
            if let Err(e) = in_flight.send(message).await {
                failure = Some(e.into());
                break;
            }
        }
        drop(rx);
        let (_, delivered) = in_flight.finish().await;
        let _ = reader.await;
        match failure.or(delivered.err().map(PublishError::from)) {
            Some(e) => Err(e),
            None => Ok(Published { job_id: job_id.to_string(), rows, chunks }),
        }
    }

    /// Chunk `seq` of a job as a message: keyed `<job>/<seq>`, with the headers workers read.
    fn chunk_message(&self, job_id: &str, seq: u64, model: &Model, payload: Vec<u8>, rows: u64) -> Outgoing {
        let seq_text = seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: headers::JOB_ID, value: Some(job_id) })
            .insert(Header { key: headers::CHUNK, value: Some(&seq_text) })
            .insert(Header { key: headers::MODEL_ID, value: Some(&model.model_id) })
            .insert(Header { key: headers::DATASET, value: Some(&model.dataset) });
        let headers = match self.publish.wire {
            WireFormat::Ocf => headers.insert(Header { key: headers::FORMAT, value: Some(ocf::OCF_FORMAT) }),
            WireFormat::AmountDatum => {
                headers.insert(Header { key: headers::SCHEMA, value: Some(shardflow_schemas::AMOUNT_CHUNK_SCHEMA) })
            }
        };
        Outgoing { key: format!("{job_id}/{seq}"), payload, headers: Some(headers), weight: rows }
    }
}

/// `batch`'s columns in the model's order (the reader gives them in file order).
fn in_model_order(path: &Path, batch: &RecordBatch, columns: &[String]) -> Result<RecordBatch, ShardError> {
    let schema = batch.schema();
    let indices: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    batch.project(&indices).map_err(|e| ShardError::Read { path: path.display().to_string(), reason: e.to_string() })
}

/// The `Amount` column as Float64, as the version-1 codec takes it.
fn as_float64(batch: RecordBatch) -> Result<RecordBatch, PublishError> {
    let column = arrow_cast::cast(batch.column(0), &arrow_schema::DataType::Float64)
        .map_err(|e| CodecError::Encode(format!("{AMOUNT} as Float64: {e}")))?;
    RecordBatch::try_from_iter([(AMOUNT, column)]).map_err(|e| CodecError::Encode(e.to_string()).into())
}

/// `batch` encoded, cut in halves until every file is at most `max_bytes`: the same cuts
/// every time, so a republished job has the same chunks.
fn encode_fitting(batch: &RecordBatch, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>, PublishError> {
    let payload = ocf::encode(batch)?;
    let rows = batch.num_rows();
    if payload.len() <= max_bytes || rows <= 1 {
        return Ok(vec![(rows as u64, payload)]);
    }
    let half = rows / 2;
    let mut chunks = encode_fitting(&batch.slice(0, half), max_bytes)?;
    chunks.extend(encode_fitting(&batch.slice(half, rows - half), max_bytes)?);
    Ok(chunks)
}

/// A new job's row for the shard at `path`: a fresh (time-ordered) id, `status`, nothing
/// published yet.
pub fn new_job(source: &str, dataset: &str, chunk_rows: usize, status: JobStatus) -> JobRow {
    let now = unix_now();
    JobRow {
        job_id: uuid::Uuid::now_v7().to_string(),
        dataset: dataset.to_string(),
        source: source.to_string(),
        model_id: String::new(),
        status,
        chunk_rows: chunk_rows as u64,
        rows: 0,
        chunks: 0,
        error: String::new(),
        created_at: now,
        updated_at: now,
        version: version_now(),
    }
}

/// Record a job's final state (`published` or `failed`), retrying while ClickHouse fails
/// for a reason that may pass, for up to five minutes: the state must not stay
/// `publishing` because one insert failed after every chunk went out.
///
/// # Errors
/// The last error, when it is permanent or the five minutes pass.
pub async fn record_final(index: &Index, job: &mut JobRow) -> Result<(), IndexError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut backoff = Duration::from_millis(100);
    loop {
        job.updated_at = unix_now();
        job.version = version_now();
        match index.insert_job(job).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && std::time::Instant::now() + backoff < deadline => {
                tracing::warn!(job = %job.job_id, error = %e, retry_in = ?backoff, "recording the job's state failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}
