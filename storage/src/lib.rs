//! Where bytes live: paths clients name, confined to the configured data roots; atomic
//! file writes; the layout of outputs under the output root; and the reader of Parquet
//! and CSV shards ([`shard`], [`table`]).
#![warn(missing_docs)]

pub mod objects;
pub mod parts;
pub mod shard;
pub mod table;
pub mod text;

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a client-supplied path is refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Nothing exists there.
    #[error("file {0} does not exist")]
    NotFound(String),
    /// It resolves outside every data root (`..`, another absolute path, a symlink out).
    #[error("path {0} is outside the data roots")]
    Outside(String),
    /// It exists but is not a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// The object store holding it refused or could not be reached.
    #[error("{location}: {reason}")]
    Store {
        /// The object's URL.
        location: String,
        /// Why, in one line (`permission denied`, the store's error).
        reason: String,
    },
}

/// Resolve `requested` (absolute, or relative to the first root) and require that the
/// canonical path lie under a canonical data root.
///
/// # Errors
/// [`PathError`] saying why the path cannot be used.
pub fn confine(roots: &[PathBuf], requested: &str) -> Result<PathBuf, PathError> {
    let raw = Path::new(requested);
    let joined = match roots.first() {
        Some(first) if raw.is_relative() => first.join(raw),
        _ => raw.to_path_buf(),
    };
    // `..` is refused before touching the file system, so it cannot probe for files.
    if raw.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::Outside(requested.to_string()));
    }
    let canonical_roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    let lexically_inside = canonical_roots.iter().chain(roots).any(|r| joined.starts_with(r));
    let canonical = match joined.canonicalize() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound && lexically_inside => {
            return Err(PathError::NotFound(requested.to_string()));
        }
        Err(_) => return Err(PathError::Outside(requested.to_string())),
    };
    if !canonical_roots.iter().any(|r| canonical.starts_with(r)) {
        return Err(PathError::Outside(requested.to_string()));
    }
    if !canonical.is_file() {
        return Err(PathError::NotAFile(requested.to_string()));
    }
    Ok(canonical)
}

/// Write a file by writing a hidden temporary beside it first, syncing it, renaming it
/// into place and syncing the directory: readers see the old file or the whole new one,
/// never a part, and once this returns the file survives a crash.
///
/// The temporary is `.<name>.tmp-<pid>-<n>-<uuid>` (see [`temporary_name`]): hidden, so
/// that dataset readers (pyarrow, DuckDB, Spark skip names starting with `.` or `_`) never
/// take one left by a killed process for data, and unique, so that two writers of one
/// file, in one process or in two containers that are both PID 1 on a shared volume,
/// never write to the same temporary.
///
/// # Errors
/// Any I/O error; the temporary file is removed.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut std::fs::File) -> io::Result<()>) -> io::Result<()> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (if dir.as_os_str().is_empty() { Path::new(".") } else { dir }, name),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display()))),
    };
    create_dir_synced(dir)?;
    let tmp = dir.join(temporary_name(&name.to_string_lossy()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The marker in a temporary's name: `.<name>` + this + `<pid>-<n>-<uuid>`.
const TEMPORARY_MARK: &str = ".tmp-";

/// A fresh temporary name for a file called `name`: `.<name>.tmp-<pid>-<n>-<uuid>`, with
/// a process-wide counter `n` and a random UUID, so that no two writers share one.
pub fn temporary_name(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{name}{TEMPORARY_MARK}{}-{n}-{}", std::process::id(), uuid::Uuid::now_v7().simple())
}

/// Whether `name` is a temporary of [`write_atomically`]: the hidden names of this
/// version, or the visible `<name>.tmp-<pid>` of versions before it (which readers took
/// for data).
pub fn is_temporary(name: &str) -> bool {
    match name.find(TEMPORARY_MARK) {
        Some(at) => {
            let tail = &name[at + TEMPORARY_MARK.len()..];
            at > 0 && !tail.is_empty() && tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
        None => false,
    }
}

/// Remove the temporaries of [`write_atomically`] under `root` (recursively) that were
/// last modified more than `older_than` ago; the number removed.
///
/// Age, not ownership, decides: on a shared volume another live process may be writing
/// a temporary right now, and its PID says nothing across containers. A part is written
/// in seconds, so a temporary untouched for long belongs to a process that died; and
/// should a stalled writer lose its temporary anyway, its rename fails and the chunk is
/// retried, never half-written.
///
/// # Errors
/// When `root` cannot be listed; files that vanish or cannot be removed meanwhile are
/// skipped.
pub fn sweep_temporaries(root: &Path, older_than: std::time::Duration) -> io::Result<usize> {
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if first => return Err(e),
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > older_than));
            if kind.is_file() && stale && is_temporary(&entry.file_name().to_string_lossy()) {
                removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
            }
        }
    }
    Ok(removed)
}

/// Create `dir` and its missing parents, syncing the parent of each directory made, so
/// that the new directory entries survive a crash as well as the files in them.
fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_synced(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => dir.parent().filter(|p| !p.as_os_str().is_empty()).map_or(Ok(()), sync_dir),
        // Another writer made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync a directory, making the entries renamed or created in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Name of the directory (or prefix) of a job's transformed parts under the output root.
pub fn transform_name(job_id: &str) -> String {
    format!("transform_{job_id}")
}

/// Name of the directory (or prefix) of a job's inverse-transformed parts.
pub fn inverse_name(job_id: &str) -> String {
    format!("inverse_transform_{job_id}")
}

/// Directory of a job's transformed parts under the output root.
pub fn transform_dir(output_root: &Path, job_id: &str) -> PathBuf {
    output_root.join(transform_name(job_id))
}

/// Directory of a job's inverse-transformed parts under the output root.
pub fn inverse_dir(output_root: &Path, job_id: &str) -> PathBuf {
    output_root.join(inverse_name(job_id))
}

/// File name of a chunk's part.
pub fn part_name(chunk: u64) -> String {
    format!("part-{chunk:05}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confines_to_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/a.parquet"), b"x").expect("write");
        std::fs::write(dir.path().join("secret"), b"x").expect("write");
        let roots = vec![root.clone()];

        assert!(confine(&roots, "sub/a.parquet").is_ok());
        let absolute = root.join("sub/a.parquet");
        assert!(confine(&roots, absolute.to_str().expect("utf-8")).is_ok());
        assert!(matches!(confine(&roots, "sub/missing.parquet"), Err(PathError::NotFound(_))));
        assert!(matches!(confine(&roots, "../secret"), Err(PathError::Outside(_))));
        assert!(matches!(confine(&roots, "/etc/passwd"), Err(PathError::Outside(_))));
        assert!(matches!(confine(&roots, "/nonexistent/x"), Err(PathError::Outside(_))));
        assert!(matches!(confine(&roots, "sub"), Err(PathError::NotAFile(_))));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).expect("symlink");
            assert!(matches!(confine(&roots, "link"), Err(PathError::Outside(_))));
        }
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out/part.bin");
        write_atomically(&target, |f| io::Write::write_all(f, b"hello")).expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"hello");
        let failed = write_atomically(&dir.path().join("out/bad.bin"), |_| Err(io::Error::other("boom")));
        assert!(failed.is_err());
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("out")).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("part.bin")]);
    }

    #[test]
    fn temporaries_are_hidden_unique_and_recognised() {
        let (a, b) = (temporary_name("part-00001.parquet"), temporary_name("part-00001.parquet"));
        assert_ne!(a, b, "two writers of one file in one process");
        assert!(a.starts_with(".part-00001.parquet.tmp-"), "{a}");
        assert!(is_temporary(&a));
        assert!(is_temporary("part-00001.parquet.tmp-1234"), "the former visible name");
        for finished in ["part-00001.parquet", "model.json", ".tmp-1", "x.tmp-", "a.tmp-1/2"] {
            assert!(!is_temporary(finished), "{finished}");
        }
    }

    #[test]
    fn the_sweep_removes_old_temporaries_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("transform_x");
        std::fs::create_dir_all(&sub).expect("mkdir");
        let old = sub.join(temporary_name("part-00000.parquet"));
        let legacy = sub.join("part-00001.parquet.tmp-77");
        let fresh = sub.join(temporary_name("part-00002.parquet"));
        let part = sub.join("part-00003.parquet");
        for f in [&old, &legacy, &fresh, &part] {
            std::fs::write(f, b"x").expect("write");
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for f in [&old, &legacy, &part] {
            let file = std::fs::File::options().write(true).open(f).expect("open");
            file.set_modified(hour_ago).expect("set mtime");
        }
        let removed = sweep_temporaries(dir.path(), std::time::Duration::from_secs(600)).expect("sweep");
        assert_eq!(removed, 2);
        assert!(!old.exists() && !legacy.exists());
        assert!(fresh.exists(), "a temporary being written now is left alone");
        assert!(part.exists(), "finished parts are never swept");
    }
}
