//! The creative-packs dataset: binary labels drawn from known probabilities, for checking
//! that a model learns per-(target store, creative pack) rates.
//!
//! `n_t` target stores get the probabilities `linspace(0, 1, n_t + 2)[1:-1]`; each of
//! `n_c` creative packs belongs to one target store drawn at random and gets an offset
//! `c` uniform in [-0.01, 0.01], so its probability is `t + c`, or `t - c` where `t + c`
//! leaves [0, 1]. Every row picks one (store, pack) pair uniformly and draws
//! `label ~ Bernoulli(p)`. A version is written as Parquet (`target_store_id` Utf8,
//! `creative_pack_id` Utf8, `label` Int64, no nulls), as TFRecord (one `tf.train.Example`
//! per row, the same three features) and as `metadata_v{V}.json` (see [`CreativeMetadata`]).
//!
//! Rows are made in blocks of [`BLOCK_ROWS`] in parallel on the current rayon pool; block
//! `b` draws from its own generator seeded by (seed, b), so the bytes are the same whatever
//! the thread count. Blocks are written in order by one Parquet and one TFRecord writer
//! thread, which hash what they write; memory is a few blocks whatever the row count.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use indicatif::ProgressBar;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::distr::Bernoulli;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tfrecord::{Example, Feature, example_record};
use crate::versions::{self, Staging, VersionFiles};
use crate::{GenerateError, ROW_GROUP_ROWS, shard_seed};

/// The dataset's name in its metadata and on the command line.
pub const DATASET: &str = "creative-packs";
/// Version of this generator; changes whenever the same seed would give other bytes.
pub const CREATIVE_GENERATOR_VERSION: u32 = 1;
/// Rows in all when not given.
pub const DEFAULT_ROWS: u64 = 10_000_000;
/// Target stores when not given.
pub const DEFAULT_TARGET_STORES: usize = 10;
/// Creative packs when not given.
pub const DEFAULT_CREATIVE_PACKS: usize = 100;
/// Rows made at once by one thread (and sent to the writers as one batch).
pub const BLOCK_ROWS: usize = 65_536;
const MAX_ROWS: u64 = 1_000_000_000_000;
const MAX_IDS: usize = 1_000_000;
const ID_LETTERS: usize = 10;
const OFFSET: f64 = 0.01;

/// The column and feature names.
pub const TARGET_STORE_ID: &str = "target_store_id";
/// See [`TARGET_STORE_ID`].
pub const CREATIVE_PACK_ID: &str = "creative_pack_id";
/// See [`TARGET_STORE_ID`].
pub const LABEL: &str = "label";

/// What to generate.
#[derive(Clone, Debug)]
pub struct CreativeOptions {
    /// Rows in all.
    pub rows: u64,
    /// Target stores (`n_t`).
    pub target_stores: usize,
    /// Creative packs (`n_c`), each in one target store.
    pub creative_packs: usize,
    /// The version to write; the next free one when `None`.
    pub version: Option<u32>,
    /// Seed: the same seed gives the same data files.
    pub seed: u64,
    /// The versions directory.
    pub out: PathBuf,
}

impl CreativeOptions {
    /// The defaults (10M rows, 10 stores, 100 packs, seed 0, next free version) into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            rows: DEFAULT_ROWS,
            target_stores: DEFAULT_TARGET_STORES,
            creative_packs: DEFAULT_CREATIVE_PACKS,
            version: None,
            seed: 0,
            out: out.into(),
        }
    }

    fn check(&self) -> Result<(), GenerateError> {
        let bad = |m: &str| Err(GenerateError::Invalid(m.into()));
        if self.rows == 0 || self.rows > MAX_ROWS {
            return bad("--rows must be between 1 and 10^12");
        }
        if self.target_stores == 0 || self.target_stores > MAX_IDS {
            return bad("--target-stores must be between 1 and 1000000");
        }
        if self.creative_packs == 0 || self.creative_packs > MAX_IDS {
            return bad("--creative-packs must be between 1 and 1000000");
        }
        Ok(())
    }
}

/// `metadata_v{V}.json`: how a version was made and the probabilities its labels follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreativeMetadata {
    /// [`DATASET`].
    pub dataset: String,
    /// The version.
    pub version: u32,
    /// [`CREATIVE_GENERATOR_VERSION`] of the generator that wrote it.
    pub generator_version: u32,
    /// When it was written (RFC 3339, UTC).
    pub created: String,
    /// Seed.
    pub seed: u64,
    /// Rows in each data file.
    pub rows: u64,
    /// The columns of the Parquet file (the features of the TFRecord file) and their types.
    pub columns: Vec<Column>,
    /// The target stores, with their probability `t`.
    pub target_stores: Vec<TargetStore>,
    /// The (store, pack) pairs rows pick from, one per creative pack, with `p`.
    pub pairs: Vec<Pair>,
    /// The data files, with their size and SHA-256.
    pub files: Vec<FileDigest>,
}

/// A column of the data files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Arrow type in the Parquet file / feature list in the TFRecord file.
    pub parquet: String,
    /// Feature kind in the TFRecord file.
    pub tfrecord: String,
}

/// A target store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetStore {
    /// `target_` and 10 lowercase letters.
    pub id: String,
    /// `t`, from `linspace(0, 1, n_t + 2)[1:-1]`.
    pub probability: f64,
    /// Its creative packs.
    pub creative_packs: usize,
    /// The label rate its rows are drawn with: the mean `p` of its packs (none without packs).
    pub label_rate: Option<f64>,
}

/// A creative pack in its target store: one of the pairs rows pick from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// The store.
    pub target_store_id: String,
    /// `creative_` and 10 lowercase letters.
    pub creative_pack_id: String,
    /// `c`, uniform in [-0.01, 0.01].
    pub offset: f64,
    /// `p = t + c`, or `t - c` where `t + c` leaves [0, 1]: the probability of label 1.
    pub probability: f64,
}

/// A data file of a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileDigest {
    /// File name in the versions directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

impl CreativeMetadata {
    /// One line: version, rows, created, files.
    pub fn summary(&self) -> String {
        let files = VersionFiles::of(self.version);
        format!(
            "v{}  {} rows  {}  {} {} {}",
            self.version, self.rows, self.created, files.parquet, files.tfrecord, files.metadata
        )
    }
}

/// The stores and pairs of a seed, and every row's TFRecord record made once per
/// (pair, label): rows only pick among them.
struct Design {
    stores: Vec<TargetStore>,
    pairs: Vec<Pair>,
    labels: Vec<Bernoulli>,
    /// `records[2 * pair + label]`.
    records: Vec<Vec<u8>>,
}

fn ids(rng: &mut Xoshiro256PlusPlus, prefix: &str, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let mut id = String::with_capacity(prefix.len() + ID_LETTERS);
        id.push_str(prefix);
        id.extend((0..ID_LETTERS).map(|_| char::from(rng.random_range(b'a'..=b'z'))));
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    ids
}

impl Design {
    fn new(seed: u64, target_stores: usize, creative_packs: usize) -> Result<Self, GenerateError> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let store_ids = ids(&mut rng, "target_", target_stores);
        let pack_ids = ids(&mut rng, "creative_", creative_packs);
        // numpy's linspace: k * step, step = (stop - start) / (num - 1).
        let step = 1.0 / (target_stores + 1) as f64;
        let base: Vec<f64> = (1..=target_stores).map(|k| k as f64 * step).collect();
        let mut pairs = Vec::with_capacity(creative_packs);
        // Per store: its packs and the sum of their p.
        let mut packs_of = vec![(0usize, 0.0f64); target_stores];
        for pack in pack_ids {
            let store = rng.random_range(0..target_stores);
            let offset = rng.random_range(-OFFSET..=OFFSET);
            let t = base[store];
            let probability = if (0.0..=1.0).contains(&(t + offset)) { t + offset } else { t - offset };
            packs_of[store].0 += 1;
            packs_of[store].1 += probability;
            pairs.push(Pair { target_store_id: store_ids[store].clone(), creative_pack_id: pack, offset, probability });
        }
        let stores = store_ids
            .into_iter()
            .zip(base)
            .zip(packs_of)
            .map(|((id, probability), (n, sum))| TargetStore {
                id,
                probability,
                creative_packs: n,
                label_rate: (n > 0).then(|| sum / n as f64),
            })
            .collect();
        let labels = pairs
            .iter()
            .map(|p| Bernoulli::new(p.probability))
            .collect::<Result<_, _>>()
            .map_err(|e| GenerateError::Invalid(format!("a pair's probability is out of [0, 1]: {e}")))?;
        let records = pairs
            .iter()
            .flat_map(|p| {
                [0, 1].map(|label| {
                    example_record(&Example::new([
                        (TARGET_STORE_ID, Feature::bytes(p.target_store_id.as_bytes())),
                        (CREATIVE_PACK_ID, Feature::bytes(p.creative_pack_id.as_bytes())),
                        (LABEL, Feature::int64(label)),
                    ]))
                })
            })
            .collect();
        Ok(Self { stores, pairs, labels, records })
    }
}

/// One block of rows, as the Parquet writer and the TFRecord writer take them.
struct Block {
    batch: RecordBatch,
    records: Vec<u8>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(TARGET_STORE_ID, DataType::Utf8, false),
        Field::new(CREATIVE_PACK_ID, DataType::Utf8, false),
        Field::new(LABEL, DataType::Int64, false),
    ]))
}

fn make_block(design: &Design, schema: &SchemaRef, seed: u64, index: usize, rows: usize) -> io::Result<Block> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(shard_seed(seed, index as u64));
    let mut stores = StringBuilder::with_capacity(rows, rows * 17);
    let mut packs = StringBuilder::with_capacity(rows, rows * 19);
    let mut labels = Vec::with_capacity(rows);
    let record_len = design.records.iter().map(Vec::len).max().unwrap_or(0);
    let mut records = Vec::with_capacity(rows * record_len);
    for _ in 0..rows {
        let i = rng.random_range(0..design.pairs.len());
        let label = rng.sample(design.labels[i]);
        let pair = &design.pairs[i];
        stores.append_value(&pair.target_store_id);
        packs.append_value(&pair.creative_pack_id);
        labels.push(i64::from(label));
        records.extend_from_slice(&design.records[2 * i + usize::from(label)]);
    }
    let columns: Vec<ArrayRef> =
        vec![Arc::new(stores.finish()), Arc::new(packs.finish()), Arc::new(Int64Array::from(labels))];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(io::Error::other)?;
    Ok(Block { batch, records })
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Hashing<BufWriter<File>> {
    fn create(path: &Path) -> io::Result<Self> {
        Ok(Self { inner: BufWriter::with_capacity(1 << 20, File::create(path)?), hasher: Sha256::new(), bytes: 0 })
    }

    /// Flush and sync the file; its size and SHA-256.
    fn finish(self) -> io::Result<(u64, String)> {
        let file = self.inner.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let sha256 = self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.bytes, sha256))
    }
}

fn write_parquet(path: &Path, schema: SchemaRef, batches: Receiver<RecordBatch>) -> io::Result<(u64, String)> {
    let props =
        WriterProperties::builder().set_compression(Compression::SNAPPY).set_max_row_group_size(ROW_GROUP_ROWS).build();
    let mut writer = ArrowWriter::try_new(Hashing::create(path)?, schema, Some(props)).map_err(io::Error::other)?;
    for batch in batches {
        writer.write(&batch).map_err(io::Error::other)?;
    }
    writer.into_inner().map_err(io::Error::other)?.finish()
}

fn write_tfrecord(path: &Path, blocks: Receiver<Vec<u8>>) -> io::Result<(u64, String)> {
    let mut out = Hashing::create(path)?;
    for records in blocks {
        out.write_all(&records)?;
    }
    out.finish()
}

/// Write the Parquet and TFRecord files at `paths`, `rows` rows in blocks made on the
/// current rayon pool; their sizes and SHA-256.
fn write_data(
    design: &Design,
    seed: u64,
    rows: u64,
    paths: [&Path; 2],
    progress: &ProgressBar,
) -> Result<[(u64, String); 2], GenerateError> {
    fn write_err(path: &Path) -> impl Fn(io::Error) -> GenerateError + '_ {
        move |source| GenerateError::Write { path: path.display().to_string(), source }
    }
    let too_many = || GenerateError::Invalid("--rows is too large for this machine".into());
    let blocks = usize::try_from(rows.div_ceil(BLOCK_ROWS as u64)).map_err(|_| too_many())?;
    let window = rayon::current_num_threads().max(1) * 2;
    let schema = schema();
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = sync_channel(window);
        let (record_tx, record_rx) = sync_channel(window);
        let parquet = scope.spawn(|| write_parquet(paths[0], schema.clone(), batch_rx));
        let tfrecord = scope.spawn(|| write_tfrecord(paths[1], record_rx));
        let mut made = Ok(());
        'blocks: for start in (0..blocks).step_by(window) {
            let end = (start + window).min(blocks);
            let window: io::Result<Vec<Block>> = (start..end)
                .into_par_iter()
                .map(|b| {
                    let n = (rows - b as u64 * BLOCK_ROWS as u64).min(BLOCK_ROWS as u64) as usize;
                    make_block(design, &schema, seed, b, n)
                })
                .collect();
            let window = match window {
                Ok(w) => w,
                Err(e) => {
                    made = Err(write_err(paths[0])(e));
                    break;
                }
            };
            for block in window {
                let n = block.batch.num_rows() as u64;
                // A writer that failed has hung up: stop, and report its error below.
                if batch_tx.send(block.batch).is_err() || record_tx.send(block.records).is_err() {
                    break 'blocks;
                }
                progress.inc(n);
            }
        }
        drop((batch_tx, record_tx));
        let join = |writer: std::thread::ScopedJoinHandle<'_, io::Result<(u64, String)>>, path: &Path| {
            writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")))
                .map_err(write_err(path))
        };
        let parquet = join(parquet, paths[0]);
        let tfrecord = join(tfrecord, paths[1]);
        made?;
        Ok([parquet?, tfrecord?])
    })
}

/// Write a new version of the creative-packs dataset into `opts.out` (created if missing)
/// and return its metadata, advancing `progress` by rows written. Runs on the current
/// rayon pool.
///
/// # Errors
/// [`GenerateError::Invalid`] for options out of range, [`GenerateError::VersionExists`]
/// when the requested version is there (nothing is written), or a failed write (nothing
/// of the version is left).
pub fn generate_creative_packs(
    opts: &CreativeOptions,
    progress: &ProgressBar,
) -> Result<CreativeMetadata, GenerateError> {
    opts.check()?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|source| GenerateError::Write { path: opts.out.display().to_string(), source })?;
    let version = versions::choose(&opts.out, opts.version)?;
    let design = Design::new(opts.seed, opts.target_stores, opts.creative_packs)?;
    let staging = Staging::new(&opts.out, version);
    let [parquet, tfrecord, metadata_tmp] = staging.temporary();
    let [(parquet_bytes, parquet_sha), (tfrecord_bytes, tfrecord_sha)] =
        write_data(&design, opts.seed, opts.rows, [parquet, tfrecord], progress)?;
    let files = staging.files();
    let column = |name: &str, parquet: &str, tfrecord: &str| Column {
        name: name.into(),
        parquet: parquet.into(),
        tfrecord: tfrecord.into(),
    };
    let metadata = CreativeMetadata {
        dataset: DATASET.into(),
        version,
        generator_version: CREATIVE_GENERATOR_VERSION,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        seed: opts.seed,
        rows: opts.rows,
        columns: vec![
            column(TARGET_STORE_ID, "Utf8", "bytes_list"),
            column(CREATIVE_PACK_ID, "Utf8", "bytes_list"),
            column(LABEL, "Int64", "int64_list"),
        ],
        target_stores: design.stores,
        pairs: design.pairs,
        files: vec![
            FileDigest { name: files.parquet.clone(), bytes: parquet_bytes, sha256: parquet_sha },
            FileDigest { name: files.tfrecord.clone(), bytes: tfrecord_bytes, sha256: tfrecord_sha },
        ],
    };
    let write_err = |source| GenerateError::Write { path: metadata_tmp.display().to_string(), source };
    let mut json = serde_json::to_vec_pretty(&metadata).map_err(|e| write_err(e.into()))?;
    json.push(b'\n');
    let mut file = File::create(metadata_tmp).map_err(write_err)?;
    file.write_all(&json).and_then(|()| file.sync_all()).map_err(write_err)?;
    staging.publish()?;
    Ok(metadata)
}

/// The metadata of every version in `dir`, oldest first.
///
/// # Errors
/// [`GenerateError::NoDirectory`], or a metadata file that cannot be read or parsed.
pub fn creative_versions(dir: &Path) -> Result<Vec<CreativeMetadata>, GenerateError> {
    versions::list(dir)
}

/// The metadata of version `version` in `dir`.
///
/// # Errors
/// [`GenerateError::NoDirectory`], [`GenerateError::UnknownVersion`], or a metadata file
/// that cannot be read or parsed.
pub fn creative_version(dir: &Path, version: u32) -> Result<CreativeMetadata, GenerateError> {
    versions::read(dir, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_follow_linspace_and_packs_stay_in_bounds() {
        let design = Design::new(3, 4, 50).expect("design");
        let t: Vec<f64> = design.stores.iter().map(|s| s.probability).collect();
        assert_eq!(t, [0.2, 0.4, 0.6000000000000001, 0.8]);
        assert_eq!(design.stores.iter().map(|s| s.creative_packs).sum::<usize>(), 50);
        for store in &design.stores {
            let own: Vec<f64> =
                design.pairs.iter().filter(|p| p.target_store_id == store.id).map(|p| p.probability).collect();
            assert_eq!(store.creative_packs, own.len());
            let mean = own.iter().sum::<f64>() / own.len() as f64;
            assert!(store.label_rate.is_some_and(|r| (r - mean).abs() < 1e-15), "{store:?}");
        }
        for pair in &design.pairs {
            let store = design.stores.iter().find(|s| s.id == pair.target_store_id).expect("its store");
            assert!(pair.offset.abs() <= OFFSET);
            assert_eq!(pair.probability, store.probability + pair.offset);
        }
        // The lowest store's t is 1/(n_t + 1): with many stores t + c can fall below 0.
        let crowded = Design::new(1, 1_000, 2_000).expect("design");
        assert!(crowded.pairs.iter().all(|p| (0.0..=1.0).contains(&p.probability)));
        assert!(crowded.pairs.iter().any(|p| {
            let t = crowded.stores.iter().find(|s| s.id == p.target_store_id).map_or(0.0, |s| s.probability);
            t + p.offset < 0.0 && p.probability == t - p.offset
        }));
    }

    #[test]
    fn ids_are_prefixed_lowercase_and_unique() {
        let design = Design::new(9, 30, 300).expect("design");
        let check = |id: &str, prefix: &str| {
            let letters = id.strip_prefix(prefix).expect(prefix);
            assert!(letters.len() == ID_LETTERS && letters.bytes().all(|b| b.is_ascii_lowercase()), "{id}");
        };
        let mut seen = std::collections::HashSet::new();
        for s in &design.stores {
            check(&s.id, "target_");
            assert!(seen.insert(s.id.clone()));
        }
        for p in &design.pairs {
            check(&p.creative_pack_id, "creative_");
            assert!(seen.insert(p.creative_pack_id.clone()));
        }
        assert_eq!(Design::new(9, 30, 300).expect("again").pairs, design.pairs);
        assert_ne!(Design::new(10, 30, 300).expect("other seed").pairs, design.pairs);
    }

    #[test]
    fn out_of_range_options_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (field, adjust) in [
            ("--rows", (|o: &mut CreativeOptions| o.rows = 0) as fn(&mut CreativeOptions)),
            ("--target-stores", |o| o.target_stores = 0),
            ("--creative-packs", |o| o.creative_packs = 0),
            ("--version", |o| o.version = Some(0)),
        ] {
            let mut opts = CreativeOptions::new(dir.path());
            adjust(&mut opts);
            let e = generate_creative_packs(&opts, &ProgressBar::hidden()).expect_err(field);
            assert!(matches!(&e, GenerateError::Invalid(m) if m.starts_with(field)), "{e}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }
}
