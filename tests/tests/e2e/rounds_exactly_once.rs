//! Hourly aggregates exactly once, whatever the sinks do: two sinks racing on the same
//! rows, a sink paused past its session timeout and then resumed, a sink killed mid-insert.
//! After each, every hour's count and sums in `hourly_aggregated_game_rounds` and in
//! `GET /aggregated_game_rounds` equal those computed here from the CSV, and
//! `GET /uploads/{id}` reconciles.

use std::collections::BTreeMap;
use std::time::Duration;

use shardflow_testkit::dataset as common;
use shardflow_testkit::{TestEnv, eventually};

/// Count, and cents of real bets and wins, of one hour (`YYYY-MM-DD HH`).
type Hours = BTreeMap<String, (u64, u64, u64)>;

/// The hours of a CSV made by [`common::rounds_csv`], computed from its text.
fn csv_hours(csv: &str) -> Hours {
    let mut hours = Hours::new();
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let cents = |i: usize| (fields[i].parse::<f64>().expect("amount") * 100.0).round() as u64;
        let hour = hours.entry(fields[0][..13].to_string()).or_default();
        hour.0 += 1;
        hour.1 += cents(4);
        hour.2 += cents(6);
    }
    hours
}

/// The hours of the view, as ClickHouse sums them.
async fn view_hours(env: &TestEnv) -> Hours {
    let rows: Vec<(String, u64, u64, u64)> = clickhouse::Client::default()
        .with_url(env.config.clickhouse.url.as_str())
        .with_database(&env.config.clickhouse.database)
        .with_validation(false)
        .query(
            "SELECT substring(toString(hour), 1, 13) AS hour, sum(rounds) AS rounds, \
             toUInt64(round(sum(total_real_amount_bet) * 100)) AS bet, \
             toUInt64(round(sum(total_real_amount_win) * 100)) AS win \
             FROM hourly_aggregated_game_rounds GROUP BY hour ORDER BY hour",
        )
        .fetch_all()
        .await
        .expect("query the view");
    rows.into_iter().map(|(hour, rounds, bet, win)| (hour, (rounds, bet, win))).collect()
}

/// The hours as `GET /aggregated_game_rounds` answers them, hour by hour.
async fn api_hours(base: &str, hours: &Hours) -> Hours {
    let client = reqwest::Client::new();
    let mut found = Hours::new();
    for hour in hours.keys() {
        let url = format!("{base}/aggregated_game_rounds?start_date={hour}:00:00&end_date={hour}:59:59&page_size=1000");
        let page: serde_json::Value = client.get(&url).send().await.expect("GET").json().await.expect("JSON");
        let rows = page["data"].as_array().unwrap_or_else(|| panic!("no data in {page}"));
        assert!((rows.len() as u64) < 1000, "one page holds an hour");
        let total = found.entry(hour.clone()).or_default();
        for row in rows {
            let cents = |name: &str| (row[name].as_f64().expect("sum") * 100.0).round() as u64;
            total.0 += row["rounds"].as_u64().expect("rounds");
            total.1 += cents("total_real_amount_bet");
            total.2 += cents("total_real_amount_win");
        }
    }
    found
}

/// A deadline, not a wait: 300 s, because the paused-sink test needs the broker to expire a
/// stopped member and rebalance, which took over 120 s once while the scale test loaded
/// both cores.
async fn wait_caught_up(env: &TestEnv, group: &str) {
    let topic = &env.config.game_rounds.topic;
    shardflow_testkit::wait_caught_up(&env.config, group, topic, Duration::from_secs(300)).await;
}

/// Every hour of the view and of the API equals the CSV's, and the upload reconciles.
async fn assert_exactly_once(env: &TestEnv, base: &str, id: &str, csv: &str, rows: u64) {
    let expected = csv_hours(csv);
    assert_eq!(view_hours(env).await, expected, "the view's hours differ from the CSV's");
    assert_eq!(api_hours(base, &expected).await, expected, "the API's hours differ from the CSV's");
    let view = common::reconciled(base, id, Duration::from_secs(30)).await;
    assert_eq!(view["rows_in_clickhouse"], rows, "{view}");
    assert_eq!(view["hours_mismatched"].as_array().map(Vec::len), Some(0), "{view}");
}

fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
    assert!(status.expect("kill").success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_racing_on_the_same_rows_count_each_once() {
    const ROWS: usize = 40_000;
    let env = TestEnv::with("rounds_race", |c| {
        c.game_rounds.batch_rows = shardflow_testkit::nz(2_000);
        c.game_rounds.flush_interval = Duration::from_millis(100);
    });
    let base = common::serve_api(&env.config).await;
    // Two sinks read every row at the same moment: each in a group of its own, as two
    // members that overlap in a rebalance both hold the same partitions.
    let other = format!("{}.other", env.config.game_rounds.group_id);
    let mut first = common::rounds_sink(&env.config_path, None);
    let mut second = common::rounds_sink(&env.config_path, Some(&other));
    let csv = common::rounds_csv(ROWS);
    let upload = common::upload_csv(&base, csv.as_bytes()).await;
    assert_eq!(upload["rows_published"], ROWS as u64, "{upload}");
    let id = upload["upload_id"].as_str().expect("id").to_string();
    wait_caught_up(&env, &env.config.game_rounds.group_id).await;
    wait_caught_up(&env, &other).await;
    assert_exactly_once(&env, &base, &id, &csv, ROWS as u64).await;
    // Gone before the test's topics are deleted.
    for sink in [&mut first, &mut second] {
        sink.kill().await.expect("stop the sink");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_paused_past_its_session_timeout_then_resumed_counts_nothing_twice() {
    const ROWS: usize = 20_000;
    let env = TestEnv::with("rounds_paused", |c| {
        // Half the rows make a batch: the paused sink has inserted one half and holds
        // (some of) the other when it stops.
        c.game_rounds.batch_rows = shardflow_testkit::nz(ROWS / 2);
        c.game_rounds.flush_interval = Duration::from_secs(3600);
    });
    let base = common::serve_api(&env.config).await;
    let mut paused = common::rounds_sink(&env.config_path, None);
    let csv = common::rounds_csv(ROWS);
    let upload = common::upload_csv(&base, csv.as_bytes()).await;
    let id = upload["upload_id"].as_str().expect("id").to_string();
    eventually("the first sink to insert a batch", Duration::from_secs(60), || async {
        (env.count("SELECT count() FROM game_rounds").await > 0).then_some(())
    })
    .await;
    signal(&paused, "STOP");
    // A second member of the same group takes the partitions once the paused one's
    // session times out (10 s), and stores everything from the committed offsets on.
    let mut successor =
        common::rounds_sink_with(&env.config_path, &[("SHARDFLOW__GAME_ROUNDS__FLUSH_INTERVAL", "100ms")]);
    wait_caught_up(&env, &env.config.game_rounds.group_id).await;
    // The paused sink wakes, still holding its batch, and flushes it on the way out.
    signal(&paused, "CONT");
    let status = common::terminate(&mut paused, Duration::from_secs(60)).await;
    assert!(status.success(), "the resumed sink exits cleanly: {status}");
    wait_caught_up(&env, &env.config.game_rounds.group_id).await;
    assert_exactly_once(&env, &base, &id, &csv, ROWS as u64).await;
    successor.kill().await.expect("stop the sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_mid_insert_counts_nothing_twice() {
    const ROWS: usize = 60_000;
    let env = TestEnv::with("rounds_killed", |c| {
        c.game_rounds.batch_rows = shardflow_testkit::nz(15_000);
        c.game_rounds.flush_interval = Duration::from_secs(3600);
    });
    let base = common::serve_api(&env.config).await;
    let mut killed = common::rounds_sink(&env.config_path, None);
    let csv = common::rounds_csv(ROWS);
    let upload = common::upload_csv(&base, csv.as_bytes()).await;
    let id = upload["upload_id"].as_str().expect("id").to_string();
    // Kill it as its first insert lands, before its offsets are committed (or while the
    // server is still taking the insert): its batch is delivered again to the next owner.
    eventually("the first insert into game_rounds", Duration::from_secs(60), || async {
        (env.count("SELECT count() FROM game_rounds").await > 0).then_some(())
    })
    .await;
    killed.start_kill().expect("kill -9");
    let _ = killed.wait().await;
    let mut successor =
        common::rounds_sink_with(&env.config_path, &[("SHARDFLOW__GAME_ROUNDS__FLUSH_INTERVAL", "100ms")]);
    wait_caught_up(&env, &env.config.game_rounds.group_id).await;
    assert_exactly_once(&env, &base, &id, &csv, ROWS as u64).await;
    successor.kill().await.expect("stop the sink");
}
