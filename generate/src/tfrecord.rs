//! TFRecord files of `tf.train.Example` messages, as TensorFlow's `TFRecordWriter` writes
//! them: each record is its length (u64, little endian), the masked CRC32C of those 8
//! bytes, the data, and the masked CRC32C of the data.
//!
//! The messages are declared here by hand from TensorFlow's `example.proto` and
//! `feature.proto` (field numbers and types as there) and encoded by prost; only the
//! fields shardflow writes are declared, which is all a reader needs.

use std::collections::BTreeMap;

use prost::Message;

/// `tf.train.Example`: one row, as named features.
#[derive(Clone, PartialEq, Message)]
pub struct Example {
    /// The row's features.
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

/// `tf.train.Features`: feature name to value. A `BTreeMap`, so the encoding is in name
/// order and the same bytes every time (a protobuf map may be encoded in any order).
#[derive(Clone, PartialEq, Message)]
pub struct Features {
    /// Features by name.
    #[prost(btree_map = "string, message", tag = "1")]
    pub feature: BTreeMap<String, Feature>,
}

/// `tf.train.Feature`: a list of bytes, floats or 64-bit integers.
#[derive(Clone, PartialEq, Message)]
pub struct Feature {
    /// The list.
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    pub kind: Option<Kind>,
}

/// The `kind` oneof of `tf.train.Feature`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// `bytes_list`.
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    /// `float_list`.
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    /// `int64_list`.
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

/// `tf.train.BytesList`.
#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    /// Values.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tf.train.FloatList` (packed).
#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    /// Values.
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tf.train.Int64List` (packed).
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    /// Values.
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

impl Feature {
    /// A `bytes_list` of one value.
    pub fn bytes(value: impl Into<Vec<u8>>) -> Self {
        Self { kind: Some(Kind::BytesList(BytesList { value: vec![value.into()] })) }
    }

    /// An `int64_list` of one value.
    pub fn int64(value: i64) -> Self {
        Self { kind: Some(Kind::Int64List(Int64List { value: vec![value] })) }
    }
}

impl Example {
    /// An example of these named features.
    pub fn new<'a>(features: impl IntoIterator<Item = (&'a str, Feature)>) -> Self {
        let feature = features.into_iter().map(|(name, f)| (name.to_string(), f)).collect();
        Self { features: Some(Features { feature }) }
    }
}

/// TFRecord's masked CRC32C: `((crc >> 15) | (crc << 17)) + 0xa282ead8`, so that a CRC of
/// data holding CRCs is not itself a likely CRC.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Append `data` framed as one TFRecord record to `out`.
pub fn frame_into(data: &[u8], out: &mut Vec<u8>) {
    let length = (data.len() as u64).to_le_bytes();
    out.reserve(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// `example` encoded and framed as one TFRecord record.
pub fn example_record(example: &Example) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&example.encode_to_vec(), &mut out);
    out
}

/// Why a TFRecord stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The stream ends inside a record.
    #[error("the TFRecord stream ends inside the record at byte {0}")]
    Truncated(usize),
    /// A CRC does not match.
    #[error("the {what} CRC of the TFRecord record at byte {at} does not match")]
    Crc {
        /// `length` or `data`.
        what: &'static str,
        /// Offset of the record.
        at: usize,
    },
}

/// The records' data in a TFRecord stream, each checked against both CRCs.
pub fn records(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], RecordError>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        Some(match read_record(bytes, at) {
            Ok((data, rest)) => {
                at += bytes.len() - rest.len();
                bytes = rest;
                Ok(data)
            }
            Err(e) => {
                bytes = &[];
                Err(e)
            }
        })
    })
}

fn read_record(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), RecordError> {
    let truncated = RecordError::Truncated(at);
    let (length, rest) = bytes.split_first_chunk::<8>().ok_or(truncated.clone())?;
    let (length_crc, rest) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
    if masked_crc32c(length) != u32::from_le_bytes(*length_crc) {
        return Err(RecordError::Crc { what: "length", at });
    }
    let n = usize::try_from(u64::from_le_bytes(*length)).map_err(|_| truncated.clone())?;
    if rest.len() < n {
        return Err(truncated);
    }
    let (data, rest) = rest.split_at(n);
    let (data_crc, rest) = rest.split_first_chunk::<4>().ok_or(truncated)?;
    if masked_crc32c(data) != u32::from_le_bytes(*data_crc) {
        return Err(RecordError::Crc { what: "data", at });
    }
    Ok((data, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "hello world" as TensorFlow's record writer frames it (written by the `tfrecords`
    /// PyPI package, a transplant of TensorFlow's C++ writer).
    const HELLO: &str = "0b000000000000008615f50468656c6c6f20776f726c64007ed86d";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn frames_as_tensorflow_does() {
        let mut out = Vec::new();
        frame_into(b"hello world", &mut out);
        assert_eq!(hex(&out), HELLO);
        frame_into(b"", &mut out);
        let read: Vec<_> = records(&out).collect::<Result<_, _>>().expect("records");
        assert_eq!(read, vec![&b"hello world"[..], &b""[..]]);
    }

    #[test]
    fn a_flipped_bit_or_a_cut_is_found() {
        let mut out = Vec::new();
        frame_into(b"hello world", &mut out);
        frame_into(b"second", &mut out);
        let second = out.len() - (6 + 16);
        for (i, expected) in [
            (3, RecordError::Crc { what: "length", at: 0 }),
            (14, RecordError::Crc { what: "data", at: 0 }),
            (second + 13, RecordError::Crc { what: "data", at: second }),
        ] {
            let mut bad = out.clone();
            bad[i] ^= 1;
            let last = records(&bad).last().expect("a record");
            assert_eq!(last, Err(expected), "bit flipped at {i}");
        }
        let cut = &out[..out.len() - 1];
        assert_eq!(records(cut).last(), Some(Err(RecordError::Truncated(second))));
        assert_eq!(records(cut).count(), 2);
    }

    #[test]
    fn examples_decode_to_their_features() {
        let example = Example::new([("name", Feature::bytes("abc")), ("label", Feature::int64(1))]);
        let record = example_record(&example);
        let data = records(&record).next().expect("one").expect("valid");
        let back = Example::decode(data).expect("decode");
        assert_eq!(back, example);
        let features = back.features.expect("features").feature;
        assert_eq!(features.keys().collect::<Vec<_>>(), ["label", "name"]);
        // int64_list is packed: field 1, length 1, value 1.
        let Some(Kind::Int64List(list)) = &features["label"].kind else { panic!("int64_list") };
        assert_eq!(list.encode_to_vec(), [0x0a, 0x01, 0x01]);
    }
}
