//! The game-rounds sink: a consumer group member that reads Confluent-framed Avro rounds
//! from the rounds topic and inserts them into ClickHouse `game_rounds` in batches, flushed
//! at `batch_rows` rows or after `flush_interval`. Offsets are committed only after the
//! batch is inserted. A row may be inserted more than once (a batch redelivered after a
//! crash, two members that overlapped during a rebalance): `(upload_id, line)` names it,
//! `game_rounds` keeps it once, and the hourly aggregates are computed from the
//! deduplicated rows, so a repeat never counts twice. Rows and offsets of partitions
//! revoked before their batch was inserted are dropped at every flush (their new owner
//! reads them again). A message that cannot be decoded goes to the dead-letter topic and
//! table, and the partition moves on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::registry::Registry;
use crate::store::{GameRoundRow, RoundsStore};
use apache_avro::Schema;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use shardflow_config::Config;
use shardflow_kafka as kafka;
use shardflow_schemas::rounds::{RoundCodec, unframe};
use shardflow_store::Index;
use tokio::sync::watch;
use tracing::{info, warn};

use shardflow_kafka::dead_letter::{DeadLetters, worker_name};

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// ClickHouse did not answer at start.
    #[error(transparent)]
    Index(#[from] shardflow_store::IndexError),
    /// The broker refused the client or the topic.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The game-round schema did not load.
    #[error(transparent)]
    Codec(#[from] shardflow_schemas::CodecError),
}

/// Writer schemas by id: the sink's own, those shardflow kept in ClickHouse, and those a
/// Schema Registry serves.
struct Schemas {
    codec: RoundCodec,
    known: HashMap<u32, Arc<Schema>>,
    store: RoundsStore,
    registry: Option<Registry>,
}

impl Schemas {
    /// The writer schema of `id`; `Ok(None)` means the codec's own schema.
    async fn writer(&mut self, id: u32) -> Result<Option<Arc<Schema>>, String> {
        if id == self.codec.schema_id() {
            return Ok(None);
        }
        if let Some(schema) = self.known.get(&id) {
            return Ok(Some(schema.clone()));
        }
        let text = match &self.registry {
            None => self.store.schema(id).await.map_err(|e| e.to_string())?,
            Some(registry) => registry.schema(id).await.map_err(|e| e.to_string())?,
        };
        let text = text.ok_or_else(|| format!("unknown schema id {id}"))?;
        let schema = Arc::new(Schema::parse_str(&text).map_err(|e| format!("schema {id} does not parse: {e}"))?);
        self.known.insert(id, schema.clone());
        Ok(Some(schema))
    }
}

/// Notes the partitions taken away, so that their uninserted rows are dropped.
#[derive(Default)]
struct SinkContext {
    revoked: std::sync::Mutex<Vec<i32>>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance
            && let Ok(mut revoked) = self.revoked.lock()
        {
            revoked.extend(list.elements().iter().map(|e| e.partition()));
        }
    }
}

/// Rows waiting for the next insert, with their partitions, and the offsets they cover.
#[derive(Default)]
struct Batch {
    rows: Vec<(i32, GameRoundRow)>,
    /// Next offset to commit per partition, once the rows are inserted.
    next: BTreeMap<i32, i64>,
    since: Option<Instant>,
}

/// Run the sink until `shutdown` turns true: flush what is held, commit, leave the group.
///
/// # Errors
/// [`SinkError`] when a service is unreachable at start.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), SinkError> {
    let settings = config.game_rounds.clone();
    let index = Index::connect(&config.clickhouse).await?;
    let dead_letter_topic = config.consumer.dead_letter_topic(&settings.topic);
    kafka::ensure_topic(&config.kafka, &settings.topic).await?;
    kafka::ensure_topic(&config.kafka, &dead_letter_topic).await?;
    let dead_letters = DeadLetters {
        producer: kafka::producer(&config.kafka)?,
        topic: dead_letter_topic,
        index: index.clone(),
        worker: worker_name(),
    };
    let mut member = config.kafka.clone();
    member.group_id = settings.group_id.clone();
    let consumer: StreamConsumer<SinkContext> = kafka::bulk_consumer(&member, SinkContext::default())?;
    consumer.subscribe(&[&settings.topic])?;
    let mut schemas = Schemas {
        codec: RoundCodec::new()?,
        known: HashMap::new(),
        store: RoundsStore::new(index.clone()),
        registry: settings.schema_registry_url.clone().map(Registry::new),
    };
    let store = RoundsStore::new(index.clone());
    info!(topic = %settings.topic, group = %settings.group_id, "sinking game rounds");
    let mut batch = Batch::default();
    loop {
        let wait = batch.since.map_or(Duration::MAX, |t| settings.flush_interval.saturating_sub(t.elapsed()));
        let message = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            () = tokio::time::sleep(wait), if batch.since.is_some() => None,
            message = consumer.recv() => Some(message),
        };
        let Some(message) = message else {
            if flush(&store, &consumer, &mut batch, &config, &mut shutdown).await {
                continue;
            }
            break;
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "receive failed");
                continue;
            }
        };
        drop_revoked(&consumer, &mut batch);
        match decode(&mut schemas, &message).await {
            Ok(row) => batch.rows.push((message.partition(), row)),
            Err(reason) => {
                // Rows before it are not inserted yet: insert them first, so that committing
                // past the dead letter commits nothing unwritten.
                if !flush(&store, &consumer, &mut batch, &config, &mut shutdown).await
                    || !dead_letter(&dead_letters, &message, &reason, &config, &mut shutdown).await
                {
                    break;
                }
            }
        }
        batch.next.insert(message.partition(), message.offset() + 1);
        batch.since.get_or_insert_with(Instant::now);
        if batch.rows.len() >= settings.batch_rows.get()
            && !flush(&store, &consumer, &mut batch, &config, &mut shutdown).await
        {
            break;
        }
    }
    // One attempt, shutdown having come: what is not committed is redelivered.
    flush(&store, &consumer, &mut batch, &config, &mut shutdown).await;
    info!("game-rounds sink stopped");
    Ok(())
}

async fn decode(schemas: &mut Schemas, message: &BorrowedMessage<'_>) -> Result<GameRoundRow, String> {
    let payload = message.payload().ok_or("empty payload")?;
    let (id, body) = unframe(payload).map_err(|e| e.to_string())?;
    let writer = schemas.writer(id).await?;
    let round = schemas.codec.decode(body, writer.as_deref()).map_err(|e| e.to_string())?;
    Ok(round.into())
}

/// Insert the batch, retrying with backoff, then commit its offsets. Returns false when
/// shutdown came first (nothing committed).
async fn flush(
    store: &RoundsStore,
    consumer: &StreamConsumer<SinkContext>,
    batch: &mut Batch,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    // Every flush, by size, timer or shutdown: what another member owns now is its own.
    drop_revoked(consumer, batch);
    if !batch.rows.is_empty() {
        let rows: Vec<GameRoundRow> = std::mem::take(&mut batch.rows).into_iter().map(|(_, row)| row).collect();
        let inserted = retry(config, shutdown, "insert into game_rounds", || insert(store, &rows)).await;
        if !inserted {
            // Shutdown came first: commit nothing; the rows are read again.
            *batch = Batch::default();
            return false;
        }
    }
    let mut offsets = TopicPartitionList::new();
    for (&partition, &next) in &batch.next {
        if let Err(e) = offsets.add_partition_offset(&config.game_rounds.topic, partition, Offset::Offset(next)) {
            warn!(error = %e, "offset list");
        }
    }
    if offsets.count() > 0
        && let Err(e) = consumer.commit(&offsets, CommitMode::Sync)
    {
        // Not fatal: the rows are redelivered and replace themselves in game_rounds.
        warn!(error = %e, "offset commit failed");
    }
    *batch = Batch::default();
    true
}

/// Forget the rows and offsets of partitions revoked since the last look: their new owner
/// reads them again, and an offset committed for them here would not be ours to commit.
fn drop_revoked(consumer: &StreamConsumer<SinkContext>, batch: &mut Batch) {
    let revoked: Vec<i32> = consumer.context().revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
    if !revoked.is_empty() {
        batch.rows.retain(|(p, _)| !revoked.contains(p));
        batch.next.retain(|p, _| !revoked.contains(p));
    }
}

/// Insert the batch. A row inserted again (a redelivery, a second sink that overlapped this
/// one, an insert the server completed after the client gave up) has the same
/// `(upload_id, line)` key and content: `game_rounds` keeps it once, and the hourly
/// aggregates are computed from the deduplicated rows, so nothing is checked first.
async fn insert(store: &RoundsStore, rows: &[GameRoundRow]) -> Result<(), shardflow_store::IndexError> {
    store.insert_rounds(rows).await?;
    info!(rows = rows.len(), "game rounds inserted");
    Ok(())
}

async fn dead_letter(
    dead_letters: &DeadLetters,
    message: &BorrowedMessage<'_>,
    reason: &str,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    retry(config, shutdown, "dead letter", || dead_letters.record(message, "", -1, reason)).await
}

/// Call `attempt` until it succeeds, backing off between failures; false if shutdown
/// came first.
async fn retry<F, Fut, E>(config: &Config, shutdown: &mut watch::Receiver<bool>, what: &str, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = config.consumer.retry_backoff;
    loop {
        match attempt().await {
            Ok(()) => return true,
            Err(e) => warn!(error = %e, retry_in = ?backoff, "{what} failed; will retry, offsets not committed"),
        }
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.consumer.retry_backoff_max);
    }
}
