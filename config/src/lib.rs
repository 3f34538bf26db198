//! Typed configuration: `config/default.toml` (embedded), then an optional file (`--config`
//! or `SHARDFLOW_CONFIG`), then `SHARDFLOW__SECTION__KEY` environment variables; and the
//! logging set-up every binary shares ([`telemetry`]).
#![warn(missing_docs)]

pub mod telemetry;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
pub use shardflow_model::FitStrategy;
use shardflow_model::{ColumnKind, ColumnSpec, InferenceParams, MixtureParams, Tail};
pub use shardflow_storage::objects::{Location, Options};
pub use url::Url;

/// The defaults every layer starts from.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// All of shardflow's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker and topic.
    pub kafka: KafkaConfig,
    /// The index database.
    pub clickhouse: ClickHouseConfig,
    /// Where files may be read and written.
    pub storage: StorageConfig,
    /// How shards are cut into messages.
    pub publish: PublishConfig,
    /// How models are fitted.
    pub fit: FitConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// The workers.
    pub consumer: ConsumerConfig,
    /// The game-rounds pipeline (CSV upload, `staging-bets` topic, ClickHouse sink).
    pub game_rounds: GameRoundsConfig,
    /// Where the OpenLineage events of every stage go besides ClickHouse.
    pub lineage: LineageConfig,
}

/// Kafka connection and topic.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic the chunks travel on.
    pub topic: String,
    /// Partitions the topic is created with; bounds how many workers share a job.
    pub partitions: i32,
    /// Consumer group of the workers.
    pub group_id: String,
    /// Largest message the producer sends.
    pub message_max_bytes: usize,
    /// Bytes a consumer member prefetches at most.
    pub prefetch_bytes: usize,
    /// librdkafka's `max.poll.interval.ms`, also the rebalance timeout: how long a member
    /// may go without polling before it leaves the group (at least 10 s, the session
    /// timeout). A member waiting to retry keeps polling, so this bounds only stalls.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// librdkafka's `message.timeout.ms`: how long a producer keeps trying to deliver a
    /// message (through broker restarts) before the publish fails.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

/// ClickHouse over HTTP.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// Base URL of the HTTP interface.
    pub url: Url,
    /// Database holding shardflow's tables; created at start.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Longest wait for one call; a slower call fails and is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The ClickHouse cluster (a `remote_servers` name) to create the tables on, replicated,
    /// with `Distributed` tables over them; unset for one server (see `docs/cluster.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Other nodes' HTTP URLs, tried in order when `url` does not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_urls: Vec<Url>,
}

/// Where inputs, outputs and models live: local directories or object-store prefixes
/// (`s3://`, `az://`, `gs://`; see `docs/storage.md`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Inputs clients name (paths or URLs) must lie under one of these. Uploads and
    /// generated shards are written under the first local one.
    pub data_roots: Vec<Location>,
    /// Transform and inverse outputs go here.
    pub output_root: Location,
    /// Fitted models go here, one directory (or prefix) per model id.
    pub model_root: Location,
    /// Uploads and generated shards older than this are removed (unless an unfinished job
    /// reads them); 0 keeps them for ever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Options of the S3 client (object_store's keys: `aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`, ...), on top of the
    /// `AWS_*` environment variables.
    #[serde(default)]
    pub s3: BTreeMap<String, String>,
    /// Options of the Azure Blob client (`azure_storage_account_name`,
    /// `azure_storage_account_key`, `azure_storage_use_emulator`, ...), on top of `AZURE_*`.
    #[serde(default)]
    pub azure: BTreeMap<String, String>,
    /// Options of the Google Cloud Storage client (`google_service_account_key`, ...), on
    /// top of `GOOGLE_*`.
    #[serde(default)]
    pub gcs: BTreeMap<String, String>,
}

impl StorageConfig {
    /// The object stores' client options.
    pub fn options(&self) -> Options {
        Options { s3: self.s3.clone(), azure: self.azure.clone(), gcs: self.gcs.clone() }
    }

    /// The first local data root: where uploads and generated shards are written.
    pub fn local_data_root(&self) -> Option<&Path> {
        self.data_roots.iter().find_map(Location::local)
    }
}

/// Publishing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Rows per chunk (one Kafka message).
    pub chunk_rows: NonZeroUsize,
    /// Chunks awaiting delivery reports at once.
    pub max_in_flight: NonZeroUsize,
    /// Jobs the API publishes at once; later ones wait for a slot. Each holds a shard
    /// reader and up to `max_in_flight` chunks, so this bounds the API's memory however
    /// many jobs are submitted.
    pub max_jobs: NonZeroUsize,
    /// The chunks' wire format.
    #[serde(default)]
    pub wire: WireFormat,
}

/// How chunks are encoded on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// An Avro Object Container File per chunk, any table (`format: avro-ocf/2`).
    #[default]
    Ocf,
    /// Version 1: one Avro datum of `shardflow.AmountChunk`, `Amount` only; for a rolling
    /// upgrade whose workers are not all new yet, and to measure the codec change.
    AmountDatum,
}

impl PublishConfig {
    /// Largest message a chunk of `chunk_rows` rows makes: 9 bytes per nullable double
    /// plus framing.
    pub fn largest_message(chunk_rows: usize) -> usize {
        chunk_rows.saturating_mul(9).saturating_add(64)
    }
}

/// Fitting.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitConfig {
    /// Rows sampled from each shard.
    pub sample_rows_per_shard: NonZeroUsize,
    /// How the shards' samples make one model.
    pub strategy: FitStrategy,
    /// Mixture hyper-parameters; its seed also seeds the row sample.
    pub mixture: MixtureParams,
    /// Columns to fit, in order; empty: every column of the first shard.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Column kinds the dataset gives; columns not named here are inferred.
    #[serde(default)]
    pub kinds: BTreeMap<String, ColumnKind>,
    /// Modal values of mixed columns (naming a column here makes it mixed); a mixed
    /// column not named here has its modes inferred.
    #[serde(default)]
    pub modes: BTreeMap<String, Vec<f64>>,
    /// Tail transforms of continuous and mixed columns (`log` or `none`); a column not
    /// named here gets the log when it is positive and heavily skewed
    /// (`inference.log_tail_min_skewness`). Applies to the `Amount` dataset too.
    #[serde(default)]
    pub tails: BTreeMap<String, Tail>,
    /// How kinds are inferred.
    #[serde(default)]
    pub inference: InferenceParams,
    /// A fit on the consumer group (`producer fit --on-group`) fails when its members have
    /// not answered every task of a pass within this long.
    #[serde(default = "default_group_timeout", with = "humantime_serde")]
    pub group_timeout: Duration,
}

fn default_group_timeout() -> Duration {
    Duration::from_secs(600)
}

impl FitConfig {
    /// What the configuration says about `column`.
    pub fn spec(&self, column: &str) -> ColumnSpec {
        ColumnSpec {
            kind: self.kinds.get(column).copied(),
            modes: self.modes.get(column).cloned(),
            tail: self.tails.get(column).copied(),
        }
    }

    /// Whether any column is named (`columns`, `kinds` or `modes`): then the dataset is
    /// fitted column by column, not as the single-column `Amount` dataset.
    pub fn names_columns(&self) -> bool {
        !self.columns.is_empty() || !self.kinds.is_empty() || !self.modes.is_empty()
    }

    fn check(&self) -> Result<(), String> {
        self.mixture.clone().check().map_err(|e| format!("fit.mixture: {e}"))?;
        self.inference.check().map_err(|e| format!("fit.inference: {e}"))?;
        let listed = |name: &String| self.columns.is_empty() || self.columns.contains(name);
        let named = self.kinds.keys().map(|n| ("kinds", n)).chain(self.modes.keys().map(|n| ("modes", n)));
        for (table, name) in named.chain(self.tails.keys().map(|n| ("tails", n))) {
            if !listed(name) {
                return Err(format!("fit.{table} names `{name}`, which fit.columns does not list"));
            }
        }
        for (name, modes) in &self.modes {
            match self.kinds.get(name) {
                None | Some(ColumnKind::Mixed) => {}
                Some(kind) => return Err(format!("fit.modes gives modes for `{name}`, but fit.kinds makes it {kind}")),
            }
            if modes.is_empty() || modes.iter().any(|m| !m.is_finite()) {
                return Err(format!("fit.modes.{name} must list finite values (nulls get their own slot anyway)"));
            }
        }
        for (name, tail) in &self.tails {
            if *tail == Tail::Log && self.kinds.get(name) == Some(&ColumnKind::Categorical) {
                return Err(format!("fit.tails gives `{name}` a log tail, but fit.kinds makes it categorical"));
            }
        }
        Ok(())
    }
}

/// The HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long `POST /transforming_data` waits for a job.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// How often a waiting request reads the job's progress.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Bearer token every mutating route requires; absent: no token required, which is
    /// allowed only when `listen` is a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Bearer token the reads that expose per-player sums, models and server paths
    /// require (`token` is accepted too); absent: those reads are open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token: Option<Secret>,
    /// Largest upload accepted (`POST /shards`, `POST /csv_upload`); larger gets 413.
    pub max_upload_bytes: u64,
    /// Most rows one `POST /jobs` may generate.
    pub max_generated_rows: u64,
    /// How long an upload's `Idempotency-Key` names it: a retry with the key within this
    /// time gets the first upload back.
    #[serde(with = "humantime_serde")]
    pub idempotency_key_ttl: Duration,
    /// Without a key, the same content from the same client address within this time is
    /// the same upload; 0 turns this off.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// A request body that sends no byte for this long is answered 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A client that has not sent its whole request head (line and headers) this long
    /// after connecting, or after its previous response, is disconnected.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest header block of one part of a multipart upload (and of the preamble).
    pub max_part_header_bytes: u64,
    /// Most parts in one multipart upload.
    pub max_parts: usize,
    /// Largest form field of a multipart upload other than the file.
    pub max_field_bytes: u64,
    /// Longest CSV record (row) of an upload: a shard with a longer one is refused, a
    /// game-rounds row longer is a bad row.
    pub max_record_bytes: u64,
}

impl ApiConfig {
    /// The mutating token, when one is set and not empty.
    pub fn write_token(&self) -> Option<&str> {
        self.token.as_ref().map(Secret::expose).filter(|t| !t.is_empty())
    }

    /// The read token, when one is set and not empty.
    pub fn read_token(&self) -> Option<&str> {
        self.read_token.as_ref().map(Secret::expose).filter(|t| !t.is_empty())
    }

    /// Why serving as configured would be unsafe: listening beyond loopback with no token
    /// lets anyone on the network submit jobs and uploads.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with a one-line reason.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.listen.ip().is_loopback() || self.write_token().is_some() {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "api.listen = {} is reachable beyond this machine and api.token is not set: set one \
             (SHARDFLOW__API__TOKEN=...) or listen on 127.0.0.1",
            self.listen
        )))
    }
}

/// The game-rounds pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameRoundsConfig {
    /// Topic the rounds travel on, one Avro record per message.
    pub topic: String,
    /// Consumer group of the ClickHouse sink.
    pub group_id: String,
    /// The sink inserts when it holds this many rows...
    pub batch_rows: NonZeroUsize,
    /// ...or when its oldest row has waited this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A Confluent Schema Registry to number schemas; absent: shardflow numbers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_url: Option<Url>,
    /// Longest wait for one Schema Registry call; a slower one fails and is retried.
    #[serde(with = "humantime_serde")]
    pub schema_registry_timeout: Duration,
}

/// OpenLineage events: always kept in ClickHouse `lineage_events`; also sent to an
/// OpenLineage HTTP endpoint (Marquez's API, for example) when `url` is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageConfig {
    /// The namespace of shardflow's jobs in the events.
    pub namespace: String,
    /// Base URL of an OpenLineage HTTP endpoint; events are POSTed to
    /// `<url>/api/v1/lineage`. Absent: ClickHouse only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Url>,
    /// Longest wait for one POST.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts at one event the endpoint refuses with a 5xx or does not answer, with
    /// backoff doubling from 200 ms; then it is dropped with a warning (ClickHouse has it).
    pub max_attempts: std::num::NonZeroU32,
    /// Events waiting to be sent; past it new ones are dropped with a warning.
    pub queue: NonZeroUsize,
}

/// The workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// First wait before retrying a failed chunk.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Attempts at a message that keeps failing for a reason that may pass (a server
    /// error, a part that cannot be written) before it is dead-lettered with the last
    /// reason. Unreachable services do not count: those are waited for.
    pub retry_max_attempts: std::num::NonZeroU32,
    /// How long a SIGTERM waits for in-flight work before abandoning it.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Address of the worker's /metrics, /healthz and /readyz.
    pub listen: SocketAddr,
    /// Dead-letter topic is the chunk topic plus this.
    pub dead_letter_suffix: String,
}

impl ConsumerConfig {
    /// The dead-letter topic for `topic`.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.dead_letter_suffix)
    }
}

/// A value that must not be logged: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that compares or sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer does not parse or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// Values that parse but do not make sense together.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` when given, then the environment; checked.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key at fault.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Self = figment.merge(Env::prefixed("SHARDFLOW__").split("__")).extract().map_err(Box::new)?;
        config.check()?;
        Ok(config)
    }

    /// Check combinations of values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] saying which value to change.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !is_identifier(&self.clickhouse.database) {
            return bad(format!(
                "clickhouse.database `{}` must be letters, digits and underscores",
                self.clickhouse.database
            ));
        }
        if let Some(cluster) = self.clickhouse.cluster.as_deref().filter(|c| !is_identifier(c)) {
            return bad(format!("clickhouse.cluster `{cluster}` must be letters, digits and underscores"));
        }
        if !self.clickhouse.fallback_urls.is_empty() && self.clickhouse.cluster.is_none() {
            return bad("clickhouse.fallback_urls needs clickhouse.cluster: a lone server has no other node".into());
        }
        if self.kafka.max_poll_interval < Duration::from_secs(10) {
            return bad(format!(
                "kafka.max_poll_interval = {:?} is below the session timeout (10 s), which librdkafka refuses",
                self.kafka.max_poll_interval
            ));
        }
        if self.kafka.delivery_timeout < Duration::from_secs(1) {
            return bad("kafka.delivery_timeout must be at least 1 s (it outlasts the producer's 50 ms linger)".into());
        }
        if self.kafka.partitions < 1 {
            return bad("kafka.partitions must be at least 1".into());
        }
        if self.storage.local_data_root().is_none() {
            return bad(
                "storage.data_roots must name at least one local directory (uploads and generated shards go there)"
                    .into(),
            );
        }
        self.storage.options().check().map_err(ConfigError::Invalid)?;
        let largest = PublishConfig::largest_message(self.publish.chunk_rows.get());
        if largest > self.kafka.message_max_bytes {
            return bad(format!(
                "publish.chunk_rows = {} makes messages of up to {largest} bytes, above kafka.message_max_bytes = {}",
                self.publish.chunk_rows, self.kafka.message_max_bytes
            ));
        }
        if self.kafka.prefetch_bytes < self.kafka.message_max_bytes {
            return bad(format!(
                "kafka.prefetch_bytes = {} must hold at least one message (kafka.message_max_bytes = {})",
                self.kafka.prefetch_bytes, self.kafka.message_max_bytes
            ));
        }
        self.fit.check().map_err(ConfigError::Invalid)?;
        if self.consumer.retry_backoff > self.consumer.retry_backoff_max {
            return bad("consumer.retry_backoff must not exceed consumer.retry_backoff_max".into());
        }
        if self.game_rounds.topic.is_empty() {
            return bad("game_rounds.topic must be named".into());
        }
        if self.api.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            return bad("api.token must not be empty: leave it out to require no token".into());
        }
        if self.api.body_timeout.is_zero() || self.api.header_timeout.is_zero() {
            return bad("api.body_timeout and api.header_timeout must be longer than 0 s".into());
        }
        if self.api.max_parts == 0 || self.api.max_part_header_bytes == 0 || self.api.max_record_bytes == 0 {
            return bad("api.max_parts, api.max_part_header_bytes and api.max_record_bytes must be at least 1".into());
        }
        if self.consumer.dead_letter_suffix.is_empty() {
            return bad("consumer.dead_letter_suffix must not be empty: dead letters need their own topic".into());
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_check() {
        let config = Config::load(None).expect("defaults are valid");
        assert_eq!(config.publish.chunk_rows.get(), 65_536);
        assert_eq!(config.api.wait_timeout, Duration::from_secs(600));
        assert_eq!(config.fit.mixture.n_components, 10);
        assert_eq!((config.api.token, config.game_rounds.schema_registry_url), (None, None));
        assert_eq!(config.clickhouse.url.as_str(), "http://127.0.0.1:8123/");
    }

    #[test]
    fn secrets_and_urls_are_typed() {
        let set = "[api]\ntoken = \"s3cret\"\n[game_rounds]\nschema_registry_url = \"http://registry:8081\"\n";
        let config: Config =
            Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(set)).extract().expect("loads");
        let token = config.api.token.clone().expect("token");
        assert_eq!(token.expose(), "s3cret");
        assert_eq!(format!("{token:?}"), "Secret(***)");
        assert_eq!(
            config.game_rounds.schema_registry_url.map(|u| u.host_str().map(String::from)),
            Some(Some("registry".into()))
        );
        let bad = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[clickhouse]\nurl = \"not a url\""));
        assert!(bad.extract::<Config>().is_err(), "a malformed URL is refused when loading");
        let empty = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[api]\ntoken = \"\"\n"));
        let config: Config = empty.extract().expect("parses");
        assert!(config.check().expect_err("empty token").to_string().contains("leave it out"));
    }

    #[test]
    fn the_shipped_files_load() {
        // compose.toml for docker-compose.yml; k8s.toml (a link into deploy/k8s/base) for the
        // Kubernetes ConfigMap.
        for file in ["compose.toml", "k8s.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(config.kafka.brokers, "kafka:9092", "{file}");
        }
    }

    #[test]
    fn rejects_unknown_keys_and_bad_combinations() {
        let typo = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[kafka]\nbrokerz = \"x\""));
        assert!(typo.extract::<Config>().is_err());
        let zero = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[publish]\nchunk_rows = 0"));
        let err = zero.extract::<Config>().expect_err("zero rows per chunk");
        assert!(err.to_string().contains("nonzero"), "{err}");

        let mut config = Config::load(None).expect("defaults");
        config.publish.chunk_rows = NonZeroUsize::new(10_000_000).expect("not zero");
        let err = config.check().expect_err("too large for a message");
        assert!(err.to_string().contains("kafka.message_max_bytes"), "{err}");

        let mut config = Config::load(None).expect("defaults");
        config.clickhouse.database = "x; DROP TABLE y".into();
        assert!(config.check().is_err());

        let mut config = Config::load(None).expect("defaults");
        config.clickhouse.cluster = Some("shardflow ON CLUSTER x".into());
        assert!(config.check().expect_err("not a name").to_string().contains("clickhouse.cluster"));
        config.clickhouse.cluster = None;
        config.clickhouse.fallback_urls = vec!["http://127.0.0.1:9121".parse().expect("URL")];
        assert!(config.check().expect_err("no cluster").to_string().contains("fallback_urls"));
        config.clickhouse.cluster = Some("shardflow".into());
        assert!(config.check().is_ok());
    }

    #[test]
    fn fit_tails_load_and_are_checked() {
        let config: Config = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[fit.tails]\nAmount = \"log\"\nrooms = \"none\"\n"))
            .extract()
            .expect("loads");
        config.check().expect("valid");
        assert_eq!(config.fit.spec("Amount").tail, Some(Tail::Log));
        assert_eq!(config.fit.spec("rooms").tail, Some(Tail::None));
        assert_eq!(config.fit.spec("other").tail, None);
        assert!(!config.fit.names_columns(), "a tail alone keeps the Amount dataset");
        let typo = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[fit.tails]\nAmount = \"ln\""));
        assert!(typo.extract::<Config>().is_err(), "unknown tails are refused");
        let mut config = config;
        config.fit.kinds.insert("Amount".into(), ColumnKind::Categorical);
        let err = config.check().expect_err("a categorical column has no tail");
        assert!(err.to_string().contains("fit.tails gives `Amount` a log tail"), "{err}");
    }

    #[test]
    fn fit_kinds_and_modes_load_and_are_checked() {
        let dataset = "[fit]\ncolumns = [\"city\", \"balance\"]\n[fit.kinds]\ncity = \"categorical\"\n\
                       [fit.modes]\nbalance = [0.0]\n";
        let config: Config =
            Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(dataset)).extract().expect("loads");
        config.check().expect("valid");
        assert_eq!(config.fit.spec("city").kind, Some(ColumnKind::Categorical));
        assert_eq!(config.fit.spec("balance").modes, Some(vec![0.0]));
        assert!(config.fit.names_columns());
        assert!(!Config::load(None).expect("defaults").fit.names_columns());

        let typo = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[fit.kinds]\ncity = \"nominal\""));
        assert!(typo.extract::<Config>().is_err(), "unknown kinds are refused");

        let mut config = config;
        config.fit.kinds.insert("balance".into(), ColumnKind::Continuous);
        let err = config.check().expect_err("modes on a continuous column");
        assert_eq!(
            err.to_string(),
            "configuration: fit.modes gives modes for `balance`, but fit.kinds makes it continuous"
        );
        config.fit.kinds.insert("zip".into(), ColumnKind::Categorical);
        let err = config.check().expect_err("not listed");
        assert!(err.to_string().contains("fit.kinds names `zip`, which fit.columns does not list"), "{err}");
    }
}
