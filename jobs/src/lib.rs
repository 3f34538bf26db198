//! Jobs: what the API and the CLI both call to turn a shard into work for the consumers —
//! fit a model over a dataset's shards ([`fit`]), publish a shard as Avro chunks on the
//! chunk topic ([`publish`]), fit on the consumer group when the shards are where the
//! members are ([`group_fit`]), and the service that submits, runs in the background,
//! resumes and waits for jobs ([`service`]).
#![warn(missing_docs)]

pub mod fit;
pub mod group_fit;
pub mod publish;
pub mod service;
