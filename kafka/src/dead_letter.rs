//! Dead letters: a message that can never be processed is copied, payload as is, to the
//! dead-letter topic with the reason in its headers, then recorded in `dead_letters`.
//! Only after both may its offset be committed.

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shardflow_store::unix_now;
use shardflow_store::{DeadLetterRow, Index, IndexError};

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

/// Where dead letters go.
#[derive(Clone)]
pub struct DeadLetters {
    /// Producer for the dead-letter topic.
    pub producer: FutureProducer,
    /// `<topic><suffix>`.
    pub topic: String,
    /// The index holding `dead_letters`.
    pub index: Index,
    /// Which worker gives up (host/pid).
    pub worker: String,
}

impl DeadLetters {
    /// Copy `message` to the dead-letter topic and record it; `job_id` and `chunk` are
    /// what its headers said (empty and -1 when they said nothing).
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
        let (partition, offset) = (message.partition().to_string(), message.offset().to_string());
        let headers = message
            .headers()
            .map(|h| h.detach())
            .unwrap_or_default()
            .insert(Header { key: "dlq.error", value: Some(reason) })
            .insert(Header { key: "dlq.topic", value: Some(message.topic()) })
            .insert(Header { key: "dlq.partition", value: Some(&partition) })
            .insert(Header { key: "dlq.offset", value: Some(&offset) });
        let payload = message.payload().unwrap_or_default();
        let mut record = FutureRecord::to(&self.topic).payload(payload).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| DeadLetterError::Kafka(e))?;
        let row = DeadLetterRow {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            job_id: job_id.to_string(),
            chunk,
            error: reason.to_string(),
            payload: payload.to_vec(),
            worker: self.worker.clone(),
            created_at: unix_now(),
        };
        self.index.insert_dead_letter(&row).await?;
        tracing::error!(%reason, "dead-lettered");
        Ok(())
    }
}

/// Who this process is, for the records it writes: host/pid.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}", std::process::id())
}
