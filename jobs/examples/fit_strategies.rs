//! Which fit strategy models the whole dataset best? Fits one mixture per strategy
//! (`pooled`, `warm_start`, `streaming`, `every_row`: here on the same rows) on per-shard samples and scores each on
//! held-out rows of every shard (mean log-likelihood; higher is better).
//!
//! ```sh
//! cargo run --release -p shardflow-producer --example fit_strategies
//! ```
//!
//! Two datasets: the shards `producer generate` writes (every shard drawn from the same
//! distribution), and shards whose mode weights drift from the first shard to the last.

use std::time::Instant;

use arrow_array::{Array, Float64Array};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_config::FitStrategy;
use shardflow_generate::{GenerateOptions, generate};
use shardflow_model::fit_parts;
use shardflow_model::{Mixture, MixtureParams};
use shardflow_storage::shard::{AMOUNT, Shard};
use shardflow_storage::table::list_shards;

const SHARDS: usize = 10;
const TRAIN_ROWS: usize = 100_000;
const HELD_OUT_ROWS: usize = 20_000;

/// Per shard: (training sample, held-out rows).
type Shards = Vec<(Vec<f64>, Vec<f64>)>;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = (SHARDS * (TRAIN_ROWS + HELD_OUT_ROWS)) as u64;
    let opts = GenerateOptions {
        rows,
        shard_rows: (TRAIN_ROWS + HELD_OUT_ROWS) as u64,
        out: dir.path().to_path_buf(),
        seed: 7,
        threads: 2,
    };
    generate(&opts, &ProgressBar::hidden())?;
    let mut generated = Shards::new();
    for path in list_shards(dir.path())? {
        let mut all = Vec::new();
        for batch in Shard::open(&path, AMOUNT)?.batches(65_536)? {
            let batch = batch?;
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| anyhow::anyhow!("not Float64"))?;
            all.extend(values.iter().flatten().filter(|v| v.is_finite()));
        }
        // Every sixth row is held out.
        let (mut train, mut held) = (Vec::new(), Vec::new());
        for (i, v) in all.into_iter().enumerate() {
            if i % 6 == 5 { held.push(v) } else { train.push(v) }
        }
        generated.push((train, held));
    }
    compare("`producer generate` shards (same distribution in every shard)", &generated)?;
    compare("drifting shards (the high mode grows from 5% to 60% of the rows)", &drifting())?;
    Ok(())
}

/// Three lognormal modes whose weights move linearly from the first shard to the last.
fn drifting() -> Shards {
    let modes = [(1.0f64, 0.3), (22.0, 0.55), (420.0, 0.7)].map(|(m, s)| LogNormal::new(m.ln(), s).expect("valid"));
    (0..SHARDS)
        .map(|i| {
            let t = i as f64 / (SHARDS - 1) as f64;
            let high = 0.05 + 0.55 * t;
            let low = 0.45 - 0.3 * t;
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(100 + i as u64);
            let mut draw = |n: usize| -> Vec<f64> {
                (0..n)
                    .map(|_| {
                        let u: f64 = rng.random();
                        let mode = if u < low {
                            0
                        } else if u < 1.0 - high {
                            1
                        } else {
                            2
                        };
                        modes[mode].sample(&mut rng)
                    })
                    .collect()
            };
            (draw(TRAIN_ROWS), draw(HELD_OUT_ROWS))
        })
        .collect()
}

fn compare(title: &str, shards: &Shards) -> anyhow::Result<()> {
    let params = MixtureParams::default().check()?;
    let samples: Vec<Vec<f64>> = shards.iter().map(|(train, _)| train.clone()).collect();
    println!("\n{title}: {SHARDS} shards, {TRAIN_ROWS} sampled rows and {HELD_OUT_ROWS} held-out rows each");
    println!(
        "| strategy | fit time | valid components | (last) fit's iterations | held-out log-likelihood, all shards | worst shard | first shard | last shard |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for strategy in [FitStrategy::Pooled, FitStrategy::WarmStart, FitStrategy::Streaming, FitStrategy::EveryRow] {
        let start = Instant::now();
        let mixture = fit_parts(&samples, strategy, &params)?;
        let took = start.elapsed().as_secs_f64();
        let per_shard: Vec<f64> = shards.iter().map(|(_, held)| mixture.mean_log_likelihood(held)).collect();
        let all = per_shard.iter().sum::<f64>() / per_shard.len() as f64;
        let worst = per_shard.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "| {} | {took:.2} s | {} | {}{} | {all:.4} | {worst:.4} | {:.4} | {:.4} |",
            name(strategy),
            valid(&mixture),
            mixture.n_iter,
            if mixture.converged { " (converged)" } else { "" },
            per_shard[0],
            per_shard[per_shard.len() - 1],
        );
    }
    Ok(())
}

fn name(strategy: FitStrategy) -> &'static str {
    match strategy {
        FitStrategy::Pooled => "pooled",
        FitStrategy::WarmStart => "warm_start",
        FitStrategy::Streaming => "streaming",
        FitStrategy::EveryRow => "every_row",
    }
}

fn valid(mixture: &Mixture) -> usize {
    mixture.valid_components().len()
}
