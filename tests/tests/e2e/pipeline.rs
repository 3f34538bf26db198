//! End to end against the real broker and ClickHouse: generate two shards, fit, start two
//! consumer processes, submit a shard through the API over a real socket, and check
//! every output byte that matters.

use shardflow_testkit::dataset as common;

use std::path::Path;
use std::time::Duration;

use arrow_array::RecordBatch;
use common::{floats, read_part};
use indicatif::ProgressBar;
use shardflow_api::{JobView, TransformResponse};
use shardflow_generate::{GenerateOptions, generate, shard_file_name};
use shardflow_jobs::fit::{fit, register, write_model};
use shardflow_model::ALPHA_CLIP;
use shardflow_storage::part_name;
use shardflow_storage::shard::{AMOUNT, Shard};
use shardflow_storage::table::list_shards;
use shardflow_store::Index;
use shardflow_testkit::TestEnv;
use tokio::process::Child;

const SHARD_ROWS: u64 = 100_000;
const CHUNK_ROWS: usize = 16_384;

fn spawn_consumer(env: &TestEnv) -> Child {
    shardflow_testkit::consumer(&env.config_path, &[], &[])
}

fn read_parts(dir: &Path, chunks: u64) -> Vec<RecordBatch> {
    (0..chunks).map(|seq| read_part(&dir.join(part_name(seq)))).collect()
}

/// `POST /transforming_data`, expecting 200.
async fn submit(client: &reqwest::Client, base: &str, file_path: &str) -> TransformResponse {
    let response = client
        .post(format!("{base}/transforming_data"))
        .json(&serde_json::json!({ "file_path": file_path }))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_flow_through_kafka_into_parquet_and_clickhouse() {
    let env = TestEnv::with("pipeline", |c| c.publish.chunk_rows = shardflow_testkit::nz(CHUNK_ROWS));
    let shards_dir = env.data().join("shards");
    let opts =
        GenerateOptions { rows: 2 * SHARD_ROWS, shard_rows: SHARD_ROWS, out: shards_dir.clone(), seed: 5, threads: 2 };
    generate(&opts, &ProgressBar::hidden()).expect("generate");

    // Fit over both shards and register, as `producer fit` does.
    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse is up (scripts/services.sh up)");
    let files = list_shards(&shards_dir).expect("shards");
    assert_eq!(files.len(), 2);
    let (model, metadata) = fit(&files, AMOUNT, &env.config.fit, 2, &ProgressBar::hidden()).expect("fit");
    assert_eq!(metadata.columns[0].rows, 2 * SHARD_ROWS);
    let model_dir = env.model_root().join(&model.model_id);
    write_model(&model_dir, &model, &metadata).expect("write model");
    register(&index, &model_dir, &model, &metadata).await.expect("register");
    assert!(model_dir.join("model.json").is_file() && model_dir.join("metadata.json").is_file());

    let _first = spawn_consumer(&env);
    let _second = spawn_consumer(&env);

    let base = common::serve_api(&env.config).await;

    let shard = shards_dir.join(shard_file_name(1));
    let client = reqwest::Client::new();
    let answer = submit(&client, &base, shard.to_str().expect("utf-8 path")).await;
    assert!(answer.total_time_taken.ends_with(" seconds"), "{}", answer.total_time_taken);
    assert_eq!(answer.rows, SHARD_ROWS);
    let expected_chunks = SHARD_ROWS.div_ceil(CHUNK_ROWS as u64);
    assert_eq!(answer.chunks, expected_chunks);

    // Outputs: exactly the input's rows, in parts named by chunk.
    let transformed = read_parts(Path::new(&answer.transformed_file_path), answer.chunks);
    let inverse = read_parts(Path::new(&answer.inverse_transformed_file_path), answer.chunks);
    assert_eq!(transformed.iter().map(RecordBatch::num_rows).sum::<usize>() as u64, SHARD_ROWS);
    assert_eq!(inverse.iter().map(RecordBatch::num_rows).sum::<usize>() as u64, SHARD_ROWS);

    // Inverse equals input wherever alpha was not clipped.
    let input: Vec<RecordBatch> = Shard::open(&shard, AMOUNT)
        .expect("open")
        .batches(CHUNK_ROWS)
        .expect("batches")
        .map(|b| b.expect("batch"))
        .collect();
    assert_eq!(input.len() as u64, answer.chunks);
    let mut unclipped = 0usize;
    for ((want, got), encoded) in input.iter().zip(&inverse).zip(&transformed) {
        let (want, got, alpha) = (floats(want, AMOUNT), floats(got, AMOUNT), floats(encoded, "Amount.normalized"));
        assert_eq!(want.len(), got.len());
        for i in 0..want.len() {
            if alpha.value(i).abs() < ALPHA_CLIP {
                unclipped += 1;
                let (w, g) = (want.value(i), got.value(i));
                assert!((w - g).abs() <= 1e-9 * w.abs(), "{w} came back as {g}");
            }
        }
    }
    assert!(unclipped as u64 > SHARD_ROWS * 9 / 10, "only {unclipped} rows unclipped");

    // One logical outputs row per chunk.
    let job = &answer.job_id;
    let per_chunk = env.count(&format!("SELECT count() FROM outputs FINAL WHERE job_id = '{job}'")).await;
    let distinct = env.count(&format!("SELECT uniqExact(chunk) FROM outputs WHERE job_id = '{job}'")).await;
    assert_eq!((per_chunk, distinct), (expected_chunks, expected_chunks));

    let view: JobView =
        client.get(format!("{base}/jobs/{job}")).send().await.expect("GET job").json().await.expect("json");
    assert_eq!(view.job.status, "done");
    assert_eq!(
        (view.job.chunks_done, view.job.chunks_total, view.job.rows, view.job.rows_done),
        (expected_chunks, expected_chunks, SHARD_ROWS, SHARD_ROWS)
    );
    assert_eq!(view.outputs.len() as u64, expected_chunks);
    assert!(view.outputs.iter().enumerate().all(|(i, o)| o.chunk == i as u64));

    let missing = client.get(format!("{base}/jobs/no-such-job")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);
    let health = client.get(format!("{base}/healthz")).send().await.expect("GET");
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{base}/readyz")).send().await.expect("GET");
    assert_eq!(ready.status(), 200, "ClickHouse and Kafka answer");

    // A second shard reuses the registered model and lands beside the first.
    let second = submit(&client, &base, &format!("shards/{}", shard_file_name(2))).await;
    let models = env.count("SELECT count() FROM models").await;
    assert_eq!(models, 1, "the registered model is reused, not refitted");
    let job = &second.job_id;
    let indexed = env.count(&format!("SELECT sum(rows) FROM outputs FINAL WHERE job_id = '{job}'")).await;
    assert_eq!(indexed, SHARD_ROWS);

    let metrics = client.get(format!("{base}/metrics")).send().await.expect("GET").text().await.expect("text");
    assert!(metrics.contains("shardflow_api_jobs_published_total 2"), "{metrics}");
    assert!(metrics.contains(&format!("shardflow_api_rows_published_total {}", 2 * SHARD_ROWS)), "{metrics}");
    assert!(metrics.contains("shardflow_api_client_errors_total 1"), "the 404 above is counted: {metrics}");
}
