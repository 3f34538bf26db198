//! The game-rounds pipeline end to end, on the real broker and ClickHouse: a 200,000-row
//! CSV in UTF-16 with a BOM (quoted commas, `Play'n GO`, `NaN` and empty amounts, both
//! timestamp forms, a few bad rows) uploaded through the API, published as Confluent-framed
//! Avro, sunk by a `consumer game-rounds` process. ClickHouse must hold every good row once,
//! the hourly aggregates must equal those computed here from the CSV, walking every page
//! must return each aggregate once, and the upload must reconcile as complete.

use shardflow_testkit::dataset as common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardflow_testkit::TestEnv;

const ROWS: usize = 200_000;
const GAMES: [(&str, &str); 5] = [
    ("Book of Dead", "Play'n GO"),
    ("Reactoonz, Deluxe", "Play'n GO"),
    ("Starburst", "NetEnt"),
    ("Gates of \"Olympus\"", "Pragmatic Play"),
    ("Mega Moolah", "Games Global"),
];

/// Sums in cents, so that the comparison is exact.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sums {
    rounds: u64,
    cents: [i64; 4],
}

/// A CSV quoted field.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn amount_text(i: usize, k: usize, cents: i64) -> String {
    match (i * 7 + k * 13) % 41 {
        0 => "NaN".into(),
        1 => String::new(),
        _ => format!("{}.{:02}", cents / 100, cents % 100),
    }
}

/// The CSV text, the lines of its bad rows, and the hourly sums per (hour, game, player).
/// Hourly sums by (hour, game, player).
type HourlySums = BTreeMap<(u32, String, String), Sums>;

fn game_rounds_csv() -> (String, Vec<u64>, HourlySums) {
    let start = 1_735_689_600u32; // 2025-01-01T00:00:00Z
    // Columns in another order than the pipeline's, plus one it ignores.
    let mut text = String::from(
        "provider,game_name,game_id,user_id,game_instance_id,created_timestamp,real_amount_bet,bonus_amount_bet,real_amount_win,bonus_amount_win,session\r\n",
    );
    let mut expected = HourlySums::new();
    let mut bad_lines = Vec::new();
    let mut line = 1u64;
    for i in 0..ROWS {
        let (game, (name, provider)) = (i % GAMES.len(), GAMES[i % GAMES.len()]);
        let user = format!("player-{}", (i * 31) % 97);
        let t = start + u32::try_from(i * 53 % (72 * 3600)).expect("small");
        let timestamp = if i % 2 == 0 {
            chrono::DateTime::from_timestamp(i64::from(t), 0).expect("time").format("%Y-%m-%d %H:%M:%S").to_string()
        } else {
            chrono::DateTime::from_timestamp(i64::from(t), 0).expect("time").format("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        let cents: [i64; 4] = std::array::from_fn(|k| i64::try_from((i * (k + 3) * 7919) % 100_000).expect("small"));
        let amounts: Vec<String> = (0..4).map(|k| amount_text(i, k, cents[k])).collect();
        line += 1;
        text.push_str(&format!(
            "{},{},game-{game},{user},round-{i},{timestamp},{},{},{},{},s{}\r\n",
            quote(provider),
            quote(name),
            amounts[0],
            amounts[1],
            amounts[2],
            amounts[3],
            i % 11
        ));
        let entry = expected.entry((t / 3600 * 3600, format!("game-{game}"), user)).or_default();
        entry.rounds += 1;
        for k in 0..4 {
            if !amounts[k].is_empty() && amounts[k] != "NaN" {
                entry.cents[k] += cents[k];
            }
        }
        // Now and then a bad row: a broken timestamp, a missing player, a word for an amount.
        if i % 40_000 == 17 {
            line += 1;
            bad_lines.push(line);
            let broken = match (i / 40_000) % 3 {
                0 => format!("{},{},game-1,p,bad-{i},31/01/2025 10:00,1,1,1,1,s\r\n", quote("NetEnt"), quote("x")),
                1 => format!("{},{},game-1,,bad-{i},2025-01-01 00:00:00,1,1,1,1,s\r\n", quote("NetEnt"), quote("x")),
                _ => {
                    format!("{},{},game-1,p,bad-{i},2025-01-01 00:00:00,lots,1,1,1,s\r\n", quote("NetEnt"), quote("x"))
                }
            };
            text.push_str(&broken);
        }
    }
    (text, bad_lines, expected)
}

fn utf16_with_bom(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
}

fn to_cents(x: &Value) -> i64 {
    (x.as_f64().expect("a number") * 100.0).round() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_utf16_csv_reaches_clickhouse_once_and_its_hourly_sums_match() {
    let env = TestEnv::with("game_rounds", |c| {
        c.game_rounds.batch_rows = shardflow_testkit::nz(20_000);
        c.game_rounds.flush_interval = Duration::from_millis(500);
    });
    let base = common::serve_api(&env.config).await;
    // The sink runs while the upload is published, as it would in production.
    let _sink = common::rounds_sink(&env.config_path, None);

    let (text, bad_lines, expected) = game_rounds_csv();
    let csv = utf16_with_bom(&text);
    let started = Instant::now();
    let upload = common::upload_csv(&base, &csv).await;
    let published_after = started.elapsed();
    assert_eq!(upload["rows_read"], (ROWS + bad_lines.len()) as u64, "{upload}");
    assert_eq!(upload["rows_published"], ROWS as u64);
    assert_eq!(upload["bad_rows"], bad_lines.len() as u64);
    let reported: Vec<u64> = upload["bad_row_samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|b| b["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(reported, bad_lines, "bad rows are reported with their lines: {}", upload["bad_row_samples"]);
    let id = upload["upload_id"].as_str().expect("id").to_string();

    let view = common::reconciled(&base, &id, Duration::from_secs(180)).await;
    let in_clickhouse_after = started.elapsed();
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64);
    assert_eq!(view["hours"], 72);
    assert_eq!(view["hours_mismatched"], serde_json::json!([]));

    // Every good row once: no duplicates even before merges.
    assert_eq!(env.count("SELECT count() FROM game_rounds").await, ROWS as u64);
    assert_eq!(env.count("SELECT uniqExact(line) FROM game_rounds").await, ROWS as u64);
    assert_eq!(env.count("SELECT countIf(provider = 'Play''n GO') FROM game_rounds").await, (ROWS / 5 * 2) as u64);
    assert_eq!(
        env.count("SELECT countIf(game_name = 'Gates of \"Olympus\"') FROM game_rounds").await,
        (ROWS / 5) as u64
    );
    assert_eq!(env.count("SELECT countIf(isNull(real_amount_bet)) FROM game_rounds").await, {
        (0..ROWS).filter(|i| (i * 7) % 41 < 2).count() as u64
    });

    // Walk every page: each aggregate once, each equal to the CSV's.
    let client = reqwest::Client::new();
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut next = Some("/aggregated_game_rounds?page_size=1000".to_string());
    let mut pages = 0;
    while let Some(link) = next {
        let page: Value = client.get(format!("{base}{link}")).send().await.expect("page").json().await.expect("JSON");
        assert_eq!(page["total_results"], expected.len() as u64);
        for row in page["data"].as_array().expect("data") {
            let hour = chrono::DateTime::parse_from_rfc3339(row["hour"].as_str().expect("hour")).expect("RFC 3339");
            let key = (
                u32::try_from(hour.timestamp()).expect("hour"),
                row["game_id"].as_str().expect("game").to_string(),
                row["user_id"].as_str().expect("user").to_string(),
            );
            let want = expected.get(&key).unwrap_or_else(|| panic!("unexpected aggregate {row}"));
            let got = Sums {
                rounds: row["rounds"].as_u64().expect("rounds"),
                cents: [
                    to_cents(&row["total_real_amount_bet"]),
                    to_cents(&row["total_bonus_amount_bet"]),
                    to_cents(&row["total_real_amount_win"]),
                    to_cents(&row["total_bonus_amount_win"]),
                ],
            };
            assert_eq!(&got, want, "{row}");
            assert!(seen.insert((row["hour"].to_string(), key.1, key.2)), "aggregate listed twice: {row}");
        }
        next = page["pagination"]["next"].as_str().map(str::to_string);
        pages += 1;
    }
    assert_eq!(seen.len(), expected.len(), "every aggregate listed");
    assert_eq!(pages, expected.len().div_ceil(1000));

    // Filters: one player, one game, one day.
    let (hour, game, user) = expected.keys().nth(expected.len() / 2).expect("a key").clone();
    let day = chrono::DateTime::from_timestamp(i64::from(hour), 0).expect("time").format("%Y-%m-%d").to_string();
    let next_day =
        chrono::DateTime::from_timestamp(i64::from(hour) + 86_400, 0).expect("time").format("%Y-%m-%d").to_string();
    let url =
        format!("{base}/aggregated_game_rounds?player_id={user}&game_id={game}&start_date={day}&end_date={next_day}");
    let filtered: Value = client.get(url).send().await.expect("filtered").json().await.expect("JSON");
    let day_start = hour / 86_400 * 86_400;
    let want = expected
        .keys()
        .filter(|(h, g, u)| *g == game && *u == user && (day_start..day_start + 86_400).contains(h))
        .count();
    assert_eq!(filtered["total_results"], want as u64, "{filtered}");
    // The CSV's own timestamp format is taken wherever a time is (issue #13, point 8), and
    // each row also answers the original service's field name, `created_hour`.
    let url = format!(
        "{base}/aggregated_game_rounds?player_id={user}&game_id={game}&start_date={day}%2000:00:00&end_date={next_day}%2000:00:00"
    );
    let response = client.get(url).send().await.expect("filtered by date and time");
    assert_eq!(response.status(), 200);
    let by_time: Value = response.json().await.expect("JSON");
    assert_eq!(by_time["total_results"], want as u64, "{by_time}");
    let row = &by_time["data"][0];
    let hour_text = chrono::DateTime::from_timestamp(i64::from(hour), 0).expect("time");
    assert!(
        by_time["data"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["created_hour"] == hour_text.format("%Y-%m-%d %H:%M:%S").to_string().as_str()),
        "{row}"
    );

    let seconds = in_clickhouse_after.as_secs_f64();
    println!(
        "game rounds: {ROWS} rows ({} bytes UTF-16) published in {:.2} s, all in ClickHouse after {seconds:.2} s: {:.0} rows/s upload to ClickHouse",
        csv.len(),
        published_after.as_secs_f64(),
        ROWS as f64 / seconds
    );
}
