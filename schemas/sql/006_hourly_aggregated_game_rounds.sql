-- Sums of the four amounts per hour (UTC), game and player, computed from the
-- deduplicated rows (`game_rounds FINAL`) whenever it is read. It is a plain view, not a
-- materialized one: a view that adds up every insert counts a row twice when two sinks
-- insert it (a paused member, an insert the server completed after the client gave up),
-- and misses it when its own push fails after the source block was written. Computed
-- from the rows that (upload_id, line) deduplicates, the sums are right by construction.
CREATE VIEW IF NOT EXISTS {database}.hourly_aggregated_game_rounds
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
FROM {database}.game_rounds FINAL
GROUP BY hour, game_id, user_id, game_name, provider
