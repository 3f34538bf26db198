//! Synthetic datasets, deterministic for a seed whatever the thread count.
//!
//! - `Amount` shards (this file): heavy-tailed, multi-modal values shaped like credit-card
//!   transaction amounts. Each shard depends only on (seed, shard number), so shards are
//!   written in parallel. Memory is one batch per thread, whatever the row count.
//! - The creative-packs dataset ([`creative`]): versioned Parquet and TFRecord files of
//!   labels drawn from known per-(target store, creative pack) probabilities.
//! - The stocks dataset ([`stocks`]): per-symbol daily prices and volumes of ETFs and stocks
//!   in the Kaggle "stock market dataset" schema, with nulls and duplicate rows injected.
#![warn(missing_docs)]

pub mod creative;
pub mod stocks;
pub mod tfrecord;
mod versions;

pub use creative::{CreativeMetadata, CreativeOptions, creative_version, creative_versions, generate_creative_packs};
pub use stocks::{StocksManifest, StocksOptions, generate_stocks};
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
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use shardflow_storage::write_atomically;

use shardflow_storage::shard::AMOUNT;

/// Version of the generator; changes whenever the same seed would give other values.
pub const GENERATOR_VERSION: u32 = 3;
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
///
/// One uniform draw per row picks the mode and, rescaled within the mode's share, the
/// quantile inside it. The first four modes read their value quantile from a table of
/// [`QUANTILE_KNOTS`] points each, interpolated linearly, between the 1/64 and 63/64
/// quantiles (there its relative error is below 1e-5, as small as that of a tabulated
/// normal quantile put through `exp`) and compute it exactly beyond them; the tail uses
/// the Pareto's closed-form quantile. A batch's uniform numbers are drawn first and then
/// turned into values, so that the table reads of neighbouring rows overlap. Generator
/// version 2 tabulated the standard normal quantile and took `exp` per row, row by row
/// (half of a shard's CPU time, twice version 3's); version 1 sampled each mode with
/// `rand_distr`.
struct Amounts {
    cumulative: [f64; 5],
    /// Where each mode's share of the uniform draw starts, and one over its width.
    from: [f64; 5],
    inverse_share: [f64; 5],
    /// Location and scale of the first four modes on the standard normal: the value for
    /// micro payments, its logarithm for the log-normal modes.
    affine: [(f64, f64); 4],
    /// Per mode of the first four, its value quantiles at `k / QUANTILE_KNOTS`, k from 0
    /// to `QUANTILE_KNOTS` (the ends unused: they are infinite), one mode after the other.
    quantiles: Vec<f64>,
}

/// Knots of each mode's quantile table (four tables of 64 KiB).
const QUANTILE_KNOTS: usize = 1 << 13;
/// Below this quantile, and above one minus it, a mode's quantile is computed exactly.
const EXACT_TAIL: f64 = 1.0 / 64.0;

/// The modes' laws as (location, scale) of the standard normal: micro payments are
/// normal(1.0, 0.3); the three purchase modes are log-normal with these medians and sigmas.
const MICRO: (f64, f64) = (1.0, 0.3);
const LOG_NORMAL: [(f64, f64); 3] = [(22.0, 0.55), (95.0, 0.6), (420.0, 0.7)];
const PARETO_SCALE: f64 = 1500.0;
const PARETO_SHAPE: f64 = 1.6;

const MODES: [(&str, f64, &str); 5] = [
    ("micro payments", 0.18, "normal(1.0, 0.3), at least 0.01"),
    ("everyday purchases", 0.40, "lognormal(median 22, sigma 0.55)"),
    ("larger purchases", 0.27, "lognormal(median 95, sigma 0.6)"),
    ("big tickets", 0.12, "lognormal(median 420, sigma 0.7)"),
    ("tail", 0.03, "pareto(scale 1500, shape 1.6), at most 250000"),
];

/// `x` rounded to cents (ties to even), at least 0.01. `k / 100.0` is the double nearest
/// the decimal, as a parser would read it. Adding and subtracting 2^52 rounds a
/// non-negative value below 2^51 to an integer without a call into libm (x86-64 without
/// SSE 4.1 has no rounding instruction); the clamp keeps the value in that range.
fn to_cents(x: f64) -> f64 {
    const ROUND: f64 = 4_503_599_627_370_496.0;
    let cents = ((x * 100.0).clamp(1.0, 1e15) + ROUND) - ROUND;
    cents / 100.0
}

/// The standard normal's quantile function, exactly (to statrs' precision).
fn normal_quantile(p: f64) -> f64 {
    -std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * p)
}

impl Amounts {
    fn new() -> Self {
        let mut cumulative = [0.0; 5];
        let mut acc = 0.0;
        for (c, (_, w, _)) in cumulative.iter_mut().zip(MODES) {
            acc += w;
            *c = acc;
        }
        let inverse_share = MODES.map(|(_, w, _)| 1.0 / w);
        let from = [0.0, cumulative[0], cumulative[1], cumulative[2], cumulative[3]];
        let [everyday, larger, big] = LOG_NORMAL.map(|(median, sigma)| (f64::ln(median), sigma));
        let affine = [MICRO, everyday, larger, big];
        let mut amounts = Self { cumulative, from, inverse_share, affine, quantiles: Vec::new() };
        amounts.quantiles = (0..4)
            .flat_map(|mode| (0..=QUANTILE_KNOTS).map(move |k| (mode, k as f64 / QUANTILE_KNOTS as f64)))
            .map(|(mode, p)| amounts.exact(mode, p))
            .collect();
        amounts
    }

    /// Mode `mode`'s (of the first four) value quantile at `p`, exactly.
    fn exact(&self, mode: usize, p: f64) -> f64 {
        let (location, scale) = self.affine[mode];
        let z = location + scale * normal_quantile(p.max(f64::MIN_POSITIVE));
        if mode == 0 { z } else { z.exp() }
    }

    /// Mode `mode`'s value quantile at `p` in [0, 1): from its table where that is exact
    /// enough, else exactly.
    fn quantile(&self, mode: usize, p: f64) -> f64 {
        if !(EXACT_TAIL..1.0 - EXACT_TAIL).contains(&p) {
            return self.exact(mode, p);
        }
        let at = p * QUANTILE_KNOTS as f64;
        // In range: p is at least 1/64, so `at` is at least 128 and below the last knot.
        let k = at as usize;
        let table = &self.quantiles[mode * (QUANTILE_KNOTS + 1)..][..QUANTILE_KNOTS + 1];
        let (low, high) = (table[k], table[k + 1]);
        low + (at - k as f64) * (high - low)
    }

    /// `n` draws: the uniform numbers first, then each turned into its value, so that the
    /// table reads of neighbouring rows overlap instead of waiting on the generator.
    fn draw(&self, rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f64> {
        let mut values: Vec<f64> = (0..n).map(|_| rng.random()).collect();
        for v in &mut values {
            *v = self.value(*v);
        }
        values
    }

    /// The value of uniform draw `u`.
    #[inline]
    fn value(&self, u: f64) -> f64 {
        let c = &self.cumulative;
        // Counted, not branched on: the mode is a fresh random pick on every row.
        let mode = usize::from(u >= c[0]) + usize::from(u >= c[1]) + usize::from(u >= c[2]) + usize::from(u >= c[3]);
        // Where u falls inside the mode's share, as a uniform draw of its own.
        let within = ((u - self.from[mode]) * self.inverse_share[mode]).clamp(0.0, 1.0 - f64::EPSILON);
        let x = if mode < 4 {
            self.quantile(mode, within)
        } else {
            (PARETO_SCALE * (1.0 - within).powf(-1.0 / PARETO_SHAPE)).min(250_000.0)
        };
        to_cents(x)
    }
}

/// `n` `Amount` values as shard stream `stream` of seed `seed` draws them (what
/// `bench/`-style commands measure the writer with; shards are written from the same draws).
pub fn amounts(seed: u64, stream: u64, n: usize) -> Vec<f64> {
    let amounts = Amounts::new();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(shard_seed(seed, stream));
    amounts.draw(&mut rng, n)
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
            let values: Float64Array = amounts.draw(&mut rng, n as usize).into();
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

    /// Each mode's tabulated quantile agrees with the exact one everywhere it is used.
    #[test]
    fn the_quantile_tables_are_within_1e_5_of_the_exact_quantiles() {
        let amounts = Amounts::new();
        for mode in 0..4 {
            let mut worst = 0.0f64;
            for i in 0..200_000 {
                let p = (i as f64 + 0.5) / 200_000.0;
                let exact = amounts.exact(mode, p);
                worst = worst.max(((amounts.quantile(mode, p) - exact) / exact.abs().max(1.0)).abs());
            }
            assert!(worst < 1e-5, "mode {mode}: worst relative error {worst}");
        }
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    }

    #[test]
    fn cents_are_the_doubles_a_parser_reads() {
        for (x, cents) in [(22.374, "22.37"), (22.376, "22.38"), (0.004, "0.01"), (-3.0, "0.01"), (1e6, "1000000")] {
            assert_eq!(to_cents(x), cents.parse::<f64>().expect("number"), "{x}");
        }
    }

    /// Each mode follows its law: the quantiles of 2,000,000 draws match those of the
    /// same mixture sampled mode by mode with rand_distr (generator version 1). Not at
    /// 0.18, the micro payments' share: there the sorted values cross the empty gap
    /// between two modes, and the quantile is wherever the share's sampling noise puts it.
    #[test]
    fn amounts_follow_the_mixture_the_manifest_names() {
        use rand_distr::{Distribution, LogNormal, Normal, Pareto};
        const N: usize = 2_000_000;
        let mut ours = amounts(7, 0, N);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(99);
        let micro = Normal::new(MICRO.0, MICRO.1).expect("valid");
        let logs = LOG_NORMAL.map(|(m, s)| LogNormal::new(f64::ln(m), s).expect("valid"));
        let tail = Pareto::new(PARETO_SCALE, PARETO_SHAPE).expect("valid");
        let c = Amounts::new().cumulative;
        let mut reference: Vec<f64> = (0..N)
            .map(|_| {
                let u: f64 = rng.random();
                let x = if u < c[0] {
                    micro.sample(&mut rng)
                } else if u < c[3] {
                    logs[usize::from(u >= c[1]) + usize::from(u >= c[2])].sample(&mut rng)
                } else {
                    tail.sample(&mut rng).min(250_000.0)
                };
                to_cents(x)
            })
            .collect();
        ours.sort_by(f64::total_cmp);
        reference.sort_by(f64::total_cmp);
        for q in [0.001, 0.01, 0.1, 0.17, 0.19, 0.3, 0.5, 0.7, 0.85, 0.9, 0.97, 0.99, 0.999] {
            let (a, b) = (ours[(q * N as f64) as usize], reference[(q * N as f64) as usize]);
            assert!((a - b).abs() <= 0.02 * b + 0.02, "quantile {q}: {a} against {b}");
        }
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
