//! Safe by default: `producer serve` refuses a non-loopback address without a token; a
//! read token guards the reads that expose sums, models and paths; the API and the
//! consumer started before ClickHouse wait for it (the API answering `/readyz` 503 and its
//! routes 503 `starting`) instead of exiting; old uploads and generated shards are removed.

use std::process::Stdio;
use std::time::Duration;

use shardflow_testkit::dataset::{self as common, Dataset, free_port};
use shardflow_testkit::proxy::ClickHouseProxy;
use shardflow_testkit::{TestEnv, bin, eventually};

fn serve(env: &TestEnv, vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin("producer"));
    command
        .arg("--config")
        .arg(&env.config_path)
        .arg("serve")
        .envs(vars.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    // Status 0: nothing listens yet (the process is starting).
    let Ok(response) = request.send().await else { return (0, serde_json::Value::Null) };
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_beyond_loopback_needs_a_token() {
    let env = TestEnv::new("exposed");
    let listen = format!("0.0.0.0:{}", free_port());
    let refusal = serve(&env, &[("SHARDFLOW__API__LISTEN", &listen)]).stderr(Stdio::piped()).output();
    let refused = tokio::time::timeout(Duration::from_secs(30), refusal)
        .await
        .expect("producer serve exits at once rather than serving")
        .expect("run producer serve");
    assert!(!refused.status.success(), "refused with a non-zero exit");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("producer:")).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("api.token") && lines[0].contains(&listen), "{stderr}");

    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let _served = serve(&env, &[("SHARDFLOW__API__LISTEN", &listen), ("SHARDFLOW__API__TOKEN", "s3cret")])
        .spawn()
        .expect("start producer serve");
    eventually("the API with a token to be ready", Duration::from_secs(60), || async move {
        let (status, _) = get(&format!("http://127.0.0.1:{port}/readyz"), None).await;
        (status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_guards_the_reads_that_expose_data() {
    let env = TestEnv::with("read_token", |c| {
        c.api.token = Some(shardflow_config::Secret::new("writer"));
        c.api.read_token = Some(shardflow_config::Secret::new("reader"));
    });
    let base = common::serve_api(&env.config).await;
    for route in ["/jobs", "/models", "/datasets", "/aggregated_game_rounds"] {
        let url = format!("{base}{route}");
        assert_eq!(get(&url, None).await.0, 401, "{route} without a token");
        assert_eq!(get(&url, Some("wrong")).await.0, 401, "{route} with a wrong token");
        assert_eq!(get(&url, Some("reader")).await.0, 200, "{route} with the read token");
        assert_eq!(get(&url, Some("writer")).await.0, 200, "{route} with the write token");
    }
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = reqwest::get(format!("{base}{open}")).await.expect("GET");
        assert_eq!(response.status(), 200, "{open} stays open");
    }
    let posted = reqwest::Client::new()
        .post(format!("{base}/jobs"))
        .bearer_auth("reader")
        .json(&serde_json::json!({"file_path": "x.parquet"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 401, "the read token does not write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_started_before_clickhouse_waits_for_it() {
    let env = TestEnv::new("api_waits");
    let clickhouse_port = free_port();
    let port = free_port();
    let (listen, clickhouse) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{clickhouse_port}/"));
    let _served = serve(&env, &[("SHARDFLOW__API__LISTEN", &listen), ("SHARDFLOW__CLICKHOUSE__URL", &clickhouse)])
        .spawn()
        .expect("start producer serve");
    let base = format!("http://{listen}");
    let (health, readiness) = eventually("the starting API to answer", Duration::from_secs(60), || {
        let base = base.clone();
        async move {
            // Readiness first: once it answers, the API is listening, so the liveness probe that
            // follows cannot race the listener's start.
            let readiness = get(&format!("{base}/readyz"), None).await;
            let health = get(&format!("{base}/healthz"), None).await;
            (readiness.0 == 503 && readiness.1["waiting_for"].as_str().is_some_and(|w| !w.is_empty()))
                .then_some((health, readiness))
        }
    })
    .await;
    assert_eq!(health.0, 200, "alive while it waits");
    assert_eq!(readiness.1["status"], "starting", "{}", readiness.1);
    assert!(readiness.1["waiting_for"].as_str().is_some_and(|w| w.contains("ClickHouse")), "{}", readiness.1);
    let (status, body) = get(&format!("{base}/jobs"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("starting")), "{body}");

    // ClickHouse comes up at the configured address: the API finishes starting.
    let _clickhouse = ClickHouseProxy::start_on(env.config.clickhouse.url.as_str(), clickhouse_port).await;
    eventually("the API to be ready", Duration::from_secs(60), || {
        let base = base.clone();
        async move { (get(&format!("{base}/readyz"), None).await.0 == 200).then_some(()) }
    })
    .await;
    let (status, jobs) = get(&format!("{base}/jobs"), None).await;
    assert_eq!(status, 200, "{jobs}");
    assert_eq!(jobs["total_results"], 0, "{jobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_before_clickhouse_waits_for_it() {
    let data = Dataset::new("consumer_waits", 20_000, 10_000, |_| {}).await;
    let clickhouse_port = free_port();
    let clickhouse = format!("http://127.0.0.1:{clickhouse_port}/");
    let mut consumer =
        shardflow_testkit::consumer(&data.env.config_path, &[], &[("SHARDFLOW__CLICKHOUSE__URL", &clickhouse)]);
    let job = data.publish().await;
    // The consumer cannot reach ClickHouse, so it has done nothing, and it is still there.
    assert_eq!(data.indexed(&job.job_id).await, 0);
    assert!(consumer.try_wait().expect("status").is_none(), "the consumer waits rather than exiting");
    let _clickhouse = ClickHouseProxy::start_on(data.env.config.clickhouse.url.as_str(), clickhouse_port).await;
    data.wait_indexed(&job.job_id, job.chunks, Duration::from_secs(90)).await;
    assert_eq!(data.assert_exactly_once(&job).await, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_generated_shards_past_their_retention_are_removed() {
    let env = TestEnv::with("retention", |c| c.storage.retention = Duration::from_secs(3600));
    let uploads = env.data().join("uploads");
    let generated = env.data().join("generated").join("old-job");
    std::fs::create_dir_all(&uploads).expect("mkdir");
    std::fs::create_dir_all(&generated).expect("mkdir");
    let (old_upload, new_upload, old_shard) =
        (uploads.join("old.csv"), uploads.join("new.csv"), generated.join("Amount_Shard_1.parquet"));
    for file in [&old_upload, &new_upload, &old_shard] {
        std::fs::write(file, b"x").expect("write");
    }
    for old in [&old_upload, &old_shard, &generated] {
        let touched = std::process::Command::new("touch").arg("-d").arg("2 hours ago").arg(old).status();
        assert!(touched.expect("touch").success());
    }
    let _base = common::serve_api(&env.config).await;
    eventually("the old upload and shard to be removed", Duration::from_secs(30), || async {
        (!old_upload.exists() && !old_shard.exists() && !generated.exists()).then_some(())
    })
    .await;
    assert!(new_upload.exists(), "a file within its retention is kept");
    assert!(env.data().join("generated").exists(), "the top directory is kept");
}
