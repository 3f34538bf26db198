-- Messages that can never be processed (undecodable, another schema, unknown model, a
-- transform error), with the raw payload; one logical row per (topic, partition, offset).
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
ORDER BY (topic, partition, offset)
