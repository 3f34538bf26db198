//! A fit as a job on the consumer group: when the shards live where the members are, not
//! where the fit is asked for, the members do the reading. The submitter publishes one
//! task per shard on the chunk topic (header `kind` = [`FIT_TASK`]); whichever member the
//! group gives a task to reads the shard from its own data roots (or object store), and
//! puts the result under the model root, `fits/<fit id>/<phase>-<shard>.bin`, or the
//! reason it could not, `….error`. Two passes, as on one machine ([`crate::fit::fit`]):
//!
//! 1. **sample**: each shard's seeded sample (Arrow IPC) with its row count and column
//!    statistics; the submitter fits the columns on them ([`SampleFit`]);
//! 2. **histograms** (`fit.strategy = every_row`): each shard's exact histograms in the
//!    sample fit's space ([`Head::add_to_histograms`]); the submitter merges them in shard
//!    order and refits on the grid.
//!
//! Samples are seeded by shard index and histograms hold integer sums, so the model is the
//! one `fit` makes on one machine, bit for bit, whichever member did which shard. A task
//! done twice (a member killed before its commit) puts the same bytes again.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use bytes::Bytes;
use futures::TryStreamExt;
use indicatif::ProgressBar;
use object_store::path::Path as Key;
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};
use shardflow_config::{Config, FitConfig, FitStrategy};
use shardflow_kafka::headers;
use shardflow_kafka::in_flight::{InFlight, Outgoing};
use shardflow_model::{Histogram, Model};
use shardflow_storage::objects::{Input, Root, Storage};
use shardflow_storage::table::ColumnStats;
use tracing::info;

use crate::fit::{FitError, Head, Histograms, Metadata, SampleFit, Sampled, empty_histograms, merge_histograms};

/// The `kind` header of a fit task.
pub const FIT_TASK: &str = "fit-task";

/// Which pass a task belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The shard's seeded sample.
    Sample,
    /// The shard's every-row histograms.
    Histograms,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Sample => "sample",
            Phase::Histograms => "histograms",
        }
    }
}

/// One shard's task, the payload of its message (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitTask {
    /// The fit (a UUID): where results go.
    pub fit_id: String,
    /// The pass.
    pub phase: Phase,
    /// The shard's index among the fit's shards (it seeds the sample).
    pub index: usize,
    /// The shard as members resolve it: a path relative to their data roots, or a URL.
    pub shard: String,
    /// The fit's first shard, whose head fixes the columns and the CSV schema.
    pub first: String,
    /// The fit's configuration.
    pub config: FitConfig,
    /// `histograms`: the sample fit's model (JSON), whose columns place every value.
    #[serde(default)]
    pub model: Option<String>,
}

/// Why a member could not take a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The message is no task: it goes to the dead letters.
    #[error("not a fit task: {0}")]
    Bad(String),
    /// The result could not be put under the model root: try again.
    #[error("putting the fit result: {0}")]
    Store(String),
}

/// What the members did, for the submitter to show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    /// The fit's id.
    pub fit_id: String,
    /// Tasks done, per member (`host/pid`).
    pub tasks_by_worker: BTreeMap<String, usize>,
}

/// Where a fit's results are: `fits/<fit id>/` under the model root.
struct Results {
    root: Root,
    fit_id: String,
}

impl Results {
    fn dir(&self, dir: &Path) -> PathBuf {
        dir.join("fits").join(&self.fit_id)
    }

    fn key(&self, root: &shardflow_storage::objects::ObjectRoot, name: &str) -> Key {
        root.key(&format!("fits/{}/{name}", self.fit_id))
    }

    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        match &self.root {
            Root::Local(dir) => {
                let (dir, name) = (self.dir(dir), name.to_string());
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    shardflow_storage::write_atomically(&dir.join(name), |f| std::io::Write::write_all(f, &bytes))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            }
            Root::Remote(root) => root.put(&self.key(root, name), Bytes::from(bytes)).await.map_err(|e| e.to_string()),
        }
    }

    async fn get(&self, name: &str) -> Result<Bytes, String> {
        match &self.root {
            Root::Local(dir) => {
                tokio::fs::read(self.dir(dir).join(name)).await.map(Bytes::from).map_err(|e| e.to_string())
            }
            Root::Remote(root) => {
                let got = root.store().get(&self.key(root, name)).await.map_err(|e| e.to_string())?;
                got.bytes().await.map_err(|e| e.to_string())
            }
        }
    }

    /// The names of the results there are now.
    async fn names(&self) -> Result<Vec<String>, String> {
        match &self.root {
            Root::Local(dir) => match std::fs::read_dir(self.dir(dir)) {
                Ok(entries) => Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e.to_string()),
            },
            Root::Remote(root) => {
                let prefix = root.key(&format!("fits/{}", self.fit_id));
                let listed: Vec<_> = root.store().list(Some(&prefix)).try_collect().await.map_err(|e| e.to_string())?;
                Ok(listed.into_iter().filter_map(|m| m.location.filename().map(str::to_string)).collect())
            }
        }
    }

    async fn remove(&self) {
        let removed = match &self.root {
            Root::Local(dir) => tokio::fs::remove_dir_all(self.dir(dir)).await.map_err(|e| e.to_string()),
            Root::Remote(root) => match self.names().await {
                Ok(names) => {
                    let mut result = Ok(());
                    for name in names {
                        if let Err(e) = root.store().delete(&self.key(root, &name)).await {
                            result = Err(e.to_string());
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = removed {
            tracing::warn!(fit = %self.fit_id, error = %e, "could not remove the fit's task results");
        }
    }
}

fn result_name(phase: Phase, index: usize) -> String {
    format!("{}-{index:06}.bin", phase.name())
}

fn error_name(phase: Phase, index: usize) -> String {
    format!("{}-{index:06}.error", phase.name())
}

/// A result's bytes: a length-prefixed JSON line naming the member, then the payload.
fn framed(worker: &str, payload: &[u8]) -> Vec<u8> {
    let meta = serde_json::json!({ "worker": worker }).to_string();
    let mut out = Vec::with_capacity(4 + meta.len() + payload.len());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn unframed(bytes: &[u8]) -> Result<(String, &[u8]), String> {
    let (len, rest) = bytes.split_at_checked(4).ok_or("truncated fit result")?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| "truncated fit result")?) as usize;
    let (meta, payload) = rest.split_at_checked(len).ok_or("truncated fit result")?;
    let meta: serde_json::Value = serde_json::from_slice(meta).map_err(|e| format!("fit result header: {e}"))?;
    Ok((meta["worker"].as_str().unwrap_or_default().to_string(), payload))
}

const ROWS_KEY: &str = "shardflow.rows";
const STATS_KEY: &str = "shardflow.stats";

/// A shard's sample as Arrow IPC, its rows and statistics in the schema's metadata (the
/// bounds as bit patterns: a column without finite values has infinite ones).
fn encode_sample(batch: &RecordBatch, rows: u64, stats: &[ColumnStats]) -> Result<Vec<u8>, String> {
    let stats: Vec<[u64; 3]> = stats.iter().map(|s| [s.nulls, s.min.to_bits(), s.max.to_bits()]).collect();
    let metadata = [
        (ROWS_KEY.to_string(), rows.to_string()),
        (STATS_KEY.to_string(), serde_json::to_string(&stats).map_err(|e| e.to_string())?),
    ];
    let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata.into_iter().collect()));
    let batch = batch.clone().with_schema(schema.clone()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(out)
}

fn decode_sample(bytes: &[u8]) -> Result<(RecordBatch, u64, Vec<ColumnStats>), String> {
    let mut reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    let schema = reader.schema();
    let batch = reader.next().ok_or("a sample without a batch")?.map_err(|e| e.to_string())?;
    let metadata = schema.metadata();
    let rows = metadata.get(ROWS_KEY).and_then(|r| r.parse().ok()).ok_or("a sample without its row count")?;
    let stats: Vec<[u64; 3]> =
        metadata.get(STATS_KEY).and_then(|s| serde_json::from_str(s).ok()).ok_or("a sample without its statistics")?;
    let stats = stats.into_iter().map(|[nulls, min, max]| ColumnStats {
        nulls,
        min: f64::from_bits(min),
        max: f64::from_bits(max),
    });
    let plain = Arc::new(Schema::new(schema.fields().clone()));
    // A new batch over the same columns: `with_schema` refuses to drop metadata.
    let batch = RecordBatch::try_new(plain, batch.columns().to_vec()).map_err(|e| e.to_string())?;
    Ok((batch, rows, stats.collect()))
}

/// Per column: a presence byte, then the histogram's length and bytes.
fn encode_histograms(histograms: &Histograms) -> Vec<u8> {
    let mut out = (histograms.len() as u32).to_le_bytes().to_vec();
    for h in histograms {
        match h {
            None => out.push(0),
            Some(h) => {
                let bytes = h.to_bytes();
                out.push(1);
                out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
    out
}

fn decode_histograms(bytes: &[u8]) -> Result<Histograms, String> {
    let truncated = || "truncated histograms".to_string();
    let (n, mut rest) = bytes.split_at_checked(4).ok_or_else(truncated)?;
    let n = u32::from_le_bytes(n.try_into().map_err(|_| truncated())?);
    let mut out = Vec::new();
    for _ in 0..n {
        let (&present, after) = rest.split_first().ok_or_else(truncated)?;
        rest = after;
        if present == 0 {
            out.push(None);
            continue;
        }
        let (len, after) = rest.split_at_checked(8).ok_or_else(truncated)?;
        let len =
            usize::try_from(u64::from_le_bytes(len.try_into().map_err(|_| truncated())?)).map_err(|_| truncated())?;
        let (h, after) = after.split_at_checked(len).ok_or_else(truncated)?;
        out.push(Some(Histogram::from_bytes(h)?));
        rest = after;
    }
    Ok(out)
}

/// Whether a message is a fit task (its `kind` header).
pub fn is_fit_task(headers: Option<&rdkafka::message::BorrowedHeaders>) -> bool {
    use rdkafka::message::Headers;
    headers.is_some_and(|hs| hs.iter().any(|h| h.key == headers::KIND && h.value == Some(FIT_TASK.as_bytes())))
}

/// A shard a task names, as a local file: a path in a data root, or an object under a
/// remote one copied into `scratch`.
async fn local_copy(storage: &Storage, requested: &str, scratch: &Path) -> Result<PathBuf, String> {
    let input = storage.input(requested).await.map_err(|e| e.to_string())?;
    let name = input.file_name();
    match input {
        Input::Local(path) => Ok(path),
        Input::Remote { root, key } => {
            let to = scratch.join(format!("{}-{name}", uuid::Uuid::new_v4()));
            root.download(&key, &to).await.map_err(|e| e.to_string())?;
            Ok(to)
        }
    }
}

/// Take one task (a member's side): compute the shard's result and put it, or put the
/// reason it cannot be computed. `scratch` holds copies of remote shards while they are read.
///
/// # Errors
/// [`TaskError::Bad`] for a payload that is no task, [`TaskError::Store`] when neither
/// the result nor the reason could be put.
pub async fn run_task(storage: &Storage, payload: &[u8], worker: &str, scratch: &Path) -> Result<FitTask, TaskError> {
    let task: FitTask = serde_json::from_slice(payload).map_err(|e| TaskError::Bad(e.to_string()))?;
    if uuid::Uuid::try_parse(&task.fit_id).is_err() {
        return Err(TaskError::Bad(format!("fit id {:?} is not a UUID", task.fit_id)));
    }
    let results = Results { root: storage.models.clone(), fit_id: task.fit_id.clone() };
    let computed = compute(storage, &task, scratch).await;
    let put = match computed {
        Ok(payload) => results.put(&result_name(task.phase, task.index), framed(worker, &payload)).await,
        Err(reason) => {
            tracing::warn!(fit = %task.fit_id, shard = %task.shard, %reason, "fit task failed");
            results.put(&error_name(task.phase, task.index), reason.into_bytes()).await
        }
    };
    put.map_err(TaskError::Store)?;
    Ok(task)
}

async fn compute(storage: &Storage, task: &FitTask, scratch: &Path) -> Result<Vec<u8>, String> {
    let first = local_copy(storage, &task.first, scratch).await?;
    let shard =
        if task.shard == task.first { first.clone() } else { local_copy(storage, &task.shard, scratch).await? };
    let task = task.clone();
    let (first_copy, shard_copy) = (first.clone(), shard.clone());
    let result = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let head = Head::open(&first, &task.config).map_err(|e| e.to_string())?;
        match task.phase {
            Phase::Sample => {
                let (batch, rows, stats) = head.sample(&shard, task.index, &task.config).map_err(|e| e.to_string())?;
                encode_sample(&batch, rows, &stats)
            }
            Phase::Histograms => {
                let model = Model::from_json(task.model.as_deref().ok_or("a histograms task without its model")?)
                    .map_err(|e| e.to_string())?;
                let mut histograms = empty_histograms(&model.columns);
                head.add_to_histograms(&shard, &model.columns, &mut histograms).map_err(|e| e.to_string())?;
                Ok(encode_histograms(&histograms))
            }
        }
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    for copy in [first_copy, shard_copy] {
        if copy.starts_with(scratch) {
            let _ = tokio::fs::remove_file(copy).await;
        }
    }
    result
}

/// The name members resolve `path` by: relative to the local data root it lies under (each
/// member has its own), else as it is.
pub fn requested_name(roots: &[PathBuf], path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    for root in roots {
        let root = root.canonicalize().unwrap_or_else(|_| root.clone());
        if let Ok(relative) = path.strip_prefix(&root) {
            return relative.display().to_string();
        }
    }
    path.display().to_string()
}

/// Fit `dataset` on `shards` (names as members resolve them, see [`requested_name`];
/// `files` their file names for the metadata) by the consumer group of `config`: the model
/// [`crate::fit::fit`] makes on one machine, and who did which task.
///
/// # Errors
/// [`FitError::Group`] when the broker refuses the tasks, a member reports a shard it could
/// not read, or the members do not answer a pass within `fit.group_timeout`; any error of
/// the fit itself.
pub async fn fit_on_group(
    config: &Config,
    storage: &Storage,
    shards: &[String],
    files: &[String],
    dataset: &str,
    progress: &ProgressBar,
) -> Result<(Model, Metadata, GroupReport), FitError> {
    let first = shards.first().ok_or_else(|| FitError::NoShards("the request".into()))?;
    let fit_id = uuid::Uuid::new_v4().to_string();
    let results = Results { root: storage.models.clone(), fit_id: fit_id.clone() };
    let mut report = GroupReport { fit_id: fit_id.clone(), ..GroupReport::default() };
    let outcome = async {
        let task = |phase, index: usize, model: Option<String>| FitTask {
            fit_id: fit_id.clone(),
            phase,
            index,
            shard: shards[index].clone(),
            first: first.clone(),
            config: config.fit.clone(),
            model,
        };
        let tasks = (0..shards.len()).map(|i| task(Phase::Sample, i, None)).collect();
        let samples = run_pass(config, &results, tasks, progress, &mut report).await?;
        let samples: Vec<Sampled> = samples
            .iter()
            .map(|b| decode_sample(b).map_err(|reason| shard_error(&fit_id, "sample", reason)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(Ok)
            .collect();
        let head =
            samples.first().and_then(|s| s.as_ref().ok()).map(|(b, _, _)| Head::of_schema(b.schema(), &config.fit));
        let head = head.ok_or_else(|| FitError::NoShards("the request".into()))?;
        let mut sample_fit = SampleFit::new(&head, files, samples, &config.fit)?;
        if config.fit.strategy == FitStrategy::EveryRow && sample_fit.has_numeric() {
            let model = Model::new(dataset, sample_fit.columns.clone()).to_json();
            progress.inc_length(shards.len() as u64);
            let tasks = (0..shards.len()).map(|i| task(Phase::Histograms, i, Some(model.clone()))).collect();
            let parts = run_pass(config, &results, tasks, progress, &mut report).await?;
            let mut merged = empty_histograms(&sample_fit.columns);
            for part in parts {
                let part = decode_histograms(&part).map_err(|reason| shard_error(&fit_id, "histograms", reason))?;
                merge_histograms(&mut merged, &part);
            }
            sample_fit.refit(merged)?;
        }
        sample_fit.finish(dataset, &config.fit)
    }
    .await;
    results.remove().await;
    let (model, metadata) = outcome?;
    Ok((model, metadata, report))
}

fn shard_error(fit_id: &str, what: &str, reason: String) -> FitError {
    FitError::Group(format!("fit {fit_id}: a {what} result is unreadable: {reason}"))
}

/// Publish a pass's tasks and wait for every result, in shard order.
async fn run_pass(
    config: &Config,
    results: &Results,
    tasks: Vec<FitTask>,
    progress: &ProgressBar,
    report: &mut GroupReport,
) -> Result<Vec<Bytes>, FitError> {
    let broker = |e: rdkafka::error::KafkaError| FitError::Group(format!("publishing the fit's tasks: {e}"));
    let Some(phase) = tasks.first().map(|t| t.phase) else { return Ok(Vec::new()) };
    let n = tasks.len();
    shardflow_kafka::ensure_topic(&config.kafka, &config.kafka.topic).await.map_err(broker)?;
    let producer = shardflow_kafka::producer(&config.kafka).map_err(broker)?;
    let mut in_flight = InFlight::new(&producer, &config.kafka.topic, config.publish.max_in_flight.get());
    for task in &tasks {
        let payload = serde_json::to_vec(task).map_err(|e| FitError::Group(e.to_string()))?;
        let headers = OwnedHeaders::new().insert(Header { key: headers::KIND, value: Some(FIT_TASK) });
        let key = format!("fit/{}/{}/{}", task.fit_id, phase.name(), task.index);
        in_flight.send(Outgoing { key, payload, headers: Some(headers), weight: 0 }).await.map_err(broker)?;
    }
    let (_, delivered) = in_flight.finish().await;
    delivered.map_err(broker)?;
    info!(fit = %results.fit_id, phase = phase.name(), tasks = n, "fit tasks published to the consumer group");

    // Every task answered (a result or a reason) before returning, even when one failed:
    // then no member is still writing into the fit's results when they are removed.
    let deadline = Instant::now() + config.fit.group_timeout;
    let mut got: Vec<Option<Result<Bytes, String>>> = vec![None; n];
    let mut answered = 0;
    loop {
        let names = results.names().await.map_err(|e| FitError::Group(format!("listing the fit's results: {e}")))?;
        for (index, answer) in got.iter_mut().enumerate() {
            if answer.is_some() {
                continue;
            }
            if names.contains(&error_name(phase, index)) {
                let reason = results.get(&error_name(phase, index)).await.unwrap_or_default();
                *answer = Some(Err(String::from_utf8_lossy(&reason).into_owned()));
            } else if names.contains(&result_name(phase, index)) {
                let bytes = results.get(&result_name(phase, index)).await.map_err(FitError::Group)?;
                let (worker, payload) = unframed(&bytes).map_err(|r| shard_error(&results.fit_id, phase.name(), r))?;
                *report.tasks_by_worker.entry(worker).or_default() += 1;
                *answer = Some(Ok(bytes.slice_ref(payload)));
            } else {
                continue;
            }
            answered += 1;
            progress.inc(1);
        }
        if answered == n {
            break;
        }
        if Instant::now() >= deadline {
            return Err(FitError::Group(format!(
                "{answered} of {n} {} tasks answered within fit.group_timeout ({:?}): are consumers of group {} running?",
                phase.name(),
                config.fit.group_timeout,
                config.kafka.group_id
            )));
        }
        tokio::time::sleep(POLL.min(config.fit.group_timeout)).await;
    }
    got.into_iter()
        .zip(&tasks)
        .map(|(answer, task)| match answer {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(reason)) => Err(FitError::Group(format!("shard {}: {reason}", task.shard))),
            None => Err(FitError::Group(format!("shard {}: no answer", task.shard))),
        })
        .collect()
}

/// How often the submitter looks for results.
const POLL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float64Array;
    use arrow_schema::{DataType, Field};

    #[test]
    fn a_sample_comes_back_with_its_rows_and_statistics() {
        let schema = Arc::new(Schema::new(vec![Field::new("Amount", DataType::Float64, true)]));
        let values = Float64Array::from(vec![Some(1.5), None, Some(-2.25)]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).expect("batch");
        let stats = [ColumnStats { nulls: 1, min: -2.25, max: f64::INFINITY }];
        let bytes = encode_sample(&batch, 3, &stats).expect("encode");
        let (back, rows, back_stats) = decode_sample(&bytes).expect("decode");
        assert_eq!(back.schema(), schema, "the schema, without the sample's metadata");
        assert_eq!(back, batch);
        assert_eq!(rows, 3);
        assert_eq!((back_stats[0].nulls, back_stats[0].min, back_stats[0].max), (1, -2.25, f64::INFINITY));
        assert!(decode_sample(&bytes[..bytes.len() / 2]).is_err(), "a torn sample is an error");
    }

    #[test]
    fn histograms_come_back_column_by_column() {
        let mut h = Histogram::new();
        for x in [0.5, 1.0, 1.0, 3e9, -7.0] {
            h.add(x);
        }
        let histograms: Histograms = vec![None, Some(h), None];
        let bytes = encode_histograms(&histograms);
        assert_eq!(decode_histograms(&bytes).expect("decode"), histograms);
        for cut in [0, 3, 5, bytes.len() - 1] {
            assert!(decode_histograms(&bytes[..cut]).is_err(), "cut at {cut} is an error");
        }
    }
}
