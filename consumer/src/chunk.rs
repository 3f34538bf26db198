//! One chunk's work, free of Kafka: decode the payload (an Avro Object Container File, or
//! a version-1 `Amount` datum), transform and invert it with the model, write both Parquet
//! parts atomically (files renamed into place, or objects put in one request), and
//! describe the outputs and the values that could not be encoded.

use std::path::Path;
use std::time::{Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use shardflow_model::{Model, chunk_seed};
use shardflow_schemas::{ChunkCodec, ocf};
use shardflow_storage::objects::{ObjectRoot, Root};
use shardflow_storage::parts;
use shardflow_storage::{inverse_dir, inverse_name, part_name, transform_dir, transform_name, write_atomically};
use shardflow_store::{OutputRow, Retry, ValueIssueRow, unix_now};

/// How a chunk's payload is encoded, from its `format` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An Avro Object Container File ([`ocf::OCF_FORMAT`]).
    Ocf,
    /// Version 1: one Avro datum of `shardflow.AmountChunk` (no `format` header).
    AmountDatum,
}

/// A chunk as it arrived: where from, what it belongs to, the payload.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Job id header.
    pub job_id: String,
    /// Chunk sequence header.
    pub seq: u64,
    /// Model id header.
    pub model_id: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// How the payload is encoded.
    pub format: Format,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What a processed chunk leaves for the index: its outputs row, and its value issues
/// (written first).
#[derive(Clone, Debug)]
pub struct Processed {
    /// The outputs row.
    pub output: OutputRow,
    /// Per column, values that were not encoded as they were.
    pub issues: Vec<ValueIssueRow>,
    /// For an object-store output root: the parts, encoded, still to be put (in
    /// [`put_parts`]) before the outputs row is inserted.
    pub parts: Vec<(object_store::path::Path, bytes::Bytes)>,
    /// What the chunk's lineage events say.
    pub lineage: ChunkLineage,
}

/// When each step of a chunk began and ended, and what it read and wrote: the chunk's
/// transform, inverse and index runs in the lineage.
#[derive(Clone, Debug)]
pub struct ChunkLineage {
    /// Decoding began.
    pub started: SystemTime,
    /// The transform was computed.
    pub transformed: SystemTime,
    /// The inverse was computed.
    pub inverted: SystemTime,
    /// Both parts were written (or encoded, for an object store).
    pub written: SystemTime,
    /// The input's columns.
    pub input_schema: SchemaRef,
    /// The transformed part's columns.
    pub transform_schema: SchemaRef,
    /// Bytes of the transformed part.
    pub transform_bytes: u64,
    /// Bytes of the inverse part.
    pub inverse_bytes: u64,
}

/// Why a chunk could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The message itself is bad (headers, payload, shape): retrying cannot help.
    #[error("bad message: {0}")]
    BadMessage(String),
    /// Writing a part failed (disk full, permissions): worth retrying.
    #[error("writing {path}: {source}")]
    Write {
        /// The part.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The object store refused a part or could not be reached: the store's state, not
    /// the chunk's.
    #[error("putting {location}: {reason}")]
    Put {
        /// The part's URL.
        location: String,
        /// The store's reason.
        reason: String,
    },
}

impl ChunkError {
    /// What the failure means for the chunk. A bad message never passes; of write errors,
    /// a name the file system refuses (too long, invalid) never passes either, a full or
    /// read-only disk is the disk's state, not the chunk's (waited for, uncounted), and
    /// anything else (permissions, a directory in the way) may pass and is retried up to
    /// the cap.
    pub fn retry(&self) -> Retry {
        use std::io::ErrorKind;
        match self {
            Self::BadMessage(_) => Retry::Permanent,
            Self::Write { source, .. } => match source.kind() {
                ErrorKind::InvalidFilename | ErrorKind::InvalidInput => Retry::Permanent,
                ErrorKind::StorageFull | ErrorKind::ReadOnlyFilesystem | ErrorKind::QuotaExceeded => Retry::Unavailable,
                _ => Retry::Transient,
            },
            Self::Put { .. } => Retry::Unavailable,
        }
    }
}

/// Decode, transform, invert and write one chunk; what is returned is what the index
/// records once the parts are durable.
///
/// # Errors
/// [`ChunkError::BadMessage`] for a payload the codec or model refuses,
/// [`ChunkError::Write`] when a part cannot be written.
pub fn process(
    chunk: &Chunk,
    model: &Model,
    v1: &ChunkCodec,
    output: &Root,
    worker: &str,
) -> Result<Processed, ChunkError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let batch = match chunk.format {
        Format::Ocf => ocf::decode(&chunk.payload),
        Format::AmountDatum => v1.decode(&chunk.payload),
    }
    .map_err(|e| ChunkError::BadMessage(e.to_string()))?;
    let decoded = Instant::now();
    let seed = chunk_seed(&model.model_id, &chunk.job_id, chunk.seq);
    let (transformed, report) =
        model.transform_with_report(&batch, seed).map_err(|e| ChunkError::BadMessage(e.to_string()))?;
    let transformed_at = SystemTime::now();
    let inverse = model.inverse(&transformed).map_err(|e| ChunkError::BadMessage(e.to_string()))?;
    let computed = Instant::now();
    let inverted_at = SystemTime::now();
    let (transform_path, inverse_path, parts, (transform_bytes, inverse_bytes)) = match output {
        Root::Local(root) => {
            let transform_path = transform_dir(root, &chunk.job_id).join(part_name(chunk.seq));
            let inverse_path = inverse_dir(root, &chunk.job_id).join(part_name(chunk.seq));
            write_part(&transform_path, &transformed)?;
            write_part(&inverse_path, &inverse)?;
            let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
            let sizes = (size(&transform_path), size(&inverse_path));
            (transform_path.display().to_string(), inverse_path.display().to_string(), Vec::new(), sizes)
        }
        Root::Remote(root) => {
            let key = |dir: String| root.key(&format!("{dir}/{}", part_name(chunk.seq)));
            let (transform_key, inverse_key) = (key(transform_name(&chunk.job_id)), key(inverse_name(&chunk.job_id)));
            let parts: Vec<(object_store::path::Path, bytes::Bytes)> = vec![
                (transform_key.clone(), encode_part(&transformed)?.into()),
                (inverse_key.clone(), encode_part(&inverse)?.into()),
            ];
            let sizes = (parts[0].1.len() as u64, parts[1].1.len() as u64);
            (root.url_of(&transform_key), root.url_of(&inverse_key), parts, sizes)
        }
    };
    let written = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let issue = |kind: &'static str| {
        move |(column, rows): (String, u64)| ValueIssueRow {
            job_id: chunk.job_id.clone(),
            chunk: chunk.seq,
            column,
            kind: kind.to_string(),
            rows,
        }
    };
    let issues = report
        .unseen
        .into_iter()
        .map(issue("unseen"))
        .chain(report.invalid.into_iter().map(issue("invalid")))
        .collect();
    let output = OutputRow {
        job_id: chunk.job_id.clone(),
        chunk: chunk.seq,
        partition: chunk.partition,
        offset: chunk.offset,
        rows: batch.num_rows() as u64,
        transform_path,
        inverse_path,
        decode_ms: ms(started, decoded),
        transform_ms: ms(decoded, computed),
        write_ms: ms(computed, written),
        worker: worker.to_string(),
        created_at: unix_now(),
    };
    let lineage = ChunkLineage {
        started: started_at,
        transformed: transformed_at,
        inverted: inverted_at,
        written: SystemTime::now(),
        input_schema: batch.schema(),
        transform_schema: transformed.schema(),
        transform_bytes,
        inverse_bytes,
    };
    Ok(Processed { output, issues, parts, lineage })
}

/// Put the parts [`process`] encoded for an object store, each in one request: a reader
/// sees no part or a whole one, and a redelivered chunk puts the same bytes again.
///
/// # Errors
/// [`ChunkError::Put`] with the store's reason.
pub async fn put_parts(
    root: &ObjectRoot,
    parts: Vec<(object_store::path::Path, bytes::Bytes)>,
) -> Result<(), ChunkError> {
    for (key, bytes) in parts {
        root.put(&key, bytes)
            .await
            .map_err(|e| ChunkError::Put { location: root.url_of(&key), reason: e.to_string() })?;
    }
    Ok(())
}

/// Write one Parquet part under a temporary name, then rename: a reader never sees half
/// a part, and a redelivered chunk replaces its part with the same bytes.
fn write_part(path: &Path, batch: &RecordBatch) -> Result<(), ChunkError> {
    write_atomically(path, |file| write_parquet(file, batch))
        .map_err(|source| ChunkError::Write { path: path.display().to_string(), source })
}

/// One Parquet part in memory, for an object store.
fn encode_part(batch: &RecordBatch) -> Result<Vec<u8>, ChunkError> {
    let mut bytes = Vec::new();
    write_parquet(&mut bytes, batch).map_err(|e| ChunkError::BadMessage(format!("encoding a part: {e}")))?;
    Ok(bytes)
}

fn write_parquet<W: std::io::Write + Send>(out: W, batch: &RecordBatch) -> std::io::Result<()> {
    parts::write_parquet(out, batch, parts::part_properties(&batch.schema()))
}
