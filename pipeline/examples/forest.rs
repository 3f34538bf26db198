//! Fit the random forest on a train Parquet file and score it on a test one, one JSON line
//! per seed, for bench/python/forest.py to set beside scikit-learn:
//!
//! ```text
//! cargo run --release -p shardflow-pipeline --example forest -- \
//!     --train T.parquet --test S.parquet --features vol_moving_avg,adj_close_rolling_med \
//!     --target Volume --seeds 1,2,3 [--threads 1] [--trees 100] [--min-samples-leaf N] \
//!     [--max-depth D] [--max-features K] [--model forest.parquet]
//! ```
//!
//! Each line is `{"seed", "r2", "mae", "rmse", "fit_s", "predict_s", "model_bytes", "nodes",
//! "peak_rss_mib"}`. `peak_rss_mib` is the process's VmHWM after predicting and before saving
//! (the moment scikit-learn's side measures too), so with several seeds it is the peak so far.
use std::fs::File;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shardflow_pipeline::forest::{Forest, ForestParams, metrics};

/// Errors are reported at the edge; `Send` so that a run can happen inside a rayon pool.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    train: String,
    test: String,
    features: Vec<String>,
    target: String,
    seeds: Vec<u64>,
    threads: Option<usize>,
    /// Where to keep the last seed's model (otherwise a temporary directory).
    model: Option<String>,
    params: ForestParams,
}

fn need<T>(value: Option<T>, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("--{name} is required"))
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = std::env::args().skip(1);
    let (mut train, mut test, mut features, mut target) = (None, None, None, None);
    let mut seeds = vec![1];
    let (mut threads, mut model) = (None, None);
    let mut params = ForestParams::default();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--train" => train = Some(value()?),
            "--test" => test = Some(value()?),
            "--features" => features = Some(value()?.split(',').map(str::to_owned).collect()),
            "--target" => target = Some(value()?),
            "--seeds" => seeds = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--threads" => threads = Some(value()?.parse()?),
            "--model" => model = Some(value()?),
            "--trees" => params.trees = value()?.parse()?,
            "--min-samples-leaf" => params.min_samples_leaf = value()?.parse()?,
            "--max-depth" => params.max_depth = Some(value()?.parse()?),
            "--max-features" => params.max_features = Some(value()?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(Args {
        train: need(train, "train")?,
        test: need(test, "test")?,
        features: need(features, "features")?,
        target: need(target, "target")?,
        seeds,
        threads,
        model,
        params,
    })
}

/// The named columns of a Parquet file as `f64` (any integer or float type, no nulls).
fn read_columns(path: &str, names: &[&str]) -> Result<Vec<Vec<f64>>, BoxError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(|e| format!("{path}: {e}"))?)?
        .with_batch_size(1 << 16)
        .build()?;
    let mut out = vec![Vec::new(); names.len()];
    for batch in reader {
        let batch: RecordBatch = batch?;
        for (name, values) in names.iter().zip(&mut out) {
            let col = batch.column_by_name(name).ok_or_else(|| format!("{path} has no column `{name}`"))?;
            if col.null_count() > 0 {
                return Err(format!("{path} column `{name}` has nulls").into());
            }
            match col.data_type() {
                DataType::Float64 => values.extend(col.as_primitive::<Float64Type>().values().iter()),
                DataType::Float32 => {
                    values.extend(col.as_primitive::<Float32Type>().values().iter().map(|&v| f64::from(v)))
                }
                DataType::Int64 => values.extend(col.as_primitive::<Int64Type>().values().iter().map(|&v| v as f64)),
                DataType::Int32 => {
                    values.extend(col.as_primitive::<Int32Type>().values().iter().map(|&v| f64::from(v)))
                }
                DataType::UInt64 => values.extend(col.as_primitive::<UInt64Type>().values().iter().map(|&v| v as f64)),
                DataType::UInt32 => {
                    values.extend(col.as_primitive::<UInt32Type>().values().iter().map(|&v| f64::from(v)))
                }
                other => return Err(format!("{path} column `{name}` is {other}, not a number").into()),
            }
        }
    }
    Ok(out)
}

/// The process's peak resident set (VmHWM) in MiB.
fn peak_rss_mib() -> Result<f64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or("no VmHWM in /proc/self/status")?;
    let kib: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib / 1024.0)
}

fn load(path: &str, args: &Args) -> Result<(Vec<Vec<f64>>, Vec<f64>), BoxError> {
    let mut names: Vec<&str> = args.features.iter().map(String::as_str).collect();
    names.push(&args.target);
    let mut columns = read_columns(path, &names)?;
    let y = columns.pop().ok_or("no target column")?;
    Ok((columns, y))
}

fn run(args: &Args) -> Result<(), BoxError> {
    let (x_train, y_train) = load(&args.train, args)?;
    let (x_test, y_test) = load(&args.test, args)?;
    let dir = tempfile::tempdir()?;
    for &seed in &args.seeds {
        let params = ForestParams { seed, ..args.params.clone() };
        let start = Instant::now();
        let forest = Forest::fit(&x_train, &y_train, &args.features, &params)?;
        let fit_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let pred = forest.predict(&x_test)?;
        let predict_s = start.elapsed().as_secs_f64();
        let m = metrics(&y_test, &pred)?;
        let peak_rss_mib = peak_rss_mib()?;
        let path = args.model.as_ref().map_or_else(|| dir.path().join("forest.parquet"), Into::into);
        let model_bytes = forest.save(path)?;
        let line = serde_json::json!({
            "seed": seed, "r2": m.r2, "mae": m.mae, "rmse": m.rmse, "fit_s": fit_s, "predict_s": predict_s,
            "model_bytes": model_bytes, "nodes": forest.node_count(), "peak_rss_mib": peak_rss_mib,
        });
        println!("{line}");
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    match args.threads {
        Some(k) => rayon::ThreadPoolBuilder::new().num_threads(k).build()?.install(|| run(&args)),
        None => run(&args),
    }
}
