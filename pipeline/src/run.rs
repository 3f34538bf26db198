//! Running the stock-market pipeline: stages with lineage, each skipped when its inputs
//! and code have not changed since it last succeeded.
//!
//! ```text
//! generate ─┬─ features_etfs ──┐
//!           └─ features_stocks ┴─ merge ── train ── register
//! ```
//!
//! Every stage has a fingerprint: SHA-256 of its code version, its parameters and its
//! inputs (the bytes of the input files for the features stages, the fingerprints of the
//! stages it reads otherwise). Its outputs go to `<work>/<stage>/<fingerprint>/`, written
//! under a temporary name and renamed into place when the stage succeeds, so a failed
//! stage leaves nothing half-written and every earlier output intact. A stage whose
//! fingerprint has a `succeeded` row in ClickHouse `stage_runs` with its outputs still in
//! place is skipped: its outputs are that run's. Each stage records OpenLineage `START`
//! and `COMPLETE` (or `FAIL` with the reason) events, its parent the pipeline run; a
//! skipped stage records them too, with `skipped: true` in shardflow's facet.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shardflow_generate::stocks::{self, StocksOptions};
use shardflow_storage::objects::Root;
use shardflow_store::lineage::{Dataset, Lineage, StageRun};
use shardflow_store::{Index, IndexError, ModelRow, unix_now, version_now};
use tracing::info;

use crate::features::{self, ADJ_CLOSE_ROLLING_MED, VOL_MOVING_AVG};
use crate::forest::{self, Forest, ForestParams};

/// The pipeline's name.
pub const STOCKS: &str = "stocks";
/// The dataset a stocks forest is registered under.
pub const FOREST_DATASET: &str = "stocks_volume_forest";
/// What the forest predicts.
pub const TARGET: &str = "Volume";
/// The code version of each stage: bump a stage's when what it writes changes, and its
/// outputs (and everything after it) are made again.
const STAGE_CODE: [(&str, u32); 6] =
    [("generate", 1), ("features_etfs", 1), ("features_stocks", 1), ("merge", 1), ("train", 1), ("register", 1)];
/// The file name of a registered forest.
pub const FOREST_FILE: &str = "forest.parquet";

/// How to run the stocks pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StocksParams {
    /// A directory `producer generate --dataset stocks` wrote (`etfs/`, `stocks/`); absent:
    /// the `generate` stage writes one.
    pub input: Option<PathBuf>,
    /// Rows to generate (without `input`).
    pub rows: u64,
    /// Symbols to generate (without `input`).
    pub symbols: usize,
    /// Seed of the generator, the sample, the split and the forest.
    pub seed: u64,
    /// Rows sampled from the merged features for training and testing.
    pub sample_rows: usize,
    /// Share of the sample held out for testing.
    pub test_fraction: f64,
    /// Trees.
    pub trees: usize,
    /// Fewest rows in a leaf.
    pub min_samples_leaf: usize,
    /// Deepest a tree may grow (none: until leaves are pure or too small).
    pub max_depth: Option<usize>,
}

impl Default for StocksParams {
    fn default() -> Self {
        Self {
            input: None,
            rows: 1_000_000,
            symbols: stocks::DEFAULT_SYMBOLS,
            seed: 42,
            sample_rows: 200_000,
            test_fraction: 0.2,
            trees: 100,
            min_samples_leaf: 5,
            max_depth: None,
        }
    }
}

impl StocksParams {
    /// Check values a client sent.
    ///
    /// # Errors
    /// [`PipelineError::Invalid`] naming the value.
    pub fn check(&self) -> Result<(), PipelineError> {
        let bad = |m: &str| Err(PipelineError::Invalid(m.to_string()));
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad("test_fraction must be between 0 and 1, both excluded");
        }
        if self.sample_rows < 10 {
            return bad("sample_rows must be at least 10");
        }
        if self.input.is_none() && (self.rows == 0 || self.rows > 1_000_000_000) {
            return bad("rows must be 1 to 10^9");
        }
        if !(1..=1000).contains(&self.trees) {
            return bad("trees must be 1 to 1000");
        }
        self.forest().check(2).map_err(|e| PipelineError::Invalid(e.to_string()))
    }

    fn forest(&self) -> ForestParams {
        ForestParams {
            trees: self.trees,
            max_depth: self.max_depth,
            min_samples_leaf: self.min_samples_leaf,
            seed: self.seed,
            ..ForestParams::default()
        }
    }
}

/// Why a pipeline run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
    /// A stage failed.
    #[error("stage {stage} failed: {reason}")]
    Stage {
        /// The stage.
        stage: String,
        /// Why.
        reason: String,
    },
    /// ClickHouse refused or did not answer.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// One stage of a run, as recorded in `stage_runs`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct StageRunRow {
    /// The pipeline.
    pub pipeline: String,
    /// The run.
    pub run_id: String,
    /// The stage, or `run` for the run itself.
    pub stage: String,
    /// SHA-256 of the stage's code, parameters and inputs.
    pub fingerprint: String,
    /// `running`, `succeeded`, `skipped` or `failed`.
    pub status: String,
    /// What it wrote ([`StageOutputs`] as JSON; for `run`, the [`RunReport`]).
    pub outputs_json: String,
    /// Why it failed.
    pub error: String,
    /// Unix seconds.
    pub started_at: u32,
    /// Unix seconds (0 while running).
    pub finished_at: u32,
    /// Orders the rows of a stage.
    pub version: u64,
}

/// What a stage wrote: its directory, the datasets (for lineage) and a summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageOutputs {
    /// `<work>/<stage>/<fingerprint>`.
    pub dir: PathBuf,
    /// The datasets written, as lineage names them.
    pub datasets: Vec<Dataset>,
    /// Counts, rates, metrics: what the stage reports.
    pub summary: serde_json::Value,
}

/// How a stage went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage.
    pub stage: String,
    /// `succeeded`, `skipped` or `failed`.
    pub status: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Seconds it took (a skipped stage: the look-up).
    pub seconds: f64,
    /// What it wrote (a skipped stage: what the run it repeats wrote).
    pub outputs: Option<StageOutputs>,
    /// Why it failed.
    pub error: Option<String>,
}

/// How a run went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The pipeline.
    pub pipeline: String,
    /// The run (a UUID; the parent run of every stage's lineage).
    pub run_id: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// The stages, in the order they ran.
    pub stages: Vec<StageReport>,
    /// The forest it registered.
    pub model_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds in all.
    pub seconds: f64,
}

/// Runs pipelines: ClickHouse for stage runs and lineage, a work directory for outputs,
/// the model root for registered forests.
#[derive(Clone)]
pub struct Runner {
    index: Index,
    lineage: Lineage,
    work: PathBuf,
    models: Root,
}

/// A fingerprint: SHA-256 of `parts`, each followed by a separator.
fn fingerprint(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn code(stage: &str) -> String {
    let version = STAGE_CODE.iter().find(|(s, _)| *s == stage).map_or(0, |(_, v)| *v);
    format!("{stage}/v{version}/shardflow-{}", shardflow_store::lineage::CODE_VERSION)
}

/// The content of every file under `dir` (sorted by name), hashed: `name:sha256` lines.
fn directory_content(dir: &Path) -> Result<String, String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("{} holds no file", dir.display()));
    }
    let mut lines = String::new();
    for path in names {
        let mut file = std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut hash = Sha256::new();
        std::io::copy(&mut file, &mut hash).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        lines.push_str(&format!("{name}:{:x}\n", hash.finalize()));
    }
    Ok(lines)
}

/// A stage's work, run on a blocking thread with its (temporary) output directory.
type Work = Box<dyn FnOnce(&Path) -> Result<(Vec<Dataset>, serde_json::Value), String> + Send>;

impl Runner {
    /// A runner writing under `work` and registering forests under `models`.
    pub fn new(index: Index, lineage: Lineage, work: impl Into<PathBuf>, models: Root) -> Self {
        Self { index, lineage, work: work.into(), models }
    }

    /// The lineage recorder.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// A new run id (UUIDv7: runs sort by time).
    pub fn new_run_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// Record that run `run_id` started (so that it can be looked up at once).
    ///
    /// # Errors
    /// When ClickHouse refuses.
    pub async fn record_started(&self, run_id: &str, params: &StocksParams) -> Result<(), IndexError> {
        let report = RunReport {
            pipeline: STOCKS.into(),
            run_id: run_id.into(),
            status: "running".into(),
            stages: Vec::new(),
            model_id: None,
            error: None,
            seconds: 0.0,
        };
        let params = serde_json::to_string(params).unwrap_or_default();
        self.insert_run(&report, &params, unix_now(), 0).await
    }

    async fn insert_run(
        &self,
        report: &RunReport,
        fingerprint: &str,
        started: u32,
        finished: u32,
    ) -> Result<(), IndexError> {
        let row = StageRunRow {
            pipeline: report.pipeline.clone(),
            run_id: report.run_id.clone(),
            stage: "run".into(),
            fingerprint: fingerprint.into(),
            status: report.status.clone(),
            outputs_json: serde_json::to_string(report).unwrap_or_default(),
            error: report.error.clone().unwrap_or_default(),
            started_at: started,
            finished_at: finished,
            version: version_now(),
        };
        self.index.insert("stage_runs", &row).await
    }

    /// The latest report of run `run_id`, if there is one.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn report(&self, run_id: &str) -> Result<Option<RunReport>, IndexError> {
        let row: Option<StageRunRow> = self
            .index
            .call(|c| {
                c.query(
                    "SELECT ?fields FROM stage_runs FINAL WHERE pipeline = ? AND run_id = ? AND stage = 'run' LIMIT 1",
                )
                .bind(STOCKS)
                .bind(run_id)
                .fetch_optional()
            })
            .await?;
        Ok(row.and_then(|r| serde_json::from_str(&r.outputs_json).ok()))
    }

    /// Run the stocks pipeline as run `run_id` (recorded with [`Runner::record_started`]
    /// or not): every stage, in order, the two features stages at once. The report says
    /// how each stage went; a failed stage fails the run with its reason.
    ///
    /// # Errors
    /// [`PipelineError::Invalid`] for parameters out of range; a failed stage is a
    /// `failed` report, not an error.
    pub async fn run_stocks(&self, run_id: &str, params: &StocksParams) -> Result<RunReport, PipelineError> {
        params.check()?;
        let started = Instant::now();
        let started_at = unix_now();
        let mut report = RunReport {
            pipeline: STOCKS.into(),
            run_id: run_id.into(),
            status: "running".into(),
            stages: Vec::new(),
            model_id: None,
            error: None,
            seconds: 0.0,
        };
        let result = self.stocks_stages(run_id, params, &mut report).await;
        report.seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(model_id) => {
                report.status = "succeeded".into();
                report.model_id = Some(model_id);
            }
            Err(e) => {
                report.status = "failed".into();
                report.error = Some(e.to_string());
            }
        }
        let params_json = serde_json::to_string(params).unwrap_or_default();
        self.insert_run(&report, &params_json, started_at, unix_now()).await?;
        info!(run = run_id, status = %report.status, seconds = report.seconds, "pipeline run ended");
        Ok(report)
    }

    async fn stocks_stages(
        &self,
        run_id: &str,
        p: &StocksParams,
        report: &mut RunReport,
    ) -> Result<String, PipelineError> {
        // Input: given, or generated.
        let input = match &p.input {
            Some(dir) => dir.clone(),
            None => {
                let options = (p.rows, p.symbols, p.seed);
                let fp = fingerprint(&[&code("generate"), &format!("{options:?}")]);
                let params = StocksOptions { rows: p.rows, symbols: p.symbols, seed: p.seed, out: PathBuf::new() };
                let work: Work = Box::new(move |out| {
                    let options = StocksOptions { out: out.to_path_buf(), ..params };
                    let manifest = stocks::generate_stocks(&options, &indicatif::ProgressBar::hidden())
                        .map_err(|e| e.to_string())?;
                    let datasets = vec![
                        Dataset::location(&out.join(stocks::ETFS_DIR).display().to_string())
                            .with_row_count(manifest.rows),
                        Dataset::location(&out.join(stocks::STOCKS_DIR).display().to_string()),
                    ];
                    let summary = serde_json::json!({
                        "rows": manifest.rows, "symbols": manifest.symbols, "etfs": manifest.etfs,
                        "nulls": manifest.nulls, "duplicates": manifest.duplicates,
                    });
                    Ok((datasets, summary))
                });
                let done = self.stage(run_id, "generate", fp, Vec::new(), work, &mut report.stages).await?;
                done.dir
            }
        };
        // Features, ETFs and stocks at once.
        let features_stage = |name: &'static str, sub: &'static str| {
            let dir = input.join(sub);
            async move {
                let content = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || directory_content(&dir)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                (name, dir, content)
            }
        };
        let (etfs, stocks_in) = tokio::join!(
            features_stage("features_etfs", stocks::ETFS_DIR),
            features_stage("features_stocks", stocks::STOCKS_DIR)
        );
        let mut runs = Vec::new();
        for (name, dir, content) in [etfs, stocks_in] {
            let inputs = vec![Dataset::location(&dir.display().to_string())];
            // An input that cannot be read fails the stage itself, so it leaves its stage row and
            // FAIL event like any other failure (the fingerprint never matches a success).
            let content = match content {
                Ok(content) => content,
                Err(reason) => {
                    let fp = fingerprint(&[&code(name), "unreadable", &reason]);
                    let work: Work = Box::new(move |_| Err(reason));
                    runs.push((name, fp, inputs, work));
                    continue;
                }
            };
            let fp = fingerprint(&[&code(name), &content]);
            let work: Work = Box::new(move |out| {
                let started = Instant::now();
                let stats = features::features(&dir, out).map_err(|e| e.to_string())?;
                let seconds = started.elapsed().as_secs_f64();
                let datasets = vec![
                    Dataset::location(&out.display().to_string()).with_statistics(stats.rows_out, stats.bytes_out),
                ];
                let summary = serde_json::json!({
                    "files": stats.files, "rows_in": stats.rows_in, "nulls_removed": stats.nulls_removed,
                    "duplicates_removed": stats.duplicates_removed, "rows_out": stats.rows_out,
                    "bytes_out": stats.bytes_out, "seconds": seconds,
                    "rows_per_second": stats.rows_in as f64 / seconds.max(1e-9),
                });
                Ok((datasets, summary))
            });
            runs.push((name, fp, inputs, work));
        }
        let mut stage_reports = Vec::new();
        let mut stage_runs = Vec::new();
        for (name, fp, inputs, work) in runs {
            let mut own = Vec::new();
            stage_runs.push((name, fp.clone()));
            stage_reports.push(async move {
                let result = self.stage(run_id, name, fp, inputs, work, &mut own).await;
                (result, own)
            });
        }
        let mut it = stage_reports.into_iter();
        let (first, second) = match (it.next(), it.next()) {
            (Some(a), Some(b)) => tokio::join!(a, b),
            _ => return Err(PipelineError::Invalid("two features stages".into())),
        };
        let mut features_out = Vec::new();
        let mut failure = None;
        for (result, own) in [first, second] {
            report.stages.extend(own);
            match result {
                Ok(outputs) => features_out.push(outputs),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let fps: Vec<String> = stage_runs.iter().map(|(_, fp)| fp.clone()).collect();

        // Merge.
        let dirs: Vec<PathBuf> = features_out.iter().map(|o| o.dir.clone()).collect();
        let fp_merge = fingerprint(&[&code("merge"), &fps.join(",")]);
        let inputs = dirs.iter().map(|d| Dataset::location(&d.display().to_string())).collect();
        let work: Work = Box::new(move |out| {
            let file = out.join("features.parquet");
            let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let stats = features::merge(&refs, &file).map_err(|e| e.to_string())?;
            let datasets =
                vec![Dataset::location(&file.display().to_string()).with_statistics(stats.rows, stats.bytes)];
            Ok((datasets, serde_json::json!({"files": stats.files, "rows": stats.rows, "bytes": stats.bytes})))
        });
        let merged = self.stage(run_id, "merge", fp_merge.clone(), inputs, work, &mut report.stages).await?;

        // Train.
        let merged_file = merged.dir.join("features.parquet");
        let forest_params = p.forest();
        let (sample_rows, test_fraction, seed) = (p.sample_rows, p.test_fraction, p.seed);
        let fp_train = fingerprint(&[
            &code("train"),
            &fp_merge,
            &format!(
                "{sample_rows}/{test_fraction}/{seed}/{}",
                serde_json::to_string(&forest_params).unwrap_or_default()
            ),
        ]);
        let inputs = vec![Dataset::location(&merged_file.display().to_string())];
        let work: Work = Box::new(move |out| train(&merged_file, out, sample_rows, test_fraction, &forest_params));
        let trained = self.stage(run_id, "train", fp_train.clone(), inputs, work, &mut report.stages).await?;

        // Register.
        let forest_file = trained.dir.join(FOREST_FILE);
        let fp_register = fingerprint(&[&code("register"), &fp_train]);
        let registered = self.register(run_id, fp_register, &forest_file, &trained, report).await?;
        Ok(registered)
    }

    /// The register stage: the forest and its metadata under the model root, in a
    /// directory named by its content hash, and a `models` row.
    async fn register(
        &self,
        run_id: &str,
        fp: String,
        forest_file: &Path,
        trained: &StageOutputs,
        report: &mut RunReport,
    ) -> Result<String, PipelineError> {
        let stage = "register";
        let bytes = tokio::fs::read(forest_file).await.map_err(|e| PipelineError::Stage {
            stage: stage.into(),
            reason: format!("cannot read {}: {e}", forest_file.display()),
        })?;
        let model_id = format!("rf-{}", &fingerprint(&[&format!("{:x}", Sha256::digest(&bytes))])[..16]);
        let started = SystemTime::now();
        let clock = Instant::now();
        let run = StageRun::of_pipeline(self.lineage.namespace(), STOCKS, run_id, stage).with_model(&model_id);
        let mut run = run;
        run.facet.fingerprint = Some(fp.clone());
        let inputs = vec![Dataset::location(&forest_file.display().to_string())];
        let outputs = vec![Dataset::model(self.lineage.namespace(), &model_id)];
        if self.index.model(&model_id).await?.is_some() {
            run.facet.skipped = Some(true);
            let events = run.events(started, SystemTime::now(), inputs, outputs.clone(), None);
            self.lineage.record_or_warn(run_id, &events).await;
            let outputs = StageOutputs {
                dir: PathBuf::new(),
                datasets: outputs,
                summary: serde_json::json!({"model_id": model_id}),
            };
            self.stage_row(run_id, stage, &fp, "skipped", Some(&outputs), "", unix_now()).await?;
            report.stages.push(StageReport {
                stage: stage.into(),
                status: "skipped".into(),
                fingerprint: fp,
                seconds: clock.elapsed().as_secs_f64(),
                outputs: Some(outputs),
                error: None,
            });
            return Ok(model_id);
        }
        self.lineage
            .record_or_warn(
                run_id,
                &[run.event(shardflow_store::lineage::EventType::Start, started, inputs.clone(), Vec::new(), None)],
            )
            .await;
        let metadata = serde_json::json!({
            "kind": "random_forest",
            "format_version": forest::FORMAT_VERSION,
            "model_id": model_id,
            "target": TARGET,
            "features": [VOL_MOVING_AVG, ADJ_CLOSE_ROLLING_MED],
            "file": FOREST_FILE,
            "bytes": bytes.len(),
            "pipeline_run": run_id,
            "fingerprint": fp,
            "train": trained.summary,
        });
        let meta = serde_json::to_string_pretty(&metadata).unwrap_or_default();
        let placed = self.place_model(&model_id, bytes.clone(), meta.clone()).await;
        let location = match placed {
            Ok(location) => location,
            Err(reason) => {
                let events = run.events(started, SystemTime::now(), inputs, Vec::new(), Some(&reason));
                self.lineage.record_or_warn(run_id, &events[1..]).await;
                self.stage_row(run_id, stage, &fp, "failed", None, &reason, unix_now()).await?;
                report.stages.push(StageReport {
                    stage: stage.into(),
                    status: "failed".into(),
                    fingerprint: fp,
                    seconds: clock.elapsed().as_secs_f64(),
                    outputs: None,
                    error: Some(reason.clone()),
                });
                return Err(PipelineError::Stage { stage: stage.into(), reason });
            }
        };
        let row = ModelRow {
            model_id: model_id.clone(),
            dataset: FOREST_DATASET.into(),
            format_version: forest::FORMAT_VERSION,
            created_at: unix_now(),
            path: location.clone(),
            components: u32::try_from(trained.summary["trees"].as_u64().unwrap_or(0)).unwrap_or(0),
            model_json: serde_json::to_string(&metadata).unwrap_or_default(),
            metadata_json: meta,
        };
        self.index.insert_model(&row).await?;
        let end =
            run.event(shardflow_store::lineage::EventType::Complete, SystemTime::now(), inputs, outputs.clone(), None);
        self.lineage.record_or_warn(run_id, &[end]).await;
        let outputs = StageOutputs {
            dir: PathBuf::from(&location),
            datasets: outputs,
            summary: serde_json::json!({"model_id": model_id, "path": location, "bytes": bytes.len()}),
        };
        self.stage_row(run_id, stage, &fp, "succeeded", Some(&outputs), "", unix_now()).await?;
        report.stages.push(StageReport {
            stage: stage.into(),
            status: "succeeded".into(),
            fingerprint: fp,
            seconds: clock.elapsed().as_secs_f64(),
            outputs: Some(outputs),
            error: None,
        });
        Ok(model_id)
    }

    /// Put `forest.parquet` and `metadata.json` under `<model root>/<model id>/`.
    async fn place_model(&self, model_id: &str, forest: Vec<u8>, metadata: String) -> Result<String, String> {
        match &self.models {
            Root::Local(root) => {
                let dir = root.join(model_id);
                let at = dir.display().to_string();
                tokio::task::spawn_blocking(move || {
                    let write = |name: &str, bytes: &[u8]| {
                        shardflow_storage::write_atomically(&dir.join(name), |f| std::io::Write::write_all(f, bytes))
                            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
                    };
                    write(FOREST_FILE, &forest)?;
                    write("metadata.json", metadata.as_bytes())
                })
                .await
                .map_err(|e| e.to_string())??;
                Ok(at)
            }
            Root::Remote(root) => {
                for (name, bytes) in [(FOREST_FILE, forest), ("metadata.json", metadata.into_bytes())] {
                    let key = root.key(&format!("{model_id}/{name}"));
                    root.put(&key, bytes.into()).await.map_err(|e| format!("cannot put {}: {e}", root.url_of(&key)))?;
                }
                Ok(root.url_of(&root.key(model_id)))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stage_row(
        &self,
        run_id: &str,
        stage: &str,
        fp: &str,
        status: &str,
        outputs: Option<&StageOutputs>,
        error: &str,
        started: u32,
    ) -> Result<(), IndexError> {
        let finished = if status == "running" { 0 } else { unix_now() };
        let row = StageRunRow {
            pipeline: STOCKS.into(),
            run_id: run_id.into(),
            stage: stage.into(),
            fingerprint: fp.into(),
            status: status.into(),
            outputs_json: outputs.and_then(|o| serde_json::to_string(o).ok()).unwrap_or_default(),
            error: error.into(),
            started_at: started,
            finished_at: finished,
            version: version_now(),
        };
        self.index.insert("stage_runs", &row).await
    }

    /// The outputs of the last successful run of `stage` with fingerprint `fp`, when they
    /// are still in place.
    async fn done_before(&self, stage: &str, fp: &str) -> Result<Option<StageOutputs>, IndexError> {
        let rows: Vec<StageRunRow> = self
            .index
            .call(|c| {
                c.query(
                    "SELECT ?fields FROM stage_runs FINAL WHERE pipeline = ? AND stage = ? AND fingerprint = ? \
                     AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
                )
                .bind(STOCKS)
                .bind(stage)
                .bind(fp)
                .fetch_all()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_str::<StageOutputs>(&r.outputs_json).ok())
            .find(|o| o.dir.is_dir()))
    }

    /// Run one stage: skipped when done before, else `work` into a temporary directory
    /// renamed to `<work>/<stage>/<fp>` when it succeeds; its row and lineage recorded.
    async fn stage(
        &self,
        run_id: &str,
        stage: &str,
        fp: String,
        inputs: Vec<Dataset>,
        work: Work,
        reports: &mut Vec<StageReport>,
    ) -> Result<StageOutputs, PipelineError> {
        let clock = Instant::now();
        let started = SystemTime::now();
        let started_unix = unix_now();
        let mut run = StageRun::of_pipeline(self.lineage.namespace(), STOCKS, run_id, stage);
        run.facet.fingerprint = Some(fp.clone());
        if let Some(outputs) = self.done_before(stage, &fp).await? {
            run.facet.skipped = Some(true);
            let events = run.events(started, SystemTime::now(), inputs, outputs.datasets.clone(), None);
            self.lineage.record_or_warn(run_id, &events).await;
            self.stage_row(run_id, stage, &fp, "skipped", Some(&outputs), "", started_unix).await?;
            info!(run = run_id, stage, "unchanged since it last succeeded: skipped");
            reports.push(StageReport {
                stage: stage.into(),
                status: "skipped".into(),
                fingerprint: fp,
                seconds: clock.elapsed().as_secs_f64(),
                outputs: Some(outputs.clone()),
                error: None,
            });
            return Ok(outputs);
        }
        self.lineage
            .record_or_warn(
                run_id,
                &[run.event(shardflow_store::lineage::EventType::Start, started, inputs.clone(), Vec::new(), None)],
            )
            .await;
        self.stage_row(run_id, stage, &fp, "running", None, "", started_unix).await?;
        let dir = self.work.join(stage).join(&fp[..16]);
        let temporary = self.work.join(stage).join(format!(".{}-{run_id}", &fp[..16]));
        let result = tokio::task::spawn_blocking({
            let (dir, temporary) = (dir.clone(), temporary.clone());
            move || -> Result<(Vec<Dataset>, serde_json::Value), String> {
                let _ = std::fs::remove_dir_all(&temporary);
                std::fs::create_dir_all(&temporary)
                    .map_err(|e| format!("cannot create {}: {e}", temporary.display()))?;
                let done = work(&temporary);
                let (datasets, summary) = match done {
                    Ok(done) => done,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&temporary);
                        return Err(e);
                    }
                };
                // A directory left by a run that succeeded without being recorded is
                // the same content: replaced.
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&temporary, &dir).map_err(|e| format!("cannot rename into {}: {e}", dir.display()))?;
                let (from, to) = (temporary.display().to_string(), dir.display().to_string());
                let renamed = datasets
                    .into_iter()
                    .map(|mut d| {
                        d.name = d.name.replace(&from, &to);
                        d
                    })
                    .collect();
                Ok((renamed, summary))
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match result {
            Ok((datasets, summary)) => {
                let outputs = StageOutputs { dir, datasets, summary };
                let end = run.event(
                    shardflow_store::lineage::EventType::Complete,
                    SystemTime::now(),
                    inputs,
                    outputs.datasets.clone(),
                    None,
                );
                self.lineage.record_or_warn(run_id, &[end]).await;
                self.stage_row(run_id, stage, &fp, "succeeded", Some(&outputs), "", started_unix).await?;
                info!(run = run_id, stage, seconds = clock.elapsed().as_secs_f64(), "stage succeeded");
                reports.push(StageReport {
                    stage: stage.into(),
                    status: "succeeded".into(),
                    fingerprint: fp,
                    seconds: clock.elapsed().as_secs_f64(),
                    outputs: Some(outputs.clone()),
                    error: None,
                });
                Ok(outputs)
            }
            Err(reason) => {
                let end = run.event(
                    shardflow_store::lineage::EventType::Fail,
                    SystemTime::now(),
                    inputs,
                    Vec::new(),
                    Some(&reason),
                );
                self.lineage.record_or_warn(run_id, &[end]).await;
                self.stage_row(run_id, stage, &fp, "failed", None, &reason, started_unix).await?;
                reports.push(StageReport {
                    stage: stage.into(),
                    status: "failed".into(),
                    fingerprint: fp,
                    seconds: clock.elapsed().as_secs_f64(),
                    outputs: None,
                    error: Some(reason.clone()),
                });
                Err(PipelineError::Stage { stage: stage.into(), reason })
            }
        }
    }
}

/// The train stage: a seeded sample of the merged features, split into train and test
/// (both written, `train.parquet` and `test.parquet`, for the comparison bench), the
/// forest fitted on one and measured on the other, `forest.parquet` and `metrics.json`.
fn train(
    merged: &Path,
    out: &Path,
    sample_rows: usize,
    test_fraction: f64,
    params: &ForestParams,
) -> Result<(Vec<Dataset>, serde_json::Value), String> {
    let (x, y) = read_features(merged)?;
    let n = y.len();
    if n < 10 {
        return Err(format!("{} has {n} rows after cleaning: too few to train on", merged.display()));
    }
    // A uniform sample without replacement, then the split.
    let (_, mut sample) = forest::split_train_test(n, (sample_rows.min(n) as f64) / n as f64, params.seed);
    // The fraction's rounding may give one row more.
    sample.truncate(sample_rows.min(n));
    let (train_at, test_at) = forest::split_train_test(sample.len(), test_fraction, params.seed.wrapping_add(1));
    let pick = |at: &[usize], col: &[f64]| at.iter().map(|&i| col[sample[i]]).collect::<Vec<f64>>();
    let train_x: Vec<Vec<f64>> = x.iter().map(|c| pick(&train_at, c)).collect();
    let test_x: Vec<Vec<f64>> = x.iter().map(|c| pick(&test_at, c)).collect();
    let (train_y, test_y) = (pick(&train_at, &y), pick(&test_at, &y));
    write_split(&out.join("train.parquet"), &train_x, &train_y)?;
    write_split(&out.join("test.parquet"), &test_x, &test_y)?;
    let clock = Instant::now();
    let forest =
        Forest::fit(&train_x, &train_y, &[VOL_MOVING_AVG, ADJ_CLOSE_ROLLING_MED], params).map_err(|e| e.to_string())?;
    let fit_seconds = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let predicted = forest.predict(&test_x).map_err(|e| e.to_string())?;
    let predict_seconds = clock.elapsed().as_secs_f64();
    let metrics = forest::metrics(&test_y, &predicted).map_err(|e| e.to_string())?;
    let bytes = forest.save(out.join(FOREST_FILE)).map_err(|e| e.to_string())?;
    let summary = serde_json::json!({
        "rows": n, "train_rows": train_y.len(), "test_rows": test_y.len(),
        "trees": params.trees, "nodes": forest.node_count(), "bytes": bytes,
        "r2": metrics.r2, "mae": metrics.mae, "rmse": metrics.rmse,
        "fit_seconds": fit_seconds, "predict_seconds": predict_seconds,
        "params": params,
    });
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(out.join("metrics.json"), text).map_err(|e| format!("cannot write metrics.json: {e}"))?;
    let file = |name: &str| out.join(name).display().to_string();
    let datasets = vec![
        Dataset::location(&file(FOREST_FILE)).with_statistics(forest.node_count() as u64, bytes),
        Dataset::location(&file("train.parquet")).with_row_count(train_y.len() as u64),
        Dataset::location(&file("test.parquet")).with_row_count(test_y.len() as u64),
    ];
    Ok((datasets, summary))
}

/// The two features and the target of the merged file.
fn read_features(path: &Path) -> Result<(Vec<Vec<f64>>, Vec<f64>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("{} is not Parquet: {e}", path.display()))?;
    let (mut x, mut y) = (vec![Vec::new(), Vec::new()], Vec::new());
    for batch in reader {
        let batch = batch.map_err(|e| format!("reading {}: {e}", path.display()))?;
        let column =
            |name: &str| batch.column_by_name(name).ok_or_else(|| format!("{} has no column {name}", path.display()));
        for (i, name) in [VOL_MOVING_AVG, ADJ_CLOSE_ROLLING_MED].iter().enumerate() {
            let values = column(name)?;
            let values =
                values.as_any().downcast_ref::<Float64Array>().ok_or_else(|| format!("{name} is not Float64"))?;
            x[i].extend(values.iter().map(|v| v.unwrap_or(f64::NAN)));
        }
        let target = column(TARGET)?;
        let target = target.as_any().downcast_ref::<Int64Array>().ok_or_else(|| format!("{TARGET} is not Int64"))?;
        y.extend(target.iter().map(|v| v.map_or(f64::NAN, |v| v as f64)));
    }
    Ok((x, y))
}

/// A split as Parquet: the two features and the target.
fn write_split(path: &Path, x: &[Vec<f64>], y: &[f64]) -> Result<(), String> {
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new(VOL_MOVING_AVG, DataType::Float64, false),
        Field::new(ADJ_CLOSE_ROLLING_MED, DataType::Float64, false),
        Field::new(TARGET, DataType::Int64, false),
    ]));
    let columns: Vec<std::sync::Arc<dyn Array>> = vec![
        std::sync::Arc::new(Float64Array::from(x[0].clone())),
        std::sync::Arc::new(Float64Array::from(x[1].clone())),
        std::sync::Arc::new(Int64Array::from(y.iter().map(|v| *v as i64).collect::<Vec<i64>>())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.close().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_change_with_any_part() {
        let a = fingerprint(&["train/v1", "abc"]);
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint(&["train/v1", "abc"]));
        assert_ne!(a, fingerprint(&["train/v2", "abc"]));
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }

    #[test]
    fn a_directory_is_fingerprinted_by_its_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("b.parquet"), b"two").expect("write");
        std::fs::write(dir.path().join("a.parquet"), b"one").expect("write");
        let before = directory_content(dir.path()).expect("content");
        assert!(before.starts_with("a.parquet:"), "{before}");
        std::fs::write(dir.path().join("b.parquet"), b"TWO").expect("write");
        assert_ne!(before, directory_content(dir.path()).expect("content"));
        let empty = tempfile::tempdir().expect("dir");
        assert!(directory_content(empty.path()).is_err());
    }

    #[test]
    fn bad_parameters_are_refused_with_the_reason() {
        let bad = StocksParams { test_fraction: 1.0, ..StocksParams::default() };
        assert!(bad.check().expect_err("refused").to_string().contains("test_fraction"));
        let bad = StocksParams { trees: 0, ..StocksParams::default() };
        assert!(bad.check().expect_err("refused").to_string().contains("trees"));
        assert!(StocksParams::default().check().is_ok());
    }
}
