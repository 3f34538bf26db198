//! `bench/scale.py` (what `make scale` runs) at a small size, so the scale command cannot
//! rot: it must generate, fit (on this machine and on the consumer group, the two models
//! byte-equal), publish and consume every row with two consumers and write a summary whose
//! figures agree with what it ran.

use std::process::Command;

use shardflow_testkit::{TestEnv, bin, python};

#[test]
fn the_scale_run_indexes_every_row_and_writes_its_summary() {
    let env = TestEnv::new("scale");
    let results = env.dir.path().join("results");
    let bin_dir = bin("producer").parent().expect("target dir").to_path_buf();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/scale.py");
    let output = Command::new(python())
        .arg(script)
        .args(["--rows", "300000", "--shard-rows", "100000", "--consumers", "2", "--timeout", "300", "--fit", "both"])
        .arg("--bin")
        .arg(&bin_dir)
        .arg("--results")
        .arg(&results)
        .args(["--topic", &env.config.kafka.topic, "--database", &env.config.clickhouse.database])
        .env("SHARDFLOW_BENCH_CLICKHOUSE", env.config.clickhouse.url.as_str())
        .output()
        .expect("run bench/scale.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "scale.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("end to end"), "{stdout}");

    let summaries: Vec<_> = std::fs::read_dir(&results).expect("results dir").flatten().map(|e| e.path()).collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summaries[0]).expect("read summary")).expect("summary is JSON");
    assert_eq!(summary["rows"], 300_000, "{summary}");
    assert_eq!(summary["shards"], 3, "{summary}");
    assert_eq!(summary["consumers"], 2, "{summary}");
    // 100,000-row shards in chunks of `publish.chunk_rows` (65,536): two chunks each.
    assert_eq!(summary["chunks"], 6, "{summary}");
    assert_eq!(summary["chunk_latency_seconds"]["chunks"], 6.0, "{summary}");
    assert!(summary["chunk_latency_seconds"]["p99"].as_f64().is_some_and(|p| p > 0.0), "{summary}");
    assert_eq!(summary["stages"]["fit_on_group"]["model_equal_to_local"], true, "{summary}");
    for stage in ["generate", "fit", "fit_on_group", "publish", "consume"] {
        assert!(summary["stages"][stage]["rows_per_second"].as_f64().is_some_and(|r| r > 0.0), "{stage}: {summary}");
    }
    for process in ["api", "consumer-1", "consumer-2", "generate", "fit", "fit_on_group"] {
        assert!(summary["peak_rss_bytes"][process].as_u64().is_some_and(|b| b > 1 << 20), "{process}: {summary}");
    }
    assert!(summary["bytes"]["outputs"].as_u64().is_some_and(|b| b > 0), "{summary}");
    assert!(summary["bytes"]["shards"].as_u64().is_some_and(|b| b > 300_000), "{summary}");
}
