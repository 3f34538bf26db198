//! Dead letters: a message that can never be processed is copied, payload as is, to the
//! dead-letter topic with the reason in its headers, then recorded in `dead_letters`.
//! Only after both may its offset be committed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shardflow_store::{DeadLetterRow, Index, IndexError, Retry, unix_now};

/// Why a dead letter could not be recorded (both causes may pass: retry).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The dead-letter topic refused the copy.
    #[error("dead-letter topic: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// ClickHouse refused the row.
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl DeadLetterError {
    /// What the failure means (a dead letter is retried whatever it says: there is
    /// nowhere else to put the message; this is for logs and metrics).
    pub fn retry(&self) -> Retry {
        match self {
            Self::Kafka(_) => Retry::Unavailable,
            Self::Index(e) => e.retry(),
        }
    }
}

/// Where a dead letter came from: the source topic, partition and offset.
type Origin = (String, i32, i64);

/// Where dead letters go.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    index: Index,
    worker: String,
    /// Dead letters on the topic whose table row is not inserted yet: a retry inserts
    /// the row without sending the message again.
    sent: Arc<Mutex<HashSet<Origin>>>,
}

impl DeadLetters {
    /// Dead letters sent with `producer` to `topic` (`<topic><suffix>`) and recorded in
    /// `index`'s `dead_letters`, by `worker` (host/pid).
    pub fn new(producer: FutureProducer, topic: String, index: Index, worker: String) -> Self {
        Self { producer, topic, index, worker, sent: Arc::default() }
    }

    /// Copy `message` to the dead-letter topic and record it; `job_id` and `chunk` are
    /// what its headers said (empty and -1 when they said nothing). Called again for the
    /// same message after the table insert failed, it only inserts the row.
    ///
    /// # Errors
    /// [`DeadLetterError`]; the message must then not be committed.
    pub async fn record(
        &self,
        message: &BorrowedMessage<'_>,
        job_id: &str,
        chunk: i64,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let headers = message.headers().map(|h| h.detach()).unwrap_or_default();
        let letter = Letter {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload().unwrap_or_default(),
            headers,
        };
        self.send_and_insert(&letter, job_id, chunk, reason).await
    }

    /// Dead-letter a row of a batch that ClickHouse refused: `payload` stands for it (the
    /// sink sends the row as JSON), `partition` is where it was read; its offset is not
    /// kept in a batch, so the letter carries `offset` as given (-1 when unknown) and
    /// `key` tells rows apart.
    ///
    /// # Errors
    /// As [`DeadLetters::record`].
    pub async fn record_row(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: &[u8],
        payload: &[u8],
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let letter = Letter { topic, partition, offset, key: Some(key), payload, headers: OwnedHeaders::new() };
        self.send_and_insert(&letter, "", -1, reason).await
    }

    async fn send_and_insert(
        &self,
        letter: &Letter<'_>,
        job_id: &str,
        chunk: i64,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let origin: Origin = (letter.topic.to_string(), letter.partition, letter.offset);
        let origin_key = letter.key.map(<[u8]>::to_vec);
        let sent_before = self.sent.lock().is_ok_and(|s| s.contains(&origin) && letter.offset >= 0);
        if !sent_before {
            let (partition, offset) = (letter.partition.to_string(), letter.offset.to_string());
            let headers = letter
                .headers
                .clone()
                .insert(Header { key: "dlq.error", value: Some(reason) })
                .insert(Header { key: "dlq.topic", value: Some(letter.topic) })
                .insert(Header { key: "dlq.partition", value: Some(&partition) })
                .insert(Header { key: "dlq.offset", value: Some(&offset) });
            let mut record = FutureRecord::to(&self.topic).payload(letter.payload).headers(headers);
            if let Some(key) = origin_key.as_deref() {
                record = record.key(key);
            }
            self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| DeadLetterError::Kafka(e))?;
            if let Ok(mut sent) = self.sent.lock() {
                let _ = sent.insert(origin.clone());
            }
        }
        let row = DeadLetterRow {
            topic: letter.topic.to_string(),
            partition: letter.partition,
            offset: letter.offset,
            job_id: job_id.to_string(),
            chunk,
            error: reason.to_string(),
            payload: letter.payload.to_vec(),
            worker: self.worker.clone(),
            created_at: unix_now(),
        };
        self.index.insert_dead_letter(&row).await?;
        if let Ok(mut sent) = self.sent.lock() {
            let _ = sent.remove(&origin);
        }
        tracing::error!(%reason, "dead-lettered");
        Ok(())
    }
}

/// A dead letter in the making.
struct Letter<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: OwnedHeaders,
}

/// Who this process is, for the records it writes: host/pid.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}", std::process::id())
}
