//! A job against the two-node ClickHouse cluster that `scripts/services.sh cluster-up`
//! starts (docs/cluster.md), with node 1 stopped mid-job: the consumer and the API fail
//! over to node 2, the job completes and every query answers from it; once node 1 is back,
//! both nodes hold the same rows. It shares the e2e binary: the node it stops is one no
//! other test uses. It needs the cluster (it fails, never skips, when the cluster is down).

use shardflow_testkit::dataset as common;

use std::time::Duration;

use common::{Dataset, free_port, serve_api, services};
use shardflow_testkit::eventually;

const TIMEOUT: Duration = Duration::from_secs(180);
/// The nodes' HTTP interfaces (scripts/cluster.sh).
const NODES: [&str; 2] = ["http://127.0.0.1:9111", "http://127.0.0.1:9121"];
/// shardflow's replicated tables that a job writes, with the key that orders their rows.
const TABLES: [(&str, &str); 5] = [
    ("jobs", "job_id"),
    ("outputs", "job_id, chunk"),
    ("models", "model_id"),
    ("datasets", "name"),
    ("value_issues", "job_id, chunk, column, kind"),
];

/// One query's answer from a node, as text; `None` when the node does not answer.
async fn ask(node: &str, sql: &str) -> Option<String> {
    let response = reqwest::Client::new().post(node).body(sql.to_string()).send().await.ok()?;
    let status = response.status();
    let text = response.text().await.ok()?;
    assert!(status.is_success() || status.is_server_error(), "{node}: {sql}: {status} {text}");
    status.is_success().then_some(text)
}

/// Panics, saying how to start it, when a node of the cluster does not answer.
async fn require_cluster() {
    for node in NODES {
        let answer = ask(node, "SELECT 1").await;
        assert_eq!(
            answer.as_deref(),
            Some("1\n"),
            "the ClickHouse cluster is not up ({node} does not answer): run scripts/services.sh cluster-up \
             (make test does)"
        );
    }
}

/// Node 1 is stopped while this lives; started again on drop, even on panic.
struct NodeDown;

impl NodeDown {
    fn begin() -> Self {
        services("stop-cluster-node 1");
        Self
    }
}

impl Drop for NodeDown {
    fn drop(&mut self) {
        services("start-cluster-node 1");
    }
}

/// A JSON answer of the API.
async fn get(base: &str, path: &str) -> Option<serde_json::Value> {
    let response = reqwest::get(format!("{base}{path}")).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_stopped_node_and_both_nodes_end_with_the_same_rows() {
    require_cluster().await;
    let port = free_port();
    let data = Dataset::new("cluster", 300_000, 1_000, |c| {
        c.clickhouse.url = NODES[0].parse().expect("URL");
        c.clickhouse.fallback_urls = vec![NODES[1].parse().expect("URL")];
        c.clickhouse.cluster = Some("shardflow".into());
        // A stopped node refuses connections at once; the timeout only bounds a hung one.
        c.clickhouse.timeout = Duration::from_secs(10);
        c.consumer.listen = format!("127.0.0.1:{port}").parse().expect("address");
    })
    .await;
    let db = data.env.config.clickhouse.database.clone();
    for node in NODES {
        let tables = ask(node, &format!("SELECT count() FROM system.tables WHERE database = '{db}'")).await;
        // Thirteen tables and their replicated halves, less the view's half.
        assert_eq!(tables.as_deref(), Some("25\n"), "{node} has every table");
        let engine = format!("SELECT engine FROM system.tables WHERE database = '{db}' AND name = 'outputs_local'");
        assert_eq!(ask(node, &engine).await.as_deref(), Some("ReplicatedReplacingMergeTree\n"), "{node}");
    }
    let base = serve_api(&data.env.config).await;
    let mut first = data.consumer();
    let job = data.publish().await;
    let id = job.job_id.clone();
    data.wait_indexed(&id, 10, TIMEOUT).await;
    // Mid-job for certain: the first consumer is killed (300 chunks take it well under a
    // second, faster than a node stops), node 1 is stopped, and a second consumer does the
    // rest with node 1 down.
    first.kill().await.expect("kill the first consumer");

    let down = NodeDown::begin();
    assert_eq!(ask(NODES[0], "SELECT 1").await, None, "node 1 is down");
    let outputs_on = |node: &'static str| {
        let sql = format!("SELECT count() FROM {db}.outputs_local FINAL WHERE job_id = '{id}'");
        async move { ask(node, &sql).await.and_then(|n| n.trim().parse::<u64>().ok()) }
    };
    let at_stop = outputs_on(NODES[1]).await.expect("node 2 answers");
    assert!(at_stop < job.chunks, "the job was still running when node 1 stopped ({at_stop} of {})", job.chunks);
    let _worker = data.consumer();

    // The job completes, and the API answers from node 2.
    let view = eventually("the job to be done with node 1 down", TIMEOUT, || async {
        get(&base, &format!("/jobs/{id}")).await.filter(|v| v["status"] == "done")
    })
    .await;
    assert_eq!(view["outputs"].as_array().map(Vec::len), Some(usize::try_from(job.chunks).expect("chunks")));
    let outputs = get(&base, &format!("/jobs/{id}/outputs")).await.expect("GET /jobs/{id}/outputs answers");
    let parts = outputs["outputs"].as_array().expect("a list");
    assert_eq!(parts.len() as u64, job.chunks, "one output per chunk");
    let rows: u64 = parts.iter().map(|p| p["rows"].as_u64().expect("rows")).sum();
    assert_eq!(rows, job.rows);
    let listed = get(&base, "/jobs").await.expect("GET /jobs answers");
    assert_eq!(listed["total_results"], 1, "{listed}");
    assert_eq!(outputs_on(NODES[1]).await, Some(job.chunks), "node 2 holds every chunk");
    drop(down);

    // Back, node 1 fetches what it missed from node 2: both end with the same rows.
    for (table, key) in TABLES {
        let sql = format!("SELECT * FROM {db}.{table}_local FINAL ORDER BY {key} FORMAT TSV");
        let same = eventually(&format!("both nodes to hold the same {table}"), TIMEOUT, || async {
            let (one, two) = (ask(NODES[0], &sql).await?, ask(NODES[1], &sql).await?);
            (one == two).then_some(one)
        })
        .await;
        // The job's values are all valid: value_issues is the one table it leaves empty.
        assert_eq!(same.is_empty(), table == "value_issues", "{table}: {same}");
    }
    assert_eq!(outputs_on(NODES[0]).await, Some(job.chunks), "node 1 holds every chunk");
    let total = format!("SELECT sum(rows) FROM {db}.outputs_local FINAL WHERE job_id = '{id}'");
    for node in NODES {
        assert_eq!(ask(node, &total).await, Some(format!("{}\n", job.rows)), "{node}");
    }
    // The parts and the outputs rows (read through node 1's Distributed table): every
    // input row once.
    assert_eq!(data.assert_exactly_once(&job).await, job.rows);
}
