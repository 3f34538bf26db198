//! SQL on any file: one input (CSV, Parquet, NDJSON, Arrow IPC or Avro, on local disk or
//! any object store `shardflow_storage::objects` opens) registered as the table `data` in
//! a DataFusion session with a memory limit, a query run over it with no row cap, and its
//! result streamed batch by batch into a writer of any of those formats ([`Sink`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), shardflow_query::QueryError> {
//! use shardflow_query::{Input, Session, Sink};
//! use shardflow_storage::objects::{Options, Patience};
//! let options = Options::default();
//! let input = Input::new("s3://bucket/rounds.csv", None)?;
//! let session = Session::open(&input, &options, Patience::Command, Some(256 << 20)).await?;
//! let sink = Sink::new("out.parquet", None)?;
//! let done = session.run("SELECT region, sum(bet) FROM data GROUP BY region", Some(&sink), 10, &options).await?;
//! println!("{} rows", done.rows);
//! # Ok(())
//! # }
//! ```

mod write;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::options::ArrowReadOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{
    AvroReadOptions, CsvReadOptions, NdJsonReadOptions, ParquetReadOptions, SQLOptions, SessionConfig, SessionContext,
};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as Key;
use shardflow_storage::objects::{Location, ObjectRoot, Options, Patience};
use url::Url;

pub use crate::write::Sink;

/// The name the input is registered under: queries read `FROM data`.
pub const TABLE: &str = "data";

/// The query run when none is given.
pub const SELECT_ALL: &str = "SELECT * FROM data";

/// The file formats read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma- (or other-) separated values; on reading, the schema is inferred.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Newline-delimited JSON, one object per row.
    Json,
    /// Arrow IPC file format (Feather v2).
    Arrow,
    /// Avro Object Container File.
    Avro,
}

impl FromStr for Format {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Ok(Format::Csv),
            "parquet" | "pq" => Ok(Format::Parquet),
            "json" | "ndjson" | "jsonl" => Ok(Format::Json),
            "arrow" | "ipc" | "feather" | "arrows" => Ok(Format::Arrow),
            "avro" => Ok(Format::Avro),
            _ => Err(QueryError::UnknownFormat(s.chars().take(40).collect())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Json => "json",
            Format::Arrow => "arrow",
            Format::Avro => "avro",
        })
    }
}

impl Format {
    /// The format `named` (a path or URL) has by its extension; `given` (a format's name)
    /// wins.
    ///
    /// # Errors
    /// [`QueryError::UnknownFormat`] for a name or an extension that is none of ours.
    pub fn of(named: &str, given: Option<&str>) -> Result<Format, QueryError> {
        if let Some(given) = given {
            return given.parse();
        }
        match extension(named) {
            Some(ext) => ext.parse(),
            None => Err(QueryError::NoExtension(named.to_string())),
        }
    }
}

/// The extension of the last segment of `named`, without the dot.
fn extension(named: &str) -> Option<&str> {
    let name = named.rsplit('/').next().unwrap_or(named);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some(ext)
}

/// Why a conversion or a query failed: each reason is one line.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A format name or a file extension that is none of ours.
    #[error("unknown format `{0}`: use csv, parquet, json, arrow or avro")]
    UnknownFormat(String),
    /// A name without an extension, and no format given.
    #[error("{0} has no extension to tell its format by: name the format (csv, parquet, json, arrow or avro)")]
    NoExtension(String),
    /// A path or URL that names nothing usable.
    #[error("{0}")]
    BadLocation(String),
    /// No such file or object.
    #[error("no such file or object: {0}")]
    NotFound(String),
    /// The store refused the credentials, or the file cannot be opened.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The store did not answer.
    #[error("cannot reach {location}: {reason}")]
    Unreachable {
        /// The input or output.
        location: String,
        /// The store's reason.
        reason: String,
    },
    /// The SQL does not parse, names a column or table that does not exist, or is not a
    /// query (DDL, DML and `SET` are refused).
    #[error("bad query: {0}")]
    BadQuery(String),
    /// The input cannot be read as its format, or the query failed while it ran
    /// (for example the memory limit was too small for what it holds).
    #[error("query failed: {0}")]
    Failed(String),
    /// The output cannot be written.
    #[error("writing {location}: {reason}")]
    Write {
        /// The output.
        location: String,
        /// Why.
        reason: String,
    },
}

/// The first line of `reason`, at most 400 characters.
pub(crate) fn one_line(reason: &str) -> String {
    let line = reason.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    line.chars().take(400).collect()
}

/// An object-store error about `location` as a [`QueryError`].
pub(crate) fn store_error(location: &str, error: &object_store::Error) -> QueryError {
    match error {
        object_store::Error::NotFound { .. } => QueryError::NotFound(location.to_string()),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            QueryError::PermissionDenied(location.to_string())
        }
        other => QueryError::Unreachable { location: location.to_string(), reason: one_line(&deepest(other)) },
    }
}

/// The innermost cause of `error`: object_store's outer messages repeat the request, the
/// inner one says what went wrong (connection refused, a timeout).
fn deepest(error: &(dyn std::error::Error + 'static)) -> String {
    let mut root = None;
    let mut cause = error.source();
    while let Some(next) = cause {
        root = Some(next);
        cause = next.source();
    }
    match root {
        Some(root) => format!("{error}: {root}"),
        None => error.to_string(),
    }
}

/// A DataFusion error met while planning, as a [`QueryError`].
fn plan_error(error: DataFusionError) -> QueryError {
    match error.find_root() {
        DataFusionError::ObjectStore(e) => store_error("the input", e),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => QueryError::BadQuery(one_line(&error.strip_backtrace())),
        _ => QueryError::Failed(one_line(&error.strip_backtrace())),
    }
}

/// A DataFusion error met while running, as a [`QueryError`].
pub(crate) fn run_error(error: DataFusionError) -> QueryError {
    match error.find_root() {
        DataFusionError::ObjectStore(e) => store_error("the input", e),
        _ => QueryError::Failed(one_line(&error.strip_backtrace())),
    }
}

/// Where a file is: a local path or an object.
#[derive(Clone, Debug)]
pub(crate) enum Place {
    /// A local file (absolute once checked).
    Local(PathBuf),
    /// An object: its store (a client of its bucket) and key.
    Remote {
        /// The object's URL.
        url: Url,
        /// The key in the bucket.
        key: Key,
    },
}

impl Place {
    /// Parse `named`: a path, a `file://` URL, or `s3://`, `az://`, `gs://`.
    pub(crate) fn parse(named: &str) -> Result<Place, QueryError> {
        let bad = |e: String| QueryError::BadLocation(one_line(&e));
        match named.parse::<Location>().map_err(|e| bad(e.to_string()))? {
            Location::Local(path) => Ok(Place::Local(path)),
            Location::Remote(url) => {
                let key = Key::from_url_path(url.path()).map_err(|e| bad(format!("{named}: {e}")))?;
                if key.as_ref().is_empty() {
                    return Err(bad(format!("{named} names a bucket, not an object")));
                }
                Ok(Place::Remote { url, key })
            }
        }
    }

    /// The bucket's root URL (`s3://bucket`), for the object-store registry.
    pub(crate) fn bucket(url: &Url) -> Result<Url, QueryError> {
        let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        Url::parse(&base).map_err(|e| QueryError::BadLocation(format!("{url}: {e}")))
    }

    /// A client of `url`'s bucket.
    pub(crate) fn store(url: &Url, options: &Options, patience: Patience) -> Result<Arc<dyn ObjectStore>, QueryError> {
        let root = ObjectRoot::open_with(url, options, patience)
            .map_err(|e| QueryError::BadLocation(one_line(&e.to_string())))?;
        Ok(Arc::clone(root.store()))
    }
}

/// The input of a query: where it is, its format and how to read a CSV.
#[derive(Clone, Debug)]
pub struct Input {
    named: String,
    place: Place,
    format: Format,
    /// The first CSV line names the columns (default yes).
    pub header: bool,
    /// The CSV field delimiter (default `,`).
    pub delimiter: u8,
}

impl Input {
    /// The input `named` (path or URL), its format `given` by name or else told by its
    /// extension.
    ///
    /// # Errors
    /// [`QueryError::UnknownFormat`], [`QueryError::NoExtension`] or
    /// [`QueryError::BadLocation`].
    pub fn new(named: &str, given: Option<&str>) -> Result<Input, QueryError> {
        let place = Place::parse(named)?;
        let format = Format::of(named, given)?;
        let delimiter = if extension(named).is_some_and(|e| e.eq_ignore_ascii_case("tsv")) { b'\t' } else { b',' };
        Ok(Input { named: named.to_string(), place, format, header: true, delimiter })
    }

    /// The input's format.
    pub fn format(&self) -> Format {
        self.format
    }
}

/// A DataFusion session with one input registered as `data`.
pub struct Session {
    ctx: SessionContext,
}

/// What a run did.
#[derive(Debug)]
pub struct Ran {
    /// Rows in the result.
    pub rows: u64,
    /// The first rows asked to be shown, as batches.
    pub shown: Vec<RecordBatch>,
}

impl Ran {
    /// The rows shown as a table (arrow's pretty print), empty when none were asked for.
    ///
    /// # Errors
    /// [`QueryError::Failed`] when a value cannot be formatted.
    pub fn table(&self) -> Result<String, QueryError> {
        if self.shown.is_empty() {
            return Ok(String::new());
        }
        datafusion::arrow::util::pretty::pretty_format_batches(&self.shown)
            .map(|t| t.to_string())
            .map_err(|e| QueryError::Failed(one_line(&e.to_string())))
    }
}

impl Session {
    /// A session over `input` whose operators share `memory_limit` bytes (spilling to
    /// disk where they can; unlimited when `None`), reaching object stores with `options`
    /// over the environment, as patient as `patience`. The input is looked at once here:
    /// a missing object, refused credentials or an unreachable store fail now.
    ///
    /// # Errors
    /// [`QueryError`].
    pub async fn open(
        input: &Input,
        options: &Options,
        patience: Patience,
        memory_limit: Option<usize>,
    ) -> Result<Session, QueryError> {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = memory_limit {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        let runtime = runtime.build_arc().map_err(|e| QueryError::Failed(one_line(&e.to_string())))?;
        // Strings as Utf8 (not views): every writer, and the job service's shard reader, take them.
        let mut config = SessionConfig::new().with_information_schema(false);
        config.options_mut().execution.parquet.schema_force_view_types = false;
        // Column names as the file spells them: `SELECT Amount` finds the header `Amount`
        // (DataFusion would otherwise fold unquoted names to lower case).
        config.options_mut().sql_parser.enable_ident_normalization = false;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let table_path = match &input.place {
            Place::Local(path) => {
                let absolute = std::path::absolute(path).map_err(|e| QueryError::BadLocation(e.to_string()))?;
                let meta = std::fs::metadata(&absolute).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => QueryError::NotFound(input.named.clone()),
                    std::io::ErrorKind::PermissionDenied => QueryError::PermissionDenied(input.named.clone()),
                    _ => QueryError::Failed(format!("{}: {e}", input.named)),
                })?;
                if !meta.is_file() {
                    return Err(QueryError::BadLocation(format!("{} is not a file", input.named)));
                }
                std::fs::File::open(&absolute).map_err(|e| match e.kind() {
                    std::io::ErrorKind::PermissionDenied => QueryError::PermissionDenied(input.named.clone()),
                    _ => QueryError::Failed(format!("{}: {e}", input.named)),
                })?;
                absolute.to_string_lossy().into_owned()
            }
            Place::Remote { url, key } => {
                let store = Place::store(url, options, patience)?;
                store.head(key).await.map_err(|e| store_error(&input.named, &e))?;
                ctx.register_object_store(&Place::bucket(url)?, store);
                url.to_string()
            }
        };
        // DataFusion lists the path and keeps names with the format's extension: give it
        // the input's own (or none).
        let dotted = extension(&input.named).map_or(String::new(), |e| format!(".{e}"));
        let ext = dotted.as_str();
        let registered = match input.format {
            Format::Csv => {
                let csv = CsvReadOptions {
                    has_header: input.header,
                    delimiter: input.delimiter,
                    file_extension: ext,
                    ..CsvReadOptions::default()
                };
                ctx.register_csv(TABLE, &table_path, csv).await
            }
            Format::Parquet => {
                ctx.register_parquet(
                    TABLE,
                    &table_path,
                    ParquetReadOptions { file_extension: ext, ..Default::default() },
                )
                .await
            }
            Format::Json => {
                ctx.register_json(TABLE, &table_path, NdJsonReadOptions { file_extension: ext, ..Default::default() })
                    .await
            }
            Format::Arrow => {
                ctx.register_arrow(TABLE, &table_path, ArrowReadOptions { file_extension: ext, ..Default::default() })
                    .await
            }
            Format::Avro => {
                ctx.register_avro(TABLE, &table_path, AvroReadOptions { file_extension: ext, ..Default::default() })
                    .await
            }
        };
        registered.map_err(|e| match e.find_root() {
            DataFusionError::ObjectStore(s) => store_error(&input.named, s),
            _ => QueryError::Failed(format!(
                "reading {} as {}: {}",
                input.named,
                input.format,
                one_line(&e.strip_backtrace())
            )),
        })?;
        Ok(Session { ctx })
    }

    /// Check `sql` without running it: it must parse, be one query (no DDL, DML or
    /// statements) and name only columns `data` has. Returns the result's schema.
    ///
    /// # Errors
    /// [`QueryError::BadQuery`].
    pub async fn plan(&self, sql: &str) -> Result<arrow_schema::SchemaRef, QueryError> {
        let frame = self.frame(sql).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    async fn frame(&self, sql: &str) -> Result<datafusion::dataframe::DataFrame, QueryError> {
        let only_queries = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        self.ctx.sql_with_options(sql, only_queries).await.map_err(plan_error)
    }

    /// Run `sql`, streaming its result into `sink` (when given) and keeping its first
    /// `show` rows.
    ///
    /// # Errors
    /// [`QueryError`]: a bad query, a failure while running or while writing.
    pub async fn run(&self, sql: &str, sink: Option<&Sink>, show: usize, options: &Options) -> Result<Ran, QueryError> {
        let frame = self.frame(sql).await?;
        let mut stream = frame.execute_stream().await.map_err(run_error)?;
        let schema = stream.schema();
        let mut writer = match sink {
            Some(sink) => Some(sink.open(&schema)?),
            None => None,
        };
        let (mut rows, mut shown, mut kept) = (0u64, Vec::new(), 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(run_error)?;
            if kept < show {
                let take = (show - kept).min(batch.num_rows());
                shown.push(batch.slice(0, take));
                kept += take;
            }
            rows += batch.num_rows() as u64;
            match writer.as_mut() {
                Some(writer) => writer.write(&batch)?,
                None if kept >= show => break,
                None => {}
            }
        }
        if let (Some(writer), Some(sink)) = (writer, sink) {
            sink.finish(writer, options).await?;
        }
        Ok(Ran { rows, shown })
    }
}

/// A byte count as `--memory-limit` takes it: a number, optionally with `K`, `M` or `G`
/// (powers of 1024, an optional `B` or `iB` after).
///
/// # Errors
/// A one-line reason.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: usize = digits.trim().parse().map_err(|_| format!("{s:?} is not a byte count (like 268435456 or 256M)"))?;
    n.checked_mul(1 << shift).filter(|n| *n > 0).ok_or_else(|| format!("{s:?} is not a positive byte count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name_and_extension() {
        assert_eq!(Format::of("a/b.CSV", None).ok(), Some(Format::Csv));
        assert_eq!(Format::of("s3://b/x.ndjson", None).ok(), Some(Format::Json));
        assert_eq!(Format::of("x.arrow", None).ok(), Some(Format::Arrow));
        assert_eq!(Format::of("x.data", Some("parquet")).ok(), Some(Format::Parquet));
        assert!(matches!(Format::of("x.xls", None), Err(QueryError::UnknownFormat(_))));
        assert!(matches!(Format::of("dir.d/x", None), Err(QueryError::NoExtension(_))));
        assert!(matches!(Format::of("x.csv", Some("xml")), Err(QueryError::UnknownFormat(_))));
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("8kB"), Ok(8 << 10));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
