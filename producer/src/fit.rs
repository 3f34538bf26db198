//! Fitting a model over every shard of a dataset: a seeded sample from each shard
//! (read in parallel), combined by `fit.strategy` (pooled by default, or shard after
//! shard: warm start or streaming update) into one mixture; written as `model.json` and
//! `metadata.json` and registered in ClickHouse.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use shardflow_backends::config::{FitConfig, FitStrategy};
use shardflow_backends::{Index, IndexError, ModelRow, write_atomically};
use shardflow_model::{
    ColumnModel, FORMAT_VERSION, Mixture, Model, ModelError, ValidMixtureParams, fit, fit_streaming, fit_warm_start,
};

use crate::shard::{ShardError, ShardStats, sample};

/// Why a fit failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No shard to fit on.
    #[error("no Parquet shards in {0}")]
    NoShards(String),
    /// A shard is unusable.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The mixture could not be fitted.
    #[error("fitting column `{column}`: {source}")]
    Model {
        /// The column.
        column: String,
        /// The cause.
        source: ModelError,
    },
    /// Writing the model files failed.
    #[error("writing the model to {path}: {source}")]
    Write {
        /// Directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Registering in ClickHouse failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// `metadata.json`: what the model was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The model's id.
    pub model_id: String,
    /// `model.json` format version.
    pub format_version: u32,
    /// Dataset.
    pub dataset: String,
    /// Seed of the row samples and the k-means start.
    pub seed: u64,
    /// How the shards' samples were combined.
    pub strategy: FitStrategy,
    /// Rows sampled per shard at most.
    pub sample_rows_per_shard: usize,
    /// Unix seconds.
    pub created_at: u32,
    /// Per column.
    pub columns: Vec<ColumnMetadata>,
    /// Per shard.
    pub shards: Vec<ShardStats>,
}

/// One column in `metadata.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnMetadata {
    /// Name.
    pub name: String,
    /// `continuous`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Smallest value over all shards.
    pub min: f64,
    /// Largest value over all shards.
    pub max: f64,
    /// Rows over all shards.
    pub rows: u64,
    /// Null or non-finite rows over all shards.
    pub nulls: u64,
    /// Values the mixture was fitted on.
    pub sampled: u64,
    /// Mixture components kept.
    pub valid_components: usize,
    /// Iterations the (last) fit ran.
    pub n_iter: usize,
    /// Whether the lower bound settled.
    pub converged: bool,
}

/// The shards of a directory: `*.parquet`, in natural order (`_2` before `_10`).
///
/// # Errors
/// [`FitError::NoShards`] when there are none or the directory cannot be read.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, FitError> {
    let none = || FitError::NoShards(dir.display().to_string());
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| none())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet") && p.is_file())
        .collect();
    shards.sort_by_key(|p| natural_key(&p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()));
    if shards.is_empty() { Err(none()) } else { Ok(shards) }
}

pub(crate) fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

type Sampled = Result<(Vec<f64>, ShardStats), ShardError>;

/// Sample every shard (in parallel, `threads` at a time) and fit `column`.
///
/// # Errors
/// [`FitError`] when a shard is unusable or the sample cannot be fitted.
pub fn fit_shards(
    shards: &[PathBuf],
    column: &str,
    config: &FitConfig,
    threads: usize,
    progress: &ProgressBar,
) -> Result<(Model, Metadata), FitError> {
    if shards.is_empty() {
        return Err(FitError::NoShards("the request".into()));
    }
    let seed = config.mixture.seed;
    let next = AtomicUsize::new(0);
    let mut samples: Vec<Option<Sampled>> = (0..shards.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, shards.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = shards.get(i) else { return done };
                        let shard_seed = seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
                        done.push((i, sample(path, column, config.sample_rows_per_shard, shard_seed)));
                        progress.inc(1);
                    }
                })
            })
            .collect();
        for worker in workers {
            for (i, result) in worker.join().unwrap_or_default() {
                samples[i] = Some(result);
            }
        }
    });
    let mut stats = Vec::with_capacity(shards.len());
    let samples = samples
        .into_iter()
        .zip(shards)
        .map(|(slot, path)| {
            let (values, s) = slot.unwrap_or_else(|| {
                Err(ShardError::Read { path: path.display().to_string(), reason: "sampling thread failed".into() })
            })?;
            stats.push(s);
            Ok(values)
        })
        .collect::<Result<Vec<_>, FitError>>()?;

    let params = config.mixture.clone().check().map_err(|source| FitError::Model { column: column.into(), source })?;
    let mixture = fit_samples(&samples, config.strategy, &params)
        .map_err(|source| FitError::Model { column: column.into(), source })?;
    let metadata_column = ColumnMetadata {
        name: column.to_string(),
        kind: "continuous".into(),
        min: stats.iter().map(|s| s.min).fold(f64::INFINITY, f64::min),
        max: stats.iter().map(|s| s.max).fold(f64::NEG_INFINITY, f64::max),
        rows: stats.iter().map(|s| s.rows).sum(),
        nulls: stats.iter().map(|s| s.nulls).sum(),
        sampled: samples.iter().map(|s| s.len() as u64).sum(),
        valid_components: mixture.valid_components().len(),
        n_iter: mixture.n_iter,
        converged: mixture.converged,
    };
    let model = Model::new(column, vec![ColumnModel::continuous(column, mixture)]);
    let metadata = Metadata {
        model_id: model.model_id.clone(),
        format_version: FORMAT_VERSION,
        dataset: column.to_string(),
        seed,
        strategy: config.strategy,
        sample_rows_per_shard: config.sample_rows_per_shard,
        created_at: shardflow_backends::index::unix_now(),
        columns: vec![metadata_column],
        shards: stats,
    };
    Ok((model, metadata))
}

/// One mixture from per-shard samples (in shard order), combined by `strategy`. Empty
/// samples (shards of nulls only) are skipped.
///
/// # Errors
/// [`ModelError::EmptySample`] when every sample is empty, or what the fit reports.
pub fn fit_samples(
    samples: &[Vec<f64>],
    strategy: FitStrategy,
    params: &ValidMixtureParams,
) -> Result<Mixture, ModelError> {
    let mut shards = samples.iter().filter(|s| !s.is_empty());
    match strategy {
        FitStrategy::Pooled => fit(&samples.concat(), params),
        FitStrategy::WarmStart | FitStrategy::Streaming => {
            let first = shards.next().ok_or(ModelError::EmptySample)?;
            let step = if strategy == FitStrategy::WarmStart { fit_warm_start } else { fit_streaming };
            shards.try_fold(fit(first, params)?, |previous, sample| step(sample, &previous, params))
        }
    }
}

/// Write `model.json` and `metadata.json` into `dir` (each atomically).
///
/// # Errors
/// [`FitError::Write`].
pub fn write_model(dir: &Path, model: &Model, metadata: &Metadata) -> Result<(), FitError> {
    let fail = |source| FitError::Write { path: dir.display().to_string(), source };
    let meta = serde_json::to_string_pretty(metadata).map_err(|e| fail(e.into()))?;
    write_atomically(&dir.join("model.json"), |f| std::io::Write::write_all(f, model.to_json().as_bytes()))
        .map_err(fail)?;
    write_atomically(&dir.join("metadata.json"), |f| std::io::Write::write_all(f, meta.as_bytes())).map_err(fail)
}

/// Register a written model in the `models` table.
///
/// # Errors
/// [`FitError::Index`] when ClickHouse refuses.
pub async fn register(index: &Index, dir: &Path, model: &Model, metadata: &Metadata) -> Result<(), FitError> {
    let row = ModelRow {
        model_id: model.model_id.clone(),
        dataset: model.dataset.clone(),
        format_version: model.format_version,
        created_at: metadata.created_at,
        path: dir.display().to_string(),
        components: u32::try_from(model.columns.iter().map(|c| c.one_hot.len()).sum::<usize>()).unwrap_or(u32::MAX),
        model_json: model.to_json(),
        metadata_json: serde_json::to_string(metadata).unwrap_or_default(),
    };
    index.insert_model(&row).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["Amount_Shard_10.parquet", "Amount_Shard_2.parquet", "Amount_Shard_1.parquet"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, vec!["Amount_Shard_1.parquet", "Amount_Shard_2.parquet", "Amount_Shard_10.parquet"]);
    }
}
