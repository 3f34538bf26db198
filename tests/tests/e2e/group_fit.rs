//! A fit on the consumer group, the shards where the members are: two consumers, each in a
//! working directory of its own with its own copy of the shards in its own data root, the
//! model root an S3 bucket (SeaweedFS) they share. `producer fit --on-group` from a third
//! directory makes, through them, the model the local fit makes, byte for byte, with both
//! members doing part of each pass; a shard no member has fails the fit with its reason.

use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use shardflow_generate::{GenerateOptions, generate};
use shardflow_testkit::hosts::{Host, wait_for_every_member};
use shardflow_testkit::objects::ObjectDir;
use shardflow_testkit::{TestEnv, nz};

const TIMEOUT: Duration = Duration::from_secs(300);

fn copy_shards(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("shards dir");
    for entry in std::fs::read_dir(from).expect("shards") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy shard");
    }
}

async fn run(host: &Host, args: &[&str]) -> (bool, String, String) {
    let out = host.command("producer", args).output().await.expect("run producer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_group_fits_every_row_of_shards_it_holds_as_one_machine_does() {
    let bucket = ObjectDir::s3_seaweed("groupfit");
    let url = bucket.url();
    let env = TestEnv::with("groupfit", |c| {
        c.fit.sample_rows_per_shard = nz(5_000);
        c.fit.group_timeout = Duration::from_secs(120);
        c.storage.data_roots = vec!["data".parse().expect("relative root")];
        c.storage.model_root = format!("{url}/models").parse().expect("model URL");
        c.storage.s3 = bucket.options();
    });
    assert_eq!(env.config.fit.strategy, shardflow_config::FitStrategy::EveryRow, "every_row is the default");
    let hosts = tempfile::tempdir().expect("hosts");
    let submitter = Host::new(hosts.path(), "submitter", &env.config);
    let (first, first_metrics) = Host::consumer(hosts.path(), "consumer-1", &env.config);
    let (second, second_metrics) = Host::consumer(hosts.path(), "consumer-2", &env.config);
    let shards = submitter.dir.join("data/shards");
    let options = GenerateOptions { rows: 400_000, shard_rows: 50_000, out: shards.clone(), seed: 5, threads: 2 };
    generate(&options, &ProgressBar::hidden()).expect("generate");
    for host in [&first, &second] {
        copy_shards(&shards, &host.dir.join("data/shards"));
    }
    let _first = first.start("consumer", &[]);
    let _second = second.start("consumer", &[]);
    wait_for_every_member(&[&first_metrics, &second_metrics], env.config.kafka.partitions, TIMEOUT).await;

    let (ok, stdout, stderr) =
        run(&submitter, &["fit", "--shards", "data/shards", "--out", "group", "--on-group"]).await;
    assert!(ok, "the group fit failed: {stderr}");
    let line = stdout.lines().find(|l| l.contains("on consumer group")).unwrap_or_else(|| panic!("{stdout}"));
    // 8 shards, two passes: 16 tasks, split between the two members.
    assert!(line.contains(": 16 tasks by 2 members"), "{line}");
    let (ok, _, stderr) = run(&submitter, &["fit", "--shards", "data/shards", "--out", "local", "--no-register"]).await;
    assert!(ok, "the local fit failed: {stderr}");
    let group = std::fs::read(submitter.dir.join("group/model.json")).expect("group model");
    let local = std::fs::read(submitter.dir.join("local/model.json")).expect("local model");
    assert_eq!(group, local, "the group's model is the local one, byte for byte");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(submitter.dir.join("group/metadata.json")).expect("metadata"))
            .expect("JSON");
    let column = &metadata["columns"][0];
    let (sampled, nulls) = (column["sampled"].as_u64().expect("sampled"), column["nulls"].as_u64().expect("nulls"));
    assert_eq!(sampled + nulls, 400_000, "every row with a value was fitted");
    assert_eq!(metadata["shards"].as_array().map(Vec::len), Some(8));
    let model_id = metadata["model_id"].as_str().expect("model id").to_string();
    let registered = env.count(&format!("SELECT count() FROM models WHERE model_id = '{model_id}'")).await;
    assert_eq!(registered, 1, "the group fit registered its model");

    // A shard only the submitter has: the member given it says so, and the fit fails with it.
    std::fs::copy(shards.join("Amount_Shard_1.parquet"), shards.join("Amount_Shard_9.parquet")).expect("extra shard");
    let (ok, _, stderr) = run(&submitter, &["fit", "--shards", "data/shards", "--out", "failed", "--on-group"]).await;
    assert!(!ok, "a shard no member has cannot be fitted");
    assert!(stderr.contains("Amount_Shard_9.parquet"), "the reason names the shard: {stderr}");
    assert!(!submitter.dir.join("failed/model.json").exists(), "a failed fit writes no model");

    // Each fit removed its task results from the model root.
    let keys = bucket.keys().await.expect("list");
    assert!(!keys.iter().any(|k| k.contains("/models/fits/")), "task results left behind: {keys:?}");
}
