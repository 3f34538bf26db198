//! shardflow's tables on a ClickHouse cluster (`clickhouse.cluster`; `docs/cluster.md`).
//! Each table of `schemas/sql` is created `ON CLUSTER` twice: as `<table>_local`, the
//! same columns and key with the `Replicated` variant of its engine (ZooKeeper copies
//! every insert to the other replicas and drops a block inserted twice), and under its own
//! name as a `Distributed` table over the local ones, so that every query reads the same
//! table names as on one server. Views are created `ON CLUSTER` as they are. Inserts go
//! to the node's `<table>_local` ([`Index::insert_table`]): a `Distributed` insert in
//! 18.16 is queued on disk and sent later, so a read right after it would miss the rows.
//!
//! The upgrade steps of older single-server databases (`upgrade.rs`) are not run on a
//! cluster: a cluster's database is made by this version.

use clickhouse::Client;

use crate::{Index, IndexError};

/// The replicated table under a cluster's `Distributed` table `table`.
pub fn local_table(table: &str) -> String {
    format!("{table}_local")
}

/// One statement of `schemas/sql` for a cluster: the table (or view) it creates, and the
/// statements that create it `ON CLUSTER`, in order.
#[derive(Debug, PartialEq)]
pub(crate) struct ClusterDdl {
    /// The name queries use.
    pub(crate) name: String,
    /// `<name>_local` for a table, `None` for a view.
    pub(crate) local: Option<String>,
    /// `CREATE ... ON CLUSTER` statements.
    pub(crate) statements: Vec<String>,
}

/// `ddl` (one `CREATE TABLE IF NOT EXISTS <database>.<name> (...) ENGINE = <engine> ...`
/// or `CREATE VIEW IF NOT EXISTS <database>.<name> AS ...`, with `--` comments) for
/// `cluster`; `None` for a statement of another shape (a defect of `schemas/sql`, which a
/// unit test rules out).
pub(crate) fn cluster_ddl(database: &str, cluster: &str, ddl: &str) -> Option<ClusterDdl> {
    let sql: Vec<&str> = ddl.lines().filter(|line| !line.trim_start().starts_with("--")).collect();
    let sql = sql.join("\n");
    let prefix = |kind: &str| format!("CREATE {kind} IF NOT EXISTS {database}.");
    let (table_prefix, view_prefix) = (prefix("TABLE"), prefix("VIEW"));
    let (kind_prefix, rest) = match (sql.find(&table_prefix), sql.find(&view_prefix)) {
        (Some(at), _) => (&table_prefix, &sql[at + table_prefix.len()..]),
        (None, Some(at)) => (&view_prefix, &sql[at + view_prefix.len()..]),
        (None, None) => return None,
    };
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let (name, body) = (&rest[..end], &rest[end..]);
    if kind_prefix == &view_prefix {
        let statement = format!("{kind_prefix}{name} ON CLUSTER {cluster}{body}");
        return Some(ClusterDdl { name: name.to_string(), local: None, statements: vec![statement] });
    }
    // `ENGINE = <Engine>[(<args>)]` becomes `ENGINE = Replicated<Engine>('<path>', '{replica}'[, <args>])`.
    let engine_at = body.find("ENGINE = ")? + "ENGINE = ".len();
    let after = &body[engine_at..];
    let engine_end = after.find(|c: char| !c.is_ascii_alphanumeric())?;
    let engine = &after[..engine_end];
    if !engine.ends_with("MergeTree") {
        return None;
    }
    let (args, tail) = match after[engine_end..].strip_prefix('(') {
        Some(open) => {
            let close = open.find(')')?;
            (format!(", {}", &open[..close]), &open[close + 1..])
        }
        None => (String::new(), &after[engine_end..]),
    };
    let local = local_table(name);
    let zk_path = format!("/clickhouse/tables/{{shard}}/{database}.{name}");
    let replicated = format!(
        "{kind_prefix}{local} ON CLUSTER {cluster}{columns}ENGINE = Replicated{engine}('{zk_path}', '{{replica}}'{args}){tail}",
        columns = &body[..engine_at - "ENGINE = ".len()],
    );
    let distributed = format!(
        "{kind_prefix}{name} ON CLUSTER {cluster} AS {database}.{local} ENGINE = Distributed({cluster}, {database}, {local})"
    );
    Some(ClusterDdl { name: name.to_string(), local: Some(local), statements: vec![replicated, distributed] })
}

impl Index {
    /// Create the database and every table `ON CLUSTER` where the node that answered
    /// lacks them. A statement `ON CLUSTER` waits for every node; when one is down it
    /// fails after `distributed_ddl_task_timeout`, yet the node that answered has run it
    /// and the absent one runs it from ZooKeeper's queue when it returns: what counts is
    /// that the table exists here.
    pub(crate) async fn create_on_cluster(
        &self,
        root: &Client,
        database: &str,
        cluster: &str,
    ) -> Result<(), IndexError> {
        // Half the call's timeout: the wait for absent nodes ends before the call does.
        let wait = (self.timeout.as_secs() / 2).max(1).to_string();
        let root = root.clone().with_setting("distributed_ddl_task_timeout", wait);
        let exists = |name: String| {
            let root = root.clone();
            async move {
                let sql = "SELECT count() FROM system.tables WHERE database = ? AND name = ?";
                self.run(root.query(sql).bind(database).bind(&name).fetch_one::<u64>()).await.map(|n| n > 0)
            }
        };
        let database_exists = {
            let sql = "SELECT count() FROM system.databases WHERE name = ?";
            self.run(root.query(sql).bind(database).fetch_one::<u64>()).await? > 0
        };
        if !database_exists {
            let create = format!("CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}");
            self.ddl_on_cluster(&root, &create).await?;
        }
        for (file, ddl) in shardflow_schemas::clickhouse_ddl(database) {
            let Some(plan) = cluster_ddl(database, cluster, &ddl) else {
                let shape = format!("schemas/sql/{file} is neither a MergeTree table nor a view: no cluster form");
                return Err(IndexError::new(&self.nodes[0].url, clickhouse::error::Error::Custom(shape)));
            };
            for (statement, name) in plan.statements.iter().zip(plan.local.iter().chain([&plan.name])) {
                if !exists(name.clone()).await? {
                    self.ddl_on_cluster(&root, statement).await?;
                    if !exists(name.clone()).await? {
                        let missing = clickhouse::error::Error::Custom(format!(
                            "{database}.{name} was not created on this node by: {statement}"
                        ));
                        return Err(IndexError::new(&self.nodes[0].url, missing));
                    }
                }
            }
        }
        Ok(())
    }

    /// Run one `ON CLUSTER` statement; a timeout waiting for other nodes (code 159) is no
    /// failure here: the caller checks the node it talks to.
    async fn ddl_on_cluster(&self, root: &Client, statement: &str) -> Result<(), IndexError> {
        match self.run(root.query(statement).execute()).await {
            Err(e) if e.code() == Some(159) => {
                tracing::warn!(error = %e, "ClickHouse: a cluster node has not run the DDL yet (it will from the queue)");
                Ok(())
            }
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_file_has_a_cluster_form() {
        for (file, ddl) in shardflow_schemas::clickhouse_ddl("db") {
            let plan = cluster_ddl("db", "c", &ddl).unwrap_or_else(|| panic!("{file} has no cluster form"));
            for statement in &plan.statements {
                assert!(statement.contains(" ON CLUSTER c"), "{file}: {statement}");
            }
            if let Some(local) = &plan.local {
                assert!(plan.statements[0].contains("ENGINE = Replicated"), "{file}: {}", plan.statements[0]);
                assert!(plan.statements[1].ends_with(&format!("ENGINE = Distributed(c, db, {local})")), "{file}");
            }
        }
    }

    #[test]
    fn engines_become_replicated_with_their_arguments() {
        let ddl = "-- jobs\nCREATE TABLE IF NOT EXISTS db.jobs\n(\n    job_id String, -- id\n    version UInt64\n)\n\
                   ENGINE = ReplacingMergeTree(version)\nORDER BY job_id\n";
        let plan = cluster_ddl("db", "c", ddl).expect("a table");
        assert_eq!(plan.name, "jobs");
        assert_eq!(plan.local.as_deref(), Some("jobs_local"));
        assert_eq!(
            plan.statements[0],
            "CREATE TABLE IF NOT EXISTS db.jobs_local ON CLUSTER c\n(\n    job_id String, -- id\n    version UInt64\n)\n\
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.jobs', '{replica}', version)\nORDER BY job_id"
        );
        assert_eq!(
            plan.statements[1],
            "CREATE TABLE IF NOT EXISTS db.jobs ON CLUSTER c AS db.jobs_local ENGINE = Distributed(c, db, jobs_local)"
        );
        let plain = cluster_ddl("db", "c", "CREATE TABLE IF NOT EXISTS db.k (a String) ENGINE = MergeTree ORDER BY a")
            .expect("a table");
        assert_eq!(
            plain.statements[0],
            "CREATE TABLE IF NOT EXISTS db.k_local ON CLUSTER c (a String) \
             ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db.k', '{replica}') ORDER BY a"
        );
        let view = cluster_ddl("db", "c", "CREATE VIEW IF NOT EXISTS db.v\nAS SELECT 1").expect("a view");
        assert_eq!(view.statements, vec!["CREATE VIEW IF NOT EXISTS db.v ON CLUSTER c\nAS SELECT 1".to_string()]);
        assert_eq!(cluster_ddl("db", "c", "CREATE TABLE IF NOT EXISTS db.m (a String) ENGINE = Memory"), None);
    }
}
