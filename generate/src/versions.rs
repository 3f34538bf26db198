//! A directory of dataset versions: version `V` is `dataset_v{V}.parquet`,
//! `dataset_v{V}.tfrecord` and `metadata_v{V}.json`, side by side.
//!
//! A version is written under hidden temporary names and published at the end by
//! hard-linking each file to its name, which fails rather than replace a file that is
//! there: a version is never overwritten, even by a run started at the same time. The
//! metadata is published last and is what makes a version: a crash leaves at most data
//! files without metadata, which no listing shows and no later run reuses.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::GenerateError;

/// The three files of a version, in publishing order (the metadata last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionFiles {
    /// `dataset_v{V}.parquet`.
    pub parquet: String,
    /// `dataset_v{V}.tfrecord`.
    pub tfrecord: String,
    /// `metadata_v{V}.json`.
    pub metadata: String,
}

impl VersionFiles {
    /// The file names of version `version`.
    pub fn of(version: u32) -> Self {
        Self {
            parquet: format!("dataset_v{version}.parquet"),
            tfrecord: format!("dataset_v{version}.tfrecord"),
            metadata: format!("metadata_v{version}.json"),
        }
    }

    fn names(&self) -> [&str; 3] {
        [&self.parquet, &self.tfrecord, &self.metadata]
    }
}

/// The version a file name belongs to, if it is one of a version's files.
fn version_of(name: &str) -> Option<(u32, bool)> {
    let digits = |s: &str| s.parse::<u32>().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
    if let Some(v) = name.strip_prefix("metadata_v").and_then(|s| s.strip_suffix(".json")) {
        return digits(v).map(|v| (v, true));
    }
    let rest = name.strip_prefix("dataset_v")?;
    let v = rest.strip_suffix(".parquet").or_else(|| rest.strip_suffix(".tfrecord"))?;
    digits(v).map(|v| (v, false))
}

fn read_dir_err(dir: &Path) -> impl Fn(io::Error) -> GenerateError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            GenerateError::NoDirectory(dir.display().to_string())
        } else {
            GenerateError::Read { path: dir.display().to_string(), source }
        }
    }
}

/// Versions in `dir`: those with any file (`all`), and those with metadata (`complete`).
fn scan(dir: &Path) -> Result<(BTreeSet<u32>, BTreeSet<u32>), GenerateError> {
    if !dir.is_dir() {
        return Err(GenerateError::NoDirectory(dir.display().to_string()));
    }
    let (mut all, mut complete) = (BTreeSet::new(), BTreeSet::new());
    for entry in std::fs::read_dir(dir).map_err(read_dir_err(dir))? {
        let entry = entry.map_err(read_dir_err(dir))?;
        if let Some((v, metadata)) = entry.file_name().to_str().and_then(version_of) {
            let _ = all.insert(v);
            if metadata {
                let _ = complete.insert(v);
            }
        }
    }
    Ok((all, complete))
}

/// The version to write into `dir`: `requested` if no file of it is there, else the next
/// free one (1 in an empty directory).
///
/// # Errors
/// [`GenerateError::VersionExists`] when `requested` is taken; [`GenerateError::Invalid`]
/// for version 0; a failed directory read.
pub(crate) fn choose(dir: &Path, requested: Option<u32>) -> Result<u32, GenerateError> {
    let (all, _) = scan(dir)?;
    let next = all.last().map_or(Some(1), |v| v.checked_add(1));
    match requested {
        Some(0) => Err(GenerateError::Invalid("--version must be at least 1".into())),
        Some(v) if all.contains(&v) => Err(exists(dir, v, next)),
        Some(v) => Ok(v),
        None => next.ok_or_else(|| GenerateError::Invalid(format!("{} holds version {}", dir.display(), u32::MAX))),
    }
}

fn exists(dir: &Path, version: u32, next: Option<u32>) -> GenerateError {
    GenerateError::VersionExists {
        dir: dir.display().to_string(),
        version,
        next: next.map_or_else(|| "none".into(), |v| v.to_string()),
    }
}

/// Every complete version's metadata in `dir`, in version order.
///
/// # Errors
/// A missing directory, an unreadable file or metadata that does not parse.
pub(crate) fn list<M: DeserializeOwned>(dir: &Path) -> Result<Vec<M>, GenerateError> {
    let (_, complete) = scan(dir)?;
    complete.into_iter().map(|v| read_metadata(dir, v)).collect()
}

/// The metadata of version `version` in `dir`.
///
/// # Errors
/// [`GenerateError::UnknownVersion`] when it is not there; a missing directory, an
/// unreadable file or metadata that does not parse.
pub(crate) fn read<M: DeserializeOwned>(dir: &Path, version: u32) -> Result<M, GenerateError> {
    let (_, complete) = scan(dir)?;
    if !complete.contains(&version) {
        let known: Vec<String> = complete.iter().map(u32::to_string).collect();
        return Err(GenerateError::UnknownVersion {
            dir: dir.display().to_string(),
            version,
            known: if known.is_empty() { "none".into() } else { known.join(", ") },
        });
    }
    read_metadata(dir, version)
}

fn read_metadata<M: DeserializeOwned>(dir: &Path, version: u32) -> Result<M, GenerateError> {
    let path = dir.join(VersionFiles::of(version).metadata);
    let bytes =
        std::fs::read(&path).map_err(|source| GenerateError::Read { path: path.display().to_string(), source })?;
    serde_json::from_slice(&bytes)
        .map_err(|source| GenerateError::Metadata { path: path.display().to_string(), source })
}

/// A version being written: its files under hidden temporary names in the same directory,
/// removed when dropped unless published.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    version: u32,
    files: VersionFiles,
    /// (temporary, final) paths in publishing order.
    paths: [(PathBuf, PathBuf); 3],
}

impl Staging {
    pub(crate) fn new(dir: &Path, version: u32) -> Self {
        let files = VersionFiles::of(version);
        let pid = std::process::id();
        let paths = files.names().map(|name| (dir.join(format!(".{name}.tmp-{pid}")), dir.join(name)));
        Self { dir: dir.to_path_buf(), version, files, paths }
    }

    pub(crate) fn files(&self) -> &VersionFiles {
        &self.files
    }

    /// Temporary paths of the Parquet, TFRecord and metadata files.
    pub(crate) fn temporary(&self) -> [&Path; 3] {
        [&self.paths[0].0, &self.paths[1].0, &self.paths[2].0]
    }

    /// Give every file its name, the metadata last; refused, with nothing of this version
    /// left behind, when any of the names is taken.
    ///
    /// # Errors
    /// [`GenerateError::VersionExists`], or a failed link.
    pub(crate) fn publish(self) -> Result<(), GenerateError> {
        let mut linked: Vec<&Path> = Vec::new();
        for (tmp, name) in &self.paths {
            if let Err(source) = link_new(tmp, name) {
                for done in linked {
                    let _ = std::fs::remove_file(done);
                }
                return Err(if source.kind() == io::ErrorKind::AlreadyExists {
                    exists(&self.dir, self.version, self.version.checked_add(1))
                } else {
                    GenerateError::Write { path: name.display().to_string(), source }
                });
            }
            linked.push(name);
        }
        // The directory entries are durable before the run reports the version written.
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Link `tmp` to `name`, failing with `AlreadyExists` rather than replacing `name`; where
/// the file system has no hard links, a rename after checking that `name` is free.
fn link_new(tmp: &Path, name: &Path) -> io::Result<()> {
    match std::fs::hard_link(tmp, name) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            if name.exists() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(tmp, name)
        }
        other => other,
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for (tmp, _) in &self.paths {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"x").expect("write");
    }

    #[test]
    fn file_names_belong_to_their_version() {
        assert_eq!(version_of("dataset_v12.parquet"), Some((12, false)));
        assert_eq!(version_of("dataset_v3.tfrecord"), Some((3, false)));
        assert_eq!(version_of("metadata_v1.json"), Some((1, true)));
        for other in ["dataset_v+1.parquet", ".metadata_v1.json.tmp-9", "dataset_v.parquet", "manifest.json"] {
            assert_eq!(version_of(other), None, "{other}");
        }
    }

    #[test]
    fn the_next_version_is_past_every_file_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(choose(dir.path(), None).expect("empty"), 1);
        touch(dir.path(), "metadata_v1.json");
        // A crash between publishing data and metadata leaves data files only.
        touch(dir.path(), "dataset_v3.parquet");
        assert_eq!(choose(dir.path(), None).expect("next"), 4);
        assert_eq!(choose(dir.path(), Some(2)).expect("free"), 2);
        for taken in [1, 3] {
            let e = choose(dir.path(), Some(taken)).expect_err("taken");
            assert!(matches!(e, GenerateError::VersionExists { version, .. } if version == taken), "{e}");
        }
        assert!(matches!(choose(dir.path(), Some(0)), Err(GenerateError::Invalid(_))));
        let missing = dir.path().join("missing");
        assert!(matches!(choose(&missing, None), Err(GenerateError::NoDirectory(_))));
    }

    #[test]
    fn publishing_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = Staging::new(dir.path(), 1);
        for tmp in staging.temporary() {
            std::fs::write(tmp, b"new").expect("write");
        }
        touch(dir.path(), "dataset_v1.tfrecord");
        let e = staging.publish().expect_err("taken");
        assert!(matches!(e, GenerateError::VersionExists { version: 1, .. }), "{e}");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        left.sort();
        assert_eq!(left, ["dataset_v1.tfrecord"]);
        assert_eq!(std::fs::read(dir.path().join("dataset_v1.tfrecord")).expect("read"), b"x");
    }
}
