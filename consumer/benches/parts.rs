//! `cargo bench -p shardflow-consumer --bench parts`: one chunk's two Parquet parts (the
//! `Amount` transform's alpha and flags, and the inverse's values), 65,536 rows (the
//! default `publish.chunk_rows`), written under each candidate writer setting, in rows
//! per second; then the whole of `chunk::process` (decode, transform, inverse, both parts
//! written and synced) with the settings the consumer uses. Each setting's part bytes are
//! printed once, for `docs/benchmarks.md`.

use std::hint::black_box;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use shardflow_consumer::chunk::{Chunk, Format, process};
use shardflow_model::{ColumnModel, MixtureParams, Model, fit};
use shardflow_schemas::{ChunkCodec, ocf};
use shardflow_storage::objects::Root;
use shardflow_storage::parts::{part_properties, write_parquet};

const CHUNK_ROWS: usize = 65_536;

/// `builder` with `float` applied to every floating-point column of `schema`, `other` to
/// every other column.
fn per_column(
    schema: &Schema,
    builder: WriterPropertiesBuilder,
    float: impl Fn(WriterPropertiesBuilder, ColumnPath) -> WriterPropertiesBuilder,
    other: impl Fn(WriterPropertiesBuilder, ColumnPath) -> WriterPropertiesBuilder,
) -> WriterProperties {
    schema
        .fields()
        .iter()
        .fold(builder, |b, f| {
            let path = ColumnPath::from(f.name().as_str());
            if matches!(f.data_type(), DataType::Float64) { float(b, path) } else { other(b, path) }
        })
        .build()
}

/// The candidate settings, by name, for a part of `schema`.
fn candidates(schema: &Schema) -> Vec<(&'static str, WriterProperties)> {
    let snappy = || WriterProperties::builder().set_compression(Compression::SNAPPY);
    let plain = |b: WriterPropertiesBuilder, c: ColumnPath| b.set_column_dictionary_enabled(c, false);
    let raw = |b: WriterPropertiesBuilder, c: ColumnPath| {
        b.set_column_dictionary_enabled(c.clone(), false).set_column_compression(c, Compression::UNCOMPRESSED)
    };
    let split = |b: WriterPropertiesBuilder, c: ColumnPath| {
        b.set_column_dictionary_enabled(c.clone(), false).set_column_encoding(c, Encoding::BYTE_STREAM_SPLIT)
    };
    let delta = |b: WriterPropertiesBuilder, c: ColumnPath| {
        b.set_column_dictionary_enabled(c.clone(), false).set_column_encoding(c, Encoding::DELTA_BINARY_PACKED)
    };
    let keep = |b: WriterPropertiesBuilder, _: ColumnPath| b;
    vec![
        ("before_snappy_dictionary_everywhere", snappy().build()),
        ("snappy_floats_plain_flags_dictionary", per_column(schema, snappy(), plain, keep)),
        ("floats_raw_flags_dictionary_snappy", per_column(schema, snappy(), raw, keep)),
        ("floats_split_snappy_flags_dictionary_snappy", per_column(schema, snappy(), split, keep)),
        ("now_part_properties", part_properties(schema)),
        ("floats_raw_flags_delta_snappy", per_column(schema, snappy(), raw, delta)),
        ("floats_raw_flags_delta_raw", per_column(schema, WriterProperties::builder(), raw, delta)),
        (
            "floats_raw_flags_delta_raw_chunk_statistics",
            per_column(
                schema,
                WriterProperties::builder().set_statistics_enabled(EnabledStatistics::Chunk),
                raw,
                delta,
            ),
        ),
        ("uncompressed_no_dictionary", WriterProperties::builder().set_dictionary_enabled(false).build()),
    ]
}

fn benches(c: &mut Criterion) {
    let params = MixtureParams::default().check().expect("valid");
    let model = Model::new(
        "Amount",
        vec![ColumnModel::continuous(
            "Amount",
            fit(&shardflow_generate::amounts(42, 0, 100_000), &params).expect("fit"),
        )],
    );
    let amounts = shardflow_generate::amounts(42, 1, CHUNK_ROWS);
    let batch = RecordBatch::try_from_iter([("Amount", std::sync::Arc::new(Float64Array::from(amounts)) as ArrayRef)])
        .expect("batch");
    let transformed = model.transform(&batch, 7).expect("transform");
    let inverse = model.inverse(&transformed).expect("inverse");

    let mut group = c.benchmark_group("parts");
    group.sample_size(20);
    group.throughput(Throughput::Elements(CHUNK_ROWS as u64));
    let transformed_candidates = candidates(&transformed.schema());
    let inverse_candidates = candidates(&inverse.schema());
    let mut out = Vec::with_capacity(4 << 20);
    for ((name, t), (_, i)) in transformed_candidates.into_iter().zip(inverse_candidates) {
        let mut bytes = [0usize; 2];
        for (k, (part, properties)) in [(&transformed, &t), (&inverse, &i)].into_iter().enumerate() {
            out.clear();
            write_parquet(&mut out, part, properties.clone()).expect("write");
            bytes[k] = out.len();
        }
        eprintln!("parts/{name}: transformed {} bytes, inverse {} bytes", bytes[0], bytes[1]);
        group.bench_function(name, |b| {
            b.iter(|| {
                for (part, properties) in [(&transformed, &t), (&inverse, &i)] {
                    out.clear();
                    write_parquet(&mut out, black_box(part), properties.clone()).expect("write");
                }
                out.len()
            });
        });
    }
    group.finish();

    let dir = tempfile::tempdir().expect("tempdir");
    let output = Root::Local(dir.path().to_path_buf());
    let v1 = ChunkCodec::amount().expect("codec");
    let chunk = Chunk {
        job_id: "bench".into(),
        seq: 0,
        model_id: model.model_id.clone(),
        partition: 0,
        offset: 0,
        format: Format::Ocf,
        payload: ocf::encode(&batch).expect("encode"),
    };
    let mut group = c.benchmark_group("chunk");
    group.sample_size(20);
    group.throughput(Throughput::Elements(CHUNK_ROWS as u64));
    group.bench_function("process_65536", |b| {
        b.iter(|| process(black_box(&chunk), &model, &v1, &output, "bench").expect("process"));
    });
    group.finish();
}

criterion_group!(parts, benches);
criterion_main!(parts);
