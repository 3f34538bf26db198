//! The fit over every row (`FitStrategy::EveryRow`): shard histograms merge exactly, and
//! the fit on the merged grid models held-out rows as well as an exact fit on all rows,
//! and better than a pooled fit on a sample of each shard.

use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_model::{FitStrategy, Histogram, MixtureParams, fit, fit_histogram, fit_parts};

/// Four heavy-tailed modes, as the `Amount` bench data; each shard its own seed.
fn shard(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let modes = [(0.0, 0.3), (3.1, 0.55), (4.55, 0.6), (6.0, 0.7)].map(|(m, s)| LogNormal::new(m, s).expect("valid"));
    (0..n).map(|i| modes[i % 4].sample(&mut rng)).collect()
}

const SHARDS: u64 = 4;
const ROWS: usize = 100_000;
const SAMPLE: usize = 2_000;

#[test]
fn merged_shard_histograms_equal_one_pass_bit_for_bit() {
    let shards: Vec<Vec<f64>> = (0..SHARDS).map(|s| shard(s, ROWS / 4)).collect();
    let one_pass = Histogram::of(&shards.concat());
    let parts: Vec<Histogram> = shards.iter().map(|s| Histogram::of(s)).collect();
    let in_order = |order: &[usize]| {
        let mut h = Histogram::new();
        for &i in order {
            h.merge(&parts[i]);
        }
        h
    };
    let tree = {
        let (mut left, mut right) = (parts[0].clone(), parts[2].clone());
        left.merge(&parts[1]);
        right.merge(&parts[3]);
        right.merge(&left);
        right
    };
    for merged in [in_order(&[0, 1, 2, 3]), in_order(&[3, 1, 0, 2]), tree] {
        assert_eq!(merged, one_pass);
        assert_eq!(merged.points(), one_pass.points());
    }
    let params = MixtureParams::default().check().expect("valid");
    let fitted = fit_histogram(&in_order(&[2, 0, 3, 1]), &params).expect("fit");
    assert_eq!(fitted, fit_histogram(&one_pass, &params).expect("fit"));
    assert_eq!(fitted, fit_parts(&shards, FitStrategy::EveryRow, &params).expect("fit"));
    assert_eq!(one_pass.rows(), ROWS as u64);
}

#[test]
fn every_row_fit_matches_the_exact_fit_and_beats_the_pooled_sample() {
    let params = MixtureParams::default().check().expect("valid");
    let shards: Vec<Vec<f64>> = (0..SHARDS).map(|s| shard(10 + s, ROWS)).collect();
    let held_out: Vec<f64> = (0..SHARDS).flat_map(|s| shard(100 + s, 20_000)).collect();
    let mut histogram = Histogram::new();
    for s in &shards {
        histogram.merge(&Histogram::of(s));
    }
    let every_row = fit_histogram(&histogram, &params).expect("every row");
    let exact = fit(&shards.concat(), &params).expect("exact");
    let samples: Vec<Vec<f64>> = shards.iter().map(|s| s[..SAMPLE].to_vec()).collect();
    let pooled = fit_parts(&samples, FitStrategy::Pooled, &params).expect("pooled");
    let ll = |m: &shardflow_model::Mixture| m.mean_log_likelihood(&held_out);
    let (e, x, p) = (ll(&every_row), ll(&exact), ll(&pooled));
    assert!((e - x).abs() <= 1e-3 * x.abs(), "every row {e}, exact {x}");
    assert!(e >= p, "every row {e}, pooled sample {p}");
    assert!(histogram.bins() < histogram.rows() as usize / 4, "{} bins", histogram.bins());
}
