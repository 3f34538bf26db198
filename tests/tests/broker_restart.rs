//! The broker stopped and started again in the middle of a job, and in the middle of an
//! upload (its own test binary: the other binaries never run while it is down; its tests
//! take turns). Consumers and the producer reconnect by themselves; nothing is lost or
//! doubled.

use shardflow_testkit::dataset as common;

use std::time::{Duration, Instant};

use common::{Dataset, services};
use indicatif::ProgressBar;
use shardflow_jobs::publish::Publisher;
use shardflow_testkit::http::multipart;
use shardflow_testkit::{TestEnv, eventually, messages};

const TIMEOUT: Duration = Duration::from_secs(180);

/// One test at a time stops the broker.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker is down while this lives; it is started again on drop, even on panic.
struct Outage;

impl Drop for Outage {
    fn drop(&mut self) {
        services("start-kafka");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_job_loses_and_doubles_nothing() {
    let _turn = BROKER.lock().await;
    let data = Dataset::new("broker_restart", 800_000, 1_000, |_| {}).await;
    let publisher = Publisher::new(&data.env.config, data.index.clone()).await.expect("publisher");
    let _worker = data.consumer();
    let job = publisher.publish(&data.shard, &data.model, &ProgressBar::hidden()).await.expect("publish");
    data.wait_indexed(&job.job_id, 10, TIMEOUT).await;

    services("stop-kafka");
    let outage = Outage;
    let in_flight = data.indexed(&job.job_id).await;
    assert!(in_flight < job.chunks, "the job should still be in flight ({in_flight}/{})", job.chunks);
    drop(outage);

    let back = Instant::now();
    data.wait_indexed(&job.job_id, job.chunks, TIMEOUT).await;
    data.assert_exactly_once(&job).await;
    // The same producer publishes again without being rebuilt.
    let again =
        publisher.publish(&data.shard, &data.model, &ProgressBar::hidden()).await.expect("publish after restart");
    data.wait_indexed(&again.job_id, again.chunks, TIMEOUT).await;
    data.assert_exactly_once(&again).await;
    println!(
        "broker restart: {in_flight}/{} chunks done at the stop; job finished {:.1} s after restart",
        job.chunks,
        back.elapsed().as_secs_f64()
    );
}

/// `POST /csv_upload` of `csv` with an `Idempotency-Key`: status and answer.
async fn upload(base: &str, csv: &[u8], key: &str) -> (u16, serde_json::Value) {
    let (content_type, body) = multipart("csv_file", "rounds.csv", csv);
    let response = reqwest::Client::new()
        .post(format!("{base}/csv_upload"))
        .header("content-type", content_type)
        .header("Idempotency-Key", key)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_by_the_broker_half_way_counts_once_when_retried() {
    const ROWS: usize = 200_000;
    let _turn = BROKER.lock().await;
    // The producer gives up on a message 3 s into an outage, so the upload fails.
    let env = TestEnv::with("upload_outage", |c| c.kafka.delivery_timeout = Duration::from_secs(3));
    let base = common::serve_api(&env.config).await;
    let _sink = common::rounds_sink(&env.config_path, None);
    let csv = common::rounds_csv(ROWS);
    let topic = env.config.game_rounds.topic.clone();

    let first = {
        let (base, csv) = (base.clone(), csv.clone());
        tokio::spawn(async move { upload(&base, csv.as_bytes(), "outage-1").await })
    };
    let before = eventually("the first rows on the topic", TIMEOUT, || async {
        let n = messages(&env.config, &topic).await;
        (n > 0).then_some(n)
    })
    .await;
    services("stop-kafka");
    let outage = Outage;
    let (status, failed) = first.await.expect("the first upload");
    drop(outage);
    assert_eq!(status, 503, "the broker went away half-way: {failed}");
    assert_eq!(failed["error"]["code"], "broker_unavailable", "{failed}");

    // The client retries with its key: the same upload, published again under its id. A
    // broker that has just come back may still refuse for a while (503 again, on a loaded
    // machine past the 3 s delivery timeout): the client retries until it answers, and
    // every retry must still count each round once.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let again = loop {
        let (status, again) = upload(&base, csv.as_bytes(), "outage-1").await;
        if status == 503 && again["error"]["code"] == "broker_unavailable" && std::time::Instant::now() < deadline {
            continue;
        }
        assert_eq!(status, 200, "{again}");
        break again;
    };
    assert_eq!(again["rows_published"], ROWS as u64, "{again}");
    let id = again["upload_id"].as_str().expect("id").to_string();
    let view = common::reconciled(&base, &id, TIMEOUT).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
    assert_eq!(view["hours_mismatched"].as_array().map(Vec::len), Some(0), "{view}");
    let sent = messages(&env.config, &topic).await;
    assert!(sent > ROWS as i64, "some rows went out twice ({sent} messages), yet each counts once");
    eventually("every round in ClickHouse once", TIMEOUT, || async {
        (env.count("SELECT count() FROM game_rounds FINAL").await == ROWS as u64).then_some(())
    })
    .await;
    assert_eq!(env.count("SELECT sum(rounds) FROM hourly_aggregated_game_rounds").await, ROWS as u64);
    let uploads: serde_json::Value =
        reqwest::get(format!("{base}/uploads/{id}")).await.expect("GET").json().await.expect("JSON");
    assert_eq!(uploads["status"], "complete", "{uploads}");
    println!("upload outage: {before} rows out at the stop; {sent} messages in all for {ROWS} rows");
}
