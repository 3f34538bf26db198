//! The schemas shardflow's messages and tables follow, embedded from `schemas/avro` and
//! `schemas/sql`, and the codecs that turn a chunk (an Arrow `RecordBatch`) into a
//! message payload and back.
//!
//! Chunks go on the wire as Avro Object Container Files ([`ocf`], `format` header
//! [`ocf::OCF_FORMAT`]), any table. Version 1, before the `format` header, sent `Amount`
//! chunks as one Avro datum of [`AMOUNT_CHUNK_AVSC`] (a record whose fields are the
//! columns, each an array with one item per row, items `["null", "double"]`);
//! [`ChunkCodec`] still reads those, so messages left in a topic by an older producer are
//! transformed during an upgrade.
#![warn(missing_docs)]

pub mod ocf;
pub mod rounds;

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};

/// Full name of [`AMOUNT_CHUNK_AVSC`], sent in a version-1 chunk's `schema` header.
pub const AMOUNT_CHUNK_SCHEMA: &str = "shardflow.AmountChunk";

/// Avro schema of a version-1 `Amount` chunk.
pub const AMOUNT_CHUNK_AVSC: &str = include_str!("../avro/amount_chunk.avsc");

/// ClickHouse DDL, in the order it must run; `{database}` stands for the database name.
pub const CLICKHOUSE_DDL: [(&str, &str); 13] = [
    ("001_models.sql", include_str!("../sql/001_models.sql")),
    ("002_jobs.sql", include_str!("../sql/002_jobs.sql")),
    ("003_outputs.sql", include_str!("../sql/003_outputs.sql")),
    ("004_dead_letters.sql", include_str!("../sql/004_dead_letters.sql")),
    ("005_game_rounds.sql", include_str!("../sql/005_game_rounds.sql")),
    ("006_hourly_aggregated_game_rounds.sql", include_str!("../sql/006_hourly_aggregated_game_rounds.sql")),
    ("007_uploads.sql", include_str!("../sql/007_uploads.sql")),
    ("008_avro_schemas.sql", include_str!("../sql/008_avro_schemas.sql")),
    ("009_datasets.sql", include_str!("../sql/009_datasets.sql")),
    ("010_value_issues.sql", include_str!("../sql/010_value_issues.sql")),
    ("011_upload_keys.sql", include_str!("../sql/011_upload_keys.sql")),
    ("012_lineage_events.sql", include_str!("../sql/012_lineage_events.sql")),
    ("013_stage_runs.sql", include_str!("../sql/013_stage_runs.sql")),
];

/// The DDL statements for `database` (which the caller has checked is a plain identifier).
pub fn clickhouse_ddl(database: &str) -> impl Iterator<Item = (&'static str, String)> + '_ {
    CLICKHOUSE_DDL.iter().map(move |(name, sql)| (*name, sql.replace("{database}", database)))
}

/// What can go wrong encoding or decoding a chunk.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The embedded schema does not parse or is not a chunk schema (a build defect).
    #[error("chunk schema is not usable: {0}")]
    Schema(String),
    /// A batch lacks a column the schema has, or has it with another type.
    #[error("chunk has no Float64 column `{0}`")]
    MissingColumn(String),
    /// The payload is not a datum of the chunk schema.
    #[error("payload is not a valid {schema} chunk: {reason}")]
    Decode {
        /// Full name of the expected schema.
        schema: String,
        /// Why decoding failed.
        reason: String,
    },
    /// Encoding failed (cannot happen for values the codec builds itself).
    #[error("cannot encode chunk as Avro: {0}")]
    Encode(String),
}

/// Encodes and decodes version-1 chunks (one Avro datum of nullable-double arrays).
#[derive(Clone, Debug)]
pub struct ChunkCodec {
    schema: Schema,
    name: String,
    columns: Vec<String>,
}

impl ChunkCodec {
    /// The codec of `Amount` chunks.
    ///
    /// # Errors
    /// Only if the embedded schema were broken, which the tests rule out.
    pub fn amount() -> Result<Self, CodecError> {
        Self::new(AMOUNT_CHUNK_AVSC)
    }

    /// A codec for the chunk schema in `avsc`.
    ///
    /// # Errors
    /// [`CodecError::Schema`] when `avsc` is not a record of nullable-double arrays.
    pub fn new(avsc: &str) -> Result<Self, CodecError> {
        let schema = Schema::parse_str(avsc).map_err(|e| CodecError::Schema(e.to_string()))?;
        let Schema::Record(record) = &schema else {
            return Err(CodecError::Schema("top level is not a record".into()));
        };
        let name = record.name.fullname(None);
        let columns = record.fields.iter().map(|f| f.name.clone()).collect();
        Ok(Self { schema, name, columns })
    }

    /// Full name of the schema (`shardflow.AmountChunk`), sent as a message header.
    pub fn schema_name(&self) -> &str {
        &self.name
    }

    /// Column names, in schema order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Encode the schema's columns of `batch` as one Avro datum.
    ///
    /// # Errors
    /// [`CodecError::MissingColumn`] when `batch` lacks one of the columns as Float64.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<u8>, CodecError> {
        let mut fields = Vec::with_capacity(self.columns.len());
        for name in &self.columns {
            let array = batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<Float64Array>())
                .ok_or_else(|| CodecError::MissingColumn(name.clone()))?;
            let items = (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Union(0, Box::new(Value::Null))
                    } else {
                        Value::Union(1, Box::new(Value::Double(array.value(i))))
                    }
                })
                .collect();
            fields.push((name.clone(), Value::Array(items)));
        }
        apache_avro::to_avro_datum(&self.schema, Value::Record(fields)).map_err(|e| CodecError::Encode(e.to_string()))
    }

    /// Decode one Avro datum into a batch of Float64 columns.
    ///
    /// # Errors
    /// [`CodecError::Decode`] when `payload` is not exactly one datum of the schema, or
    /// its columns differ in length.
    pub fn decode(&self, payload: &[u8]) -> Result<RecordBatch, CodecError> {
        let fail = |reason: String| CodecError::Decode { schema: self.name.clone(), reason };
        let mut reader = payload;
        let value = apache_avro::from_avro_datum(&self.schema, &mut reader, None).map_err(|e| fail(e.to_string()))?;
        if !reader.is_empty() {
            return Err(fail(format!("{} trailing bytes after the datum", reader.len())));
        }
        let Value::Record(fields) = value else {
            return Err(fail("datum is not a record".into()));
        };
        let mut columns: Vec<(String, ArrayRef)> = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            let Value::Array(items) = value else {
                return Err(fail(format!("field `{name}` is not an array")));
            };
            let values = items
                .into_iter()
                .map(|item| match item {
                    Value::Union(_, inner) => match *inner {
                        Value::Null => Ok(None),
                        Value::Double(v) => Ok(Some(v)),
                        other => Err(fail(format!("field `{name}` holds {other:?}"))),
                    },
                    other => Err(fail(format!("field `{name}` holds {other:?}"))),
                })
                .collect::<Result<Float64Array, _>>()?;
            columns.push((name, Arc::new(values)));
        }
        RecordBatch::try_from_iter(columns).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: Vec<Option<f64>>) -> RecordBatch {
        RecordBatch::try_from_iter([("Amount", Arc::new(Float64Array::from(values)) as ArrayRef)]).expect("batch")
    }

    #[test]
    fn round_trips_values_and_nulls() {
        let codec = ChunkCodec::amount().expect("embedded schema parses");
        assert_eq!(codec.schema_name(), AMOUNT_CHUNK_SCHEMA);
        let input = batch(vec![Some(1.5), None, Some(-0.0), Some(1e300), Some(f64::MIN_POSITIVE)]);
        let bytes = codec.encode(&input).expect("encode");
        let output = codec.decode(&bytes).expect("decode");
        assert_eq!(output, input);
        // 1 byte block count, 5 union tags, 4 doubles, 1 byte end of blocks.
        assert_eq!(bytes.len(), 1 + 5 + 4 * 8 + 1);
    }

    #[test]
    fn empty_chunk_round_trips() {
        let codec = ChunkCodec::amount().expect("schema");
        let input = batch(vec![]);
        assert_eq!(codec.decode(&codec.encode(&input).expect("encode")).expect("decode"), input);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        let codec = ChunkCodec::amount().expect("schema");
        for payload in [&b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..], b"\x02\x04", b"not avro at all"] {
            assert!(matches!(codec.decode(payload), Err(CodecError::Decode { .. })), "{payload:?}");
        }
        let mut bytes = codec.encode(&batch(vec![Some(1.0)])).expect("encode");
        bytes.push(0);
        let err = codec.decode(&bytes).expect_err("trailing byte");
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn batch_without_the_column_is_refused() {
        let codec = ChunkCodec::amount().expect("schema");
        let other =
            RecordBatch::try_from_iter([("x", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef)]).expect("batch");
        assert!(matches!(codec.encode(&other), Err(CodecError::MissingColumn(c)) if c == "Amount"));
    }

    #[test]
    fn ddl_names_the_database() {
        let ddl: Vec<_> = clickhouse_ddl("test_db").collect();
        assert_eq!(ddl.len(), CLICKHOUSE_DDL.len());
        assert!(ddl.iter().all(|(_, sql)| sql.contains("test_db.") && !sql.contains("{database}")));
    }
}
