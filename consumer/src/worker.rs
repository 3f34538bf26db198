//! The worker loop: consume chunks as a member of the consumer group, process each, record
//! its outputs in ClickHouse, and only then commit its offset.
//!
//! - A chunk that fails for a reason that may pass (disk, ClickHouse) is retried with
//!   backoff and never committed before it succeeds; meanwhile the member's partitions
//!   are paused and the consumer keeps polling, so it stays in the group.
//! - A message that can never succeed, or keeps failing past `consumer.retry_max_attempts`
//!   (unreachable services excepted: those are waited for), goes to the dead-letter topic
//!   and the `dead_letters` table with the reason, and is then committed: the partition
//!   moves on.
//! - On revocation the stored offsets are committed synchronously before the partitions
//!   are given up; on shutdown the chunk in hand is finished (or, while retrying,
//!   abandoned uncommitted), offsets are committed and the member leaves the group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, Statistics, TopicPartitionList};
use shardflow_config::Config;
use shardflow_jobs::group_fit::{self, TaskError};
use shardflow_kafka::{self as kafka, headers};
use shardflow_model::Model;
use shardflow_schemas::{ChunkCodec, ocf};
use shardflow_storage::objects::{Root, Storage};
use shardflow_store::lineage::{Dataset, Lineage, StageRun};
use shardflow_store::{Index, IndexError};
use tokio::sync::{Mutex, watch};
use tracing::{Instrument, info, info_span, warn};

use crate::chunk::{Chunk, ChunkError, Format, process, put_parts};
use crate::metrics::{Metrics, PartitionLabel};
use shardflow_kafka::dead_letter::{DeadLetterError, DeadLetters, worker_name};
use shardflow_kafka::retry::{Next, Paused, Policy, Retry, Waited};

/// Temporary part files untouched this long belong to a writer that died: a part is
/// written in seconds.
const SWEEP_TEMPORARIES_AFTER: Duration = Duration::from_secs(15 * 60);

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// ClickHouse did not answer at start.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The broker refused the client or the topic.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The output root cannot be created, or the metrics port bound.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
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
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// The blocking task panicked (the same input panics again) or was cancelled.
    #[error("worker task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl HandleError {
    /// What the failure means for the chunk, from the typed cause.
    fn retry(&self) -> Retry {
        match self {
            Self::Chunk(e) => e.retry(),
            Self::Index(e) => e.retry(),
            Self::Model(..) => Retry::Permanent,
            Self::DeadLetter(e) => e.retry(),
            Self::Join(e) if e.is_panic() => Retry::Permanent,
            Self::Join(_) => Retry::Transient,
        }
    }
}

/// How one message ended.
enum Outcome {
    /// Outputs (or the dead letter) durable and indexed: commit.
    Durable,
    /// Its partition went to another member while it waited for a retry: leave it
    /// uncommitted, the new owner processes it.
    Revoked,
    /// Shutdown arrived while retrying: leave uncommitted for the next owner.
    Abandoned,
}

/// The consumer's librdkafka context: logs rebalances, commits before partitions are
/// revoked, and turns statistics into the lag gauge.
pub struct GroupContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .lag
                        .get_or_create(&PartitionLabel { topic: topic.clone(), partition })
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            // Chunks are processed between polls, so everything stored is durable: commit
            // it before another member takes the partitions over.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                info!(error = %e, "nothing to commit before revocation");
            }
            info!(partitions = %partitions(list), "partitions revoked");
            self.metrics.assigned_partitions.dec_by(i64::try_from(list.count()).unwrap_or(i64::MAX));
            for e in list.elements() {
                self.metrics.lag.remove(&PartitionLabel { topic: e.topic().to_string(), partition: e.partition() });
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                info!(partitions = %partitions(list), "partitions assigned");
                self.metrics.assigned_partitions.inc_by(i64::try_from(list.count()).unwrap_or(i64::MAX));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance failed"),
        }
    }
}

fn partitions(list: &TopicPartitionList) -> String {
    list.elements().iter().map(|e| e.partition().to_string()).collect::<Vec<_>>().join(",")
}

/// What the worker tasks of a process share.
struct Shared {
    config: Config,
    index: Index,
    codec: ChunkCodec,
    output: Root,
    /// Every root, for fit tasks: their shards in the data roots, their results under the
    /// model root.
    storage: Storage,
    /// Where fit tasks copy remote shards while they read them.
    scratch: std::path::PathBuf,
    models: Mutex<HashMap<String, Arc<Model>>>,
    dead_letters: DeadLetters,
    lineage: Lineage,
    metrics: Arc<Metrics>,
    name: String,
    policy: Policy,
}

/// Run `tasks` group members in this process until `shutdown` turns true; serve
/// `/metrics`, `/healthz` and `/readyz` on `consumer.listen` meanwhile.
///
/// # Errors
/// [`WorkerError`] when a service is unreachable at start.
pub async fn run(config: Config, tasks: usize, shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
    let index = Index::connect(&config.clickhouse).await?;
    let dead_letter_topic = config.consumer.dead_letter_topic(&config.kafka.topic);
    kafka::ensure_topic(&config.kafka, &config.kafka.topic).await?;
    kafka::ensure_topic(&config.kafka, &dead_letter_topic).await?;
    let io = |what: String| move |source| WorkerError::Io { what, source };
    let output = match Root::open(&config.storage.output_root, &config.storage.options())
        .map_err(|e| WorkerError::Io { what: "output root".into(), source: std::io::Error::other(e) })?
    {
        Root::Local(root) => {
            std::fs::create_dir_all(&root).map_err(io(format!("output root {}", root.display())))?;
            let root = root.canonicalize().map_err(io(format!("output root {}", root.display())))?;
            // Temporaries of writers that died (kill -9, power loss); hidden, so readers
            // skip them anyway, but they take disk space. Only old ones: another member
            // on a shared volume may be writing one now.
            match shardflow_storage::sweep_temporaries(&root, SWEEP_TEMPORARIES_AFTER) {
                Ok(0) => {}
                Ok(removed) => info!(removed, "removed temporary files left by stopped writers"),
                Err(e) => warn!(error = %e, "could not sweep temporary files"),
            }
            Root::Local(root)
        }
        // An object is put in one request: there is no temporary to sweep.
        remote @ Root::Remote(_) => remote,
    };
    let storage = Storage::open(
        &config.storage.data_roots,
        &config.storage.output_root,
        &config.storage.model_root,
        &config.storage.options(),
    )
    .map_err(|e| WorkerError::Io { what: "storage roots".into(), source: std::io::Error::other(e) })?;
    let scratch = std::env::temp_dir().join(format!("shardflow-fit-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(io(format!("scratch directory {}", scratch.display())))?;
    let metrics = Arc::new(Metrics::new());
    let dead_letters = kafka::producer(&config.kafka)?;

    let listener = tokio::net::TcpListener::bind(config.consumer.listen)
        .await
        .map_err(io(format!("binding {}", config.consumer.listen)))?;
    let address = listener.local_addr().map_err(io("metrics listener".into()))?;
    info!(%address, "metrics, healthz and readyz listening");
    let probe = Arc::new(crate::http::Probe {
        metrics: metrics.clone(),
        index: index.clone(),
        producer: dead_letters.clone(),
        topic: config.kafka.topic.clone(),
    });
    let mut http_shutdown = shutdown.clone();
    let http = tokio::spawn(async move {
        let stop = async move {
            let _ = http_shutdown.wait_for(|s| *s).await;
        };
        axum::serve(listener, crate::http::router(probe)).with_graceful_shutdown(stop).await
    });

    let name = worker_name();
    let shared = Arc::new(Shared {
        codec: ChunkCodec::amount()?,
        dead_letters: DeadLetters::new(dead_letters, dead_letter_topic, index.clone(), name.clone()),
        policy: Policy::new(&config.consumer),
        lineage: Lineage::new(index.clone(), &config.lineage),
        index,
        output,
        storage,
        scratch: scratch.clone(),
        models: Mutex::new(HashMap::new()),
        metrics,
        name,
        config,
    });
    let mut handles = Vec::new();
    for task in 0..tasks.max(1) {
        let consumer = kafka::consumer(&shared.config.kafka, GroupContext { metrics: shared.metrics.clone() })?;
        consumer.subscribe(&[&shared.config.kafka.topic])?;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        handles.push(tokio::spawn(consume(shared, consumer, shutdown).instrument(info_span!("worker", task))));
    }
    for handle in handles {
        let _ = handle.await;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = http.await;
    Ok(())
}

async fn consume(shared: Arc<Shared>, consumer: StreamConsumer<GroupContext>, mut shutdown: watch::Receiver<bool>) {
    info!(topic = %shared.config.kafka.topic, group = %shared.config.kafka.group_id, "consuming");
    loop {
        let message = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "receive failed");
                continue;
            }
        };
        let span = info_span!("message", partition = message.partition(), offset = message.offset());
        match shared.handle(&consumer, &message, &mut shutdown).instrument(span).await {
            Outcome::Durable => commit(&consumer, &message),
            Outcome::Revoked => info!("partition revoked while retrying; its new owner takes the message"),
            Outcome::Abandoned => break,
        }
    }
    // Everything stored is durable: commit it, then leave the group (on drop).
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        info!(error = %e, "nothing to commit at shutdown");
    }
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
        warn!(error = %e, "offset commit failed");
    }
}

/// What a message's headers say about it; any of it may be missing on a bad message.
#[derive(Default)]
struct ChunkHeaders {
    job_id: Option<String>,
    seq: Option<u64>,
    model_id: Option<String>,
    schema: Option<String>,
    format: Option<String>,
}

impl ChunkHeaders {
    fn read(message: &BorrowedMessage<'_>) -> Self {
        let mut out = Self::default();
        for h in message.headers().iter().flat_map(|hs| hs.iter()) {
            let value = h.value.and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
            match h.key {
                // Job ids are UUIDs (they name output directories): anything else is a
                // bad message, never a file name to try again and again.
                headers::JOB_ID => out.job_id = value.filter(|j| j.len() == 36 && uuid::Uuid::try_parse(j).is_ok()),
                headers::CHUNK => out.seq = value.and_then(|v| v.parse::<u64>().ok()),
                headers::MODEL_ID => out.model_id = value,
                headers::SCHEMA => out.schema = value,
                headers::FORMAT => out.format = value,
                _ => {}
            }
        }
        out
    }

    /// The chunk, when the headers make one in a format this worker reads: an Object
    /// Container File, or (no `format` header) a version-1 datum of `codec`'s schema.
    fn chunk(&self, message: &BorrowedMessage<'_>, codec: &ChunkCodec) -> Result<Chunk, String> {
        let format = match self.format.as_deref() {
            Some(ocf::OCF_FORMAT) => Format::Ocf,
            Some(other) => return Err(format!("payload format is {other}, this worker reads {}", ocf::OCF_FORMAT)),
            None => match self.schema.as_deref() {
                Some(schema) if schema != codec.schema_name() => {
                    return Err(format!("payload schema is {schema}, this worker reads {}", codec.schema_name()));
                }
                _ => Format::AmountDatum,
            },
        };
        Ok(Chunk {
            job_id: self.job_id.clone().ok_or("missing or invalid job_id header")?,
            seq: self.seq.ok_or("missing or invalid chunk header")?,
            model_id: self.model_id.clone().ok_or("missing model_id header")?,
            partition: message.partition(),
            offset: message.offset(),
            format,
            payload: message.payload().ok_or("empty payload")?.to_vec(),
        })
    }
}

/// Wait `delay` before a message's next attempt, every partition paused (from its first
/// wait on, [`Paused`]) and the consumer polled: the outcome, when the wait ends the
/// message's handling (a shutdown, or its partition given to another member).
async fn wait_to_retry<'c>(
    consumer: &'c StreamConsumer<GroupContext>,
    paused: &mut Option<Paused<'c, GroupContext>>,
    delay: Duration,
    shutdown: &mut watch::Receiver<bool>,
    message: &BorrowedMessage<'_>,
) -> Option<Outcome> {
    let waiting = paused.get_or_insert_with(|| Paused::pause(consumer));
    if waiting.wait(delay, shutdown).await == Waited::Shutdown {
        return Some(Outcome::Abandoned);
    }
    (!waiting.holds(message.topic(), message.partition())).then_some(Outcome::Revoked)
}

/// Resume what [`wait_to_retry`] paused, past `message` once it is durable.
fn resume(paused: Option<Paused<'_, GroupContext>>, outcome: &Outcome, message: &BorrowedMessage<'_>) {
    if let Some(waiting) = paused {
        waiting.resume(matches!(outcome, Outcome::Durable).then_some(message));
    }
}

impl Shared {
    /// Process one message until it is durable (outputs or dead letter), revoked or
    /// abandoned. Between attempts every partition of the member is paused and the
    /// consumer polled ([`Paused`]), so that waiting never gets the member evicted; a
    /// failure that cannot pass, or keeps failing past the cap, dead-letters the message.
    async fn handle(
        &self,
        consumer: &StreamConsumer<GroupContext>,
        message: &BorrowedMessage<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Outcome {
        if group_fit::is_fit_task(message.headers()) {
            return self.fit_task(consumer, message, shutdown).await;
        }
        let started = Instant::now();
        let ids = ChunkHeaders::read(message);
        let (chunk, mut dead) = match ids.chunk(message, &self.codec) {
            Ok(chunk) => (Some(chunk), None),
            Err(reason) => (None, Some(reason)),
        };
        let mut attempts = self.policy.attempts();
        let mut paused: Option<Paused<'_, GroupContext>> = None;
        let outcome = loop {
            let (result, wait) = match (dead.as_deref(), &chunk) {
                (None, Some(chunk)) => {
                    let span = info_span!("chunk", job = %chunk.job_id, chunk = chunk.seq);
                    match self.try_chunk(chunk).instrument(span).await {
                        Ok(()) => (Ok(()), None),
                        Err(e) => match attempts.failed(e.retry(), &e) {
                            Next::GiveUp(reason) => {
                                // Dead-letter it now, without waiting.
                                dead = Some(reason);
                                continue;
                            }
                            Next::Wait(wait) => (Err(e), Some(wait)),
                        },
                    }
                }
                (reason, _) => {
                    let reason = reason.unwrap_or("not a chunk").to_string();
                    match self.dead_letter(message, &ids, &reason).await {
                        Ok(()) => (Ok(()), None),
                        // Nowhere else to put it: retried until it is recorded.
                        Err(e) => {
                            let wait = attempts.backoff();
                            (Err(e), Some(wait))
                        }
                    }
                }
            };
            let (Err(e), Some(wait)) = (result, wait) else {
                if dead.is_none() {
                    self.metrics.chunk_seconds.observe(started.elapsed().as_secs_f64());
                    if let Some(published) = message.timestamp().to_millis() {
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                        self.metrics.publish_to_index_seconds.observe((now - published).max(0) as f64 / 1000.0);
                    }
                }
                break Outcome::Durable;
            };
            self.metrics.retries.inc();
            if matches!(e, HandleError::Index(_)) {
                self.metrics.clickhouse_insert_errors.inc();
            }
            warn!(error = %e, kind = ?e.retry(), retry_in = ?wait, "failed; will retry, offset not committed");
            if let Some(ended) = wait_to_retry(consumer, &mut paused, wait, shutdown, message).await {
                break ended;
            }
        };
        resume(paused, &outcome, message);
        outcome
    }

    /// Transform, write and index a chunk. Errors that cannot pass are returned as such
    /// (the caller dead-letters them).
    async fn try_chunk(&self, chunk: &Chunk) -> Result<(), HandleError> {
        let model = self.model(&chunk.model_id).await?;
        let codec = self.codec.clone();
        let root = self.output.clone();
        let name = self.name.clone();
        let owned = chunk.clone();
        let mut done = tokio::task::spawn_blocking(move || process(&owned, &model, &codec, &root, &name)).await??;
        // Parts first, then their index row, then (the caller) the offset.
        if let Root::Remote(root) = &self.output {
            put_parts(root, std::mem::take(&mut done.parts)).await?;
        }
        // Issues first: a chunk with an outputs row has its issues recorded too.
        self.index.insert_value_issues(&done.issues).await?;
        let indexing = SystemTime::now();
        self.index.insert_output(&done.output).await?;
        // Then its lineage, before the offset: a redelivery records the same runs again.
        let events = self.chunk_events(chunk, &done, indexing, SystemTime::now());
        self.lineage.record(&chunk.job_id, &events).await?;
        let row = done.output;
        self.metrics.records.inc_by(row.rows);
        self.metrics.chunks.inc();
        info!(rows = row.rows, "chunk done");
        Ok(())
    }

    /// The chunk's transform, inverse and index runs: each `START` and `COMPLETE`, the
    /// job's run their parent, the model an input of the first two.
    fn chunk_events(
        &self,
        chunk: &Chunk,
        done: &crate::chunk::Processed,
        indexing: SystemTime,
        indexed: SystemTime,
    ) -> Vec<shardflow_store::lineage::RunEvent> {
        let (namespace, at) = (self.lineage.namespace(), &done.lineage);
        let stage =
            |name: &str| StageRun::of_job(namespace, &chunk.job_id, name, Some(chunk.seq)).with_model(&chunk.model_id);
        let model = Dataset::model(namespace, &chunk.model_id);
        let rows = done.output.rows;
        let topic =
            Dataset::topic(&self.config.kafka.brokers, &self.config.kafka.topic).with_arrow_schema(&at.input_schema);
        let transform_part = Dataset::location(&done.output.transform_path).with_arrow_schema(&at.transform_schema);
        let inverse_part = Dataset::location(&done.output.inverse_path).with_arrow_schema(&at.input_schema);
        let table = Dataset::table(self.config.clickhouse.url.as_str(), &self.config.clickhouse.database, "outputs");
        let mut events = Vec::with_capacity(6);
        events.extend(stage("transform").events(
            at.started,
            at.transformed,
            vec![topic, model.clone()],
            vec![transform_part.clone().with_statistics(rows, at.transform_bytes)],
            None,
        ));
        events.extend(stage("inverse").events(
            at.transformed,
            at.written,
            vec![transform_part.clone(), model],
            vec![inverse_part.clone().with_statistics(rows, at.inverse_bytes)],
            None,
        ));
        events.extend(stage("index").events(
            indexing,
            indexed,
            vec![transform_part, inverse_part],
            vec![table.with_row_count(1)],
            None,
        ));
        events
    }

    /// A fit task ([`group_fit`]): its shard's result put under the model root. A payload
    /// that is no task is dead-lettered; a result that cannot be put is retried as a chunk
    /// is (partitions paused, the consumer polled), until it is put.
    async fn fit_task(
        &self,
        consumer: &StreamConsumer<GroupContext>,
        message: &BorrowedMessage<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let mut attempts = self.policy.attempts();
        let mut paused: Option<Paused<'_, GroupContext>> = None;
        let outcome = loop {
            let payload = message.payload().unwrap_or_default();
            let failure = match group_fit::run_task(&self.storage, payload, &self.name, &self.scratch).await {
                Ok(task) => {
                    info!(fit = %task.fit_id, phase = ?task.phase, shard = task.index, "fit task done");
                    break Outcome::Durable;
                }
                Err(TaskError::Bad(reason)) => {
                    match self.dead_letter(message, &ChunkHeaders::read(message), &reason).await {
                        Ok(()) => break Outcome::Durable,
                        Err(e) => e.to_string(),
                    }
                }
                Err(e @ TaskError::Store(_)) => e.to_string(),
            };
            self.metrics.retries.inc();
            let wait = attempts.backoff();
            warn!(error = %failure, retry_in = ?wait, "fit task failed; will retry, offset not committed");
            if let Some(ended) = wait_to_retry(consumer, &mut paused, wait, shutdown, message).await {
                break ended;
            }
        };
        resume(paused, &outcome, message);
        outcome
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        ids: &ChunkHeaders,
        reason: &str,
    ) -> Result<(), HandleError> {
        let job_id = ids.job_id.as_deref().unwrap_or_default();
        let chunk = ids.seq.and_then(|s| i64::try_from(s).ok()).unwrap_or(-1);
        self.dead_letters.record(message, job_id, chunk, reason).await?;
        self.metrics.dead_letters.inc();
        // The chunk's transform failed, with the reason; lineage never holds a dead letter up.
        if let (Some(job_id), Some(seq)) = (ids.job_id.as_deref(), ids.seq) {
            let now = SystemTime::now();
            let mut stage = StageRun::of_job(self.lineage.namespace(), job_id, "transform", Some(seq));
            if let Some(model_id) = ids.model_id.as_deref() {
                stage = stage.with_model(model_id);
            }
            let topic = Dataset::topic(&self.config.kafka.brokers, message.topic());
            self.lineage.record_or_warn(job_id, &stage.events(now, now, vec![topic], Vec::new(), Some(reason))).await;
        }
        Ok(())
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
