//! The benchmark data, shared by the criterion benches and `examples/bench_data.rs`
//! (which writes it for `bench/python/compare.py`, so scikit-learn and RDT are timed on
//! the very same values).

use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// `n` heavy-tailed, four-mode amounts (seed 1): the first `m` values of `amounts(n)`
/// are `amounts(m)`.
pub(crate) fn amounts(n: usize) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let modes =
        [LogNormal::new(0.0, 0.3), LogNormal::new(3.1, 0.55), LogNormal::new(4.55, 0.6), LogNormal::new(6.0, 0.7)];
    let modes: Vec<LogNormal<f64>> = modes.into_iter().map(|m| m.expect("valid")).collect();
    (0..n).map(|i| modes[i % 4].sample(&mut rng)).collect()
}
