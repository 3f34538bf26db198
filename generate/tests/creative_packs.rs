//! The creative-packs dataset end to end, without a broker: label rates against the
//! metadata's probabilities, the TFRecord file read by a reader that is not ours (Python's
//! `tfrecords` and `protobuf`, installed into .services/venv by scripts/pytools.sh) against
//! the Parquet rows, the same bytes on 1 and 2 threads, and versions never overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::{Array, Int64Array, StringArray};
use indicatif::ProgressBar;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};
use shardflow_generate::tfrecord::records;
use shardflow_generate::{
    CreativeMetadata, CreativeOptions, GenerateError, VersionFiles, creative_version, creative_versions,
    generate_creative_packs,
};

fn options(dir: &Path, rows: u64, stores: usize, packs: usize, seed: u64) -> CreativeOptions {
    CreativeOptions { rows, target_stores: stores, creative_packs: packs, seed, ..CreativeOptions::new(dir) }
}

fn on_threads(threads: usize, opts: &CreativeOptions) -> Result<CreativeMetadata, GenerateError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    pool.install(|| generate_creative_packs(opts, &ProgressBar::hidden()))
}

/// The Parquet file's rows: (store, pack, label).
fn parquet_rows(path: &Path) -> Vec<(String, String, i64)> {
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let text = |i: usize| batch.column(i).as_any().downcast_ref::<StringArray>().expect("Utf8").clone();
        let (stores, packs) = (text(0), text(1));
        let labels = batch.column(2).as_any().downcast_ref::<Int64Array>().expect("Int64").clone();
        assert_eq!(stores.null_count() + packs.null_count() + labels.null_count(), 0);
        for i in 0..batch.num_rows() {
            rows.push((stores.value(i).to_string(), packs.value(i).to_string(), labels.value(i)));
        }
    }
    rows
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).expect("read")).iter().map(|b| format!("{b:02x}")).collect()
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    names
}

#[test]
fn label_rates_lie_in_their_binomial_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = on_threads(2, &options(dir.path(), 200_000, 10, 20, 11)).expect("generate");
    assert_eq!(metadata.pairs.len(), 20);
    let rows = parquet_rows(&dir.path().join(VersionFiles::of(1).parquet));
    assert_eq!(rows.len(), 200_000);
    let mut counts: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for (store, pack, label) in &rows {
        let c = counts.entry((store, pack)).or_default();
        c.0 += 1;
        c.1 += u64::try_from(*label).expect("0 or 1");
    }
    assert_eq!(counts.len(), metadata.pairs.len(), "every row is one of the pairs, and every pair has rows");
    // 99.9% two-sided normal-approximation intervals (z = 3.29), for the pair's rows
    // around n * p, and for its share of the rows around 1 / pairs.
    const Z: f64 = 3.29;
    let share = 1.0 / metadata.pairs.len() as f64;
    let total = rows.len() as f64;
    for pair in &metadata.pairs {
        let (n, ones) = counts[&(pair.target_store_id.as_str(), pair.creative_pack_id.as_str())];
        let (n, ones, p) = (n as f64, ones as f64, pair.probability);
        let rate_half_width = Z * (p * (1.0 - p) / n).sqrt();
        assert!(
            (ones / n - p).abs() <= rate_half_width,
            "{}: rate {} over {n} rows, p {p} ± {rate_half_width}",
            pair.creative_pack_id,
            ones / n
        );
        let share_half_width = Z * (share * (1.0 - share) / total).sqrt();
        assert!((n / total - share).abs() <= share_half_width, "{}: {n} rows", pair.creative_pack_id);
    }
}

fn python() -> PathBuf {
    std::env::var_os("SHARDFLOW_PYTHON")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.services/venv/bin/python"), PathBuf::from)
}

#[test]
fn tensorflow_s_record_reader_reads_the_parquet_rows() {
    let python = python();
    assert!(python.is_file(), "{} is missing: run scripts/pytools.sh (make test does)", python.display());
    let dir = tempfile::tempdir().expect("tempdir");
    // Two blocks, the second partial.
    let metadata = on_threads(2, &options(dir.path(), 100_000, 3, 7, 5)).expect("generate");
    let files = VersionFiles::of(metadata.version);
    let (parquet, tfrecord) = (dir.path().join(&files.parquet), dir.path().join(&files.tfrecord));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/read_creative_packs.py");
    let out = Command::new(&python).arg(&script).arg(&tfrecord).arg(&parquet).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "100000 records match the parquet rows");

    // The reader would have refused a bad CRC: flip one bit of the last record's data.
    let mut bytes = std::fs::read(&tfrecord).expect("read");
    assert_eq!(records(&bytes).count(), 100_000);
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    let bad = dir.path().join("bad.tfrecord");
    std::fs::write(&bad, &bytes).expect("write");
    let out = Command::new(&python).arg(&script).arg(&bad).arg(&parquet).output().expect("run python");
    assert!(!out.status.success(), "a flipped bit went unnoticed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DataLossError"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn one_and_two_threads_write_the_same_bytes() {
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    // Five blocks: the windows of 1 and 2 threads cut them differently.
    let one = on_threads(1, &options(a.path(), 300_000, 10, 100, 42)).expect("1 thread");
    let two = on_threads(2, &options(b.path(), 300_000, 10, 100, 42)).expect("2 threads");
    assert_eq!(
        CreativeMetadata { created: String::new(), ..one.clone() },
        CreativeMetadata { created: String::new(), ..two }
    );
    for file in &one.files {
        let (x, y) = (a.path().join(&file.name), b.path().join(&file.name));
        assert!(std::fs::read(&x).expect("read") == std::fs::read(&y).expect("read"), "{} differs", file.name);
        assert_eq!(sha256(&x), file.sha256, "{}", file.name);
        assert_eq!(std::fs::metadata(&x).expect("stat").len(), file.bytes);
    }
    let on_disk = creative_version(a.path(), 1).expect("read metadata");
    assert_eq!(on_disk, one);
    let other = tempfile::tempdir().expect("tempdir");
    let reseeded = on_threads(2, &options(other.path(), 300_000, 10, 100, 43)).expect("other seed");
    assert_ne!(reseeded.files[1].sha256, one.files[1].sha256);
}

#[test]
fn a_version_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = on_threads(2, &options(dir.path(), 1_000, 2, 3, 1)).expect("v1");
    assert_eq!(first.version, 1);
    let before: Vec<(String, Vec<u8>)> = listing(dir.path())
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.path().join(n)).expect("read")))
        .collect();
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["dataset_v1.parquet", "dataset_v1.tfrecord", "metadata_v1.json"]
    );

    let again = CreativeOptions { version: Some(1), ..options(dir.path(), 5_000, 4, 4, 2) };
    let e = on_threads(2, &again).expect_err("version 1 exists");
    assert!(matches!(e, GenerateError::VersionExists { version: 1, .. }), "{e}");
    let message = e.to_string();
    assert!(!message.contains('\n') && message.contains("version 1 already exists"), "{message}");
    for (name, bytes) in &before {
        assert!(std::fs::read(dir.path().join(name)).expect("read") == *bytes, "{name} changed");
    }
    assert_eq!(listing(dir.path()).len(), 3, "no temporary file is left");

    let second = on_threads(2, &options(dir.path(), 5_000, 4, 4, 2)).expect("next free version");
    assert_eq!(second.version, 2);
    let listed: Vec<u32> = creative_versions(dir.path()).expect("versions").iter().map(|m| m.version).collect();
    assert_eq!(listed, [1, 2]);
    assert!(second.summary().starts_with("v2  5000 rows  "), "{}", second.summary());
    assert!(matches!(creative_version(dir.path(), 3), Err(GenerateError::UnknownVersion { version: 3, .. })));
    assert!(matches!(creative_versions(&dir.path().join("missing")), Err(GenerateError::NoDirectory(_))));
}
