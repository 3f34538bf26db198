//! The broker stopped and started again in the middle of a job (its own test binary: the
//! other binaries never run while it is down). Consumers and the producer reconnect by
//! themselves; nothing is lost or doubled.

use shardflow_testkit::dataset as common;

use std::time::{Duration, Instant};

use common::{Dataset, services};
use indicatif::ProgressBar;
use shardflow_jobs::publish::Publisher;

const TIMEOUT: Duration = Duration::from_secs(180);

/// The broker is down while this lives; it is started again on drop, even on panic.
struct Outage;

impl Drop for Outage {
    fn drop(&mut self) {
        services("start-kafka");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_job_loses_and_doubles_nothing() {
    let data = Dataset::new("broker_restart", 800_000, 1_000, |_| {}).await;
    let publisher = Publisher::new(&data.env.config, data.index.clone()).await.expect("publisher");
    let _worker = data.consumer();
    let job = publisher.publish(&data.shard, &data.model, &ProgressBar::hidden()).await.expect("publish");
    data.wait_indexed(&job.job_id, 10, TIMEOUT).await;

    services("stop-kafka");
    let outage = Outage;
    let in_flight = data.indexed(&job.job_id).await;
    assert!(in_flight < job.chunks, "the job should still be in flight ({in_flight}/{})", job.chunks);
    drop(outage);

    let back = Instant::now();
    data.wait_indexed(&job.job_id, job.chunks, TIMEOUT).await;
    data.assert_exactly_once(&job).await;
    // The same producer publishes again without being rebuilt.
    let again =
        publisher.publish(&data.shard, &data.model, &ProgressBar::hidden()).await.expect("publish after restart");
    data.wait_indexed(&again.job_id, again.chunks, TIMEOUT).await;
    data.assert_exactly_once(&again).await;
    println!(
        "broker restart: {in_flight}/{} chunks done at the stop; job finished {:.1} s after restart",
        job.chunks,
        back.elapsed().as_secs_f64()
    );
}
