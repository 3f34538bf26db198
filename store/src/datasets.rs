//! Datasets: a name, its columns and the model its jobs use; and the values a chunk's
//! transform could not encode as they were, per column.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::{Index, IndexError, unix_now, version_now};

/// How a dataset came to use its model.
pub mod model_source {
    /// The dataset's first registered model (fitted from its own shards).
    pub const FIRST_FIT: &str = "first fit";
    /// Chosen by `producer model use` or `PUT /datasets/{name}/model`.
    pub const USE: &str = "use";
}

/// A dataset's row.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct DatasetRow {
    /// Name.
    pub name: String,
    /// The Arrow schema of its columns, as JSON.
    pub columns_json: String,
    /// The model its jobs use when a request names none.
    pub model_id: String,
    /// [`model_source::FIRST_FIT`] or [`model_source::USE`].
    pub model_source: String,
    /// Unix seconds.
    pub updated_at: u32,
    /// Orders a dataset's rows (nanoseconds since the epoch).
    pub version: u64,
}

impl DatasetRow {
    /// Dataset `name` using model `model_id` (whose input schema is `columns_json`), for
    /// `source`.
    pub fn new(name: &str, model_id: &str, columns_json: String, source: &str) -> Self {
        Self {
            name: name.to_string(),
            columns_json,
            model_id: model_id.to_string(),
            model_source: source.to_string(),
            updated_at: unix_now(),
            version: version_now(),
        }
    }
}

/// Values of one column that a chunk's transform could not encode as they were.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct ValueIssueRow {
    /// Job id.
    pub job_id: String,
    /// Chunk.
    pub chunk: u64,
    /// Column.
    pub column: String,
    /// `unseen` (a category the fit never saw) or `invalid` (not a number).
    pub kind: String,
    /// Rows.
    pub rows: u64,
}

/// A job's issues summed over its chunks, per column and kind.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
pub struct ValueIssueTotal {
    /// Column.
    pub column: String,
    /// `unseen` or `invalid`.
    pub kind: String,
    /// Rows over every chunk.
    pub rows: u64,
}

impl Index {
    /// Record a dataset's state (a later one replaces it).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_dataset(&self, row: &DatasetRow) -> Result<(), IndexError> {
        self.insert("datasets", row).await
    }

    /// A dataset by name.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn dataset(&self, name: &str) -> Result<Option<DatasetRow>, IndexError> {
        self.call(|c| c.query("SELECT ?fields FROM datasets FINAL WHERE name = ?").bind(name).fetch_optional()).await
    }

    /// Every dataset, by name.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn datasets(&self) -> Result<Vec<DatasetRow>, IndexError> {
        self.call(|c| c.query("SELECT ?fields FROM datasets FINAL ORDER BY name").fetch_all()).await
    }

    /// The models registered for a dataset, newest first.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn dataset_models(&self, dataset: &str) -> Result<Vec<(String, u32)>, IndexError> {
        self.call(|c| {
            c.query(
                "SELECT model_id, created_at FROM models FINAL WHERE dataset = ? ORDER BY created_at DESC, model_id",
            )
            .bind(dataset)
            .fetch_all::<(String, u32)>()
        })
        .await
    }

    /// Record the value issues of one chunk (a repeat replaces them).
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn insert_value_issues(&self, rows: &[ValueIssueRow]) -> Result<(), IndexError> {
        self.insert_all("value_issues", rows).await
    }

    /// A job's value issues, summed per column and kind.
    ///
    /// # Errors
    /// When ClickHouse refuses or does not answer.
    pub async fn value_issues(&self, job_id: &str) -> Result<Vec<ValueIssueTotal>, IndexError> {
        self.call(|c| {
            c.query(
                "SELECT column, kind, sum(rows) AS rows FROM value_issues FINAL WHERE job_id = ? \
                     GROUP BY column, kind ORDER BY column, kind",
            )
            .bind(job_id)
            .fetch_all()
        })
        .await
    }
}
