-- Stages of pipeline runs: what each stage read and wrote, keyed by its fingerprint (its
-- inputs' content, its parameters and its code version). A stage whose fingerprint has a
-- `succeeded` row with outputs still in place is skipped.
CREATE TABLE IF NOT EXISTS {database}.stage_runs
(
    pipeline     String,
    run_id       String,
    stage        String,
    fingerprint  String,
    status       String,
    outputs_json String,
    error        String,
    started_at   DateTime,
    finished_at  DateTime,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (pipeline, run_id, stage)
