//! `producer fit` on a table of several column kinds (Parquet and CSV), `producer model
//! show`, and `producer model plot`, run as the binary; bad input ends with a one-line
//! reason and a non-zero status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_model::ColumnKind;
use shardflow_testkit::TestEnv;

/// Accounts: a lognormal `amount`, a `city` with nulls, a `balance` that is 0 on 40% of
/// rows and null on 5%, and `rooms`, an integer with four values.
fn accounts(n: usize, seed: u64) -> RecordBatch {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let spread = LogNormal::new(4.0, 0.8).expect("lognormal");
    let cities = ["paris", "oslo", "lima"];
    let mut amount = Vec::with_capacity(n);
    let mut city = Vec::with_capacity(n);
    let mut balance = Vec::with_capacity(n);
    let mut rooms = Vec::with_capacity(n);
    for i in 0..n {
        amount.push(spread.sample(&mut rng));
        city.push((i % 10 != 9).then(|| cities[i % 3]));
        let u: f64 = rng.random();
        balance.push(if u < 0.4 {
            Some(0.0)
        } else if u < 0.45 {
            None
        } else {
            Some(spread.sample(&mut rng))
        });
        rooms.push(1 + (i % 4) as i64);
    }
    RecordBatch::try_from_iter([
        ("amount", Arc::new(Float64Array::from(amount)) as ArrayRef),
        ("city", Arc::new(StringArray::from(city)) as ArrayRef),
        ("balance", Arc::new(Float64Array::from(balance)) as ArrayRef),
        ("rooms", Arc::new(Int64Array::from(rooms)) as ArrayRef),
    ])
    .expect("batch")
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

fn write_csv(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    let mut writer = arrow_csv::Writer::new(file);
    writer.write(batch).expect("write");
}

fn producer(config: &Path, args: &[&str]) -> Output {
    Command::new(shardflow_testkit::bin("producer"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run producer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "failed: {}", text(&output.stderr));
    text(&output.stdout)
}

/// The one line a failed command printed; asserts it failed with exactly one line.
fn failure(output: Output) -> String {
    assert!(!output.status.success(), "should fail: {}", text(&output.stdout));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one-line reason: {stderr}");
    lines[0].to_string()
}

fn fit(env: &TestEnv, shards: &Path, out: &Path) -> serde_json::Value {
    let out_str = out.to_str().expect("utf8 path");
    let stdout = ok(producer(
        &env.config_path,
        &[
            "fit",
            "--shards",
            shards.to_str().expect("utf8"),
            "--out",
            out_str,
            "--no-register",
            "--dataset",
            "accounts",
        ],
    ));
    assert!(stdout.contains("balance: mixed (inferred)"), "{stdout}");
    let json = std::fs::read_to_string(out.join("model.json")).expect("model.json");
    serde_json::from_str(&json).expect("json")
}

fn kinds(model: &serde_json::Value) -> Vec<(String, String, String)> {
    model["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
            (s("name"), s("kind"), s("kind_source"))
        })
        .collect()
}

fn env() -> TestEnv {
    TestEnv::with("model_cli", |c| {
        c.fit.kinds.insert("city".into(), ColumnKind::Categorical);
        c.fit.sample_rows_per_shard = shardflow_testkit::nz(4_000);
    })
}

#[test]
fn fits_a_table_of_every_kind_from_parquet_and_csv_and_shows_it() {
    let env = env();
    let want = |s: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        s.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
    };
    let expected = want(&[
        ("amount", "continuous", "inferred"),
        ("city", "categorical", "config"),
        ("balance", "mixed", "inferred"),
        ("rooms", "categorical", "inferred"),
    ]);
    for (format, write) in [("parquet", write_parquet as fn(&Path, &RecordBatch)), ("csv", write_csv)] {
        let shards = env.data().join(format!("accounts_{format}"));
        std::fs::create_dir_all(&shards).expect("dir");
        write(&shards.join(format!("part_1.{format}")), &accounts(3_000, 1));
        write(&shards.join(format!("part_2.{format}")), &accounts(3_000, 2));
        let out = env.data().join(format!("models_{format}"));
        let model = fit(&env, &shards, &out);
        assert_eq!(kinds(&model), expected, "{format}");
        assert_eq!(model["format_version"], 2);
        assert_eq!(model["columns"][1]["categories"], serde_json::json!(["paris", "oslo", "lima", null]), "{format}");
        assert_eq!(model["columns"][2]["modes"], serde_json::json!([0.0, null]), "{format}");
        assert_eq!(model["columns"][3]["categories"], serde_json::json!(["1", "2", "3", "4"]), "{format}");
        let metadata: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metadata.json")).expect("metadata")).expect("json");
        assert_eq!(metadata["columns"][2]["rows"], 6_000);
        assert_eq!(metadata["shards"][1]["sampled"], 3_000);

        let shown = ok(producer(&env.config_path, &["model", "show", out.to_str().expect("utf8")]));
        for line in [
            "column amount: continuous (inferred):",
            "column city: categorical (config), 4 categories in first-seen order, input Utf8",
            "       3  (null)",
            "column balance: mixed (inferred):",
            "  modal slot balance.mode_0: 0 (alpha 0, comes back exactly)",
            "  modal slot balance.null: null (alpha 0, comes back exactly)",
            "column rooms: categorical (inferred), 4 categories in first-seen order, input Int64",
        ] {
            assert!(shown.contains(line), "{format}: missing `{line}` in\n{shown}");
        }
    }
}

#[test]
fn plot_writes_a_png_and_bad_input_gets_a_one_line_reason() {
    let env = env();
    let shards = env.data().join("accounts");
    std::fs::create_dir_all(&shards).expect("dir");
    let shard: PathBuf = shards.join("part_1.parquet");
    write_parquet(&shard, &accounts(5_000, 3));
    let out = env.data().join("model");
    fit(&env, &shards, &out);
    let model = out.to_str().expect("utf8");
    let shard_arg = shard.to_str().expect("utf8");

    for column in ["amount", "balance"] {
        let png = env.data().join(format!("{column}.png"));
        let stdout = ok(producer(
            &env.config_path,
            &["model", "plot", model, "--shard", shard_arg, "--column", column, "--out", png.to_str().expect("utf8")],
        ));
        assert!(stdout.starts_with(&format!("wrote {}: column {column}", png.display())), "{stdout}");
        let bytes = std::fs::read(&png).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert!(bytes.len() > 10_000, "{column}: a drawn chart, not an empty image ({} bytes)", bytes.len());
    }

    let unknown = "0123456789abcdef";
    let cases: [(&[&str], &str); 5] = [
        (&["model", "plot", unknown, "--shard", shard_arg], "no model 0123456789abcdef: not a model.json path"),
        (&["model", "plot", model, "--shard", "/nonexistent/s.parquet"], "shard /nonexistent/s.parquet does not exist"),
        (&["model", "plot", model, "--shard", shard_arg, "--column", "city"], "column `city` is categorical"),
        (&["model", "plot", model, "--shard", shard_arg, "--out", "chart.svg"], "output chart.svg must end in .png"),
        (&["model", "show", unknown], "no model 0123456789abcdef"),
    ];
    for (args, reason) in cases {
        let line = failure(producer(&env.config_path, args));
        assert!(line.starts_with("producer: ") && line.contains(reason), "{args:?}: {line}");
    }
}
