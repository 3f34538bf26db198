//! Serving while the services come up. The API listens at once; until ClickHouse and the
//! broker answer (and the tables and topics are made), `/healthz` answers 200, `/readyz`
//! 503 naming what it waits for, and every other route 503 `starting`. Start-up is tried
//! again with backoff, logging what it waits for, so a process started before its
//! services (a reboot, a compose project coming up) never exits for it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shardflow_config::Config;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{info, warn};

use super::{ApiError, AppState, Health, StartError, router};

/// The router once started, and what start-up waits for meanwhile.
#[derive(Default)]
struct Starting {
    ready: OnceLock<axum::Router>,
    waiting_for: Mutex<String>,
}

/// Serve on `listener` until `shutdown` resolves, starting the API (with retries while
/// its services do not answer) behind it.
///
/// # Errors
/// When accepting connections fails, or start-up fails for a reason waiting cannot mend
/// (the output root cannot be made).
pub async fn serve_starting(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let starting = Arc::new(Starting::default());
    let (stop, mut stopped) = watch::channel(false);
    let app = axum::Router::new().fallback(dispatch).with_state(starting.clone());
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(super::connections::serve(listener, app, config.api.header_timeout, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut backoff = Duration::from_millis(500);
    loop {
        match AppState::new(config.clone()).await {
            Ok(state) => {
                let _ = starting.ready.set(router(state));
                info!("API ready");
                break;
            }
            Err(e @ StartError::Storage(_)) => {
                return Err(std::io::Error::other(e.to_string()));
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "waiting for the services");
                if let Ok(mut waiting) = starting.waiting_for.lock() {
                    *waiting = e.to_string();
                }
            }
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    server.await.map_err(std::io::Error::other)?
}

async fn dispatch(State(starting): State<Arc<Starting>>, request: Request) -> Response {
    if let Some(router) = starting.ready.get() {
        return match router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    let waiting = starting.waiting_for.lock().map(|w| w.clone()).unwrap_or_default();
    match request.uri().path() {
        "/healthz" => Json(Health { status: "ok".into(), ..Health::default() }).into_response(),
        "/readyz" => {
            let health = Health { status: "starting".into(), waiting_for: Some(waiting), ..Health::default() };
            (StatusCode::SERVICE_UNAVAILABLE, Json(health)).into_response()
        }
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            format!("shardflow is starting and waits for its services: {waiting}"),
        )
        .into_response(),
    }
}
