//! The web listener (`--web ADDR`): the browser client (`GET /` and its
//! files, built from `web/` and embedded), the WebSocket transport
//! (`GET /ws`, [`crate::websocket`]), `GET /metrics` (Prometheus text format)
//! and `GET /healthz` (200 when the store takes writes, 503 with the reason
//! otherwise), served with axum; over HTTPS, with the frame listener's
//! certificates, when TLS is on. A WebSocket is admitted and served by the
//! same code as a TCP connection; this module only upgrades it and checks
//! its origin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::log_throttle::LogKind;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::tls::TlsReloader;
use crate::websocket::{WsTransport, HEADER_ALLOWANCE, SUBPROTOCOL};

/// Answers whether the store takes writes: `Err(reason)` when it does not.
/// Runs on the blocking pool (a store call may wait on a lock).
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One embedded file of the browser client.
pub(crate) struct Asset {
    path: &'static str,
    content_type: &'static str,
    etag: &'static str,
    body: &'static [u8],
}

// `BUILT` and `ASSETS`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// What the web listener serves from.
#[derive(Clone)]
pub(crate) struct WebState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: HealthCheck,
    pub(crate) sessions: Arc<Shared>,
    pub(crate) stop: CancellationToken,
    /// The listener speaks HTTPS (the page's own origin is `https://HOST`).
    pub(crate) https: bool,
}

/// The exposition format `/metrics` answers in.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The page may load only its own files and talk only to its own server:
/// an injected script could not send a key anywhere else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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

/// The page's files; the page itself for `/`.
async fn serve_asset(uri: Uri, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == uri.path()) else {
        if !BUILT && uri.path() == "/" {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "This sigil was built without its browser client: Node.js and npm were not found.\n\
                 Install them and rebuild (cargo build --release) to get it.\n",
            )
                .into_response();
        }
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|tag| tag.as_bytes() == asset.etag.as_bytes());
    let page_headers = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::ETAG, asset.etag),
        // Revalidated on each load, so a new server's page is picked up at once.
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, page_headers).into_response();
    }
    (page_headers, asset.body).into_response()
}

/// Whether a page from the request's `Origin` may open a session: any client
/// that sends none (not a browser), the page's own origin, and the
/// `--web-origin` allowlist. Browsers let any page open a WebSocket to any
/// address, the user's loopback and intranet included; without this check a
/// page on another site could use a visitor's browser to reach a server only
/// the visitor can reach (or one bound to 127.0.0.1).
///
/// "The page's own" is judged from the request's `Host`, which a page can
/// choose through DNS rebinding (its own name, resolving to the server's
/// address); so it counts only for a `Host` that is an IP address or
/// `localhost`. A page served under a DNS name is listed with `--web-origin`.
fn origin_allowed(headers: &HeaderMap, https: bool, allowlist: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowlist.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let scheme = if https { "https" } else { "http" };
    let own = origin.len() == scheme.len() + 3 + host.len()
        && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
        && &origin[scheme.len()..scheme.len() + 3] == "://"
        && origin[scheme.len() + 3..].eq_ignore_ascii_case(host);
    own && host_is_an_address(host)
}

/// True when `host` (`name[:port]`, `[v6][:port]`) names an IP address or `localhost`.
fn host_is_an_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(
            host,
            |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host
                }
            },
        ),
    };
    name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

/// `GET /ws`: checks the origin, upgrades, and serves the WebSocket as a
/// connection from `peer` (admitted through the same limits as TCP).
async fn serve_ws(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, state.https, &state.sessions.config.web_origins) {
        if state.sessions.log.admit(LogKind::WebSocketRefused) {
            tracing::info!(%peer, origin = ?headers.get(header::ORIGIN), "WebSocket refused: origin not allowed");
        }
        return (StatusCode::FORBIDDEN, "origin not allowed: see sigil serve --web-origin\n").into_response();
    }
    let limit = state.sessions.config.limits.max_payload.saturating_add(HEADER_ALLOWANCE);
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        // Idle sessions are most sessions: tungstenite's default 128 KiB read buffer each would dwarf the rest.
        .read_buffer_size(4096)
        .write_buffer_size(crate::connection::WRITE_BATCH)
        .on_upgrade(move |socket| async move {
            if !state.stop.is_cancelled() {
                crate::serve_connection(&state.sessions, WsTransport::new(socket), peer).await;
            }
        })
}

/// The routes.
fn router(state: WebState) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_healthz))
        .route("/ws", get(serve_ws))
        .fallback(get(serve_asset))
        .with_state(state)
}

/// HTTP connections served at once (a WebSocket stops counting once
/// upgraded: sessions have limits of their own); more are closed at accept.
const MAX_HTTP_CONNECTIONS: usize = 1024;

/// HTTP connections open per IP address, so that one address cannot take
/// every slot; the limit is `--max-connections-per-ip`, as for sessions.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One HTTP connection's place in [`PerAddress`], given back on drop.
struct AddressSlot(Arc<PerAddress>, std::net::IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, most: usize) -> Option<AddressSlot> {
        let mut open = self.0.lock().ok()?;
        let mine = open.entry(ip).or_insert(0);
        if *mine >= most {
            return None;
        }
        *mine += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.0 .0.lock() {
            if let Some(n) = open.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.1);
                }
            }
        }
    }
}
/// Time a client has for a TLS handshake, and for the headers of a request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the web listener on `listener` until `stop` is cancelled: over
/// HTTPS with `tls`'s certificates (reloaded with them) when given.
pub(crate) fn spawn(listener: TcpListener, state: WebState, tls: Option<TlsReloader>) -> tokio::task::JoinHandle<()> {
    let stop = state.stop.clone();
    let sessions = state.sessions.clone();
    let app = router(state);
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if sessions.log.admit(LogKind::AcceptFailed) {
                            tracing::warn!(error = %e, "web listener: accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            let Some(address_slot) = per_address.take(peer.ip(), sessions.live().max_connections_per_ip) else {
                continue;
            };
            let app = app.clone().layer(Extension(ConnectInfo(peer)));
            let (tls, stop) = (tls.clone(), stop.clone());
            tokio::spawn(async move {
                let _slots = (slot, address_slot);
                match tls {
                    Some(tls) => {
                        let Ok(stream) = tls.accept(tcp, HEADER_TIMEOUT).await else { return };
                        serve_http(stream, app, stop).await;
                    }
                    None => serve_http(tcp, app, stop).await,
                }
            });
        }
    })
}

/// Serves HTTP/1.1 requests on one connection (and hands it over to a
/// WebSocket when one is asked for) until it ends or the server stops.
async fn serve_http<S>(stream: S, app: Router, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::select! {
        _ = served => {}
        _ = stop.cancelled() => {}
    }
}

/// Binds the web listener's address.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().expect("origin"));
        h.insert(header::HOST, host.parse().expect("host"));
        h
    }

    #[test]
    fn the_own_origin_counts_for_addresses_and_localhost_only() {
        assert!(origin_allowed(&headers("http://127.0.0.1:7071", "127.0.0.1:7071"), false, &[]));
        assert!(origin_allowed(&headers("http://[::1]:7071", "[::1]:7071"), false, &[]));
        assert!(origin_allowed(&headers("http://localhost:7071", "localhost:7071"), false, &[]));
        assert!(origin_allowed(&headers("https://10.0.0.5", "10.0.0.5"), true, &[]));
        assert!(!origin_allowed(&headers("http://10.0.0.5", "10.0.0.5"), true, &[]), "scheme must match");
        // DNS rebinding: a page under its own name, resolving to the server.
        assert!(!origin_allowed(&headers("http://evil.example:7071", "evil.example:7071"), false, &[]));
        let listed = ["https://chat.example".to_owned()];
        assert!(origin_allowed(&headers("https://chat.example", "chat.example"), true, &listed));
        assert!(origin_allowed(&HeaderMap::new(), false, &[]), "no Origin: not a page");
    }
}
