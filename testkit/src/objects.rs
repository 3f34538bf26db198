//! A place of its own for each test in the real object stores `scripts/services.sh up` runs
//! on loopback (SeaweedFS and moto for S3, Azurite for Azure Blob, gcp-storage-emulator for
//! GCS; see docs/storage.md). Every [`ObjectDir`] is a fresh prefix in the bucket
//! `shardflow`; its `Drop` deletes every object under it.
//!
//! ```no_run
//! # async fn example() {
//! use shardflow_testkit::objects::ObjectDir;
//! let dir = ObjectDir::s3_seaweed("pipeline");
//! let store = dir.store();
//! store.put(&dir.path("a.parquet"), b"bytes".to_vec().into()).await.expect("put");
//! // dir.url() is s3://shardflow/test-pipeline-..., dir.toml() the [storage.s3] table.
//! # }
//! ```

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;

/// The bucket (Azure: container) `scripts/services.sh up` creates in every store.
pub const BUCKET: &str = "shardflow";

// The endpoints and keys scripts/stores/stores.sh starts the servers with.
const S3_REGION: &str = "us-east-1";
const SEAWEEDFS_ENDPOINT: &str = "http://127.0.0.1:8333";
const SEAWEEDFS_KEY: (&str, &str) = ("shardflow", "shardflow-seaweed-secret");
const MOTO_ENDPOINT: &str = "http://127.0.0.1:5055";
const MOTO_KEY: (&str, &str) = ("AKIASHARDFLOWMOTO001", "shardflow-moto-secret");
/// Azurite's well-known development account; object_store's emulator mode talks to
/// 127.0.0.1:10000 (or `AZURITE_BLOB_STORAGE_URL`).
const AZURITE_ACCOUNT: (&str, &str) =
    ("devstoreaccount1", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==");
/// The GCS emulator's JSON API.
pub const GCS_ENDPOINT: &str = "http://127.0.0.1:4443";

/// The object-store servers of the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectServer {
    /// SeaweedFS's S3 gateway (`weed mini`), signed requests.
    SeaweedFs,
    /// moto's S3 server, which checks every request's signature.
    Moto,
    /// Azurite's Blob service, shared-key signed requests.
    Azurite,
    /// gcp-storage-emulator: GCS's JSON API without authentication.
    GcsEmulator,
}

impl ObjectServer {
    /// The URL scheme object_store knows the server's kind by.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::SeaweedFs | Self::Moto => "s3",
            Self::Azurite => "az",
            Self::GcsEmulator => "gs",
        }
    }

    /// The configuration table the options go in: `[storage.<table>]`.
    pub fn table(self) -> &'static str {
        match self {
            Self::SeaweedFs | Self::Moto => "s3",
            Self::Azurite => "azure",
            Self::GcsEmulator => "gcs",
        }
    }

    /// The bucket's URL, `s3://shardflow` and so on.
    pub fn bucket_url(self) -> String {
        format!("{}://{BUCKET}", self.scheme())
    }

    /// The object_store configuration keys that reach this server, as strings.
    pub fn options(self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, String)> = match self {
            Self::SeaweedFs | Self::Moto => {
                let (endpoint, (key, secret)) = if self == Self::SeaweedFs {
                    (SEAWEEDFS_ENDPOINT, SEAWEEDFS_KEY)
                } else {
                    (MOTO_ENDPOINT, MOTO_KEY)
                };
                vec![
                    ("aws_endpoint", endpoint.into()),
                    ("aws_access_key_id", key.into()),
                    ("aws_secret_access_key", secret.into()),
                    ("aws_region", S3_REGION.into()),
                    ("aws_allow_http", "true".into()),
                    ("aws_virtual_hosted_style_request", "false".into()),
                ]
            }
            Self::Azurite => vec![
                ("azure_storage_use_emulator", "true".into()),
                ("azure_storage_account_name", AZURITE_ACCOUNT.0.into()),
                ("azure_storage_account_key", AZURITE_ACCOUNT.1.into()),
            ],
            // object_store reads the emulator's address and "no OAuth" from a service-account
            // key; the private key is never used when OAuth is off.
            Self::GcsEmulator => vec![
                (
                    "google_service_account_key",
                    serde_json::json!({
                        "gcs_base_url": GCS_ENDPOINT,
                        "disable_oauth": true,
                        "client_email": "",
                        "private_key": "",
                        "private_key_id": "",
                    })
                    .to_string(),
                ),
                ("google_allow_http", "true".into()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// A store for `url` (`s3://shardflow/...`) built from `options` alone (no environment);
    /// a key object_store does not know is an error, not ignored.
    ///
    /// # Errors
    /// An unknown key, a bad value, or a URL of another kind.
    pub fn build(self, url: &str, options: &BTreeMap<String, String>) -> object_store::Result<Arc<dyn ObjectStore>> {
        fn keys<K: FromStr<Err = object_store::Error>>(
            options: &BTreeMap<String, String>,
        ) -> object_store::Result<Vec<(K, &String)>> {
            options.iter().map(|(k, v)| Ok((k.parse::<K>()?, v))).collect()
        }
        Ok(match self {
            Self::SeaweedFs | Self::Moto => {
                let builder = keys::<AmazonS3ConfigKey>(options)?
                    .into_iter()
                    .fold(AmazonS3Builder::new().with_url(url), |b, (k, v)| b.with_config(k, v));
                Arc::new(builder.build()?)
            }
            Self::Azurite => {
                let builder = keys::<AzureConfigKey>(options)?
                    .into_iter()
                    .fold(MicrosoftAzureBuilder::new().with_url(url), |b, (k, v)| b.with_config(k, v));
                Arc::new(builder.build()?)
            }
            Self::GcsEmulator => {
                let builder = keys::<GoogleConfigKey>(options)?
                    .into_iter()
                    .fold(GoogleCloudStorageBuilder::new().with_url(url), |b, (k, v)| b.with_config(k, v));
                Arc::new(builder.build()?)
            }
        })
    }
}

/// One test's prefix in one object store, emptied when dropped.
#[derive(Debug)]
pub struct ObjectDir {
    server: ObjectServer,
    prefix: Path,
    store: Arc<dyn ObjectStore>,
}

impl ObjectDir {
    /// A fresh prefix in SeaweedFS's bucket.
    pub fn s3_seaweed(name: &str) -> Self {
        Self::new(ObjectServer::SeaweedFs, name)
    }

    /// A fresh prefix in moto's bucket.
    pub fn s3_moto(name: &str) -> Self {
        Self::new(ObjectServer::Moto, name)
    }

    /// A fresh prefix in Azurite's container.
    pub fn azurite(name: &str) -> Self {
        Self::new(ObjectServer::Azurite, name)
    }

    /// A fresh prefix in the GCS emulator's bucket.
    pub fn gcs(name: &str) -> Self {
        Self::new(ObjectServer::GcsEmulator, name)
    }

    /// A fresh prefix `test-<name>-<pid>-<clock>` in `server`'s bucket; `name` goes into it.
    ///
    /// # Panics
    /// When the store cannot be built from the options (tests only).
    pub fn new(server: ObjectServer, name: &str) -> Self {
        let unique = format!("test-{name}-{}-{}", std::process::id(), shardflow_store::version_now() % 1_000_000_000);
        let prefix = Path::from(unique);
        let url = server.bucket_url();
        let store = server
            .build(&url, &server.options())
            .unwrap_or_else(|e| panic!("object store for {server:?} at {url}: {e}"));
        Self { server, prefix, store }
    }

    /// The server this prefix is in.
    pub fn server(&self) -> ObjectServer {
        self.server
    }

    /// The prefix as a URL, e.g. `s3://shardflow/test-pipeline-1234-567`: a storage root.
    pub fn url(&self) -> String {
        format!("{}://{BUCKET}/{}", self.server.scheme(), self.prefix)
    }

    /// The object_store configuration keys that reach the server (see [`ObjectServer::options`]).
    pub fn options(&self) -> BTreeMap<String, String> {
        self.server.options()
    }

    /// The store of the whole bucket, built from exactly [`ObjectDir::options`]; objects of
    /// this test are under [`ObjectDir::prefix`].
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The test's prefix in the bucket.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `relative` (`a/b.parquet`) under the test's prefix.
    pub fn path(&self, relative: &str) -> Path {
        relative.split('/').filter(|part| !part.is_empty()).fold(self.prefix.clone(), |path, part| path.child(part))
    }

    /// The options as the configuration table `[storage.s3]`, `[storage.azure]` or
    /// `[storage.gcs]`, to paste into a test's config.toml.
    ///
    /// # Panics
    /// Never: string maps always serialize.
    pub fn toml(&self) -> String {
        let table = BTreeMap::from([(self.server.table(), self.options())]);
        toml::to_string(&BTreeMap::from([("storage", table)])).expect("a map of strings as TOML")
    }

    /// Every key under the test's prefix, sorted. On the GCS emulator this asks its JSON API
    /// (its XML API, which object_store uses, lists nothing; docs/storage.md).
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn keys(&self) -> Result<Vec<String>, String> {
        keys(self.server, self.store.as_ref(), &self.prefix).await
    }
}

/// Every key under `prefix` in `server`'s bucket, sorted: what a dropped [`ObjectDir`] left.
///
/// # Errors
/// When the server does not answer.
pub async fn keys_under(server: ObjectServer, prefix: &Path) -> Result<Vec<String>, String> {
    let store = server.build(&server.bucket_url(), &server.options()).map_err(|e| e.to_string())?;
    keys(server, store.as_ref(), prefix).await
}

/// Every key under `prefix` in `server`, sorted (see [`ObjectDir::keys`]).
async fn keys(server: ObjectServer, store: &dyn ObjectStore, prefix: &Path) -> Result<Vec<String>, String> {
    let mut keys = match server {
        ObjectServer::GcsEmulator => gcs_keys(prefix).await?,
        _ => store
            .list(Some(prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| e.to_string())?,
    };
    keys.sort();
    Ok(keys)
}

/// Object names under `prefix` in the emulator's bucket, from the JSON API (paged).
async fn gcs_keys(prefix: &Path) -> Result<Vec<String>, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let (mut keys, mut page) = (Vec::new(), None::<String>);
    loop {
        let mut query = vec![("prefix", format!("{prefix}/"))];
        query.extend(page.take().map(|token| ("pageToken", token)));
        let url = format!("{GCS_ENDPOINT}/storage/v1/b/{BUCKET}/o");
        let response = client.get(&url).query(&query).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: {status}: {body}"));
        }
        let names = body["items"].as_array().into_iter().flatten().filter_map(|item| item["name"].as_str());
        keys.extend(names.map(str::to_string));
        match body["nextPageToken"].as_str() {
            Some(token) => page = Some(token.to_string()),
            None => return Ok(keys),
        }
    }
}

/// Delete `names` from the emulator's bucket through the JSON API (its XML API, which
/// object_store uses, answers DELETE with 501).
async fn gcs_delete(names: &[String]) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    for name in names {
        let mut url =
            reqwest::Url::parse(&format!("{GCS_ENDPOINT}/storage/v1/b/{BUCKET}/o/")).map_err(|e| e.to_string())?;
        url.path_segments_mut().map_err(|()| "a base URL".to_string())?.pop_if_empty().push(name);
        let status = client.delete(url.clone()).send().await.map_err(|e| format!("{url}: {e}"))?.status();
        if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
            return Err(format!("DELETE {url}: {status}"));
        }
    }
    Ok(())
}

impl Drop for ObjectDir {
    /// Delete every object under the prefix, on success and on failure alike. Runs on a
    /// thread of its own with a fresh store: `Drop` may run inside the test's runtime.
    fn drop(&mut self) {
        let (server, prefix) = (self.server, self.prefix.clone());
        let url = server.bucket_url();
        let cleaned = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let store = server.build(&url, &server.options()).map_err(|e| e.to_string())?;
                let names = keys(server, store.as_ref(), &prefix).await?;
                if server == ObjectServer::GcsEmulator {
                    return gcs_delete(&names).await;
                }
                let paths = names.into_iter().map(|key| Ok(Path::from(key)));
                let deleted: Vec<_> = store.delete_stream(futures::stream::iter(paths).boxed()).collect().await;
                match deleted.into_iter().find_map(Result::err) {
                    Some(e) => Err(e.to_string()),
                    None => Ok(()),
                }
            })
        });
        match cleaned.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("testkit: could not empty {server:?} {BUCKET}/{}: {e}", self.prefix),
            Err(_) => eprintln!("testkit: emptying {server:?} {BUCKET}/{} panicked", self.prefix),
        }
    }
}
