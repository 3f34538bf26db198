//! Retention: uploads (`<first data root>/uploads`) and generated shards
//! (`<first data root>/generated`) older than `storage.retention` are removed, so the
//! disk does not fill with them. A file an unfinished job still reads is kept whatever
//! its age. The API sweeps at start and then every quarter of the retention (between 1 s
//! and 1 h); outputs and models are never touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::AppState;

/// The directories swept, under the first data root.
const SWEPT: [&str; 2] = ["uploads", "generated"];

/// Sweep now and then every quarter of the retention, for as long as the runtime runs.
pub(super) fn spawn(state: Arc<AppState>) {
    let retention = state.config.storage.retention;
    if retention.is_zero() {
        return;
    }
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        loop {
            match sweep(&state, retention).await {
                Ok(0) => {}
                Ok(removed) => info!(removed, ?retention, "removed uploads and generated shards past their retention"),
                Err(e) => warn!(error = %e, "retention sweep failed; trying again later"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Remove what is older than `retention` and read by no unfinished job; the count.
async fn sweep(state: &AppState, retention: Duration) -> Result<usize, shardflow_store::IndexError> {
    let in_use: HashSet<PathBuf> = state
        .index
        .unfinished_jobs()
        .await?
        .into_iter()
        .map(|job| PathBuf::from(&job.source))
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect();
    let root = crate::jobs::local_data_root(state).to_path_buf();
    let cutoff = SystemTime::now().checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let removed = tokio::task::spawn_blocking(move || {
        SWEPT.iter().map(|dir| remove_older(&root.join(dir), cutoff, &in_use, false)).sum::<usize>()
    })
    .await
    .unwrap_or(0);
    Ok(removed)
}

/// Remove files under `dir` last modified before `cutoff` and not `in_use`, and the
/// directories (below the top one) they leave empty.
fn remove_older(dir: &Path, cutoff: SystemTime, in_use: &HashSet<PathBuf>, remove_if_empty: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    // Its age before this sweep removes anything from it (which makes it new again).
    let old_dir = std::fs::metadata(dir).and_then(|m| m.modified()).is_ok_and(|m| m < cutoff);
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            removed += remove_older(&path, cutoff, in_use, true);
            continue;
        }
        let old = meta.modified().is_ok_and(|m| m < cutoff);
        let used = in_use.contains(&path.canonicalize().unwrap_or_else(|_| path.clone()));
        if old && !used && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    // An empty directory as old as the files (a fresh one is being filled): fails, and
    // is left, while anything remains inside.
    if remove_if_empty && old_dir {
        let _ = std::fs::remove_dir(dir);
    }
    removed
}
