//! Roots that are directories or prefixes in an object store.
//!
//! A [`Location`] is what configuration names: a plain path or `file://` URL (a local
//! directory), or `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`.
//! [`Root::open`] turns one into something that can be read and written: a local
//! directory, or an [`ObjectRoot`] with its `object_store` client, built from the
//! environment (`AWS_*`, `AZURE_*`, `GOOGLE_*`, as object_store reads them) with the
//! configured [`Options`] on top.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as Key;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::PathError;

/// A directory or an object-store prefix, as configuration names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory (a plain path, or a `file://` URL).
    Local(PathBuf),
    /// `s3://`, `az://` or `gs://`, the bucket or container as host, the prefix as path;
    /// kept without a trailing slash.
    Remote(Url),
}

/// Why a location cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Not a URL of a known scheme.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// The store's client cannot be built from the options given.
    #[error("{url}: {reason}")]
    Store {
        /// The location.
        url: String,
        /// object_store's reason.
        reason: String,
    },
}

/// Schemes of object stores, and what each is.
const SCHEMES: [(&str, &str); 3] = [("s3", "S3"), ("az", "Azure Blob"), ("gs", "Google Cloud Storage")];

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| LocationError::Invalid(s.to_string(), why.to_string());
        if !s.contains("://") {
            if s.is_empty() {
                return Err(invalid("an empty path"));
            }
            return Ok(Location::Local(PathBuf::from(s)));
        }
        let url = Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
        match url.scheme() {
            "file" => url.to_file_path().map(Location::Local).map_err(|()| invalid("not a local file URL")),
            scheme if SCHEMES.iter().any(|(known, _)| *known == scheme) => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(invalid("names no bucket or container"));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid("a root has no query or fragment"));
                }
                let mut url = url;
                let trimmed = url.path().trim_end_matches('/').to_string();
                url.set_path(&trimmed);
                Ok(Location::Remote(url))
            }
            other => Err(invalid(&format!("unknown scheme {other}: use a path, file://, s3://, az:// or gs://"))),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Remote(url) => write!(f, "{url}"),
        }
    }
}

impl Serialize for Location {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Local(path)
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Local(path.to_path_buf())
    }
}

impl Location {
    /// The directory, when this is a local one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::Remote(_) => None,
        }
    }

    /// `name` under this location: a path joined, or a URL with one more segment.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(name)),
            Location::Remote(url) => {
                let mut url = url.clone();
                let path = format!("{}/{}", url.path().trim_end_matches('/'), name.trim_start_matches('/'));
                url.set_path(&path);
                Location::Remote(url)
            }
        }
    }
}

/// Options of the object stores' clients: object_store's configuration keys (for example
/// `aws_endpoint`, `aws_access_key_id`, `azure_storage_account_name`,
/// `google_service_account_key`) with string values, applied on top of what the
/// environment gives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// For `s3://` (object_store's `AmazonS3ConfigKey`).
    #[serde(default)]
    pub s3: BTreeMap<String, String>,
    /// For `az://` (object_store's `AzureConfigKey`).
    #[serde(default)]
    pub azure: BTreeMap<String, String>,
    /// For `gs://` (object_store's `GoogleConfigKey`).
    #[serde(default)]
    pub gcs: BTreeMap<String, String>,
}

impl Options {
    /// Check every key against the client it is for, so that a misspelt key is refused
    /// at start rather than silently ignored.
    ///
    /// # Errors
    /// The first unknown key, named with its table.
    pub fn check(&self) -> Result<(), String> {
        use object_store::aws::AmazonS3ConfigKey;
        use object_store::azure::AzureConfigKey;
        use object_store::gcp::GoogleConfigKey;
        let unknown = |table: &str, key: &str| format!("storage.{table}: unknown option {key}");
        for key in self.s3.keys() {
            AmazonS3ConfigKey::from_str(key).map_err(|_| unknown("s3", key))?;
        }
        for key in self.azure.keys() {
            AzureConfigKey::from_str(key).map_err(|_| unknown("azure", key))?;
        }
        for key in self.gcs.keys() {
            GoogleConfigKey::from_str(key).map_err(|_| unknown("gcs", key))?;
        }
        Ok(())
    }
}

/// A prefix in an object store, with the client that reaches it.
#[derive(Clone)]
pub struct ObjectRoot {
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
}

impl fmt::Debug for ObjectRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRoot").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

/// A root opened for use: a local directory or an object-store prefix.
#[derive(Clone, Debug)]
pub enum Root {
    /// A local directory.
    Local(PathBuf),
    /// A prefix in an object store.
    Remote(ObjectRoot),
}

impl Root {
    /// Open `location`: a local directory as it is, a remote one with a client built from
    /// the environment and `options`. Nothing is sent: an unreachable store fails the
    /// first call made with it.
    ///
    /// # Errors
    /// [`LocationError::Store`] when the client cannot be built (a bad option value).
    pub fn open(location: &Location, options: &Options) -> Result<Root, LocationError> {
        match location {
            Location::Local(path) => Ok(Root::Local(path.clone())),
            Location::Remote(url) => ObjectRoot::open(url, options).map(Root::Remote),
        }
    }

    /// Where `relative` (slash-separated) under this root is, as the API answers it: a
    /// path for a local root, a URL for a remote one.
    pub fn display(&self, relative: &str) -> String {
        match self {
            Root::Local(dir) => dir.join(relative).display().to_string(),
            Root::Remote(root) => root.url_of(&root.key(relative)),
        }
    }
}

/// How long a client keeps trying a store that does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// A service's: object_store's defaults (up to 10 retries over 3 minutes), so that a
    /// store restarting does not fail a job.
    Service,
    /// A command a user waits on (`producer convert`): one retry, a 5-second connect
    /// timeout, so that an unreachable store is an error within seconds.
    Command,
}

impl Patience {
    fn retry(self) -> object_store::RetryConfig {
        match self {
            Patience::Service => object_store::RetryConfig::default(),
            Patience::Command => object_store::RetryConfig {
                max_retries: 1,
                retry_timeout: std::time::Duration::from_secs(10),
                ..object_store::RetryConfig::default()
            },
        }
    }

    /// `options` with the patience's client options under them (a configured key wins).
    fn under(self, options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut merged = BTreeMap::new();
        if self == Patience::Command {
            merged.insert("connect_timeout".to_string(), "5s".to_string());
        }
        merged.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }
}

impl ObjectRoot {
    /// A client for `url` (`s3://`, `az://` or `gs://`), as patient as a service.
    ///
    /// # Errors
    /// [`LocationError::Store`] when object_store cannot build the client.
    pub fn open(url: &Url, options: &Options) -> Result<ObjectRoot, LocationError> {
        ObjectRoot::open_with(url, options, Patience::Service)
    }

    /// A client for `url` (`s3://`, `az://` or `gs://`) that retries as `patience` says.
    /// The configured options come after the patience's, so a configured client option
    /// (`timeout`, `connect_timeout`) wins.
    ///
    /// # Errors
    /// [`LocationError::Store`] when object_store cannot build the client.
    pub fn open_with(url: &Url, options: &Options, patience: Patience) -> Result<ObjectRoot, LocationError> {
        use object_store::aws::AmazonS3Builder;
        use object_store::azure::MicrosoftAzureBuilder;
        use object_store::gcp::GoogleCloudStorageBuilder;
        let fail = |reason: String| LocationError::Store { url: url.to_string(), reason };
        let bucket = url.host_str().unwrap_or_default();
        let base = format!("{}://{bucket}", url.scheme());
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" => Arc::new(
                configure(
                    AmazonS3Builder::from_env().with_url(&base).with_retry(patience.retry()),
                    &patience.under(&options.s3),
                    |b: AmazonS3Builder, k, v: String| b.with_config(k, v),
                )
                .map_err(fail)?
                .build()
                .map_err(|e| fail(e.to_string()))?,
            ),
            "az" => Arc::new(
                configure(
                    MicrosoftAzureBuilder::from_env().with_url(&base).with_retry(patience.retry()),
                    &patience.under(&options.azure),
                    |b: MicrosoftAzureBuilder, k, v: String| b.with_config(k, v),
                )
                .map_err(fail)?
                .build()
                .map_err(|e| fail(e.to_string()))?,
            ),
            "gs" => Arc::new(
                configure(
                    GoogleCloudStorageBuilder::from_env().with_url(&base).with_retry(patience.retry()),
                    &patience.under(&options.gcs),
                    |b: GoogleCloudStorageBuilder, k, v: String| b.with_config(k, v),
                )
                .map_err(fail)?
                .build()
                .map_err(|e| fail(e.to_string()))?,
            ),
            other => return Err(fail(format!("unknown scheme {other}"))),
        };
        let prefix = Key::parse(url.path().trim_matches('/')).map_err(|e| fail(e.to_string()))?;
        Ok(ObjectRoot { url: url.clone(), store, prefix })
    }

    /// The client.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The root's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The key of `relative` (slash-separated, already checked) under the prefix.
    pub fn key(&self, relative: &str) -> Key {
        relative.split('/').filter(|s| !s.is_empty()).fold(self.prefix.clone(), |key, part| key.child(part))
    }

    /// The URL of `key` in this root's bucket.
    pub fn url_of(&self, key: &Key) -> String {
        format!("{}://{}/{}", self.url.scheme(), self.url.host_str().unwrap_or_default(), key)
    }

    /// The key a client's URL names, when it lies under this root: same scheme and
    /// bucket, the root's prefix as whole segments, no `.` or `..` segment.
    pub fn confine(&self, requested: &Url) -> Option<Key> {
        if requested.scheme() != self.url.scheme() || requested.host_str() != self.url.host_str() {
            return None;
        }
        if requested.query().is_some() || requested.fragment().is_some() {
            return None;
        }
        let segments: Vec<String> =
            requested.path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect::<Option<_>>()?;
        if segments.iter().any(|s| s == "." || s == ".." || s.contains('/')) {
            return None;
        }
        let key = Key::from_iter(segments.iter().map(String::as_str));
        let under = key.prefix_matches(&self.prefix) && key != self.prefix;
        under.then_some(key)
    }

    /// Put `bytes` at `key` in one request: a reader sees the old object or the whole
    /// new one, never a part, and the same bytes put again change nothing.
    ///
    /// # Errors
    /// The store's error.
    pub async fn put(&self, key: &Key, bytes: bytes::Bytes) -> Result<(), object_store::Error> {
        self.store.put(key, bytes.into()).await.map(|_| ())
    }

    /// Copy the object at `key` into the local file `to`, streaming, through a hidden
    /// temporary renamed into place.
    ///
    /// # Errors
    /// [`PathError::NotFound`] when there is no such object, [`PathError::Store`] for any
    /// other failure of the store or the local disk.
    pub async fn download(&self, key: &Key, to: &Path) -> Result<u64, PathError> {
        use tokio::io::AsyncWriteExt;
        let url = self.url_of(key);
        let failed = |reason: String| PathError::Store { location: url.clone(), reason };
        let result = self.store.get(key).await.map_err(|e| store_error(&url, e))?;
        let dir = to.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.map_err(|e| failed(e.to_string()))?;
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(crate::temporary_name(&name));
        let copied = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| failed(e.to_string()))?;
            let mut stream = result.into_stream();
            let mut bytes = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| store_error(&url, e))?;
                bytes += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(|e| failed(e.to_string()))?;
            }
            file.sync_all().await.map_err(|e| failed(e.to_string()))?;
            tokio::fs::rename(&tmp, to).await.map_err(|e| failed(e.to_string()))?;
            Ok(bytes)
        }
        .await;
        if copied.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        copied
    }

    /// The size of the object at `key`.
    ///
    /// # Errors
    /// [`PathError::NotFound`], or [`PathError::Store`] when the store cannot say.
    pub async fn size(&self, key: &Key) -> Result<u64, PathError> {
        let url = self.url_of(key);
        self.store.head(key).await.map(|meta| meta.size).map_err(|e| store_error(&url, e))
    }
}

/// Every root of a process, opened: where inputs may come from, where outputs and models
/// go.
#[derive(Clone, Debug)]
pub struct Storage {
    /// The data roots, in configured order.
    pub data_roots: Vec<Root>,
    /// The output root (a local one created and made canonical).
    pub output: Root,
    /// The model root.
    pub models: Root,
}

/// An input a client named, confined to the data roots.
#[derive(Clone, Debug)]
pub enum Input {
    /// A local file (canonical path).
    Local(PathBuf),
    /// An object under a remote data root.
    Remote {
        /// The root it lies under.
        root: ObjectRoot,
        /// Its key.
        key: Key,
    },
}

impl Input {
    /// What the job records as its source: the path, or the object's URL.
    pub fn name(&self) -> String {
        match self {
            Input::Local(path) => path.display().to_string(),
            Input::Remote { root, key } => root.url_of(key),
        }
    }

    /// The object's file name (the last segment of its key), for its local copy.
    pub fn file_name(&self) -> String {
        match self {
            Input::Local(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Input::Remote { key, .. } => key.filename().unwrap_or("input").to_string(),
        }
    }
}

impl Storage {
    /// Open every root; a local output root is created.
    ///
    /// # Errors
    /// [`LocationError`] for a client that cannot be built or an output directory that
    /// cannot be made.
    pub fn open(
        data_roots: &[Location],
        output: &Location,
        models: &Location,
        options: &Options,
    ) -> Result<Storage, LocationError> {
        let data_roots = data_roots.iter().map(|l| Root::open(l, options)).collect::<Result<_, _>>()?;
        let output = match Root::open(output, options)? {
            Root::Local(dir) => {
                let fail = |e: std::io::Error| LocationError::Invalid(dir.display().to_string(), e.to_string());
                std::fs::create_dir_all(&dir).map_err(fail)?;
                Root::Local(dir.canonicalize().map_err(fail)?)
            }
            remote => remote,
        };
        Ok(Storage { data_roots, output, models: Root::open(models, options)? })
    }

    /// The local data roots.
    pub fn local_roots(&self) -> Vec<PathBuf> {
        self.data_roots
            .iter()
            .filter_map(|r| match r {
                Root::Local(dir) => Some(dir.clone()),
                Root::Remote(_) => None,
            })
            .collect()
    }

    /// Confine what a client named: a URL to the remote data roots (and the object must
    /// exist), a path to the local ones ([`crate::confine`]).
    ///
    /// # Errors
    /// [`PathError`]: outside every root, missing, or the store refused or is unreachable.
    pub async fn input(&self, requested: &str) -> Result<Input, PathError> {
        if !is_url(requested) {
            return crate::confine(&self.local_roots(), requested).map(Input::Local);
        }
        let url = Url::parse(requested).map_err(|_| PathError::Outside(requested.to_string()))?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|()| PathError::Outside(requested.to_string()))?;
            return crate::confine(&self.local_roots(), &path.to_string_lossy()).map(Input::Local);
        }
        let found = self.data_roots.iter().find_map(|r| match r {
            Root::Remote(root) => root.confine(&url).map(|key| (root.clone(), key)),
            Root::Local(_) => None,
        });
        let (root, key) = found.ok_or_else(|| PathError::Outside(requested.to_string()))?;
        root.size(&key).await?;
        Ok(Input::Remote { root, key })
    }
}

/// `builder` with every option of `options` applied through `set`, each key parsed as the
/// store's config key `K`.
fn configure<B, K: FromStr>(
    builder: B,
    options: &BTreeMap<String, String>,
    set: impl Fn(B, K, String) -> B,
) -> Result<B, String>
where
    K::Err: fmt::Display,
{
    options.iter().try_fold(builder, |builder, (key, value)| {
        let key = K::from_str(key).map_err(|e| e.to_string())?;
        Ok(set(builder, key, value.clone()))
    })
}

/// An object-store error as a reason a client can act on.
fn store_error(url: &str, error: object_store::Error) -> PathError {
    match error {
        object_store::Error::NotFound { .. } => PathError::NotFound(url.to_string()),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            PathError::Store { location: url.to_string(), reason: "permission denied".into() }
        }
        other => PathError::Store { location: url.to_string(), reason: one_line(&other.to_string()) },
    }
}

/// The first line of a reason, at most 300 characters.
fn one_line(reason: &str) -> String {
    reason.lines().next().unwrap_or_default().chars().take(300).collect()
}

/// `%XX` sequences decoded; `None` when they do not make UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned())
}

/// A client-supplied input: the URL of an object, or a path.
pub fn is_url(requested: &str) -> bool {
    requested.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls() {
        assert_eq!("data".parse::<Location>().ok(), Some(Location::Local("data".into())));
        assert_eq!("file:///srv/data".parse::<Location>().ok(), Some(Location::Local("/srv/data".into())));
        let s3: Location = "s3://bucket/out/".parse().expect("s3");
        assert_eq!(s3.to_string(), "s3://bucket/out");
        assert_eq!(s3.join("transform_j").to_string(), "s3://bucket/out/transform_j");
        assert!("s3:///nobucket".parse::<Location>().is_err());
        assert!("ftp://host/x".parse::<Location>().is_err());
        assert!("".parse::<Location>().is_err());
        let bare: Location = "gs://bucket".parse().expect("gs");
        assert_eq!(bare.join("a").to_string(), "gs://bucket/a");
    }

    #[test]
    fn confines_urls_to_the_prefix() {
        let options = Options {
            s3: [("aws_region", "us-east-1"), ("aws_access_key_id", "k"), ("aws_secret_access_key", "s")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Options::default()
        };
        let root = ObjectRoot::open(&Url::parse("s3://bucket/in").expect("url"), &options).expect("root");
        let key = |s: &str| root.confine(&Url::parse(s).expect("url")).map(|k| k.to_string());
        assert_eq!(key("s3://bucket/in/a.parquet").as_deref(), Some("in/a.parquet"));
        assert_eq!(key("s3://bucket/in/sub/a%20b.csv").as_deref(), Some("in/sub/a b.csv"));
        assert_eq!(key("s3://bucket/inside/a.parquet"), None);
        assert_eq!(key("s3://bucket/in"), None);
        assert_eq!(key("s3://other/in/a.parquet"), None);
        assert_eq!(key("gs://bucket/in/a.parquet"), None);
        assert_eq!(key("s3://bucket/in/../secret"), None);
        assert_eq!(key("s3://bucket/in/%2e%2e/secret"), None);
        assert_eq!(key("s3://bucket/in/a%2Fb"), None);
        assert_eq!(
            root.url_of(&root.key("transform_j/part-00000.parquet")),
            "s3://bucket/in/transform_j/part-00000.parquet"
        );
    }

    #[test]
    fn refuses_unknown_options() {
        let mut options = Options::default();
        options.s3.insert("aws_endpoint".into(), "http://127.0.0.1:8333".into());
        assert!(options.check().is_ok());
        options.azure.insert("azure_nonsense".into(), "1".into());
        assert!(options.check().expect_err("unknown").contains("storage.azure: unknown option azure_nonsense"));
    }
}
