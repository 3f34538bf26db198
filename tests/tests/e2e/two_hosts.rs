//! Many machines, simulated honestly: the API and two consumers run as separate processes,
//! each in its own working directory with its own local data root, sharing only the broker,
//! ClickHouse and an S3 bucket (SeaweedFS). One consumer is killed with SIGKILL mid-job; the
//! other finishes it. Every part lands once, and pyarrow's S3 filesystem, a reader outside
//! shardflow, reads every input row from both datasets.

use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::Value;
use shardflow_generate::{GenerateOptions, generate, shard_file_name};
use shardflow_testkit::dataset::free_port;
use shardflow_testkit::hosts::{Host, wait_for_every_member};
use shardflow_testkit::objects::ObjectDir;
use shardflow_testkit::{TestEnv, eventually, nz};

const ROWS: u64 = 2_000_000;
const CHUNK_ROWS: usize = 20_000;
const TIMEOUT: Duration = Duration::from_secs(300);

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Rows pyarrow's S3 filesystem reads from each dataset (bucket/prefix paths).
fn pyarrow_rows(dir: &ObjectDir, datasets: &[String]) -> Vec<u64> {
    let options = dir.options();
    let endpoint = options["aws_endpoint"].trim_start_matches("http://").to_string();
    let script = "import sys, json, pyarrow.dataset as ds, pyarrow.fs as fs\n\
                  endpoint, key, secret = sys.argv[1:4]\n\
                  s3 = fs.S3FileSystem(endpoint_override=endpoint, scheme='http', access_key=key, secret_key=secret, region='us-east-1')\n\
                  print(json.dumps([ds.dataset(d, filesystem=s3, format='parquet').count_rows() for d in sys.argv[4:]]))\n";
    let out = std::process::Command::new(shardflow_testkit::python())
        .arg("-c")
        .arg(script)
        .args([&endpoint, &options["aws_access_key_id"], &options["aws_secret_access_key"]])
        .args(datasets)
        .output()
        .expect("python");
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_on_two_hosts_write_every_part_to_s3_once_through_a_kill_9() {
    let bucket = ObjectDir::s3_seaweed("twohosts");
    let url = bucket.url();
    let port = free_port();
    let env = TestEnv::with("twohosts", |c| {
        c.publish.chunk_rows = nz(CHUNK_ROWS);
        c.fit.sample_rows_per_shard = nz(20_000);
        c.storage.data_roots = vec!["data".parse().expect("relative root")];
        c.storage.output_root = format!("{url}/outputs").parse().expect("output URL");
        c.storage.model_root = format!("{url}/models").parse().expect("model URL");
        c.storage.s3 = bucket.options();
        c.api.listen = format!("127.0.0.1:{port}").parse().expect("address");
    });
    let hosts = tempfile::tempdir().expect("hosts");
    let api = Host::new(hosts.path(), "api", &env.config);
    let (first, first_metrics) = Host::consumer(hosts.path(), "consumer-1", &env.config);
    let (second, second_metrics) = Host::consumer(hosts.path(), "consumer-2", &env.config);
    let shards = api.dir.join("data/shards");
    let options = GenerateOptions { rows: ROWS, shard_rows: ROWS, out: shards.clone(), seed: 21, threads: 2 };
    generate(&options, &ProgressBar::hidden()).expect("generate");

    let _api = api.start("producer", &["serve"]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually("the API to be ready", TIMEOUT, || {
        let request = client.get(format!("{base}/readyz")).send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    let mut victim = first.start("consumer", &[]);
    let survivor = second.start("consumer", &[]);
    // Both members hold partitions before the job starts, so both do part of it whatever
    // the speed of each one's start (a member that joined late found the job done).
    wait_for_every_member(&[&first_metrics, &second_metrics], env.config.kafka.partitions, TIMEOUT).await;

    // A relative path: it resolves in the API's own data root, which no consumer has.
    let response = client
        .post(format!("{base}/jobs"))
        .json(&serde_json::json!({ "file_path": format!("shards/{}", shard_file_name(1)) }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202);
    let job = response.json::<Value>().await.expect("JSON")["job_id"].as_str().expect("job id").to_string();
    let chunks = ROWS.div_ceil(CHUNK_ROWS as u64);
    let env = &env;
    let indexed = |by: Option<String>| {
        let filter = by.map(|w| format!(" AND worker LIKE '%/{w}'")).unwrap_or_default();
        let sql = format!("SELECT count() FROM outputs FINAL WHERE job_id = '{job}'{filter}");
        async move { env.count(&sql).await }
    };

    // Stop the first consumer once it has indexed chunks of its own, and kill it while the
    // job is unfinished: deterministic, whatever the speed of the machine.
    let pid = victim.id().expect("running");
    eventually("the first consumer to index a chunk", TIMEOUT, || {
        let own = indexed(Some(pid.to_string()));
        async move { (own.await > 0).then_some(()) }
    })
    .await;
    signal(pid, "-STOP");
    let before = indexed(None).await;
    assert!(before < chunks, "the job finished before the kill ({before} of {chunks} chunks): make it larger");
    signal(pid, "-KILL");
    let _ = victim.wait().await;

    let view: Value = eventually("the survivor to finish the job", TIMEOUT, || {
        let request = client.get(format!("{base}/jobs/{job}")).send();
        async move {
            let view: Value = request.await.ok()?.json().await.ok()?;
            (view["outputs"].as_array().map(Vec::len) == Some(chunks as usize)).then_some(view)
        }
    })
    .await;
    assert_eq!(view["rows"], ROWS);
    assert_eq!(view["transformed_file_path"], format!("{url}/outputs/transform_{job}"));
    // Both hosts did part of the job: the victim indexed chunks before the kill (seen
    // above), and the survivor indexed some of its own. Not `uniqExact(worker)` over the
    // rows: the survivor redoes the victim's chunks whose offsets were not committed, and
    // a background merge of `outputs` keeps only its newer rows for those.
    let survivor_pid = survivor.id().expect("running");
    assert!(indexed(Some(survivor_pid.to_string())).await > 0, "the survivor indexed chunks of its own");
    let rows = env.count(&format!("SELECT sum(rows) FROM outputs FINAL WHERE job_id = '{job}'")).await;
    assert_eq!(rows, ROWS);

    // Every part once in the bucket, and nothing on any host's disk.
    let keys = bucket.keys().await.expect("list");
    for kind in ["transform", "inverse_transform"] {
        let prefix = format!("/outputs/{kind}_{job}/");
        let mut parts: Vec<&String> = keys.iter().filter(|k| k.contains(&prefix)).collect();
        parts.sort();
        parts.dedup();
        assert_eq!(parts.len() as u64, chunks, "one {kind} object per chunk");
    }
    for host in [&api, &first, &second] {
        assert!(!host.dir.join("data/outputs").exists(), "{} wrote outputs to its own disk", host.dir.display());
    }
    let prefix = url.trim_start_matches("s3://");
    let datasets = [format!("{prefix}/outputs/transform_{job}"), format!("{prefix}/outputs/inverse_transform_{job}")];
    assert_eq!(pyarrow_rows(&bucket, &datasets), vec![ROWS, ROWS], "pyarrow reads every row of both datasets once");
}
