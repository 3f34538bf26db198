//! Damage done for real, against the real broker and ClickHouse: consumers killed,
//! scaled up and down, terminated mid-job, and bad messages between good chunks. After
//! each, every input row is in the outputs exactly once.

use shardflow_testkit::dataset as common;

use std::time::{Duration, Instant};

use common::{Dataset, free_port, metric, terminate};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shardflow_kafka::headers;
use shardflow_testkit::eventually;

const JOB_TIMEOUT: Duration = Duration::from_secs(180);

// The killed member never leaves the group: its replacement joins as a follower of a dead
// leader, and the partitions move once the broker expires it (session.timeout.ms). tansu
// 0.6.0 could then form the group with nothing assigned; scripts/tansu/*.patch fixes that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_then_another_consumer_finishes_it() {
    let data = Dataset::new("kill9", 150_000, 1_000, |_| {}).await;
    let mut first = data.consumer();
    let job = data.publish().await;
    data.wait_indexed(&job.job_id, 10, JOB_TIMEOUT).await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    let before = data.indexed(&job.job_id).await;
    assert!(before < job.chunks, "the job should still be in flight when the consumer dies ({before}/{})", job.chunks);

    let started = Instant::now();
    let _second = data.consumer();
    data.wait_indexed(&job.job_id, job.chunks, JOB_TIMEOUT).await;
    let rows = data.assert_exactly_once(&job).await;
    println!(
        "kill -9: {} rows in, {rows} rows out, 0 duplicates, {before}/{} chunks done at the kill, recovered in {:.1} s",
        job.rows,
        job.chunks,
        started.elapsed().as_secs_f64()
    );
}

// The dead member is one of two: the survivor must take its partitions over. tansu 0.6.0
// expired it through the survivor's heartbeat without a new generation, so its partitions
// stayed assigned to nobody; scripts/tansu/02-*.patch fixes that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_two_consumers_then_the_other_finishes_the_job() {
    let data = Dataset::new("kill9_of_two", 300_000, 1_000, |_| {}).await;
    let mut first = data.consumer();
    let _second = data.consumer();
    let job = data.publish().await;
    let workers = format!("SELECT uniqExact(worker) FROM outputs WHERE job_id = '{}'", job.job_id);
    eventually("both consumers doing work", JOB_TIMEOUT, || async {
        (data.env.count(&workers).await == 2).then_some(())
    })
    .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    let before = data.indexed(&job.job_id).await;
    assert!(before < job.chunks, "the job should still be in flight when the consumer dies ({before}/{})", job.chunks);

    let started = Instant::now();
    data.wait_indexed(&job.job_id, job.chunks, JOB_TIMEOUT).await;
    let rows = data.assert_exactly_once(&job).await;
    println!(
        "kill -9 of one of two: {} rows in, {rows} rows out, 0 duplicates, {before}/{} chunks done at the kill, \
         finished {:.1} s later",
        job.rows,
        job.chunks,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_one_to_three_consumers_and_back() {
    let data = Dataset::new("scale", 500_000, 1_000, |_| {}).await;
    let _first = data.consumer();
    let job = data.publish().await;
    data.wait_indexed(&job.job_id, 20, JOB_TIMEOUT).await;
    let mut second = data.consumer();
    let mut third = data.consumer();
    let workers = format!("SELECT uniqExact(worker) FROM outputs WHERE job_id = '{}'", job.job_id);
    eventually("all three consumers doing work", JOB_TIMEOUT, || async {
        (data.env.count(&workers).await == 3).then_some(())
    })
    .await;
    assert!(terminate(&mut second, Duration::from_secs(60)).await.success());
    assert!(terminate(&mut third, Duration::from_secs(60)).await.success());
    let at_one = data.indexed(&job.job_id).await;
    assert!(at_one < job.chunks, "the job should still be in flight when scaling back ({at_one}/{})", job.chunks);
    // The remaining member takes every partition over and does not stall.
    data.wait_indexed(&job.job_id, job.chunks, JOB_TIMEOUT).await;
    data.assert_exactly_once(&job).await;
    let workers =
        data.env.count(&format!("SELECT uniqExact(worker) FROM outputs WHERE job_id = '{}'", job.job_id)).await;
    assert!(workers >= 2, "more than one consumer should have done work, saw {workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_job_exits_zero_and_the_next_start_finishes() {
    let data = Dataset::new("sigterm", 200_000, 1_000, |_| {}).await;
    let mut first = data.consumer();
    let job = data.publish().await;
    data.wait_indexed(&job.job_id, 10, JOB_TIMEOUT).await;
    let status = terminate(&mut first, Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM exit status {status}");
    let done = data.indexed(&job.job_id).await;
    assert!(done < job.chunks, "the job should still be in flight at SIGTERM ({done}/{})", job.chunks);
    assert_eq!(data.leftovers(), Vec::<std::path::PathBuf>::new(), "no partial part left behind");

    let _next = data.consumer();
    data.wait_indexed(&job.job_id, job.chunks, JOB_TIMEOUT).await;
    data.assert_exactly_once(&job).await;
    assert!(data.leftovers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_go_to_dead_letters_and_good_chunks_all_arrive() {
    let data = Dataset::new("dlq", 40_000, 5_000, |_| {}).await;
    let config = &data.env.config;
    let _worker = data.consumer();
    let first = data.publish().await;

    // Between good chunks: garbage with no headers, a chunk of `first` whose payload is
    // garbage, and a record of another schema.
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create().expect("producer");
    let send = |payload: Vec<u8>, hs: Option<OwnedHeaders>| {
        let producer = producer.clone();
        let topic = config.kafka.topic.clone();
        async move {
            let mut record = FutureRecord::<(), _>::to(&topic).payload(&payload);
            if let Some(hs) = hs {
                record = record.headers(hs);
            }
            let delivery = producer.send(record, Duration::from_secs(30)).await.expect("delivered");
            (delivery.partition, delivery.offset)
        }
    };
    let chunk_headers = |job: &str, seq: &str, schema: &str| {
        OwnedHeaders::new()
            .insert(Header { key: headers::JOB_ID, value: Some(job) })
            .insert(Header { key: headers::CHUNK, value: Some(seq) })
            .insert(Header { key: headers::MODEL_ID, value: Some(&data.model.model_id) })
            .insert(Header { key: headers::SCHEMA, value: Some(schema) })
    };
    let garbage = send(b"\xde\xad\xbe\xef not avro".to_vec(), None).await;
    let bad_chunk = send(vec![0xff; 32], Some(chunk_headers(&first.job_id, "999", "shardflow.AmountChunk"))).await;
    let other_schema =
        send(b"\x0aalice\x54".to_vec(), Some(chunk_headers(&first.job_id, "998", "casino.GameRound"))).await;
    let second = data.publish().await;

    data.wait_indexed(&second.job_id, second.chunks, JOB_TIMEOUT).await;
    data.wait_indexed(&first.job_id, first.chunks, JOB_TIMEOUT).await;
    data.assert_exactly_once(&first).await;
    data.assert_exactly_once(&second).await;

    let expected = {
        let mut v = vec![garbage, bad_chunk, other_schema];
        v.sort();
        v
    };
    let dead = eventually("three dead letters indexed", JOB_TIMEOUT, || async {
        let n = data.env.count("SELECT count() FROM dead_letters FINAL").await;
        (n == 3).then_some(n)
    })
    .await;
    assert_eq!(dead, 3);
    let rows = data.index.dead_letters(&first.job_id).await.expect("dead letters");
    assert_eq!(rows.iter().map(|r| r.chunk).collect::<Vec<_>>(), vec![998, 999]);
    assert!(rows[0].error.contains("payload schema is casino.GameRound"), "{}", rows[0].error);
    assert!(rows[1].error.contains("not a valid shardflow.AmountChunk chunk"), "{}", rows[1].error);
    assert_eq!(rows[1].payload, vec![0xff; 32]);
    let headerless = data
        .env
        .count(&format!(
            "SELECT count() FROM dead_letters FINAL WHERE job_id = '' AND partition = {} AND offset = {}",
            garbage.0, garbage.1
        ))
        .await;
    assert_eq!(headerless, 1, "the headerless message is recorded at its offset");

    // The dead-letter topic holds the same three messages, with where they came from.
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("{}.dlq-reader", config.kafka.group_id))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    dlq.subscribe(&[&config.consumer.dead_letter_topic(&config.kafka.topic)]).expect("subscribe");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = tokio::time::timeout(JOB_TIMEOUT, dlq.recv()).await.expect("dead letter arrives").expect("message");
        let header = |key: &str| {
            m.headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == key)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .unwrap_or_default()
        };
        seen.push((
            header("dlq.partition").parse::<i32>().expect("partition"),
            header("dlq.offset").parse::<i64>().expect("offset"),
        ));
        assert!(!header("dlq.error").is_empty());
    }
    seen.sort();
    assert_eq!(seen, expected);

    // The job with dead letters is reported as such, never as cleanly done.
    let base = common::serve_api(config).await;
    let view: serde_json::Value =
        reqwest::get(format!("{base}/jobs/{}", first.job_id)).await.expect("GET").json().await.expect("json");
    assert_eq!(view["status"], "done_with_dead_letters", "{view}");
    assert_eq!(view["chunks_dead_lettered"], 2, "{view}");
    assert_eq!(view["chunks_done"], first.chunks, "{view}");
    let clean: serde_json::Value =
        reqwest::get(format!("{base}/jobs/{}", second.job_id)).await.expect("GET").json().await.expect("json");
    assert_eq!(clean["status"], "done", "{clean}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_output_is_retried_and_not_committed_until_it_clears() {
    let port = free_port();
    let data = Dataset::new("unwritable", 20_000, 5_000, |c| {
        c.consumer.listen = format!("127.0.0.1:{port}").parse().expect("address");
        c.consumer.retry_backoff = Duration::from_millis(50);
        c.consumer.retry_backoff_max = Duration::from_millis(200);
        // Cleared within the cap on attempts (past it the chunk is dead-lettered: retries.rs).
        c.consumer.retry_max_attempts = std::num::NonZeroU32::new(1_000).expect("non-zero");
    })
    .await;
    let job = data.publish().await;
    // A file where the job's output directory must go: every write of the job fails.
    let root = data.env.output_root();
    std::fs::create_dir_all(root).expect("output root");
    let blocker = root.join(format!("transform_{}", job.job_id));
    std::fs::write(&blocker, b"in the way").expect("blocker");
    let mut worker = data.consumer();
    let dead = "SELECT count() FROM dead_letters FINAL";
    // The worker fails and retries; nothing is indexed, committed or dead-lettered.
    let retries = || metric(port, "shardflow_consumer_retries_total");
    eventually("the worker to fail and retry", JOB_TIMEOUT, || async { retries().await.filter(|r| *r >= 3.0) }).await;
    assert_eq!(data.indexed(&job.job_id).await, 0);
    assert_eq!(data.env.count(dead).await, 0, "a disk problem is not the message's fault");
    assert_eq!(metric(port, "shardflow_consumer_chunks_total").await, Some(0.0));
    std::fs::remove_file(&blocker).expect("clear the way");
    data.wait_indexed(&job.job_id, job.chunks, JOB_TIMEOUT).await;
    data.assert_exactly_once(&job).await;
    assert!(terminate(&mut worker, Duration::from_secs(30)).await.success());
}
