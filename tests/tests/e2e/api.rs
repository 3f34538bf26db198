//! The API's contract on the real broker and ClickHouse: tokens, size limits, content
//! checks, path confinement, JSON errors for everything, uploads and job listing, and an
//! OpenAPI document with an offline `/docs` page. Requests go straight to the router.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use shardflow_api::{AppState, router};
use shardflow_testkit::http::{oneshot, oneshot_json};
use shardflow_testkit::{TestEnv, eventually};

const TOKEN: &str = "s3cret-token";

struct Api {
    app: axum::Router,
    env: TestEnv,
}

impl Api {
    async fn new(name: &str, adjust: impl FnOnce(&mut shardflow_config::Config)) -> Self {
        let env = TestEnv::with(name, adjust);
        let app = router(AppState::new(env.config.clone()).await.expect("services are up (scripts/services.sh up)"));
        Self { app, env }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        oneshot(&self.app, request).await
    }

    async fn json(&self, request: Request<Body>) -> (StatusCode, Value) {
        oneshot_json(&self.app, request).await
    }

    fn uploads(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self.env.data().join("uploads"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn post(uri: &str, content_type: &str, body: impl Into<Body>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, content_type);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(body.into()).expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn multipart(field: &str, content: &[u8]) -> (String, Vec<u8>) {
    shardflow_testkit::http::multipart(field, "upload", content)
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str, message: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let text = body["error"]["message"].as_str().expect("message");
    assert!(text.contains(message), "{text:?} should contain {message:?}");
}

#[tokio::test]
async fn mutating_routes_need_the_token_and_bad_requests_get_their_status() {
    let api = Api::new("api_guard", |c| {
        c.api.token = Some(shardflow_config::Secret::new(TOKEN));
        c.api.max_upload_bytes = 1000;
    })
    .await;
    let data = api.env.data().to_path_buf();
    std::fs::write(api.env.dir.path().join("outside.parquet"), b"x").expect("write");
    std::os::unix::fs::symlink(api.env.dir.path().join("outside.parquet"), data.join("link.parquet")).expect("symlink");
    let json_type = "application/json";
    let job = json!({ "file_path": "x.parquet" }).to_string();

    let (status, body) = api.json(post("/jobs", json_type, job.clone(), None)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized", "Authorization: Bearer");
    let (status, body) = api.json(post("/jobs", json_type, job.clone(), Some("wrong"))).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized", "wrong");
    let (status, body) = api.json(post("/csv_upload", "text/csv", "a,b", None)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized", "Bearer");
    // The scheme is matched in any case (RFC 9110 11.1): `bearer` passes to the route.
    for scheme in ["bearer", "BEARER"] {
        let request = Request::post("/jobs")
            .header(header::CONTENT_TYPE, json_type)
            .header(header::AUTHORIZATION, format!("{scheme} {TOKEN}"))
            .body(Body::from(json!({ "file_path": "missing.parquet" }).to_string()))
            .expect("request");
        let (status, body) = api.json(request).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "file_not_found", "missing.parquet");
    }
    // Reading needs no token.
    let (status, body) = api.json(get("/jobs")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_results"], 0);

    let token = Some(TOKEN);
    let cases = [
        (json!({ "file_path": "../outside.parquet" }).to_string(), StatusCode::FORBIDDEN, "path_forbidden"),
        (json!({ "file_path": "/etc/passwd" }).to_string(), StatusCode::FORBIDDEN, "path_forbidden"),
        (json!({ "file_path": "link.parquet" }).to_string(), StatusCode::FORBIDDEN, "path_forbidden"),
        (json!({ "file_path": "missing.parquet" }).to_string(), StatusCode::NOT_FOUND, "file_not_found"),
        ("{\"file_path\": ".to_string(), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({ "path": "x" }).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({}).to_string(), StatusCode::BAD_REQUEST, "bad_request"),
        (json!({ "generate": { "rows": 0 } }).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "bad_rows"),
        (
            json!({ "generate": { "rows": 10 }, "chunk_rows": 100_000_000 }).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_chunk_rows",
        ),
        (
            json!({ "generate": { "rows": 10 }, "chunk_rows": 0 }).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_chunk_rows",
        ),
        (json!({ "generate": { "rows": 10 }, "model_id": "nope" }).to_string(), StatusCode::NOT_FOUND, "not_found"),
        (
            json!({ "file_path": "x.parquet", "chunk_rows": 0 }).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_chunk_rows",
        ),
        (json!({ "status": "finished" }).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        // Past the 1 MiB a JSON body may hold.
        (json!({ "file_path": "a".repeat(2 << 20) }).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = api.json(post("/jobs", json_type, body.clone(), token)).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    // A rejected request writes nothing: no generated shard, no job.
    assert!(!api.env.data().join("generated").exists(), "a refused generate request wrote a shard");
    let (_, jobs) = api.json(get("/jobs")).await;
    assert_eq!(jobs["total_results"], 0, "{jobs}");
    let (status, body) = api.json(get("/jobs?status=finished")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request", "one of: fitting, publishing");
    let (status, body) = api.json(post("/jobs", "text/plain", job.clone(), token)).await;
    assert_error(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", "Content-Type");

    // Uploads: too large, not multipart, not CSV, CSV without the columns. Nothing is kept.
    let (content_type, body) = multipart("csv_file", &vec![b'a'; 5000]);
    let (status, answer) = api.json(post("/csv_upload", &content_type, body, token)).await;
    assert_error(status, &answer, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "max_upload_bytes");
    let (status, answer) = api.json(post("/csv_upload", json_type, "{}", token)).await;
    assert_error(status, &answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_multipart", "multipart/form-data");
    let (content_type, body) = multipart("csv_file", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01");
    let (status, answer) = api.json(post("/csv_upload", &content_type, body, token)).await;
    assert_error(status, &answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_csv", "binary content");
    let (content_type, body) = multipart("csv_file", b"a,b,c\n1,2,3\n");
    let (status, answer) = api.json(post("/csv_upload", &content_type, body, token)).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "missing_columns", "created_timestamp");
    let (content_type, body) = multipart("other_field", b"a,b,c\n1,2,3\n");
    let (status, answer) = api.json(post("/csv_upload", &content_type, body, token)).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_request", "csv_file");
    let (content_type, body) = multipart("file", b"Amount\n1.5\nabc\n");
    let (status, answer) = api.json(post("/shards", &content_type, body, token)).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_csv", "line 3");
    assert!(api.uploads().is_empty(), "nothing kept: {:?}", api.uploads());
    assert_eq!(api.env.count("SELECT count() FROM uploads").await, 0);
    assert_eq!(api.env.count("SELECT count() FROM jobs").await, 0);

    // Reads: JSON errors for unknown things and bad parameters.
    for (uri, status, code) in [
        ("/jobs/nope", StatusCode::NOT_FOUND, "not_found"),
        ("/jobs/nope/outputs", StatusCode::NOT_FOUND, "not_found"),
        ("/models/nope", StatusCode::NOT_FOUND, "not_found"),
        ("/uploads/nope", StatusCode::NOT_FOUND, "not_found"),
        ("/no/such/route", StatusCode::NOT_FOUND, "not_found"),
        ("/jobs?page_size=0", StatusCode::BAD_REQUEST, "bad_request"),
        ("/jobs?page_num=x", StatusCode::BAD_REQUEST, "invalid_query"),
        ("/jobs?since=yesterday", StatusCode::BAD_REQUEST, "bad_request"),
        ("/aggregated_game_rounds?start_date=2025-13-01", StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let (got, answer) = api.json(get(uri)).await;
        assert_eq!(got, status, "{uri}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{uri}: {answer}");
    }
    let (status, answer) = api.json(Request::delete("/jobs").body(Body::empty()).expect("request")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a mutating method is checked for the token first: {answer}");
    let delete = Request::delete("/jobs").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let (status, answer) = api.json(delete.body(Body::empty()).expect("request")).await;
    assert_error(status, &answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "DELETE");
}

#[tokio::test]
async fn shards_and_generated_jobs_are_listed_and_paged() {
    let api = Api::new("api_jobs", |c| {
        c.fit.sample_rows_per_shard = shardflow_testkit::nz(2_000);
        c.api.poll_interval = Duration::from_millis(50);
    })
    .await;
    let json_type = "application/json";
    // A CSV shard, UTF-16 with a BOM, one null: converted to Parquet and published.
    let mut csv = vec![0xFF, 0xFE];
    let text: String = std::iter::once("id,Amount\n".to_string())
        .chain(
            (0..3000).map(|i| format!("{i},{}\n", if i == 7 { "NaN".to_string() } else { format!("{}.25", i % 300) })),
        )
        .collect();
    csv.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let (content_type, body) = multipart("file", &csv);
    let (status, accepted) = api.json(post("/shards?chunk_rows=1000", &content_type, body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["rows"], 3000);
    assert_eq!(accepted["chunks"], 3);
    let first = accepted["job_id"].as_str().expect("job id").to_string();
    assert_eq!(accepted["links"]["job"], format!("/jobs/{first}"));

    let (status, accepted) = api
        .json(post(
            "/jobs",
            json_type,
            json!({ "generate": { "rows": 2500, "seed": 4 }, "chunk_rows": 1000 }).to_string(),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["chunks"], 3);
    let second = accepted["job_id"].as_str().expect("job id").to_string();

    // Both are published in the background (the first after a fit); no consumer runs
    // here, so both end up running: newest first, one per page.
    eventually("both jobs published", Duration::from_secs(60), || async {
        let (_, page) = api.json(get("/jobs?status=running")).await;
        (page["total_results"] == 2).then_some(())
    })
    .await;
    let (status, page) = api.json(get("/jobs?status=running&page_size=1")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total_results"], 2);
    assert_eq!(page["data"][0]["job_id"], second.as_str());
    assert_eq!(page["pagination"]["previous"], Value::Null);
    let next = page["pagination"]["next"].as_str().expect("a second page").to_string();
    assert!(next.contains("status=running") && next.contains("page_num=2"), "{next}");
    let (_, page) = api.json(get(&next)).await;
    assert_eq!(page["data"][0]["job_id"], first.as_str());
    assert_eq!(page["pagination"]["next"], Value::Null);
    let (_, none) = api.json(get("/jobs?status=done")).await;
    assert_eq!(none["total_results"], 0);
    let (_, none) = api.json(get("/jobs?dataset=Other")).await;
    assert_eq!(none["total_results"], 0);
    let (_, none) = api.json(get("/jobs?until=2000-01-01")).await;
    assert_eq!(none["total_results"], 0);

    let (status, job) = api.json(get(&format!("/jobs/{first}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (job["status"].as_str(), job["rows"].as_u64(), job["chunks_total"].as_u64()),
        (Some("running"), Some(3000), Some(3))
    );
    let (status, outputs) = api.json(get(&format!("/jobs/{first}/outputs"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outputs["outputs"], json!([]));

    // The model fitted for the first job, listed and shown.
    let (_, models) = api.json(get("/models")).await;
    assert_eq!(models["total_results"], 1, "{models}");
    let model_id = models["data"][0]["model_id"].as_str().expect("model id").to_string();
    let (status, model) = api.json(get(&format!("/models/{model_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model["model_json"]["model_id"], model_id.as_str());
    assert_eq!(job["model_id"], model_id.as_str());
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_docs_work_offline() {
    let api = Api::new("api_docs", |_| {}).await;
    let (status, doc) = api.json(get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let paths: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    for route in [
        "/transforming_data",
        "/jobs",
        "/jobs/{id}",
        "/jobs/{id}/outputs",
        "/shards",
        "/models",
        "/models/{id}",
        "/csv_upload",
        "/uploads/{id}",
        "/aggregated_game_rounds",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains(&route), "{route} missing from {paths:?}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The limits every body meets are documented where a client reads them.
    for route in ["/transforming_data", "/jobs", "/shards", "/csv_upload"] {
        let responses = &doc["paths"][route]["post"]["responses"];
        for status in ["408", "413"] {
            assert!(responses[status].is_object(), "POST {route} documents no {status}: {responses}");
        }
    }
    let (status, page) = api.send(get("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).expect("HTML");
    assert!(page.contains("swagger-ui"), "{page}");
    for script in ["swagger-ui-bundle.js", "swagger-initializer.js"] {
        let (status, bytes) = api.send(get(&format!("/docs/{script}"))).await;
        assert_eq!(status, StatusCode::OK, "{script} is served by the API itself");
        assert!(bytes.len() > 100, "{script}");
    }
    assert!(!page.contains("https://"), "no asset comes from the internet");
}
