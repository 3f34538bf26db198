//! Reconciling an upload: the per-hour count and sums read from its CSV against what
//! ClickHouse `game_rounds` holds, and the upload's state that follows from them.

use std::collections::BTreeMap;

use shardflow_store::{IndexError, UploadStatus};

use crate::store::{HourSums, RoundsStore, UploadRow};

/// Where an upload is, reconciled with ClickHouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadState {
    /// Rows are being sent to the broker.
    Publishing,
    /// Reading or publishing failed.
    Failed,
    /// Published; some rows are still on their way to ClickHouse.
    InProgress,
    /// Every published row is in ClickHouse and every hour's sums match the CSV.
    Complete,
    /// ClickHouse holds as many rows as were published, but some hour differs.
    Mismatch,
}

impl UploadState {
    /// The name the API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publishing => "publishing",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Complete => "complete",
            Self::Mismatch => "mismatch",
        }
    }
}

/// An upload compared with ClickHouse.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconciliation {
    /// The upload's state.
    pub state: UploadState,
    /// Rows in `game_rounds` from this upload.
    pub rows_in_clickhouse: u64,
    /// Hours with rounds in the CSV.
    pub hours: u64,
    /// Every hour whose count or sums differ: as the CSV has it, as ClickHouse has it.
    pub mismatched: Vec<(HourSums, HourSums)>,
}

/// Compare `upload`'s CSV with what ClickHouse holds of it.
///
/// # Errors
/// When ClickHouse does not answer.
pub async fn reconcile(store: &RoundsStore, upload: &UploadRow) -> Result<Reconciliation, IndexError> {
    let from_csv: Vec<HourSums> = serde_json::from_str(&upload.hourly).unwrap_or_default();
    let in_clickhouse: BTreeMap<u32, HourSums> =
        store.upload_hourly(&upload.upload_id).await?.into_iter().map(|h| (h.hour, h)).collect();
    let rows_in_clickhouse = in_clickhouse.values().map(|h| h.rounds).sum::<u64>();
    let mut mismatched = Vec::new();
    for csv in &from_csv {
        let stored =
            in_clickhouse.get(&csv.hour).cloned().unwrap_or(HourSums { hour: csv.hour, ..HourSums::default() });
        if !csv.matches(&stored) {
            mismatched.push((csv.clone(), stored));
        }
    }
    let state = match upload.status {
        UploadStatus::Publishing => UploadState::Publishing,
        UploadStatus::Failed => UploadState::Failed,
        UploadStatus::Published if rows_in_clickhouse < upload.rows_published => UploadState::InProgress,
        UploadStatus::Published if rows_in_clickhouse == upload.rows_published && mismatched.is_empty() => {
            UploadState::Complete
        }
        UploadStatus::Published => UploadState::Mismatch,
    };
    Ok(Reconciliation { state, rows_in_clickhouse, hours: from_csv.len() as u64, mismatched })
}
