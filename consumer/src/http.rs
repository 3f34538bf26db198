//! The worker's small HTTP side: `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (ClickHouse and the broker answer).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use rdkafka::producer::FutureProducer;
use shardflow_kafka::broker_answers;
use shardflow_store::Index;

use crate::metrics::Metrics;

/// What the endpoints read.
pub struct Probe {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The index, for `/readyz`.
    pub index: Index,
    /// A producer of the process, for `/readyz`.
    pub producer: FutureProducer,
    /// The chunk topic.
    pub topic: String,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(probe)
}

async fn metrics(State(probe): State<Arc<Probe>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], probe.metrics.render())
}

async fn readyz(State(probe): State<Arc<Probe>>) -> (StatusCode, String) {
    let (clickhouse, kafka) = tokio::join!(probe.index.ping(), broker_answers(&probe.producer, &probe.topic));
    match (clickhouse, kafka) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready".into()),
        (ch, k) => {
            let mut why = Vec::new();
            if let Err(e) = ch {
                why.push(format!("clickhouse: {e}"));
            }
            if let Err(e) = k {
                why.push(format!("kafka: {e}"));
            }
            (StatusCode::SERVICE_UNAVAILABLE, why.join("; "))
        }
    }
}
