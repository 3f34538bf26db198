//! A retried upload counts once. The API's ClickHouse calls go through a proxy that can
//! refuse chosen statements (the real server behind it does the work), so a bookkeeping
//! insert after a publish can fail as it would in a blip. Retries with the same
//! `Idempotency-Key`, or the same content from the same client, get the first upload's id
//! and publish nothing new; a Parquet file with a corrupt page publishes nothing.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use shardflow_testkit::dataset::{self as common, Dataset};
use shardflow_testkit::http::multipart;
use shardflow_testkit::proxy::ClickHouseProxy;
use shardflow_testkit::{TestEnv, eventually, messages};

/// POST a multipart upload of `content` to `route`, with an `Idempotency-Key` when given.
async fn post(base: &str, route: &str, field: &str, content: &[u8], key: Option<&str>) -> (u16, serde_json::Value) {
    let (content_type, body) = multipart(field, "upload.csv", content);
    let mut request = reqwest::Client::new().post(format!("{base}{route}")).header("content-type", content_type);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.body(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// The API served in process with its ClickHouse calls through a fault-injecting proxy.
async fn api_through_proxy(env: &TestEnv) -> (String, ClickHouseProxy) {
    let proxy = ClickHouseProxy::start(env.config.clickhouse.url.as_str()).await;
    let mut config = env.config.clone();
    config.clickhouse.url = proxy.url.parse().expect("proxy URL");
    (common::serve_api(&config).await, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bookkeeping_insert_that_fails_after_the_publish_is_retried_not_reported() {
    const ROWS: usize = 5_000;
    let env = TestEnv::new("upload_bookkeeping");
    let (base, proxy) = api_through_proxy(&env).await;
    let _sink = common::rounds_sink(&env.config_path, None);
    // The upload's first state ("publishing") is recorded; the next three inserts into
    // `uploads`, the final state's, fail as in a blip.
    proxy.fail("INSERT INTO uploads", 1, 3);
    let csv = common::rounds_csv(ROWS);
    let (status, upload) = post(&base, "/csv_upload", "csv_file", csv.as_bytes(), None).await;
    assert_eq!(status, 200, "every row was published: {upload}");
    assert_eq!(upload["rows_published"], ROWS as u64, "{upload}");
    assert_eq!(proxy.refused(), 3, "the final state's insert failed three times");
    let id = upload["upload_id"].as_str().expect("id");
    let view = common::reconciled(&base, id, Duration::from_secs(60)).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
    assert_eq!(messages(&env.config, &env.config.game_rounds.topic).await, ROWS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_csv_upload_returns_the_first_and_publishes_nothing_new() {
    const ROWS: usize = 3_000;
    let env = TestEnv::new("upload_retry");
    let base = common::serve_api(&env.config).await;
    let _sink = common::rounds_sink(&env.config_path, None);
    let csv = common::rounds_csv(ROWS);
    let topic = env.config.game_rounds.topic.clone();

    let (status, first) = post(&base, "/csv_upload", "csv_file", csv.as_bytes(), Some("upload-1")).await;
    assert_eq!(status, 200, "{first}");
    let id = first["upload_id"].as_str().expect("id").to_string();
    // The client did not hear the answer and sends the request again, with its key.
    let (status, again) = post(&base, "/csv_upload", "csv_file", csv.as_bytes(), Some("upload-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["upload_id"], id.as_str(), "a retry gets the first upload");
    assert_eq!(messages(&env.config, &topic).await, ROWS as i64, "a retry publishes nothing");
    // Without a key, the same content from the same client is recognised by its hash.
    let (status, unkeyed) = post(&base, "/csv_upload", "csv_file", csv.as_bytes(), None).await;
    assert_eq!(status, 200, "{unkeyed}");
    let unkeyed_id = unkeyed["upload_id"].as_str().expect("id").to_string();
    let (_, unkeyed_again) = post(&base, "/csv_upload", "csv_file", csv.as_bytes(), None).await;
    assert_eq!(unkeyed_again["upload_id"], unkeyed_id.as_str(), "the same content again is the same upload");
    assert_eq!(messages(&env.config, &topic).await, 2 * ROWS as i64, "the content was published once more, not twice");
    // A key reused for other content is refused, and nothing is published.
    let other = common::rounds_csv(ROWS + 1);
    let (status, reused) = post(&base, "/csv_upload", "csv_file", other.as_bytes(), Some("upload-1")).await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused", "{reused}");
    assert_eq!(messages(&env.config, &topic).await, 2 * ROWS as i64);

    let view = common::reconciled(&base, &id, Duration::from_secs(60)).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
    // The aggregates count each round of the keyed upload and of the unkeyed one once.
    eventually("both uploads in ClickHouse", Duration::from_secs(60), || async {
        (env.count("SELECT count() FROM game_rounds FINAL").await == 2 * ROWS as u64).then_some(())
    })
    .await;
    assert_eq!(env.count("SELECT sum(rounds) FROM hourly_aggregated_game_rounds").await, 2 * ROWS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_shard_upload_returns_the_first_job() {
    let data = Dataset::new("shard_retry", 20_000, 5_000, |_| {}).await;
    let base = common::serve_api(&data.env.config).await;
    let shard = std::fs::read(&data.shard).expect("read the shard");
    let (status, first) = post(&base, "/shards", "file", &shard, Some("shard-1")).await;
    assert_eq!(status, 202, "{first}");
    let job = first["job_id"].as_str().expect("job id").to_string();
    let topic = data.env.config.kafka.topic.clone();
    eventually("the first job's four chunks on the topic", Duration::from_secs(60), || async {
        (messages(&data.env.config, &topic).await == 4).then_some(())
    })
    .await;
    let (status, again) = post(&base, "/shards", "file", &shard, Some("shard-1")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["job_id"], job.as_str(), "a retry gets the first job");
    assert_eq!(messages(&data.env.config, &topic).await, 4, "a retry publishes nothing");
    // Without a key, the same content from the same client is the same job: a key says
    // which requests are one, so a keyed upload and an unkeyed one are two.
    let (_, unkeyed) = post(&base, "/shards", "file", &shard, None).await;
    let second = unkeyed["job_id"].as_str().expect("job id").to_string();
    assert_ne!(second, job, "{unkeyed}");
    let (_, unkeyed_again) = post(&base, "/shards", "file", &shard, None).await;
    assert_eq!(unkeyed_again["job_id"], second.as_str(), "the same content again is the same job");
    eventually("the second job's four chunks on the topic", Duration::from_secs(60), || async {
        (messages(&data.env.config, &topic).await == 8).then_some(())
    })
    .await;
    let jobs: serde_json::Value = reqwest::get(format!("{base}/jobs")).await.expect("GET").json().await.expect("JSON");
    assert_eq!(jobs["total_results"], 2, "two jobs recorded: {jobs}");
    assert_eq!(messages(&data.env.config, &topic).await, 8, "the retries published nothing");
}

/// A Parquet file of `rows` `Amount` values in row groups of `group_rows`, whose last row
/// group's first page header is overwritten: the footer is intact, the page is not.
fn corrupt_parquet(path: &std::path::Path, rows: usize, group_rows: usize) {
    let schema = Arc::new(Schema::new(vec![Field::new("Amount", DataType::Float64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Float64Array::from_iter_values((0..rows).map(|i| (i % 1000) as f64 * 1.5)))],
    )
    .expect("batch");
    let props =
        WriterProperties::builder().set_compression(Compression::SNAPPY).set_max_row_group_size(group_rows).build();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).expect("create"), schema, Some(props)).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let reader = SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("footer");
    let last = reader.metadata().row_groups().last().expect("row groups").column(0);
    let at = usize::try_from(last.dictionary_page_offset().unwrap_or(last.data_page_offset())).expect("offset");
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at..at + 24].fill(0xFF);
    std::fs::write(path, bytes).expect("corrupt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_file_with_a_corrupt_page_publishes_nothing() {
    let data = Dataset::new("corrupt_page", 20_000, 10_000, |_| {}).await;
    let path = data.env.data().join("corrupt.parquet");
    corrupt_parquet(&path, 100_000, 20_000);
    // The footer reads; the last row group does not.
    let whole = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&path).expect("open"),
    )
    .expect("the footer is intact")
    .build()
    .expect("reader")
    .collect::<Result<Vec<_>, _>>();
    assert!(whole.is_err(), "the file must fail to read");

    let base = common::serve_api(&data.env.config).await;
    let request = serde_json::json!({"file_path": path, "model_id": data.model.model_id});
    let response = reqwest::Client::new().post(format!("{base}/jobs")).json(&request).send().await.expect("POST");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON");
    if status == 202 {
        let job = body["job_id"].as_str().expect("job id").to_string();
        let failed = eventually("the job to fail", Duration::from_secs(60), || {
            let url = format!("{base}/jobs/{job}");
            async move {
                let view: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
                (view["status"] == "failed").then_some(view)
            }
        })
        .await;
        assert!(failed["error"].as_str().is_some_and(|e| e.contains("corrupt.parquet")), "{failed}");
    } else {
        assert_eq!(status / 100, 4, "refused as the client's to fix: {body}");
    }
    assert_eq!(
        messages(&data.env.config, &data.env.config.kafka.topic).await,
        0,
        "no chunk of a corrupt file went out"
    );
}
