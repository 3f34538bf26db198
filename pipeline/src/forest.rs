//! A random-forest regressor: CART trees on squared error, bagged, saved as one Parquet file.
//!
//! # Why hand-written
//! We need a 100-tree regressor whose trained model is saved to a small file and served.
//! `biosphere` 0.4 is fast, but its trees are private and cannot be serialized; `smartcore`
//! 0.4 serializes, but its regression tree scans all n samples at every node (O(n × nodes),
//! quadratic for deep trees). So this module is a compact CART forest of its own.
//!
//! # What it mirrors
//! scikit-learn's `RandomForestRegressor` where that is cheap: squared-error splits
//! (variance reduction, the same proxy `sum_l²/w_l + sum_r²/w_r`), thresholds at the midpoint
//! of two consecutive distinct values with `x <= threshold` going left, bootstrap as per-sample
//! counts (the samples drawn zero times take no part in the tree), `min_samples_leaf` and
//! `min_samples_split` counting distinct in-bag samples, and features drawn at random per node
//! until `max_features` have been looked at and at least one was not constant. Unlike
//! scikit-learn, features are kept as `f64` (it rounds them to `f32`), and a NaN at prediction
//! time goes right.
//!
//! # How a tree is built
//! Every feature is sorted once for the whole forest. A tree keeps, per feature, the in-bag
//! samples in sorted order; each node owns the same range `[start, end)` of every one of these
//! lists. A split scans each candidate feature's range once and then partitions every list's
//! range stably into left and right, so a level of the tree costs O(n·d) and a tree
//! O(n·d·depth) — no node rescans all rows. Trees are built in parallel with rayon, each with
//! its own RNG seeded from `(seed, tree index)`, so the forest does not depend on the number
//! of threads. Nodes are numbered depth first (preorder, as scikit-learn does): children come
//! after their parent, which the loader checks, and a left child right after it, which keeps
//! a path down a tree in few cache lines and the file's `left` column small (delta encoded).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, UInt16Array, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The `feature` of a leaf node.
pub const LEAF: u16 = u16::MAX;
/// The version of the model file this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The Parquet key-value metadata key holding the model's JSON header.
pub const METADATA_KEY: &str = "shardflow.forest";
/// Rows of the model file written per record batch (bounds the memory `save` adds).
const SAVE_BATCH_NODES: usize = 1 << 20;
/// Rows predicted per rayon task, at most (and at least 1024 where there are more).
const PREDICT_CHUNK: usize = 1 << 16;
/// Rows walked down a tree side by side in `predict`.
const LANES: usize = 8;
/// In-bag samples of one tree are numbered with `u32`, and so are its nodes (< 2 × samples).
const MAX_ROWS: usize = (u32::MAX / 2) as usize;

/// An error fitting, predicting with, saving or loading a forest.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    /// The training set has no rows or no feature columns.
    #[error("cannot fit a forest on {rows} rows and {features} feature columns: both must be at least 1")]
    Empty {
        /// Rows given.
        rows: usize,
        /// Feature columns given.
        features: usize,
    },
    /// A column's length differs from the target's or the other columns'.
    #[error("column `{column}` has {len} values where {expected} were expected")]
    LengthMismatch {
        /// The column's name (or `target`, or `feature <i>` when names are unknown).
        column: String,
        /// Its length.
        len: usize,
        /// The length expected.
        expected: usize,
    },
    /// A value used for training is NaN or infinite.
    #[error("column `{column}` row {row} is {value}: training values must be finite")]
    NonFinite {
        /// The column's name, or `target`.
        column: String,
        /// The row.
        row: usize,
        /// The value.
        value: f64,
    },
    /// The number of feature names is not the number of feature columns, or a name repeats.
    #[error("feature names {names:?} do not name the {columns} feature columns one to one")]
    FeatureNames {
        /// The names given.
        names: Vec<String>,
        /// The number of feature columns.
        columns: usize,
    },
    /// More rows or features than a model can index.
    #[error("{what} is {got}, more than the {max} a forest supports")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// How many were given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A hyper-parameter is out of range.
    #[error("invalid forest parameter: {0}")]
    InvalidParams(String),
    /// Prediction input with another number of features than the model's.
    #[error("the model takes {expected} features ({names}), the input has {got}")]
    FeatureCount {
        /// The model's number of features.
        expected: usize,
        /// The input's.
        got: usize,
        /// The model's feature names, comma separated.
        names: String,
    },
    /// Reading or writing the model file failed at the operating-system level.
    #[error("model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model file is not Parquet that this module can read or write.
    #[error("model file {path} as Parquet: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ParquetError,
    },
    /// Building or reading the model file's Arrow batches failed.
    #[error("model file {path} as Arrow: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ArrowError,
    },
    /// The model file is valid Parquet but not a valid forest.
    #[error("model file {path} is not a valid forest: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ForestError {
    /// Whether trying again unchanged may succeed: only operating-system I/O errors, the
    /// rest are caused by the input or the file and stay the same.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ForestError::Io { .. })
    }
}

/// The forest's hyper-parameters, with scikit-learn `RandomForestRegressor`'s defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestParams {
    /// Number of trees (scikit-learn's `n_estimators`), at least 1.
    pub trees: usize,
    /// Deepest level a node may be at (the root is at 0); `None` grows until leaves are pure
    /// or too small to split.
    pub max_depth: Option<usize>,
    /// Fewest distinct in-bag samples in a leaf, at least 1.
    pub min_samples_leaf: usize,
    /// Fewest distinct in-bag samples in a node that may be split, at least 2.
    pub min_samples_split: usize,
    /// Features looked at per split; `None` = all (scikit-learn's regressor default 1.0).
    pub max_features: Option<usize>,
    /// Seed of the bootstrap and feature draws.
    pub seed: u64,
    /// Train each tree on a bootstrap sample (n draws with replacement) rather than all rows.
    pub bootstrap: bool,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            trees: 100,
            max_depth: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            max_features: None,
            seed: 0,
            bootstrap: true,
        }
    }
}

impl ForestParams {
    /// Check the parameters for a training set of `features` columns.
    ///
    /// # Errors
    /// [`ForestError::InvalidParams`] naming the parameter out of range.
    pub fn check(&self, features: usize) -> Result<(), ForestError> {
        let invalid = |what: String| Err(ForestError::InvalidParams(what));
        if self.trees == 0 || self.trees > u32::MAX as usize {
            return invalid(format!("trees is {}, it must be 1 to {}", self.trees, u32::MAX));
        }
        if self.max_depth == Some(0) {
            return invalid("max_depth is 0, it must be at least 1 or None".into());
        }
        if self.min_samples_leaf == 0 {
            return invalid("min_samples_leaf is 0, it must be at least 1".into());
        }
        if self.min_samples_split < 2 {
            return invalid(format!("min_samples_split is {}, it must be at least 2", self.min_samples_split));
        }
        if let Some(k) = self.max_features
            && (k == 0 || k > features)
        {
            return invalid(format!("max_features is {k}, it must be 1 to the {features} features or None"));
        }
        Ok(())
    }
}

/// One node in 24 bytes, so that a path down a deep tree touches few cache lines.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    /// A split's threshold (`x[feature] <= threshold` goes left), or a leaf's value.
    threshold_or_value: f64,
    /// A split's left child (0 in a leaf).
    left: u32,
    /// A split's right child (0 in a leaf).
    right: u32,
    /// The feature a split looks at, [`LEAF`] in a leaf.
    feature: u16,
}

impl Node {
    fn leaf(value: f64) -> Node {
        Node { threshold_or_value: value, left: 0, right: 0, feature: LEAF }
    }
}

/// One tree as a flat node array in depth-first preorder: node 0 is the root and a split's
/// left child the node after it (as scikit-learn lays trees out), so that going left stays
/// in the same cache line.
#[derive(Debug, Clone, PartialEq, Default)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The leaf value for a row, reading feature `f` through `x(f)`.
    #[inline]
    fn predict(&self, x: impl Fn(usize) -> f64) -> f64 {
        // Trees have a root and children come after their parent (built so, checked on
        // load), so the indexing is in range and the walk ends.
        let mut node = &self.nodes[0];
        while node.feature != LEAF {
            let next = if x(node.feature as usize) <= node.threshold_or_value { node.left } else { node.right };
            node = &self.nodes[next as usize];
        }
        node.threshold_or_value
    }

    /// Add the leaf values of up to [`LANES`] rows to `out`, reading feature `f` of row `k`
    /// through `x(f, k)`. The rows walk down together, so that their loads overlap instead of
    /// each waiting on the last.
    #[inline]
    fn add_lanes(&self, out: &mut [f64], x: impl Fn(usize, usize) -> f64) {
        let mut at = [0u32; LANES];
        let lanes = out.len().min(LANES);
        loop {
            let mut moving = false;
            for (k, at) in at.iter_mut().enumerate().take(lanes) {
                // In range as in `predict`.
                let node = &self.nodes[*at as usize];
                if node.feature != LEAF {
                    moving = true;
                    *at = if x(node.feature as usize, k) <= node.threshold_or_value { node.left } else { node.right };
                }
            }
            if !moving {
                break;
            }
        }
        for (o, &at) in out.iter_mut().zip(&at) {
            *o += self.nodes[at as usize].threshold_or_value;
        }
    }

    /// Check what prediction relies on: a root, children in range and after their parent,
    /// features in range, finite thresholds and leaf values.
    fn validate(&self, features: usize) -> Result<(), String> {
        let n = self.len();
        if n == 0 {
            return Err("a tree has no nodes".into());
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let v = node.threshold_or_value;
            if node.feature == LEAF {
                if !v.is_finite() {
                    return Err(format!("leaf {i} has value {v}"));
                }
                continue;
            }
            if node.feature as usize >= features {
                return Err(format!("node {i} splits on feature {}, the model has {features}", node.feature));
            }
            if !v.is_finite() {
                return Err(format!("node {i} has threshold {v}"));
            }
            for child in [node.left, node.right] {
                let c = child as usize;
                if c <= i || c >= n {
                    return Err(format!("node {i} has child {c}: children must be after it and below {n}"));
                }
            }
        }
        Ok(())
    }
}

/// A trained random-forest regressor.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    feature_names: Vec<String>,
    params: ForestParams,
    trees: Vec<Tree>,
}

/// The JSON header kept in the model file's key-value metadata.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format_version: u32,
    feature_names: Vec<String>,
    params: ForestParams,
    trees: usize,
    nodes: usize,
}

impl Forest {
    /// Fit a forest on feature `columns` (column-major: `columns[f][row]`) and target `y`,
    /// building the trees in parallel on the current rayon pool.
    ///
    /// # Errors
    /// [`ForestError::Empty`], [`ForestError::LengthMismatch`], [`ForestError::NonFinite`]
    /// (NaN or ±inf anywhere), [`ForestError::FeatureNames`], [`ForestError::TooLarge`] and
    /// [`ForestError::InvalidParams`].
    pub fn fit<C: AsRef<[f64]> + Sync, S: AsRef<str>>(
        columns: &[C],
        y: &[f64],
        feature_names: &[S],
        params: &ForestParams,
    ) -> Result<Forest, ForestError> {
        let names: Vec<String> = feature_names.iter().map(|s| s.as_ref().to_owned()).collect();
        check_training(columns, y, &names)?;
        params.check(columns.len())?;
        let columns: Vec<&[f64]> = columns.iter().map(AsRef::as_ref).collect();
        // Each feature's rows sorted by value once; ties stay in row order.
        let sorted: Vec<Vec<u32>> = columns
            .par_iter()
            .map(|col| {
                let mut order: Vec<u32> = (0..col.len() as u32).collect();
                order.sort_by(|&a, &b| col[a as usize].total_cmp(&col[b as usize]));
                order
            })
            .collect();
        let data = Training { columns: &columns, y, sorted: &sorted };
        let trees = (0..params.trees).into_par_iter().map(|t| build_tree(&data, params, t)).collect();
        Ok(Forest { feature_names: names, params: params.clone(), trees })
    }

    /// The feature names, in the order `predict` takes the columns.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The parameters the forest was fitted with.
    pub fn params(&self) -> &ForestParams {
        &self.params
    }

    /// Number of trees.
    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    /// Number of nodes in all trees (the model file's rows).
    pub fn node_count(&self) -> usize {
        self.trees.iter().map(Tree::len).sum()
    }

    /// Predict a value for every row of feature `columns` (column-major, in the order of
    /// [`Forest::feature_names`]), in parallel on the current rayon pool.
    ///
    /// # Errors
    /// [`ForestError::FeatureCount`] and [`ForestError::LengthMismatch`].
    pub fn predict<C: AsRef<[f64]> + Sync>(&self, columns: &[C]) -> Result<Vec<f64>, ForestError> {
        self.check_features(columns.len())?;
        let columns: Vec<&[f64]> = columns.iter().map(AsRef::as_ref).collect();
        let rows = columns.first().map_or(0, |c| c.len());
        for (name, col) in self.feature_names.iter().zip(&columns) {
            if col.len() != rows {
                return Err(ForestError::LengthMismatch { column: name.clone(), len: col.len(), expected: rows });
            }
        }
        let mut out = vec![0.0; rows];
        // A few tasks per thread; results do not depend on the chunking.
        let size = rows.div_ceil(4 * rayon::current_num_threads()).clamp(1024, PREDICT_CHUNK);
        out.par_chunks_mut(size).enumerate().for_each(|(chunk, out)| {
            let first = chunk * size;
            // Tree by tree over a chunk of rows, so a tree's top levels stay in cache; each
            // row still adds its trees in order, as `predict_one` does.
            for tree in &self.trees {
                for (block, out) in out.chunks_mut(LANES).enumerate() {
                    let base = first + block * LANES;
                    tree.add_lanes(out, |f, k| columns[f][base + k]);
                }
            }
            let trees = self.trees.len() as f64;
            out.iter_mut().for_each(|o| *o /= trees);
        });
        Ok(out)
    }

    /// Predict the value of one row (its features in the order of [`Forest::feature_names`]).
    ///
    /// # Errors
    /// [`ForestError::FeatureCount`].
    pub fn predict_one(&self, row: &[f64]) -> Result<f64, ForestError> {
        self.check_features(row.len())?;
        let sum = self.trees.iter().fold(0.0, |sum, tree| sum + tree.predict(|f| row[f]));
        Ok(sum / self.trees.len() as f64)
    }

    fn check_features(&self, got: usize) -> Result<(), ForestError> {
        if got == self.feature_names.len() {
            return Ok(());
        }
        let names = self.feature_names.join(", ");
        Err(ForestError::FeatureCount { expected: self.feature_names.len(), got, names })
    }

    /// Write the model to `path` as Parquet (zstd), one row per node, atomically: to a
    /// temporary file beside it, then renamed over it. Returns the file's size in bytes.
    ///
    /// # Errors
    /// [`ForestError::Io`], [`ForestError::Parquet`] and [`ForestError::Arrow`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<u64, ForestError> {
        let path = path.as_ref();
        let name = path.file_name().map_or_else(|| "forest".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let written = self.write_parquet(&tmp, path).and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| ForestError::Io { path: path.to_owned(), source })
        });
        if written.is_err() {
            // Best effort: the temporary file is ours and worthless now.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        let meta = std::fs::metadata(path).map_err(|source| ForestError::Io { path: path.to_owned(), source })?;
        Ok(meta.len())
    }

    fn write_parquet(&self, tmp: &Path, path: &Path) -> Result<(), ForestError> {
        let io = |source| ForestError::Io { path: path.to_owned(), source };
        let pq = |source| ForestError::Parquet { path: path.to_owned(), source };
        let header = Header {
            format_version: FORMAT_VERSION,
            feature_names: self.feature_names.clone(),
            params: self.params.clone(),
            trees: self.trees.len(),
            nodes: self.node_count(),
        };
        let header = serde_json::to_string(&header)
            .map_err(|e| ForestError::Corrupt { path: path.to_owned(), reason: format!("header as JSON: {e}") })?;
        let level = ZstdLevel::try_new(3).map_err(pq)?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_dictionary_enabled(false)
            .set_key_value_metadata(Some(vec![KeyValue::new(METADATA_KEY.into(), header)]));
        for col in ["tree", "left", "right"] {
            props = props.set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
        }
        for col in ["threshold", "value"] {
            props = props.set_column_encoding(ColumnPath::from(col), Encoding::BYTE_STREAM_SPLIT);
        }
        let file = File::create(tmp).map_err(io)?;
        let mut writer = ArrowWriter::try_new(file, node_schema(), Some(props.build())).map_err(pq)?;
        let mut batch = NodeBatch::default();
        for (t, tree) in self.trees.iter().enumerate() {
            for node in &tree.nodes {
                batch.push(t as u32, node);
                if batch.tree.len() == SAVE_BATCH_NODES {
                    writer.write(&batch.take(path)?).map_err(pq)?;
                }
            }
        }
        if !batch.tree.is_empty() {
            writer.write(&batch.take(path)?).map_err(pq)?;
        }
        let mut file = writer.into_inner().map_err(pq)?;
        file.flush().map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Read a model written by [`Forest::save`], checking its header and every tree's
    /// structure, so that a corrupt file is an error and never a panic at prediction.
    ///
    /// # Errors
    /// [`ForestError::Io`], [`ForestError::Parquet`], [`ForestError::Arrow`] and
    /// [`ForestError::Corrupt`].
    pub fn load(path: impl AsRef<Path>) -> Result<Forest, ForestError> {
        let path = path.as_ref();
        let corrupt = |reason: String| ForestError::Corrupt { path: path.to_owned(), reason };
        let pq = |source| ForestError::Parquet { path: path.to_owned(), source };
        let file = File::open(path).map_err(|source| ForestError::Io { path: path.to_owned(), source })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?.with_batch_size(1 << 16);
        let header = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == METADATA_KEY))
            .and_then(|kv| kv.value.clone())
            .ok_or_else(|| corrupt(format!("no `{METADATA_KEY}` key in the Parquet metadata")))?;
        let header: Header =
            serde_json::from_str(&header).map_err(|e| corrupt(format!("`{METADATA_KEY}` header: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {}, this build reads {FORMAT_VERSION}",
                header.format_version
            )));
        }
        let features = header.feature_names.len();
        if features == 0 || features >= LEAF as usize {
            return Err(corrupt(format!("{features} features")));
        }
        header.params.check(features).map_err(|e| corrupt(format!("header: {e}")))?;
        if header.params.trees != header.trees {
            return Err(corrupt(format!("{} trees, its parameters say {}", header.trees, header.params.trees)));
        }
        let expected = node_schema();
        for field in expected.fields() {
            match builder.schema().field_with_name(field.name()) {
                Ok(f) if f.data_type() == field.data_type() => {}
                Ok(f) => {
                    return Err(corrupt(format!(
                        "column `{}` is {}, not {}",
                        f.name(),
                        f.data_type(),
                        field.data_type()
                    )));
                }
                Err(_) => return Err(corrupt(format!("no column `{}`", field.name()))),
            }
        }
        let mut trees: Vec<Tree> = Vec::new();
        for batch in builder.build().map_err(pq)? {
            let batch = batch.map_err(|source| ForestError::Arrow { path: path.to_owned(), source })?;
            let tree = column::<UInt32Array>(&batch, "tree").map_err(&corrupt)?;
            let feature = column::<UInt16Array>(&batch, "feature").map_err(&corrupt)?;
            if tree.null_count() > 0 || feature.null_count() > 0 {
                return Err(corrupt("null tree or feature".into()));
            }
            let threshold = column::<Float64Array>(&batch, "threshold").map_err(&corrupt)?;
            let left = column::<UInt32Array>(&batch, "left").map_err(&corrupt)?;
            let right = column::<UInt32Array>(&batch, "right").map_err(&corrupt)?;
            let value = column::<Float64Array>(&batch, "value").map_err(&corrupt)?;
            for i in 0..batch.num_rows() {
                let t = tree.value(i) as usize;
                if t == trees.len() {
                    if trees.len() == header.trees {
                        return Err(corrupt(format!("more trees than the {} in its header", header.trees)));
                    }
                    trees.push(Tree::default());
                } else if t + 1 != trees.len() {
                    return Err(corrupt(format!(
                        "tree {t} where tree {} or {} was expected",
                        trees.len().saturating_sub(1),
                        trees.len()
                    )));
                }
                let Some(tr) = trees.last_mut() else { return Err(corrupt("no tree".into())) };
                let node = tr.len();
                let missing = |what: &str| corrupt(format!("tree {t} node {node} has no {what}"));
                let f = feature.value(i);
                tr.nodes.push(if f == LEAF {
                    Node::leaf(value.is_valid(i).then(|| value.value(i)).ok_or_else(|| missing("value"))?)
                } else {
                    Node {
                        threshold_or_value: threshold
                            .is_valid(i)
                            .then(|| threshold.value(i))
                            .ok_or_else(|| missing("threshold"))?,
                        left: left.is_valid(i).then(|| left.value(i)).ok_or_else(|| missing("left child"))?,
                        right: right.is_valid(i).then(|| right.value(i)).ok_or_else(|| missing("right child"))?,
                        feature: f,
                    }
                });
            }
        }
        if trees.len() != header.trees {
            return Err(corrupt(format!("{} trees, its header says {}", trees.len(), header.trees)));
        }
        for (t, tree) in trees.iter().enumerate() {
            tree.validate(features).map_err(|e| corrupt(format!("tree {t}: {e}")))?;
        }
        let forest = Forest { feature_names: header.feature_names, params: header.params, trees };
        if forest.node_count() != header.nodes {
            return Err(corrupt(format!("{} nodes, its header says {}", forest.node_count(), header.nodes)));
        }
        Ok(forest)
    }
}

/// The model file's columns: a split has no value, a leaf no threshold and no children.
fn node_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("tree", DataType::UInt32, false),
        Field::new("feature", DataType::UInt16, false),
        Field::new("threshold", DataType::Float64, true),
        Field::new("left", DataType::UInt32, true),
        Field::new("right", DataType::UInt32, true),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// The column `name` of `batch`, of Arrow type `A`.
fn column<'a, A: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a A, String> {
    let col = batch.column_by_name(name).ok_or_else(|| format!("no column `{name}`"))?;
    col.as_any().downcast_ref::<A>().ok_or_else(|| format!("column `{name}` is {}", col.data_type()))
}

/// The nodes of the model file's next record batch.
#[derive(Default)]
struct NodeBatch {
    tree: Vec<u32>,
    feature: Vec<u16>,
    threshold: Vec<Option<f64>>,
    left: Vec<Option<u32>>,
    right: Vec<Option<u32>>,
    value: Vec<Option<f64>>,
}

impl NodeBatch {
    fn push(&mut self, tree: u32, node: &Node) {
        let split = node.feature != LEAF;
        self.tree.push(tree);
        self.feature.push(node.feature);
        self.threshold.push(split.then_some(node.threshold_or_value));
        self.left.push(split.then_some(node.left));
        self.right.push(split.then_some(node.right));
        self.value.push((!split).then_some(node.threshold_or_value));
    }

    fn take(&mut self, path: &Path) -> Result<RecordBatch, ForestError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.tree))),
            Arc::new(UInt16Array::from(std::mem::take(&mut self.feature))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.threshold))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.left))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.right))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.value))),
        ];
        RecordBatch::try_new(node_schema(), columns)
            .map_err(|source| ForestError::Arrow { path: path.to_owned(), source })
    }
}

fn check_training<C: AsRef<[f64]>>(columns: &[C], y: &[f64], names: &[String]) -> Result<(), ForestError> {
    if y.is_empty() || columns.is_empty() {
        return Err(ForestError::Empty { rows: y.len(), features: columns.len() });
    }
    if y.len() > MAX_ROWS {
        return Err(ForestError::TooLarge { what: "the number of rows", got: y.len(), max: MAX_ROWS });
    }
    if columns.len() >= LEAF as usize {
        let max = LEAF as usize - 1;
        return Err(ForestError::TooLarge { what: "the number of features", got: columns.len(), max });
    }
    let distinct: std::collections::HashSet<&String> = names.iter().collect();
    if names.len() != columns.len() || distinct.len() != names.len() {
        return Err(ForestError::FeatureNames { names: names.to_vec(), columns: columns.len() });
    }
    let finite = |column: &str, values: &[f64]| match values.iter().position(|v| !v.is_finite()) {
        Some(row) => Err(ForestError::NonFinite { column: column.to_owned(), row, value: values[row] }),
        None => Ok(()),
    };
    finite("target", y)?;
    for (name, col) in names.iter().zip(columns) {
        let col = col.as_ref();
        if col.len() != y.len() {
            return Err(ForestError::LengthMismatch { column: name.clone(), len: col.len(), expected: y.len() });
        }
        finite(name, col)?;
    }
    Ok(())
}

/// The training set shared by all trees.
struct Training<'a> {
    columns: &'a [&'a [f64]],
    y: &'a [f64],
    /// Per feature, all rows sorted by value.
    sorted: &'a [Vec<u32>],
}

/// The RNG of tree `t`: a function of the seed and the tree only, never of the thread.
fn tree_rng(seed: u64, t: usize) -> Xoshiro256PlusPlus {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    Xoshiro256PlusPlus::seed_from_u64(splitmix(splitmix(seed) ^ t as u64))
}

/// The best split found so far at a node.
struct Split {
    feature: usize,
    /// Position in the node's sorted range where the right child starts.
    pos: usize,
    threshold: f64,
    proxy: f64,
}

fn build_tree(data: &Training<'_>, params: &ForestParams, t: usize) -> Tree {
    let n = data.y.len();
    let d = data.columns.len();
    let mut rng = tree_rng(params.seed, t);
    // Bootstrap counts; the in-bag rows get compact numbers 0..m.
    let mut counts = vec![0u32; n];
    if params.bootstrap {
        for _ in 0..n {
            counts[rng.random_range(0..n)] += 1;
        }
    } else {
        counts.fill(1);
    }
    let mut compact = vec![u32::MAX; n];
    let (mut w, mut y) = (Vec::new(), Vec::new());
    let mut x: Vec<Vec<f64>> = vec![Vec::new(); d];
    for row in (0..n).filter(|&r| counts[r] > 0) {
        compact[row] = w.len() as u32;
        w.push(f64::from(counts[row]));
        y.push(data.y[row]);
        for (xf, col) in x.iter_mut().zip(data.columns) {
            xf.push(col[row]);
        }
    }
    drop(counts);
    let m = w.len();
    let mut order: Vec<Vec<u32>> = data
        .sorted
        .iter()
        .map(|rows| rows.iter().map(|&r| compact[r as usize]).filter(|&c| c != u32::MAX).collect())
        .collect();
    drop(compact);

    let max_features = params.max_features.unwrap_or(d);
    let msl = params.min_samples_leaf;
    let mut features: Vec<usize> = (0..d).collect();
    let mut goes_left = vec![false; m];
    let mut scratch: Vec<u32> = Vec::with_capacity(m);
    let mut tree = Tree::default();
    // Depth first, left before right: a node is numbered when it is taken off the stack, so
    // the numbering is preorder and a left child follows its parent.
    let mut stack = vec![Pending { start: 0, end: m, depth: 0, parent: None }];
    while let Some(Pending { start, end, depth, parent }) = stack.pop() {
        let samples = &order[0][start..end];
        let (mean, w_total) = weighted_mean(samples, &w, &y);
        let node = tree.len();
        tree.nodes.push(Node::leaf(mean));
        match parent {
            Some((p, Side::Left)) => tree.nodes[p].left = node as u32,
            Some((p, Side::Right)) => tree.nodes[p].right = node as u32,
            None => {}
        }
        let count = end - start;
        let pure = samples.iter().all(|&i| y[i as usize] == y[samples[0] as usize]);
        if pure
            || params.max_depth.is_some_and(|max| depth >= max)
            || count < params.min_samples_split
            || count < 2 * msl
        {
            continue;
        }
        let s_total: f64 = samples.iter().map(|&i| w[i as usize] * (y[i as usize] - mean)).sum();
        let mut best: Option<Split> = None;
        let (mut visited, mut non_constant) = (0, 0);
        let mut next = 0;
        while next < d && (visited < max_features || non_constant == 0) {
            // Draw the next feature without replacement.
            let pick = rng.random_range(next..d);
            features.swap(next, pick);
            let f = features[next];
            next += 1;
            visited += 1;
            let ord = &order[f][start..end];
            let xs = &x[f];
            if xs[ord[0] as usize] >= xs[ord[count - 1] as usize] {
                continue;
            }
            non_constant += 1;
            let (mut wl, mut sl) = (0.0, 0.0);
            for k in 0..count - 1 {
                let i = ord[k] as usize;
                wl += w[i];
                sl += w[i] * (y[i] - mean);
                let left = k + 1;
                if left < msl {
                    continue;
                }
                if count - left < msl {
                    break;
                }
                let (a, b) = (xs[i], xs[ord[k + 1] as usize]);
                if b <= a {
                    continue;
                }
                let sr = s_total - sl;
                let proxy = sl * sl / wl + sr * sr / (w_total - wl);
                if best.as_ref().is_none_or(|s| proxy > s.proxy) {
                    best = Some(Split { feature: f, pos: start + left, threshold: midpoint(a, b), proxy });
                }
            }
        }
        let Some(split) = best else { continue };
        for &i in &order[split.feature][start..split.pos] {
            goes_left[i as usize] = true;
        }
        for &i in &order[split.feature][split.pos..end] {
            goes_left[i as usize] = false;
        }
        for (g, list) in order.iter_mut().enumerate() {
            if g != split.feature {
                stable_partition(&mut list[start..end], &goes_left, &mut scratch);
            }
        }
        tree.nodes[node].feature = split.feature as u16;
        tree.nodes[node].threshold_or_value = split.threshold;
        let depth = depth + 1;
        stack.push(Pending { start: split.pos, end, depth, parent: Some((node, Side::Right)) });
        stack.push(Pending { start, end: split.pos, depth, parent: Some((node, Side::Left)) });
    }
    tree
}

/// Which child of its parent a node is.
#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
}

/// A node still to be built: its samples are `[start, end)` of every feature's sorted list.
struct Pending {
    start: usize,
    end: usize,
    depth: usize,
    parent: Option<(usize, Side)>,
}

/// The weighted mean of `y` over `samples`, and their total weight.
fn weighted_mean(samples: &[u32], w: &[f64], y: &[f64]) -> (f64, f64) {
    let (mut sw, mut swy) = (0.0, 0.0);
    for &i in samples {
        sw += w[i as usize];
        swy += w[i as usize] * y[i as usize];
    }
    (swy / sw, sw)
}

/// The threshold between consecutive distinct values `a < b`, as scikit-learn places it:
/// the midpoint, or `a` where the midpoint rounds to `b`.
fn midpoint(a: f64, b: f64) -> f64 {
    let mid = a / 2.0 + b / 2.0;
    if mid >= a && mid < b && mid.is_finite() { mid } else { a }
}

/// Move the samples going left to the front of `list`, keeping both sides' order.
fn stable_partition(list: &mut [u32], goes_left: &[bool], scratch: &mut Vec<u32>) {
    scratch.clear();
    let mut l = 0;
    for k in 0..list.len() {
        let i = list[k];
        if goes_left[i as usize] {
            list[l] = i;
            l += 1;
        } else {
            scratch.push(i);
        }
    }
    list[l..].copy_from_slice(scratch);
}

/// Goodness of fit of predictions against the truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Coefficient of determination, `1 - SS_res / SS_tot` (scikit-learn's `r2_score`: 1.0
    /// for a constant truth predicted exactly, 0.0 for one predicted otherwise).
    pub r2: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Rows compared.
    pub rows: u64,
}

/// Compare predictions `y_pred` with the truth `y_true`.
///
/// # Errors
/// [`ForestError::LengthMismatch`] for slices of different lengths, [`ForestError::Empty`]
/// for empty ones.
pub fn metrics(y_true: &[f64], y_pred: &[f64]) -> Result<Metrics, ForestError> {
    if y_true.len() != y_pred.len() {
        return Err(ForestError::LengthMismatch { column: "y_pred".into(), len: y_pred.len(), expected: y_true.len() });
    }
    if y_true.is_empty() {
        return Err(ForestError::Empty { rows: 0, features: 1 });
    }
    let n = y_true.len() as f64;
    let mean = y_true.iter().sum::<f64>() / n;
    let (mut abs, mut ss_res, mut ss_tot) = (0.0, 0.0, 0.0);
    for (&t, &p) in y_true.iter().zip(y_pred) {
        abs += (t - p).abs();
        ss_res += (t - p) * (t - p);
        ss_tot += (t - mean) * (t - mean);
    }
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_res == 0.0 {
        1.0
    } else {
        0.0
    };
    Ok(Metrics { r2, mae: abs / n, rmse: (ss_res / n).sqrt(), rows: y_true.len() as u64 })
}

/// Split rows `0..n_rows` at random into (train, test), each in increasing order, with
/// `ceil(n_rows × test_fraction)` test rows like scikit-learn's `train_test_split`;
/// `test_fraction` is clamped to `[0, 1]` (NaN counts as 0). The same seed gives the same split.
pub fn split_train_test(n_rows: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let fraction = if test_fraction.is_nan() { 0.0 } else { test_fraction.clamp(0.0, 1.0) };
    let n_test = ((n_rows as f64 * fraction).ceil() as usize).min(n_rows);
    let mut rows: Vec<usize> = (0..n_rows).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // A partial Fisher–Yates shuffle: the first n_test places are a uniform sample.
    for i in 0..n_test {
        let j = rng.random_range(i..n_rows);
        rows.swap(i, j);
    }
    let mut train = rows.split_off(n_test);
    let mut test = rows;
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_tree() -> ForestParams {
        ForestParams { trees: 1, bootstrap: false, ..ForestParams::default() }
    }

    /// y = 3·x0 + uniform noise in [-1, 1], x0 in [0, 10], x1 pure noise.
    fn linear(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let x0: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..10.0)).collect();
        let x1: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
        let y = x0.iter().map(|&v| 3.0 * v + rng.random_range(-1.0..1.0)).collect();
        (vec![x0, x1], y)
    }

    /// The first tree's node features, in preorder.
    fn features(forest: &Forest) -> Vec<u16> {
        forest.trees[0].nodes.iter().map(|n| n.feature).collect()
    }

    fn take(columns: &[Vec<f64>], rows: &[usize]) -> Vec<Vec<f64>> {
        columns.iter().map(|c| rows.iter().map(|&r| c[r]).collect()).collect()
    }

    #[test]
    fn one_tree_learns_a_step_exactly() -> Result<(), ForestError> {
        let x: Vec<f64> = (0..100).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|&v| if v < 50.0 { 1.0 } else { 5.0 }).collect();
        let forest = Forest::fit(&[&x], &y, &["x"], &one_tree())?;
        assert_eq!(forest.node_count(), 3);
        assert_eq!(
            forest.trees[0].nodes,
            [Node { threshold_or_value: 49.5, left: 1, right: 2, feature: 0 }, Node::leaf(1.0), Node::leaf(5.0)]
        );
        assert_eq!(forest.predict(&[x])?, y);
        assert_eq!(forest.predict_one(&[49.5])?, 1.0);
        assert_eq!(forest.predict_one(&[-1e300])?, 1.0);
        assert_eq!(forest.predict_one(&[49.6])?, 5.0);
        Ok(())
    }

    #[test]
    fn depth_and_leaf_size_limit_the_tree() -> Result<(), ForestError> {
        let x: Vec<f64> = (0..64).map(f64::from).collect();
        let y = x.clone();
        let full = Forest::fit(&[&x], &y, &["x"], &one_tree())?;
        // Every distinct value its own leaf: 64 leaves, 63 splits; the training set is recalled.
        assert_eq!(full.node_count(), 127);
        assert_eq!(full.predict(&[&x])?, y);
        let shallow = Forest::fit(&[&x], &y, &["x"], &ForestParams { max_depth: Some(2), ..one_tree() })?;
        assert_eq!(shallow.node_count(), 7);
        // Halves at 31.5, quarters at 15.5 and 47.5: leaves are the quarters' means.
        assert_eq!(shallow.predict_one(&[0.0])?, 7.5);
        assert_eq!(shallow.predict_one(&[63.0])?, 55.5);
        // Leaves of at least 10 samples: 64 → 32 + 32 → four leaves of 16, too small to split.
        let leafy = Forest::fit(&[&x], &y, &["x"], &ForestParams { min_samples_leaf: 10, ..one_tree() })?;
        assert_eq!(features(&leafy), [0, 0, LEAF, LEAF, 0, LEAF, LEAF]);
        let leafy = Forest::fit(&[x], &y, &["x"], &ForestParams { min_samples_leaf: 20, ..one_tree() })?;
        assert_eq!(features(&leafy), [0, LEAF, LEAF]);
        Ok(())
    }

    #[test]
    fn forest_learns_a_noisy_line() -> Result<(), ForestError> {
        let (x, y) = linear(3000, 7);
        let (train, test) = split_train_test(y.len(), 0.25, 1);
        let ytrain: Vec<f64> = train.iter().map(|&r| y[r]).collect();
        let ytest: Vec<f64> = test.iter().map(|&r| y[r]).collect();
        let params = ForestParams { trees: 30, seed: 3, min_samples_leaf: 5, ..ForestParams::default() };
        let forest = Forest::fit(&take(&x, &train), &ytrain, &["x0", "x1"], &params)?;
        let m = metrics(&ytest, &forest.predict(&take(&x, &test))?)?;
        assert!(m.r2 > 0.9, "{m:?}");
        assert_eq!(m.rows, 750);
        // The noise alone has MAE 0.5; the forest adds little to it.
        assert!(m.mae < 0.8, "{m:?}");
        Ok(())
    }

    #[test]
    fn same_seed_same_forest_whatever_the_threads() -> Result<(), Box<dyn std::error::Error>> {
        let (x, y) = linear(2000, 11);
        let params = ForestParams { trees: 16, seed: 42, max_features: Some(1), ..ForestParams::default() };
        let mut runs = Vec::new();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            let forest = pool.install(|| Forest::fit(&x, &y, &["x0", "x1"], &params))?;
            let pred = pool.install(|| forest.predict(&x))?;
            runs.push((forest, pred));
        }
        assert_eq!(runs[0].0, runs[1].0);
        let (a, b) = (&runs[0].1, &runs[1].1);
        assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()));
        // Rows predicted one by one add the same trees in the same order.
        for row in (0..y.len()).step_by(97) {
            let one = runs[0].0.predict_one(&[x[0][row], x[1][row]])?;
            assert_eq!(one.to_bits(), a[row].to_bits());
        }
        // Another seed draws other bootstraps.
        let other = Forest::fit(&x, &y, &["x0", "x1"], &ForestParams { seed: 43, ..params })?;
        assert_ne!(other.predict(&x)?, *a);
        Ok(())
    }

    #[test]
    fn save_load_round_trip_is_exact_and_plain_parquet() -> Result<(), Box<dyn std::error::Error>> {
        let (x, y) = linear(1500, 5);
        let params = ForestParams { trees: 8, seed: 9, ..ForestParams::default() };
        let forest = Forest::fit(&x, &y, &["x0", "x1"], &params)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("forest.parquet");
        let bytes = forest.save(&path)?;
        assert_eq!(bytes, std::fs::metadata(&path)?.len());
        // Only the model is left in the directory: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        let loaded = Forest::load(&path)?;
        assert_eq!(loaded, forest);
        let (before, after) = (forest.predict(&x)?, loaded.predict(&x)?);
        assert!(before.iter().zip(&after).all(|(p, q)| p.to_bits() == q.to_bits()));

        // Any Parquet reader sees one row per node and the JSON header.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?;
        let kv = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        let header = kv.iter().find(|kv| kv.key == METADATA_KEY).and_then(|kv| kv.value.clone());
        let header: serde_json::Value = serde_json::from_str(&header.unwrap_or_default())?;
        assert_eq!(header["format_version"], 1);
        assert_eq!(header["feature_names"], serde_json::json!(["x0", "x1"]));
        assert_eq!(header["params"]["trees"], 8);
        let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["tree", "feature", "threshold", "left", "right", "value"]);
        let rows: usize = reader.build()?.map(|b| b.map(|b| b.num_rows())).sum::<Result<_, _>>()?;
        assert_eq!(rows, forest.node_count());
        Ok(())
    }

    fn corrupt_reason(forest: &Forest) -> Result<String, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("forest.parquet");
        let _ = forest.save(&path)?;
        match Forest::load(&path) {
            Err(ForestError::Corrupt { reason, .. }) => Ok(reason),
            other => Err(format!("expected a corrupt forest, got {other:?}").into()),
        }
    }

    #[test]
    fn corrupt_files_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let forest = Forest::fit(&[&x], &x, &["x"], &one_tree())?;

        let mut bad = forest.clone();
        bad.trees[0].nodes[0].left = 99;
        assert!(corrupt_reason(&bad)?.contains("node 0 has child 99"));
        // A leaf turned into a split pointing back at the root.
        let mut cycle = forest.clone();
        let leaf = cycle.trees[0].nodes.iter().position(|n| n.feature == LEAF).unwrap_or_default();
        cycle.trees[0].nodes[leaf] = Node { threshold_or_value: 1.0, left: 0, right: 0, feature: 0 };
        assert!(corrupt_reason(&cycle)?.contains(&format!("node {leaf} has child 0: children must be after it")));
        let mut feature = forest.clone();
        feature.trees[0].nodes[0].feature = 3;
        assert!(corrupt_reason(&feature)?.contains("feature 3"));
        let mut value = forest.clone();
        value.trees[0].nodes[leaf].threshold_or_value = f64::NAN;
        assert!(corrupt_reason(&value)?.contains(&format!("leaf {leaf} has value NaN")));
        let mut empty = forest.clone();
        empty.trees[0].nodes.clear();
        assert!(corrupt_reason(&empty)?.contains("0 trees, its header says 1"));

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("forest.parquet");
        let bytes = forest.save(&path)?;
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.set_len(bytes / 2)?;
        drop(file);
        assert!(matches!(Forest::load(&path), Err(ForestError::Parquet { .. })));
        std::fs::write(&path, b"not a parquet file at all")?;
        assert!(matches!(Forest::load(&path), Err(ForestError::Parquet { .. })));
        let missing = dir.path().join("missing.parquet");
        assert!(matches!(Forest::load(&missing), Err(ForestError::Io { .. })));
        Ok(())
    }

    #[test]
    fn bad_input_is_rejected() -> Result<(), ForestError> {
        let p = ForestParams::default();
        let empty: [Vec<f64>; 0] = [];
        let none: [&str; 0] = [];
        assert!(matches!(Forest::fit(&empty, &[1.0], &none, &p), Err(ForestError::Empty { features: 0, .. })));
        assert!(matches!(Forest::fit(&[vec![]], &[], &["a"], &p), Err(ForestError::Empty { rows: 0, .. })));
        let nan = Forest::fit(&[vec![1.0, f64::NAN]], &[1.0, 2.0], &["a"], &p);
        assert!(matches!(nan, Err(ForestError::NonFinite { row: 1, ref column, .. }) if column == "a"));
        let inf = Forest::fit(&[vec![1.0, 2.0]], &[f64::INFINITY, 2.0], &["a"], &p);
        assert!(matches!(inf, Err(ForestError::NonFinite { row: 0, ref column, .. }) if column == "target"));
        let short = Forest::fit(&[vec![1.0]], &[1.0, 2.0], &["a"], &p);
        assert!(matches!(short, Err(ForestError::LengthMismatch { len: 1, expected: 2, .. })));
        let names = Forest::fit(&[vec![1.0], vec![2.0]], &[1.0], &["a", "a"], &p);
        assert!(matches!(names, Err(ForestError::FeatureNames { columns: 2, .. })));
        let zero = ForestParams { min_samples_leaf: 0, ..p.clone() };
        assert!(matches!(Forest::fit(&[vec![1.0]], &[1.0], &["a"], &zero), Err(ForestError::InvalidParams(_))));
        let wide = ForestParams { max_features: Some(2), ..p.clone() };
        assert!(matches!(Forest::fit(&[vec![1.0]], &[1.0], &["a"], &wide), Err(ForestError::InvalidParams(_))));

        let forest = Forest::fit(&[vec![1.0, 2.0]], &[1.0, 2.0], &["a"], &p)?;
        assert!(matches!(forest.predict_one(&[1.0, 2.0]), Err(ForestError::FeatureCount { expected: 1, got: 2, .. })));
        let two = [vec![1.0], vec![2.0]];
        assert!(matches!(forest.predict(&two), Err(ForestError::FeatureCount { .. })));
        Ok(())
    }

    #[test]
    fn metrics_match_hand_computed_values() -> Result<(), ForestError> {
        // Errors 0, 0, 0, 1; the truth's mean 2.5 gives SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5.
        let m = metrics(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 5.0])?;
        assert_eq!(m, Metrics { r2: 0.8, mae: 0.25, rmse: 0.5, rows: 4 });
        let m = metrics(&[2.0, 4.0], &[4.0, 2.0])?;
        assert_eq!((m.r2, m.mae, m.rmse), (-3.0, 2.0, 2.0));
        assert_eq!(metrics(&[3.0, 3.0], &[3.0, 3.0])?.r2, 1.0);
        assert_eq!(metrics(&[3.0, 3.0], &[3.0, 4.0])?.r2, 0.0);
        assert!(matches!(metrics(&[1.0], &[]), Err(ForestError::LengthMismatch { .. })));
        assert!(matches!(metrics(&[], &[]), Err(ForestError::Empty { .. })));
        Ok(())
    }

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (train, test) = split_train_test(10, 0.25, 4);
        assert_eq!((train.len(), test.len()), (7, 3));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(split_train_test(10, 0.25, 4), (train, test.clone()));
        let others: Vec<Vec<usize>> = (5..10).map(|s| split_train_test(10, 0.25, s).1).collect();
        assert!(others.iter().any(|t| *t != test));
        assert_eq!(split_train_test(5, 2.0, 0).1.len(), 5);
        assert_eq!(split_train_test(5, f64::NAN, 0).0.len(), 5);
    }
}
