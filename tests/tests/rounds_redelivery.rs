//! Nothing doubled when game rounds are delivered again: a second sink, in a group of its
//! own, reads the whole topic after the first sink stored it. `game_rounds` read with
//! `FINAL` holds each row once, and the hourly view, computed from those rows, keeps the
//! same sums.

use shardflow_testkit::dataset as common;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use shardflow_testkit::{TestEnv, eventually};

const ROWS: usize = 30_000;

/// Rows and cents of real bets in the hourly view.
async fn view_totals(env: &TestEnv) -> (u64, u64) {
    (
        env.count("SELECT sum(rounds) FROM hourly_aggregated_game_rounds").await,
        env.count("SELECT toUInt64(round(sum(total_real_amount_bet) * 100)) FROM hourly_aggregated_game_rounds").await,
    )
}

/// Whether `group` has committed every partition of `topic` up to its end.
fn caught_up(brokers: &str, group: &str, topic: &str, partitions: i32) -> bool {
    let Ok(consumer) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(5)) else { return false };
    (0..partitions).all(|p| {
        let high = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).map(|(_, high)| high);
        let done = committed.find_partition(topic, p).map(|e| e.offset());
        match (high, done) {
            (Ok(0), _) => true,
            (Ok(high), Some(Offset::Offset(done))) => done >= high,
            _ => false,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_delivery_of_every_round_inserts_nothing() {
    let env = TestEnv::with("rounds_redelivery", |c| {
        c.game_rounds.batch_rows = shardflow_testkit::nz(4_000);
        c.game_rounds.flush_interval = Duration::from_millis(200);
    });
    let base = common::serve_api(&env.config).await;
    let first = common::rounds_sink(&env.config_path, None);
    let upload = common::upload_csv(&base, common::rounds_csv(ROWS).as_bytes()).await;
    assert_eq!(upload["rows_published"], ROWS as u64, "{upload}");
    let id = upload["upload_id"].as_str().expect("id").to_string();
    common::reconciled(&base, &id, Duration::from_secs(120)).await;
    drop(first);
    let before = eventually("the hourly view to count every row", Duration::from_secs(30), || async {
        let totals = view_totals(&env).await;
        (totals.0 == ROWS as u64).then_some(totals)
    })
    .await;

    let again = format!("{}.again", env.config.game_rounds.group_id);
    let _second = common::rounds_sink(&env.config_path, Some(&again));
    let (brokers, topic, partitions) =
        (env.config.kafka.brokers.clone(), env.config.game_rounds.topic.clone(), env.config.kafka.partitions);
    eventually("the second sink to read and commit the whole topic", Duration::from_secs(120), || {
        let (brokers, topic, group) = (brokers.clone(), topic.clone(), again.clone());
        async move {
            tokio::task::spawn_blocking(move || caught_up(&brokers, &group, &topic, partitions))
                .await
                .ok()?
                .then_some(())
        }
    })
    .await;

    assert_eq!(env.count("SELECT count() FROM game_rounds FINAL").await, ROWS as u64, "a row stored twice");
    assert_eq!(view_totals(&env).await, before, "the hourly view counted a row twice");
    let view = common::reconciled(&base, &id, Duration::from_secs(10)).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
}
