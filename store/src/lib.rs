//! The ClickHouse store ("the index"): models, jobs, outputs and dead letters, with typed
//! rows and statuses. Tables are created at start from the DDL in `schemas/sql`; SQL stays
//! within what ClickHouse 18.16 understands. Other pipelines (game rounds) add their own
//! queries on the same handle through [`Index::client`] and [`Index::run`].
#![warn(missing_docs)]

pub mod cluster;
pub mod datasets;
pub mod lineage;
mod rows;
pub mod status;
mod upgrade;

pub use datasets::{DatasetRow, ValueIssueRow, ValueIssueTotal, model_source};
pub use rows::*;
use rows::{bind_all, job_conditions, job_summaries};
pub use status::{JobState, JobStatus, UnknownStatus, UploadStatus};

use clickhouse::Client;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shardflow_config::ClickHouseConfig;

/// A failed ClickHouse call, with the server's error code when it answered with one.
#[derive(Debug, thiserror::Error)]
#[error("ClickHouse at {url}: {source}")]
pub struct IndexError {
    url: String,
    /// The server's exception code (`Code: 117` is 117), read once when the error is made.
    code: Option<u32>,
    #[source]
    source: clickhouse::error::Error,
}

/// What a failure means for the message being processed, decided once from the typed
/// error (as Vector's `ClickhouseRetryLogic` does). The consumers' retry policy
/// (`shardflow_kafka::retry`) acts on it; other crates' errors answer the same question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A service could not be reached (refused connection, timeout, 503): nothing is
    /// known about the message; retried for as long as it lasts.
    Unavailable,
    /// May pass (a server error, a file that cannot be written now): retried, up to the
    /// cap on attempts.
    Transient,
    /// Never passes: the data or the statement is wrong. Dead-lettered at once.
    Permanent,
}

/// Server codes that say the request itself is wrong: incorrect data (117), type
/// mismatch (53), unparsable SQL (62).
const PERMANENT_CODES: [u32; 3] = [117, 53, 62];

impl IndexError {
    fn new(url: &str, source: clickhouse::error::Error) -> Self {
        let code = match &source {
            clickhouse::error::Error::BadResponse(text) => server_code(text),
            _ => None,
        };
        Self { url: url.to_string(), code, source }
    }

    /// The server's exception code, when it answered with one.
    pub fn code(&self) -> Option<u32> {
        self.code
    }

    /// What this failure means: the server's code decides when it answered with one
    /// (117, 53, 62 permanent, any other transient); no answer at all is unavailability;
    /// a client-side error (rows that do not serialize, a bad parameter) is permanent.
    pub fn retry(&self) -> Retry {
        match (&self.source, self.code) {
            (_, Some(code)) if PERMANENT_CODES.contains(&code) => Retry::Permanent,
            (clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut, _) => Retry::Unavailable,
            (clickhouse::error::Error::BadResponse(_), _) => Retry::Transient,
            _ => Retry::Permanent,
        }
    }

    /// Whether trying again later may succeed (`retry()` is not permanent).
    pub fn is_retryable(&self) -> bool {
        self.retry() != Retry::Permanent
    }
}

/// The code of a ClickHouse exception text, `Code: 117, e.displayText() = ...`.
fn server_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// One ClickHouse server: a client on shardflow's database, and its URL for errors.
#[derive(Clone)]
struct Node {
    client: Client,
    url: String,
}

/// Handle on shardflow's tables in one ClickHouse database, on one server or on the nodes
/// of a cluster (`clickhouse.cluster`; see [`cluster`]).
#[derive(Clone)]
pub struct Index {
    /// The configured URL first, then the fallbacks, in order.
    nodes: Arc<[Node]>,
    /// The node that answered last: calls go there first.
    active: Arc<AtomicUsize>,
    timeout: std::time::Duration,
    cluster: Option<String>,
}

impl Index {
    /// Connect, creating the database and tables when missing: on the first node that
    /// answers, and on a cluster `ON CLUSTER` (see [`cluster`]).
    ///
    /// # Errors
    /// When no node answers or ClickHouse refuses the DDL.
    pub async fn connect(config: &ClickHouseConfig) -> Result<Self, IndexError> {
        let roots: Arc<[Node]> = std::iter::once(&config.url)
            .chain(&config.fallback_urls)
            .map(|url| Node {
                client: Client::default()
                    .with_url(url.as_str())
                    .with_user(&config.user)
                    .with_password(&config.password)
                    .with_validation(false),
                url: url.to_string(),
            })
            .collect();
        let on_roots = Self {
            nodes: roots.clone(),
            active: Arc::new(AtomicUsize::new(0)),
            timeout: config.timeout,
            cluster: config.cluster.clone(),
        };
        // The DDL runs on the first node that answers (ON CLUSTER reaches the others), and
        // calls start there. Asked without the database, which may not exist yet.
        on_roots.ping().await?;
        let nodes = roots
            .iter()
            .map(|node| Node { client: node.client.clone().with_database(&config.database), url: node.url.clone() })
            .collect();
        let index = Self { nodes, ..on_roots };
        let root = &roots[index.active.load(Ordering::Relaxed)].client;
        // The names were checked to be identifiers when the configuration was loaded.
        if let Some(cluster) = &config.cluster {
            return index.create_on_cluster(root, &config.database, cluster).await.map(|()| index);
        }
        index.run(root.query(&format!("CREATE DATABASE IF NOT EXISTS {}", config.database)).execute()).await?;
        index.retire(root, &config.database).await?;
        index.set_aside_rekeyed(root, &config.database).await?;
        for (_, ddl) in shardflow_schemas::clickhouse_ddl(&config.database) {
            index.run(root.query(&ddl).execute()).await?;
        }
        index.migrate(root, &config.database).await?;
        index.refill_rekeyed(root, &config.database).await?;
        Ok(index)
    }

    /// Await one ClickHouse call, giving up after the configured timeout: a server that
    /// hangs must fail the call (and let it be retried), not stall the caller. The call is
    /// made on one node ([`Index::client`]'s); [`Index::call`] fails over.
    ///
    /// # Errors
    /// [`IndexError`] with the cause, or a timeout.
    pub async fn run<T>(&self, call: impl Future<Output = clickhouse::error::Result<T>>) -> Result<T, IndexError> {
        let url = &self.nodes[self.active.load(Ordering::Relaxed)].url;
        self.bounded(url, call).await
    }

    async fn bounded<T>(
        &self,
        url: &str,
        call: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, IndexError> {
        let source = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => clickhouse::error::Error::TimedOut,
        };
        Err(IndexError::new(url, source))
    }

    /// Make the call `make` builds on a node's client, bounded as [`Index::run`]: first on
    /// the node that answered last, then, while nodes do not answer (refused, timed out),
    /// on the next ones in order. A node that answers with an error decides: its error is
    /// returned. Repeating a call on another node is safe: every table deduplicates
    /// (replaced rows, and replicated inserts by block).
    ///
    /// # Errors
    /// The error of the node that answered, or the last node's when none did.
    pub async fn call<T, F, Fut>(&self, make: F) -> Result<T, IndexError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        let first = self.active.load(Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let at = (first + tried) % self.nodes.len();
            let node = &self.nodes[at];
            match self.bounded(&node.url, make(&node.client)).await {
                Ok(value) => {
                    if at != first {
                        self.active.store(at, Ordering::Relaxed);
                        tracing::warn!(url = %node.url, "ClickHouse: failed over to another node");
                    }
                    return Ok(value);
                }
                Err(e) if e.retry() == Retry::Unavailable && tried + 1 < self.nodes.len() => {
                    tracing::warn!(error = %e, "ClickHouse node does not answer: trying the next");
                    tried += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether ClickHouse answers (some node, on a cluster).
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), IndexError> {
        self.call(|c| c.query("SELECT 1").fetch_one::<u8>()).await.map(|_| ())
    }

    /// The ClickHouse client on shardflow's database, on the node that answered last, for
    /// queries of other pipelines.
    pub fn client(&self) -> &Client {
        &self.nodes[self.active.load(Ordering::Relaxed)].client
    }

    /// The table an insert into `table` writes: `table` itself on one server; on a cluster
    /// the node's replicated `<table>_local`, so that the rows can be read back at once (an
    /// insert into the `Distributed` table is queued and sent later).
    pub fn insert_table<'a>(&self, table: &'a str) -> Cow<'a, str> {
        match self.cluster {
            Some(_) => Cow::Owned(cluster::local_table(table)),
            None => Cow::Borrowed(table),
        }
    }

    /// Insert one row into `table`.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert<T: clickhouse::RowOwned + clickhouse::RowWrite>(
        &self,
        table: &str,
        row: &T,
    ) -> Result<(), IndexError> {
        self.insert_all(table, std::slice::from_ref(row)).await
    }

    /// Insert `rows` into `table` in one INSERT (none: nothing is sent).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_all<T: clickhouse::RowOwned + clickhouse::RowWrite>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), IndexError> {
        if rows.is_empty() {
            return Ok(());
        }
        let table = self.insert_table(table);
        self.call(|c| {
            let (c, table) = (c.clone(), table.clone());
            async move {
                let mut insert = c.insert::<T>(&table).await?;
                for row in rows {
                    insert.write(row).await?;
                }
                insert.end().await
            }
        })
        .await
    }

    /// Record a state of a job.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_job(&self, row: &JobRow) -> Result<(), IndexError> {
        self.insert("jobs", row).await
    }

    /// Jobs whose row says `fitting` or `publishing`: a process that was fitting or
    /// publishing them stopped before it recorded how they ended.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn unfinished_jobs(&self) -> Result<Vec<JobRow>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM jobs FINAL WHERE status IN (?, ?) ORDER BY job_id")
                .bind(JobStatus::Fitting.as_str())
                .bind(JobStatus::Publishing.as_str())
                .fetch_all()
        })
        .await
    }

    /// The current state of a job.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn job(&self, job_id: &str) -> Result<Option<JobRow>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM jobs FINAL WHERE job_id = ? ORDER BY version DESC LIMIT 1")
                .bind(job_id)
                .fetch_optional()
        })
        .await
    }

    /// The oldest claim of `name` on `route` made at or after `since` (unix seconds).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn upload_key(&self, route: &str, name: &str, since: u32) -> Result<Option<UploadKeyRow>, IndexError> {
        self.call(|c| {
            c.query(
                "SELECT ?fields FROM upload_keys WHERE route = ? AND name = ? AND created_at >= toDateTime(?) \
                     ORDER BY created_at, id LIMIT 1",
            )
            .bind(route)
            .bind(name)
            .bind(since)
            .fetch_optional()
        })
        .await
    }

    /// Record a claim.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_upload_key(&self, row: &UploadKeyRow) -> Result<(), IndexError> {
        self.insert("upload_keys", row).await
    }

    /// One page of jobs matching `filter`, newest first (job ids are time-ordered UUIDv7), and
    /// how many match in all.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn jobs(
        &self,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<JobSummary>, u64), IndexError> {
        let (summaries, values) = job_summaries(filter);
        let page = format!("{summaries} ORDER BY created_at DESC, job_id DESC LIMIT ?, ?");
        let page = self.call(|c| bind_all(c.query(&page), &values).bind(offset).bind(limit).fetch_all()).await?;
        // Without a status to match, the total needs no progress.
        let (conditions, job_values) = job_conditions(filter);
        let (total, values) = if filter.status.is_some() {
            (format!("SELECT count() FROM ({summaries})"), values)
        } else {
            (format!("SELECT count() FROM jobs FINAL {conditions}"), job_values)
        };
        let total = self.call(|c| bind_all(c.query(&total), &values).fetch_one::<u64>()).await?;
        Ok((page, total))
    }

    /// One job with its progress.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn job_summary(&self, job_id: &str) -> Result<Option<JobSummary>, IndexError> {
        let filter = JobFilter { job_id: Some(job_id.to_string()), ..JobFilter::default() };
        let (summaries, values) = job_summaries(&filter);
        let sql = format!("{summaries} LIMIT 1");
        self.call(|c| bind_all(c.query(&sql), &values).fetch_optional()).await
    }

    /// Record a chunk's outputs (a repeat for the same chunk replaces, never adds).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_output(&self, row: &OutputRow) -> Result<(), IndexError> {
        self.insert("outputs", row).await
    }

    /// Every chunk's outputs for a job, one row per chunk, in chunk order.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn outputs(&self, job_id: &str) -> Result<Vec<OutputRow>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM outputs FINAL WHERE job_id = ? ORDER BY chunk").bind(job_id).fetch_all()
        })
        .await
    }

    /// Chunks of a job with outputs, and the rows they hold.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn progress(&self, job_id: &str) -> Result<(u64, u64), IndexError> {
        self.call(|c| {
            c.query("SELECT count(), sum(rows) FROM outputs FINAL WHERE job_id = ?")
                .bind(job_id)
                .fetch_one::<(u64, u64)>()
        })
        .await
    }

    /// Record a dead letter (a repeat for the same offset replaces, never adds).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_dead_letter(&self, row: &DeadLetterRow) -> Result<(), IndexError> {
        self.insert("dead_letters", row).await
    }

    /// A job's dead letters, in chunk order.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn dead_letters(&self, job_id: &str) -> Result<Vec<DeadLetterRow>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM dead_letters FINAL WHERE job_id = ? ORDER BY chunk").bind(job_id).fetch_all()
        })
        .await
    }

    /// A job's dead letters without their payloads, in chunk order.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn dead_letter_reasons(&self, job_id: &str) -> Result<Vec<DeadLetterReason>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM dead_letters FINAL WHERE job_id = ? ORDER BY chunk").bind(job_id).fetch_all()
        })
        .await
    }

    /// How many of a job's messages were dead-lettered, and the first of them (lowest
    /// chunk) with its reason.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn dead_letter_count(&self, job_id: &str) -> Result<(u64, Option<(i64, String)>), IndexError> {
        let (count, chunk, error) = self
            .call(|c| {
                c.query("SELECT count(), min(chunk), argMin(error, chunk) FROM dead_letters FINAL WHERE job_id = ?")
                    .bind(job_id)
                    .fetch_one::<(u64, i64, String)>()
            })
            .await?;
        Ok((count, (count > 0).then_some((chunk, error))))
    }

    /// Register a model.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_model(&self, row: &ModelRow) -> Result<(), IndexError> {
        self.insert("models", row).await
    }

    /// A model by id.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn model(&self, model_id: &str) -> Result<Option<ModelRow>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM models FINAL WHERE model_id = ? LIMIT 1").bind(model_id).fetch_optional()
        })
        .await
    }

    /// One page of registered models, newest first, and how many there are.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn models(&self, offset: u64, limit: u64) -> Result<(Vec<ModelSummary>, u64), IndexError> {
        let page = self
            .call(|c| {
                c.query(
                    "SELECT model_id, dataset, format_version, created_at, path, components FROM models FINAL \
                 ORDER BY created_at DESC, model_id LIMIT ?, ?",
                )
                .bind(offset)
                .bind(limit)
                .fetch_all()
            })
            .await?;
        let total = self.call(|c| c.query("SELECT count() FROM models FINAL").fetch_one::<u64>()).await?;
        Ok((page, total))
    }

    /// The most recently registered model of a dataset.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn latest_model(&self, dataset: &str) -> Result<Option<ModelRow>, IndexError> {
        self.call(|c| {
            c.query("SELECT ?fields FROM models FINAL WHERE dataset = ? ORDER BY created_at DESC, model_id LIMIT 1")
                .bind(dataset)
                .fetch_optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and never answers: calls must time out, and the
    /// error must be one worth retrying.
    #[tokio::test]
    async fn a_hung_server_times_out_and_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let config = ClickHouseConfig {
            url: url.parse().expect("URL"),
            database: "hung".into(),
            user: "default".into(),
            password: String::new(),
            timeout: std::time::Duration::from_millis(200),
            cluster: None,
            fallback_urls: Vec::new(),
        };
        let err = Index::connect(&config).await.err().expect("no answer means an error");
        assert!(matches!(err.source, clickhouse::error::Error::TimedOut), "{err}");
        assert_eq!(err.retry(), Retry::Unavailable);
        held.abort();
    }

    #[test]
    fn retry_is_decided_from_the_server_code() {
        let answer = |text: &str| IndexError::new("http://x", clickhouse::error::Error::BadResponse(text.into()));
        let bad_data = answer("Code: 117, e.displayText() = DB::Exception: Incorrect data");
        assert_eq!((bad_data.code(), bad_data.retry()), (Some(117), Retry::Permanent));
        assert_eq!(answer("Code: 53, e.displayText() = Type mismatch").retry(), Retry::Permanent);
        let overloaded = answer("Code: 202, e.displayText() = Too many simultaneous queries");
        assert_eq!((overloaded.code(), overloaded.retry()), (Some(202), Retry::Transient));
        // A code that merely starts with a permanent one is another code.
        assert_eq!(answer("Code: 1170, e.displayText() = x").retry(), Retry::Transient);
        assert_eq!(answer("bad gateway").code(), None);
    }
}
