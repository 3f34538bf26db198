//! Rows per second of the features stage (and of the merge after it) on generated stocks.
//!
//! `cargo run --release -p shardflow-pipeline --example features_bench [-- ROWS [SYMBOLS]]`
//! (default 2,000,000 rows over 100 symbols). Data goes to a temporary directory; the
//! stage runs on every core (rayon's global pool), ETFs then stocks, three times.

use std::error::Error;
use std::time::Instant;

use indicatif::ProgressBar;
use shardflow_generate::stocks::{ETFS_DIR, STOCKS_DIR, StocksOptions, generate_stocks};
use shardflow_pipeline::features::{FeatureStats, features, merge};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000_000);
    let symbols: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    let started = Instant::now();
    let opts = StocksOptions { rows, symbols, seed: 0, out: data.clone() };
    let manifest = generate_stocks(&opts, &ProgressBar::hidden())?;
    let seconds = started.elapsed().as_secs_f64();
    println!("generate: {rows} rows, {symbols} symbols in {seconds:.3} s ({:.0} rows/s)", rows as f64 / seconds);

    let threads = rayon::current_num_threads();
    for run in 1..=3 {
        let out = dir.path().join(format!("features-{run}"));
        let started = Instant::now();
        let mut stats = FeatureStats::default();
        for sub in [ETFS_DIR, STOCKS_DIR] {
            let s = features(&data.join(sub), &out.join(sub))?;
            stats.files += s.files;
            stats.rows_in += s.rows_in;
            stats.nulls_removed += s.nulls_removed;
            stats.duplicates_removed += s.duplicates_removed;
            stats.rows_out += s.rows_out;
            stats.bytes_out += s.bytes_out;
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!((stats.nulls_removed, stats.duplicates_removed), (manifest.nulls, manifest.duplicates));
        println!(
            "features run {run}: {} files, {} rows in ({} nulls, {} duplicates removed), {} bytes out in {seconds:.3} s \
             on {threads} threads: {:.0} rows/s",
            stats.files,
            stats.rows_in,
            stats.nulls_removed,
            stats.duplicates_removed,
            stats.bytes_out,
            stats.rows_in as f64 / seconds
        );

        let started = Instant::now();
        let (etfs, stocks) = (out.join(ETFS_DIR), out.join(STOCKS_DIR));
        let merged = merge(&[&etfs, &stocks], &out.join("merged.parquet"))?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "merge run {run}: {} files, {} rows, {} bytes in {seconds:.3} s: {:.0} rows/s",
            merged.files,
            merged.rows,
            merged.bytes,
            merged.rows as f64 / seconds
        );
    }
    Ok(())
}
