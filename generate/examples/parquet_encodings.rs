//! What writing `Amount` shards costs under each Parquet encoding and compression: the
//! generator's own values (10,000,000 by default), written in 65,536-row batches into
//! row groups of 1,048,576 rows as shards are, then read back. Prints ns per row to
//! sample, to write and to read (the best of three rounds, the choices alternating, so
//! that no choice pays alone for warming up), and bytes per row on disk (one thread).
//!
//!   cargo run --profile release -p shardflow-generate --example parquet_encodings [ROWS]

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::WriterProperties;

type Error = Box<dyn std::error::Error>;

fn per_row(since: Instant, rows: usize) -> f64 {
    since.elapsed().as_nanos() as f64 / rows as f64
}

/// Write `values` to `path` with `props` and read them back: ns per row to write, bytes
/// per row, ns per row to read.
fn measure(
    path: &std::path::Path,
    schema: &Arc<Schema>,
    props: parquet::file::properties::WriterPropertiesBuilder,
    values: &[f64],
) -> Result<(f64, f64, f64), Error> {
    let rows = values.len();
    let started = Instant::now();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, schema.clone(), Some(props.build()))?;
    for chunk in values.chunks(65_536) {
        writer.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(chunk.to_vec()))])?)?;
    }
    writer.close()?;
    let write = per_row(started, rows);
    let bytes = std::fs::metadata(path)?.len() as f64 / rows as f64;
    let started = Instant::now();
    let mut read = 0;
    for batch in ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()? {
        read += batch?.num_rows();
    }
    if read != rows {
        return Err(format!("read {read} rows of {rows}").into());
    }
    Ok((write, bytes, per_row(started, rows)))
}

fn main() -> Result<(), Error> {
    let rows: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("ROWS must be a number: {e}"))?,
        None => 10_000_000,
    };
    let started = Instant::now();
    let values = shardflow_generate::amounts(42, 0, rows);
    println!("sample: {:.1} ns/row ({rows} rows)", per_row(started, rows));
    let schema = Arc::new(Schema::new(vec![Field::new("Amount", DataType::Float64, false)]));
    let base = || WriterProperties::builder().set_max_row_group_size(1 << 20);
    let choices = [
        ("dictionary + snappy (shards today)", base().set_compression(Compression::SNAPPY)),
        ("dictionary, uncompressed", base()),
        ("plain + snappy", base().set_dictionary_enabled(false).set_compression(Compression::SNAPPY)),
        ("plain, uncompressed", base().set_dictionary_enabled(false)),
        (
            "byte stream split + snappy",
            base()
                .set_dictionary_enabled(false)
                .set_encoding(Encoding::BYTE_STREAM_SPLIT)
                .set_compression(Compression::SNAPPY),
        ),
        (
            "plain + zstd(1)",
            base().set_dictionary_enabled(false).set_compression(Compression::ZSTD(Default::default())),
        ),
    ];
    let dir = tempfile::tempdir()?;
    let mut best = vec![(f64::MAX, 0.0, f64::MAX); choices.len()];
    for _round in 0..3 {
        for ((name, props), best) in choices.iter().zip(&mut best) {
            let (write, bytes, read) = measure(&dir.path().join("amount.parquet"), &schema, props.clone(), &values)
                .map_err(|e| format!("{name}: {e}"))?;
            *best = (best.0.min(write), bytes, best.2.min(read));
        }
    }
    for ((name, _), (write, bytes, read)) in choices.iter().zip(best) {
        println!("{name:36} write {write:5.1} ns/row  {bytes:5.2} B/row  read {read:5.1} ns/row");
    }
    Ok(())
}
