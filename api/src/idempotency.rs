//! Retried uploads count once. An upload route (`POST /csv_upload`, `POST /shards`) names
//! its request by the client's `Idempotency-Key` header or, without one, by the SHA-256
//! of the content and the client's address within `api.duplicate_window`. The first
//! request with a name claims it in ClickHouse `upload_keys` before anything is
//! published; a retry finds the claim and gets the first request's id and state, and
//! nothing new is published (a `failed` CSV upload is published again under its own id,
//! which adds no row twice: rounds are keyed by upload and line).
//!
//! Claims are made one at a time in this process. Two API processes given the same name
//! at the same instant could both claim it: ClickHouse 18.16 has no compare-and-set, and
//! a lease would need a store that has one.

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use shardflow_store::{IndexError, UploadKeyRow, unix_now};
use tokio::sync::Mutex;

use super::{ApiError, AppState};

/// The header a client names a request with.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest key accepted (Stripe's limit).
const MAX_KEY_BYTES: usize = 255;

/// The route a claim belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    /// `POST /csv_upload`.
    CsvUpload,
    /// `POST /shards`.
    Shards,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Self::CsvUpload => "csv_upload",
            Self::Shards => "shards",
        }
    }
}

/// What the claim found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The first request with this name: go on, under `id`.
    First,
    /// A retry of the request that made `id` (finished, failed or still running).
    Retry {
        /// The first request's upload or job id.
        id: String,
        /// Whether that request is still being handled by this process.
        in_flight: bool,
    },
}

/// Claims made by this process, and which are still being handled.
#[derive(Default)]
pub(crate) struct Claims {
    lock: Mutex<()>,
    in_flight: std::sync::Mutex<HashSet<String>>,
}

/// Marks `id` as handled until dropped.
pub(crate) struct InFlight<'a> {
    claims: &'a Claims,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.claims.in_flight.lock() {
            ids.remove(&self.id);
        }
    }
}

impl Claims {
    /// Mark `id` as being handled, until the guard is dropped.
    pub(crate) fn handling(&self, id: &str) -> InFlight<'_> {
        if let Ok(mut ids) = self.in_flight.lock() {
            ids.insert(id.to_string());
        }
        InFlight { claims: self, id: id.to_string() }
    }

    fn is_in_flight(&self, id: &str) -> bool {
        self.in_flight.lock().is_ok_and(|ids| ids.contains(id))
    }
}

/// The client's key, checked: printable ASCII, at most [`MAX_KEY_BYTES`].
fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            format!("the Idempotency-Key header must be 1 to {MAX_KEY_BYTES} printable ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// SHA-256 of a file, hex, read in 1 MiB pieces.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl AppState {
    /// Claim the name of an upload received at `path` for `id`, or find the request that
    /// claimed it first. A key reused with other content is refused (422).
    ///
    /// # Errors
    /// 400 for a malformed key, 422 for a reused one, 503 when ClickHouse does not answer.
    pub(crate) async fn claim(
        &self,
        route: Route,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
        path: &Path,
        id: &str,
    ) -> Result<Claim, ApiError> {
        let key = key_of(headers)?;
        let sha256 = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || sha256_of(&path))
                .await
                .map_err(|e| ApiError::internal(&e))?
                .map_err(|e| ApiError::internal(&e))?
        };
        let (name, window) = match &key {
            Some(key) => (format!("key:{key}"), self.config.api.idempotency_key_ttl),
            None => {
                let client = client.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
                (format!("content:{client}:{sha256}"), self.config.api.duplicate_window)
            }
        };
        if window.is_zero() {
            return Ok(Claim::First);
        }
        let since = unix_now().saturating_sub(u32::try_from(window.as_secs()).unwrap_or(u32::MAX));
        let _one_at_a_time = self.claims.lock.lock().await;
        if let Some(first) = self.index.upload_key(route.as_str(), &name, since).await.map_err(unavailable)? {
            if first.sha256 != sha256 {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    format!(
                        "Idempotency-Key {} was used for other content (upload {}); use a new key for a new upload",
                        key.unwrap_or_default(),
                        first.id
                    ),
                ));
            }
            let in_flight = self.claims.is_in_flight(&first.id);
            return Ok(Claim::Retry { id: first.id, in_flight });
        }
        let row = UploadKeyRow {
            route: route.as_str().to_string(),
            name,
            id: id.to_string(),
            sha256,
            created_at: unix_now(),
        };
        self.index.insert_upload_key(&row).await.map_err(unavailable)?;
        Ok(Claim::First)
    }
}

fn unavailable(e: IndexError) -> ApiError {
    ApiError::from(e)
}

/// 409: the first request with this name is still being handled.
pub(crate) fn still_running(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "upload_in_progress",
        format!("the first request with this Idempotency-Key ({id}) is still being handled; retry when it answers"),
    )
}
