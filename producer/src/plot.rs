//! `producer model plot`: a PNG of a shard column's histogram with the fitted mixture's
//! density drawn over it, scaled to rows per bin, so a fit can be looked at rather than
//! read. Modal values of a mixed column (and nulls) are left out of the histogram and
//! listed in the caption with their shares.

use std::path::Path;
use std::sync::OnceLock;

use arrow_array::{Array, Float64Array};
use arrow_schema::DataType;
use plotters::prelude::*;
use plotters::style::FontStyle;
use shardflow_model::{ColumnKind, ColumnModel, Mixture, Model};

use shardflow_storage::shard::ShardError;
use shardflow_storage::table::sample_table;

/// The labels' font: DejaVu Sans cut to ASCII (see `assets/DejaVuSans-LICENSE.txt`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
/// Rows of the shard read at most (a seeded sample beyond that).
const MAX_ROWS: usize = 1_000_000;
const BINS: usize = 100;
const SIZE: (u32, u32) = (1200, 700);

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// The shard is unusable.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The model has no such column, or none that can be plotted.
    #[error("{0}")]
    Column(String),
    /// The output is not a PNG path.
    #[error("output {0} must end in .png")]
    NotPng(String),
    /// Drawing or writing the image failed.
    #[error("drawing {path}: {reason}")]
    Draw {
        /// The output.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// What was drawn.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plotted {
    /// The column.
    pub column: String,
    /// Values in the histogram.
    pub values: usize,
    /// Rows left out as modal values or nulls.
    pub modal: usize,
}

/// The column to plot: `name`, or the model's first continuous or mixed column.
///
/// # Errors
/// [`PlotError::Column`] when there is no such column or it is categorical.
pub(crate) fn pick<'a>(model: &'a Model, name: Option<&str>) -> Result<&'a ColumnModel, PlotError> {
    let numeric = |c: &&ColumnModel| c.kind != ColumnKind::Categorical;
    let names = || model.columns.iter().map(|c| format!("{} ({})", c.name, c.kind)).collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => {
            let column = model.columns.iter().find(|c| c.name == name).ok_or_else(|| {
                PlotError::Column(format!("model {} has no column `{name}` (columns: {})", model.model_id, names()))
            })?;
            if numeric(&column) {
                Ok(column)
            } else {
                Err(PlotError::Column(format!(
                    "column `{name}` is categorical: plot draws continuous and mixed columns"
                )))
            }
        }
        None => model.columns.iter().find(numeric).ok_or_else(|| {
            PlotError::Column(format!(
                "model {} has no continuous or mixed column to plot (columns: {})",
                model.model_id,
                names()
            ))
        }),
    }
}

/// The `q` quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The mixture's density at `x` (every component, with its expected weight).
fn density(mix: &Mixture, x: f64) -> f64 {
    let norm = (2.0 * std::f64::consts::PI).sqrt();
    (0..mix.weights.len())
        .map(|k| {
            let z = (x - mix.means[k]) / mix.stds[k];
            mix.weights[k] * (-0.5 * z * z).exp() / (mix.stds[k] * norm)
        })
        .sum()
}

fn register_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The font is compiled in and known to parse; a failure would only cost the labels.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draw `column` of `model` (or its first continuous or mixed column) over the values of
/// `shard` (Parquet or CSV) into the PNG file `out`.
///
/// # Errors
/// [`PlotError`] when the column or shard is unusable or the file cannot be written.
pub(crate) fn plot(model: &Model, column: Option<&str>, shard: &Path, out: &Path) -> Result<Plotted, PlotError> {
    let shown = out.display().to_string();
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(PlotError::NotPng(shown));
    }
    let column = pick(model, column)?;
    let mix = column.mixture().map_err(|e| PlotError::Column(e.to_string()))?;
    let (sample, _, _) = sample_table(shard, std::slice::from_ref(&column.name), None, MAX_ROWS, 0)?;
    let read = |reason: String| ShardError::Read { path: shard.display().to_string(), reason };
    let floats = arrow_cast::cast(sample.column(0), &DataType::Float64).map_err(|e| read(e.to_string()))?;
    let floats = floats.as_any().downcast_ref::<Float64Array>().ok_or_else(|| read("not numeric".into()))?;

    // Modal values (and nulls) are counted, not binned: they would dwarf the histogram.
    let mut mode_counts = vec![0usize; column.modes.len()];
    let mut nulls = 0;
    let mut values = Vec::with_capacity(floats.len());
    for v in floats.iter() {
        let slot = column.modes.iter().position(|m| *m == v || (m.is_none() && v.is_some_and(f64::is_nan)));
        match (slot, v) {
            (Some(i), _) => mode_counts[i] += 1,
            (None, Some(x)) if x.is_finite() => values.push(x),
            _ => nulls += 1,
        }
    }
    if values.is_empty() {
        return Err(PlotError::Column(format!(
            "shard {} has no non-modal values in column `{}` to plot",
            shard.display(),
            column.name
        )));
    }
    values.sort_by(f64::total_cmp);
    // Heavy tails would squeeze everything into a few bins: show the central 99%, and a
    // positive column spanning orders of magnitude on a log axis.
    let log = values[0] > 0.0 && quantile(&values, 0.995) > 50.0 * quantile(&values, 0.5);
    let axis = |x: f64| if log { x.log10() } else { x };
    let (mut lo, mut hi) = (axis(quantile(&values, 0.005)), axis(quantile(&values, 0.995)));
    if hi <= lo {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let width = (hi - lo) / BINS as f64;
    let mut counts = vec![0u64; BINS];
    for t in values.iter().map(|&x| axis(x)).filter(|t| (lo..=hi).contains(t)) {
        counts[(((t - lo) / width) as usize).min(BINS - 1)] += 1;
    }
    // Rows per bin the mixture expects: its density on the axis times rows times bin width.
    let scale = values.len() as f64 * width;
    let on_axis = |t: f64| {
        if log { density(mix, 10f64.powf(t)) * 10f64.powf(t) * std::f64::consts::LN_10 } else { density(mix, t) }
    };
    let curve: Vec<(f64, f64)> =
        (0..=600).map(|i| lo + (hi - lo) * f64::from(i) / 600.0).map(|t| (t, on_axis(t) * scale)).collect();
    let top = counts.iter().map(|&c| c as f64).chain(curve.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.08;

    let total = floats.len().max(1) as f64;
    let mut caption = format!("{} ({}) - model {} - {} rows", column.name, column.kind, model.model_id, floats.len());
    let modal: Vec<String> = column
        .modes
        .iter()
        .zip(&mode_counts)
        .map(|(m, &n)| format!("{} {:.1}%", m.map_or("null".to_string(), |v| v.to_string()), 100.0 * n as f64 / total))
        .collect();
    if !modal.is_empty() {
        caption += &format!(" - modes: {}", modal.join(", "));
    }

    register_font();
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw { path: shown.clone(), reason: e.to_string() };
    let root = BitMapBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(lo..hi, 0.0..top)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(format!(
            "{}{} (central 99% of non-modal values, {BINS} bins)",
            column.name,
            if log { ", log scale" } else { "" }
        ))
        .x_label_formatter(&|t| {
            let x = if log { 10f64.powf(*t) } else { *t };
            if x.abs() >= 1e5 || (x != 0.0 && x.abs() < 1e-2) {
                format!("{x:.1e}")
            } else {
                format!("{}", (x * 100.0).round() / 100.0)
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("rows per bin")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| draw(&e))?;
    let bar = RGBColor(70, 130, 180).mix(0.55).filled();
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = lo + width * i as f64;
            Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], bar)
        }))
        .map_err(|e| draw(&e))?
        .label(format!("shard histogram ({} values)", values.len()))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], bar));
    chart
        .draw_series(LineSeries::new(curve, RED.stroke_width(2)))
        .map_err(|e| draw(&e))?
        .label(format!("fitted mixture ({} of {} components kept)", column.one_hot.len(), mix.weights.len()))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(Plotted { column: column.name.clone(), values: values.len(), modal: mode_counts.iter().sum::<usize>() + nulls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_integrates_to_one_and_quantiles_pick_ends() {
        let values: Vec<f64> =
            (0..2_000).map(|i| if i % 4 == 0 { f64::from(i % 7) } else { 10.0 + f64::from(i % 13) }).collect();
        let params = shardflow_model::MixtureParams::default().check().expect("valid");
        let mix = shardflow_model::fit(&values, &params).expect("fit");
        let step = 0.01;
        let area: f64 = (0..6000).map(|i| density(&mix, -20.0 + step * f64::from(i)) * step).sum();
        assert!((area - 1.0).abs() < 1e-3, "{area}");
        let sorted: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!((quantile(&sorted, 0.0), quantile(&sorted, 0.5), quantile(&sorted, 1.0)), (0.0, 50.0, 100.0));
    }
}
