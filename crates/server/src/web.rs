//! The web listener (`--web ADDR`): `GET /metrics` (Prometheus text format)
//! and `GET /healthz` (200 when the store takes writes, 503 with the reason
//! otherwise), served with axum; over HTTPS, with the frame listener's
//! certificates, when TLS is on. It reads what the server counts and asks the
//! store one question; it must not touch sessions or the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::tls::TlsReloader;

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

/// HTTPS connections served at once; more are closed at accept (the web
/// listener is for a scraper and a health checker, not for crowds).
const MAX_HTTPS_CONNECTIONS: usize = 64;
/// Time a TLS handshake on the web listener may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the web listener over HTTPS with `tls`'s certificates (reloaded
/// with them) until `stop` is cancelled.
pub(crate) fn spawn_tls(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: HealthCheck,
    tls: TlsReloader,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = router(metrics, health);
    let slots = Arc::new(Semaphore::new(MAX_HTTPS_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "web listener: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(stream) = tls.accept(tcp, HANDSHAKE_TIMEOUT).await else { return };
                let service = TowerToHyperService::new(app);
                let served = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = served => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    })
}

/// Binds the web listener's address.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
