//! Lineage of a job, against the real broker, ClickHouse, a consumer process and an
//! OpenLineage HTTP endpoint: every stage (fit, publish, and per chunk transform, inverse
//! and index) records `START` and `COMPLETE`; `GET /jobs/{id}/lineage` follows an output
//! part back to its shard and model; every event passes the openlineage-python client's
//! schema classes; the endpoint gets every event although it first answers 503.
//!
//! No Marquez can be installed here (it needs a JVM and PostgreSQL images): the endpoint is
//! a small HTTP server in the test that speaks Marquez's `POST /api/v1/lineage`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use shardflow_testkit::dataset::{post_job, serve_api};
use shardflow_testkit::{TestEnv, eventually};
use tokio::sync::Mutex;

/// An OpenLineage endpoint that refuses the first event with 503 and keeps the others.
async fn endpoint() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/api/v1/lineage",
        axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
            let (kept, refused) = (kept.clone(), refused.clone());
            async move {
                if !refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                kept.lock().await.push(event);
                StatusCode::CREATED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// `GET` `url` as JSON, with its status.
async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Run the openlineage-python check over `events`.
pub(crate) fn validate(events: &[Value]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openlineage_check.py");
    let mut child = std::process::Command::new(shardflow_testkit::python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let input = serde_json::to_vec(events).expect("JSON");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &input).expect("write events");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("python ran");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "openlineage-python refuses an event: {said}");
    assert_eq!(said.trim(), format!("ok {}", events.len()));
}

fn runs_of<'a>(graph: &'a Value, stage: &str) -> Vec<&'a Value> {
    graph["runs"].as_array().expect("runs").iter().filter(|r| r["stage"] == stage).collect()
}

/// The run ids of the runs an edge links `dataset` to, read (`to`) or written (`from`).
fn linked(graph: &Value, dataset: &str, written: bool) -> Vec<String> {
    let (this, other) = if written { ("to", "from") } else { ("from", "to") };
    graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e[this] == dataset)
        .filter_map(|e| e[other].as_str().map(str::to_string))
        .collect()
}

fn inputs_of(graph: &Value, run: &str) -> Vec<String> {
    graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e["to"] == run)
        .filter_map(|e| e["from"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_of_a_job_leaves_lineage_that_leads_from_a_part_to_its_shard_and_model() {
    let (url, received) = endpoint().await;
    let env = TestEnv::with("lineage", |c| c.lineage.url = Some(url.parse().expect("URL")));
    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let base = serve_api(&env.config).await;
    // A generated shard with no model yet: the job fits one first.
    let (status, job) =
        post_job(&base, json!({"generate": {"rows": 30000, "seed": 3}, "chunk_rows": 10000, "wait": true})).await;
    assert_eq!(status, 200, "{job}");
    let id = job["job_id"].as_str().expect("job id").to_string();
    let model_id = job["model_id"].as_str().expect("model").to_string();

    // Each chunk's lineage is recorded right after its outputs row.
    let lineage = format!("{base}/jobs/{id}/lineage?events=true");
    let graph = eventually("the lineage of every stage", Duration::from_secs(60), || {
        let lineage = lineage.clone();
        async move {
            let (_, graph) = get(&lineage).await;
            let runs = graph["runs"].as_array()?;
            (runs.len() == 11 && runs.iter().all(|r| r["state"] == "COMPLETE")).then_some(graph)
        }
    })
    .await;
    for (stage, n) in [("fit", 1), ("publish", 1), ("transform", 3), ("inverse", 3), ("index", 3)] {
        assert_eq!(runs_of(&graph, stage).len(), n, "{stage} runs");
    }
    let events = graph["events"].as_array().expect("events");
    assert_eq!(events.len(), 22, "a START and a COMPLETE per run");
    for event in events {
        assert_eq!(event["run"]["facets"]["parent"]["run"]["runId"], id.as_str(), "the job is every run's parent");
        assert_eq!(event["run"]["facets"]["processing_engine"]["name"], "shardflow");
    }

    // From an output part back to the shard and the model.
    let (_, outputs) = get(&format!("{base}/jobs/{id}/outputs")).await;
    let part = outputs["outputs"][0]["transform_path"].as_str().expect("a part").to_string();
    let part_id = format!("dataset:file/{}", part.trim_start_matches('/'));
    let writers = linked(&graph, &part_id, true);
    assert_eq!(writers.len(), 1, "one run writes {part_id}");
    let transform =
        graph["runs"].as_array().expect("runs").iter().find(|r| r["id"] == writers[0].as_str()).expect("run");
    assert_eq!((transform["stage"].as_str(), transform["chunk"].as_u64()), (Some("transform"), Some(0)));
    let model = format!("dataset:shardflow/models/{model_id}");
    let read = inputs_of(&graph, &writers[0]);
    assert!(read.contains(&model), "the transform reads the model: {read:?}");
    let topic = read.iter().find(|d| d.starts_with("dataset:kafka://")).expect("the transform reads the topic");
    assert!(topic.ends_with(&env.config.kafka.topic), "{topic}");
    let publishers = linked(&graph, topic, true);
    let publish = &runs_of(&graph, "publish")[0];
    assert_eq!(publishers, vec![publish["id"].as_str().expect("id").to_string()], "publish writes the topic");
    let shard = format!("dataset:file/{}", job["source"].as_str().expect("source").trim_start_matches('/'));
    assert!(inputs_of(&graph, &publishers[0]).contains(&shard), "publish reads {shard}");
    let fit = &runs_of(&graph, "fit")[0];
    assert_eq!(
        linked(&graph, &model, true),
        vec![fit["id"].as_str().expect("id").to_string()],
        "the fit makes the model"
    );
    assert!(inputs_of(&graph, fit["id"].as_str().expect("id")).contains(&shard), "the fit reads the shard");
    // The rows written, on the part's edge.
    let edge = graph["edges"].as_array().expect("edges").iter().find(|e| e["to"] == part_id.as_str()).expect("edge");
    assert_eq!(edge["rows"], 10000);
    assert_eq!(edge["bytes"].as_u64(), Some(std::fs::metadata(&part).expect("part").len()));

    validate(events);

    // The endpoint refused the first event once and got it again: it has every event.
    let sent = eventually("every event at the endpoint", Duration::from_secs(60), || {
        let received = received.clone();
        async move {
            let got = received.lock().await.clone();
            (got.len() >= events.len()).then_some(got)
        }
    })
    .await;
    let key = |e: &Value| (e["run"]["runId"].to_string(), e["eventType"].to_string());
    let mut sent_keys: Vec<_> = sent.iter().map(key).collect();
    let mut kept_keys: Vec<_> = events.iter().map(key).collect();
    sent_keys.sort();
    sent_keys.dedup();
    kept_keys.sort();
    assert_eq!(sent_keys, kept_keys, "the endpoint has the events ClickHouse has");

    let (status, body) = get(&format!("{base}/jobs/{}/lineage", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}
