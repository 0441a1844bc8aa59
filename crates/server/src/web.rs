//! The web listener (`--web ADDR`): `GET /metrics` (Prometheus text format)
//! and `GET /healthz` (200 when the store takes writes, 503 with the reason
//! otherwise), served with axum. It reads what the server counts and asks the
//! store one question; it must not touch sessions or the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Answers whether the store takes writes: `Err(reason)` when it does not.
/// Runs on the blocking pool (a store call may wait on a lock).
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct WebState {
    metrics: Arc<Metrics>,
    health: HealthCheck,
}

/// The exposition format `/metrics` answers in.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn serve_metrics(State(state): State<WebState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], state.metrics.render())
}

async fn serve_healthz(State(state): State<WebState>) -> impl IntoResponse {
    let check = state.health.clone();
    let verdict = tokio::task::spawn_blocking(move || check())
        .await
        .unwrap_or_else(|e| Err(format!("the health check did not finish: {e}")));
    match verdict {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("store not writable: {reason}\n")),
    }
}

/// The routes, over `metrics` and `health`.
fn router(metrics: Arc<Metrics>, health: HealthCheck) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_healthz))
        .with_state(WebState { metrics, health })
}

/// Serves the web listener on `listener` until `stop` is cancelled.
pub(crate) fn spawn(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: HealthCheck,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = router(metrics, health);
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the web listener stopped");
        }
    })
}

/// Binds the web listener's address.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
