//! A real public table, not one made up here: the Palmer penguins (Horst, Hill and Gorman,
//! 2020; CC0), as shipped inside the `palmerpenguins` package on PyPI, installed by
//! `scripts/pytools.sh`. 344 rows of categorical strings (species, island, sex), floats
//! (bill and flipper measures), integers (body mass, year) and `NA` for missing values.
//! Uploaded as a CSV through `POST /shards?dataset=penguins` (no model yet: fitted first),
//! through the real broker, two consumer processes and ClickHouse; its inverse equals the
//! CSV column by column.

use std::path::PathBuf;
use std::time::Duration;

use arrow_array::{Array, Float64Array, RecordBatch};
use arrow_schema::DataType;
use shardflow_model::{ALPHA_CLIP, ColumnKind, Model};
use shardflow_store::Index;
use shardflow_testkit::dataset::{read_part, read_table, serve_api};
use shardflow_testkit::http::multipart;
use shardflow_testkit::{TestEnv, eventually};

/// Where `palmerpenguins` keeps its CSV, asked of the test venv's Python.
fn penguins_csv() -> PathBuf {
    let out = std::process::Command::new(shardflow_testkit::python())
        .args([
            "-c",
            "import os, palmerpenguins as p; print(os.path.join(os.path.dirname(p.__file__), 'data', 'penguins.csv'))",
        ])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_penguins_table_comes_back_from_the_pipeline() {
    let csv = penguins_csv();
    let env = TestEnv::with("penguins", |c| c.publish.chunk_rows = shardflow_testkit::nz(100));
    let _first = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let _second = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let base = serve_api(&env.config).await;

    let (content_type, body) = multipart("file", "penguins.csv", &std::fs::read(&csv).expect("read the CSV"));
    let response = reqwest::Client::new()
        .post(format!("{base}/shards?dataset=penguins"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!((accepted["status"].as_str(), accepted["rows"].as_u64()), (Some("fitting"), Some(344)));
    let job_id = accepted["job_id"].as_str().expect("job id").to_string();
    let job = eventually("the penguins job to be done", Duration::from_secs(120), || {
        let url = format!("{base}/jobs/{job_id}");
        async move {
            let view: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            assert_ne!(view["status"], "failed", "{view}");
            (view["status"] == "done").then_some(view)
        }
    })
    .await;
    assert_eq!((job["rows_done"].as_u64(), job["chunks_done"].as_u64()), (Some(344), Some(4)));

    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse");
    let row = index.model(job["model_id"].as_str().expect("model id")).await.expect("model").expect("registered");
    let model = Model::from_json(&row.model_json).expect("model");
    let kind = |name: &str| model.columns.iter().find(|c| c.name == name).map(|c| c.kind);
    assert_eq!(kind("species"), Some(ColumnKind::Categorical));
    assert_eq!(kind("bill_length_mm"), Some(ColumnKind::Continuous));

    // The CSV as the one reader reads it (`NA` is null), against the joined inverse parts.
    let input = read_table(&csv);
    assert_eq!(input.schema().field_with_name("body_mass_g").expect("column").data_type(), &DataType::Int64);
    assert_eq!(input.column_by_name("sex").expect("sex").null_count(), 11, "`NA` is null");
    let outputs = index.outputs(&job_id).await.expect("outputs");
    let join = |paths: Vec<&str>| {
        let parts: Vec<RecordBatch> = paths.into_iter().map(|p| read_part(p.as_ref())).collect();
        arrow_select::concat::concat_batches(&parts[0].schema(), &parts).expect("concat")
    };
    let inverse = join(outputs.iter().map(|o| o.inverse_path.as_str()).collect());
    let transformed = join(outputs.iter().map(|o| o.transform_path.as_str()).collect());
    assert_eq!(inverse.schema().fields(), input.schema().fields(), "the inverse has the CSV's columns and types");
    for column in &model.columns {
        let name = column.name.as_str();
        let (want, got) = (input.column_by_name(name).expect("in"), inverse.column_by_name(name).expect("out"));
        assert_eq!(got.logical_nulls(), want.logical_nulls(), "`{name}`: nulls where the CSV has NA");
        if column.kind == ColumnKind::Categorical {
            assert_eq!(got.as_ref(), want.as_ref(), "`{name}` comes back exactly");
            continue;
        }
        // Integers exactly (after the inverse's rounding), floats to 1e-9 relative, where
        // alpha was not clipped.
        let tolerance = if want.data_type().is_integer() { 0.0 } else { 1e-9 };
        let alpha = transformed.column_by_name(&column.alpha_name()).expect("alpha");
        let alpha = alpha.as_any().downcast_ref::<Float64Array>().expect("f64");
        let as_f64 = |a: &arrow_array::ArrayRef| {
            let cast = arrow_cast::cast(a, &DataType::Float64).expect("as f64");
            cast.as_any().downcast_ref::<Float64Array>().expect("f64").clone()
        };
        let (want, got) = (as_f64(want), as_f64(got));
        for i in 0..want.len() {
            if want.is_valid(i) && alpha.value(i).abs() < ALPHA_CLIP {
                let (w, g) = (want.value(i), got.value(i));
                assert!((g - w).abs() <= tolerance * w.abs(), "`{name}` row {i}: {g} for {w}");
            }
        }
    }
}
