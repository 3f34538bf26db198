-- Game rounds from CSV uploads. (upload_id, line) names a CSV row, so a batch inserted
-- again after a redelivery replaces its rows, never adds (read with FINAL).
CREATE TABLE IF NOT EXISTS {database}.game_rounds
(
    upload_id         String,
    line              UInt64,
    created_timestamp DateTime('UTC'),
    game_instance_id  String,
    user_id           String,
    game_id           String,
    real_amount_bet   Nullable(Float64),
    bonus_amount_bet  Nullable(Float64),
    real_amount_win   Nullable(Float64),
    bonus_amount_win  Nullable(Float64),
    game_name         String,
    provider          String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_timestamp)
ORDER BY (upload_id, line)
