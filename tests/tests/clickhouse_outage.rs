//! ClickHouse killed (SIGKILL) for real in the middle of a job (its own test binary: the other
//! binaries never run while it is down). The worker keeps retrying, commits nothing
//! while it is down, and finishes the job exactly once when ClickHouse is back.

use shardflow_testkit::dataset as common;

use std::time::{Duration, Instant};

use common::{Dataset, free_port, metric, services};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shardflow_config::Config;
use shardflow_testkit::eventually;

const TIMEOUT: Duration = Duration::from_secs(180);

/// ClickHouse is down while this lives; it is started again on drop, even on panic.
struct Outage;

impl Outage {
    fn begin() -> Self {
        services("kill-clickhouse");
        Self
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        services("start-clickhouse");
    }
}

/// Sum over partitions of the group's committed offsets.
fn committed(config: &Config) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..config.kafka.partitions {
        partitions.add_partition(&config.kafka.topic, p);
    }
    let offsets = consumer.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
    offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_mid_job_nothing_committed_then_every_chunk_once() {
    let port = free_port();
    let data = Dataset::new("ch_outage", 300_000, 1_000, |c| {
        c.consumer.listen = format!("127.0.0.1:{port}").parse().expect("address");
        c.consumer.retry_backoff = Duration::from_millis(100);
        c.consumer.retry_backoff_max = Duration::from_millis(500);
    })
    .await;
    let _worker = data.consumer();
    let job = data.publish().await;
    data.wait_indexed(&job.job_id, 10, TIMEOUT).await;

    let outage = Outage::begin();
    let down_at = Instant::now();
    let retries = || metric(port, "shardflow_consumer_retries_total");
    eventually("the worker retrying", TIMEOUT, || async { retries().await.filter(|r| *r >= 3.0) }).await;
    let first = committed(&data.env.config);
    let seen = retries().await.unwrap_or(0.0);
    eventually("more retries", TIMEOUT, || async { retries().await.filter(|r| *r >= seen + 3.0) }).await;
    let second = committed(&data.env.config);
    assert_eq!(first, second, "offsets moved while ClickHouse was down");
    assert!(second < i64::try_from(job.chunks).expect("chunks"), "the job was still in flight");
    let errors = metric(port, "shardflow_consumer_clickhouse_insert_errors_total").await.unwrap_or(0.0);
    assert!(errors >= 1.0, "insert errors are counted");
    let down_for = down_at.elapsed();
    drop(outage);

    let back_at = Instant::now();
    data.wait_indexed(&job.job_id, job.chunks, TIMEOUT).await;
    let rows = data.assert_exactly_once(&job).await;
    eventually("every offset committed", TIMEOUT, || async {
        (committed(&data.env.config) == i64::try_from(job.chunks).expect("chunks")).then_some(())
    })
    .await;
    println!(
        "ClickHouse outage: {} rows in, {rows} out, 0 duplicates, down {:.1} s, job finished {:.1} s after restart",
        job.rows,
        down_for.as_secs_f64(),
        back_at.elapsed().as_secs_f64()
    );
}
