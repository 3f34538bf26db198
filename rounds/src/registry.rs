//! A Confluent Schema Registry, when `game_rounds.schema_registry_url` names one: the
//! publisher registers the game-round schema under `<topic>-value` and frames messages with
//! the id it answers; the sink looks writer schemas up by id. The two REST calls used are
//! `POST /subjects/{subject}/versions` and `GET /schemas/ids/{id}`. Every call gives up
//! after `game_rounds.schema_registry_timeout`.

use std::time::Duration;

use serde::Deserialize;
use shardflow_config::Url;
use shardflow_store::Retry;

/// A registry call that failed: the registry's address and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("Schema Registry {url}: {source}")]
pub struct RegistryError {
    url: String,
    #[source]
    source: reqwest::Error,
}

impl RegistryError {
    /// What the failure means: no answer (refused, timed out) or 429/502/503/504 is the
    /// registry being away; another 5xx may pass; a 4xx or an answer that is not the
    /// registry's JSON never will.
    pub fn retry(&self) -> Retry {
        let e = &self.source;
        match e.status() {
            Some(s) if s.as_u16() == 429 || matches!(s.as_u16(), 502..=504) => Retry::Unavailable,
            Some(s) if s.is_server_error() => Retry::Transient,
            Some(_) => Retry::Permanent,
            None if e.is_connect() || e.is_timeout() || e.is_request() => Retry::Unavailable,
            None if e.is_decode() || e.is_body() => Retry::Permanent,
            None => Retry::Transient,
        }
    }
}

/// How long a registry call may take when the configuration says nothing.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry at `url`.
#[derive(Clone, Debug)]
pub struct Registry {
    url: Url,
    client: reqwest::Client,
}

impl Registry {
    /// A client of the registry at `url`, with calls timing out after 10 s.
    pub fn new(url: Url) -> Self {
        Self::with_timeout(url, DEFAULT_TIMEOUT)
    }

    /// A client of the registry at `url` whose calls give up after `timeout`.
    pub fn with_timeout(url: Url, timeout: Duration) -> Self {
        // The builder fails only without a TLS backend or on a bad system configuration;
        // the default client (no timeout) is then the one left, and calls still fail
        // when the registry is away.
        let client = reqwest::Client::builder().timeout(timeout).build().unwrap_or_default();
        Self { url, client }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.url.as_str().trim_end_matches('/'))
    }

    fn fail(&self, source: reqwest::Error) -> RegistryError {
        RegistryError { url: self.url.to_string(), source }
    }

    /// Register `schema` under `subject`; the id the registry gives it.
    ///
    /// # Errors
    /// [`RegistryError`] when the registry does not answer or refuses.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let answer = self
            .client
            .post(self.endpoint(&format!("subjects/{subject}/versions")))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .map_err(|e| self.fail(e))?
            .error_for_status()
            .map_err(|e| self.fail(e))?;
        Ok(answer.json::<Registered>().await.map_err(|e| self.fail(e))?.id)
    }

    /// The schema registered with `id`, or `None` when the registry has none.
    ///
    /// # Errors
    /// [`RegistryError`] when the registry does not answer or fails.
    pub async fn schema(&self, id: u32) -> Result<Option<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            schema: String,
        }
        let response =
            self.client.get(self.endpoint(&format!("schemas/ids/{id}"))).send().await.map_err(|e| self.fail(e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = response.error_for_status().map_err(|e| self.fail(e))?;
        Ok(Some(answer.json::<Answer>().await.map_err(|e| self.fail(e))?.schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry that accepts connections and never answers: the lookup gives up after
    /// the timeout, and the failure is the registry being away (retried, never a dead
    /// letter).
    #[tokio::test]
    async fn a_hung_registry_times_out_as_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url: Url = format!("http://{}", listener.local_addr().expect("address")).parse().expect("URL");
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let registry = Registry::with_timeout(url, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = registry.schema(1).await.expect_err("no answer");
        assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
        assert_eq!(err.retry(), Retry::Unavailable, "{err}");
        held.abort();
    }
}
