//! Lineage graphs: the OpenLineage events a job's (or a pipeline run's) stages recorded,
//! as runs, datasets and the edges between them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use serde::{Deserialize, Serialize};
use shardflow_store::lineage::{Dataset, EventType, Lineage, RunEvent};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// One stage run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RunNode {
    /// Node id: `run:<run id>`.
    pub id: String,
    /// The OpenLineage run id.
    pub run_id: String,
    /// The OpenLineage job name (`shardflow.transform`, `pipeline.stocks.train`, ...).
    pub job: String,
    /// The stage.
    pub stage: String,
    /// The chunk, for per-chunk stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// The model it used or made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// `START` (still running, or stopped without a word), `COMPLETE` or `FAIL`.
    pub state: String,
    /// Skipped: an earlier run with the same inputs and code succeeded.
    pub skipped: bool,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub ended_at: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One dataset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DatasetNode {
    /// Node id: `dataset:<namespace>/<name>`.
    pub id: String,
    /// Where it lives (`file`, `s3://bucket`, `kafka://host:port`, ...).
    pub namespace: String,
    /// Its name there.
    pub name: String,
}

/// An edge: a dataset read by a run, or written by it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Edge {
    /// A node id.
    pub from: String,
    /// A node id.
    pub to: String,
    /// Rows written, on a run's edge to its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes written, on a run's edge to its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// `GET /jobs/{id}/lineage` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LineageGraph {
    /// The job (or pipeline run), the parent of every run below.
    pub root_id: String,
    /// Stage runs, in the order they started.
    pub runs: Vec<RunNode>,
    /// Every dataset read or written.
    pub datasets: Vec<DatasetNode>,
    /// Dataset → run (read), run → dataset (written).
    pub edges: Vec<Edge>,
    /// With `events=true`: the OpenLineage events themselves, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub events: Option<Vec<serde_json::Value>>,
}

/// `GET /jobs/{id}/lineage` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LineageQuery {
    /// Also return the OpenLineage events themselves.
    pub events: Option<bool>,
}

fn dataset_id(d: &Dataset) -> String {
    format!("dataset:{}/{}", d.namespace, d.name.trim_start_matches('/'))
}

/// The graph of `events`: a run's state is its last transition; its inputs and outputs
/// are the union over its events.
pub(crate) fn graph(root_id: &str, events: Vec<RunEvent>, with_events: bool) -> LineageGraph {
    let mut runs: BTreeMap<String, (usize, RunNode)> = BTreeMap::new();
    let mut datasets: BTreeMap<String, DatasetNode> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for (order, event) in events.iter().enumerate() {
        let id = format!("run:{}", event.run.run_id);
        let facet = event.run.facets.shardflow.clone().unwrap_or_default();
        let (_, run) = runs.entry(id.clone()).or_insert_with(|| {
            (
                order,
                RunNode {
                    id: id.clone(),
                    run_id: event.run.run_id.clone(),
                    job: event.job.name.clone(),
                    stage: facet.stage.clone(),
                    chunk: facet.chunk,
                    model_id: facet.model_id.clone(),
                    state: EventType::Start.as_str().to_string(),
                    skipped: false,
                    started_at: None,
                    ended_at: None,
                    error: None,
                },
            )
        });
        run.skipped |= facet.skipped.unwrap_or(false);
        if run.model_id.is_none() {
            run.model_id = facet.model_id;
        }
        match event.event_type {
            EventType::Start => run.started_at = Some(event.event_time.clone()),
            end => {
                run.state = end.as_str().to_string();
                run.ended_at = Some(event.event_time.clone());
                run.error = event.run.facets.error_message.as_ref().map(|e| e.message.clone());
            }
        }
        for input in &event.inputs {
            let d = dataset_id(input);
            datasets.entry(d.clone()).or_insert_with(|| DatasetNode {
                id: d.clone(),
                namespace: input.namespace.clone(),
                name: input.name.clone(),
            });
            edges.entry((d.clone(), id.clone())).or_insert(Edge { from: d, to: id.clone(), rows: None, bytes: None });
        }
        for output in &event.outputs {
            let d = dataset_id(output);
            datasets.entry(d.clone()).or_insert_with(|| DatasetNode {
                id: d.clone(),
                namespace: output.namespace.clone(),
                name: output.name.clone(),
            });
            let stats = output.output_facets.as_ref().map(|f| &f.output_statistics);
            let edge = edges.entry((id.clone(), d.clone())).or_insert(Edge {
                from: id.clone(),
                to: d,
                rows: None,
                bytes: None,
            });
            if let Some(stats) = stats {
                edge.rows = Some(stats.row_count);
                edge.bytes = stats.size;
            }
        }
    }
    let mut runs: Vec<(usize, RunNode)> = runs.into_values().collect();
    runs.sort_by_key(|(order, _)| *order);
    LineageGraph {
        root_id: root_id.to_string(),
        runs: runs.into_iter().map(|(_, run)| run).collect(),
        datasets: datasets.into_values().collect(),
        edges: edges.into_values().collect(),
        events: with_events.then(|| events.iter().filter_map(|e| serde_json::to_value(e).ok()).collect()),
    }
}

/// The graph of root `root_id`'s events.
pub(crate) async fn graph_of(lineage: &Lineage, root_id: &str, with_events: bool) -> Result<LineageGraph, ApiError> {
    Ok(graph(root_id, lineage.events(root_id).await?, with_events))
}

/// A job's lineage: every stage run (fit, publish, and per chunk transform, inverse and
/// index), the datasets each read and wrote (shard, topic, model, parts, the `outputs`
/// table) with rows and bytes, as OpenLineage recorded them.
#[utoipa::path(get, path = "/jobs/{id}/lineage", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), LineageQuery), responses(
    (status = 200, body = LineageGraph),
    (status = 400, body = ErrorBody, description = "A parameter is malformed"),
    (status = 404, body = ErrorBody, description = "No such job"),
    (status = 503, body = ErrorBody, description = "ClickHouse unavailable"),
))]
pub(crate) async fn job(
    State(state): State<Arc<AppState>>,
    id: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<LineageQuery>, QueryRejection>,
) -> Result<Json<LineageGraph>, ApiError> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    if state.index.job(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no job {id}")));
    }
    Ok(Json(graph_of(state.jobs.publisher().lineage(), &id, q.events.unwrap_or(false)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardflow_store::lineage::StageRun;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_graph_joins_runs_through_their_datasets() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let shard = Dataset::location("/data/a.parquet");
        let topic = Dataset::topic("127.0.0.1:9092", "chunks");
        let part = Dataset::location("/out/transform_j/part-00000.parquet");
        let publish = StageRun::of_job("ns", "j", "publish", None);
        let transform = StageRun::of_job("ns", "j", "transform", Some(0)).with_model("m");
        let mut events = Vec::new();
        events.extend(publish.events(at, at, vec![shard.clone()], vec![topic.clone().with_row_count(10)], None));
        events.extend(transform.events(at, at, vec![topic.clone()], vec![part.clone().with_statistics(10, 99)], None));
        events.extend(StageRun::of_job("ns", "j", "index", Some(1)).events(at, at, vec![], vec![], Some("no")));
        let g = graph("j", events, false);
        assert_eq!(g.runs.len(), 3);
        assert_eq!(g.runs[0].stage, "publish");
        assert_eq!(g.runs[1].model_id.as_deref(), Some("m"));
        assert_eq!((g.runs[2].state.as_str(), g.runs[2].error.as_deref()), ("FAIL", Some("no")));
        assert_eq!(g.datasets.len(), 3);
        let written = g.edges.iter().find(|e| e.to == dataset_id(&part)).expect("the part is written");
        assert_eq!((written.from.as_str(), written.rows, written.bytes), (g.runs[1].id.as_str(), Some(10), Some(99)));
        // The topic links publish (writes it) to transform (reads it).
        let topic_id = dataset_id(&topic);
        assert!(g.edges.iter().any(|e| e.from == g.runs[0].id && e.to == topic_id));
        assert!(g.edges.iter().any(|e| e.from == topic_id && e.to == g.runs[1].id));
        assert!(g.events.is_none());
    }
}
