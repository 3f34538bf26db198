//! The chunk wire format since version 2: one Avro Object Container File per message,
//! written from the chunk's `RecordBatch` by `arrow-avro`, its schema embedded, so any
//! Avro reader (fastavro, Java, `avro-tools`) reads a message alone.
//!
//! Avro has fewer types and stricter names than Arrow, so each column goes on the wire
//! as the nearest Avro type and a valid Avro name, with what it was kept beside it in the
//! field's schema attributes (`shardflow.name` when the name changed,
//! `shardflow.arrow_type` always); [`decode`]
//! gives the original names and types back.
//!
//! | Arrow | on the wire |
//! |---|---|
//! | Float64, Float32, Int32, Int64, Boolean, Utf8, LargeUtf8, Binary, Date32, Timestamp | the same (`timestamp-*` logical types) |
//! | Int8, Int16, UInt8, UInt16 | `int` |
//! | UInt32, UInt64 | `long` (a UInt64 above `i64::MAX` is refused) |
//! | Dictionary | its values |
//! | Utf8View, Float16, Date64 | Utf8, Float32, Timestamp(ms) |
//!
//! Every field is nullable (`["null", T]`).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::writer::AvroWriter;
use arrow_cast::cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::CodecError;

/// The `format` header value of a version-2 chunk.
pub const OCF_FORMAT: &str = "avro-ocf/2";

/// Field attribute holding the column's name when the Avro name differs.
const NAME_KEY: &str = "shardflow.name";
/// Field attribute holding the column's Arrow type (JSON).
const TYPE_KEY: &str = "shardflow.arrow_type";

/// Rows decoded per batch; a chunk larger than this is decoded in several, then joined.
const DECODE_ROWS: usize = 1 << 16;

/// The Avro-friendly type a column of `data_type` travels as.
fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Date64 => DataType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Timestamp(TimeUnit::Second, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        DataType::Dictionary(_, values) => wire_type(values),
        other => other.clone(),
    }
}

/// A valid Avro name for column `index` named `name`: letters, digits and `_`, not
/// starting with a digit, unique among `taken`.
fn avro_name(name: &str, index: usize, taken: &mut std::collections::HashSet<String>) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if !taken.insert(out.clone()) {
        out = format!("{out}_{index}");
        taken.insert(out.clone());
    }
    out
}

/// Encode `batch` as one Object Container File (uncompressed: the broker compresses).
///
/// # Errors
/// [`CodecError::Encode`] naming the column when a type has no Avro form or a value
/// does not fit its wire type (a UInt64 above `i64::MAX`).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, CodecError> {
    let wire = wire_batch(batch)?;
    let mut writer =
        AvroWriter::new(Vec::with_capacity(batch.get_array_memory_size() / 2 + 256), wire.schema().as_ref().clone())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
    writer.write(&wire).map_err(|e| CodecError::Encode(e.to_string()))?;
    writer.finish().map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(writer.into_inner())
}

/// `batch` as it goes into Avro: each column as the nearest Avro type under a valid Avro
/// name, with its original name and type in the field's attributes (see the module
/// documentation). The same input schema always gives the same wire schema, so an Avro
/// file of many batches (`producer convert`) takes each batch through this.
///
/// # Errors
/// [`CodecError::Encode`] naming the column when a type has no Avro form or a value
/// does not fit its wire type (a UInt64 above `i64::MAX`).
pub fn wire_batch(batch: &RecordBatch) -> Result<RecordBatch, CodecError> {
    let mut taken = std::collections::HashSet::new();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let strict = CastOptions { safe: false, ..Default::default() };
    for (index, (field, array)) in batch.schema().fields().iter().zip(batch.columns()).enumerate() {
        let name = avro_name(field.name(), index, &mut taken);
        let mut metadata = HashMap::new();
        if &name != field.name() {
            metadata.insert(NAME_KEY.to_string(), field.name().clone());
        }
        // Recorded for every column: Avro's reading of a type is not always the type
        // written (a zone becomes `+00:00`, LargeUtf8 comes back Utf8).
        let json = serde_json::to_string(field.data_type())
            .map_err(|e| CodecError::Encode(format!("column `{}`: {e}", field.name())))?;
        metadata.insert(TYPE_KEY.to_string(), json);
        let wire = wire_type(field.data_type());
        let column = if &wire == field.data_type() {
            array.clone()
        } else {
            cast_with_options(array, &wire, &strict)
                .map_err(|e| CodecError::Encode(format!("column `{}` as {wire}: {e}", field.name())))?
        };
        fields.push(Field::new(name, wire, true).with_metadata(metadata));
        columns.push(column);
    }
    let metadata = HashMap::from([
        ("avro.name".to_string(), "Chunk".to_string()),
        ("avro.namespace".to_string(), "shardflow".to_string()),
    ]);
    let schema = Schema::new_with_metadata(fields, metadata);
    RecordBatch::try_new(Arc::new(schema), columns)
        .map_err(|e| CodecError::Encode(format!("building the wire batch: {e}")))
}

/// What the embedded schema says about a field: its original name and Arrow type, when
/// they differ from the wire's.
struct Original {
    name: Option<String>,
    data_type: Option<DataType>,
}

/// The [`Original`] of every field of the embedded schema.
fn originals(schema_json: &[u8]) -> Result<Vec<Original>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(schema_json).map_err(|e| format!("embedded schema is not JSON: {e}"))?;
    let fields = value.get("fields").and_then(serde_json::Value::as_array).ok_or("embedded schema has no fields")?;
    fields
        .iter()
        .map(|f| {
            let name = f.get(NAME_KEY).and_then(serde_json::Value::as_str).map(str::to_string);
            // The writer embeds an attribute that is JSON as that JSON value.
            let data_type = match f.get(TYPE_KEY) {
                Some(json) => {
                    Some(serde_json::from_value(json.clone()).map_err(|e| format!("field attribute {TYPE_KEY}: {e}"))?)
                }
                None => None,
            };
            Ok(Original { name, data_type })
        })
        .collect()
}

/// Decode one Object Container File into a batch with the columns' original names and
/// types (see the module documentation).
///
/// # Errors
/// [`CodecError::Decode`] when `payload` is not an OCF, is truncated, or its values do
/// not go back to the types its schema names.
pub fn decode(payload: &[u8]) -> Result<RecordBatch, CodecError> {
    let fail = |reason: String| CodecError::Decode { schema: OCF_FORMAT.to_string(), reason };
    let reader = ReaderBuilder::new()
        .with_batch_size(DECODE_ROWS)
        .build(Cursor::new(payload))
        .map_err(|e| fail(e.to_string()))?;
    let originals = match reader.avro_header().get("avro.schema") {
        Some(json) => originals(json).map_err(fail)?,
        None => return Err(fail("no avro.schema in the header".into())),
    };
    // Every block, like the header, ends with the file's sync marker: a payload that
    // does not was cut short, and the reader would return the blocks before the cut.
    if !payload.ends_with(&reader.avro_header().sync()) {
        return Err(fail("the file is truncated (it does not end with its sync marker)".into()));
    }
    let wire_schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| fail(e.to_string()))?;
    let joined = match batches.len() {
        1 => batches.into_iter().next().ok_or_else(|| fail("no batch".into()))?,
        _ => arrow_select::concat::concat_batches(&wire_schema, &batches).map_err(|e| fail(e.to_string()))?,
    };
    restore(joined, &originals).map_err(fail)
}

fn restore(batch: RecordBatch, originals: &[Original]) -> Result<RecordBatch, String> {
    if originals.len() != batch.num_columns() {
        return Err(format!("schema has {} fields, the data {} columns", originals.len(), batch.num_columns()));
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for ((field, array), Original { name, data_type }) in
        batch.schema().fields().iter().zip(batch.columns()).zip(originals)
    {
        let name = name.clone().unwrap_or_else(|| field.name().clone());
        let column = match data_type {
            Some(t) if t != array.data_type() => {
                arrow_cast::cast(array, t).map_err(|e| format!("column `{name}` does not go back to {t}: {e}"))?
            }
            _ => array.clone(),
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::*;

    fn mixed() -> RecordBatch {
        let dict: DictionaryArray<Int32Type> = vec![Some("x"), None, Some("y")].into_iter().collect();
        RecordBatch::try_from_iter([
            ("f64", Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-0.0)])) as ArrayRef),
            ("f32", Arc::new(Float32Array::from(vec![Some(1.5), None, Some(3.0)])) as ArrayRef),
            ("i8", Arc::new(Int8Array::from(vec![Some(-128), None, Some(127)])) as ArrayRef),
            ("i16", Arc::new(Int16Array::from(vec![Some(-1), None, Some(2)])) as ArrayRef),
            ("i32", Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(2)])) as ArrayRef),
            ("i64", Arc::new(Int64Array::from(vec![Some(i64::MAX), None, Some(2)])) as ArrayRef),
            ("u8", Arc::new(UInt8Array::from(vec![Some(255), None, Some(0)])) as ArrayRef),
            ("u16", Arc::new(UInt16Array::from(vec![Some(65535), None, Some(0)])) as ArrayRef),
            ("u32", Arc::new(UInt32Array::from(vec![Some(u32::MAX), None, Some(0)])) as ArrayRef),
            ("u64", Arc::new(UInt64Array::from(vec![Some(i64::MAX as u64), None, Some(0)])) as ArrayRef),
            ("Adj Close", Arc::new(StringArray::from(vec![Some("a"), None, Some("é")])) as ArrayRef),
            ("large", Arc::new(LargeStringArray::from(vec![Some("a"), None, Some("")])) as ArrayRef),
            ("bool", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])) as ArrayRef),
            ("date", Arc::new(Date32Array::from(vec![Some(19000), None, Some(-1)])) as ArrayRef),
            (
                "ts_ms_utc",
                Arc::new(TimestampMillisecondArray::from(vec![Some(1), None, Some(-5)]).with_timezone("UTC"))
                    as ArrayRef,
            ),
            ("ts_ns", Arc::new(TimestampNanosecondArray::from(vec![Some(1), None, Some(2)])) as ArrayRef),
            ("ts_s", Arc::new(TimestampSecondArray::from(vec![Some(1), None, Some(2)])) as ArrayRef),
            ("dict", Arc::new(dict) as ArrayRef),
            ("1st", Arc::new(Float64Array::from(vec![Some(1.0), None, Some(2.0)])) as ArrayRef),
            ("1st.", Arc::new(Float64Array::from(vec![Some(3.0), None, Some(4.0)])) as ArrayRef),
        ])
        .expect("batch")
    }

    #[test]
    fn every_type_comes_back_with_its_name_type_and_nulls() {
        let input = mixed();
        let bytes = encode(&input).expect("encode");
        assert_eq!(&bytes[..4], b"Obj\x01", "an Object Container File");
        let output = decode(&bytes).expect("decode");
        assert_eq!(output.schema().fields().len(), input.num_columns());
        for (i, field) in input.schema().fields().iter().enumerate() {
            let out = output.schema().field(i).clone();
            assert_eq!(out.name(), field.name());
            assert_eq!(out.data_type(), field.data_type(), "{}", field.name());
            assert_eq!(output.column(i).as_ref(), input.column(i).as_ref(), "{}", field.name());
        }
    }

    #[test]
    fn many_rows_decode_into_one_batch() {
        let n = DECODE_ROWS * 2 + 7;
        let values: Float64Array = (0..n).map(|i| (i % 3 != 0).then_some(i as f64)).collect();
        let input = RecordBatch::try_from_iter([("Amount", Arc::new(values) as ArrayRef)]).expect("batch");
        assert_eq!(decode(&encode(&input).expect("encode")).expect("decode"), input);
    }

    #[test]
    fn an_empty_chunk_round_trips() {
        let input = mixed().slice(0, 0);
        assert_eq!(decode(&encode(&input).expect("encode")).expect("decode").num_rows(), 0);
    }

    #[test]
    fn a_u64_beyond_i64_is_refused_with_its_column() {
        let input =
            RecordBatch::try_from_iter([("big", Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef)]).expect("b");
        let err = encode(&input).expect_err("overflow");
        assert!(err.to_string().contains("column `big`"), "{err}");
    }

    #[test]
    fn what_is_not_an_ocf_is_a_decode_error() {
        for payload in [&b""[..], b"not avro at all", b"Obj\x01\x02", &[0u8; 64][..]] {
            assert!(matches!(decode(payload), Err(CodecError::Decode { .. })), "{payload:?}");
        }
        let mut bytes = encode(&mixed()).expect("encode");
        bytes.truncate(bytes.len() - 20);
        assert!(decode(&bytes).is_err(), "a truncated file");
    }
}
