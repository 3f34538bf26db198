//! shardflow's producer: generate `Amount` shards, fit the transform model over them,
//! publish shards to Kafka as Avro chunks, and serve the HTTP API.
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod fit;
pub mod generate;
pub mod publish;
pub mod rounds;
pub mod shard;
