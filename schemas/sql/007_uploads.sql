-- One row per state change of a CSV upload; the highest version is current.
-- status: publishing | published | failed. bad_row_samples and hourly are JSON: the first
-- bad rows with their line and reason, and the per-hour count and sums read from the CSV.
CREATE TABLE IF NOT EXISTS {database}.uploads
(
    upload_id       String,
    file_name       String,
    path            String,
    status          String,
    bytes           UInt64,
    rows_read       UInt64,
    rows_published  UInt64,
    bad_rows        UInt64,
    bad_row_samples String,
    hourly          String,
    error           String,
    created_at      DateTime,
    updated_at      DateTime,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY upload_id
