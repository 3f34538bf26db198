//! A database made by an older shardflow, opened by this one: tables whose kind or sorting
//! key changed are rebuilt with nothing lost. The older tables are made here with the DDL
//! that version shipped; the real ClickHouse does the rest.

use shardflow_store::Index;
use shardflow_testkit::TestEnv;

/// Run one statement on the test's ClickHouse.
async fn run(env: &TestEnv, sql: &str) {
    clickhouse::Client::default()
        .with_url(env.config.clickhouse.url.as_str())
        .query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `system.tables` facts about `table`, as text.
async fn table_fact(env: &TestEnv, column: &str, table: &str) -> String {
    clickhouse::Client::default()
        .with_url(env.config.clickhouse.url.as_str())
        .with_validation(false)
        .query(&format!("SELECT {column} FROM system.tables WHERE database = ? AND name = ?"))
        .bind(&env.config.clickhouse.database)
        .bind(table)
        .fetch_optional::<String>()
        .await
        .expect("system.tables")
        .unwrap_or_default()
}

/// `dead_letters` as versions before the re-keying made it (ordered by origin only), named `table`.
fn old_dead_letters(db: &str, table: &str) -> String {
    format!(
        "CREATE TABLE {db}.{table} (topic String, partition Int32, offset Int64, job_id String, chunk Int64, \
         error String, payload String, worker String, created_at DateTime) \
         ENGINE = ReplacingMergeTree ORDER BY (topic, partition, offset)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_is_upgraded_with_nothing_lost() {
    let env = TestEnv::new("schema_upgrade");
    let db = env.config.clickhouse.database.clone();
    run(&env, &format!("CREATE DATABASE {db}")).await;
    // dead_letters as it was: ordered by origin only.
    run(&env, &old_dead_letters(&db, "dead_letters")).await;
    // 3,000 letters of 30 jobs, one of them inserted twice (a redelivered letter).
    let letters = format!(
        "INSERT INTO {db}.dead_letters SELECT 't', toInt32(number % 4), toInt64(number), \
         concat('job-', toString(number % 30)), toInt64(number), 'bad', 'payload', 'w', now() \
         FROM system.numbers LIMIT 3000"
    );
    run(&env, &letters).await;
    run(&env, &format!("INSERT INTO {db}.dead_letters SELECT * FROM {db}.dead_letters WHERE offset = 7")).await;
    // The hourly aggregates as they were: a materialized view.
    run(
        &env,
        &format!(
            "CREATE TABLE {db}.game_rounds (upload_id String, line UInt64, created_timestamp DateTime('UTC'), \
             game_instance_id String, user_id String, game_id String, real_amount_bet Nullable(Float64), \
             bonus_amount_bet Nullable(Float64), real_amount_win Nullable(Float64), bonus_amount_win Nullable(Float64), \
             game_name String, provider String) \
             ENGINE = ReplacingMergeTree ORDER BY (upload_id, line)"
        ),
    )
    .await;
    run(
        &env,
        &format!(
            "CREATE MATERIALIZED VIEW {db}.hourly_aggregated_game_rounds ENGINE = SummingMergeTree \
             ORDER BY (hour, game_id, user_id) AS SELECT toStartOfHour(created_timestamp) AS hour, game_id, user_id, \
             count() AS rounds FROM {db}.game_rounds GROUP BY hour, game_id, user_id"
        ),
    )
    .await;

    let index = Index::connect(&env.config.clickhouse).await.expect("an older database opens");
    assert_eq!(table_fact(&env, "sorting_key", "dead_letters").await, "job_id, topic, partition, offset");
    assert_eq!(table_fact(&env, "name", "dead_letters_rekeyed").await, "", "the old table is dropped");
    assert_eq!(env.count("SELECT count() FROM dead_letters FINAL").await, 3000, "every letter kept, once");
    let (count, first) = index.dead_letter_count("job-7").await.expect("count");
    assert_eq!((count, first), (100, Some((7, "bad".to_string()))));
    assert_eq!(table_fact(&env, "engine", "hourly_aggregated_game_rounds").await, "View");

    // Opening it again changes nothing.
    drop(Index::connect(&env.config.clickhouse).await.expect("opens again"));
    assert_eq!(env.count("SELECT count() FROM dead_letters FINAL").await, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeying_cut_off_half_way_is_finished_at_the_next_start() {
    let env = TestEnv::new("schema_upgrade_resumed");
    let db = env.config.clickhouse.database.clone();
    drop(Index::connect(&env.config.clickhouse).await.expect("a new database"));
    // As a process stopped between setting the old table aside and copying it back leaves
    // it: the old table beside a new, emptier one.
    run(&env, &old_dead_letters(&db, "dead_letters_rekeyed")).await;
    run(
        &env,
        &format!(
            "INSERT INTO {db}.dead_letters_rekeyed SELECT 't', 0, toInt64(number), 'job', toInt64(number), 'bad', \
             'p', 'w', now() FROM system.numbers LIMIT 500"
        ),
    )
    .await;
    run(&env, &format!("INSERT INTO {db}.dead_letters SELECT * FROM {db}.dead_letters_rekeyed WHERE offset < 100"))
        .await;
    let index = Index::connect(&env.config.clickhouse).await.expect("opens");
    assert_eq!(table_fact(&env, "name", "dead_letters_rekeyed").await, "");
    assert_eq!(index.dead_letter_count("job").await.expect("count").0, 500, "each letter once");
}
