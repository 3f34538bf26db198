-- Avro schemas shardflow numbered itself (no Schema Registry configured), by id.
CREATE TABLE IF NOT EXISTS {database}.avro_schemas
(
    schema_id  UInt32,
    subject    String,
    schema     String,
    created_at DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY schema_id
