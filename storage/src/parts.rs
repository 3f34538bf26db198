//! How an output part is encoded: the writer settings every part gets, chosen by
//! measurement (`cargo bench -p shardflow-consumer --bench parts`, figures in
//! `docs/benchmarks.md` under "Parquet parts").

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// The writer settings of a part of `schema`: Snappy everywhere; floating-point columns
/// plain, integer columns (a transform's mode and component flags among them) delta
/// encoded, both without a dictionary; every other column (strings, categories, dates)
/// with the dictionary.
///
/// Measured (`docs/benchmarks.md`, "Parquet parts"): a dictionary hashes every value. A
/// part's floats (a transform's alpha, an inverse's values) are mostly distinct, so the
/// hashing buys little; a flag has two values, which delta encoding packs into one or two
/// bits a row without hashing anything. Together this writes a chunk's two parts 1.6x as
/// fast as a dictionary on every column, for parts about 40% larger.
pub fn part_properties(schema: &Schema) -> WriterProperties {
    let builder = WriterProperties::builder().set_compression(Compression::SNAPPY);
    schema
        .fields()
        .iter()
        .fold(builder, |builder, field| {
            let column = || ColumnPath::from(field.name().as_str());
            match field.data_type() {
                t if t.is_floating() => builder.set_column_dictionary_enabled(column(), false),
                t if t.is_integer() => builder
                    .set_column_dictionary_enabled(column(), false)
                    .set_column_encoding(column(), Encoding::DELTA_BINARY_PACKED),
                _ => builder,
            }
        })
        .build()
}

/// Write `batch` as one Parquet file to `out` with `properties`.
///
/// # Errors
/// The writer's error, as an I/O error.
pub fn write_parquet<W: std::io::Write + Send>(
    out: W,
    batch: &RecordBatch,
    properties: WriterProperties,
) -> std::io::Result<()> {
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(properties)).map_err(std::io::Error::other)?;
    writer.write(batch).map_err(std::io::Error::other)?;
    writer.close().map(|_| ()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, StringArray, UInt8Array};
    use bytes::Bytes;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    #[test]
    fn floats_plain_flags_delta_strings_by_dictionary_and_values_kept() {
        let n = 10_000;
        let alpha: Vec<f64> = (0..n).map(|i| (f64::from(i) * 0.618_033_988_7).fract() - 0.5).collect();
        let flags: Vec<u8> = (0..n).map(|i| u8::from(i % 3 == 0)).collect();
        let batch = RecordBatch::try_from_iter([
            ("Amount.alpha", Arc::new(Float64Array::from(alpha)) as ArrayRef),
            ("Amount.mode_0", Arc::new(UInt8Array::from(flags)) as ArrayRef),
            ("Kind", Arc::new(StringArray::from_iter_values((0..n).map(|i| ["a", "b"][i as usize % 2]))) as ArrayRef),
        ])
        .expect("batch");
        let mut bytes = Vec::new();
        write_parquet(&mut bytes, &batch, part_properties(&batch.schema())).expect("write");

        let reader = SerializedFileReader::new(Bytes::from(bytes.clone())).expect("reader");
        let group = reader.metadata().row_group(0);
        assert_eq!(group.num_rows(), i64::from(n));
        let alpha_column = group.column(0);
        assert!(alpha_column.dictionary_page_offset().is_none(), "alpha has no dictionary page");
        assert!(!alpha_column.encodings().any(|e| e == Encoding::RLE_DICTIONARY));
        assert_eq!(alpha_column.compression(), Compression::SNAPPY);
        let flags_column = group.column(1);
        assert!(flags_column.dictionary_page_offset().is_none(), "flags have no dictionary page");
        assert!(flags_column.encodings().any(|e| e == Encoding::DELTA_BINARY_PACKED), "flags are delta encoded");
        assert!(group.column(2).encodings().any(|e| e == Encoding::RLE_DICTIONARY), "strings keep the dictionary");

        let read = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(Bytes::from(bytes), 1 << 20)
            .expect("read")
            .next()
            .expect("a batch")
            .expect("decoded");
        assert_eq!(read, batch);
    }
}
