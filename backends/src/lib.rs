//! What the producer and the consumer both talk to: configuration, Kafka clients and
//! topics, the ClickHouse index, and the storage paths clients may name.
#![warn(missing_docs)]

pub mod config;
pub mod index;
pub mod kafka;
pub mod rounds;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Config, ConfigError};
pub use index::{DeadLetterRow, Index, IndexError, JobFilter, JobRow, JobSummary, ModelRow, ModelSummary, OutputRow};
pub use storage::{PathError, confine, write_atomically};

/// Directory of a job's transformed parts under the output root.
pub fn transform_dir(output_root: &std::path::Path, job_id: &str) -> std::path::PathBuf {
    output_root.join(format!("transform_{job_id}"))
}

/// Directory of a job's inverse-transformed parts under the output root.
pub fn inverse_dir(output_root: &std::path::Path, job_id: &str) -> std::path::PathBuf {
    output_root.join(format!("inverse_transform_{job_id}"))
}

/// File name of a chunk's part.
pub fn part_name(chunk: u64) -> String {
    format!("part-{chunk:05}.parquet")
}
