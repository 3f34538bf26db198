//! Requests sent straight to a router (axum's testing example), and the multipart body of
//! an upload: what the API tests share.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;

/// Send `request` to `app` without a socket; the status and the body's bytes.
///
/// # Panics
/// When the router fails (it never should: errors are answers).
pub async fn oneshot(app: &axum::Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = tower::ServiceExt::oneshot(app.clone(), request).await.expect("response");
    let status = response.status();
    (status, response.into_body().collect().await.expect("body").to_bytes().to_vec())
}

/// As [`oneshot`], with the body parsed as JSON.
///
/// # Panics
/// When the body is not JSON (every answer of the API is).
pub async fn oneshot_json(app: &axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let (status, bytes) = oneshot(app, request).await;
    let json =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

/// A multipart/form-data body holding one file field; its content type and bytes.
pub fn multipart(field: &str, file_name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "shardflow-test-boundary-7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
