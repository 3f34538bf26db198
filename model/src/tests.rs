use super::*;
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Credit-card-like amounts: a few lognormal modes plus a spike of small values.
fn amounts(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let small = Normal::new(1.0_f64, 0.2).expect("normal");
    let mid = LogNormal::new(3.5, 0.6).expect("lognormal");
    let large = LogNormal::new(6.0, 0.8).expect("lognormal");
    (0..n)
        .map(|i| match i % 5 {
            0 => small.sample(&mut rng).abs(),
            1..=3 => mid.sample(&mut rng),
            _ => large.sample(&mut rng),
        })
        .collect()
}

fn fitted(sample: &[f64]) -> Model {
    let params = MixtureParams { seed: 11, ..MixtureParams::default() }.check().expect("valid");
    Model::new("Amount", vec![ColumnModel::continuous("Amount", fit(sample, &params).expect("fit"))])
}

fn batch(values: Vec<f64>) -> RecordBatch {
    RecordBatch::try_from_iter([("Amount", Arc::new(Float64Array::from(values)) as ArrayRef)]).expect("batch")
}

fn floats<'a>(b: &'a RecordBatch, name: &str) -> &'a Float64Array {
    b.column_by_name(name).expect("column").as_any().downcast_ref().expect("f64")
}

#[test]
fn round_trip_is_exact_where_alpha_is_not_clipped() {
    let model = fitted(&amounts(20_000, 1));
    let x = amounts(50_000, 2);
    let encoded = model.transform(&batch(x.clone()), 99).expect("transform");
    let decoded = model.inverse(&encoded).expect("inverse");
    let alpha = floats(&encoded, "Amount.normalized");
    let back = floats(&decoded, "Amount");
    let mut unclipped = 0;
    for (i, want) in x.iter().enumerate() {
        if alpha.value(i).abs() < ALPHA_CLIP {
            unclipped += 1;
            let got = back.value(i);
            assert!((got - want).abs() <= 1e-9 * want.abs(), "row {i}: {got} vs {want}");
        }
    }
    assert!(unclipped > 45_000, "only {unclipped} rows unclipped");
}

#[test]
fn one_hot_rows_sum_to_one_and_alpha_is_bounded() {
    let model = fitted(&amounts(10_000, 3));
    let encoded = model.transform(&batch(amounts(20_000, 4)), 5).expect("transform");
    let names = model.columns[0].one_hot_names();
    assert!(!names.is_empty());
    let cols: Vec<&UInt8Array> = names
        .iter()
        .map(|n| encoded.column_by_name(n).expect("one-hot").as_any().downcast_ref().expect("u8"))
        .collect();
    for i in 0..encoded.num_rows() {
        let sum: u32 = cols.iter().map(|c| u32::from(c.value(i))).sum();
        assert_eq!(sum, 1, "row {i}");
    }
    let alpha = floats(&encoded, "Amount.normalized");
    assert!(alpha.values().iter().all(|a| a.abs() <= ALPHA_CLIP));
    // Far outside every component: clipped, not beyond.
    let far = model.transform(&batch(vec![1e12, -1e12]), 5).expect("transform");
    let a = floats(&far, "Amount.normalized");
    assert_eq!((a.value(0), a.value(1)), (ALPHA_CLIP, -ALPHA_CLIP));
}

#[test]
fn same_seed_same_output_other_seed_other_draws() {
    let model = fitted(&amounts(10_000, 5));
    let input = batch(amounts(10_000, 6));
    let a = model.transform(&input, 42).expect("transform");
    let b = model.transform(&input, 42).expect("transform");
    assert_eq!(a, b);
    let c = model.transform(&input, 43).expect("transform");
    assert_ne!(a, c, "a different seed should change some component draws");
    assert_eq!(chunk_seed("m", "job", 3), chunk_seed("m", "job", 3));
    assert_ne!(chunk_seed("m", "job", 3), chunk_seed("m", "job", 4));
    assert_ne!(chunk_seed("m", "jo", 3), chunk_seed("m", "bjo", 3));
}

#[test]
fn nulls_stay_null() {
    let model = fitted(&amounts(5_000, 7));
    let input = RecordBatch::try_from_iter([(
        "Amount",
        Arc::new(Float64Array::from(vec![Some(10.0), None, Some(300.0)])) as ArrayRef,
    )])
    .expect("batch");
    let encoded = model.transform(&input, 1).expect("transform");
    assert!(floats(&encoded, "Amount.normalized").is_null(1));
    let decoded = model.inverse(&encoded).expect("inverse");
    let back = floats(&decoded, "Amount");
    assert!(back.is_null(1));
    assert!((back.value(0) - 10.0).abs() < 1e-9 * 10.0);
}

#[test]
fn wrong_input_is_a_clear_error() {
    let model = fitted(&amounts(2_000, 8));
    let other =
        RecordBatch::try_from_iter([("amount", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef)]).expect("batch");
    let err = model.transform(&other, 0).expect_err("missing column");
    assert_eq!(err.to_string(), "batch has no column `Amount` (columns: amount)");
    let lists =
        arrow_array::ListArray::from_iter_primitive::<arrow_array::types::Float64Type, _, _>([Some(vec![Some(1.0)])]);
    let lists = RecordBatch::try_from_iter([("Amount", Arc::new(lists) as ArrayRef)]).expect("batch");
    let err = model.transform(&lists, 0).expect_err("a list is not a number");
    assert!(matches!(err, ModelError::ColumnType { .. }), "{err}");
}

#[test]
fn json_round_trip_keeps_id_and_detects_edits() {
    let model = fitted(&amounts(3_000, 9));
    let text = model.to_json();
    let loaded = Model::from_json(&text).expect("load");
    assert_eq!(loaded, model);
    assert_eq!(loaded.model_id.len(), 16);

    let mut edited: serde_json::Value = serde_json::from_str(&text).expect("json");
    edited["dataset"] = "Other".into();
    assert!(matches!(Model::from_json(&edited.to_string()), Err(ModelError::IdMismatch { .. })));
    edited["format_version"] = 99.into();
    let err = Model::from_json(&edited.to_string()).expect_err("version");
    assert!(err.to_string().contains("reads versions"), "{err}");
}

#[test]
fn byte_and_float_one_hots_decode_alike() {
    // Bytes of any value (ties, all-zero rows, several hot slots) and a ragged length: the
    // byte path must pick what the float path picks.
    let model = fitted(&amounts(5_000, 3));
    let mix = model.columns[0].mixture().expect("continuous");
    let k = mix.valid_components().len();
    let n = 70_003;
    let alpha = Float64Array::from((0..n).map(|i| ((i % 199) as f64 - 99.0) / 100.0).collect::<Vec<_>>());
    let bytes: Vec<UInt8Array> =
        (0..k).map(|j| UInt8Array::from((0..n).map(|i| ((i * 7 + j * 13) % 5) as u8).collect::<Vec<_>>())).collect();
    let floats: Vec<Float64Array> =
        bytes.iter().map(|b| b.values().iter().map(|&v| Some(f64::from(v))).collect()).collect();
    let from_bytes = denormalize(mix, &alpha, &bytes.iter().map(OneHot::U8).collect::<Vec<_>>());
    let from_floats = denormalize(mix, &alpha, &floats.iter().map(OneHot::F64).collect::<Vec<_>>());
    assert_eq!(from_bytes, from_floats);
}

#[test]
fn outliers_draw_the_broadest_component() {
    // Far from every component the broadest one holds all the posterior: rows that
    // underflow the one-pass shift are redone with their own maximum, mixed with rows that
    // do not in the same block.
    let model = fitted(&amounts(10_000, 3));
    let column = &model.columns[0];
    let mix = column.mixture().expect("continuous");
    let broadest = (0..column.one_hot.len())
        .max_by(|&a, &b| mix.covariances[column.one_hot[a]].total_cmp(&mix.covariances[column.one_hot[b]]))
        .expect("a component");
    let values: Vec<f64> = (0..600).map(|i| if i % 3 == 0 { 1e9 * (1.0 + f64::from(i)) } else { 40.0 }).collect();
    let encoded = model.transform(&batch(values), 9).expect("transform");
    let hot: &UInt8Array = encoded
        .column_by_name(&column.one_hot_names()[broadest])
        .expect("one-hot")
        .as_any()
        .downcast_ref()
        .expect("u8");
    assert!((0..600).step_by(3).all(|i| hot.value(i) == 1));
}
