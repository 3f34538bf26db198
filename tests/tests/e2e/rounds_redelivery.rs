//! Nothing doubled when game rounds are delivered again: a second sink, in a group of its
//! own, reads the whole topic after the first sink stored it. `game_rounds` read with
//! `FINAL` holds each row once, and the hourly view, computed from those rows, keeps the
//! same sums.

use shardflow_testkit::dataset as common;

use std::time::Duration;

use shardflow_testkit::{TestEnv, eventually};

const ROWS: usize = 30_000;

/// Rows and cents of real bets in the hourly view.
async fn view_totals(env: &TestEnv) -> (u64, u64) {
    (
        env.count("SELECT sum(rounds) FROM hourly_aggregated_game_rounds").await,
        env.count("SELECT toUInt64(round(sum(total_real_amount_bet) * 100)) FROM hourly_aggregated_game_rounds").await,
    )
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
    shardflow_testkit::wait_caught_up(&env.config, &again, &env.config.game_rounds.topic, Duration::from_secs(120))
        .await;

    assert_eq!(env.count("SELECT count() FROM game_rounds FINAL").await, ROWS as u64, "a row stored twice");
    assert_eq!(view_totals(&env).await, before, "the hourly view counted a row twice");
    let view = common::reconciled(&base, &id, Duration::from_secs(10)).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
}
