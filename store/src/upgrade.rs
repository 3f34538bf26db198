//! Opening a database made by an older version: tables whose kind or sorting key changed
//! are re-made with nothing lost, and columns added since are added. Run by
//! [`Index::connect`] around the DDL.

use clickhouse::Client;

use crate::{Index, IndexError};

/// Tables whose sorting key changed since they were first created, with the key they
/// have now (as `system.tables.sorting_key` spells it).
const REKEYED: [(&str, &str); 1] = [("dead_letters", "job_id, topic, partition, offset")];

impl Index {
    /// Tables whose kind changed, dropped from a database made by an older version so that
    /// the DDL creates them anew: the hourly aggregates were a materialized view, which
    /// counted a row twice when two sinks inserted it, and are now a plain view over the
    /// deduplicated rows (nothing is lost: the view's rows are computed from
    /// `game_rounds`).
    pub(crate) async fn retire(&self, root: &Client, database: &str) -> Result<(), IndexError> {
        const RETIRED: [(&str, &str); 1] = [("hourly_aggregated_game_rounds", "MaterializedView")];
        for (table, engine) in RETIRED {
            let sql = "SELECT count() FROM system.tables WHERE database = ? AND name = ? AND engine = ?";
            if self.count_of(root, sql, [database, table, engine]).await? > 0 {
                self.run(root.query(&format!("DROP TABLE IF EXISTS {database}.{table}")).execute()).await?;
            }
        }
        Ok(())
    }

    /// Tables whose sorting key changed, which ClickHouse cannot alter: a table made by an
    /// older version is renamed `<table>_rekeyed` (writers meanwhile fail and retry), the
    /// DDL creates it anew, and [`Index::refill_rekeyed`] copies the rows back.
    /// `dead_letters` was ordered by origin (topic, partition, offset), so counting one
    /// job's letters read every job's; now the job comes first.
    pub(crate) async fn set_aside_rekeyed(&self, root: &Client, database: &str) -> Result<(), IndexError> {
        for (table, key) in REKEYED {
            let sql = "SELECT count() FROM system.tables WHERE database = ? AND name = ? AND sorting_key != ?";
            if self.count_of(root, sql, [database, table, key]).await? > 0 {
                let rename = format!("RENAME TABLE {database}.{table} TO {database}.{table}_rekeyed");
                self.run(root.query(&rename).execute()).await?;
            }
        }
        Ok(())
    }

    /// Copy the rows of tables set aside by [`Index::set_aside_rekeyed`] into their new
    /// tables and drop the old ones. Also finishes a copy a stopped process began: the
    /// tables deduplicate on their keys, so rows copied twice are kept once.
    pub(crate) async fn refill_rekeyed(&self, root: &Client, database: &str) -> Result<(), IndexError> {
        for (table, _) in REKEYED {
            let old = format!("{table}_rekeyed");
            let sql = "SELECT count() FROM system.tables WHERE database = ? AND name = ?";
            if self.count_of(root, sql, [database, &old]).await? > 0 {
                let copy = format!("INSERT INTO {database}.{table} SELECT * FROM {database}.{old}");
                self.run(root.query(&copy).execute()).await?;
                self.run(root.query(&format!("DROP TABLE IF EXISTS {database}.{old}")).execute()).await?;
            }
        }
        Ok(())
    }

    /// A `SELECT count()` of the system tables with bound strings.
    async fn count_of<const N: usize>(&self, root: &Client, sql: &str, binds: [&str; N]) -> Result<u64, IndexError> {
        let query = binds.iter().fold(root.query(sql), |q, b| q.bind(*b));
        self.run(query.fetch_one::<u64>()).await
    }

    /// Columns added since a table was first created: databases made by an older version
    /// get them here (ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`).
    pub(crate) async fn migrate(&self, root: &Client, database: &str) -> Result<(), IndexError> {
        const ADDED: [(&str, &str, &str); 1] = [("jobs", "chunk_rows", "UInt64")];
        for (table, column, kind) in ADDED {
            let sql = "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?";
            if self.count_of(root, sql, [database, table, column]).await? == 0 {
                self.run(root.query(&format!("ALTER TABLE {database}.{table} ADD COLUMN {column} {kind}")).execute())
                    .await?;
            }
        }
        Ok(())
    }
}
