//! A Confluent Schema Registry, when `game_rounds.schema_registry_url` names one: the
//! publisher registers the game-round schema under `<topic>-value` and frames messages with
//! the id it answers; the sink looks writer schemas up by id. The two REST calls used are
//! `POST /subjects/{subject}/versions` and `GET /schemas/ids/{id}`.

use serde::Deserialize;
use shardflow_config::Url;

/// A registry call that failed: the registry's address and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("Schema Registry {url}: {reason}")]
pub struct RegistryError {
    url: String,
    reason: String,
}

/// The registry at `url`.
#[derive(Clone, Debug)]
pub struct Registry {
    url: Url,
}

impl Registry {
    /// A client of the registry at `url`.
    pub fn new(url: Url) -> Self {
        Self { url }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.url.as_str().trim_end_matches('/'))
    }

    fn fail(&self, reason: &dyn std::fmt::Display) -> RegistryError {
        RegistryError { url: self.url.to_string(), reason: reason.to_string() }
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
        let answer = reqwest::Client::new()
            .post(self.endpoint(&format!("subjects/{subject}/versions")))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .map_err(|e| self.fail(&e))?
            .error_for_status()
            .map_err(|e| self.fail(&e))?;
        Ok(answer.json::<Registered>().await.map_err(|e| self.fail(&e))?.id)
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
        let response = reqwest::get(self.endpoint(&format!("schemas/ids/{id}"))).await.map_err(|e| self.fail(&e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = response.error_for_status().map_err(|e| self.fail(&e))?;
        Ok(Some(answer.json::<Answer>().await.map_err(|e| self.fail(&e))?.schema))
    }
}
