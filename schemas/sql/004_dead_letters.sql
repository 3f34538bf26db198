-- Messages that can never be processed (undecodable, another schema, unknown model, a
-- transform error), with the raw payload; one logical row per (topic, partition, offset),
-- ordered by job first so that one job's letters are read without the others'.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    topic      String,
    partition  Int32,
    offset     Int64,
    job_id     String,
    chunk      Int64,
    error      String,
    payload    String,
    worker     String,
    created_at DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (job_id, topic, partition, offset)
