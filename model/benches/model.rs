//! `cargo bench -p shardflow-model`: fit, the fit over every row, transform and inverse,
//! in elements per second.

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardflow_model::{ColumnModel, Histogram, MixtureParams, Model, fit, fit_histogram};

mod data;
use data::amounts;

const CHUNK_ROWS: usize = 65_536;

fn benches(c: &mut Criterion) {
    let params = MixtureParams::default().check().expect("valid");
    let mut group = c.benchmark_group("fit");
    group.sample_size(10);
    for n in [100_000usize, 1_000_000] {
        let x = amounts(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n}_values"), |b| b.iter(|| fit(black_box(&x), &params).expect("fit")));
    }
    group.finish();

    // The fit over every row, in rows per second: the histogram pass (one thread; the fit
    // job runs one per shard reader), and the fit on the grid, whose cost depends on the
    // bins, not the rows.
    let n = 10_000_000;
    let x = amounts(n);
    let histogram = Histogram::of(&x);
    let mut group = c.benchmark_group("every_row");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("histogram_10M", |b| b.iter(|| Histogram::of(black_box(&x))));
    group.bench_function("fit_grid_of_10M", |b| b.iter(|| fit_histogram(black_box(&histogram), &params).expect("fit")));
    group.finish();
    drop(x);

    let model =
        Model::new("Amount", vec![ColumnModel::continuous("Amount", fit(&amounts(100_000), &params).expect("fit"))]);
    let n = 10_000_000;
    let batch =
        RecordBatch::try_from_iter([("Amount", Arc::new(Float64Array::from(amounts(n))) as ArrayRef)]).expect("batch");
    let encoded = model.transform(&batch, 7).expect("transform");
    let mut group = c.benchmark_group("rows");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("transform_10M", |b| b.iter(|| model.transform(black_box(&batch), 7).expect("transform")));
    group.bench_function("inverse_10M", |b| b.iter(|| model.inverse(black_box(&encoded)).expect("inverse")));
    // The same 10M rows the way the pipeline hands them over: one chunk (65,536 rows, the
    // default publish.chunk_rows) at a time, so the outputs' memory is reused from chunk
    // to chunk instead of being fresh pages from the kernel.
    let chunks = |rows: usize| (0..rows).step_by(CHUNK_ROWS).map(move |o| (o, CHUNK_ROWS.min(rows - o)));
    group.bench_function("transform_10M_in_chunks", |b| {
        b.iter(|| {
            for (offset, len) in chunks(n) {
                black_box(model.transform(&batch.slice(offset, len), 7).expect("transform"));
            }
        });
    });
    group.bench_function("inverse_10M_in_chunks", |b| {
        b.iter(|| {
            for (offset, len) in chunks(n) {
                black_box(model.inverse(&encoded.slice(offset, len)).expect("inverse"));
            }
        });
    });
    group.finish();
}

criterion_group!(model_benches, benches);
criterion_main!(model_benches);
