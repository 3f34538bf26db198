//! The game-rounds pipeline, end to end: a large CSV upload read as a stream
//! ([`publish::RoundReader`]), published one Avro record per message in the Confluent wire
//! format ([`publish::RoundsPublisher`]), sunk into ClickHouse `game_rounds` in batches by a
//! consumer-group member ([`sink`]); and the queries over those tables ([`store`]), whose
//! hourly aggregates are computed from the deduplicated rows.
#![warn(missing_docs)]

pub mod publish;
pub mod reconcile;
pub mod registry;
pub mod sink;
pub mod store;
