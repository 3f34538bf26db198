//! Shared by the end-to-end tests: the API served in process, uploads, a dataset published
//! as a job, consumer processes to start, stop and kill, and the exactly-once check over
//! the outputs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::multipart;
use crate::{TestEnv, consumer, eventually};
use arrow_array::{Array, Float64Array, RecordBatch};
use indicatif::ProgressBar;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shardflow_api::{AppState, serve};
use shardflow_config::Config;
use shardflow_generate::{GenerateOptions, generate, shard_file_name};
use shardflow_jobs::fit::{fit, register, write_model};
use shardflow_jobs::publish::{Published, Publisher};
use shardflow_model::{ALPHA_CLIP, Model};
use shardflow_storage::shard::{AMOUNT, Shard};
use shardflow_storage::{inverse_dir, part_name, transform_dir};
use shardflow_store::Index;
use tokio::process::Child;

/// The API served in process on a free port until the test's runtime ends; its base URL.
pub async fn serve_api(config: &Config) -> String {
    let state = AppState::new(config.clone()).await.expect("services are up (scripts/services.sh up)");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(serve(listener, state, std::future::pending()));
    base
}

/// `POST /jobs` with `body` (waiting up to 300 s): the status and the JSON answer.
///
/// # Panics
/// When the API does not answer JSON (tests only).
pub async fn post_job(base: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/jobs"))
        .json(&body)
        .timeout(std::time::Duration::from_secs(300))
        .send()
        .await
        .expect("POST /jobs");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// Upload `csv` to `POST /csv_upload`; the answer, which must be 200.
pub async fn upload_csv(base: &str, csv: &[u8]) -> serde_json::Value {
    let (content_type, body) = multipart("csv_file", "rounds.csv", csv);
    let response = reqwest::Client::new()
        .post(format!("{base}/csv_upload"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// Poll `GET /uploads/{id}` until it says complete; that view.
pub async fn reconciled(base: &str, id: &str, timeout: Duration) -> serde_json::Value {
    eventually("the upload to reconcile as complete", timeout, || {
        let url = format!("{base}/uploads/{id}");
        async move {
            let view: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (view["status"] == "complete").then_some(view)
        }
    })
    .await
}

/// A UTF-8 game-rounds CSV of `rows` good rows over three days.
pub fn rounds_csv(rows: usize) -> String {
    let mut text = String::from(
        "created_timestamp,game_instance_id,user_id,game_id,real_amount_bet,bonus_amount_bet,real_amount_win,bonus_amount_win,game_name,provider\n",
    );
    for i in 0..rows {
        text.push_str(&format!(
            "2025-03-0{} {:02}:{:02}:00,round-{i},player-{},game-{},{}.50,0,{}.25,0,\"Book of Dead\",\"Play'n GO\"\n",
            1 + i % 3,
            i % 24,
            i % 60,
            i % 7,
            i % 4,
            i % 100,
            i % 50
        ));
    }
    text
}

/// Start a `consumer game-rounds` process (the sink), killed when dropped; in the
/// configured consumer group, or in `group_id`.
pub fn rounds_sink(config_path: &Path, group_id: Option<&str>) -> Child {
    let env: Vec<(&str, &str)> = group_id.map(|g| ("SHARDFLOW__GAME_ROUNDS__GROUP_ID", g)).into_iter().collect();
    rounds_sink_with(config_path, &env)
}

/// Start a `consumer game-rounds` process with extra environment (configuration
/// overrides such as `SHARDFLOW__GAME_ROUNDS__FLUSH_INTERVAL`), killed when dropped.
pub fn rounds_sink_with(config_path: &Path, env: &[(&str, &str)]) -> Child {
    consumer(config_path, &["game-rounds"], env)
}

/// One shard, a registered model, and the environment around them.
pub struct Dataset {
    /// The test's topic, database and directory.
    pub env: TestEnv,
    /// The generated shard.
    pub shard: PathBuf,
    /// The model fitted on it, registered.
    pub model: Model,
    /// The test's ClickHouse database.
    pub index: Index,
}

impl Dataset {
    /// Generate one shard of `rows`, fit on a sample of it and register the model; chunks
    /// of `chunk_rows` so that a job has many messages.
    pub async fn new(name: &str, rows: u64, chunk_rows: usize, adjust: impl FnOnce(&mut Config)) -> Self {
        let env = TestEnv::with(name, |c| {
            c.publish.chunk_rows = crate::nz(chunk_rows);
            c.fit.sample_rows_per_shard = crate::nz(20_000);
            adjust(c);
        });
        let dir = env.data().join("shards");
        let opts = GenerateOptions { rows, shard_rows: rows, out: dir.clone(), seed: 3, threads: 1 };
        generate(&opts, &ProgressBar::hidden()).expect("generate");
        let shard = dir.join(shard_file_name(1));
        let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse is up (scripts/services.sh up)");
        let (model, metadata) =
            fit(std::slice::from_ref(&shard), AMOUNT, &env.config.fit, 1, &ProgressBar::hidden()).expect("fit");
        let model_dir = env.model_root().join(&model.model_id);
        write_model(&model_dir, &model, &metadata).expect("write model");
        register(&index, &model_dir, &model, &metadata).await.expect("register");
        Self { env, shard, model, index }
    }

    /// Publish the shard as a job (every chunk acknowledged when this returns).
    pub async fn publish(&self) -> Published {
        let publisher = Publisher::new(&self.env.config, self.index.clone()).await.expect("publisher");
        publisher.publish(&self.shard, &self.model, &ProgressBar::hidden()).await.expect("publish")
    }

    /// Start a consumer process.
    pub fn consumer(&self) -> Child {
        consumer(&self.env.config_path, &[], &[])
    }

    /// Chunks of `job` with a (deduplicated) outputs row.
    pub async fn indexed(&self, job: &str) -> u64 {
        self.env.count(&format!("SELECT count() FROM outputs FINAL WHERE job_id = '{job}'")).await
    }

    /// Wait until at least `n` chunks of `job` are indexed.
    pub async fn wait_indexed(&self, job: &str, n: u64, timeout: Duration) {
        eventually(&format!("{n} chunks of job {job} indexed"), timeout, || async {
            (self.indexed(job).await >= n).then_some(())
        })
        .await;
    }

    /// Every input row exactly once across the parts, inverse equal to input where alpha
    /// is unclipped, and one logical outputs row per chunk. Returns the rows seen.
    pub async fn assert_exactly_once(&self, job: &Published) -> u64 {
        let root = self.env.output_root().canonicalize().expect("output root");
        let chunk_rows = self.env.config.publish.chunk_rows.get();
        let input: Vec<RecordBatch> = Shard::open(&self.shard, AMOUNT)
            .expect("open")
            .batches(chunk_rows)
            .expect("batches")
            .map(|b| b.expect("batch"))
            .collect();
        assert_eq!(input.len() as u64, job.chunks);
        let transform = transform_dir(&root, &job.job_id);
        let inverse = inverse_dir(&root, &job.job_id);
        let parts = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .expect("output dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet"))
                .collect();
            names.sort();
            names
        };
        let expected: Vec<String> = (0..job.chunks).map(part_name).collect();
        assert_eq!(parts(&transform), expected, "one transform part per chunk");
        assert_eq!(parts(&inverse), expected, "one inverse part per chunk");
        let mut rows = 0u64;
        for (seq, want) in input.iter().enumerate() {
            let encoded = read_part(&transform.join(part_name(seq as u64)));
            let decoded = read_part(&inverse.join(part_name(seq as u64)));
            let (want, got) = (floats(want, AMOUNT), floats(&decoded, AMOUNT));
            let alpha = floats(&encoded, "Amount.normalized");
            assert_eq!(got.len(), want.len(), "chunk {seq} rows");
            for i in 0..want.len() {
                if alpha.value(i).abs() < ALPHA_CLIP {
                    let (w, g) = (want.value(i), got.value(i));
                    assert!((w - g).abs() <= 1e-9 * w.abs(), "chunk {seq} row {i}: {w} came back as {g}");
                }
            }
            rows += want.len() as u64;
        }
        assert_eq!(rows, job.rows);
        let id = &job.job_id;
        assert_eq!(self.indexed(id).await, job.chunks, "one logical outputs row per chunk");
        let distinct = self.env.count(&format!("SELECT uniqExact(chunk) FROM outputs WHERE job_id = '{id}'")).await;
        assert_eq!(distinct, job.chunks);
        let indexed_rows = self.env.count(&format!("SELECT sum(rows) FROM outputs FINAL WHERE job_id = '{id}'")).await;
        assert_eq!(indexed_rows, job.rows);
        rows
    }

    /// Files under the output root that are not finished parts (temporaries).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.env.output_root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if !path.to_string_lossy().ends_with(".parquet") {
                    found.push(path);
                }
            }
        }
        found
    }
}

/// A Parquet or CSV file, read whole by the one shard reader (a CSV's types inferred).
pub fn read_table(path: &Path) -> RecordBatch {
    let table = shardflow_storage::table::Table::open(path, &[], None).expect("a readable table");
    let schema = table.schema();
    let batches: Vec<RecordBatch> = table.batches(1 << 16).expect("read").map(|b| b.expect("batch")).collect();
    arrow_select::concat::concat_batches(&schema, &batches).expect("concat")
}

/// One part, read whole.
pub fn read_part(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .with_batch_size(1 << 20)
        .build()
        .expect("reader");
    let mut batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    assert_eq!(batches.len(), 1, "a part holds one chunk");
    batches.remove(0)
}

/// A Float64 column by name.
pub fn floats<'a>(batch: &'a RecordBatch, name: &str) -> &'a Float64Array {
    batch.column_by_name(name).expect("column").as_any().downcast_ref().expect("Float64")
}

/// Send SIGTERM and wait for the exit status (with a deadline).
pub async fn terminate(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill");
    assert!(status.success());
    tokio::time::timeout(timeout, child.wait()).await.expect("exits before the deadline").expect("status")
}

/// A port free right now, for a consumer's metrics listener.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// A value from a consumer's `/metrics`, when it answers.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Run `scripts/services.sh COMMAND` (fault tests stop and start the real services);
/// `COMMAND` may carry arguments (`stop-cluster-node 1`).
pub fn services(command: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let status =
        std::process::Command::new(script).args(command.split_whitespace()).status().expect("run scripts/services.sh");
    assert!(status.success(), "scripts/services.sh {command} failed");
}
