//! The worker's Prometheus metrics, rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-partition lag gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Counters and gauges of one consumer process (all its worker tasks).
pub struct Metrics {
    registry: Registry,
    /// Rows transformed and indexed.
    pub records: Counter,
    /// Chunks transformed and indexed.
    pub chunks: Counter,
    /// Messages sent to the dead-letter topic and table.
    pub dead_letters: Counter,
    /// Failed ClickHouse inserts (each retried).
    pub clickhouse_insert_errors: Counter,
    /// Chunk attempts that failed and were retried.
    pub retries: Counter,
    /// Seconds from receiving a chunk to its outputs being indexed.
    pub chunk_seconds: Histogram,
    /// Seconds from a chunk's publish (its message's create time) to its outputs being
    /// indexed: the latency a scale run reports (`bench/scale.py`).
    pub publish_to_index_seconds: Histogram,
    /// Messages behind the high watermark, per assigned partition.
    pub lag: Family<PartitionLabel, Gauge>,
    /// Partitions the process's group members hold now.
    pub assigned_partitions: Gauge,
}

impl Metrics {
    /// All metrics, registered under `shardflow_consumer_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shardflow_consumer");
        let records = Counter::default();
        let chunks = Counter::default();
        let dead_letters = Counter::default();
        let clickhouse_insert_errors = Counter::default();
        let retries = Counter::default();
        let chunk_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let publish_to_index_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 20));
        let lag = Family::<PartitionLabel, Gauge>::default();
        let assigned_partitions = Gauge::default();
        registry.register("records", "Rows transformed and indexed", records.clone());
        registry.register("chunks", "Chunks transformed and indexed", chunks.clone());
        registry.register("dead_letters", "Messages sent to the dead-letter topic and table", dead_letters.clone());
        registry.register("clickhouse_insert_errors", "Failed ClickHouse inserts", clickhouse_insert_errors.clone());
        registry.register("retries", "Chunk attempts that failed and were retried", retries.clone());
        registry.register(
            "chunk_seconds",
            "Seconds from receiving a chunk to its outputs indexed",
            chunk_seconds.clone(),
        );
        registry.register(
            "publish_to_index_seconds",
            "Seconds from a chunk's publish to its outputs indexed",
            publish_to_index_seconds.clone(),
        );
        registry.register("lag", "Messages behind the high watermark per partition", lag.clone());
        registry.register("assigned_partitions", "Partitions the group gave this process", assigned_partitions.clone());
        Self {
            registry,
            records,
            chunks,
            dead_letters,
            clickhouse_insert_errors,
            retries,
            chunk_seconds,
            publish_to_index_seconds,
            lag,
            assigned_partitions,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        shardflow_config::telemetry::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
