-- One row per state change of a job; the highest version is the job's current state
-- (read with FINAL or argMax). status: publishing | published | failed.
CREATE TABLE IF NOT EXISTS {database}.jobs
(
    job_id     String,
    dataset    String,
    source     String,
    model_id   String,
    status     String,
    rows       UInt64,
    chunks     UInt64,
    error      String,
    created_at DateTime,
    updated_at DateTime,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY job_id
