//! Test support: every test gets its own topic, consumer group, ClickHouse database and
//! directory, against the real services on loopback, and they are removed when the test
//! ends, also when it fails ([`TestEnv`]'s `Drop`); on a ClickHouse cluster
//! (`clickhouse.cluster`) the database is dropped `ON CLUSTER`, from every node.
#![warn(missing_docs)]

pub mod dataset;
pub mod hosts;
pub mod http;
pub mod objects;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use tokio::process::{Child, Command};

use shardflow_config::Config;

/// An isolated environment for one test.
pub struct TestEnv {
    /// Holds `data/` (the data root, with `outputs/` and `models/`) and `config.toml`.
    pub dir: tempfile::TempDir,
    /// The configuration pointing at this test's topic, database and directories.
    pub config: Config,
    /// `config` written as TOML, for child processes (`--config`).
    pub config_path: PathBuf,
}

impl TestEnv {
    /// A fresh environment; `name` goes into the topic and database names.
    ///
    /// # Panics
    /// When the temporary directory cannot be made (tests only).
    pub fn new(name: &str) -> Self {
        Self::with(name, |_| {})
    }

    /// As [`TestEnv::new`], with the configuration adjusted by `adjust` before it is written.
    ///
    /// # Panics
    /// When the temporary directory cannot be made (tests only).
    pub fn with(name: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let unique = format!("{name}_{}_{}", std::process::id(), shardflow_store::version_now() % 1_000_000_000);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let mut config = Config::load(None).expect("default configuration");
        config.kafka.topic = format!("test.{unique}");
        config.kafka.group_id = format!("test.{unique}");
        config.game_rounds.topic = format!("test.rounds.{unique}");
        config.game_rounds.group_id = format!("test.rounds.{unique}");
        config.clickhouse.database = format!("test_{unique}");
        config.storage.data_roots = vec![data.clone().into()];
        config.storage.output_root = data.join("outputs").into();
        config.storage.model_root = data.join("models").into();
        config.api.listen = "127.0.0.1:0".parse().expect("address");
        config.api.poll_interval = Duration::from_millis(50);
        config.consumer.retry_backoff = Duration::from_millis(100);
        config.consumer.retry_backoff_max = Duration::from_secs(2);
        adjust(&mut config);
        config.check().expect("test configuration is valid");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config as TOML")).expect("write config");
        Self { dir, config, config_path }
    }

    /// The (first local) data root.
    ///
    /// # Panics
    /// When the test configured no local data root.
    pub fn data(&self) -> &Path {
        self.config.storage.local_data_root().expect("a local data root")
    }

    /// The output root, a local directory.
    ///
    /// # Panics
    /// When the test put its output root in an object store.
    pub fn output_root(&self) -> &Path {
        self.config.storage.output_root.local().expect("a local output root")
    }

    /// The model root, a local directory.
    ///
    /// # Panics
    /// When the test put its model root in an object store.
    pub fn model_root(&self) -> &Path {
        self.config.storage.model_root.local().expect("a local model root")
    }

    /// Run a query returning one number on this test's database.
    ///
    /// # Panics
    /// When ClickHouse refuses (tests only).
    pub async fn count(&self, sql: &str) -> u64 {
        clickhouse::Client::default()
            .with_url(self.config.clickhouse.url.as_str())
            .with_database(&self.config.clickhouse.database)
            .with_validation(false)
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for TestEnv {
    /// Drop the test's database and delete its topics, on success and on failure alike, so
    /// that `SHOW DATABASES` after `make test` lists none of them. The directory goes with
    /// `dir`. Runs on a thread of its own: `Drop` may run inside the test's runtime.
    fn drop(&mut self) {
        let config = self.config.clone();
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let database = &config.clickhouse.database;
                // On a cluster, on every node (waiting at most 20 s for the others).
                let on_cluster = config.clickhouse.cluster.as_ref().map(|c| format!(" ON CLUSTER {c}"));
                let dropped = clickhouse::Client::default()
                    .with_url(config.clickhouse.url.as_str())
                    .with_user(&config.clickhouse.user)
                    .with_password(&config.clickhouse.password)
                    .with_setting("distributed_ddl_task_timeout", "20")
                    .query(&format!("DROP DATABASE IF EXISTS {database}{}", on_cluster.unwrap_or_default()))
                    .execute()
                    .await;
                if let Err(e) = dropped {
                    eprintln!("testkit: could not drop database {database}: {e}");
                }
                let topics = test_topics(&config);
                let admin: Option<AdminClient<DefaultClientContext>> =
                    rdkafka::ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create().ok();
                if let Some(admin) = admin {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                    match tokio::time::timeout(Duration::from_secs(15), admin.delete_topics(&names, &options)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => eprintln!("testkit: could not delete topics {names:?}: {e}"),
                        Err(_) => eprintln!("testkit: deleting topics {names:?} timed out"),
                    }
                }
                Some(())
            })
        });
        let _ = cleaned.join();
    }
}

/// `n` as a non-zero count, for test configurations (`c.publish.chunk_rows = nz(1_000)`).
///
/// # Panics
/// When `n` is 0.
pub fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("a non-zero count")
}

/// Every topic a test's configuration names: chunks, game rounds and their dead letters.
pub fn test_topics(config: &Config) -> Vec<String> {
    let (chunks, rounds) = (&config.kafka.topic, &config.game_rounds.topic);
    vec![
        chunks.clone(),
        config.consumer.dead_letter_topic(chunks),
        rounds.clone(),
        config.consumer.dead_letter_topic(rounds),
    ]
}

/// The path of one of the workspace's binaries (`producer`, `consumer`), built beside the
/// test binary by `cargo test --workspace` (or `cargo build --bins`).
///
/// # Panics
/// When it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing: build it with `cargo build --bins` (make test does)", path.display());
    path
}

/// The Python of the test venv (`.services/venv`, made by `scripts/pytools.sh`), or the
/// one `SHARDFLOW_PYTHON` names.
///
/// # Panics
/// When it is missing (tests only).
pub fn python() -> PathBuf {
    let python = std::env::var_os("SHARDFLOW_PYTHON")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.services/venv/bin/python"), PathBuf::from);
    assert!(python.is_file(), "{} is missing: run scripts/pytools.sh (make test does)", python.display());
    python
}

/// Start a `consumer` with the test's configuration, its arguments `args` (a subcommand
/// and flags) and environment `env`; killed when dropped. Logs at `SHARDFLOW_TEST_LOG`
/// (default `warn`) on stderr.
///
/// # Panics
/// When it cannot be started.
pub fn consumer(config_path: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(bin("consumer"))
        .arg("--config")
        .arg(config_path)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", std::env::var("SHARDFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start consumer")
}

/// Poll `check` until it returns `Some`, or panic with `what` after `timeout`.
///
/// # Panics
/// When the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Messages on `topic`, over every partition (`config`'s partition count).
///
/// # Panics
/// When the broker does not answer (tests only).
pub async fn messages(config: &Config, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (brokers, topic, partitions) = (config.kafka.brokers.clone(), topic.to_string(), config.kafka.partitions);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("a Kafka client");
        (0..partitions)
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).expect("watermarks");
                high - low
            })
            .sum()
    })
    .await
    .expect("watermarks task")
}

/// Whether `group` has committed every partition of `topic` up to its end.
fn caught_up(brokers: &str, group: &str, topic: &str, partitions: i32) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let Ok(consumer) = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(5)) else { return false };
    (0..partitions).all(|p| {
        let high = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).map(|(_, high)| high);
        let done = committed.find_partition(topic, p).map(|e| e.offset());
        match (high, done) {
            (Ok(0), _) => true,
            (Ok(high), Some(Offset::Offset(done))) => done >= high,
            _ => false,
        }
    })
}

/// Poll until consumer group `group` has committed every partition of `topic` (with
/// `config`'s partition count) up to its end.
///
/// # Panics
/// After `timeout`.
pub async fn wait_caught_up(config: &Config, group: &str, topic: &str, timeout: Duration) {
    let (brokers, partitions) = (config.kafka.brokers.clone(), config.kafka.partitions);
    eventually(&format!("group {group} to commit the whole of {topic}"), timeout, || {
        let (brokers, topic, group) = (brokers.clone(), topic.to_string(), group.to_string());
        async move {
            tokio::task::spawn_blocking(move || caught_up(&brokers, &group, &topic, partitions))
                .await
                .ok()?
                .then_some(())
        }
    })
    .await;
}
