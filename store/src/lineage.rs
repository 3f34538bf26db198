//! Lineage: every stage of a job or pipeline run records OpenLineage run events (`START`,
//! then `COMPLETE` or `FAIL` with the error), kept in ClickHouse `lineage_events` and,
//! when `lineage.url` is set, POSTed to an OpenLineage HTTP endpoint (Marquez's API) by a
//! background task that retries.
//!
//! The events follow the OpenLineage 2-0-2 spec (the facets' versions are those of the
//! `openlineage-python` client the tests validate against). A stage's run id is derived
//! from what it is (root, stage, chunk), so a redelivered chunk records the same run
//! again and replaces its rows; its parent is the root run: the job (whose run id is the
//! job id) or the pipeline run. Datasets are named as OpenLineage's naming conventions
//! say: `file` + an absolute path, `s3://bucket` + a key, `kafka://host:port` + a topic,
//! `clickhouse://host:port` + `database.table`; a model is `models/<id>` in the lineage
//! namespace, the output of the fit that made it and an input of every stage that uses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shardflow_config::LineageConfig;
use tokio::sync::mpsc;

use crate::{Index, IndexError, version_now};

/// The `producer` of every event and facet: this code, at its version.
pub const PRODUCER: &str = concat!("https://github.com/shardflow/shardflow/tree/v", env!("CARGO_PKG_VERSION"));
/// The code version stages report (the `processing_engine` facet).
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PARENT_SCHEMA: &str = "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet";
const ENGINE_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
const ERROR_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const JOB_TYPE_SCHEMA: &str = "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const SCHEMA_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const STATISTICS_SCHEMA: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
/// Where shardflow's own run facet is described.
pub const SHARDFLOW_FACET_SCHEMA: &str =
    "https://github.com/shardflow/shardflow/blob/main/docs/lineage.md#the-shardflow-run-facet";

/// The transition a run event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// The stage began.
    Start,
    /// It ended well.
    Complete,
    /// It failed (the `errorMessage` facet says why).
    Fail,
}

impl EventType {
    /// `START`, `COMPLETE` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "START",
            Self::Complete => "COMPLETE",
            Self::Fail => "FAIL",
        }
    }
}

/// An OpenLineage `RunEvent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// The transition.
    #[serde(rename = "eventType")]
    pub event_type: EventType,
    /// When (RFC 3339, UTC, milliseconds).
    #[serde(rename = "eventTime")]
    pub event_time: String,
    /// The run.
    pub run: Run,
    /// The job the run is of.
    pub job: Job,
    /// Datasets read.
    pub inputs: Vec<Dataset>,
    /// Datasets written.
    pub outputs: Vec<Dataset>,
    /// [`PRODUCER`].
    pub producer: String,
    /// The spec's URL of a `RunEvent`.
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
}

/// A run: its id and facets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// A UUID.
    #[serde(rename = "runId")]
    pub run_id: String,
    /// Parent, engine, error and shardflow's own facet.
    pub facets: RunFacets,
}

/// The run facets shardflow writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFacets {
    /// The root run: the job, or the pipeline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentFacet>,
    /// shardflow at its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_engine: Option<EngineFacet>,
    /// Why a `FAIL` failed.
    #[serde(rename = "errorMessage", default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<ErrorFacet>,
    /// The model, the chunk, whether the stage was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shardflow: Option<ShardflowFacet>,
}

/// `ParentRunFacet`: the run this one belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentFacet {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's schema.
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// The parent run.
    pub run: RunRef,
    /// The parent's job.
    pub job: JobRef,
}

/// A run by id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRef {
    /// A UUID.
    #[serde(rename = "runId")]
    pub run_id: String,
}

/// A job by namespace and name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// `ProcessingEngineRunFacet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineFacet {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's schema.
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// [`CODE_VERSION`].
    pub version: String,
    /// `shardflow`.
    pub name: String,
}

/// `ErrorMessageRunFacet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorFacet {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's schema.
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// The error.
    pub message: String,
    /// `Rust`.
    #[serde(rename = "programmingLanguage")]
    pub programming_language: String,
}

/// shardflow's own run facet: what the stage worked with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardflowFacet {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// [`SHARDFLOW_FACET_SCHEMA`].
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// The stage: fit, publish, transform, inverse, index, or a pipeline's stage.
    pub stage: String,
    /// The model the stage used or made, when there is one.
    #[serde(rename = "modelId", default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// The chunk, for the per-chunk stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// For a pipeline stage: the fingerprint of its inputs, parameters and code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// For a pipeline stage: skipped because an earlier run with the same fingerprint
    /// succeeded (its outputs are that run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<bool>,
}

/// The job a run is of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `lineage.namespace`.
    pub namespace: String,
    /// `shardflow.<stage>`, or `<pipeline>.<stage>`.
    pub name: String,
    /// Its `jobType`.
    pub facets: JobFacets,
}

/// The job facets shardflow writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFacets {
    /// `JobTypeJobFacet`.
    #[serde(rename = "jobType")]
    pub job_type: JobTypeFacet,
}

/// `JobTypeJobFacet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobTypeFacet {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's schema.
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// `BATCH` (a stage over a whole input) or `STREAMING` (a chunk off the topic).
    #[serde(rename = "processingType")]
    pub processing_type: String,
    /// `SHARDFLOW`.
    pub integration: String,
    /// The stage, upper case.
    #[serde(rename = "jobType")]
    pub job_type: String,
}

/// A dataset read or written, with its schema and, written, its row count and size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Where it lives (`file`, `s3://bucket`, `kafka://host:port`, ...).
    pub namespace: String,
    /// Its name there.
    pub name: String,
    /// Its schema, when known.
    pub facets: DatasetFacets,
    /// Row count and bytes of an output.
    #[serde(rename = "outputFacets", default, skip_serializing_if = "Option::is_none")]
    pub output_facets: Option<OutputFacets>,
}

/// Dataset facets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetFacets {
    /// `SchemaDatasetFacet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaFacet>,
}

/// `SchemaDatasetFacet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaFacet {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's schema.
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// Columns, in order.
    pub fields: Vec<Field>,
}

/// A column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Name.
    pub name: String,
    /// Type (Arrow's name for it).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Output dataset facets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputFacets {
    /// `OutputStatisticsOutputDatasetFacet`.
    #[serde(rename = "outputStatistics")]
    pub output_statistics: Statistics,
}

/// `OutputStatisticsOutputDatasetFacet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's schema.
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// Rows written.
    #[serde(rename = "rowCount")]
    pub row_count: u64,
    /// Bytes written, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl Dataset {
    /// A dataset named `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into(), facets: DatasetFacets::default(), output_facets: None }
    }

    /// A file or object: `s3://bucket/key` (any `scheme://authority/key`) is
    /// `s3://bucket` + `key`; a local path is `file` + the path, made absolute.
    pub fn location(at: &str) -> Self {
        if let Some((scheme, rest)) = at.split_once("://") {
            let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Self::new(format!("{scheme}://{authority}"), key);
        }
        let path = std::path::Path::new(at);
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Self::new("file", absolute.display().to_string())
    }

    /// A Kafka topic on `brokers` (the first of a comma-separated list names it).
    pub fn topic(brokers: &str, topic: &str) -> Self {
        let first = brokers.split(',').next().unwrap_or(brokers).trim();
        let first = first.split_once("://").map_or(first, |(_, rest)| rest);
        Self::new(format!("kafka://{first}"), topic)
    }

    /// A ClickHouse table at `url` (`http://host:port`).
    pub fn table(url: &str, database: &str, table: &str) -> Self {
        let authority = url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/');
        Self::new(format!("clickhouse://{authority}"), format!("{database}.{table}"))
    }

    /// A registered model, in the lineage namespace.
    pub fn model(namespace: &str, model_id: &str) -> Self {
        Self::new(namespace, format!("models/{model_id}"))
    }

    /// With its columns: (name, type).
    #[must_use]
    pub fn with_schema<N: Into<String>, T: Into<String>>(mut self, fields: impl IntoIterator<Item = (N, T)>) -> Self {
        let fields = fields.into_iter().map(|(name, t)| Field { name: name.into(), data_type: t.into() }).collect();
        self.facets.schema = Some(SchemaFacet { producer: PRODUCER.into(), schema_url: SCHEMA_SCHEMA.into(), fields });
        self
    }

    /// With its columns, from an Arrow schema.
    #[must_use]
    pub fn with_arrow_schema(self, schema: &arrow_schema::Schema) -> Self {
        self.with_schema(schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())))
    }

    /// As an output of `rows` rows in `bytes` bytes.
    #[must_use]
    pub fn with_statistics(self, rows: u64, bytes: u64) -> Self {
        self.statistics(rows, Some(bytes))
    }

    /// As an output of `rows` rows, its size unknown (messages on a topic).
    #[must_use]
    pub fn with_row_count(self, rows: u64) -> Self {
        self.statistics(rows, None)
    }

    fn statistics(mut self, rows: u64, size: Option<u64>) -> Self {
        self.output_facets = Some(OutputFacets {
            output_statistics: Statistics {
                producer: PRODUCER.into(),
                schema_url: STATISTICS_SCHEMA.into(),
                row_count: rows,
                size,
            },
        });
        self
    }
}

/// A run id derived from what the run is: the same parts give the same UUID (version 8,
/// from SHA-256), so a stage done again records the same run.
pub fn run_id(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// One stage run of a root (a job or a pipeline run): what its events share.
#[derive(Clone, Debug)]
pub struct StageRun {
    /// The job or pipeline run it belongs to.
    pub root_id: String,
    /// The root's run id (a job's id is its run id).
    pub root_run_id: String,
    /// The root's job name (`shardflow.job`, or the pipeline's name).
    pub root_name: String,
    /// `lineage.namespace`.
    pub namespace: String,
    /// The stage (`fit`, `publish`, `transform`, ...).
    pub stage: String,
    /// The run's job name: `<root job>.<stage>`... as `shardflow.<stage>` for a job.
    pub name: String,
    /// This run's id.
    pub run_id: String,
    /// `BATCH` or `STREAMING`.
    pub processing_type: &'static str,
    /// shardflow's facet for this run (stage filled in).
    pub facet: ShardflowFacet,
}

/// The job name of a shardflow job's root run.
pub const JOB_ROOT: &str = "shardflow.job";

impl StageRun {
    /// Stage `stage` of job `job_id`, for chunk `chunk` when it is a per-chunk stage.
    pub fn of_job(namespace: &str, job_id: &str, stage: &str, chunk: Option<u64>) -> Self {
        let chunk_text = chunk.map(|c| c.to_string()).unwrap_or_default();
        Self {
            root_id: job_id.to_string(),
            root_run_id: job_id.to_string(),
            root_name: JOB_ROOT.to_string(),
            namespace: namespace.to_string(),
            stage: stage.to_string(),
            name: format!("shardflow.{stage}"),
            run_id: run_id(&["job", job_id, stage, &chunk_text]),
            processing_type: if chunk.is_some() { "STREAMING" } else { "BATCH" },
            facet: ShardflowFacet { stage: stage.to_string(), chunk, ..ShardflowFacet::default() },
        }
    }

    /// Stage `stage` of run `run_id` of pipeline `pipeline`.
    pub fn of_pipeline(namespace: &str, pipeline: &str, pipeline_run: &str, stage: &str) -> Self {
        Self {
            root_id: pipeline_run.to_string(),
            root_run_id: pipeline_run.to_string(),
            root_name: format!("pipeline.{pipeline}"),
            namespace: namespace.to_string(),
            stage: stage.to_string(),
            name: format!("pipeline.{pipeline}.{stage}"),
            run_id: run_id(&["pipeline", pipeline, pipeline_run, stage]),
            processing_type: "BATCH",
            facet: ShardflowFacet { stage: stage.to_string(), ..ShardflowFacet::default() },
        }
    }

    /// With the model it used or made.
    #[must_use]
    pub fn with_model(mut self, model_id: &str) -> Self {
        self.facet.model_id = Some(model_id.to_string());
        self
    }

    /// The event of `event_type` at `at`; `error` is the reason of a `FAIL`.
    pub fn event(
        &self,
        event_type: EventType,
        at: SystemTime,
        inputs: Vec<Dataset>,
        outputs: Vec<Dataset>,
        error: Option<&str>,
    ) -> RunEvent {
        let facet = ShardflowFacet {
            producer: PRODUCER.into(),
            schema_url: SHARDFLOW_FACET_SCHEMA.into(),
            ..self.facet.clone()
        };
        RunEvent {
            event_type,
            event_time: rfc3339_millis(at),
            run: Run {
                run_id: self.run_id.clone(),
                facets: RunFacets {
                    parent: Some(ParentFacet {
                        producer: PRODUCER.into(),
                        schema_url: PARENT_SCHEMA.into(),
                        run: RunRef { run_id: self.root_run_id.clone() },
                        job: JobRef { namespace: self.namespace.clone(), name: self.root_name.clone() },
                    }),
                    processing_engine: Some(EngineFacet {
                        producer: PRODUCER.into(),
                        schema_url: ENGINE_SCHEMA.into(),
                        version: CODE_VERSION.into(),
                        name: "shardflow".into(),
                    }),
                    error_message: error.map(|message| ErrorFacet {
                        producer: PRODUCER.into(),
                        schema_url: ERROR_SCHEMA.into(),
                        message: message.to_string(),
                        programming_language: "Rust".into(),
                    }),
                    shardflow: Some(facet),
                },
            },
            job: Job {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                facets: JobFacets {
                    job_type: JobTypeFacet {
                        producer: PRODUCER.into(),
                        schema_url: JOB_TYPE_SCHEMA.into(),
                        processing_type: self.processing_type.into(),
                        integration: "SHARDFLOW".into(),
                        job_type: self.stage.to_uppercase(),
                    },
                },
            },
            inputs,
            outputs,
            producer: PRODUCER.into(),
            schema_url: RUN_EVENT_SCHEMA.into(),
        }
    }

    /// `START` at `started`, then `COMPLETE` (or `FAIL` with `error`) at `ended`.
    pub fn events(
        &self,
        started: SystemTime,
        ended: SystemTime,
        inputs: Vec<Dataset>,
        outputs: Vec<Dataset>,
        error: Option<&str>,
    ) -> [RunEvent; 2] {
        let end = if error.is_some() { EventType::Fail } else { EventType::Complete };
        let outputs = if error.is_some() { Vec::new() } else { outputs };
        [
            self.event(EventType::Start, started, inputs.clone(), Vec::new(), None),
            self.event(end, ended, inputs, outputs, error),
        ]
    }
}

/// `2026-12-03T17:00:00.123Z`.
fn rfc3339_millis(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct LineageRow {
    /// The job or pipeline run.
    pub root_id: String,
    /// The stage's run.
    pub run_id: String,
    /// `START`, `COMPLETE` or `FAIL`.
    pub event_type: String,
    /// Unix seconds.
    pub event_time: u32,
    /// The root's run id.
    pub parent_run_id: String,
    /// The job's namespace.
    pub job_namespace: String,
    /// The job's name.
    pub job_name: String,
    /// The whole event, as sent.
    pub event_json: String,
    /// Orders repeats of the same event (nanoseconds).
    pub version: u64,
}

impl LineageRow {
    fn of(root_id: &str, event: &RunEvent) -> Result<Self, serde_json::Error> {
        let seconds = chrono::DateTime::parse_from_rfc3339(&event.event_time)
            .map(|t| u32::try_from(t.timestamp()).unwrap_or(0))
            .unwrap_or_else(|_| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32));
        Ok(Self {
            root_id: root_id.to_string(),
            run_id: event.run.run_id.clone(),
            event_type: event.event_type.as_str().to_string(),
            event_time: seconds,
            parent_run_id: event.run.facets.parent.as_ref().map(|p| p.run.run_id.clone()).unwrap_or_default(),
            job_namespace: event.job.namespace.clone(),
            job_name: event.job.name.clone(),
            event_json: serde_json::to_string(event)?,
            version: version_now(),
        })
    }
}

/// Records events: in ClickHouse first (the caller waits for it), then queued for the
/// OpenLineage endpoint when one is configured.
#[derive(Clone)]
pub struct Lineage {
    index: Index,
    namespace: String,
    sender: Option<mpsc::Sender<String>>,
    dropped: Arc<AtomicU64>,
}

impl Lineage {
    /// A recorder on `index`; with `config.url`, a task (on the current Tokio runtime)
    /// sends the events there.
    pub fn new(index: Index, config: &LineageConfig) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = config.url.as_ref().map(|url| {
            let (tx, rx) = mpsc::channel(config.queue.get());
            let endpoint = format!("{}/api/v1/lineage", url.as_str().trim_end_matches('/'));
            tokio::spawn(forward(endpoint, rx, config.timeout, config.max_attempts.get()));
            tx
        });
        Self { index, namespace: config.namespace.clone(), sender, dropped }
    }

    /// `lineage.namespace`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Events dropped because the endpoint's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Keep `events` of root `root_id` in ClickHouse (one INSERT), then queue them for
    /// the endpoint.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn record(&self, root_id: &str, events: &[RunEvent]) -> Result<(), IndexError> {
        let rows: Vec<LineageRow> = events.iter().filter_map(|e| LineageRow::of(root_id, e).ok()).collect();
        self.index.insert_all("lineage_events", &rows).await?;
        if let Some(sender) = &self.sender {
            for row in rows {
                if sender.try_send(row.event_json).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(root = root_id, "lineage: the endpoint's queue is full, an event was not sent");
                }
            }
        }
        Ok(())
    }

    /// Record events and log, not fail, when ClickHouse refuses: for stages whose own
    /// result must not depend on lineage (the API's publishing, a pipeline's stage).
    pub async fn record_or_warn(&self, root_id: &str, events: &[RunEvent]) {
        if let Err(e) = self.record(root_id, events).await {
            tracing::warn!(root = root_id, error = %e, "lineage events not recorded");
        }
    }

    /// Every event of root `root_id`, oldest first.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn events(&self, root_id: &str) -> Result<Vec<RunEvent>, IndexError> {
        let rows: Vec<LineageRow> = self
            .index
            .call(|c| {
                c.query("SELECT ?fields FROM lineage_events FINAL WHERE root_id = ? ORDER BY event_time, run_id, event_type DESC")
                    .bind(root_id)
                    .fetch_all()
            })
            .await?;
        Ok(rows.iter().filter_map(|r| serde_json::from_str(&r.event_json).ok()).collect())
    }
}

/// Send each event to `endpoint` in order; a 5xx or no answer is retried with backoff,
/// a 4xx is not (the endpoint refuses the event itself).
async fn forward(endpoint: String, mut events: mpsc::Receiver<String>, timeout: Duration, attempts: u32) {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(e) => return tracing::error!(error = %e, "lineage: no HTTP client, events go to ClickHouse only"),
    };
    while let Some(event) = events.recv().await {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=attempts {
            let sent = client
                .post(&endpoint)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(event.clone())
                .send()
                .await;
            let retry = match sent {
                Ok(answer) if answer.status().is_success() => break,
                Ok(answer) if answer.status().is_client_error() => {
                    tracing::warn!(status = %answer.status(), endpoint, "lineage: the endpoint refused an event");
                    break;
                }
                Ok(answer) => answer.status().to_string(),
                Err(e) => e.to_string(),
            };
            if attempt == attempts {
                tracing::warn!(endpoint, reason = retry, attempts, "lineage: an event was not sent");
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuids_decided_by_what_the_run_is() {
        let a = run_id(&["job", "j1", "transform", "3"]);
        assert_eq!(a, run_id(&["job", "j1", "transform", "3"]));
        assert_ne!(a, run_id(&["job", "j1", "transform", "4"]));
        // Parts are separated: ("ab", "c") is not ("a", "bc").
        assert_ne!(run_id(&["ab", "c"]), run_id(&["a", "bc"]));
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 8);
    }

    #[test]
    fn datasets_are_named_as_openlineage_says() {
        let s3 = Dataset::location("s3://bucket/outputs/transform_j/part-00001.parquet");
        assert_eq!(
            (s3.namespace.as_str(), s3.name.as_str()),
            ("s3://bucket", "outputs/transform_j/part-00001.parquet")
        );
        let file = Dataset::location("/data/a.parquet");
        assert_eq!((file.namespace.as_str(), file.name.as_str()), ("file", "/data/a.parquet"));
        let topic = Dataset::topic("127.0.0.1:9092,other:9092", "chunks");
        assert_eq!((topic.namespace.as_str(), topic.name.as_str()), ("kafka://127.0.0.1:9092", "chunks"));
        let table = Dataset::table("http://127.0.0.1:8123/", "db", "outputs");
        assert_eq!((table.namespace.as_str(), table.name.as_str()), ("clickhouse://127.0.0.1:8123", "db.outputs"));
    }

    #[test]
    fn a_failed_stage_has_its_error_and_no_outputs() {
        let stage = StageRun::of_job("shardflow", "job-1", "transform", Some(2)).with_model("m1");
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let out = Dataset::location("/o/part.parquet").with_statistics(10, 100);
        let [start, end] = stage.events(at, at, vec![Dataset::model("shardflow", "m1")], vec![out], Some("bad chunk"));
        assert_eq!((start.event_type, end.event_type), (EventType::Start, EventType::Fail));
        assert_eq!(start.event_time, "2023-11-14T22:13:20.123Z");
        assert!(end.outputs.is_empty());
        assert_eq!(end.run.facets.error_message.as_ref().map(|e| e.message.as_str()), Some("bad chunk"));
        assert_eq!(end.run.facets.parent.as_ref().map(|p| p.run.run_id.as_str()), Some("job-1"));
        assert_eq!(end.run.facets.shardflow.as_ref().and_then(|f| f.model_id.as_deref()), Some("m1"));
        let json: serde_json::Value = serde_json::to_value(&end).expect("serializes");
        assert_eq!(json["eventType"], "FAIL");
        assert_eq!(json["job"]["facets"]["jobType"]["processingType"], "STREAMING");
        assert_eq!(json["run"]["facets"]["shardflow"]["chunk"], 2);
        let back: RunEvent = serde_json::from_value(json).expect("parses back");
        assert_eq!(back, end);
    }
}
