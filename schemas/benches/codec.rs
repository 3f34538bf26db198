//! `cargo bench -p shardflow-schemas`: a chunk's encode and decode, in rows per second,
//! for the version-1 Amount datum and today's Avro OCF, and the OCF of a 10-column chunk.

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardflow_schemas::{ChunkCodec, ocf};

const CHUNK_ROWS: usize = 65_536;

/// A pseudo-random value in [0, 1) for row `i` of stream `s` (SplitMix64).
fn u(s: u64, i: usize) -> f64 {
    let mut z = (i as u64).wrapping_add(s << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

fn amount_chunk() -> RecordBatch {
    let values: Float64Array = (0..CHUNK_ROWS).map(|i| (i % 50 != 0).then(|| (u(0, i) * 8.0).exp())).collect();
    RecordBatch::try_from_iter([("Amount", Arc::new(values) as ArrayRef)]).expect("batch")
}

fn table_chunk() -> RecordBatch {
    let f = |s: u64, scale: f64| {
        Arc::new((0..CHUNK_ROWS).map(|i| (i % 50 != 0).then(|| u(s, i) * scale)).collect::<Float64Array>()) as ArrayRef
    };
    let words = ["food", "toys", "books", "tools", "garden", "music", "games", "sport", "home", "auto"];
    let text = |s: u64| {
        Arc::new((0..CHUNK_ROWS).map(|i| Some(words[(u(s, i) * 10.0) as usize])).collect::<StringArray>()) as ArrayRef
    };
    RecordBatch::try_from_iter([
        ("price", f(1, 200.0)),
        (
            "quantity",
            Arc::new((0..CHUNK_ROWS).map(|i| Some((u(2, i) * 500.0) as i32)).collect::<Int32Array>()) as ArrayRef,
        ),
        ("amount", f(3, 1e4)),
        ("discount", f(4, 0.5)),
        ("store", text(5)),
        ("category", text(6)),
        ("returned", Arc::new((0..CHUNK_ROWS).map(|i| Some(u(7, i) < 0.1)).collect::<BooleanArray>()) as ArrayRef),
        (
            "day",
            Arc::new((0..CHUNK_ROWS).map(|i| Some(17_000 + (u(8, i) * 3650.0) as i32)).collect::<Date32Array>())
                as ArrayRef,
        ),
        ("score", f(9, 1.0)),
        (
            "rating",
            Arc::new((0..CHUNK_ROWS).map(|i| Some(1 + (u(10, i) * 5.0) as i32)).collect::<Int32Array>()) as ArrayRef,
        ),
    ])
    .expect("batch")
}

fn benches(c: &mut Criterion) {
    let amount = amount_chunk();
    let table = table_chunk();
    let v1 = ChunkCodec::amount().expect("v1 codec");
    let (v1_bytes, ocf_bytes, table_bytes) =
        (v1.encode(&amount).expect("v1"), ocf::encode(&amount).expect("ocf"), ocf::encode(&table).expect("ocf"));
    println!(
        "payload bytes for {CHUNK_ROWS} rows: Amount v1 {}, Amount OCF {}, 10-column OCF {}",
        v1_bytes.len(),
        ocf_bytes.len(),
        table_bytes.len()
    );
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Elements(CHUNK_ROWS as u64));
    group.bench_function("amount_v1_encode", |b| b.iter(|| v1.encode(black_box(&amount)).expect("encode")));
    group.bench_function("amount_v1_decode", |b| b.iter(|| v1.decode(black_box(&v1_bytes)).expect("decode")));
    group.bench_function("amount_ocf_encode", |b| b.iter(|| ocf::encode(black_box(&amount)).expect("encode")));
    group.bench_function("amount_ocf_decode", |b| b.iter(|| ocf::decode(black_box(&ocf_bytes)).expect("decode")));
    group.bench_function("table10_ocf_encode", |b| b.iter(|| ocf::encode(black_box(&table)).expect("encode")));
    group.bench_function("table10_ocf_decode", |b| b.iter(|| ocf::decode(black_box(&table_bytes)).expect("decode")));
    group.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
