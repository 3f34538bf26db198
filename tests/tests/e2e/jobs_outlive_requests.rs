//! Jobs run outside the request that submitted them, against the real broker, ClickHouse
//! and binaries:
//! - a client that disconnects from `POST /transforming_data` mid-publish leaves a job that
//!   still ends `done`, every row in the outputs once;
//! - an API process killed with SIGKILL mid-publish leaves its job `publishing`; the next
//!   API process to start resumes it from its first chunk, and it ends `done`, every row once
//!   (the chunks published twice are byte-identical and indexed once per chunk).

use std::time::Duration;

use serde_json::{Value, json};
use shardflow_jobs::publish::Published;
use shardflow_testkit::dataset::{Dataset, free_port, serve_api};
use shardflow_testkit::{bin, eventually};
use tokio::process::{Child, Command};

const JOB_TIMEOUT: Duration = Duration::from_secs(240);

/// Poll `GET /jobs/{id}` until it says `done`; that view.
async fn done(base: &str, id: &str) -> Value {
    eventually(&format!("job {id} to be done"), JOB_TIMEOUT, || {
        let url = format!("{base}/jobs/{id}");
        async move {
            let view: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (view["status"] == "done").then_some(view)
        }
    })
    .await
}

fn published(view: &Value) -> Published {
    Published {
        job_id: view["job_id"].as_str().expect("job id").to_string(),
        rows: view["rows"].as_u64().expect("rows"),
        chunks: view["chunks_total"].as_u64().expect("chunks"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_publish_leaves_a_job_that_finishes() {
    let data = Dataset::new("disconnect", 1_000_000, 4_096, |_| {}).await;
    let _consumer = data.consumer();
    let base = serve_api(&data.env.config).await;
    let shard = data.shard.display().to_string();
    let gone = reqwest::Client::new()
        .post(format!("{base}/transforming_data"))
        .json(&json!({ "file_path": shard }))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err_and(|e| e.is_timeout()), "the client gives up before the job is done");

    let jobs: Value = reqwest::get(format!("{base}/jobs")).await.expect("GET /jobs").json().await.expect("JSON");
    assert_eq!(jobs["total_results"], 1, "{jobs}");
    let id = jobs["data"][0]["job_id"].as_str().expect("job id").to_string();
    let view = done(&base, &id).await;
    assert_eq!(view["rows"], 1_000_000, "{view}");
    assert_eq!(view["chunks_total"], 1_000_000u64.div_ceil(4_096), "{view}");
    assert_eq!(data.assert_exactly_once(&published(&view)).await, 1_000_000);
}

/// `producer serve` as its own process on `port`, killed when dropped.
fn api_process(config: &std::path::Path, port: u16) -> Child {
    Command::new(bin("producer"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("SHARDFLOW__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", std::env::var("SHARDFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .kill_on_drop(true)
        .spawn()
        .expect("start producer serve")
}

async fn healthy(base: &str) {
    eventually("the API to be ready", Duration::from_secs(60), || async {
        reqwest::get(format!("{base}/readyz")).await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_mid_publish_is_resumed_by_the_next_one() {
    const ROWS: u64 = 4_000_000;
    const CHUNK_ROWS: usize = 4_096;
    let data = Dataset::new("resume", ROWS, CHUNK_ROWS, |_| {}).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = api_process(&data.env.config_path, port);
    healthy(&base).await;

    let shard = data.shard.display().to_string();
    let response = reqwest::Client::new()
        .post(format!("{base}/jobs"))
        .json(&json!({ "file_path": shard }))
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("JSON");
    let id = accepted["job_id"].as_str().expect("job id").to_string();
    assert_eq!(accepted["status"], "publishing", "{accepted}");
    assert_eq!(accepted["chunks"], ROWS.div_ceil(CHUNK_ROWS as u64), "{accepted}");
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    let state = format!("SELECT status FROM jobs FINAL WHERE job_id = '{id}'");
    let status = clickhouse::Client::default()
        .with_url(data.env.config.clickhouse.url.as_str())
        .with_database(&data.env.config.clickhouse.database)
        .with_validation(false)
        .query(&state)
        .fetch_one::<String>()
        .await
        .expect("job row");
    assert_eq!(status, "publishing", "the kill came after the job finished publishing: make the shard larger");

    let _consumer = data.consumer();
    let _second = api_process(&data.env.config_path, port);
    healthy(&base).await;
    let view = done(&base, &id).await;
    assert_eq!((view["rows"].as_u64(), view["chunks_total"].as_u64()), (Some(ROWS), Some(ROWS.div_ceil(4_096))));
    assert_eq!(data.assert_exactly_once(&published(&view)).await, ROWS);
}
