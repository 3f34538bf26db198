-- Sums of the four amounts per hour (UTC), game and player, kept up to date by every
-- insert into game_rounds. Parts merge lazily: read with sum() ... GROUP BY.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.hourly_aggregated_game_rounds
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, game_id, user_id, game_name, provider)
AS SELECT
    toStartOfHour(created_timestamp) AS hour,
    game_id,
    user_id,
    game_name,
    provider,
    count() AS rounds,
    sum(ifNull(real_amount_bet, 0)) AS total_real_amount_bet,
    sum(ifNull(bonus_amount_bet, 0)) AS total_bonus_amount_bet,
    sum(ifNull(real_amount_win, 0)) AS total_real_amount_win,
    sum(ifNull(bonus_amount_win, 0)) AS total_bonus_amount_win
FROM {database}.game_rounds
GROUP BY hour, game_id, user_id, game_name, provider
