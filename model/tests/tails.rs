//! Long-tailed columns: the log transform before the mixture (CTAB-GAN), given or
//! inferred, what it saves from alpha's clip, and its round trip.

use std::sync::Arc;

use arrow_array::types::{Float64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, cast::AsArray};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_model::{
    ALPHA_CLIP, ColumnKind, ColumnSpec, FitStrategy, InferenceParams, MixtureParams, Model, Tail, TailTransform,
    ValidMixtureParams, compare_tails, fit_column,
};

fn params() -> ValidMixtureParams {
    MixtureParams { seed: 7, ..MixtureParams::default() }.check().expect("valid")
}

/// Amounts with a tail over four orders of magnitude; `zeros` of them exactly 0.
fn amounts(n: usize, zeros: f64, seed: u64) -> Float64Array {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let body = LogNormal::new(3.0, 0.6).expect("lognormal");
    let tail = LogNormal::new(6.0, 1.6).expect("lognormal");
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            Some(if u < zeros {
                0.0
            } else if u < zeros + 0.9 * (1.0 - zeros) {
                body.sample(&mut rng)
            } else {
                tail.sample(&mut rng)
            })
        })
        .collect()
}

fn spec(tail: Option<Tail>) -> ColumnSpec {
    ColumnSpec { kind: Some(ColumnKind::Continuous), tail, ..ColumnSpec::default() }
}

fn batch(name: &str, values: Float64Array) -> RecordBatch {
    RecordBatch::try_from_iter([(name, Arc::new(values) as ArrayRef)]).expect("batch")
}

#[test]
fn a_log_tail_clips_less_and_loses_less_of_the_sum() {
    let sample = amounts(40_000, 0.0, 1);
    let inference = InferenceParams::default();
    let plain = fit_column("amount", &sample, &spec(Some(Tail::None)), &inference, &params()).expect("fit");
    assert_eq!(plain.tail, None);
    let parts = [sample.len()];
    let compared =
        compare_tails(&plain, &sample, &parts, &spec(Some(Tail::None)), &inference, &params(), FitStrategy::Pooled)
            .expect("compare")
            .expect("a numeric column");
    assert_eq!(compared.chosen, Tail::None);
    assert!(compared.none.clipped > 0, "{compared:?}");
    assert!(compared.log.clipped_share < compared.none.clipped_share, "{compared:?}");
    assert!(compared.log.sum_lost < compared.none.sum_lost, "{compared:?}");
    assert_eq!(compared.none.rows, 40_000);

    // Inferred: every value positive and the skewness far above the threshold.
    let inferred = fit_column("amount", &sample, &ColumnSpec::default(), &inference, &params()).expect("fit");
    assert!(matches!(inferred.tail, Some(TailTransform::Log { lower }) if lower > 0.0), "{:?}", inferred.tail);
    let model = Model::new("t", vec![inferred]);
    let json = model.to_json();
    assert!(json.contains("\"tail\": {\n        \"log\": {\n          \"lower\""), "{json}");
    let model = Model::from_json(&json).expect("reload");

    // Round trip where alpha is not clipped, to 1e-9 relative.
    let input = amounts(20_000, 0.0, 2);
    let encoded = model.transform(&batch("amount", input.clone()), 3).expect("transform");
    let decoded = model.inverse(&encoded).expect("inverse");
    let alpha = encoded.column(0).as_primitive::<Float64Type>();
    let back = decoded.column(0).as_primitive::<Float64Type>();
    let mut exact = 0;
    for i in 0..input.len() {
        if alpha.value(i).abs() < ALPHA_CLIP {
            exact += 1;
            let want = input.value(i);
            assert!((back.value(i) - want).abs() <= 1e-9 * want.abs(), "row {i}: {} vs {want}", back.value(i));
        }
    }
    assert!(exact > 19_900, "{exact}");
}

#[test]
fn values_below_the_fit_minimum_come_back_and_those_out_of_the_log_are_clamped_and_counted() {
    let sample = amounts(5_000, 0.0, 4);
    let column = fit_column("a", &sample, &spec(Some(Tail::Log)), &InferenceParams::default(), &params()).expect("fit");
    let Some(TailTransform::Log { lower }) = column.tail else { panic!("a log tail: {:?}", column.tail) };
    let model = Model::new("t", vec![column]);
    let below = lower - 0.5;
    let input = Float64Array::from(vec![
        Some(lower / 2.0),
        Some(below),
        Some(lower - 1.0),
        Some(-5.0),
        None,
        Some(lower),
        Some(f64::NAN),
    ]);
    let (encoded, report) = model.transform_with_report(&batch("a", input), 1).expect("transform");
    assert_eq!(report.clamped, vec![("a".to_string(), 2)], "lower - 1 and -5 are outside the logarithm");
    let alpha = encoded.column_by_name("a.normalized").expect("alpha").as_primitive::<Float64Type>().clone();
    let back = model.inverse(&encoded).expect("inverse");
    let back = back.column(0).as_primitive::<Float64Type>();
    // Below the fit's minimum a value may lie beyond alpha's clip; where it does not, it
    // comes back as it was. Out of the logarithm, it comes back as `lower`.
    let mut compared = 0;
    for (i, want) in [(0, lower / 2.0), (1, below), (2, lower), (3, lower), (5, lower)] {
        if alpha.value(i).abs() < shardflow_model::ALPHA_CLIP {
            let got = back.value(i);
            assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "row {i}: {got} vs {want}");
            compared += 1;
        }
    }
    assert!(compared >= 4, "{compared} rows unclipped");
    assert!(back.is_null(4));
}

#[test]
fn a_mixed_column_keeps_its_modes_exact_and_its_minimum_apart() {
    // Zeros are the mode; the smallest other value is `lower`, which the log maps to 0:
    // it must not be taken for the mode.
    let sample = amounts(20_000, 0.3, 5);
    let column = fit_column(
        "m",
        &sample,
        &ColumnSpec { tail: Some(Tail::Log), ..ColumnSpec::default() },
        &InferenceParams::default(),
        &params(),
    )
    .expect("fit");
    assert_eq!((column.kind, column.modes.clone()), (ColumnKind::Mixed, vec![Some(0.0)]));
    let Some(TailTransform::Log { lower }) = column.tail else { panic!("a log tail") };
    assert!(lower > 0.0);
    let model = Model::new("t", vec![column]);
    let input = Float64Array::from(vec![0.0, lower, 25.0, 0.0, 4_000.0]);
    let encoded = model.transform(&batch("m", input.clone()), 9).expect("transform");
    let mode = encoded.column_by_name("m.mode_0").expect("mode slot").as_primitive::<UInt8Type>();
    assert_eq!(mode.values().to_vec(), vec![1, 0, 0, 1, 0]);
    let back = model.inverse(&encoded).expect("inverse");
    let back = back.column(0).as_primitive::<Float64Type>();
    assert_eq!((back.value(0).to_bits(), back.value(3).to_bits()), (0, 0));
    for i in [1, 2, 4] {
        let want = input.value(i);
        assert!((back.value(i) - want).abs() <= 1e-9 * want, "row {i}: {} vs {want}", back.value(i));
    }
}

#[test]
fn tails_are_not_inferred_for_mild_or_signed_columns_nor_recorded_when_absent() {
    let inference = InferenceParams::default();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
    let mild = LogNormal::new(3.0, 0.5).expect("lognormal");
    let mild: Float64Array = (0..5_000).map(|_| Some(mild.sample(&mut rng))).collect();
    let column = fit_column("x", &mild, &ColumnSpec::default(), &inference, &params()).expect("fit");
    assert_eq!(column.tail, None);
    assert!(!Model::new("t", vec![column]).to_json().contains("tail"));
    let signed: Float64Array =
        amounts(5_000, 0.0, 7).iter().enumerate().map(|(i, v)| v.map(|v| if i == 0 { -v } else { v })).collect();
    let column = fit_column("y", &signed, &ColumnSpec::default(), &inference, &params()).expect("fit");
    assert_eq!(column.tail, None, "a negative value: not a positive tail");
    let never = InferenceParams { log_tail_min_skewness: f64::INFINITY, ..InferenceParams::default() };
    let column = fit_column("z", &amounts(5_000, 0.0, 8), &ColumnSpec::default(), &never, &params()).expect("fit");
    assert_eq!(column.tail, None);
    assert!(InferenceParams { log_tail_min_skewness: f64::NAN, ..InferenceParams::default() }.check().is_err());
}
