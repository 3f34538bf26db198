//! Where a result goes: a writer of one format over a local file, streamed batch by batch.
//! A local output is written beside its name under a hidden temporary name and renamed
//! into place when complete; a remote one is written to a local temporary file, then
//! uploaded in parts (object_store's multipart `BufWriter`) and the file removed, so a
//! reader never sees a partial file or object and memory stays bounded by a batch.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::arrow::csv::Writer as CsvWriter;
use datafusion::arrow::ipc::writer::FileWriter as IpcWriter;
use datafusion::arrow::json::LineDelimitedWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use shardflow_storage::objects::{Options, Patience};

use crate::{Format, Place, QueryError, one_line, store_error};

/// Rows per Parquet row group: a row group is buffered, encoded, before it is written.
const ROW_GROUP_ROWS: usize = 1 << 17;

/// Where and how to write a result.
#[derive(Clone, Debug)]
pub struct Sink {
    named: String,
    place: Place,
    format: Format,
}

/// One format's writer over the temporary file.
pub(crate) enum Writer {
    Csv(Box<CsvWriter<BufWriter<File>>>),
    Json(Box<LineDelimitedWriter<BufWriter<File>>>),
    Arrow(Box<IpcWriter<BufWriter<File>>>),
    Parquet(Box<ArrowWriter<File>>),
    Avro(Box<arrow_avro::writer::AvroWriter<BufWriter<File>>>),
}

/// An open writer and the temporary file it writes.
pub(crate) struct Open {
    writer: Writer,
    temporary: Temporary,
}

/// A temporary file, removed when dropped unless it was renamed into place.
struct Temporary(Option<PathBuf>);

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Sink {
    /// The output `named` (path or URL), its format `given` by name or else told by its
    /// extension.
    ///
    /// # Errors
    /// [`QueryError::UnknownFormat`], [`QueryError::NoExtension`] or
    /// [`QueryError::BadLocation`].
    pub fn new(named: &str, given: Option<&str>) -> Result<Sink, QueryError> {
        let place = Place::parse(named)?;
        let format = Format::of(named, given)?;
        Ok(Sink { named: named.to_string(), place, format })
    }

    /// The output's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The output as named.
    pub fn named(&self) -> &str {
        &self.named
    }

    fn failed(&self, reason: impl std::fmt::Display) -> QueryError {
        QueryError::Write { location: self.named.clone(), reason: one_line(&reason.to_string()) }
    }

    /// Open the writer for a result of `schema`.
    pub(crate) fn open(&self, schema: &SchemaRef) -> Result<Open, QueryError> {
        let path = match &self.place {
            Place::Local(path) => {
                let dir = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                std::fs::create_dir_all(&dir).map_err(|e| self.failed(e))?;
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                dir.join(shardflow_storage::temporary_name(&name))
            }
            Place::Remote { .. } => {
                std::env::temp_dir().join(format!("shardflow-convert-{}.{}", uuid::Uuid::now_v7(), self.format))
            }
        };
        let file = File::create(&path).map_err(|e| self.failed(e))?;
        let temporary = Temporary(Some(path));
        let writer = match self.format {
            Format::Csv => Writer::Csv(Box::new(CsvWriter::new(BufWriter::new(file)))),
            Format::Json => Writer::Json(Box::new(LineDelimitedWriter::new(BufWriter::new(file)))),
            Format::Arrow => {
                Writer::Arrow(Box::new(IpcWriter::try_new(BufWriter::new(file), schema).map_err(|e| self.failed(e))?))
            }
            Format::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_size(ROW_GROUP_ROWS)
                    .build();
                let writer =
                    ArrowWriter::try_new(file, schema.clone(), Some(properties)).map_err(|e| self.failed(e))?;
                Writer::Parquet(Box::new(writer))
            }
            Format::Avro => {
                // Avro has fewer types and stricter names: the chunk codec's wire form.
                let empty = RecordBatch::new_empty(schema.clone());
                let wire = shardflow_schemas::ocf::wire_batch(&empty).map_err(|e| self.failed(e))?.schema();
                let writer = arrow_avro::writer::AvroWriter::new(BufWriter::new(file), wire.as_ref().clone())
                    .map_err(|e| self.failed(e))?;
                Writer::Avro(Box::new(writer))
            }
        };
        Ok(Open { writer, temporary })
    }

    /// Complete the file and put it in place: renamed, or uploaded and removed.
    pub(crate) async fn finish(&self, open: Open, options: &Options) -> Result<(), QueryError> {
        let Open { writer, mut temporary } = open;
        writer.finish().map_err(|e| self.failed(e))?;
        let path = temporary.0.clone().ok_or_else(|| self.failed("no temporary file"))?;
        match &self.place {
            Place::Local(target) => {
                std::fs::rename(&path, target).map_err(|e| self.failed(e))?;
                temporary.0 = None;
                Ok(())
            }
            Place::Remote { url, key } => {
                let store = Place::store(url, options, Patience::Command)?;
                upload(&path, store, key).await.map_err(|e| match e {
                    Upload::Store(e) => store_error(&self.named, &e),
                    Upload::Io(e) => self.failed(e),
                })
            }
        }
    }
}

impl Open {
    /// Write one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), QueryError> {
        let failed = |e: String| QueryError::Write { location: "the output".into(), reason: one_line(&e) };
        match &mut self.writer {
            Writer::Csv(w) => w.write(batch).map_err(|e| failed(e.to_string())),
            Writer::Json(w) => w.write(batch).map_err(|e| failed(e.to_string())),
            Writer::Arrow(w) => w.write(batch).map_err(|e| failed(e.to_string())),
            Writer::Parquet(w) => w.write(batch).map_err(|e| failed(e.to_string())),
            Writer::Avro(w) => {
                let wire = shardflow_schemas::ocf::wire_batch(batch).map_err(|e| failed(e.to_string()))?;
                w.write(&wire).map_err(|e| failed(e.to_string()))
            }
        }
    }
}

impl Writer {
    /// Write what is buffered and the format's footer; flush and sync the file.
    fn finish(self) -> Result<(), String> {
        fn text(e: &impl std::fmt::Display) -> String {
            e.to_string()
        }
        let file = match self {
            Writer::Csv(w) => w.into_inner().into_inner().map_err(|e| text(&e))?,
            Writer::Json(mut w) => {
                w.finish().map_err(|e| text(&e))?;
                w.into_inner().into_inner().map_err(|e| text(&e))?
            }
            Writer::Arrow(mut w) => {
                w.finish().map_err(|e| text(&e))?;
                w.into_inner().map_err(|e| text(&e))?.into_inner().map_err(|e| text(&e))?
            }
            Writer::Parquet(w) => w.into_inner().map_err(|e| text(&e))?,
            Writer::Avro(mut w) => {
                w.finish().map_err(|e| text(&e))?;
                w.into_inner().into_inner().map_err(|e| text(&e))?
            }
        };
        file.sync_all().map_err(|e| text(&e))
    }
}

enum Upload {
    Store(object_store::Error),
    Io(std::io::Error),
}

/// Copy the file at `path` to `key`, in parts, through object_store's `BufWriter`: the
/// object appears whole when the upload completes, or not at all.
async fn upload(
    path: &Path,
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    key: &object_store::path::Path,
) -> Result<(), Upload> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::open(path).await.map_err(Upload::Io)?;
    let mut writer = object_store::buffered::BufWriter::new(store, key.clone());
    let copied = tokio::io::copy(&mut file, &mut writer).await;
    if let Err(e) = copied {
        let _ = writer.abort().await;
        return Err(into_upload(e));
    }
    writer.shutdown().await.map_err(into_upload)
}

/// An I/O error from object_store's `BufWriter`, its store error back when it holds one.
fn into_upload(e: std::io::Error) -> Upload {
    if !e.get_ref().is_some_and(|inner| inner.is::<object_store::Error>()) {
        return Upload::Io(e);
    }
    match e.into_inner().map(|inner| inner.downcast::<object_store::Error>()) {
        Some(Ok(store)) => Upload::Store(*store),
        _ => Upload::Io(std::io::Error::other("the upload failed")),
    }
}
