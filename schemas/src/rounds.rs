//! Game rounds on the `staging-bets` topic: one Avro record per message in the Confluent
//! wire format (magic byte 0, the schema id as a 4-byte big-endian integer, the Avro
//! binary datum), so that ClickHouse's Kafka engine or Kafka Connect can read the topic.
//!
//! Without a Schema Registry, shardflow numbers schemas itself: the id is the low 31 bits
//! of the schema's Rabin fingerprint (of its Parsing Canonical Form), the same in every
//! process with no coordination, and the schema is kept in ClickHouse under that id.

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::types::Value;

use crate::CodecError;

/// Avro schema of a game round.
pub const GAME_ROUND_AVSC: &str = include_str!("../avro/game_round.avsc");

/// The Confluent wire format's magic byte.
pub const MAGIC: u8 = 0;

/// One game round, as published and as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct GameRound {
    /// Upload the row came from.
    pub upload_id: String,
    /// Its line in the CSV (the header is line 1).
    pub line: u64,
    /// Milliseconds since the epoch, UTC.
    pub created_timestamp_ms: i64,
    /// Round id.
    pub game_instance_id: String,
    /// Player.
    pub user_id: String,
    /// Game.
    pub game_id: String,
    /// Real money bet (`None` when the CSV had `NaN` or nothing).
    pub real_amount_bet: Option<f64>,
    /// Bonus money bet.
    pub bonus_amount_bet: Option<f64>,
    /// Real money won.
    pub real_amount_win: Option<f64>,
    /// Bonus money won.
    pub bonus_amount_win: Option<f64>,
    /// Game name.
    pub game_name: String,
    /// Game provider (`Play'n GO`, ...).
    pub provider: String,
}

impl GameRound {
    /// When the round was created, in whole unix seconds (what ClickHouse `DateTime`
    /// holds; 0 before 1970).
    pub fn created_seconds(&self) -> u32 {
        u32::try_from(self.created_timestamp_ms.div_euclid(1000)).unwrap_or(0)
    }

    /// The start of the round's hour (UTC) in unix seconds: the hour ClickHouse's
    /// `toStartOfHour` gives it in the hourly view, and the one the upload's own per-hour
    /// sums use.
    pub fn hour(&self) -> u32 {
        let seconds = self.created_seconds();
        seconds - seconds % 3600
    }
}

/// The schema id shardflow gives `schema` when no registry numbers it.
pub fn local_schema_id(schema: &Schema) -> u32 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut low = [0u8; 4];
    low.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(low) & 0x7fff_ffff
}

/// Split a Confluent-framed message into its schema id and Avro body.
///
/// # Errors
/// [`CodecError::Decode`] when the message is too short or the magic byte is wrong.
pub fn unframe(message: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match message {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(CodecError::Decode {
            schema: "Confluent wire format".into(),
            reason: "message does not start with magic byte 0 and a 4-byte schema id".into(),
        }),
    }
}

/// Encodes game rounds under one schema id, decodes them from any writer schema that
/// resolves to this one.
#[derive(Clone, Debug)]
pub struct RoundCodec {
    schema: Schema,
    schema_id: u32,
}

impl RoundCodec {
    /// The codec, with the schema id shardflow computes itself.
    ///
    /// # Errors
    /// Only if the embedded schema were broken, which the tests rule out.
    pub fn new() -> Result<Self, CodecError> {
        let schema = Schema::parse_str(GAME_ROUND_AVSC).map_err(|e| CodecError::Schema(e.to_string()))?;
        let schema_id = local_schema_id(&schema);
        Ok(Self { schema, schema_id })
    }

    /// The same codec, framing messages with an id a Schema Registry gave.
    #[must_use]
    pub fn with_schema_id(mut self, schema_id: u32) -> Self {
        self.schema_id = schema_id;
        self
    }

    /// The id messages are framed with.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// The schema (the reader schema when decoding).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// One framed message.
    ///
    /// # Errors
    /// [`CodecError::Encode`] (cannot happen for values the codec builds itself).
    pub fn encode(&self, round: &GameRound) -> Result<Vec<u8>, CodecError> {
        let amount = |v: Option<f64>| match v {
            Some(x) => Value::Union(1, Box::new(Value::Double(x))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let record = Value::Record(vec![
            ("upload_id".into(), Value::String(round.upload_id.clone())),
            ("line".into(), Value::Long(i64::try_from(round.line).unwrap_or(i64::MAX))),
            ("created_timestamp".into(), Value::TimestampMillis(round.created_timestamp_ms)),
            ("game_instance_id".into(), Value::String(round.game_instance_id.clone())),
            ("user_id".into(), Value::String(round.user_id.clone())),
            ("game_id".into(), Value::String(round.game_id.clone())),
            ("real_amount_bet".into(), amount(round.real_amount_bet)),
            ("bonus_amount_bet".into(), amount(round.bonus_amount_bet)),
            ("real_amount_win".into(), amount(round.real_amount_win)),
            ("bonus_amount_win".into(), amount(round.bonus_amount_win)),
            ("game_name".into(), Value::String(round.game_name.clone())),
            ("provider".into(), Value::String(round.provider.clone())),
        ]);
        let body = apache_avro::to_avro_datum(&self.schema, record).map_err(|e| CodecError::Encode(e.to_string()))?;
        let mut message = Vec::with_capacity(5 + body.len());
        message.push(MAGIC);
        message.extend_from_slice(&self.schema_id.to_be_bytes());
        message.extend_from_slice(&body);
        Ok(message)
    }

    /// Decode an Avro body written with `writer` (this codec's schema when `None`),
    /// resolved to this codec's schema.
    ///
    /// # Errors
    /// [`CodecError::Decode`] when the body is not a datum of `writer`, does not resolve,
    /// or has bytes left over.
    pub fn decode(&self, body: &[u8], writer: Option<&Schema>) -> Result<GameRound, CodecError> {
        let fail = |reason: String| CodecError::Decode { schema: "shardflow.GameRound".into(), reason };
        let mut reader = body;
        let value = apache_avro::from_avro_datum(writer.unwrap_or(&self.schema), &mut reader, Some(&self.schema))
            .map_err(|e| fail(e.to_string()))?;
        if !reader.is_empty() {
            return Err(fail(format!("{} bytes left after the record", reader.len())));
        }
        let Value::Record(fields) = value else {
            return Err(fail("not a record".into()));
        };
        let mut round = GameRound {
            upload_id: String::new(),
            line: 0,
            created_timestamp_ms: 0,
            game_instance_id: String::new(),
            user_id: String::new(),
            game_id: String::new(),
            real_amount_bet: None,
            bonus_amount_bet: None,
            real_amount_win: None,
            bonus_amount_win: None,
            game_name: String::new(),
            provider: String::new(),
        };
        for (name, value) in fields {
            let value = match value {
                Value::Union(_, inner) => *inner,
                other => other,
            };
            match (name.as_str(), value) {
                ("upload_id", Value::String(s)) => round.upload_id = s,
                ("line", Value::Long(n)) => round.line = u64::try_from(n).map_err(|_| fail("negative line".into()))?,
                ("created_timestamp", Value::TimestampMillis(ms) | Value::Long(ms)) => round.created_timestamp_ms = ms,
                ("game_instance_id", Value::String(s)) => round.game_instance_id = s,
                ("user_id", Value::String(s)) => round.user_id = s,
                ("game_id", Value::String(s)) => round.game_id = s,
                ("game_name", Value::String(s)) => round.game_name = s,
                ("provider", Value::String(s)) => round.provider = s,
                (amount, value @ (Value::Double(_) | Value::Null)) => {
                    let x = match value {
                        Value::Double(x) => Some(x),
                        _ => None,
                    };
                    match amount {
                        "real_amount_bet" => round.real_amount_bet = x,
                        "bonus_amount_bet" => round.bonus_amount_bet = x,
                        "real_amount_win" => round.real_amount_win = x,
                        "bonus_amount_win" => round.bonus_amount_win = x,
                        other => return Err(fail(format!("unexpected field {other}"))),
                    }
                }
                (other, value) => return Err(fail(format!("field {other} has unexpected value {value:?}"))),
            }
        }
        Ok(round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round() -> GameRound {
        GameRound {
            upload_id: "u1".into(),
            line: 7,
            created_timestamp_ms: 1_700_000_000_000,
            game_instance_id: "g-1".into(),
            user_id: "42".into(),
            game_id: "7".into(),
            real_amount_bet: Some(1.5),
            bonus_amount_bet: None,
            real_amount_win: Some(0.0),
            bonus_amount_win: Some(-2.25),
            game_name: "Book of Dead".into(),
            provider: "Play'n GO".into(),
        }
    }

    #[test]
    fn a_round_survives_the_wire_format() {
        let codec = RoundCodec::new().expect("schema");
        let message = codec.encode(&round()).expect("encode");
        assert_eq!(message[0], MAGIC);
        let (id, body) = unframe(&message).expect("framed");
        assert_eq!(id, codec.schema_id());
        assert!(id <= 0x7fff_ffff, "Confluent ids are non-negative Java ints");
        assert_eq!(codec.decode(body, None).expect("decode"), round());
    }

    #[test]
    fn seconds_and_hour_round_down() {
        let mut r = round();
        r.created_timestamp_ms = 1_706_745_599_999; // 2024-01-31T23:59:59.999Z
        assert_eq!((r.created_seconds(), r.hour()), (1_706_745_599, 1_706_742_000));
        r.created_timestamp_ms = -1;
        assert_eq!((r.created_seconds(), r.hour()), (0, 0));
    }

    #[test]
    fn the_local_schema_id_is_stable() {
        // Every process must agree on it without talking: it is a pure function of the schema.
        let a = RoundCodec::new().expect("schema").schema_id();
        let b = local_schema_id(&Schema::parse_str(GAME_ROUND_AVSC).expect("schema"));
        assert_eq!(a, b);
    }

    #[test]
    fn bad_frames_and_bodies_are_errors() {
        let codec = RoundCodec::new().expect("schema");
        assert!(unframe(b"\x01\0\0\0\x01abc").is_err());
        assert!(unframe(b"\0\0").is_err());
        let message = codec.encode(&round()).expect("encode");
        let (_, body) = unframe(&message).expect("framed");
        assert!(codec.decode(&body[..body.len() - 3], None).is_err());
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(codec.decode(&longer, None).is_err());
    }
}
