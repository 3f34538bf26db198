//! Column kinds end to end through the public API: categorical, mixed, continuous with
//! nulls, inference, the model file, and format-1 files.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt8Array};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_model::{
    ALPHA_CLIP, ColumnKind, ColumnModel, ColumnSpec, InferenceParams, KindSource, MixtureParams, Model, ModelError,
    ValidMixtureParams, fit_column, infer_kind, normalize,
};

fn params() -> ValidMixtureParams {
    MixtureParams { seed: 3, ..MixtureParams::default() }.check().expect("valid")
}

fn fit_inferred(name: &str, sample: &dyn Array) -> ColumnModel {
    fit_column(name, sample, &ColumnSpec::default(), &InferenceParams::default(), &params()).expect("fit")
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).expect("batch")
}

fn u8s<'a>(b: &'a RecordBatch, name: &str) -> &'a UInt8Array {
    b.column_by_name(name).unwrap_or_else(|| panic!("no {name}")).as_any().downcast_ref().expect("u8")
}

fn f64s<'a>(b: &'a RecordBatch, name: &str) -> &'a Float64Array {
    b.column_by_name(name).unwrap_or_else(|| panic!("no {name}")).as_any().downcast_ref().expect("f64")
}

/// Balances: `zeros` of the rows exactly 0, `nulls` of them null, the rest lognormal.
fn balances(n: usize, zeros: f64, nulls: f64, seed: u64) -> Float64Array {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let spread = LogNormal::new(5.0, 1.0).expect("lognormal");
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            if u < zeros {
                Some(0.0)
            } else if u < zeros + nulls {
                None
            } else {
                Some(spread.sample(&mut rng))
            }
        })
        .collect()
}

#[test]
fn categorical_round_trip_keeps_values_and_nulls_in_first_seen_order() {
    let sample = StringArray::from(vec![Some("paris"), Some("oslo"), None, Some("paris"), Some("lima")]);
    let column = fit_inferred("city", &sample);
    assert_eq!(column.kind, ColumnKind::Categorical);
    assert_eq!(column.kind_source, Some(KindSource::Inferred));
    assert_eq!(column.categories, vec![Some("paris".into()), Some("oslo".into()), None, Some("lima".into())]);
    let model = Model::new("cities", vec![column]);

    let input = StringArray::from(vec![Some("lima"), None, Some("paris"), Some("oslo"), None]);
    let encoded = model.transform(&batch(vec![("city", Arc::new(input.clone()))]), 1).expect("transform");
    let names: Vec<String> = encoded.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["city.category_0", "city.category_1", "city.category_2", "city.category_3"]);
    assert_eq!(u8s(&encoded, "city.category_3").values().to_vec(), vec![1, 0, 0, 0, 0]);
    assert_eq!(u8s(&encoded, "city.category_2").values().to_vec(), vec![0, 1, 0, 0, 1]);
    assert_eq!(u8s(&encoded, "city.category_0").values().to_vec(), vec![0, 0, 1, 0, 0]);

    let decoded = model.inverse(&encoded).expect("inverse");
    let back: &StringArray = decoded.column(0).as_any().downcast_ref().expect("utf8");
    assert_eq!(back, &input);
}

#[test]
fn categorical_integers_and_booleans_come_back_in_their_own_type() {
    let rooms = Int64Array::from(vec![Some(2), Some(3), None, Some(2), Some(5)]);
    let spec = ColumnSpec { kind: Some(ColumnKind::Categorical), ..ColumnSpec::default() };
    let column = fit_column("rooms", &rooms, &spec, &InferenceParams::default(), &params()).expect("fit");
    assert_eq!(column.kind_source, Some(KindSource::Config));
    let flags = BooleanArray::from(vec![Some(true), None, Some(false)]);
    let model = Model::new("homes", vec![column, fit_inferred("garden", &flags)]);
    let input = batch(vec![
        ("rooms", Arc::new(rooms.clone())),
        ("garden", Arc::new(BooleanArray::from(vec![Some(false), Some(true), None, None, Some(true)]))),
    ]);
    let decoded = model.inverse(&model.transform(&input, 0).expect("transform")).expect("inverse");
    assert_eq!(decoded.column(0).as_any().downcast_ref::<Int64Array>().expect("int64"), &rooms);
    assert_eq!(decoded.column(1).as_ref(), input.column(1).as_ref());
}

#[test]
fn unseen_categories_are_counted_encoded_as_zeros_and_decoded_as_null() {
    let model = Model::new("cities", vec![fit_inferred("city", &StringArray::from(vec!["paris", "oslo"]))]);
    let input = batch(vec![(
        "city",
        Arc::new(StringArray::from(vec![Some("oslo"), Some("tokyo"), None, Some("tokyo")])) as ArrayRef,
    )]);
    let (encoded, report) = model.transform_with_report(&input, 0).expect("unseen values never fail");
    // A null was not seen at fit either: it is unseen too.
    assert_eq!(report.unseen, vec![("city".to_string(), 3)]);
    assert_eq!(u8s(&encoded, "city.category_0").values().to_vec(), vec![0, 0, 0, 0]);
    assert_eq!(u8s(&encoded, "city.category_1").values().to_vec(), vec![1, 0, 0, 0]);
    let decoded = model.inverse(&encoded).expect("inverse");
    let back: &StringArray = decoded.column(0).as_any().downcast_ref().expect("utf8");
    assert_eq!(back, &StringArray::from(vec![Some("oslo"), None, None, None]));
}

#[test]
fn mixed_column_round_trips_modal_values_exactly() {
    let sample = balances(20_000, 0.4, 0.1, 1);
    let column = fit_inferred("balance", &sample);
    assert_eq!(column.kind, ColumnKind::Mixed);
    assert_eq!(column.modes, vec![Some(0.0), None]);
    let model = Model::new("accounts", vec![column]);

    let input = balances(10_000, 0.4, 0.1, 2);
    let encoded = model.transform(&batch(vec![("balance", Arc::new(input.clone()))]), 7).expect("transform");
    let names: Vec<String> = encoded.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(&names[..3], ["balance.normalized", "balance.mode_0", "balance.null"]);
    assert!(names[3..].iter().all(|n| n.starts_with("balance.component_")), "{names:?}");
    let alpha = f64s(&encoded, "balance.normalized");
    let zero_slot = u8s(&encoded, "balance.mode_0");
    let null_slot = u8s(&encoded, "balance.null");

    let decoded = model.inverse(&encoded).expect("inverse");
    let back = f64s(&decoded, "balance");
    let (mut zeros, mut nulls, mut exact) = (0, 0, 0);
    for i in 0..input.len() {
        if input.is_null(i) {
            nulls += 1;
            assert_eq!((null_slot.value(i), zero_slot.value(i), alpha.value(i)), (1, 0, 0.0), "row {i}");
            assert!(back.is_null(i), "row {i}: a null comes back null");
        } else if input.value(i) == 0.0 {
            zeros += 1;
            assert_eq!((zero_slot.value(i), null_slot.value(i), alpha.value(i)), (1, 0, 0.0), "row {i}");
            assert_eq!(back.value(i).to_bits(), 0.0_f64.to_bits(), "row {i}: zero comes back exactly");
        } else {
            assert_eq!((zero_slot.value(i), null_slot.value(i)), (0, 0), "row {i}");
            if alpha.value(i).abs() < ALPHA_CLIP {
                exact += 1;
                let want = input.value(i);
                assert!((back.value(i) - want).abs() <= 1e-9 * want.abs(), "row {i}: {} vs {want}", back.value(i));
            }
        }
    }
    assert!(zeros > 3_500 && nulls > 800 && exact > 4_000, "zeros {zeros}, nulls {nulls}, exact {exact}");
}

#[test]
fn continuous_column_with_nulls_gets_a_null_slot() {
    let sample = balances(5_000, 0.0, 0.05, 3);
    let column = fit_inferred("amount", &sample);
    assert_eq!(column.kind, ColumnKind::Continuous);
    assert_eq!(column.modes, vec![None]);
    let model = Model::new("a", vec![column]);
    let input = Float64Array::from(vec![Some(150.0), None, Some(90.0)]);
    let encoded = model.transform(&batch(vec![("amount", Arc::new(input.clone()))]), 1).expect("transform");
    assert_eq!(u8s(&encoded, "amount.null").values().to_vec(), vec![0, 1, 0]);
    assert_eq!(f64s(&encoded, "amount.normalized").null_count(), 0, "null rows are encoded, not passed through");
    let back = model.inverse(&encoded).expect("inverse");
    let back = f64s(&back, "amount");
    assert!(back.is_null(1));
    assert!((back.value(0) - 150.0).abs() < 1e-9 * 150.0 && (back.value(2) - 90.0).abs() < 1e-9 * 90.0);
}

#[test]
fn inference_picks_the_kinds_and_config_overrides_them() {
    let n = 5_000;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let spread = LogNormal::new(3.0, 0.7).expect("lognormal");
    let amount: Float64Array = (0..n).map(|_| Some(spread.sample(&mut rng))).collect();
    let rooms: Int64Array = (0..n).map(|i| Some(1 + (i % 4) as i64)).collect();
    let ages: Int64Array = (0..n).map(|i| Some(18 + (i * 7919 % 60) as i64)).collect();
    let city = StringArray::from((0..n).map(|i| ["a", "b", "c"][i % 3]).collect::<Vec<_>>());
    let balance = balances(n, 0.3, 0.0, 4);
    let inference = InferenceParams::default();
    let kind = |a: &dyn Array| infer_kind("c", a, &inference).expect("infer");
    assert_eq!(kind(&amount).kind, ColumnKind::Continuous);
    assert_eq!(kind(&rooms).kind, ColumnKind::Categorical);
    assert_eq!(kind(&ages).kind, ColumnKind::Continuous, "60 distinct integers are a number");
    assert_eq!(kind(&city).kind, ColumnKind::Categorical);
    let mixed = kind(&balance);
    assert_eq!((mixed.kind, mixed.modes), (ColumnKind::Mixed, vec![0.0]));

    // The configuration wins, and the model file says so.
    let given = ColumnSpec { kind: Some(ColumnKind::Continuous), ..ColumnSpec::default() };
    let rooms_as_number = fit_column("rooms", &rooms, &given, &inference, &params()).expect("fit");
    let modes = ColumnSpec { modes: Some(vec![0.0, 1.0]), ..ColumnSpec::default() };
    let balance_modes = fit_column("balance", &balance, &modes, &inference, &params()).expect("fit");
    assert_eq!(balance_modes.modes, vec![Some(0.0), Some(1.0)]);
    let model = Model::new(
        "table",
        vec![rooms_as_number, balance_modes, fit_inferred("city", &city), fit_inferred("amount", &amount)],
    );
    let json: serde_json::Value = serde_json::from_str(&model.to_json()).expect("json");
    assert_eq!(json["format_version"], 2);
    let recorded: Vec<(String, String, String)> = json["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| (c["name"].to_string(), c["kind"].to_string(), c["kind_source"].to_string()))
        .collect();
    let q = |s: &str| format!("\"{s}\"");
    assert_eq!(
        recorded,
        vec![
            (q("rooms"), q("continuous"), q("config")),
            (q("balance"), q("mixed"), q("config")),
            (q("city"), q("categorical"), q("inferred")),
            (q("amount"), q("continuous"), q("inferred")),
        ]
    );
    assert_eq!(json["columns"][2]["categories"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(json["columns"][2]["data_type"], "Utf8");
    assert_eq!(Model::from_json(&model.to_json()).expect("load"), model);
}

#[test]
fn format_1_files_load_with_their_id_and_encode_as_before() {
    let text = include_str!("../fixtures/model_v1.json");
    let model = Model::from_json(text).expect("a format-1 file loads");
    assert_eq!((model.format_version, model.model_id.as_str()), (1, "05cc22a0066dbfb4"));
    let column = &model.columns[0];
    assert_eq!((column.kind, column.kind_source, column.modes.len()), (ColumnKind::Continuous, None, 0));
    // Written back, it is the same file: same id, so chunks keep their seeds and bytes.
    assert_eq!(Model::from_json(&model.to_json()).expect("reload"), model);

    let values: Float64Array = (0..2_000).map(|i| Some(f64::from(i) * 1.7)).collect();
    let encoded = model.transform(&batch(vec![("Amount", Arc::new(values.clone()))]), 11).expect("transform");
    let direct = normalize(column.mixture().expect("mixture"), &values, 11);
    let names: Vec<String> = encoded.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut want = vec!["Amount.normalized".to_string()];
    want.extend(column.one_hot_names());
    assert_eq!(names, want);
    assert_eq!(f64s(&encoded, "Amount.normalized"), &direct.alpha);
    for (name, slot) in column.one_hot_names().iter().zip(&direct.one_hot) {
        assert_eq!(u8s(&encoded, name), slot);
    }
}

#[test]
fn bad_files_and_columns_are_clear_errors() {
    let mut json: serde_json::Value = serde_json::from_str(include_str!("../fixtures/model_v1.json")).expect("json");
    json["format_version"] = 3.into();
    let err = Model::from_json(&json.to_string()).expect_err("too new");
    assert!(err.to_string().contains("this build reads versions 1 to 2"), "{err}");

    let too_many: StringArray = (0..50).map(|i| Some(format!("v{i}"))).collect();
    let small = InferenceParams { max_categories: 20, ..InferenceParams::default() };
    let err = fit_column("id", &too_many, &ColumnSpec::default(), &small, &params()).expect_err("too many");
    assert!(matches!(err, ModelError::TooManyCategories { max: 20, .. }), "{err}");

    let nothing = Float64Array::from(vec![None, None, Some(f64::NAN)]);
    let numeric = ColumnSpec { kind: Some(ColumnKind::Continuous), ..ColumnSpec::default() };
    let err = fit_column("x", &nothing, &numeric, &InferenceParams::default(), &params()).expect_err("no values");
    assert_eq!(err.to_string(), "column `x` has no finite value to fit on");

    let spread: Float64Array = (0..100).map(|i| Some(f64::from(i))).collect();
    let mixed = ColumnSpec { kind: Some(ColumnKind::Mixed), ..ColumnSpec::default() };
    let err = fit_column("s", &spread, &mixed, &InferenceParams::default(), &params()).expect_err("no modes");
    assert!(matches!(err, ModelError::NoModes(ref c) if c == "s"), "{err}");
    let zeros: Float64Array = (0..100).map(|i| Some(if i % 3 == 0 { 0.0 } else { f64::from(i) })).collect();
    let given = fit_column("z", &zeros, &mixed, &InferenceParams::default(), &params()).expect("modes inferred");
    assert_eq!(
        (given.kind, given.kind_source, given.modes.clone()),
        (ColumnKind::Mixed, Some(KindSource::Config), vec![Some(0.0)])
    );

    let text = StringArray::from(vec!["a"]);
    let err = fit_column("t", &text, &numeric, &InferenceParams::default(), &params()).expect_err("text");
    assert!(matches!(err, ModelError::ColumnType { .. }), "{err}");
}

#[test]
fn amount_models_of_format_2_keep_their_id() {
    // Written by the build before columns recorded their input type: a Float64 column
    // records none, so the file reads, writes back byte for byte and keeps its id.
    let text = include_str!("../fixtures/model_v2_amount.json");
    let model = Model::from_json(text).expect("a format-2 Amount model loads");
    assert_eq!((model.format_version, model.model_id.as_str()), (2, "0baacbb73243181b"));
    assert_eq!(model.to_json().trim_end(), text.trim_end());
    assert_eq!(model.input_schema().field(0).data_type(), &arrow_schema::DataType::Float64);
    // Refitted from a Float64 column, a model records no data_type either.
    let amounts: Float64Array = (0..3_000).map(|i| Some(f64::from(i % 101) * 3.5 + 1.0)).collect();
    let column = fit_inferred("Amount", &amounts);
    assert_eq!(column.data_type, None);
    assert!(!Model::new("Amount", vec![column]).to_json().contains("data_type"));
}
