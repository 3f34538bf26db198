//! Kafka clients configured the way shardflow needs them, topic creation (the broker
//! creates no topic on demand), the headers every chunk carries, and the dead-letter writer.
#![warn(missing_docs)]

pub mod dead_letter;
pub mod in_flight;
pub mod retry;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};

use shardflow_config::KafkaConfig;

/// Message headers every chunk carries.
pub mod headers {
    /// Job the chunk belongs to.
    pub const JOB_ID: &str = "job_id";
    /// Sequence number of the chunk in its job, from 0.
    pub const CHUNK: &str = "chunk";
    /// Model the chunk is to be transformed with.
    pub const MODEL_ID: &str = "model_id";
    /// Full name of the payload's Avro schema (version-1 chunks only).
    pub const SCHEMA: &str = "schema";
    /// The payload's wire format and version (`avro-ocf/2`); absent on version-1 chunks.
    pub const FORMAT: &str = "format";
    /// Dataset the chunk's rows belong to.
    pub const DATASET: &str = "dataset";
    /// What a message other than a chunk is (`fit-task`); absent on chunks.
    pub const KIND: &str = "kind";
}

fn base(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c
}

/// Create `topic` with the configured partitions unless it exists.
///
/// # Errors
/// The broker's answer when it refuses for another reason than "already exists".
pub async fn ensure_topic(config: &KafkaConfig, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base(config).create()?;
    let new = NewTopic::new(topic, config.partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// An idempotent producer (acks=all), so a retried send is never written twice.
///
/// # Errors
/// When librdkafka rejects the configuration.
pub fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    idempotent(config).set("linger.ms", "5").create()
}

/// As [`producer`], for many small messages (a record each): wait up to 50 ms to fill
/// batches of up to 10,000 messages, so the broker sees few large requests.
///
/// # Errors
/// When librdkafka rejects the configuration.
pub fn bulk_producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    idempotent(config).set("linger.ms", "50").set("batch.num.messages", "10000").set("batch.size", "1048576").create()
}

fn idempotent(config: &KafkaConfig) -> ClientConfig {
    let mut c = base(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", config.message_max_bytes.to_string())
        .set("message.timeout.ms", config.delivery_timeout.as_millis().max(1).to_string());
    c
}

/// A group member that stores offsets only when told to (after outputs are durable),
/// starts a new group at the earliest offset, and keeps its prefetch queue small.
///
/// # Errors
/// When librdkafka rejects the configuration.
pub fn consumer<C: ConsumerContext + 'static>(
    config: &KafkaConfig,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    consumer_config(config).create_with_context(context)
}

fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let fetch = (config.message_max_bytes + 1024).to_string();
    let mut c = base(config);
    c.set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout sent in JoinGroup: a coordinator waiting for a member
        // that died mid-rebalance gives up after this, not after librdkafka's 5 minutes.
        // A member waiting to retry pauses its partitions and keeps polling
        // (`retry::Paused`), so only a stall longer than this makes it leave the group.
        .set("max.poll.interval.ms", config.max_poll_interval.as_millis().to_string())
        .set("max.partition.fetch.bytes", &fetch)
        .set("fetch.max.bytes", &fetch)
        // Bound the prefetch queue: memory must not grow with lag.
        .set("queued.max.messages.kbytes", (config.prefetch_bytes / 1024).to_string())
        .set("queued.min.messages", "4")
        // Once the queue holds that much, librdkafka postpones the partition's next fetch
        // by this long (1 s by default): a member worked through its queue in 150 ms and
        // then sat idle for 850 (bursts of 8 chunks, then a 0.9 s gap). Look again soon.
        .set("fetch.queue.backoff.ms", "10")
        // Chunks are large and few: answer fetches quickly rather than wait to fill them.
        .set("fetch.wait.max.ms", "100")
        .set("statistics.interval.ms", "5000");
    c
}

/// As [`consumer`], for many small messages (a record each): ask the broker to wait for
/// 256 KiB or 500 ms per fetch, and keep up to 100,000 messages queued, so that fetching
/// goes on while a batch is inserted.
///
/// # Errors
/// When librdkafka rejects the configuration.
pub fn bulk_consumer<C: ConsumerContext + 'static>(
    config: &KafkaConfig,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    let mut c = consumer_config(config);
    c.set("fetch.min.bytes", "262144").set("fetch.wait.max.ms", "500").set("queued.min.messages", "100000");
    c.create_with_context(context)
}

/// Whether the broker answers a metadata request for `topic` within two seconds.
///
/// # Errors
/// The client's error when it does not.
pub async fn broker_answers(producer: &FutureProducer, topic: &str) -> Result<(), KafkaError> {
    let producer = producer.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        producer.client().fetch_metadata(Some(&topic), std::time::Duration::from_secs(2)).map(|_| ())
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}
