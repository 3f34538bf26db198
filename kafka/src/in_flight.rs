//! The one bounded publisher both pipelines send through: at most `max_in_flight` messages
//! wait for their delivery report at once, so a slow broker slows the sender instead of
//! growing its memory, and nothing is reported sent before the broker acknowledged it.

use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

type Delivery<'a> = Pin<Box<dyn Future<Output = Result<u64, KafkaError>> + Send + 'a>>;

/// How long a message may wait in the producer's queue (queue-full is retried inside
/// `send` until then: backpressure, not failure).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(300);

/// A message to send: its key, payload and headers, owned until it is acknowledged.
#[derive(Debug)]
pub struct Outgoing {
    /// The message key (it picks the partition).
    pub key: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Headers, if any.
    pub headers: Option<OwnedHeaders>,
    /// What the message counts for once acknowledged (rows, or 1).
    pub weight: u64,
}

/// Messages on their way to one topic, at most `max_in_flight` unacknowledged.
pub struct InFlight<'a> {
    producer: &'a FutureProducer,
    topic: &'a str,
    max_in_flight: usize,
    pending: FuturesUnordered<Delivery<'a>>,
    acknowledged: u64,
    on_ack: Box<dyn Fn(u64) + Send + Sync + 'a>,
}

impl<'a> InFlight<'a> {
    /// Send through `producer` to `topic`, `max_in_flight` (at least 1) at a time.
    pub fn new(producer: &'a FutureProducer, topic: &'a str, max_in_flight: usize) -> Self {
        Self {
            producer,
            topic,
            max_in_flight: max_in_flight.max(1),
            pending: FuturesUnordered::new(),
            acknowledged: 0,
            on_ack: Box::new(|_| {}),
        }
    }

    /// Call `on_ack` with each acknowledged message's weight (a progress bar, say).
    #[must_use]
    pub fn on_ack(mut self, on_ack: impl Fn(u64) + Send + Sync + 'a) -> Self {
        self.on_ack = Box::new(on_ack);
        self
    }

    /// Queue `message`, then wait while `max_in_flight` messages are unacknowledged.
    ///
    /// # Errors
    /// The first delivery failure seen while waiting: stop sending, then [`finish`](Self::finish).
    pub async fn send(&mut self, message: Outgoing) -> Result<(), KafkaError> {
        let (producer, topic) = (self.producer, self.topic);
        self.pending.push(Box::pin(async move {
            let Outgoing { key, payload, headers, weight } = message;
            let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
            producer.send(record, QUEUE_TIMEOUT).await.map(|_| weight).map_err(|(e, _)| e)
        }));
        while self.pending.len() >= self.max_in_flight {
            if let Some(delivered) = self.pending.next().await {
                self.acknowledge(delivered?);
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, weight: u64) {
        self.acknowledged += weight;
        (self.on_ack)(weight);
    }

    /// Wait for every message still unacknowledged. Returns the weight acknowledged in all,
    /// and the first failure, if any.
    pub async fn finish(mut self) -> (u64, Result<(), KafkaError>) {
        let mut failure = Ok(());
        while let Some(delivered) = self.pending.next().await {
            match delivered {
                Ok(weight) => self.acknowledge(weight),
                Err(e) => {
                    if failure.is_ok() {
                        failure = Err(e);
                    }
                }
            }
        }
        (self.acknowledged, failure)
    }
}
