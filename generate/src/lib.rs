//! Synthetic datasets, deterministic for a seed whatever the thread count.
//!
//! - `Amount` shards (this file): heavy-tailed, multi-modal values shaped like credit-card
//!   transaction amounts. Each shard depends only on (seed, shard number), so shards are
//!   written in parallel. Memory is one batch per thread, whatever the row count.
//! - The creative-packs dataset ([`creative`]): versioned Parquet and TFRecord files of
//!   labels drawn from known per-(target store, creative pack) probabilities.
#![warn(missing_docs)]

pub mod creative;
pub mod tfrecord;
mod versions;

pub use creative::{CreativeMetadata, CreativeOptions, creative_version, creative_versions, generate_creative_packs};
pub use versions::VersionFiles;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use indicatif::ProgressBar;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Pareto};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use shardflow_storage::write_atomically;

use shardflow_storage::shard::AMOUNT;

/// Version of the generator; changes whenever the same seed would give other values.
pub const GENERATOR_VERSION: u32 = 1;
const BATCH_ROWS: usize = 65_536;
pub(crate) const ROW_GROUP_ROWS: usize = 1_048_576;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Rows in all.
    pub rows: u64,
    /// Rows per shard (the last shard may hold fewer).
    pub shard_rows: u64,
    /// Output directory.
    pub out: PathBuf,
    /// Seed.
    pub seed: u64,
    /// Shards written at once.
    pub threads: usize,
}

/// `manifest.json`: how a directory of shards was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset name.
    pub dataset: String,
    /// Generator version.
    pub generator_version: u32,
    /// Seed.
    pub seed: u64,
    /// Rows in all.
    pub rows: u64,
    /// Rows per shard.
    pub shard_rows: u64,
    /// The distribution, in words and parameters.
    pub distribution: Vec<Mode>,
    /// The shards in order.
    pub shards: Vec<ManifestShard>,
}

/// One mode of the amount distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mode {
    /// What kind of purchase it imitates.
    pub name: String,
    /// Share of rows.
    pub weight: f64,
    /// `normal(mean, sd)`, `lognormal(median, sigma)` or `pareto(scale, shape)`.
    pub law: String,
}

/// One shard in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestShard {
    /// File name.
    pub file: String,
    /// Rows.
    pub rows: u64,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Options out of range.
    #[error("{0}")]
    Invalid(String),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// File being written.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The requested version of a versioned dataset is there already.
    #[error(
        "version {version} already exists in {dir} and is never overwritten (leave out --version to write the next free one, {next})"
    )]
    VersionExists {
        /// The versions directory.
        dir: String,
        /// The version asked for.
        version: u32,
        /// The next free version.
        next: String,
    },
    /// No such version.
    #[error("{dir} has no version {version} (versions: {known})")]
    UnknownVersion {
        /// The versions directory.
        dir: String,
        /// The version asked for.
        version: u32,
        /// The versions there.
        known: String,
    },
    /// The versions directory is missing.
    #[error("{0} is not a directory")]
    NoDirectory(String),
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Read {
        /// File being read.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A metadata file does not parse.
    #[error("{path} is not dataset metadata: {source}")]
    Metadata {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The amount distribution: micro payments, everyday purchases, larger purchases,
/// big tickets and a Pareto tail; rounded to cents.
struct Amounts {
    cumulative: [f64; 5],
    micro: Normal<f64>,
    everyday: LogNormal<f64>,
    larger: LogNormal<f64>,
    big: LogNormal<f64>,
    tail: Pareto<f64>,
}

const MODES: [(&str, f64, &str); 5] = [
    ("micro payments", 0.18, "normal(1.0, 0.3), at least 0.01"),
    ("everyday purchases", 0.40, "lognormal(median 22, sigma 0.55)"),
    ("larger purchases", 0.27, "lognormal(median 95, sigma 0.6)"),
    ("big tickets", 0.12, "lognormal(median 420, sigma 0.7)"),
    ("tail", 0.03, "pareto(scale 1500, shape 1.6), at most 250000"),
];

impl Amounts {
    fn new() -> Self {
        let mut cumulative = [0.0; 5];
        let mut acc = 0.0;
        for (c, (_, w, _)) in cumulative.iter_mut().zip(MODES) {
            acc += w;
            *c = acc;
        }
        Self {
            cumulative,
            micro: Normal::new(1.0, 0.3).expect("constant, valid parameters"),
            everyday: LogNormal::new(22f64.ln(), 0.55).expect("constant, valid parameters"),
            larger: LogNormal::new(95f64.ln(), 0.6).expect("constant, valid parameters"),
            big: LogNormal::new(420f64.ln(), 0.7).expect("constant, valid parameters"),
            tail: Pareto::new(1500.0, 1.6).expect("constant, valid parameters"),
        }
    }

    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> f64 {
        let u: f64 = rng.random();
        let x = if u < self.cumulative[0] {
            self.micro.sample(rng)
        } else if u < self.cumulative[1] {
            self.everyday.sample(rng)
        } else if u < self.cumulative[2] {
            self.larger.sample(rng)
        } else if u < self.cumulative[3] {
            self.big.sample(rng)
        } else {
            self.tail.sample(rng).min(250_000.0)
        };
        ((x * 100.0).round() / 100.0).max(0.01)
    }
}

/// File name of shard `i` (from 1).
pub fn shard_file_name(i: u64) -> String {
    format!("{AMOUNT}_Shard_{i}.parquet")
}

/// The seed of stream `shard` (an Amount shard, a creative-packs block) of a run seeded `seed`.
pub(crate) fn shard_seed(seed: u64, shard: u64) -> u64 {
    seed ^ shard.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Write the shards and `manifest.json` into `opts.out`, advancing `progress` by rows.
///
/// # Errors
/// [`GenerateError`] for options out of range or a failed write.
pub fn generate(opts: &GenerateOptions, progress: &ProgressBar) -> Result<Manifest, GenerateError> {
    if opts.rows == 0 || opts.shard_rows == 0 {
        return Err(GenerateError::Invalid("--rows and --shard-rows must be at least 1".into()));
    }
    if opts.rows > 1_000_000_000_000 {
        return Err(GenerateError::Invalid("--rows must be at most 10^12".into()));
    }
    let write_err = |path: &Path, source| GenerateError::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(&opts.out).map_err(|e| write_err(&opts.out, e))?;
    let count = opts.rows.div_ceil(opts.shard_rows);
    let shards: Vec<ManifestShard> = (1..=count)
        .map(|i| ManifestShard {
            file: shard_file_name(i),
            rows: opts.shard_rows.min(opts.rows - (i - 1) * opts.shard_rows),
        })
        .collect();

    let next = AtomicUsize::new(0);
    let threads = opts.threads.clamp(1, shards.len());
    let results: Vec<Result<(), GenerateError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), GenerateError> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(shard) = shards.get(i) else { return Ok(()) };
                        let path = opts.out.join(&shard.file);
                        write_shard(&path, shard.rows, shard_seed(opts.seed, i as u64), progress)
                            .map_err(|e| write_err(&path, e))?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(GenerateError::Invalid("a writer thread panicked".into()))))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    let manifest = Manifest {
        dataset: AMOUNT.to_string(),
        generator_version: GENERATOR_VERSION,
        seed: opts.seed,
        rows: opts.rows,
        shard_rows: opts.shard_rows,
        distribution: MODES
            .iter()
            .map(|(name, weight, law)| Mode { name: (*name).into(), weight: *weight, law: (*law).into() })
            .collect(),
        shards,
    };
    let path = opts.out.join("manifest.json");
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| write_err(&path, e.into()))?;
    write_atomically(&path, |f| std::io::Write::write_all(f, &json)).map_err(|e| write_err(&path, e))?;
    Ok(manifest)
}

fn write_shard(path: &Path, rows: u64, seed: u64, progress: &ProgressBar) -> std::io::Result<()> {
    let schema = Arc::new(Schema::new(vec![Field::new(AMOUNT, DataType::Float64, false)]));
    let props =
        WriterProperties::builder().set_compression(Compression::SNAPPY).set_max_row_group_size(ROW_GROUP_ROWS).build();
    let amounts = Amounts::new();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    write_atomically(path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(std::io::Error::other)?;
        let mut left = rows;
        while left > 0 {
            let n = left.min(BATCH_ROWS as u64);
            let values: Float64Array = (0..n).map(|_| amounts.sample(&mut rng)).collect::<Vec<_>>().into();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).map_err(std::io::Error::other)?;
            writer.write(&batch).map_err(std::io::Error::other)?;
            left -= n;
            progress.inc(n);
        }
        writer.close().map(|_| ()).map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use shardflow_storage::shard::Shard;

    fn run(dir: &Path, threads: usize) -> Manifest {
        let opts = GenerateOptions { rows: 25_000, shard_rows: 10_000, out: dir.to_path_buf(), seed: 7, threads };
        generate(&opts, &ProgressBar::hidden()).expect("generate")
    }

    #[test]
    fn writes_shards_and_manifest_deterministically() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let manifest = run(a.path(), 1);
        assert_eq!(run(b.path(), 3), manifest);
        assert_eq!(manifest.shards.iter().map(|s| s.rows).collect::<Vec<_>>(), vec![10_000, 10_000, 5_000]);
        for shard in &manifest.shards {
            let bytes_a = std::fs::read(a.path().join(&shard.file)).expect("read");
            let bytes_b = std::fs::read(b.path().join(&shard.file)).expect("read");
            assert_eq!(bytes_a, bytes_b, "{} differs between thread counts", shard.file);
            assert_eq!(Shard::open(&a.path().join(&shard.file), AMOUNT).expect("open").rows(), shard.rows);
        }
        let on_disk: Manifest =
            serde_json::from_slice(&std::fs::read(a.path().join("manifest.json")).expect("manifest")).expect("json");
        assert_eq!(on_disk, manifest);
    }

    #[test]
    fn amounts_are_positive_cents_with_a_heavy_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(dir.path(), 2);
        let shard = Shard::open(&dir.path().join(shard_file_name(1)), AMOUNT).expect("open");
        let (mut values, mut nulls) = (Vec::new(), 0);
        for batch in shard.batches(4_096).expect("batches") {
            let batch = batch.expect("batch");
            let column = batch.column(0).as_any().downcast_ref::<Float64Array>().expect("Float64");
            nulls += column.null_count();
            values.extend(column.iter().flatten());
        }
        assert_eq!(values.len(), 10_000);
        assert_eq!(nulls, 0);
        assert!(values.iter().all(|v| *v >= 0.01 && ((v * 100.0).round() - v * 100.0).abs() < 1e-6));
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[5_000];
        let p999 = sorted[9_990];
        assert!(median > 10.0 && median < 60.0, "median {median}");
        assert!(p999 > 20.0 * median, "tail too light: p99.9 {p999}, median {median}");
    }
}
