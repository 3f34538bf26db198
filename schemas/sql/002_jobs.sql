-- One row per state change of a job; the highest version is the job's current state
-- (read with FINAL or argMax). status: fitting | publishing | published | failed.
-- chunk_rows: rows per chunk, so that a job resumed after a crash cuts the same chunks.
CREATE TABLE IF NOT EXISTS {database}.jobs
(
    job_id     String,
    dataset    String,
    source     String,
    model_id   String,
    status     String,
    chunk_rows UInt64,
    rows       UInt64,
    chunks     UInt64,
    error      String,
    created_at DateTime,
    updated_at DateTime,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY job_id
