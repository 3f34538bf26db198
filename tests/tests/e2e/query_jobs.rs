//! `POST /jobs` with `sql`: the job publishes only the query's rows and columns (a CSV
//! filtered and projected, through the real broker, two consumers and ClickHouse), and a
//! query that does not parse or names a column the file lacks is 422 `bad_query` before
//! any job is recorded.

use std::time::Duration;

use shardflow_store::Index;
use shardflow_testkit::TestEnv;
use shardflow_testkit::dataset::{post_job, read_part, serve_api};

const ROWS: usize = 30_000;
const CHUNK_ROWS: usize = 4_096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_publishes_only_the_querys_rows() {
    let env = TestEnv::with("query_jobs", |c| c.publish.chunk_rows = shardflow_testkit::nz(CHUNK_ROWS));
    // An Amount and two columns the query leaves out.
    let mut csv = String::from("Amount,region,note\n");
    let mut kept = 0u64;
    for i in 0..ROWS {
        let amount = ((i * 7_919) % 100_000) as f64 / 100.0;
        kept += u64::from(amount > 600.0 && i % 2 == 0);
        csv.push_str(&format!("{amount},{},n{i}\n", ["north", "south"][i % 2]));
    }
    let file = env.data().join("rounds").join("amounts.csv");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
    std::fs::write(&file, csv).expect("write CSV");
    let _first = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let _second = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let base = serve_api(&env.config).await;
    let file_path = file.to_str().expect("utf-8");

    // Refused before a job exists: bad SQL, a column the file lacks, a statement.
    for sql in ["SELEC Amount FROM data", "SELECT Amount, colour FROM data", "DROP TABLE data"] {
        let (status, answer) = post_job(&base, serde_json::json!({ "file_path": file_path, "sql": sql })).await;
        assert_eq!(status, 422, "{sql}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_query", "{sql}: {answer}");
    }
    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse");
    assert_eq!(env.count("SELECT count() FROM jobs").await, 0, "no job recorded for a refused query");

    let sql = "SELECT Amount FROM data WHERE Amount > 600 AND region = 'north'";
    let (status, job) = post_job(&base, serde_json::json!({ "file_path": file_path, "sql": sql, "wait": true })).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["rows"].as_u64(), Some(kept), "{job}");
    assert_eq!(job["dataset"], "Amount");
    let job_id = job["job_id"].as_str().expect("job id").to_string();
    let outputs = index.outputs(&job_id).await.expect("outputs");
    assert_eq!(outputs.len() as u64, kept.div_ceil(CHUNK_ROWS as u64));
    assert_eq!(outputs.iter().map(|o| o.rows).sum::<u64>(), kept);
    // The inverse parts hold the query's one column, every value above the filter.
    let mut seen = 0;
    for output in &outputs {
        let part = read_part(std::path::Path::new(&output.inverse_path));
        let names: Vec<String> = part.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert!(names.iter().all(|n| n != "region" && n != "note"), "{names:?}");
        seen += part.num_rows() as u64;
    }
    assert_eq!(seen, kept);
    // The query's result was the job's shard; it is removed once the job has published.
    let queries = env.data().join("queries");
    shardflow_testkit::eventually("the query's result removed", Duration::from_secs(30), || async {
        let left = std::fs::read_dir(&queries).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    })
    .await;
}
