//! `producer model show|plot`: finding a model by id or path, and printing it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use shardflow_config::Config;
use shardflow_jobs::fit::{Metadata, advice};
use shardflow_model::{ColumnKind, ColumnModel, Model, TailTransform};
use shardflow_store::Index;

/// Categories printed per column at most.
const SHOWN_CATEGORIES: usize = 50;

/// Load a model named by `id`: a `model.json` path, a directory holding one (under
/// `storage.model_root` or not), or a model id registered in ClickHouse.
///
/// # Errors
/// A one-line reason when the file is not a valid model or no model has that id.
pub(crate) async fn load_model(id: &str, config: &Config) -> anyhow::Result<Model> {
    Ok(load_with_metadata(id, config).await?.0)
}

/// [`load_model`], with the model's `metadata.json` (beside the file, or registered with
/// it) when there is a readable one.
///
/// # Errors
/// As [`load_model`].
pub(crate) async fn load_with_metadata(id: &str, config: &Config) -> anyhow::Result<(Model, Option<Metadata>)> {
    let read = |path: &Path| -> anyhow::Result<(Model, Option<Metadata>)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let model =
            Model::from_json(&text).map_err(|e| anyhow::anyhow!("loading {}: {e}{}", path.display(), advice(&e)))?;
        let beside = path.parent().map(|dir| dir.join("metadata.json"));
        let metadata = beside.and_then(|p| std::fs::read_to_string(p).ok()).and_then(|t| serde_json::from_str(&t).ok());
        Ok((model, metadata))
    };
    let given = Path::new(id);
    if given.is_file() {
        return read(given);
    }
    let under_root = config.storage.model_root.local().map(|root| root.join(id));
    for dir in std::iter::once(given.to_path_buf()).chain(under_root) {
        if dir.join("model.json").is_file() {
            return read(&dir.join("model.json"));
        }
    }
    let index = Index::connect(&config.clickhouse).await?;
    let row = index.model(id).await?.with_context(|| {
        format!("no model {id}: not a model.json path, not under {}, not registered", config.storage.model_root)
    })?;
    let model = Model::from_json(&row.model_json).map_err(|e| anyhow::anyhow!("model {id}: {e}{}", advice(&e)))?;
    Ok((model, serde_json::from_str(&row.metadata_json).ok()))
}

/// [`describe`], with what `metadata` measured at fit time: per continuous or mixed
/// column, the rows clipped and the sum lost without and with the log tail.
pub(crate) fn describe_with(model: &Model, metadata: Option<&Metadata>) -> String {
    let mut out = describe(model);
    let measured: Vec<_> = metadata.iter().flat_map(|m| &m.columns).filter_map(|c| Some((&c.name, c.tails?))).collect();
    if !measured.is_empty() {
        out.push_str(
            "\nlong tails on the fitting sample (alpha clipped at 0.99; sum lost = |sum in - sum out| / |sum in|):\n",
        );
        let _ = writeln!(
            out,
            "{:>20} {:>6} {:>9} {:>12} {:>12} {:>12} {:>12}",
            "column", "tail", "skewness", "clipped", "sum lost", "clipped log", "lost log"
        );
        for (name, t) in measured {
            let pct = |share: f64| format!("{:.4}%", 100.0 * share);
            let _ = writeln!(
                out,
                "{name:>20} {:>6} {:>9.2} {:>12} {:>12} {:>12} {:>12}",
                t.chosen.to_string(),
                t.skewness,
                pct(t.none.clipped_share),
                pct(t.none.sum_lost),
                pct(t.log.clipped_share),
                pct(t.log.sum_lost)
            );
        }
    }
    out
}

/// The model as text: per column its kind and where the kind came from, then its
/// components (continuous, mixed) with its modal slots, or its categories.
pub(crate) fn describe(model: &Model) -> String {
    let mut out = format!("model {} (dataset {}, format {})\n", model.model_id, model.dataset, model.format_version);
    for column in &model.columns {
        let source = column.kind_source.map_or("kind not recorded: format 1".to_string(), |s| s.to_string());
        let _ = write!(out, "\ncolumn {}: {} ({source})", column.name, column.kind);
        match column.kind {
            ColumnKind::Categorical => describe_categories(&mut out, column),
            ColumnKind::Continuous | ColumnKind::Mixed => describe_mixture(&mut out, column),
        }
    }
    out
}

fn describe_categories(out: &mut String, column: &ColumnModel) {
    let data_type = column.data_type.as_ref().map_or("?".to_string(), ToString::to_string);
    let _ = writeln!(out, ", {} categories in first-seen order, input {data_type}", column.categories.len());
    let _ = writeln!(out, "{:>8}  category", "one-hot");
    for (slot, category) in column.categories.iter().enumerate().take(SHOWN_CATEGORIES) {
        let _ = writeln!(out, "{slot:>8}  {}", category.as_deref().unwrap_or("(null)"));
    }
    if column.categories.len() > SHOWN_CATEGORIES {
        let _ = writeln!(out, "{:>8}  ... {} more", "", column.categories.len() - SHOWN_CATEGORIES);
    }
}

fn describe_mixture(out: &mut String, column: &ColumnModel) {
    let Some(m) = &column.mixture else {
        let _ = writeln!(out, ", no mixture");
        return;
    };
    let _ = writeln!(
        out,
        ": {} of {} components kept, {} iterations, converged: {}, lower bound {:.6}",
        column.one_hot.len(),
        m.weights.len(),
        m.n_iter,
        m.converged,
        m.lower_bound
    );
    if let Some(TailTransform::Log { lower }) = column.tail {
        let _ = writeln!(
            out,
            "  tail: log, the mixture is over ln(x - {lower} + 1); values below {lower} are read as {lower}"
        );
    }
    if let Some(data_type) = &column.data_type {
        let _ = writeln!(out, "  input {data_type}");
    }
    for (name, mode) in column.mode_names().iter().zip(&column.modes) {
        let value = mode.map_or("null".to_string(), |v| v.to_string());
        let _ = writeln!(out, "  modal slot {name}: {value} (alpha 0, comes back exactly)");
    }
    let _ = writeln!(out, "{:>9} {:>10} {:>14} {:>14} {:>8}", "component", "weight", "mean", "std", "one-hot");
    for k in 0..m.weights.len() {
        let slot = column.one_hot.iter().position(|&j| j == k).map_or("-".to_string(), |p| p.to_string());
        let _ = writeln!(out, "{k:>9} {:>10.6} {:>14.6} {:>14.6} {slot:>8}", m.weights[k], m.means[k], m.stds[k]);
    }
}
