//! Shards of one numeric column (the `Amount` dataset), read through [`Table`]: validate
//! the file up front, then stream the column as Float64 batches, or draw a seeded sample.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::table::Table;

/// The main dataset's column.
pub const AMOUNT: &str = "Amount";

/// Why a shard cannot be used. Every variant is the client's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// No file there.
    #[error("shard {0} does not exist")]
    NotFound(String),
    /// A directory holds no shard.
    #[error("no shards in {0}")]
    NoShards(String),
    /// The file is not Parquet (or its footer is damaged).
    #[error("shard {path} is not a readable Parquet file: {reason}")]
    NotParquet {
        /// The shard.
        path: String,
        /// What the Parquet reader said.
        reason: String,
    },
    /// The file is not CSV with a header row.
    #[error("shard {path} is not a readable CSV file with a header row: {reason}")]
    NotCsv {
        /// The shard.
        path: String,
        /// What the CSV reader said.
        reason: String,
    },
    /// The column is missing.
    #[error("shard {path} has no column `{column}` (columns: {available})")]
    MissingColumn {
        /// The shard.
        path: String,
        /// The column looked for.
        column: String,
        /// Its columns, comma separated.
        available: String,
    },
    /// The column is not numeric.
    #[error("shard {path}: column `{column}` is {found}, expected a number")]
    ColumnType {
        /// The shard.
        path: String,
        /// The column.
        column: String,
        /// Its type.
        found: DataType,
    },
    /// Reading the data pages failed part way.
    #[error("reading shard {path}: {reason}")]
    Read {
        /// The shard.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A shard (Parquet or CSV, read by [`Table`]) whose header was read and whose numeric
/// column was found: what jobs publish, one column streamed as Float64.
pub struct Shard {
    table: Table,
    path: String,
    rows: u64,
}

impl Shard {
    /// Open `path` and check that it has a numeric column `column`.
    ///
    /// # Errors
    /// [`ShardError`] saying what is wrong with the file.
    pub fn open(path: &Path, column: &str) -> Result<Self, ShardError> {
        let table = Table::open(path, &[column.to_string()], None)?;
        let schema = table.schema();
        let field = schema.field(0);
        if !field.data_type().is_numeric() {
            return Err(ShardError::ColumnType {
                path: path.display().to_string(),
                column: column.to_string(),
                found: field.data_type().clone(),
            });
        }
        let rows = table.num_rows()?;
        Ok(Self { table, path: path.display().to_string(), rows })
    }

    /// Rows in the shard (from its footer for Parquet).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Stream the column in batches of at most `batch_rows` rows, each a one-column
    /// `RecordBatch` of Float64 named after the column.
    ///
    /// # Errors
    /// [`ShardError::Read`] when the reader cannot be set up.
    pub fn batches(self, batch_rows: usize) -> Result<Batches, ShardError> {
        let field = self.table.schema().field(0).clone();
        let schema = Arc::new(Schema::new(vec![Field::new(field.name(), DataType::Float64, true)]));
        Ok(Batches { batches: self.table.batches(batch_rows)?, path: self.path, schema })
    }
}

/// Float64 batches of one column of a shard.
pub struct Batches {
    batches: Box<dyn Iterator<Item = Result<RecordBatch, ShardError>> + Send>,
    path: String,
    schema: Arc<Schema>,
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, ShardError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.batches.next()? {
            Ok(batch) => batch,
            Err(e) => return Some(Err(e)),
        };
        let read = |reason: String| ShardError::Read { path: self.path.clone(), reason };
        let floats: ArrayRef = match arrow_cast::cast(batch.column(0), &DataType::Float64) {
            Ok(a) => a,
            Err(e) => return Some(Err(read(e.to_string()))),
        };
        Some(RecordBatch::try_new(self.schema.clone(), vec![floats]).map_err(|e| read(e.to_string())))
    }
}

/// What a sampling pass saw of one shard.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    /// The shard's file name.
    pub file: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Null or non-finite values (never sampled).
    pub nulls: u64,
    /// Values taken into the sample.
    pub sampled: u64,
    /// Smallest finite value.
    pub min: f64,
    /// Largest finite value.
    pub max: f64,
}

/// Row indices to keep when sampling `n` of `rows` rows: drawn uniformly without
/// replacement (seeded), ascending; `None` (keep every row) when there are no more than `n`.
pub fn sample_rows(rows: usize, n: usize, seed: u64) -> Option<Vec<usize>> {
    (rows > n).then(|| {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, rows, n).into_vec();
        idx.sort_unstable();
        idx
    })
}
