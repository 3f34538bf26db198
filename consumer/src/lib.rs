//! shardflow's workers: members of one consumer group that turn each chunk into a
//! transformed and an inverse-transformed Parquet part, index both in ClickHouse, and
//! commit the chunk's offset only after that.
#![warn(missing_docs)]

pub mod chunk;
pub mod http;
pub mod metrics;
pub mod worker;
