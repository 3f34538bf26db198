-- One logical row per (job, chunk): a redelivered chunk replaces its row, never adds one.
CREATE TABLE IF NOT EXISTS {database}.outputs
(
    job_id         String,
    chunk          UInt64,
    partition      Int32,
    offset         Int64,
    rows           UInt64,
    transform_path String,
    inverse_path   String,
    decode_ms      Float64,
    transform_ms   Float64,
    write_ms       Float64,
    worker         String,
    created_at     DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, chunk)
