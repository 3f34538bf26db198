//! The game-rounds tables: rounds, their hourly aggregates, uploads and the Avro schemas
//! shardflow numbered. User values reach ClickHouse only as bound parameters.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use shardflow_schemas::rounds::GameRound;

use shardflow_store::{Index, IndexError, UploadStatus, unix_now};

/// A game round as stored in `game_rounds`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct GameRoundRow {
    /// Upload the row came from.
    pub upload_id: String,
    /// Its CSV line.
    pub line: u64,
    /// Unix seconds, UTC.
    pub created_timestamp: u32,
    /// Round id.
    pub game_instance_id: String,
    /// Player.
    pub user_id: String,
    /// Game.
    pub game_id: String,
    /// Real money bet.
    pub real_amount_bet: Option<f64>,
    /// Bonus money bet.
    pub bonus_amount_bet: Option<f64>,
    /// Real money won.
    pub real_amount_win: Option<f64>,
    /// Bonus money won.
    pub bonus_amount_win: Option<f64>,
    /// Game name.
    pub game_name: String,
    /// Provider.
    pub provider: String,
}

impl From<GameRound> for GameRoundRow {
    fn from(r: GameRound) -> Self {
        let created_timestamp = r.created_seconds();
        Self {
            upload_id: r.upload_id,
            line: r.line,
            created_timestamp,
            game_instance_id: r.game_instance_id,
            user_id: r.user_id,
            game_id: r.game_id,
            real_amount_bet: r.real_amount_bet,
            bonus_amount_bet: r.bonus_amount_bet,
            real_amount_win: r.real_amount_win,
            bonus_amount_win: r.bonus_amount_win,
            game_name: r.game_name,
            provider: r.provider,
        }
    }
}

/// Count and sums of the four amounts (nulls as 0) over one hour.
#[derive(Clone, Debug, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct HourSums {
    /// Unix seconds of the hour's start, UTC.
    pub hour: u32,
    /// Rounds.
    pub rounds: u64,
    /// Sum of `real_amount_bet`.
    pub real_amount_bet: f64,
    /// Sum of `bonus_amount_bet`.
    pub bonus_amount_bet: f64,
    /// Sum of `real_amount_win`.
    pub real_amount_win: f64,
    /// Sum of `bonus_amount_win`.
    pub bonus_amount_win: f64,
}

impl HourSums {
    /// Add one round.
    pub fn add(&mut self, round: &GameRound) {
        self.rounds += 1;
        self.real_amount_bet += round.real_amount_bet.unwrap_or(0.0);
        self.bonus_amount_bet += round.bonus_amount_bet.unwrap_or(0.0);
        self.real_amount_win += round.real_amount_win.unwrap_or(0.0);
        self.bonus_amount_win += round.bonus_amount_win.unwrap_or(0.0);
    }

    /// Same hour and count, sums equal to a relative `1e-9` (float sums depend on order).
    pub fn matches(&self, other: &Self) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        self.hour == other.hour
            && self.rounds == other.rounds
            && close(self.real_amount_bet, other.real_amount_bet)
            && close(self.bonus_amount_bet, other.bonus_amount_bet)
            && close(self.real_amount_win, other.real_amount_win)
            && close(self.bonus_amount_win, other.bonus_amount_win)
    }
}

/// One row of `hourly_aggregated_game_rounds`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct AggregateRow {
    /// Unix seconds of the hour's start, UTC.
    pub hour: u32,
    /// Game.
    pub game_id: String,
    /// Player.
    pub user_id: String,
    /// Game name.
    pub game_name: String,
    /// Provider.
    pub provider: String,
    /// Rounds.
    pub rounds: u64,
    /// Sum of `real_amount_bet`.
    pub total_real_amount_bet: f64,
    /// Sum of `bonus_amount_bet`.
    pub total_bonus_amount_bet: f64,
    /// Sum of `real_amount_win`.
    pub total_real_amount_win: f64,
    /// Sum of `bonus_amount_win`.
    pub total_bonus_amount_win: f64,
}

/// Which aggregates to read; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct AggregateFilter {
    /// Only this player.
    pub user_id: Option<String>,
    /// Only this game.
    pub game_id: Option<String>,
    /// Hours at or after (unix seconds).
    pub start: Option<u32>,
    /// Hours before (unix seconds).
    pub end: Option<u32>,
}

/// One state of a CSV upload (the row with the highest `version` is current).
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct UploadRow {
    /// Upload id.
    pub upload_id: String,
    /// File name the client sent.
    pub file_name: String,
    /// Where the upload is kept.
    pub path: String,
    /// Where the upload is.
    pub status: UploadStatus,
    /// Bytes received.
    pub bytes: u64,
    /// Data rows read (good and bad).
    pub rows_read: u64,
    /// Rows the broker acknowledged.
    pub rows_published: u64,
    /// Rows that could not be read, never published.
    pub bad_rows: u64,
    /// JSON: the first bad rows, `[{"line": N, "reason": "..."}]`.
    pub bad_row_samples: String,
    /// JSON: per-hour count and sums read from the CSV, `[HourSums]`.
    pub hourly: String,
    /// Why the upload failed, or empty.
    pub error: String,
    /// Unix seconds.
    pub created_at: u32,
    /// Unix seconds of this state.
    pub updated_at: u32,
    /// Orders the states.
    pub version: u64,
}

/// The aggregates' filter, applied to the rows before they are grouped (an hour starts at
/// or after `start` exactly when its rounds do, and before `end` when they are before the
/// start of `end`'s hour).
const FILTER: &str = "(? = '' OR user_id = ?) AND (? = '' OR game_id = ?) \
     AND toStartOfHour(created_timestamp) >= toDateTime(?) AND toStartOfHour(created_timestamp) < toDateTime(?)";

/// Hourly sums per game and player from the deduplicated rows, as the view
/// `hourly_aggregated_game_rounds` computes them, with the filter inside.
const HOURLY: &str = "SELECT toUInt32(toStartOfHour(created_timestamp)) AS hour, game_id, user_id, game_name, provider, \
     count() AS rounds, sum(ifNull(real_amount_bet, 0)) AS total_real_amount_bet, \
     sum(ifNull(bonus_amount_bet, 0)) AS total_bonus_amount_bet, sum(ifNull(real_amount_win, 0)) AS total_real_amount_win, \
     sum(ifNull(bonus_amount_win, 0)) AS total_bonus_amount_win \
     FROM game_rounds FINAL";

/// The game-rounds tables on shardflow's ClickHouse database.
#[derive(Clone)]
pub struct RoundsStore {
    index: Index,
}

impl RoundsStore {
    /// The rounds tables of `index`'s database (created with the rest by [`Index::connect`]).
    pub fn new(index: Index) -> Self {
        Self { index }
    }

    /// Insert a batch of rounds in one INSERT.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_rounds(&self, rows: &[GameRoundRow]) -> Result<(), IndexError> {
        self.index.insert_all("game_rounds", rows).await
    }

    /// Record a state of an upload.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_upload(&self, row: &UploadRow) -> Result<(), IndexError> {
        self.index.insert("uploads", row).await
    }

    /// The current state of an upload.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn upload(&self, upload_id: &str) -> Result<Option<UploadRow>, IndexError> {
        self.index
            .run(
                self.index
                    .client()
                    .query("SELECT ?fields FROM uploads FINAL WHERE upload_id = ? ORDER BY version DESC LIMIT 1")
                    .bind(upload_id)
                    .fetch_optional(),
            )
            .await
    }

    /// Per-hour count and sums of an upload's rounds as ClickHouse holds them, by hour.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn upload_hourly(&self, upload_id: &str) -> Result<Vec<HourSums>, IndexError> {
        self.index.run(
            self.index.client()
                .query(
                    "SELECT toUInt32(toStartOfHour(created_timestamp)) AS hour, count() AS rounds, \
                     sum(ifNull(real_amount_bet, 0)) AS real_amount_bet, sum(ifNull(bonus_amount_bet, 0)) AS bonus_amount_bet, \
                     sum(ifNull(real_amount_win, 0)) AS real_amount_win, sum(ifNull(bonus_amount_win, 0)) AS bonus_amount_win \
                     FROM game_rounds FINAL WHERE upload_id = ? GROUP BY hour ORDER BY hour",
                )
                .bind(upload_id)
                .fetch_all(),
        )
        .await
    }

    /// One page of hourly aggregates matching `filter`, in (hour, game, player) order, and
    /// how many match in all.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn aggregates(
        &self,
        filter: &AggregateFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<AggregateRow>, u64), IndexError> {
        let bind = |q: clickhouse::query::Query| {
            // `? = '' OR column = ?`: an absent filter binds '' and matches every row.
            let (user_id, game_id) = (filter.user_id.as_deref().unwrap_or(""), filter.game_id.as_deref().unwrap_or(""));
            q.bind(user_id)
                .bind(user_id)
                .bind(game_id)
                .bind(game_id)
                .bind(filter.start.unwrap_or(0))
                .bind(filter.end.unwrap_or(u32::MAX))
        };
        // From the rows `(upload_id, line)` deduplicates, filtered before grouping: a row
        // stored twice (two sinks, a redelivery) is counted once, by construction.
        let group = "GROUP BY hour, game_id, user_id, game_name, provider";
        let rows = bind(self.index.client().query(&format!(
            "{HOURLY} WHERE {FILTER} {group} ORDER BY hour, game_id, user_id, game_name, provider LIMIT ?, ?"
        )))
        .bind(offset)
        .bind(limit);
        let total = bind(self.index.client().query(&format!(
            "SELECT count() FROM (SELECT toStartOfHour(created_timestamp) AS hour, game_id, user_id, game_name, provider \
             FROM game_rounds FINAL WHERE {FILTER} {group})"
        )));
        let rows = self.index.run(rows.fetch_all()).await?;
        let total = self.index.run(total.fetch_one::<u64>()).await?;
        Ok((rows, total))
    }

    /// Keep a schema shardflow numbered itself (a repeat replaces, never adds).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn register_schema(&self, schema_id: u32, subject: &str, schema: &str) -> Result<(), IndexError> {
        #[derive(Row, Serialize, Deserialize)]
        struct SchemaRow<'a> {
            schema_id: u32,
            subject: &'a str,
            schema: &'a str,
            created_at: u32,
        }
        self.index
            .run(async {
                let mut insert =
                    self.index.client().insert::<SchemaRow<'_>>(&self.index.insert_table("avro_schemas")).await?;
                insert.write(&SchemaRow { schema_id, subject, schema, created_at: unix_now() }).await?;
                insert.end().await
            })
            .await
    }

    /// A schema shardflow numbered, by id.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn schema(&self, schema_id: u32) -> Result<Option<String>, IndexError> {
        self.index
            .run(
                self.index
                    .client()
                    .query("SELECT schema FROM avro_schemas WHERE schema_id = ? LIMIT 1")
                    .bind(schema_id)
                    .fetch_optional(),
            )
            .await
    }
}
