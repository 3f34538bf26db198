-- Values a chunk's transform could not encode as they were, per column: `unseen` (a
-- category the fit never saw) or `invalid` (not a number in a numeric column). Written
-- before the chunk's `outputs` row; a redelivered chunk replaces its rows.
CREATE TABLE IF NOT EXISTS {database}.value_issues
(
    job_id  String,
    chunk   UInt64,
    column  String,
    kind    String,
    rows    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, chunk, column, kind)
