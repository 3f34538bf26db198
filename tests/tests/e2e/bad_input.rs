//! Bad input to the API gets a clear 4xx with a JSON message and leaves nothing behind:
//! no job row, no model, no output directory. Requests go straight to the router.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use parquet::arrow::ArrowWriter;
use shardflow_api::{AppState, router};
use shardflow_testkit::TestEnv;

async fn post(app: &axum::Router, body: &str, content_type: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::post("/transforming_data")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .expect("request");
    shardflow_testkit::http::oneshot_json(app, request).await
}

fn file_path(path: &str) -> String {
    serde_json::json!({ "file_path": path }).to_string()
}

#[tokio::test]
async fn bad_files_get_a_clear_4xx_and_leave_nothing_written() {
    let env = TestEnv::new("bad_input");
    let data = env.data().to_path_buf();
    std::fs::write(data.join("notes.parquet"), b"this is not parquet").expect("write");
    let other = RecordBatch::try_from_iter([("price", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)]).expect("batch");
    let file = std::fs::File::create(data.join("prices.parquet")).expect("create");
    let mut writer = ArrowWriter::try_new(file, other.schema(), None).expect("writer");
    writer.write(&other).expect("write");
    writer.close().expect("close");
    std::fs::write(env.dir.path().join("outside.parquet"), b"x").expect("write");

    let app = router(AppState::new(env.config.clone()).await.expect("services are up (scripts/services.sh up)"));
    let json = "application/json";

    let cases = [
        (file_path("missing.parquet"), StatusCode::NOT_FOUND, "file_not_found", "does not exist"),
        (file_path("notes.parquet"), StatusCode::BAD_REQUEST, "not_parquet", "not a readable Parquet file"),
        (
            file_path("prices.parquet"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_dataset",
            "name the dataset of a file with columns price",
        ),
        (file_path("../outside.parquet"), StatusCode::FORBIDDEN, "path_forbidden", "outside the data roots"),
        (file_path("/etc/passwd"), StatusCode::FORBIDDEN, "path_forbidden", "outside the data roots"),
        (file_path("."), StatusCode::BAD_REQUEST, "not_a_file", "not a regular file"),
        ("{\"file_path\": ".to_string(), StatusCode::BAD_REQUEST, "invalid_request", ""),
        ("{\"path\": \"x\"}".to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "file_path"),
    ];
    for (body, status, code, message) in cases {
        let (got, answer) = post(&app, &body, json).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let text = answer["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{body}: {text}");
    }
    let (got, _) = post(&app, &file_path("missing.parquet"), "text/plain").await;
    assert_eq!(got, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(env.count("SELECT count() FROM jobs").await, 0, "no job row");
    assert_eq!(env.count("SELECT count() FROM models").await, 0, "no model fitted");
    let outputs: Vec<_> = std::fs::read_dir(env.output_root()).expect("output root").collect();
    assert!(outputs.is_empty(), "nothing under the output root: {outputs:?}");
}
