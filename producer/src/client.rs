//! `producer jobs` and `producer job ID`: follow jobs from a terminal through the API.

use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// A client of a running API.
pub(crate) struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`).
    pub(crate) fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_string(), http: reqwest::Client::new() }
    }

    /// `GET path`, as JSON; an error answer becomes its message.
    ///
    /// # Errors
    /// When the API cannot be reached or answers with an error.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.get_with(path, &[]).await
    }

    /// `GET path?query`, the query encoded from `params`.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub(crate) async fn get_with(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("{url} did not answer JSON"))?;
        if !status.is_success() {
            bail!("{status}: {}", body["error"]["message"].as_str().unwrap_or("no message"));
        }
        Ok(body)
    }

    /// The jobs matching `params` (`status`, `dataset`, `page_size`, ...) as a table,
    /// newest first.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub(crate) async fn jobs_table(&self, params: &[(&str, String)]) -> anyhow::Result<String> {
        let page = self.get_with("/jobs", params).await?;
        let mut out =
            format!("{:<36}  {:<22}  {:>12}  {:>13}  {:<20}\n", "job", "status", "rows", "chunks", "submitted");
        for job in page["data"].as_array().into_iter().flatten() {
            out += &format!(
                "{:<36}  {:<22}  {:>12}  {:>6}/{:<6}  {:<20}\n",
                text(&job["job_id"]),
                text(&job["status"]),
                job["rows"],
                job["chunks_done"],
                job["chunks_total"],
                text(&job["created_at"])
            );
        }
        out += &format!("{} jobs in all\n", page["total_results"]);
        Ok(out)
    }

    /// Print a job; with `watch`, follow it with a progress bar until it ends.
    ///
    /// # Errors
    /// As [`ApiClient::get`]; a job that ends failed or with dead letters is an error too.
    pub(crate) async fn job(&self, id: &str, watch: bool) -> anyhow::Result<String> {
        let path = format!("/jobs/{id}");
        let mut job = self.get(&path).await?;
        if watch {
            let bar = ProgressBar::new(job["chunks_total"].as_u64().unwrap_or(0));
            if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} chunks ({elapsed})") {
                bar.set_style(style);
            }
            while matches!(job["status"].as_str(), Some("publishing" | "running")) {
                bar.set_length(job["chunks_total"].as_u64().unwrap_or(0));
                bar.set_position(job["chunks_done"].as_u64().unwrap_or(0));
                bar.set_message(text(&job["status"]));
                tokio::time::sleep(Duration::from_millis(500)).await;
                job = self.get(&path).await?;
            }
            bar.finish_and_clear();
        }
        let summary = format!(
            "job {}: {}\n  dataset {}, model {}\n  source {}\n  rows {} ({} done), chunks {}/{} done, {} dead-lettered\n  transformed {}\n  inverse     {}\n",
            text(&job["job_id"]),
            text(&job["status"]),
            text(&job["dataset"]),
            text(&job["model_id"]),
            text(&job["source"]),
            job["rows"],
            job["rows_done"],
            job["chunks_done"],
            job["chunks_total"],
            job["chunks_dead_lettered"],
            text(&job["transformed_file_path"]),
            text(&job["inverse_transformed_file_path"]),
        );
        match job["status"].as_str() {
            Some("failed") if watch => bail!("{summary}  error: {}", text(&job["error"])),
            Some("done_with_dead_letters") if watch => bail!("{summary}  see the dead letters at {}{path}", self.base),
            _ => Ok(summary),
        }
    }
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}
