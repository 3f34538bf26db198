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
//!
//! Failures go through the consumers' retry policy (`shardflow_kafka::retry`): a schema
//! lookup the registry or ClickHouse fails to answer is retried (a blip diverts no good
//! row), an unknown schema id is dead-lettered at once; rows ClickHouse refuses for good
//! are found by splitting the batch and dead-lettered one by one. While waiting the
//! partitions are paused and the consumer polled, so the member stays in its group.

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
use shardflow_kafka::retry::{Next, Paused, Policy, Retry, Waited};
use shardflow_schemas::rounds::{RoundCodec, unframe};
use shardflow_store::{Index, IndexError};
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
    /// The writer schema of `id`; `Ok(None)` means the codec's own schema. A registry or
    /// ClickHouse that fails to answer is a failure that may pass (the message is tried
    /// again); an id nobody knows, or a schema that does not parse, never passes.
    async fn writer(&mut self, id: u32) -> Result<Option<Arc<Schema>>, Undecodable> {
        if id == self.codec.schema_id() {
            return Ok(None);
        }
        if let Some(schema) = self.known.get(&id) {
            return Ok(Some(schema.clone()));
        }
        let text = match &self.registry {
            None => self.store.schema(id).await.map_err(|e| Undecodable::new(e.retry(), &e))?,
            Some(registry) => registry.schema(id).await.map_err(|e| Undecodable::new(e.retry(), &e))?,
        };
        let text = text.ok_or_else(|| Undecodable::permanent(format!("unknown schema id {id}")))?;
        let schema = Arc::new(
            Schema::parse_str(&text).map_err(|e| Undecodable::permanent(format!("schema {id} does not parse: {e}")))?,
        );
        let _ = self.known.insert(id, schema.clone());
        Ok(Some(schema))
    }
}

/// Why a message did not decode, and whether that may pass.
#[derive(Debug)]
struct Undecodable {
    reason: String,
    retry: Retry,
}

impl Undecodable {
    fn new(retry: Retry, reason: &dyn std::fmt::Display) -> Self {
        Self { reason: reason.to_string(), retry }
    }

    fn permanent(reason: String) -> Self {
        Self { reason, retry: Retry::Permanent }
    }
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
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
    /// Where each row was read (partition, offset), by upload and line: a row ClickHouse
    /// refuses is dead-lettered at its offset.
    offsets: HashMap<(String, u64), (i32, i64)>,
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
    let dead_letters =
        DeadLetters::new(kafka::producer(&config.kafka)?, dead_letter_topic, index.clone(), worker_name());
    let mut member = config.kafka.clone();
    member.group_id = settings.group_id.clone();
    let consumer: StreamConsumer<SinkContext> = kafka::bulk_consumer(&member, SinkContext::default())?;
    consumer.subscribe(&[&settings.topic])?;
    let mut schemas = Schemas {
        codec: RoundCodec::new()?,
        known: HashMap::new(),
        store: RoundsStore::new(index.clone()),
        registry: settings
            .schema_registry_url
            .clone()
            .map(|url| Registry::with_timeout(url, settings.schema_registry_timeout)),
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
            if flush(&store, &dead_letters, &consumer, &mut batch, &config, &mut shutdown).await {
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
        let decoded = match decode(&mut schemas, &message).await {
            Err(e) if e.retry != Retry::Permanent => {
                match decode_retrying(&mut schemas, &consumer, &message, e, &config, &mut shutdown).await {
                    Some(decoded) => decoded,
                    None => break,
                }
            }
            decoded => Some(decoded.map_err(|e| e.reason)),
        };
        let Some(decoded) = decoded else {
            // Its partition went to another member while the lookup was retried.
            continue;
        };
        match decoded {
            Ok(row) => {
                let _ =
                    batch.offsets.insert((row.upload_id.clone(), row.line), (message.partition(), message.offset()));
                batch.rows.push((message.partition(), row));
            }
            Err(reason) => {
                // Rows before it are not inserted yet: insert them first, so that committing
                // past the dead letter commits nothing unwritten.
                if !flush(&store, &dead_letters, &consumer, &mut batch, &config, &mut shutdown).await
                    || !dead_letter(&dead_letters, &consumer, &message, &reason, &config, &mut shutdown).await
                {
                    break;
                }
            }
        }
        batch.next.insert(message.partition(), message.offset() + 1);
        batch.since.get_or_insert_with(Instant::now);
        if batch.rows.len() >= settings.batch_rows.get()
            && !flush(&store, &dead_letters, &consumer, &mut batch, &config, &mut shutdown).await
        {
            break;
        }
    }
    // One attempt, shutdown having come: what is not committed is redelivered.
    flush(&store, &dead_letters, &consumer, &mut batch, &config, &mut shutdown).await;
    info!("game-rounds sink stopped");
    Ok(())
}

async fn decode(schemas: &mut Schemas, message: &BorrowedMessage<'_>) -> Result<GameRoundRow, Undecodable> {
    let payload = message.payload().ok_or_else(|| Undecodable::permanent("empty payload".into()))?;
    let (id, body) = unframe(payload).map_err(|e| Undecodable::permanent(e.to_string()))?;
    let writer = schemas.writer(id).await?;
    let round = schemas.codec.decode(body, writer.as_deref()).map_err(|e| Undecodable::permanent(e.to_string()))?;
    Ok(round.into())
}

/// Decode `message` again after `first` (a failure that may pass: the registry or
/// ClickHouse did not answer), with backoff, the partitions paused and the consumer polled
/// meanwhile. `Some(Some(Ok(row)))` decoded; `Some(Some(Err(reason)))` to dead-letter
/// (it never passes, or kept failing past the cap); `Some(None)` its partition was
/// revoked; `None` shutdown came first.
async fn decode_retrying(
    schemas: &mut Schemas,
    consumer: &StreamConsumer<SinkContext>,
    message: &BorrowedMessage<'_>,
    first: Undecodable,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Option<Result<GameRoundRow, String>>> {
    let mut attempts = Policy::new(&config.consumer).attempts();
    let mut paused = Paused::pause(consumer);
    let mut error = first;
    let outcome = loop {
        let wait = match attempts.failed(error.retry, &error) {
            Next::GiveUp(reason) => break Some(Some(Err(reason))),
            Next::Wait(wait) => wait,
        };
        warn!(error = %error, kind = ?error.retry, retry_in = ?wait, "schema lookup failed; will retry");
        if paused.wait(wait, shutdown).await == Waited::Shutdown {
            break None;
        }
        if !paused.holds(message.topic(), message.partition()) {
            break Some(None);
        }
        match decode(schemas, message).await {
            Ok(row) => break Some(Some(Ok(row))),
            Err(e) => error = e,
        }
    };
    // The message is handled here (decoded or dead-lettered next): a redelivery of it
    // during the wait is not read again.
    paused.resume(Some(message));
    outcome
}

/// Insert the batch, retrying with backoff, then commit its offsets. Returns false when
/// shutdown came first (nothing committed).
async fn flush(
    store: &RoundsStore,
    dead_letters: &DeadLetters,
    consumer: &StreamConsumer<SinkContext>,
    batch: &mut Batch,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    // Every flush, by size, timer or shutdown: what another member owns now is its own.
    drop_revoked(consumer, batch);
    if !batch.rows.is_empty() {
        let rows: Vec<GameRoundRow> = std::mem::take(&mut batch.rows).into_iter().map(|(_, row)| row).collect();
        let inserted =
            insert_or_dead_letter(store, dead_letters, consumer, &rows, &batch.offsets, config, shutdown).await;
        if !inserted {
            // Shutdown came first: commit nothing; the rows are read again.
            *batch = Batch::default();
            return false;
        }
        // Partitions revoked while the insert was retried (the consumer kept polling) are
        // another member's now: their offsets are not ours to commit.
        drop_revoked(consumer, batch);
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

/// Insert `rows`: failures that may pass are retried with backoff, the partitions paused
/// and the consumer polled meanwhile (ClickHouse unreachable: for as long as it lasts;
/// answering errors: up to `consumer.retry_max_attempts`). Rows ClickHouse refuses for good
/// (117 incorrect data, 53 type mismatch), or still failing after the cap, are found by
/// splitting the batch ([`isolate_refused`]) and dead-lettered one by one, so that the
/// other rows are inserted and the partitions move on. False when shutdown came first.
async fn insert_or_dead_letter(
    store: &RoundsStore,
    dead_letters: &DeadLetters,
    consumer: &StreamConsumer<SinkContext>,
    rows: &[GameRoundRow],
    offsets: &HashMap<(String, u64), (i32, i64)>,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut attempts = Policy::new(&config.consumer).attempts();
    let mut paused: Option<Paused<'_, SinkContext>> = None;
    let inserted = loop {
        let error = match insert(store, rows).await {
            Ok(()) => break true,
            Err(e) => e,
        };
        let wait = match attempts.failed(error.retry(), &error) {
            Next::Wait(wait) => wait,
            Next::GiveUp(reason) => {
                warn!(%reason, rows = rows.len(), "ClickHouse refuses the batch; finding the rows it refuses");
                match isolate_refused(rows, |part| insert(store, part), IndexError::retry).await {
                    Ok(refused) => {
                        let topic = &config.game_rounds.topic;
                        let mut all = true;
                        for (row, reason) in refused {
                            let (partition, offset) =
                                offsets.get(&(row.upload_id.clone(), row.line)).copied().unwrap_or((-1, -1));
                            let key = format!("{}/{}", row.upload_id, row.line);
                            let payload = serde_json::to_vec(row).unwrap_or_default();
                            all = retry(config, consumer, shutdown, "dead letter", || {
                                dead_letters.record_row(topic, partition, offset, key.as_bytes(), &payload, &reason)
                            })
                            .await;
                            if !all {
                                break;
                            }
                        }
                        break all;
                    }
                    Err(e) => {
                        let wait = attempts.backoff();
                        warn!(error = %e, retry_in = ?wait, "insert failed while splitting the batch; will retry");
                        wait
                    }
                }
            }
        };
        warn!(error = %error, kind = ?error.retry(), retry_in = ?wait, "insert into game_rounds failed; will retry, offsets not committed");
        let waiting = paused.get_or_insert_with(|| Paused::pause(consumer));
        if waiting.wait(wait, shutdown).await == Waited::Shutdown {
            break false;
        }
    };
    if let Some(waiting) = paused {
        waiting.resume(None);
    }
    inserted
}

/// Insert `rows` with `insert`, splitting in halves whatever is refused for good (as
/// `retry` says of the error) down to single rows; those are returned with the reason.
/// A failure that may pass stops the search and is returned: the caller retries the
/// batch (halves inserted again are stored once: rows are keyed by upload and line).
///
/// # Errors
/// The first failure that is not permanent.
async fn isolate_refused<'r, F, Fut, E>(
    rows: &'r [GameRoundRow],
    insert: F,
    retry: fn(&E) -> Retry,
) -> Result<Vec<(&'r GameRoundRow, String)>, E>
where
    F: Fn(&'r [GameRoundRow]) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut refused = Vec::new();
    let mut pending = vec![rows];
    while let Some(part) = pending.pop() {
        match insert(part).await {
            Ok(()) => {}
            Err(e) if retry(&e) == Retry::Permanent || part.len() == 1 => match part {
                [row] => refused.push((row, e.to_string())),
                [] => {}
                _ => {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            },
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

async fn dead_letter(
    dead_letters: &DeadLetters,
    consumer: &StreamConsumer<SinkContext>,
    message: &BorrowedMessage<'_>,
    reason: &str,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    retry(config, consumer, shutdown, "dead letter", || dead_letters.record(message, "", -1, reason)).await
}

/// Call `attempt` until it succeeds (a dead letter has nowhere else to go), backing off
/// with the partitions paused and the consumer polled; false if shutdown came first.
async fn retry<F, Fut, E>(
    config: &Config,
    consumer: &StreamConsumer<SinkContext>,
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut attempts = Policy::new(&config.consumer).attempts();
    let mut paused: Option<Paused<'_, SinkContext>> = None;
    let done = loop {
        let wait = match attempt().await {
            Ok(()) => break true,
            Err(e) => {
                let wait = attempts.backoff();
                warn!(error = %e, retry_in = ?wait, "{what} failed; will retry, offsets not committed");
                wait
            }
        };
        let waiting = paused.get_or_insert_with(|| Paused::pause(consumer));
        if waiting.wait(wait, shutdown).await == Waited::Shutdown {
            break false;
        }
    };
    if let Some(waiting) = paused {
        waiting.resume(None);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64) -> GameRoundRow {
        GameRoundRow {
            upload_id: "u".into(),
            line,
            created_timestamp: 0,
            game_instance_id: String::new(),
            user_id: String::new(),
            game_id: String::new(),
            real_amount_bet: None,
            bonus_amount_bet: None,
            real_amount_win: None,
            bonus_amount_win: None,
            game_name: String::new(),
            provider: String::new(),
        }
    }

    #[derive(Debug)]
    struct Refusal(Retry);

    impl std::fmt::Display for Refusal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Code: 117, incorrect data ({:?})", self.0)
        }
    }

    /// A batch ClickHouse refuses because of two rows: every other row is inserted, the
    /// two are returned, in about 2 log2(n) inserts per refused row.
    #[tokio::test]
    async fn refused_rows_are_isolated_and_the_rest_inserted() {
        let rows: Vec<GameRoundRow> = (0..100).map(row).collect();
        let inserted = std::sync::Mutex::new(Vec::new());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let insert = |part: &[GameRoundRow]| {
            let _ = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let bad = part.iter().any(|r| r.line == 17 || r.line == 70);
            if !bad {
                inserted.lock().expect("lock").extend(part.iter().map(|r| r.line));
            }
            std::future::ready(if bad { Err(Refusal(Retry::Permanent)) } else { Ok(()) })
        };
        let refused = isolate_refused(&rows, insert, |e: &Refusal| e.0).await.expect("no transient failure");
        assert_eq!(refused.iter().map(|(r, _)| r.line).collect::<Vec<_>>(), vec![17, 70]);
        assert!(refused[0].1.contains("Code: 117"));
        let mut got = inserted.into_inner().expect("lock");
        got.sort_unstable();
        assert_eq!(got, (0..100).filter(|l| *l != 17 && *l != 70).collect::<Vec<_>>());
        assert!(calls.into_inner() <= 30, "a search, not one insert per row");
    }

    #[tokio::test]
    async fn a_failure_that_may_pass_stops_the_search() {
        let rows: Vec<GameRoundRow> = (0..4).map(row).collect();
        let insert = |_: &[GameRoundRow]| std::future::ready(Err::<(), _>(Refusal(Retry::Unavailable)));
        assert!(isolate_refused(&rows, insert, |e: &Refusal| e.0).await.is_err());
    }
}
