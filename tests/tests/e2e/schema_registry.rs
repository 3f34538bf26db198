//! With `game_rounds.schema_registry_url` set, the producer registers the game-round schema
//! under `<topic>-value` and frames every message with the id the registry gave, and the
//! sink resolves that id through the registry (`GET /schemas/ids/{id}`).
//!
//! No Schema Registry can be installed on this machine (Confluent's and Apicurio need
//! Maven or Docker; karapace is not on PyPI), so the registry here is a stand-in that
//! answers the two calls of Confluent's REST API shardflow makes, with an id unlike the
//! one shardflow would pick itself. Broker, ClickHouse, API and sink are the real ones.

use shardflow_testkit::dataset as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use shardflow_schemas::rounds::GAME_ROUND_AVSC;
use shardflow_testkit::TestEnv;

const REGISTRY_ID: u32 = 4242;
const ROWS: usize = 1_000;

/// What the stand-in registry was asked.
#[derive(Default)]
struct Registry {
    registered: Mutex<Vec<(String, String)>>,
    looked_up: Mutex<Vec<u32>>,
    /// Lookups still to answer 503 Service Unavailable (a registry restarting).
    unavailable: AtomicUsize,
}

async fn register(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let schema = body["schema"].as_str().unwrap_or_default().to_string();
    registry.registered.lock().expect("lock").push((subject, schema));
    Json(json!({ "id": REGISTRY_ID }))
}

async fn schema_by_id(State(registry): State<Arc<Registry>>, Path(id): Path<u32>) -> (StatusCode, Json<Value>) {
    registry.looked_up.lock().expect("lock").push(id);
    if registry.unavailable.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error_code": 50301, "message": "restarting" })));
    }
    let registered = registry.registered.lock().expect("lock");
    match registered.first() {
        Some((_, schema)) if id == REGISTRY_ID => (StatusCode::OK, Json(json!({ "schema": schema }))),
        _ => (StatusCode::NOT_FOUND, Json(json!({ "error_code": 40403, "message": "Schema not found" }))),
    }
}

async fn serve_registry(unavailable: usize) -> (String, Arc<Registry>) {
    let registry = Arc::new(Registry { unavailable: AtomicUsize::new(unavailable), ..Registry::default() });
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .with_state(registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_registry_numbers_the_schema_and_the_sink_reads_through_it() {
    let (registry_url, registry) = serve_registry(0).await;
    let env = TestEnv::with("schema_registry", |c| {
        c.game_rounds.schema_registry_url = Some(registry_url.parse().expect("registry URL"));
        c.game_rounds.batch_rows = shardflow_testkit::nz(300);
        c.game_rounds.flush_interval = Duration::from_millis(200);
    });
    let base = common::serve_api(&env.config).await;
    let _sink = common::rounds_sink(&env.config_path, None);

    let upload = common::upload_csv(&base, common::rounds_csv(ROWS).as_bytes()).await;
    assert_eq!(upload["rows_published"], ROWS as u64, "{upload}");
    let id = upload["upload_id"].as_str().expect("id").to_string();

    let view = common::reconciled(&base, &id, Duration::from_secs(120)).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
    assert_eq!(view["hours_mismatched"], json!([]), "{view}");

    // Registered once, under the topic's value subject, with the schema shardflow writes.
    let registered = registry.registered.lock().expect("lock").clone();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].0, format!("{}-value", env.config.game_rounds.topic));
    let sent: Value = serde_json::from_str(&registered[0].1).expect("registered schema is JSON");
    let ours: Value = serde_json::from_str(GAME_ROUND_AVSC).expect("avsc is JSON");
    assert_eq!(sent, ours);
    // The sink saw the registry's id in the frames and asked the registry for it (once:
    // it keeps what it learned); shardflow numbered nothing itself.
    assert_eq!(*registry.looked_up.lock().expect("lock"), vec![REGISTRY_ID]);
    assert_eq!(env.count("SELECT count() FROM avro_schemas").await, 0);
    assert_eq!(env.count("SELECT count() FROM game_rounds").await, ROWS as u64);
}

/// A registry that fails for a while (503) is a blip, not a bad message: the sink retries
/// the lookup, dead-letters nothing, and every row reaches `game_rounds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_fails_for_a_while_dead_letters_no_good_row() {
    let (registry_url, registry) = serve_registry(5).await;
    let env = TestEnv::with("registry_blip", |c| {
        c.game_rounds.schema_registry_url = Some(registry_url.parse().expect("registry URL"));
        c.game_rounds.batch_rows = shardflow_testkit::nz(300);
        c.game_rounds.flush_interval = Duration::from_millis(200);
    });
    let base = common::serve_api(&env.config).await;
    let _sink = common::rounds_sink(&env.config_path, None);

    let upload = common::upload_csv(&base, common::rounds_csv(ROWS).as_bytes()).await;
    let id = upload["upload_id"].as_str().expect("id").to_string();
    let view = common::reconciled(&base, &id, Duration::from_secs(120)).await;
    assert_eq!(view["rows_in_clickhouse"], ROWS as u64, "{view}");
    assert_eq!(env.count("SELECT count() FROM dead_letters").await, 0, "no good row dead-lettered");
    assert_eq!(env.count("SELECT count() FROM game_rounds").await, ROWS as u64);
    let lookups = registry.looked_up.lock().expect("lock").len();
    assert_eq!(lookups, 6, "five failed lookups, retried, then one that answered");
}
