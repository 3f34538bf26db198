//! The API's Prometheus metrics, rendered at `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters of the API process.
pub struct Metrics {
    registry: Registry,
    /// Jobs published.
    pub jobs: Counter,
    /// Rows published.
    pub rows: Counter,
    /// Chunks published.
    pub chunks: Counter,
    /// Requests answered with a 4xx.
    pub client_errors: Counter,
    /// Requests answered with a 5xx.
    pub server_errors: Counter,
}

impl Metrics {
    /// All metrics, registered under `shardflow_api_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shardflow_api");
        let (jobs, rows, chunks) = (Counter::default(), Counter::default(), Counter::default());
        let (client_errors, server_errors) = (Counter::default(), Counter::default());
        registry.register("jobs_published", "Jobs whose every chunk the broker acknowledged", jobs.clone());
        registry.register("rows_published", "Rows published", rows.clone());
        registry.register("chunks_published", "Chunks published", chunks.clone());
        registry.register("client_errors", "Requests answered with a 4xx", client_errors.clone());
        registry.register("server_errors", "Requests answered with a 5xx", server_errors.clone());
        Self { registry, jobs, rows, chunks, client_errors, server_errors }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        shardflow_config::telemetry::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
