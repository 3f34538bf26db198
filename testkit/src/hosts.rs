//! Many machines on one: each "host" a working directory of its own with its own config
//! file (relative local roots resolve inside it) and the processes started there.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use shardflow_config::Config;
use tokio::process::{Child, Command};

use crate::bin;

/// One host: a working directory with its own config file.
pub struct Host {
    /// The working directory.
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
}

impl Host {
    /// `root/name`, with a `data` directory and `config` written as `config.toml`.
    ///
    /// # Panics
    /// When the directory or the file cannot be made (tests only).
    pub fn new(root: &Path, name: &str, config: &Config) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("data")).expect("host dir");
        let path = dir.join("config.toml");
        std::fs::write(&path, toml::to_string(config).expect("config as TOML")).expect("write config");
        Self { dir, config: path }
    }

    /// A consumer host: `config` with `consumer.listen` on a free port of its own; the
    /// host and the URL of its `/metrics`.
    pub fn consumer(root: &Path, name: &str, config: &Config) -> (Self, String) {
        let mut config = config.clone();
        config.consumer.listen = format!("127.0.0.1:{}", crate::dataset::free_port()).parse().expect("address");
        (Self::new(root, name, &config), format!("http://{}/metrics", config.consumer.listen))
    }

    /// Start `binary` with `args` in the host's directory, with its config; killed on drop.
    ///
    /// # Panics
    /// When the binary cannot be started (tests only).
    pub fn start(&self, binary: &str, args: &[&str]) -> Child {
        self.command(binary, args)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"))
    }

    /// The command [`Host::start`] runs, to run it to its end instead.
    pub fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut command = Command::new(bin(binary));
        command
            .current_dir(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", std::env::var("SHARDFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()));
        command
    }
}

/// The partitions a consumer's group members hold, from its `/metrics`.
pub async fn assigned_partitions(client: &reqwest::Client, metrics: &str) -> Option<i64> {
    let text = client.get(metrics).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("shardflow_consumer_assigned_partitions ")?.trim().parse().ok())
}

/// Wait until the consumers behind `metrics` hold every one of `partitions`, each some: then
/// each does part of whatever is published next.
///
/// # Panics
/// When they do not within `timeout` (tests only).
pub async fn wait_for_every_member(metrics: &[&str], partitions: i32, timeout: std::time::Duration) {
    let client = reqwest::Client::new();
    crate::eventually("every consumer to hold partitions", timeout, || {
        let client = client.clone();
        let metrics: Vec<String> = metrics.iter().map(|m| (*m).to_string()).collect();
        async move {
            let mut held = Vec::new();
            for m in &metrics {
                held.push(assigned_partitions(&client, m).await?);
            }
            (held.iter().all(|&h| h > 0) && held.iter().sum::<i64>() == i64::from(partitions)).then_some(())
        }
    })
    .await;
}
