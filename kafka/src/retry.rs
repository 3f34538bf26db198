//! The one retry policy of the consumers (the chunk worker and the game-rounds sink): what
//! a failure means is decided from the typed error ([`Retry`], from `shardflow-store`),
//! how long to wait and when to give up from [`Policy`]; and while a message waits for its
//! retry, the member's partitions are paused and the consumer keeps being polled
//! ([`Paused`]), so that a slow dependency never gets the member evicted from its group.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use shardflow_config::ConsumerConfig;
use tokio::sync::watch;
use tracing::{info, warn};

pub use shardflow_store::Retry;

/// Backoff and the cap on attempts, from `consumer.retry_backoff`,
/// `consumer.retry_backoff_max` and `consumer.retry_max_attempts`.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Attempts of a message whose failures are [`Retry::Transient`] before it is given up.
    pub max_attempts: NonZeroU32,
    /// First wait.
    pub backoff: Duration,
    /// Longest wait (the wait doubles up to this).
    pub backoff_max: Duration,
}

impl Policy {
    /// The policy the configuration sets.
    pub fn new(config: &ConsumerConfig) -> Self {
        Self {
            max_attempts: config.retry_max_attempts,
            backoff: config.retry_backoff,
            backoff_max: config.retry_backoff_max,
        }
    }

    /// The attempts of one message, none made yet.
    pub fn attempts(&self) -> Attempts {
        Attempts { policy: *self, counted: 0, wait: self.backoff }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    Wait(Duration),
    /// Never try again: dead-letter the message with this reason.
    GiveUp(String),
}

/// The attempts made at one message.
#[derive(Clone, Debug)]
pub struct Attempts {
    policy: Policy,
    /// Failures that count against the cap (the transient ones).
    counted: u32,
    wait: Duration,
}

impl Attempts {
    /// An attempt failed with `error`, which `retry` classifies: wait, or give up.
    ///
    /// A [`Retry::Unavailable`] failure does not count against the cap: it says nothing
    /// about the message, and giving messages up while a service is down would empty
    /// the topic into the dead-letter queue (whose table needs the same ClickHouse).
    pub fn failed(&mut self, retry: Retry, error: &dyn std::fmt::Display) -> Next {
        match retry {
            Retry::Permanent => return Next::GiveUp(error.to_string()),
            Retry::Transient => {
                self.counted += 1;
                if self.counted >= self.policy.max_attempts.get() {
                    return Next::GiveUp(format!("failed after {} attempts: {error}", self.counted));
                }
            }
            Retry::Unavailable => {}
        }
        let wait = self.wait;
        self.wait = (self.wait * 2).min(self.policy.backoff_max);
        Next::Wait(wait)
    }

    /// A wait before another attempt at something that must succeed in the end (a dead
    /// letter: there is nowhere else to put the message), without a cap.
    pub fn backoff(&mut self) -> Duration {
        let wait = self.wait;
        self.wait = (self.wait * 2).min(self.policy.backoff_max);
        wait
    }
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The backoff passed.
    Elapsed,
    /// Shutdown came first.
    Shutdown,
}

/// How often a paused consumer is polled: far below `max.poll.interval.ms`, and often
/// enough to serve a rebalance promptly.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// A member waiting to retry a message: every assigned partition paused, the consumer
/// still polled (so librdkafka sees the application alive and serves rebalances), and
/// [`Paused::resume`] to go on.
///
/// Pausing bumps librdkafka's version barrier, so messages fetched before it are dropped
/// from the queue and fetched again on resume, from the position after the last message
/// handed to the application. A message that arrives anyway (from a partition assigned
/// during the wait) is not processed: its partition is paused too and sought back to it
/// on resume, so it is delivered again.
pub struct Paused<'a, C: ConsumerContext + 'static> {
    consumer: &'a StreamConsumer<C>,
    rewind: BTreeMap<(String, i32), i64>,
}

impl<C: ConsumerContext + 'static> std::fmt::Debug for Paused<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paused").field("rewind", &self.rewind).finish_non_exhaustive()
    }
}

impl<'a, C: ConsumerContext + 'static> Paused<'a, C> {
    /// Pause every partition assigned to `consumer`.
    pub fn pause(consumer: &'a StreamConsumer<C>) -> Self {
        match consumer.assignment() {
            Ok(assigned) => {
                if let Err(e) = consumer.pause(&assigned) {
                    warn!(error = %e, "could not pause the partitions");
                }
            }
            Err(e) => warn!(error = %e, "no assignment to pause"),
        }
        Self { consumer, rewind: BTreeMap::new() }
    }

    /// Wait `delay`, polling the consumer meanwhile.
    pub async fn wait(&mut self, delay: Duration, shutdown: &mut watch::Receiver<bool>) -> Waited {
        let deadline = tokio::time::Instant::now() + delay;
        let consumer = self.consumer;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Waited::Elapsed;
            }
            // A fresh recv() polls librdkafka at once; it is dropped after POLL_EVERY at
            // most, so the queue is polled at least that often even when nothing arrives.
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return Waited::Shutdown,
                () = tokio::time::sleep((deadline - now).min(POLL_EVERY)) => {}
                received = consumer.recv() => match received {
                    Ok(message) => self.hold_back(&message),
                    Err(e) => warn!(error = %e, "receive failed while paused"),
                },
            }
        }
    }

    /// A message that arrived during the wait: pause its partition and read it again on
    /// resume.
    fn hold_back(&mut self, message: &BorrowedMessage<'_>) {
        let key = (message.topic().to_string(), message.partition());
        let offset = self.rewind.entry(key).or_insert(message.offset());
        *offset = (*offset).min(message.offset());
        let mut list = TopicPartitionList::new();
        list.add_partition(message.topic(), message.partition());
        if let Err(e) = self.consumer.pause(&list) {
            warn!(error = %e, partition = message.partition(), "could not pause");
        }
    }

    /// Whether `partition` of `topic` is still assigned to this member (a rebalance during
    /// the wait may have given it to another, which then handles the message).
    pub fn holds(&self, topic: &str, partition: i32) -> bool {
        self.consumer.assignment().is_ok_and(|a| a.find_partition(topic, partition).is_some())
    }

    /// Resume every assigned partition and seek those that delivered messages during the
    /// wait back to them. `done` is the message that waited, if it is now durable: a
    /// redelivery of it that arrived meanwhile is not read again.
    pub fn resume(self, done: Option<&BorrowedMessage<'_>>) {
        let assigned = match self.consumer.assignment() {
            Ok(assigned) => assigned,
            Err(e) => {
                warn!(error = %e, "no assignment to resume");
                return;
            }
        };
        if let Err(e) = self.consumer.resume(&assigned) {
            warn!(error = %e, "could not resume the partitions");
        }
        for ((topic, partition), mut offset) in self.rewind {
            if let Some(done) = done.filter(|d| d.topic() == topic && d.partition() == partition) {
                offset = offset.max(done.offset() + 1);
            }
            if assigned.find_partition(&topic, partition).is_none() {
                continue;
            }
            match self.consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(10)) {
                Ok(()) => info!(partition, offset, "read again after the pause"),
                Err(e) => warn!(error = %e, partition, offset, "seek after the pause failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> Policy {
        Policy {
            max_attempts: NonZeroU32::new(max).expect("non-zero"),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
        }
    }

    #[test]
    fn transient_failures_are_capped_and_outages_are_not() {
        let mut a = policy(3).attempts();
        assert_eq!(a.failed(Retry::Transient, &"x"), Next::Wait(Duration::from_millis(100)));
        // An outage does not count, and the backoff keeps growing to its maximum.
        for _ in 0..10 {
            assert!(matches!(a.failed(Retry::Unavailable, &"down"), Next::Wait(_)));
        }
        assert_eq!(a.failed(Retry::Transient, &"x"), Next::Wait(Duration::from_millis(300)));
        assert_eq!(a.failed(Retry::Transient, &"disk"), Next::GiveUp("failed after 3 attempts: disk".into()));
    }

    #[test]
    fn permanent_failures_give_up_at_once() {
        let mut a = policy(10).attempts();
        assert_eq!(a.failed(Retry::Permanent, &"code 117"), Next::GiveUp("code 117".into()));
        assert_eq!(
            policy(1).attempts().failed(Retry::Transient, &"e"),
            Next::GiveUp("failed after 1 attempts: e".into())
        );
    }
}
