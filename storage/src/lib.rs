//! Where bytes live: paths clients name, confined to the configured data roots; atomic
//! file writes; the layout of outputs under the output root; and the reader of Parquet
//! and CSV shards ([`shard`], [`table`]).
#![warn(missing_docs)]

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

/// Write a file by writing `path.tmp-<pid>` first, syncing it, then renaming it into
/// place: readers see the old file or the whole new one, never a part.
///
/// # Errors
/// Any I/O error; the temporary file is removed.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut std::fs::File) -> io::Result<()>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Directory of a job's transformed parts under the output root.
pub fn transform_dir(output_root: &Path, job_id: &str) -> PathBuf {
    output_root.join(format!("transform_{job_id}"))
}

/// Directory of a job's inverse-transformed parts under the output root.
pub fn inverse_dir(output_root: &Path, job_id: &str) -> PathBuf {
    output_root.join(format!("inverse_transform_{job_id}"))
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
}
