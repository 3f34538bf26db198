//! The same data and seed give bit-identical models and transforms on any thread count:
//! every sum runs over fixed blocks reduced in block order, and every row's component
//! draw depends on (seed, row) only.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_model::{ColumnModel, Mixture, MixtureParams, Model, fit, fit_streaming, fit_warm_start};

fn amounts(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let modes = [(0.0, 0.3), (3.1, 0.55), (4.55, 0.6), (6.0, 0.7)].map(|(m, s)| LogNormal::new(m, s).expect("valid"));
    (0..n).map(|i| modes[i % 4].sample(&mut rng)).collect()
}

fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool").install(f)
}

fn fit_all(x: &[f64], next: &[f64]) -> (Model, Mixture, Mixture) {
    let params = MixtureParams { seed: 5, ..MixtureParams::default() }.check().expect("valid");
    let mixture = fit(x, &params).expect("fit");
    let warm = fit_warm_start(next, &mixture, &params).expect("warm start");
    let streamed = fit_streaming(next, &mixture, &params).expect("streaming");
    (Model::new("Amount", vec![ColumnModel::continuous("Amount", mixture)]), warm, streamed)
}

#[test]
fn fits_are_bit_identical_on_1_2_and_8_threads() {
    // Several 16,384-row tasks and a ragged last one.
    let (x, next) = (amounts(70_001, 1), amounts(40_000, 2));
    let (model, warm, streamed) = on_threads(1, || fit_all(&x, &next));
    for threads in [2, 8] {
        let (other, other_warm, other_streamed) = on_threads(threads, || fit_all(&x, &next));
        assert_eq!(other.model_id, model.model_id, "{threads} threads");
        assert_eq!(other.to_json(), model.to_json(), "{threads} threads");
        assert_eq!(serde_json::to_string(&other_warm).ok(), serde_json::to_string(&warm).ok());
        assert_eq!(serde_json::to_string(&other_streamed).ok(), serde_json::to_string(&streamed).ok());
    }
    assert!(model.columns[0].mixture().expect("continuous").n_iter > 1);
}

#[test]
fn transforms_are_bit_identical_on_1_2_and_8_threads() {
    let params = MixtureParams::default().check().expect("valid");
    let model =
        Model::new("Amount", vec![ColumnModel::continuous("Amount", fit(&amounts(20_000, 3), &params).expect("fit"))]);
    let values = Float64Array::from(
        amounts(200_003, 4).into_iter().enumerate().map(|(i, v)| (i % 97 != 0).then_some(v)).collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_from_iter([("Amount", Arc::new(values) as ArrayRef)]).expect("batch");
    let run = || {
        let encoded = model.transform(&batch, 42).expect("transform");
        let decoded = model.inverse(&encoded).expect("inverse");
        (encoded, decoded)
    };
    let (encoded, decoded) = on_threads(1, run);
    for threads in [2, 8] {
        let (e, d) = on_threads(threads, run);
        assert_eq!(e, encoded, "transform on {threads} threads");
        assert_eq!(d, decoded, "inverse on {threads} threads");
    }
    // The seed, not the thread count, decides the draws.
    let (other, _) = on_threads(2, || {
        let e = model.transform(&batch, 43).expect("transform");
        (e, ())
    });
    assert_ne!(other, encoded);
}
