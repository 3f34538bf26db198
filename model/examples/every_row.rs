//! The fit over every row against the 100,000-per-shard pooled fit and an exact fit on
//! all rows: time, and mean log-likelihood on held-out rows of every shard.
//!
//! ```sh
//! cargo run --release -p shardflow-model --example every_row -- 10000000 10 exact
//! cargo run --release -p shardflow-model --example every_row -- 100000000 100
//! ```
//!
//! Arguments: training rows in all (default 10,000,000), shards (10), and `exact` to fit
//! all rows exactly too (memory: 8 bytes per row). Shard `s` draws its rows from the
//! benchmark's four lognormal modes with seed `s`; 20,000 more rows per shard are held out.

use std::time::Instant;

use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use shardflow_model::{Histogram, Mixture, MixtureParams, fit, fit_histogram};

const SAMPLE: usize = 100_000;
const HELD_OUT: usize = 20_000;

fn shard(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let modes = [(0.0, 0.3), (3.1, 0.55), (4.55, 0.6), (6.0, 0.7)].map(|(m, s)| LogNormal::new(m, s).expect("valid"));
    (0..n).map(|i| modes[i % 4].sample(&mut rng)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000_000);
    let shards: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let exact = args.next().as_deref() == Some("exact");
    let per_shard = rows / shards;
    let params = MixtureParams::default().check()?;

    // Generation is not timed; each shard is drawn, histogrammed, sampled, then dropped.
    let (mut histograms, mut samples, mut held_out, mut all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut histogram_time = 0.0;
    for s in 0..shards {
        let mut values = shard(s as u64, per_shard + HELD_OUT);
        held_out.extend(values.split_off(per_shard));
        let start = Instant::now();
        // Two histograms per shard, one per core, merged: what the parallel read does.
        let halves: Vec<Histogram> = values.par_chunks(per_shard.div_ceil(2)).map(Histogram::of).collect();
        let mut h = Histogram::new();
        halves.iter().for_each(|half| h.merge(half));
        histogram_time += start.elapsed().as_secs_f64();
        histograms.push(h);
        samples.extend_from_slice(&values[..SAMPLE.min(per_shard)]);
        if exact {
            all.extend(values);
        }
    }
    let start = Instant::now();
    let mut merged = Histogram::new();
    histograms.iter().for_each(|h| merged.merge(h));
    let merge_time = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let every_row = fit_histogram(&merged, &params)?;
    let grid_fit_time = start.elapsed().as_secs_f64();
    let total = histogram_time + merge_time + grid_fit_time;
    println!(
        "every row: {} rows in {} bins; histograms {histogram_time:.2} s, merge {merge_time:.3} s, fit {grid_fit_time:.2} s \
         ({} iterations): {total:.2} s, {:.1} M rows/s",
        merged.rows(),
        merged.bins(),
        every_row.n_iter,
        rows as f64 / total / 1e6
    );
    report("every_row", &every_row, &held_out);

    let start = Instant::now();
    let pooled = fit(&samples, &params)?;
    println!("pooled {SAMPLE} per shard ({} rows): {:.2} s", samples.len(), start.elapsed().as_secs_f64());
    report("pooled", &pooled, &held_out);
    if exact {
        let start = Instant::now();
        let exact = fit(&all, &params)?;
        println!("exact on all {} rows: {:.2} s", all.len(), start.elapsed().as_secs_f64());
        report("exact", &exact, &held_out);
        let (e, x) = (every_row.mean_log_likelihood(&held_out), exact.mean_log_likelihood(&held_out));
        println!("every row vs exact: {:+.4}% of |exact|", 100.0 * (e - x) / x.abs());
    }
    Ok(())
}

fn report(name: &str, mixture: &Mixture, held_out: &[f64]) {
    println!(
        "  {name}: held-out mean log-likelihood {:.6} ({} valid components, {} iterations{})",
        mixture.mean_log_likelihood(held_out),
        mixture.valid_components().len(),
        mixture.n_iter,
        if mixture.converged { ", converged" } else { "" }
    );
}
