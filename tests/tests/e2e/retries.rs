//! The retry policy, against the real broker and ClickHouse: a chunk that keeps failing is
//! dead-lettered after the attempt cap and its partition moves on; a dependency slower
//! than `max.poll.interval.ms` does not get the member evicted (it pauses its partitions
//! and keeps polling); a dead letter whose table insert failed is not sent to the topic
//! again when it is retried; rows ClickHouse refuses for good (codes 117 and 53) are
//! dead-lettered one by one and the rest of their batch is inserted.

use shardflow_testkit::dataset as common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Dataset, free_port, metric};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shardflow_kafka::dead_letter::{DeadLetters, worker_name};
use shardflow_store::Index;
use shardflow_testkit::proxy::ClickHouseProxy;
use shardflow_testkit::{TestEnv, eventually, messages, wait_caught_up};

const TIMEOUT: Duration = Duration::from_secs(180);

/// A chunk whose part cannot be renamed into place (a directory holds its name) fails the
/// same way on every attempt: after the cap it is dead-lettered with that reason, and the
/// chunks after it on the same partition are processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_keeps_failing_is_dead_lettered_after_the_cap_and_the_partition_moves_on() {
    let port = free_port();
    let data = Dataset::new("retry_cap", 20_000, 5_000, |c| {
        c.kafka.partitions = 1;
        c.consumer.listen = format!("127.0.0.1:{port}").parse().expect("address");
        c.consumer.retry_backoff = Duration::from_millis(50);
        c.consumer.retry_backoff_max = Duration::from_millis(200);
        c.consumer.retry_max_attempts = std::num::NonZeroU32::new(4).expect("non-zero");
    })
    .await;
    let job = data.publish().await;
    let root = data.env.output_root();
    let in_the_way = shardflow_storage::transform_dir(root, &job.job_id).join(shardflow_storage::part_name(0));
    std::fs::create_dir_all(&in_the_way).expect("a directory where chunk 0's part goes");
    let _worker = data.consumer();

    data.wait_indexed(&job.job_id, job.chunks - 1, TIMEOUT).await;
    let dead = eventually("chunk 0 dead-lettered", TIMEOUT, || async {
        data.index.dead_letters(&job.job_id).await.ok().filter(|d| !d.is_empty())
    })
    .await;
    assert_eq!(dead.iter().map(|d| d.chunk).collect::<Vec<_>>(), vec![0]);
    assert!(dead[0].error.contains("after 4 attempts"), "{}", dead[0].error);
    assert!(dead[0].error.contains("part-00000.parquet"), "the last reason is kept: {}", dead[0].error);
    let retries = metric(port, "shardflow_consumer_retries_total").await.unwrap_or(0.0);
    assert_eq!(retries, 3.0, "three retries after the first attempt");
    assert_eq!(data.indexed(&job.job_id).await, job.chunks - 1);
}

/// Forwards TCP connections to `target` while up; while down, closes every connection at
/// once (ClickHouse unreachable, as a restarting server or a broken network looks).
struct Proxy {
    address: String,
    up: Arc<AtomicBool>,
    state: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let up = Arc::new(AtomicBool::new(true));
        let (target, open) = (target.to_string(), up.clone());
        let (state, _) = tokio::sync::watch::channel(true);
        let state = Arc::new(state);
        let notify = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let (target, mut down) = (target.clone(), state.subscribe());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    // Keep-alive connections made while up are cut when it goes down.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { address, up, state: notify }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        // Connections made while up are cut when it goes down (no polling of the flag).
        self.state.send_replace(up);
    }
}

/// A consumer process logging at info to `log` (rebalances are logged at info).
fn logged_consumer(config_path: &Path, log: &Path, env: &[(&str, &str)]) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("log file");
    tokio::process::Command::new(shardflow_testkit::bin("consumer"))
        .arg("--config")
        .arg(config_path)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start consumer")
}

/// ClickHouse unreachable for longer than `max.poll.interval.ms`: the member pauses its
/// partitions and keeps polling, so it is never evicted; the chunk completes once
/// ClickHouse is back, with exactly one outputs row, and no rebalance happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_dependency_longer_than_the_poll_interval_does_not_evict_the_member() {
    const POLL_INTERVAL: Duration = Duration::from_secs(10);
    let proxy = Proxy::start("127.0.0.1:8123").await;
    let port = free_port();
    let data = Dataset::new("no_eviction", 4_000, 2_000, |c| {
        c.kafka.max_poll_interval = POLL_INTERVAL;
        c.consumer.listen = format!("127.0.0.1:{port}").parse().expect("address");
        c.consumer.retry_backoff = Duration::from_millis(100);
        c.consumer.retry_backoff_max = Duration::from_millis(500);
        c.consumer.retry_max_attempts = std::num::NonZeroU32::new(3).expect("non-zero");
    })
    .await;
    let log = data.env.dir.path().join("consumer.log");
    // The consumer reaches ClickHouse through the proxy; the test, straight.
    let proxied = format!("http://{}", proxy.address);
    let through_proxy = [("SHARDFLOW__CLICKHOUSE__URL", proxied.as_str()), ("SHARDFLOW__CLICKHOUSE__TIMEOUT", "2s")];
    let _worker = logged_consumer(&data.env.config_path, &log, &through_proxy);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("partitions assigned", TIMEOUT, || async { read_log().contains("partitions assigned").then_some(()) })
        .await;

    proxy.set_up(false);
    let job = data.publish().await;
    let down_at = Instant::now();
    let retries = || metric(port, "shardflow_consumer_retries_total");
    // Down for the poll interval and half as long again, the worker retrying all along.
    eventually("the worker retrying past the poll interval", TIMEOUT, || async {
        let r = retries().await.unwrap_or(0.0);
        (r >= 5.0 && down_at.elapsed() > POLL_INTERVAL * 3 / 2).then_some(())
    })
    .await;
    assert_eq!(data.indexed(&job.job_id).await, 0, "nothing indexed while ClickHouse is unreachable");
    proxy.set_up(true);

    data.wait_indexed(&job.job_id, job.chunks, TIMEOUT).await;
    let rows = data.env.count(&format!("SELECT count() FROM outputs WHERE job_id = '{}'", job.job_id)).await;
    assert_eq!(rows, job.chunks, "exactly one outputs row per chunk, none written twice");
    assert_eq!(
        data.index.dead_letters(&job.job_id).await.expect("dead letters"),
        vec![],
        "an outage is no bad message"
    );
    let text = read_log();
    assert_eq!(text.matches("partitions assigned").count(), 1, "one assignment, no rebalance:\n{text}");
    assert_eq!(text.matches("partitions revoked").count(), 0, "never evicted:\n{text}");
    println!("ClickHouse unreachable for {:.1} s with max.poll.interval.ms = 10 s: no rebalance", {
        down_at.elapsed().as_secs_f64()
    });
}

/// `DeadLetters::record` whose table insert fails once: retried, it records the row and
/// the dead-letter topic holds the message once, not once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retried_after_its_insert_failed_is_sent_to_the_topic_once() {
    let env = TestEnv::new("dead_letter_once");
    let config = &env.config;
    let index = Index::connect(&config.clickhouse).await.expect("ClickHouse");
    let dlq_topic = config.consumer.dead_letter_topic(&config.kafka.topic);
    shardflow_kafka::ensure_topic(&config.kafka, &config.kafka.topic).await.expect("topic");
    shardflow_kafka::ensure_topic(&config.kafka, &dlq_topic).await.expect("topic");
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create().expect("producer");
    producer
        .send(FutureRecord::<(), _>::to(&config.kafka.topic).payload(b"never processable".as_slice()), TIMEOUT)
        .await
        .expect("delivered");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&config.kafka.topic]).expect("subscribe");
    let message = tokio::time::timeout(TIMEOUT, consumer.recv()).await.expect("a message").expect("message");

    let dead_letters = DeadLetters::new(
        shardflow_kafka::producer(&config.kafka).expect("producer"),
        dlq_topic.clone(),
        index.clone(),
        worker_name(),
    );
    // The insert fails: the table is gone.
    index.run(index.client().query("DROP TABLE dead_letters").execute()).await.expect("drop");
    let failed = dead_letters.record(&message, "", -1, "not a chunk").await;
    assert!(failed.is_err(), "the insert must fail without its table");
    let index = Index::connect(&config.clickhouse).await.expect("tables made again");
    let _ = index;
    dead_letters.record(&message, "", -1, "not a chunk").await.expect("recorded on the retry");

    assert_eq!(env.count("SELECT count() FROM dead_letters").await, 1);
    let reader: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create().expect("consumer");
    let mut on_topic = 0;
    for p in 0..config.kafka.partitions {
        let (low, high) = reader.fetch_watermarks(&dlq_topic, p, Duration::from_secs(10)).expect("watermarks");
        on_topic += high - low;
    }
    assert_eq!(on_topic, 1, "the dead-letter topic holds the message once");
}

/// The game-rounds sink reaches ClickHouse through a proxy that answers every insert into
/// `game_rounds` carrying one round's id with exception `code`, as ClickHouse refusing that
/// row would. ClickHouse 18.16 refuses RowBinary that the sink's own encoder cannot get
/// wrong only with other codes (6, 49, 131), so the refusal is the proxy's; the other rows
/// and the dead letter go to the real server. The refused round is dead-lettered at once
/// (no retries: the code is permanent), the other 2,999 rows of its batch are inserted,
/// and the partitions move on.
async fn refused_for_good(name: &str, code: u32, message: &str) {
    const ROWS: usize = 3_000;
    let env =
        TestEnv::with(name, |c| c.consumer.retry_max_attempts = std::num::NonZeroU32::new(1000).expect("non-zero"));
    let proxy = ClickHouseProxy::start(env.config.clickhouse.url.as_str()).await;
    // No other id holds this one (ids run from round-0 to round-2999).
    let refused = "round-2999";
    proxy.refuse_holding("INSERT INTO game_rounds", refused.as_bytes(), code, message);
    let base = common::serve_api(&env.config).await;
    let proxied = proxy.url.trim_end_matches('/').to_string();
    let _sink = common::rounds_sink_with(&env.config_path, &[("SHARDFLOW__CLICKHOUSE__URL", proxied.as_str())]);
    let upload = common::upload_csv(&base, common::rounds_csv(ROWS).as_bytes()).await;
    assert_eq!(upload["rows_published"], ROWS as u64, "{upload}");
    let id = upload["upload_id"].as_str().expect("id").to_string();

    let topic = env.config.game_rounds.topic.clone();
    wait_caught_up(&env.config, &env.config.game_rounds.group_id, &topic, TIMEOUT).await;
    assert_eq!(env.count("SELECT count() FROM game_rounds FINAL").await, ROWS as u64 - 1, "all but the refused row");
    assert_eq!(
        env.count(&format!("SELECT count() FROM game_rounds FINAL WHERE game_instance_id = '{refused}'")).await,
        0
    );
    let letters = format!("SELECT count() FROM dead_letters FINAL WHERE position(error, 'Code: {code}') > 0");
    assert_eq!(env.count(&letters).await, 1, "the refused row is a dead letter with its reason");
    assert_eq!(env.count("SELECT count() FROM dead_letters FINAL").await, 1, "and nothing else is");
    let dead_topic = env.config.consumer.dead_letter_topic(&topic);
    assert_eq!(messages(&env.config, &dead_topic).await, 1, "sent to the dead-letter topic once");
    assert_eq!(env.count("SELECT sum(rounds) FROM hourly_aggregated_game_rounds").await, ROWS as u64 - 1);
    // The upload reconciles to one hour short by exactly the refused round.
    let view: serde_json::Value =
        reqwest::get(format!("{base}/uploads/{id}")).await.expect("GET").json().await.expect("JSON");
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64 - 1, "{view}");
    let hours = view["hours_mismatched"].as_array().expect("hours");
    assert_eq!(hours.len(), 1, "{view}");
    assert_eq!(hours[0]["csv"]["rounds"].as_u64(), hours[0]["clickhouse"]["rounds"].as_u64().map(|n| n + 1), "{view}");
    assert!(proxy.refused() >= 2, "the batch, then the halves holding the row, were refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_clickhouse_calls_incorrect_data_is_dead_lettered_and_its_batch_inserted() {
    refused_for_good("refused_117", 117, "Cannot parse input: incorrect data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_clickhouse_calls_a_type_mismatch_is_dead_lettered_and_its_batch_inserted() {
    refused_for_good("refused_53", 53, "Type mismatch for column real_amount_bet").await;
}
