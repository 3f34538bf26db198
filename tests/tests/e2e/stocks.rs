//! The stocks pipeline end to end against the real ClickHouse, over a real socket and
//! through the `producer` binary: a run generates the dataset, computes the features of
//! ETFs and stocks at once, merges them, trains a random forest and registers it; the
//! forest is served at `/models/{id}/predict`; a second run with the same inputs skips
//! every stage; a run whose input is corrupt fails at the features stage with the reason,
//! leaving the first run's outputs in place; every stage's lineage passes the
//! openlineage-python client's schema classes.

use std::time::Duration;

use serde_json::{Value, json};
use shardflow_testkit::dataset::serve_api;
use shardflow_testkit::{TestEnv, bin};

use super::lineage::validate;

const STAGES: [&str; 6] = ["generate", "features_etfs", "features_stocks", "merge", "train", "register"];

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn statuses(run: &Value) -> Vec<(String, String)> {
    run["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["stage"].as_str().unwrap_or("").to_string(), s["status"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn stage<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["stages"].as_array().expect("stages").iter().find(|s| s["stage"] == name).expect("the stage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stocks_pipeline_trains_serves_skips_and_fails_with_lineage() {
    let env = TestEnv::new("stocks");
    let base = serve_api(&env.config).await;
    let request = json!({"rows": 30000, "symbols": 10, "trees": 20, "sample_rows": 8000, "wait": true});
    let (status, run) = post(&base, "/pipelines/stocks/runs", request).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    let mut ran: Vec<(String, String)> = statuses(&run);
    ran.sort();
    let mut expected: Vec<(String, String)> = STAGES.iter().map(|s| (s.to_string(), "succeeded".to_string())).collect();
    expected.sort();
    assert_eq!(ran, expected);

    // What the features removed and kept, counted.
    let (etfs, stocks) =
        (&stage(&run, "features_etfs")["outputs"]["summary"], &stage(&run, "features_stocks")["outputs"]["summary"]);
    let generated = &stage(&run, "generate")["outputs"]["summary"];
    let rows_in = etfs["rows_in"].as_u64().expect("rows") + stocks["rows_in"].as_u64().expect("rows");
    assert_eq!(rows_in, generated["rows"].as_u64().expect("generated rows"));
    for s in [etfs, stocks] {
        let removed = s["nulls_removed"].as_u64().expect("nulls") + s["duplicates_removed"].as_u64().expect("dups");
        assert_eq!(s["rows_out"].as_u64().expect("out"), s["rows_in"].as_u64().expect("in") - removed);
    }
    let removed_nulls = etfs["nulls_removed"].as_u64().unwrap_or(0) + stocks["nulls_removed"].as_u64().unwrap_or(0);
    let removed_dups =
        etfs["duplicates_removed"].as_u64().unwrap_or(0) + stocks["duplicates_removed"].as_u64().unwrap_or(0);
    assert!(removed_nulls > 0 && removed_dups > 0, "the generator's dirt is found: {etfs} {stocks}");
    let merged = &stage(&run, "merge")["outputs"]["summary"];
    assert_eq!(
        merged["rows"].as_u64(),
        Some(etfs["rows_out"].as_u64().unwrap_or(0) + stocks["rows_out"].as_u64().unwrap_or(0))
    );
    let trained = &stage(&run, "train")["outputs"]["summary"];
    assert_eq!(trained["trees"], 20);
    assert_eq!(trained["train_rows"].as_u64().unwrap_or(0) + trained["test_rows"].as_u64().unwrap_or(0), 8000);
    assert!(trained["r2"].as_f64().expect("r2") > 0.0, "the features carry signal: {trained}");

    // The model, registered and served.
    let model_id = run["model_id"].as_str().expect("model").to_string();
    let (status, model) = reqwest::get(format!("{base}/models/{model_id}"))
        .await
        .map(|r| r.status().as_u16())
        .map(|s| (s, ()))
        .expect("GET");
    assert_eq!(status, 200, "{model:?}");
    let predict = format!("/models/{model_id}/predict");
    let (status, one) = post(&base, &predict, json!({"vol_moving_avg": 1.5e6, "adj_close_rolling_med": 40.0})).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["target"], "Volume");
    let volume = one["prediction"].as_i64().expect("an integer volume");
    assert!(volume > 0, "{one}");
    let rows = json!([{"vol_moving_avg": 1.5e6, "adj_close_rolling_med": 40.0}, {"vol_moving_avg": 10.0, "adj_close_rolling_med": 1.0}]);
    let (status, many) = post(&base, &predict, rows).await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["predictions"].as_array().map(Vec::len), Some(2));
    assert_eq!(many["predictions"][0].as_i64(), Some(volume), "the same row, the same prediction");
    for (bad, says) in [
        (json!({"vol_moving_avg": 1.0}), "adj_close_rolling_med"),
        (json!({"vol_moving_avg": 1.0, "adj_close_rolling_med": "x"}), "not a finite number"),
        (json!({"vol_moving_avg": 1.0, "adj_close_rolling_med": 2.0, "Open": 3.0}), "not a feature"),
        (json!([]), "1 to 10000 rows"),
    ] {
        let (status, body) = post(&base, &predict, bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(says), "{bad}: {body}");
    }
    let (status, body) = post(&base, "/models/rf-0000000000000000/predict", json!({"vol_moving_avg": 1.0})).await;
    assert_eq!(status, 404, "{body}");

    // The same run again, through the CLI: every stage skipped, the same model.
    let out = tokio::process::Command::new(bin("producer"))
        .arg("--config")
        .arg(&env.config_path)
        .args([
            "pipeline",
            "run",
            "stocks",
            "--rows",
            "30000",
            "--symbols",
            "10",
            "--trees",
            "20",
            "--sample-rows",
            "8000",
        ])
        .output()
        .await
        .expect("producer");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    let json_at = said.find("{\n").expect("the JSON report");
    let again: Value = serde_json::from_str(&said[json_at..]).expect("report");
    assert_eq!(again["model_id"].as_str(), Some(model_id.as_str()));
    assert!(statuses(&again).iter().all(|(_, s)| s == "skipped"), "{said}");
    for name in STAGES {
        assert!(said.lines().any(|l| l.starts_with(name) && l.contains("skipped")), "{name}: {said}");
    }

    // A corrupt ETF file: the run fails at features_etfs with the reason; the first
    // run's outputs stay.
    let generated_dir = stage(&run, "generate")["outputs"]["dir"].as_str().expect("dir").to_string();
    let bad = env.data().join("bad-stocks");
    for sub in ["etfs", "stocks"] {
        std::fs::create_dir_all(bad.join(sub)).expect("dir");
        for entry in std::fs::read_dir(std::path::Path::new(&generated_dir).join(sub)).expect("list") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, bad.join(sub).join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let victim = std::fs::read_dir(bad.join("etfs")).expect("list").next().expect("a file").expect("entry").path();
    std::fs::write(&victim, b"not parquet").expect("corrupt");
    let (status, failed) =
        post(&base, "/pipelines/stocks/runs", json!({"input": bad.display().to_string(), "wait": true})).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap_or("").contains("features_etfs"), "{failed}");
    let etf_stage = stage(&failed, "features_etfs");
    assert_eq!(etf_stage["status"], "failed");
    assert!(
        etf_stage["error"].as_str().unwrap_or("").contains(victim.file_name().and_then(|n| n.to_str()).unwrap_or("?")),
        "{etf_stage}"
    );
    for name in ["merge", "train"] {
        let dir = stage(&run, name)["outputs"]["dir"].as_str().expect("dir");
        assert!(std::path::Path::new(dir).is_dir(), "{name}'s earlier outputs are intact");
    }
    let (status, report) =
        reqwest::get(format!("{base}/pipelines/stocks/runs/{}", failed["run_id"].as_str().unwrap_or("")))
            .await
            .map(|r| r.status().as_u16())
            .map(|s| (s, ()))
            .expect("GET");
    assert_eq!(status, 200, "{report:?}");

    // Lineage of the first run: every stage, the features at once, every event valid.
    let lineage: Value = reqwest::get(format!(
        "{base}/pipelines/stocks/runs/{}/lineage?events=true",
        run["run_id"].as_str().unwrap_or("")
    ))
    .await
    .expect("GET")
    .json()
    .await
    .expect("JSON");
    let runs = lineage["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), STAGES.len());
    assert!(runs.iter().all(|r| r["state"] == "COMPLETE"), "{lineage}");
    let span = |name: &str| {
        let r = runs.iter().find(|r| r["stage"] == name).expect("run");
        (r["started_at"].as_str().unwrap_or("").to_string(), r["ended_at"].as_str().unwrap_or("").to_string())
    };
    let (etf_start, etf_end) = span("features_etfs");
    let (stock_start, stock_end) = span("features_stocks");
    assert!(
        etf_start <= stock_end && stock_start <= etf_end,
        "the features stages overlap in time: {etf_start}..{etf_end}, {stock_start}..{stock_end}"
    );
    let model_dataset = format!("dataset:shardflow/models/{model_id}");
    assert!(
        lineage["edges"].as_array().expect("edges").iter().any(|e| e["to"] == model_dataset.as_str()),
        "register writes the model"
    );
    validate(lineage["events"].as_array().expect("events"));
    let failed_lineage: Value = reqwest::get(format!(
        "{base}/pipelines/stocks/runs/{}/lineage?events=true",
        failed["run_id"].as_str().unwrap_or("")
    ))
    .await
    .expect("GET")
    .json()
    .await
    .expect("JSON");
    let failed_run =
        failed_lineage["runs"].as_array().expect("runs").iter().find(|r| r["stage"] == "features_etfs").expect("run");
    assert_eq!(failed_run["state"], "FAIL");
    validate(failed_lineage["events"].as_array().expect("events"));

    let (status, _) = post(&base, "/pipelines/stocks/runs", json!({"rows": 0})).await;
    assert_eq!(status, 422);
    let (status, _) = post(&base, "/pipelines/stocks/runs", json!({"input": "/etc"})).await;
    assert_eq!(status, 403);
}
