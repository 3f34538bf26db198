-- OpenLineage run events, one row per (run, event type): every stage of every job and
-- pipeline run (fit, publish, transform, inverse, index; features, merge, train,
-- register). `root_id` is the shardflow job or pipeline run the stage belongs to; a
-- redelivered chunk writes the same run ids again and replaces its rows.
CREATE TABLE IF NOT EXISTS {database}.lineage_events
(
    root_id       String,
    run_id        String,
    event_type    String,
    event_time    DateTime,
    parent_run_id String,
    job_namespace String,
    job_name      String,
    event_json    String,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (root_id, run_id, event_type)
