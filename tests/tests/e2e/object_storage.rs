//! Roots in real object stores (started by `scripts/services.sh up`): the original
//! service's contract with `output_root` and `model_root` in S3 (SeaweedFS, and moto, which
//! checks every signature), and an input shard read from Azure Blob (Azurite), confined to
//! its data root like a path.

use std::time::Duration;

use bytes::Bytes;
use indicatif::ProgressBar;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use shardflow_generate::{GenerateOptions, generate, shard_file_name};
use shardflow_storage::part_name;
use shardflow_storage::shard::{AMOUNT, Shard};
use shardflow_testkit::dataset::{floats, serve_api};
use shardflow_testkit::objects::ObjectDir;
use shardflow_testkit::{TestEnv, eventually, nz};

const ROWS: u64 = 100_000;
const CHUNK_ROWS: usize = 16_384;
const TIMEOUT: Duration = Duration::from_secs(240);

/// A Parquet object, read whole.
async fn read_object(store: &dyn ObjectStore, key: &object_store::path::Path) -> arrow_array::RecordBatch {
    let bytes: Bytes = store.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}")).bytes().await.expect("bytes");
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("a Parquet object")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches");
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("one batch")
}

/// Generate one `Amount` shard of [`ROWS`] rows under the test's data root.
fn shard(env: &TestEnv) -> std::path::PathBuf {
    let dir = env.data().join("shards");
    let options = GenerateOptions { rows: ROWS, shard_rows: ROWS, out: dir.clone(), seed: 11, threads: 1 };
    generate(&options, &ProgressBar::hidden()).expect("generate");
    dir.join(shard_file_name(1))
}

/// The S0 contract, outputs and models in `dir`'s store: the answer names the prefixes'
/// URLs, `GET /jobs/{id}/outputs` lists one object per chunk and kind, every object is a
/// whole Parquet part, the rows come back, and nothing is written to the local disk.
async fn s0_contract_with_outputs_in(dir: ObjectDir, name: &str) {
    let (url, options) = (dir.url(), dir.options());
    let env = TestEnv::with(name, |c| {
        c.publish.chunk_rows = nz(CHUNK_ROWS);
        c.fit.sample_rows_per_shard = nz(20_000);
        c.storage.output_root = format!("{url}/outputs").parse().expect("output URL");
        c.storage.model_root = format!("{url}/models").parse().expect("model URL");
        c.storage.s3 = options;
    });
    let shard = shard(&env);
    let base = serve_api(&env.config).await;
    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let response = reqwest::Client::new()
        .post(format!("{base}/transforming_data"))
        .json(&serde_json::json!({ "file_path": shard }))
        .timeout(TIMEOUT)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    let job = answer["job_id"].as_str().expect("job id").to_string();
    let chunks = ROWS.div_ceil(CHUNK_ROWS as u64);
    assert_eq!(answer["rows"], ROWS);
    assert_eq!(answer["chunks"], chunks);
    assert_eq!(answer["transformed_file_path"], format!("{url}/outputs/transform_{job}"));
    assert_eq!(answer["inverse_transformed_file_path"], format!("{url}/outputs/inverse_transform_{job}"));

    let listed: Value =
        reqwest::get(format!("{base}/jobs/{job}/outputs")).await.expect("outputs").json().await.expect("JSON");
    let outputs = listed["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len() as u64, chunks);
    for (seq, output) in outputs.iter().enumerate() {
        let part = part_name(seq as u64);
        assert_eq!(output["transform_path"], format!("{url}/outputs/transform_{job}/{part}"));
        assert_eq!(output["inverse_path"], format!("{url}/outputs/inverse_transform_{job}/{part}"));
    }

    // Exactly one object per chunk and kind, plus the model's two files.
    let keys = dir.keys().await.expect("list");
    let model = env.count(&format!("SELECT count() FROM models WHERE path LIKE '{url}/models/%'")).await;
    assert_eq!(model, 1, "the fitted model is registered at its object-store prefix");
    let parts = |kind: &str| keys.iter().filter(|k| k.contains(&format!("/outputs/{kind}_{job}/"))).count() as u64;
    assert_eq!((parts("transform"), parts("inverse_transform")), (chunks, chunks));
    assert_eq!(keys.iter().filter(|k| k.contains("/models/")).count(), 2, "model.json and metadata.json: {keys:?}");

    // Every row comes back from the inverse parts.
    let store = dir.store();
    let input = Shard::open(&shard, AMOUNT).expect("open").batches(CHUNK_ROWS).expect("batches");
    let mut rows = 0;
    for (seq, want) in input.enumerate() {
        let want = want.expect("batch");
        let part = part_name(seq as u64);
        let transformed = read_object(store.as_ref(), &dir.path(&format!("outputs/transform_{job}/{part}"))).await;
        let inverse = read_object(store.as_ref(), &dir.path(&format!("outputs/inverse_transform_{job}/{part}"))).await;
        assert_eq!(transformed.num_rows(), want.num_rows());
        let (want, got) = (floats(&want, AMOUNT), floats(&inverse, AMOUNT));
        let alpha = floats(&transformed, "Amount.normalized");
        for i in 0..want.len() {
            if alpha.value(i).abs() < shardflow_model::ALPHA_CLIP {
                assert!((want.value(i) - got.value(i)).abs() <= 1e-9 * want.value(i).abs(), "chunk {seq} row {i}");
            }
        }
        rows += want.len() as u64;
    }
    assert_eq!(rows, ROWS);
    assert!(!env.data().join("outputs").exists(), "nothing is written to a local output directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_models_go_to_seaweedfs() {
    s0_contract_with_outputs_in(ObjectDir::s3_seaweed("s0seaweed"), "s0seaweed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_models_go_to_moto_with_signed_requests() {
    s0_contract_with_outputs_in(ObjectDir::s3_moto("s0moto"), "s0moto").await;
}

/// An input shard in Azure Blob: read through its URL, confined to its root (403 outside,
/// 404 missing), published whole, and its local copy removed once it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_shard_is_read_from_azure_blob() {
    let dir = ObjectDir::azurite("azinput");
    let (url, options) = (dir.url(), dir.options());
    let env = TestEnv::with("azinput", |c| {
        c.publish.chunk_rows = nz(CHUNK_ROWS);
        c.fit.sample_rows_per_shard = nz(20_000);
        let local = c.storage.data_roots[0].clone();
        c.storage.data_roots = vec![local, format!("{url}/in").parse().expect("input URL")];
        c.storage.azure = options;
    });
    let local = shard(&env);
    let bytes = std::fs::read(&local).expect("shard bytes");
    dir.store().put(&dir.path("in/shard.parquet"), bytes.into()).await.expect("put the shard");
    std::fs::remove_file(&local).expect("only the object is left");
    let base = serve_api(&env.config).await;
    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let client = reqwest::Client::new();
    let post = |file_path: String| {
        client
            .post(format!("{base}/jobs"))
            .json(&serde_json::json!({ "file_path": file_path, "wait": true }))
            .timeout(TIMEOUT)
            .send()
    };

    let outside = post(format!("{url}/elsewhere/shard.parquet")).await.expect("request");
    assert_eq!(outside.status(), 403);
    let sibling = post(format!("{url}/in2/shard.parquet")).await.expect("request");
    assert_eq!(sibling.status(), 403, "a prefix is matched in whole segments");
    let climbing = post(format!("{url}/in/../elsewhere/shard.parquet")).await.expect("request");
    assert_eq!(climbing.status(), 403);
    let missing = post(format!("{url}/in/missing.parquet")).await.expect("request");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "file_not_found");

    let source = format!("{url}/in/shard.parquet");
    let done = post(source.clone()).await.expect("request");
    assert_eq!(done.status(), 200);
    let view: Value = done.json().await.expect("JSON");
    assert_eq!(view["rows"], ROWS);
    assert_eq!(view["source"], source, "the job records the object's URL");
    let job = view["job_id"].as_str().expect("job id").to_string();
    let indexed = env.count(&format!("SELECT sum(rows) FROM outputs FINAL WHERE job_id = '{job}'")).await;
    assert_eq!(indexed, ROWS);
    let copies = env.data().join(".remote");
    eventually("the local copy to be removed", TIMEOUT, || {
        let left = std::fs::read_dir(&copies).map(|d| d.count()).unwrap_or(0);
        async move { (left == 0).then_some(()) }
    })
    .await;
}
