//! The game-rounds pipeline's producer half: read an uploaded CSV as a stream (UTF-8, or
//! UTF-16 / UTF-8 with a BOM), map its columns by header name, turn each row into a
//! [`GameRound`] and publish one Confluent-framed Avro message per row on the rounds
//! topic. Rows that cannot be read are counted and kept with their line and reason,
//! never sent and never silently dropped. While reading, the per-hour count and sums are
//! computed from the CSV itself, so that what reaches ClickHouse can be reconciled.

use std::collections::BTreeMap;
use std::fs::File;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::registry::{Registry, RegistryError};
use crate::store::{HourSums, RoundsStore, UploadRow};
use chrono::{DateTime, NaiveDateTime};
use csv::StringRecord;
use encoding_rs_io::DecodeReaderBytes;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use shardflow_config::Config;
use shardflow_kafka as kafka;
use shardflow_kafka::in_flight::{InFlight, Outgoing};
use shardflow_schemas::CodecError;
use shardflow_schemas::rounds::{GAME_ROUND_AVSC, GameRound, RoundCodec};
use shardflow_storage::text::{CutLines, LongRecord, RecordCap, TextError, csv_reader, excerpt, is_null, open_text};
use shardflow_store::{Index, IndexError, UploadStatus};
use shardflow_store::{unix_now, version_now};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The columns a game-rounds CSV must have, in any order (others are ignored).
pub const COLUMNS: [&str; 10] = [
    "created_timestamp",
    "game_instance_id",
    "user_id",
    "game_id",
    "real_amount_bet",
    "bonus_amount_bet",
    "real_amount_win",
    "bonus_amount_win",
    "game_name",
    "provider",
];

/// Bad rows kept with their reason; the rest are only counted.
const BAD_ROW_SAMPLES: usize = 100;

/// Attempts to record an upload's state while the client waits, 0.1 s apart and doubling.
const RECORD_ATTEMPTS: u32 = 5;

/// Why an upload cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be read.
    #[error("cannot read the upload: {0}")]
    Io(#[from] std::io::Error),
    /// Binary content, or text that is neither UTF-8 nor UTF-16.
    #[error("the upload is not a CSV file: {0}")]
    NotCsv(String),
    /// The header line lacks required columns.
    #[error("the CSV header lacks the columns {missing}; it must name {}", COLUMNS.join(", "))]
    MissingColumns {
        /// The missing columns, comma-separated.
        missing: String,
    },
}

/// A row that could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BadRow {
    /// Line in the CSV (the header is line 1).
    pub line: u64,
    /// Why.
    pub reason: String,
}

impl From<TextError> for CsvError {
    fn from(e: TextError) -> Self {
        match e {
            TextError::Io(e) => Self::Io(e),
            TextError::NotText(reason) => Self::NotCsv(reason),
        }
    }
}

/// Reads game rounds from a CSV file, one row at a time, each row at most
/// `max_record_bytes`: a longer one is a bad row, of which only that much was read.
pub struct RoundReader {
    reader: csv::Reader<RecordCap<DecodeReaderBytes<File, Vec<u8>>>>,
    /// Lines of rows cut at the cap, not yet reported.
    cut: CutLines,
    max_record_bytes: u64,
    /// Position of each of [`COLUMNS`] in the file's rows.
    index: [usize; COLUMNS.len()],
    /// Fields in the header: every row must have as many.
    width: usize,
    record: StringRecord,
    upload_id: String,
}

impl RoundReader {
    /// Open `path`, check that it is CSV text and map the header; rows are read up to
    /// `max_record_bytes` each.
    ///
    /// # Errors
    /// [`CsvError`] when the file is not CSV, its header is longer than
    /// `max_record_bytes`, or it lacks columns.
    pub fn open(path: &Path, upload_id: &str, max_record_bytes: u64) -> Result<Self, CsvError> {
        let text = RecordCap::new(open_text(path)?, max_record_bytes, LongRecord::Cut, false);
        let cut = text.cut_lines();
        let mut reader = csv_reader(text);
        let headers = reader.headers().map_err(|e| CsvError::NotCsv(format!("header line: {e}")))?.clone();
        if cut.lock().is_ok_and(|c| c.contains(&1)) {
            return Err(CsvError::NotCsv(format!(
                "the header line is longer than api.max_record_bytes = {max_record_bytes} bytes"
            )));
        }
        let names: Vec<String> =
            headers.iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_lowercase()).collect();
        let mut index = [0; COLUMNS.len()];
        let mut missing = Vec::new();
        for (slot, column) in index.iter_mut().zip(COLUMNS) {
            match names.iter().position(|n| n == column) {
                Some(i) => *slot = i,
                None => missing.push(column),
            }
        }
        if !missing.is_empty() {
            return Err(CsvError::MissingColumns { missing: missing.join(", ") });
        }
        Ok(Self {
            reader,
            cut,
            max_record_bytes,
            index,
            width: names.len(),
            record: StringRecord::new(),
            upload_id: upload_id.to_string(),
        })
    }

    /// The next row: `None` at the end, `Some(Err)` for a row that cannot be read.
    ///
    /// # Errors
    /// An I/O error reading the file ends the upload (the caller records why).
    pub fn next_round(&mut self) -> Result<Option<Result<GameRound, BadRow>>, CsvError> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = self.record.position().map_or(0, csv::Position::line);
                if let Some(bad) = self.was_cut(line) {
                    return Ok(Some(Err(bad)));
                }
                Ok(Some(self.round(line).map_err(|reason| BadRow { line, reason })))
            }
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                match e.into_kind() {
                    csv::ErrorKind::Io(e) => Err(CsvError::Io(e)),
                    kind => Ok(Some(Err(self.was_cut(line).unwrap_or(BadRow { line, reason: describe(&kind) })))),
                }
            }
        }
    }

    /// The bad row for the row at `line` when it was cut at the cap.
    fn was_cut(&self, line: u64) -> Option<BadRow> {
        let mut cut = self.cut.lock().ok()?;
        while cut.front().is_some_and(|&l| l < line) {
            cut.pop_front();
        }
        (cut.front() == Some(&line)).then(|| {
            cut.pop_front();
            BadRow {
                line,
                reason: format!(
                    "the row is longer than api.max_record_bytes = {} bytes (its first bytes were read, the rest skipped)",
                    self.max_record_bytes
                ),
            }
        })
    }

    fn round(&self, line: u64) -> Result<GameRound, String> {
        let (fields, width) = (self.record.len(), self.width);
        if fields != width {
            return Err(format!("expected {width} fields, found {fields}"));
        }
        let field = |i: usize| self.record.get(self.index[i]).unwrap_or("").trim();
        let id = |i: usize| {
            let value = field(i);
            if value.is_empty() { Err(format!("{} is empty", COLUMNS[i])) } else { Ok(value.to_string()) }
        };
        Ok(GameRound {
            upload_id: self.upload_id.clone(),
            line,
            created_timestamp_ms: timestamp(field(0))
                .map_err(|e| format!("created_timestamp {}: {e}", excerpt(field(0))))?,
            game_instance_id: id(1)?,
            user_id: id(2)?,
            game_id: id(3)?,
            real_amount_bet: amount(field(4)).map_err(|e| format!("{}: {e}", COLUMNS[4]))?,
            bonus_amount_bet: amount(field(5)).map_err(|e| format!("{}: {e}", COLUMNS[5]))?,
            real_amount_win: amount(field(6)).map_err(|e| format!("{}: {e}", COLUMNS[6]))?,
            bonus_amount_win: amount(field(7)).map_err(|e| format!("{}: {e}", COLUMNS[7]))?,
            game_name: field(8).to_string(),
            provider: field(9).to_string(),
        })
    }
}

fn describe(kind: &csv::ErrorKind) -> String {
    match kind {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid text in field {}", err.field() + 1),
        other => format!("{other:?}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) or ISO 8601 / RFC 3339 (`2024-01-31T12:00:00Z`,
/// offsets allowed), as milliseconds since the epoch; within what ClickHouse's DateTime holds.
fn timestamp(text: &str) -> Result<i64, String> {
    let ms = if text.contains('T') {
        DateTime::parse_from_rfc3339(text).map_err(|e| e.to_string())?.timestamp_millis()
    } else {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .map_err(|e| format!("{e}; expected YYYY-MM-DD HH:MM:SS or ISO 8601"))?
            .and_utc()
            .timestamp_millis()
    };
    if (0..4_294_967_296_000).contains(&ms) { Ok(ms) } else { Err("outside 1970-01-01 to 2106-02-07".into()) }
}

/// An amount: a null field (`shardflow_storage::text::is_null`) is null; anything else must
/// be a finite number.
fn amount(text: &str) -> Result<Option<f64>, String> {
    if is_null(text) {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        Ok(_) => Err(format!("{} is not finite", excerpt(text))),
        Err(_) => Err(format!("{} is not a number", excerpt(text))),
    }
}

/// Why an upload could not be published.
#[derive(Debug, thiserror::Error)]
pub enum RoundsError {
    /// The file is not a usable CSV.
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// A row could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The broker refused or did not acknowledge a row.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// ClickHouse refused the upload row or the schema.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The reading thread ended without saying how (a defect).
    #[error("{0}")]
    Reader(String),
    /// The Schema Registry refused the schema.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What reading a whole CSV found, beside the rows themselves.
#[derive(Debug, Default)]
struct Summary {
    rows_read: u64,
    bad_rows: u64,
    samples: Vec<BadRow>,
    hourly: BTreeMap<u32, HourSums>,
}

/// Publishes uploads to the rounds topic and records them.
pub struct RoundsPublisher {
    producer: FutureProducer,
    store: RoundsStore,
    codec: RoundCodec,
    topic: String,
    max_in_flight: usize,
    max_record_bytes: u64,
}

impl RoundsPublisher {
    /// Create the topic, number the schema (Schema Registry when configured, else
    /// shardflow's own id kept in ClickHouse) and connect the producer.
    ///
    /// # Errors
    /// When the broker, ClickHouse or the registry refuse.
    pub async fn new(config: &Config, index: Index) -> Result<Self, RoundsError> {
        let store = RoundsStore::new(index);
        let topic = config.game_rounds.topic.clone();
        kafka::ensure_topic(&config.kafka, &topic).await?;
        let subject = format!("{topic}-value");
        let mut codec = RoundCodec::new()?;
        match &config.game_rounds.schema_registry_url {
            None => store.register_schema(codec.schema_id(), &subject, GAME_ROUND_AVSC).await?,
            Some(url) => {
                let id = Registry::new(url.clone()).register(&subject, GAME_ROUND_AVSC).await?;
                codec = codec.with_schema_id(id);
            }
        }
        Ok(Self {
            producer: kafka::bulk_producer(&config.kafka)?,
            store,
            codec,
            topic,
            max_in_flight: 20_000,
            max_record_bytes: config.api.max_record_bytes,
        })
    }

    /// Publish the CSV at `path` (already checked with [`RoundReader::open`]) as upload
    /// `upload_id`, recording its progress in `uploads`. Returns the final upload row once
    /// every row is acknowledged.
    ///
    /// # Errors
    /// [`RoundsError`]; the upload row then says `failed` with the reason.
    pub async fn publish(
        &self,
        upload_id: &str,
        file_name: &str,
        path: &Path,
        bytes: u64,
    ) -> Result<UploadRow, RoundsError> {
        let created_at = unix_now();
        let mut upload = UploadRow {
            upload_id: upload_id.to_string(),
            file_name: file_name.to_string(),
            path: path.display().to_string(),
            status: UploadStatus::Publishing,
            bytes,
            rows_read: 0,
            rows_published: 0,
            bad_rows: 0,
            bad_row_samples: "[]".into(),
            hourly: "[]".into(),
            error: String::new(),
            created_at,
            updated_at: created_at,
            version: version_now(),
        };
        self.store.insert_upload(&upload).await?;
        let (published, outcome) = self.send_rows(upload_id, path.to_path_buf()).await;
        upload.rows_published = published;
        upload.updated_at = unix_now();
        upload.version = version_now();
        match outcome {
            Ok(summary) => {
                upload.status = UploadStatus::Published;
                upload.rows_read = summary.rows_read;
                upload.bad_rows = summary.bad_rows;
                upload.bad_row_samples = serde_json::to_string(&summary.samples).unwrap_or_else(|_| "[]".into());
                let hourly: Vec<&HourSums> = summary.hourly.values().collect();
                upload.hourly = serde_json::to_string(&hourly).unwrap_or_else(|_| "[]".into());
                self.record(&upload).await;
                info!(upload = upload_id, rows = published, bad = upload.bad_rows, "upload published");
                Ok(upload)
            }
            Err(e) => {
                upload.status = UploadStatus::Failed;
                upload.error = e.to_string();
                self.record(&upload).await;
                Err(e)
            }
        }
    }

    /// Record a state reached after rows went out. It is retried, never reported as a
    /// failure of the publish: a few attempts while the client waits (about 3 s), then in
    /// the background until it lands. Until then `GET /uploads/{id}` shows the previous
    /// state; a process that stops first leaves it so.
    async fn record(&self, upload: &UploadRow) {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..RECORD_ATTEMPTS {
            match self.store.insert_upload(upload).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(upload = %upload.upload_id, error = %e, retry_in = ?backoff, "recording the upload failed")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        let (store, upload) = (self.store.clone(), upload.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            while let Err(e) = store.insert_upload(&upload).await {
                warn!(upload = %upload.upload_id, error = %e, retry_in = ?backoff, "recording the upload failed; retrying in the background");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }

    /// Read and encode on a blocking thread, send here with at most `max_in_flight`
    /// messages unacknowledged. Returns the rows acknowledged and what the reader found.
    async fn send_rows(&self, upload_id: &str, path: PathBuf) -> (u64, Result<Summary, RoundsError>) {
        enum Item {
            Rows(Vec<(String, Vec<u8>)>),
            Done(Summary),
            Failed(RoundsError),
        }
        let (tx, mut rx) = mpsc::channel::<Item>(4);
        let codec = self.codec.clone();
        let id = upload_id.to_string();
        let max_record_bytes = self.max_record_bytes;
        let reader = tokio::task::spawn_blocking(move || {
            let read = || -> Result<Summary, RoundsError> {
                let mut rows = RoundReader::open(&path, &id, max_record_bytes)?;
                let mut summary = Summary::default();
                let mut batch = Vec::new();
                while let Some(row) = rows.next_round()? {
                    summary.rows_read += 1;
                    match row {
                        Ok(round) => {
                            let hour = round.hour();
                            summary
                                .hourly
                                .entry(hour)
                                .or_insert_with(|| HourSums { hour, ..HourSums::default() })
                                .add(&round);
                            batch.push((round.game_instance_id.clone(), codec.encode(&round)?));
                        }
                        Err(bad) => {
                            summary.bad_rows += 1;
                            if summary.samples.len() < BAD_ROW_SAMPLES {
                                summary.samples.push(bad);
                            }
                        }
                    }
                    // The sender stops receiving only after a failure, which it reports itself.
                    if batch.len() >= 1024 && tx.blocking_send(Item::Rows(std::mem::take(&mut batch))).is_err() {
                        return Ok(summary);
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.blocking_send(Item::Rows(batch));
                }
                Ok(summary)
            };
            let last = match read() {
                Ok(summary) => Item::Done(summary),
                Err(e) => Item::Failed(e),
            };
            let _ = tx.blocking_send(last);
        });

        let mut in_flight = InFlight::new(&self.producer, &self.topic, self.max_in_flight);
        let mut failure = None;
        let mut summary = None;
        'receive: while let Some(item) = rx.recv().await {
            match item {
                Item::Rows(rows) => {
                    for (key, payload) in rows {
                        if let Err(e) = in_flight.send(Outgoing { key, payload, headers: None, weight: 1 }).await {
                            failure = Some(e.into());
                            break 'receive;
                        }
                    }
                }
                Item::Done(s) => summary = Some(s),
                Item::Failed(e) => failure = Some(e),
            }
        }
        drop(rx);
        let (acknowledged, delivered) = in_flight.finish().await;
        if let Err(e) = delivered {
            failure.get_or_insert(e.into());
        }
        let _ = reader.await;
        let outcome = match (failure, summary) {
            (Some(e), _) => Err(e),
            (None, Some(summary)) => Ok(summary),
            (None, None) => Err(RoundsError::Reader("the CSV reader stopped without a summary".into())),
        };
        (acknowledged, outcome)
    }
}

/// Register the game-round schema under `subject` with a Confluent Schema Registry.
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEADER: &str = "created_timestamp,game_instance_id,user_id,game_id,real_amount_bet,bonus_amount_bet,real_amount_win,bonus_amount_win,game_name,provider";

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write");
        file
    }

    fn utf16_with_bom(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    }

    fn read_all(path: &Path) -> (Vec<GameRound>, Vec<BadRow>) {
        let mut reader = RoundReader::open(path, "u", 1 << 20).expect("open");
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        while let Some(row) = reader.next_round().expect("read") {
            match row {
                Ok(r) => good.push(r),
                Err(b) => bad.push(b),
            }
        }
        (good, bad)
    }

    #[test]
    fn utf16_quotes_nans_and_both_timestamp_forms() {
        let text = format!(
            "{HEADER}\r\n\
             2024-01-31 23:59:59,r1,42,7,1.5,NaN,,0,\"Book of Dead, Deluxe\",Play'n GO\r\n\
             2024-02-01T00:00:00Z,r2,43,8,2,0,3.25,nan,'Reactoonz',\"Play'n GO\"\r\n"
        );
        let file = write(&utf16_with_bom(&text));
        let (good, bad) = read_all(file.path());
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].line, 2);
        assert_eq!(good[0].created_timestamp_ms, 1_706_745_599_000);
        assert_eq!(good[0].game_name, "Book of Dead, Deluxe");
        assert_eq!(good[0].provider, "Play'n GO");
        assert_eq!(
            (good[0].real_amount_bet, good[0].bonus_amount_bet, good[0].real_amount_win),
            (Some(1.5), None, None)
        );
        assert_eq!(good[1].created_timestamp_ms, 1_706_745_600_000);
        assert_eq!(good[1].bonus_amount_win, None);
        assert_eq!(good[1].provider, "Play'n GO");
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let text = "provider,extra,game_name,bonus_amount_win,real_amount_win,bonus_amount_bet,real_amount_bet,game_id,user_id,game_instance_id,created_timestamp\n\
                    NetEnt,x,Starburst,1,2,3,4,g,u1,r9,2024-03-01 10:00:00\n";
        let file = write(text.as_bytes());
        let (good, bad) = read_all(file.path());
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good[0].provider, "NetEnt");
        assert_eq!(good[0].real_amount_bet, Some(4.0));
        assert_eq!(good[0].bonus_amount_win, Some(1.0));
        assert_eq!(good[0].game_instance_id, "r9");
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let text = format!(
            "{HEADER}\n\
             2024-01-01 00:00:00,r1,1,7,1,1,1,1,A,B\n\
             yesterday,r2,1,7,1,1,1,1,A,B\n\
             2024-01-01 00:00:00,r3,,7,1,1,1,1,A,B\n\
             2024-01-01 00:00:00,r4,1,7,lots,1,1,1,A,B\n\
             2024-01-01 00:00:00,r5,1,7\n\
             2024-01-01 00:00:00,r6,1,7,inf,1,1,1,A,B\n\
             2024-01-01 00:00:00,r7,1,7,1,1,1,1,A,B\n"
        );
        let file = write(text.as_bytes());
        let (good, bad) = read_all(file.path());
        assert_eq!(good.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 8]);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
        assert!(bad[0].reason.starts_with("created_timestamp"), "{}", bad[0].reason);
        assert_eq!(bad[1].reason, "user_id is empty");
        assert!(bad[2].reason.contains("not a number"), "{}", bad[2].reason);
        assert_eq!(bad[3].reason, "expected 10 fields, found 4");
        assert!(bad[4].reason.contains("not finite"), "{}", bad[4].reason);
    }

    #[test]
    fn a_row_longer_than_the_cap_is_one_bad_row_with_a_short_reason() {
        let long = "9".repeat(5000);
        let text = format!(
            "{HEADER}\n2024-01-01 00:00:00,r1,1,7,{long},1,1,1,A,B\n2024-01-01 00:00:00,r2,1,7,{long}x,1,1,1,A,B\n\
             2024-01-01 00:00:00,r3,1,7,1,1,1,1,A,B\n"
        );
        let file = write(text.as_bytes());
        let mut reader = RoundReader::open(file.path(), "u", 1000).expect("open");
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        while let Some(row) = reader.next_round().expect("read") {
            match row {
                Ok(r) => good.push(r),
                Err(b) => bad.push(b),
            }
        }
        assert_eq!(good.iter().map(|r| r.line).collect::<Vec<_>>(), vec![4]);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 3]);
        assert!(bad.iter().all(|b| b.reason.contains("max_record_bytes = 1000")), "{bad:?}");
        // Under the cap, a bad value is quoted only in part.
        let reader = RoundReader::open(file.path(), "u", 1 << 20).map(|mut r| r.next_round());
        let Ok(Ok(Some(Err(bad)))) = reader else { panic!("a bad row") };
        assert!(bad.reason.contains("is not finite") || bad.reason.contains("not a number"), "{}", bad.reason);
        assert!(bad.reason.len() < 300, "{}", bad.reason);
    }

    #[test]
    fn binary_and_headerless_files_are_refused() {
        let png = write(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01");
        assert!(matches!(RoundReader::open(png.path(), "u", 1 << 20), Err(CsvError::NotCsv(_))));
        let empty = write(b"");
        assert!(matches!(RoundReader::open(empty.path(), "u", 1 << 20), Err(CsvError::NotCsv(_))));
        let other = write(b"a,b,c\n1,2,3\n");
        let err = RoundReader::open(other.path(), "u", 1 << 20).err().expect("missing columns");
        assert!(matches!(err, CsvError::MissingColumns { .. }));
        assert!(err.to_string().contains("created_timestamp"), "{err}");
    }
}
