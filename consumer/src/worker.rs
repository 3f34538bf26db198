//! The worker loop: consume chunks as a member of the consumer group, process each, record
//! its outputs in ClickHouse, and only then commit its offset. A chunk that fails for a
//! reason that may pass (disk, ClickHouse) is retried with backoff and never committed
//! before it succeeds; a message that can never succeed is logged and skipped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use shardflow_backends::kafka::{self, GroupContext, headers};
use shardflow_backends::{Config, Index, IndexError};
use shardflow_model::Model;
use shardflow_schemas::ChunkCodec;
use tokio::sync::{Mutex, watch};
use tracing::{Instrument, error, info, info_span, warn};

use crate::chunk::{Chunk, ChunkError, process};

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// ClickHouse did not answer at start.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The broker refused the client or the topic.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The output root cannot be created.
    #[error("output root {path}: {source}")]
    OutputRoot {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The chunk schema did not load.
    #[error(transparent)]
    Codec(#[from] shardflow_schemas::CodecError),
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("model {0} is not registered or cannot be loaded: {1}")]
    Model(String, String),
    #[error("worker task failed: {0}")]
    Join(String),
}

impl HandleError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Chunk(e) => e.is_retryable(),
            Self::Index(e) => e.is_retryable(),
            Self::Model(..) => false,
            Self::Join(_) => true,
        }
    }
}

/// How one message ended.
enum Outcome {
    /// Outputs durable and indexed: commit.
    Done,
    /// Can never succeed: logged, commit so the partition moves on.
    Skipped,
    /// Shutdown arrived while retrying: leave uncommitted for the next owner.
    Abandoned,
}

/// What the worker tasks of a process share.
struct Shared {
    config: Config,
    index: Index,
    codec: ChunkCodec,
    output_root: PathBuf,
    models: Mutex<HashMap<String, Arc<Model>>>,
    name: String,
}

/// Run `tasks` group members in this process until `shutdown` turns true.
///
/// # Errors
/// [`WorkerError`] when a service is unreachable at start.
pub async fn run(config: Config, tasks: usize, shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
    let index = Index::connect(&config.clickhouse).await?;
    kafka::ensure_topic(&config.kafka, &config.kafka.topic).await?;
    let root = &config.storage.output_root;
    let fail = |source| WorkerError::OutputRoot { path: root.display().to_string(), source };
    std::fs::create_dir_all(root).map_err(fail)?;
    let output_root = root.canonicalize().map_err(fail)?;
    let shared = Arc::new(Shared {
        codec: ChunkCodec::amount()?,
        index,
        output_root,
        models: Mutex::new(HashMap::new()),
        name: format!("{}/{}", hostname(), std::process::id()),
        config,
    });
    let mut handles = Vec::new();
    for task in 0..tasks.max(1) {
        let consumer = kafka::consumer(&shared.config.kafka)?;
        consumer.subscribe(&[&shared.config.kafka.topic])?;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        handles.push(tokio::spawn(consume(shared, consumer, shutdown).instrument(info_span!("worker", task))));
    }
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "localhost".into())
}

async fn consume(shared: Arc<Shared>, consumer: StreamConsumer<GroupContext>, mut shutdown: watch::Receiver<bool>) {
    info!(topic = %shared.config.kafka.topic, group = %shared.config.kafka.group_id, "consuming");
    loop {
        let message = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "receive failed");
                continue;
            }
        };
        let outcome = match chunk_of(&message) {
            Ok(chunk) => {
                let span = info_span!("chunk", job = %chunk.job_id, chunk = chunk.seq, partition = chunk.partition, offset = chunk.offset);
                shared.handle(&chunk, &mut shutdown).instrument(span).await
            }
            Err(reason) => {
                error!(partition = message.partition(), offset = message.offset(), %reason, "skipping a message that is not a chunk");
                Outcome::Skipped
            }
        };
        match outcome {
            Outcome::Done | Outcome::Skipped => commit(&consumer, &message),
            Outcome::Abandoned => break,
        }
    }
    // Outstanding commits are flushed by a last synchronous one.
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    info!("worker stopped");
}

fn commit(consumer: &StreamConsumer<GroupContext>, message: &BorrowedMessage<'_>) {
    let mut offsets = TopicPartitionList::new();
    let next = Offset::Offset(message.offset() + 1);
    if let Err(e) = offsets
        .add_partition_offset(message.topic(), message.partition(), next)
        .and_then(|()| consumer.store_offsets(&offsets))
        .and_then(|()| consumer.commit(&offsets, CommitMode::Async))
    {
        // Not fatal: the chunk is redelivered and rewritten to the same bytes.
        warn!(error = %e, partition = message.partition(), offset = message.offset(), "offset commit failed");
    }
}

/// Read the chunk headers; a message without them is not one of ours.
fn chunk_of(message: &BorrowedMessage<'_>) -> Result<Chunk, String> {
    let mut job_id = None;
    let mut seq = None;
    let mut model_id = None;
    if let Some(hs) = message.headers() {
        for h in hs.iter() {
            let value = h.value.and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
            match h.key {
                headers::JOB_ID => job_id = value,
                headers::CHUNK => seq = value.and_then(|v| v.parse::<u64>().ok()),
                headers::MODEL_ID => model_id = value,
                _ => {}
            }
        }
    }
    Ok(Chunk {
        job_id: job_id
            .filter(|j| !j.is_empty() && !j.contains(['/', '\\', '.']))
            .ok_or("missing or invalid job_id header")?,
        seq: seq.ok_or("missing or invalid chunk header")?,
        model_id: model_id.ok_or("missing model_id header")?,
        partition: message.partition(),
        offset: message.offset(),
        payload: message.payload().ok_or("empty payload")?.to_vec(),
    })
}

impl Shared {
    async fn handle(&self, chunk: &Chunk, shutdown: &mut watch::Receiver<bool>) -> Outcome {
        let mut backoff = self.config.consumer.retry_backoff;
        loop {
            match self.try_handle(chunk).await {
                Ok(rows) => {
                    info!(rows, "chunk done");
                    return Outcome::Done;
                }
                Err(e) if !e.is_retryable() => {
                    error!(error = %e, "skipping chunk that cannot succeed");
                    return Outcome::Skipped;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "chunk failed; will retry");
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => return Outcome::Abandoned,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.consumer.retry_backoff_max);
                }
            }
        }
    }

    async fn try_handle(&self, chunk: &Chunk) -> Result<u64, HandleError> {
        let model = self.model(&chunk.model_id).await?;
        let codec = self.codec.clone();
        let root = self.output_root.clone();
        let name = self.name.clone();
        let owned = chunk.clone();
        let row = tokio::task::spawn_blocking(move || process(&owned, &model, &codec, &root, &name))
            .await
            .map_err(|e| HandleError::Join(e.to_string()))??;
        self.index.insert_output(&row).await?;
        Ok(row.rows)
    }

    async fn model(&self, id: &str) -> Result<Arc<Model>, HandleError> {
        if let Some(m) = self.models.lock().await.get(id) {
            return Ok(m.clone());
        }
        let row = self.index.model(id).await?.ok_or_else(|| HandleError::Model(id.into(), "not registered".into()))?;
        let model =
            Arc::new(Model::from_json(&row.model_json).map_err(|e| HandleError::Model(id.into(), e.to_string()))?);
        self.models.lock().await.insert(id.to_string(), model.clone());
        Ok(model)
    }
}
