//! The API's Prometheus metrics, rendered at `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use shardflow_jobs::service::JobCounters;

/// Counters of the API process (the job counters are the job service's).
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests answered with a 4xx.
    pub client_errors: Counter,
    /// Requests answered with a 5xx.
    pub server_errors: Counter,
}

impl Metrics {
    /// All metrics, registered under `shardflow_api_`, the job counters among them.
    pub(crate) fn new(counters: &JobCounters) -> Self {
        let mut registry = Registry::with_prefix("shardflow_api");
        let JobCounters { jobs, rows, chunks } = counters.clone();
        let (client_errors, server_errors) = (Counter::default(), Counter::default());
        registry.register("jobs_published", "Jobs whose every chunk the broker acknowledged", jobs.clone());
        registry.register("rows_published", "Rows published", rows.clone());
        registry.register("chunks_published", "Chunks published", chunks.clone());
        registry.register("client_errors", "Requests answered with a 4xx", client_errors.clone());
        registry.register("server_errors", "Requests answered with a 5xx", server_errors.clone());
        Self { registry, client_errors, server_errors }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        shardflow_config::telemetry::render(&self.registry)
    }
}
