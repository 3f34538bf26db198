//! Test support (feature `testing`): every test gets its own topic, consumer group,
//! ClickHouse database and directory, against the real services on loopback.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Config;

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
        let unique = format!("{name}_{}_{}", std::process::id(), crate::index::version_now() % 1_000_000_000);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let mut config = Config::load(None).expect("default configuration");
        config.kafka.topic = format!("test.{unique}");
        config.kafka.group_id = format!("test.{unique}");
        config.game_rounds.topic = format!("test.rounds.{unique}");
        config.game_rounds.group_id = format!("test.rounds.{unique}");
        config.clickhouse.database = format!("test_{unique}");
        config.storage.data_roots = vec![data.clone()];
        config.storage.output_root = data.join("outputs");
        config.storage.model_root = data.join("models");
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

    /// The data root.
    pub fn data(&self) -> &Path {
        &self.config.storage.data_roots[0]
    }

    /// Run a query returning one number on this test's database.
    ///
    /// # Panics
    /// When ClickHouse refuses (tests only).
    pub async fn count(&self, sql: &str) -> u64 {
        clickhouse::Client::default()
            .with_url(&self.config.clickhouse.url)
            .with_database(&self.config.clickhouse.database)
            .with_validation(false)
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
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
