//! shardflow's producer: generate `Amount` shards, fit the transform model over them (or
//! over a table of several column kinds), publish shards to Kafka as Avro chunks, inspect
//! and plot models, and serve the HTTP API.
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod fit;
pub mod generate;
pub mod inspect;
pub mod plot;
pub mod publish;
pub mod rounds;
pub mod shard;
pub mod table;
