//! Columns of every Arrow type a table carries, through fit, transform and inverse: the
//! inverse gives back the input schema, categorical, modal and null values exactly,
//! numbers where alpha is not clipped (integers, dates and timestamps after rounding).

use std::sync::Arc;

use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray, TimestampMillisecondArray,
    TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array, cast::AsArray,
};
use arrow_schema::{DataType, TimeUnit};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use shardflow_model::{
    ALPHA_CLIP, ColumnKind, ColumnModel, ColumnSpec, InferenceParams, MixtureParams, Model, ValidMixtureParams,
    fit_column,
};

fn params() -> ValidMixtureParams {
    MixtureParams { seed: 5, ..MixtureParams::default() }.check().expect("valid")
}

/// Row `i` of column `c` is null every 17 rows, at an offset of its own.
fn null_at(c: usize, i: usize) -> bool {
    (i + 3 * c).is_multiple_of(17)
}

/// A table of every type, `n` rows, with nulls in each column.
fn table(n: usize, seed: u64) -> RecordBatch {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let spread = LogNormal::new(4.0, 1.0).expect("lognormal");
    let mut draws: Vec<(f64, u64)> = (0..n).map(|_| (spread.sample(&mut rng), rng.random::<u64>())).collect();
    draws.iter_mut().for_each(|d| d.1 %= 1_000_000_007);
    let col = |c: usize, f: &dyn Fn(f64, u64, usize) -> i64| -> Vec<Option<i64>> {
        draws.iter().enumerate().map(|(i, &(x, u))| (!null_at(c, i)).then(|| f(x, u, i))).collect()
    };
    let ints = |c, lo: i64, span: u64| col(c, &|_, u, _| lo + (u % span) as i64);
    let words = ["oslo", "lima", "paris", "quito"];
    let word = |c: usize| -> Vec<Option<&str>> {
        (0..n).map(|i| (!null_at(c, i)).then(|| words[(draws[i].1 % 4) as usize])).collect()
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "f64",
            Arc::new(
                col(0, &|x, _, _| x.to_bits() as i64)
                    .iter()
                    .map(|v| v.map(|b| f64::from_bits(b as u64)))
                    .collect::<Float64Array>(),
            ),
        ),
        (
            "f32",
            Arc::new(
                col(1, &|x, _, _| (x as f32).to_bits().into())
                    .iter()
                    .map(|v| v.map(|b| f32::from_bits(b as u32)))
                    .collect::<Float32Array>(),
            ),
        ),
        ("i8", Arc::new(ints(2, -3, 7).iter().map(|v| v.map(|v| v as i8)).collect::<Int8Array>())),
        ("i16", Arc::new(ints(3, -20_000, 40_000).iter().map(|v| v.map(|v| v as i16)).collect::<Int16Array>())),
        (
            "i32",
            Arc::new(
                col(4, &|x, _, _| (x * 1_000.0) as i64 - 50_000)
                    .iter()
                    .map(|v| v.map(|v| v as i32))
                    .collect::<Int32Array>(),
            ),
        ),
        ("i64", Arc::new(col(5, &|x, _, _| (x * 1e9) as i64).into_iter().collect::<Int64Array>())),
        ("u8", Arc::new(ints(6, 0, 256).iter().map(|v| v.map(|v| v as u8)).collect::<UInt8Array>())),
        ("u16", Arc::new(ints(7, 0, 65_536).iter().map(|v| v.map(|v| v as u16)).collect::<UInt16Array>())),
        // A third of the rows exactly 0: a mixed column.
        (
            "u32",
            Arc::new(
                col(8, &|x, _, i| if i % 3 == 0 { 0 } else { (x * 100.0) as i64 })
                    .iter()
                    .map(|v| v.map(|v| v as u32))
                    .collect::<UInt32Array>(),
            ),
        ),
        (
            "u64",
            Arc::new(ints(9, 0, 1_000_000_007).iter().map(|v| v.map(|v| v as u64 * 1_000)).collect::<UInt64Array>()),
        ),
        ("utf8", Arc::new(StringArray::from(word(10)))),
        ("large_utf8", Arc::new(LargeStringArray::from(word(11)))),
        (
            "boolean",
            Arc::new(col(12, &|_, u, _| (u % 2) as i64).iter().map(|v| v.map(|v| v == 1)).collect::<BooleanArray>()),
        ),
        ("date32", Arc::new(ints(13, 18_000, 2_000).iter().map(|v| v.map(|v| v as i32)).collect::<Date32Array>())),
        (
            "ts_ms_utc",
            Arc::new(
                ints(14, 1_700_000_000_000, 10_000_000_000)
                    .into_iter()
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC"),
            ),
        ),
        (
            "ts_ns",
            Arc::new(
                col(15, &|x, u, _| 1_700_000_000_000_000_000 + (x * 1e12) as i64 + (u % 1000) as i64)
                    .into_iter()
                    .collect::<TimestampNanosecondArray>(),
            ),
        ),
        ("dictionary", Arc::new(word(16).into_iter().collect::<DictionaryArray<Int32Type>>())),
    ];
    RecordBatch::try_from_iter(columns).expect("batch")
}

/// Integers, dates and timestamps as Int64 (exact), floats as Float64.
fn as_i64(a: &dyn Array) -> Int64Array {
    arrow_cast::cast(a, &DataType::Int64).expect("to int64").as_primitive::<Int64Type>().clone()
}

fn as_f64(a: &dyn Array) -> Float64Array {
    arrow_cast::cast(a, &DataType::Float64).expect("to float64").as_primitive::<Float64Type>().clone()
}

#[test]
fn every_type_round_trips_in_its_own_type() {
    let sample = table(20_000, 1);
    let columns: Vec<ColumnModel> = sample
        .schema()
        .fields()
        .iter()
        .zip(sample.columns())
        .map(|(f, a)| {
            fit_column(f.name(), a.as_ref(), &ColumnSpec::default(), &InferenceParams::default(), &params())
                .unwrap_or_else(|e| panic!("fit {}: {e}", f.name()))
        })
        .collect();
    let kinds: Vec<ColumnKind> = columns.iter().map(|c| c.kind).collect();
    use ColumnKind::{Categorical as Cat, Continuous as Con, Mixed as Mix};
    assert_eq!(kinds, [Con, Con, Cat, Con, Con, Con, Con, Con, Mix, Con, Cat, Cat, Cat, Con, Con, Con, Cat]);
    assert_eq!(columns[0].data_type, None, "Float64 is not recorded: Amount models keep their ids");
    let model = Model::new("types", columns);
    assert_eq!(model.input_schema().fields(), sample.schema().fields());
    let model = Model::from_json(&model.to_json()).expect("reload");

    let input = table(6_000, 2);
    let (encoded, report) = model.transform_with_report(&input, 3).expect("transform");
    assert!(report.invalid.is_empty() && report.unseen.is_empty(), "{report:?}");
    let decoded = model.inverse(&encoded).expect("inverse");
    assert_eq!(decoded.schema(), model.input_schema());

    for (c, column) in model.columns.iter().enumerate() {
        let (want, got) = (input.column(c).as_ref(), decoded.column(c).as_ref());
        let name = &column.name;
        for i in 0..input.num_rows() {
            assert_eq!(got.is_null(i), null_at(c, i), "{name} row {i}: nulls come back null");
        }
        if column.kind == ColumnKind::Categorical {
            assert_eq!(got, want, "{name}: categories come back exactly");
            continue;
        }
        let alpha = encoded.column_by_name(&column.alpha_name()).expect("alpha").as_primitive::<Float64Type>();
        let floating = matches!(want.data_type(), DataType::Float32 | DataType::Float64);
        let (want_i, got_i) = if floating { (None, None) } else { (Some(as_i64(want)), Some(as_i64(got))) };
        let (want_f, got_f) = match (&want_i, &got_i) {
            (Some(w), Some(g)) => (as_f64(w), as_f64(g)),
            _ => (as_f64(want), as_f64(got)),
        };
        let mut checked = 0;
        for i in (0..input.num_rows()).filter(|&i| !null_at(c, i) && alpha.value(i).abs() < ALPHA_CLIP) {
            checked += 1;
            match (&want_i, &got_i) {
                // Nanosecond counts of today are beyond 2^53: exact to the f64 spacing (256 ns).
                (Some(w), Some(g)) if name == "ts_ns" => {
                    assert!((w.value(i) - g.value(i)).abs() <= 512, "{name} row {i}: {} vs {}", g.value(i), w.value(i))
                }
                (Some(w), Some(g)) => assert_eq!(g.value(i), w.value(i), "{name} row {i}"),
                _ => {
                    let (w, g) = (want_f.value(i), got_f.value(i));
                    assert!((w - g).abs() <= 1e-9 * w.abs(), "{name} row {i}: {g} vs {w}");
                }
            }
        }
        assert!(checked > 5_000, "{name}: only {checked} rows unclipped");
    }
    // The timestamps keep their unit and zone.
    assert_eq!(decoded.schema().field(14).data_type(), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
}

#[test]
fn text_in_a_number_column_is_counted_and_encoded_as_null() {
    let sample: Float64Array = (0..2_000).map(|i| Some(f64::from(i % 97) * 1.5 + 3.0)).collect();
    let with_nulls: Float64Array = (0..2_000).map(|i| (i % 10 != 0).then(|| f64::from(i % 89) * 2.0)).collect();
    let fit = |name: &str, a: &dyn Array| {
        fit_column(name, a, &ColumnSpec::default(), &InferenceParams::default(), &params()).expect("fit")
    };
    let model = Model::new("t", vec![fit("x", &sample), fit("y", &with_nulls)]);
    assert_eq!(model.columns[1].modes, vec![None], "y has a null slot");
    let text = || Arc::new(StringArray::from(vec![Some("12.5"), Some("abc"), None])) as ArrayRef;
    let input = RecordBatch::try_from_iter([("x", text()), ("y", text())]).expect("batch");
    let (encoded, report) = model.transform_with_report(&input, 1).expect("text values never fail");
    assert_eq!(report.invalid, vec![("x".to_string(), 1), ("y".to_string(), 1)]);
    let decoded = model.inverse(&encoded).expect("inverse");
    for c in 0..2 {
        let back = decoded.column(c).as_primitive::<Float64Type>();
        assert!((back.value(0) - 12.5).abs() < 1e-9 * 12.5, "{}", back.value(0));
        assert!(back.is_null(1) && back.is_null(2));
    }
    // x has no null slot: the row is null throughout; y's null slot takes it.
    assert!(encoded.column_by_name("x.normalized").expect("alpha").is_null(1));
    assert_eq!(
        encoded.column_by_name("y.null").expect("slot").as_primitive::<arrow_array::types::UInt8Type>().value(1),
        1
    );
    let large = RecordBatch::try_from_iter([
        ("x", Arc::new(LargeStringArray::from(vec!["1", "two"])) as ArrayRef),
        ("y", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
    ])
    .expect("batch");
    let (_, report) = model.transform_with_report(&large, 1).expect("large text and integers are read");
    assert_eq!(report.invalid, vec![("x".to_string(), 1)]);
}
