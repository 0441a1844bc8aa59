//! The I/O shell: listener, connection tasks, the hub, account polling, shutdown.
//!
//! Data flows one way: stream ([`transport`]) → connection (frames, session)
//! → [`hub`] (relay core) → [`outbound`] queues → stream. The store is written
//! by the [`store_writer`] thread on the core's behalf and polled for account
//! changes by the account watcher thread, both through [`store::Storage`].
//! This module wires them together and owns the connection limits; it must
//! not parse frames or decide anything the relay core decides.

mod clock;
mod config;
mod connection;
pub mod fanout;
pub mod hub;
pub mod log_throttle;
mod memory;
pub mod metrics;
pub mod outbound;
mod shared;
pub mod store;
pub mod store_writer;
pub mod tls;
pub mod transport;
mod web;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ulid::Ulid;

pub use crate::clock::now_unix;
pub use crate::config::*;
use crate::log_throttle::{LogKind, LogLimiter};
pub use crate::metrics::Metrics;
pub use crate::shared::Directory;
use crate::shared::Shared;
use crate::store::{Storage, Store, StoreError, StoredAccount};
use crate::tls::{TlsError, TlsReloader};
use crate::transport::{ByteStream, Transport};
use hub::HubMsg;
use sigil_core::{AccountKey, ConnId, Input, Relay};
use sigil_proto::Outbound;

/// A server start failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be read at start.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The database could not be opened.
    #[error("{path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// Changes a running server's [`LiveLimits`].
#[derive(Clone)]
pub struct LiveLimitsHandle(Arc<Shared>);

impl LiveLimitsHandle {
    /// The limits in force.
    pub fn get(&self) -> LiveLimits {
        self.0.live()
    }

    /// Puts `limits` in force for connections admitted from now on.
    pub fn set(&self, limits: LiveLimits) {
        if let Ok(mut live) = self.0.live.write() {
            *live = limits;
        }
    }
}

/// A running server.
pub struct RunningServer {
    local_addr: SocketAddr,
    web_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    failure: Arc<std::sync::OnceLock<String>>,
    done: tokio::task::JoinHandle<()>,
    /// The TLS listener's address and certificates, when TLS is on.
    tls: Option<(SocketAddr, TlsReloader)>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The web listener's bound address, when it runs.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// A handle on the connection limits in force, to change them while the
    /// server runs (it outlives lending the server to [`RunningServer::run_until`]).
    pub fn live_limits(&self) -> LiveLimitsHandle {
        LiveLimitsHandle(self.shared.clone())
    }

    /// What the server counts (also served on `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The TLS listener's bound address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(addr, _)| *addr)
    }

    /// Re-reads the TLS certificate and key: new handshakes use them, sessions
    /// already running are untouched. A bad file leaves the old ones in use.
    /// Without TLS there is nothing to reload: `Ok`.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.as_ref().map_or(Ok(()), |(_, reloader)| reloader.reload())
    }

    /// The TLS certificates, shared with the TLS listener: another listener
    /// (HTTPS) can serve with them, and a clone can be reloaded after the
    /// server has been handed to [`RunningServer::run_until`].
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.tls.as_ref().map(|(_, reloader)| reloader.clone())
    }

    /// Serves one connection carried by `transport` (TLS, a WebSocket
    /// adapter, an in-memory stream) as if `peer` had connected to the
    /// listener: the same connection limits, session code and shutdown.
    /// Returns once the connection is registered or refused; a stopping
    /// server drops it.
    pub async fn serve_connection<T: Transport>(&self, transport: T, peer: SocketAddr) {
        if !self.stop.is_cancelled() {
            serve_connection(&self.shared, transport, peer).await;
        }
    }

    /// Sends `ERR shutdown` to every client, waits for them to flush, closes the store.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }

    /// Runs until `signal` completes or the server fails (its store), then
    /// shuts down. Returns the failure, if that is why it stopped.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> Result<(), String> {
        tokio::select! {
            _ = signal => {}
            _ = self.stop.cancelled() => {}
        }
        let failure = self.failure.clone();
        self.shutdown().await;
        match failure.get() {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

/// Opens the store, binds the address and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let open = || {
        Store::open(&config.db).map_err(|source| ServerError::Open { path: config.db.display().to_string(), source })
    };
    let store = open()?;
    // Before serving from it: a damaged file is refused with how to recover.
    store.check_integrity().map_err(|source| ServerError::Open { path: config.db.display().to_string(), source })?;
    let (writer_store, health_store) = (open()?, open()?);
    launch(config, [store, writer_store, health_store]).await
}

/// Starts serving on three connections to one store: for reads and the
/// account watcher, for the store writer thread, and for health checks.
async fn launch<S: Storage>(
    config: Config,
    [store, writer_store, health_store]: [S; 3],
) -> Result<RunningServer, ServerError> {
    // Read before the accounts, so a change made in between is seen by the watcher.
    let data_version = store.data_version()?;
    let accounts = store.accounts()?;
    let accounts_rev = store.accounts_rev()?;
    let channels = store.channel_snapshots()?;
    let listener = TcpListener::bind(&config.addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.addr.clone(), source })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.addr.clone(), source })?;
    let web = match &config.web {
        Some(addr) => Some(web::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.clone(), source })?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let tls_listener = bind_tls(config.tls.as_ref()).await?;

    let mut relay = Relay::new(config.limits.clone(), now_unix(), sigil_core::IdSource::new(Ulid::new));
    let mut directory = HashMap::new();
    for a in &accounts {
        relay.step(
            Input::AccountUpserted { id: a.id, name: a.name.clone(), key_rev: a.key_rev },
            now_unix(),
            &mut Vec::new(),
        );
        directory.insert(a.id, (AccountKey { key: a.key.clone(), rev: a.key_rev }, a.name.clone()));
    }
    for snapshot in channels {
        relay.restore_channel(snapshot);
    }
    let (hub_tx, hub_rx) = mpsc::channel(4096);
    let live = RwLock::new(config.live());
    let (account_refresh, refresh_requests) = std::sync::mpsc::channel();
    let log = Arc::new(LogLimiter::new(config.log_repeats));
    let shared = Arc::new(Shared {
        account_refresh,
        sinfo_unsigned: relay.sinfo().clone().unsigned(),
        config,
        directory: RwLock::new(directory),
        hub: hub_tx,
        tracker: TaskTracker::new(),
        connections: std::sync::Mutex::new((0, HashMap::new())),
        connects: std::sync::Mutex::new(HashMap::new()),
        last_conn: AtomicU64::new(0),
        metrics: metrics.clone(),
        live,
        log: log.clone(),
    });
    let stop = CancellationToken::new();
    let (store_tx, store_rx) = mpsc::channel(STORE_QUEUE);
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    let store_status = Arc::new(store_writer::StoreStatus::default());
    let store_thread = store_writer::spawn(writer_store, store_rx, reply_tx, metrics.clone(), store_status.clone());
    let failure = Arc::new(std::sync::OnceLock::new());
    let hub_task =
        tokio::spawn(hub::run(relay, hub_rx, store_tx, reply_rx, stop.clone(), failure.clone(), metrics.clone(), log));
    let web_addr = web.map(|(listener, addr)| {
        let health = std::sync::Mutex::new(health_store);
        let check: web::HealthCheck = Arc::new(move || {
            if let Some(why) = store_status.read_only() {
                return Err(format!("read-only: {why}"));
            }
            let mut store = health.lock().map_err(|_| "the health check failed before".to_owned())?;
            store.check_writable().map_err(|e| e.to_string())
        });
        let state = web::WebState {
            metrics: metrics.clone(),
            health: check,
            sessions: shared.clone(),
            stop: stop.clone(),
            https: tls_listener.is_some(),
        };
        // Stopped with the server; its WebSockets are sessions like any
        // other, drained by the shutdown.
        match tls_listener.as_ref().map(|(_, _, reloader)| reloader.clone()) {
            Some(tls) => {
                drop(web::spawn(listener, state, Some(tls)));
                tracing::info!(addr = %addr, "web listener, HTTPS (the browser client at /, /ws, /metrics, /healthz)");
            }
            None => {
                drop(web::spawn(listener, state, None));
                tracing::info!(addr = %addr, "web listener (the browser client at /, /ws, /metrics, /healthz)");
            }
        }
        addr
    });
    let watcher = spawn_account_watcher(
        shared.clone(),
        store,
        accounts,
        (data_version, accounts_rev),
        refresh_requests,
        stop.clone(),
    );

    tracing::info!(addr = %local_addr, db = %shared.config.db.display(), "listening");
    let done = tokio::spawn(serve(listener, shared.clone(), stop.clone(), hub_task, vec![watcher, store_thread]));
    let tls = tls_listener.map(|(listener, addr, reloader)| {
        tracing::info!(tls = %addr, cert = %reloader.cert_path().display(), "listening for TLS");
        shared.tracker.spawn(serve_tls(listener, shared.clone(), reloader.clone(), stop.clone()));
        (addr, reloader)
    });
    Ok(RunningServer { local_addr, web_addr, shared, stop, failure, done, tls })
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    hub_task: tokio::task::JoinHandle<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_connection(&shared, stream, peer).await,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    if shared.log.admit(LogKind::AcceptFailed) {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!("shutting down");
    let (tx, rx) = oneshot::channel();
    if shared.hub.send(HubMsg::Shutdown(tx)).await.is_ok() {
        let _ = rx.await;
    }
    shared.tracker.close();
    // Sessions flush their last frames (`ERR shutdown` last) within the grace time.
    if tokio::time::timeout(shared.config.shutdown_grace, shared.tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?shared.config.shutdown_grace, "connections still open after the grace time: dropped");
    }
    // The hub's end closes the store queue; the store thread drains it and
    // closes the database.
    let _ = hub_task.await;
    let log = shared.log.clone();
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    // What the last windows left out is said before the end.
    log.flush_all();
    tracing::info!("stopped");
}

/// Admits a connection and starts its tasks, or refuses it with one
/// unsigned `ERR` when a connection limit is reached. Every transport comes
/// through here: the listener's accept loop and [`RunningServer::serve_connection`].
pub(crate) async fn serve_connection<T: Transport>(shared: &Arc<Shared>, stream: T, peer: SocketAddr) {
    match shared.admit(peer.ip(), T::KIND) {
        Ok(slot) => start_admitted(shared, stream, peer, slot).await,
        Err(why) => {
            // Refused before it is a connection: one unsigned ERR, best effort, never waited for.
            if shared.log.admit(LogKind::Refused) {
                tracing::info!(%peer, why, "connection refused");
            }
            let e = sigil_proto::ProtoError::new(sigil_proto::ErrorCode::RateLimited, why);
            let frame = Outbound::error(&e);
            let mut buf = bytes::BytesMut::new();
            sigil_proto::wire::encode_frame(
                &sigil_proto::wire::OutFrame { command: frame.command, signature: None, payload: &frame.payload },
                &mut buf,
            );
            stream.refuse(&buf);
        }
    }
}

/// Starts the tasks of a connection that holds its `slot`.
async fn start_admitted<T: Transport>(shared: &Arc<Shared>, stream: T, peer: SocketAddr, slot: shared::ConnSlot) {
    let conn = ConnId(shared.last_conn.fetch_add(1, Ordering::Relaxed) + 1);
    connection::spawn(shared.clone(), conn, stream, peer, slot).await;
}

/// Loads the certificates and binds the TLS listener, when TLS is configured.
async fn bind_tls(tls: Option<&TlsConfig>) -> Result<Option<(TcpListener, SocketAddr, TlsReloader)>, ServerError> {
    let Some(tls) = tls else { return Ok(None) };
    let reloader = TlsReloader::load(&tls.cert, &tls.key)?;
    let bind_error = |source| ServerError::Bind { addr: tls.listen.clone(), source };
    let listener = TcpListener::bind(&tls.listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok(Some((listener, addr, reloader)))
}

/// The TLS listener's accept loop, beside [`serve`]'s: each connection is
/// admitted through the same limits, then its handshake runs in its own task
/// (bounded by the CNN timeout) and the session is served as any other.
async fn serve_tls(listener: TcpListener, shared: Arc<Shared>, reloader: TlsReloader, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_tls_connection(&shared, &reloader, &stop, stream, peer),
                Err(e) => {
                    if shared.log.admit(LogKind::AcceptFailed) {
                        tracing::warn!(error = %e, "TLS accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Admits a TLS connection, then shakes hands in the connection's own task.
/// A refused one is closed: there is no TLS session yet to carry an `ERR`.
fn serve_tls_connection(
    shared: &Arc<Shared>,
    reloader: &TlsReloader,
    stop: &CancellationToken,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let slot = match shared.admit(peer.ip(), "tls") {
        Ok(slot) => slot,
        Err(why) => {
            if shared.log.admit(LogKind::TlsRefused) {
                tracing::info!(%peer, why, "TLS connection refused");
            }
            return;
        }
    };
    let timeout = Duration::from_millis(shared.config.cnn_timeout_ms());
    let (shared, reloader, stop) = (shared.clone(), reloader.clone(), stop.clone());
    shared.tracker.clone().spawn(async move {
        let _ = stream.set_nodelay(true);
        let handshake = tokio::select! {
            _ = stop.cancelled() => return,
            handshake = reloader.accept(stream, timeout) => handshake,
        };
        match handshake {
            Ok(tls) => start_admitted(&shared, ByteStream::new(tls), peer, slot).await,
            Err(e) => {
                if shared.log.admit(LogKind::TlsHandshakeFailed) {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                }
            }
        }
    });
}

/// Polls the store's accounts and tells the hub what changed. A thread,
/// because store calls block. It polls every [`ACCOUNT_POLL_INTERVAL`], and
/// at once when a connection asks (`refresh`): it then answers everyone who
/// asked, after the directory holds what it read.
fn spawn_account_watcher<S: Storage>(
    shared: Arc<Shared>,
    store: S,
    mut known: Vec<StoredAccount>,
    (mut version, mut rev): (i64, i64),
    refresh: std::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut waiting = Vec::new();
        while !stop.is_cancelled() {
            // Whoever asked before this poll is answered after it (or when
            // the loop ends: dropping the senders wakes them too).
            for done in waiting.drain(..) {
                let _: Result<(), ()> = tokio::sync::oneshot::Sender::send(done, ());
            }
            match refresh.recv_timeout(ACCOUNT_POLL_INTERVAL) {
                Ok(first) => {
                    waiting.push(first);
                    waiting.extend(refresh.try_iter());
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(ACCOUNT_POLL_INTERVAL),
            }
            let Ok(v) = store.data_version() else { continue };
            if v == version {
                continue;
            }
            // Every channel write changes data_version; the accounts are
            // reloaded only when their own revision moved.
            let new_rev = match store.accounts_rev() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the accounts revision");
                    continue;
                }
            };
            if new_rev == rev {
                version = v;
                continue;
            }
            let accounts = match store.accounts() {
                Ok(a) => a,
                Err(e) => {
                    // `version` is left as it was, so the next poll retries.
                    tracing::warn!(error = %e, "cannot reload accounts");
                    continue;
                }
            };
            version = v;
            rev = new_rev;
            // Readers see the new keys first, then the hub hears of the change:
            // whoever reacts to its USR_ADD can connect at once, an old key stops
            // working at once, and a session admitted with a key in between is
            // closed when the change reaches the hub (the key revision decides).
            if let Ok(mut dir) = shared.directory.write() {
                dir.clear();
                dir.extend(
                    accounts
                        .iter()
                        .map(|a| (a.id, (AccountKey { key: a.key.clone(), rev: a.key_rev }, a.name.clone()))),
                );
            }
            for input in diff_accounts(&known, &accounts) {
                if shared.hub.blocking_send(HubMsg::Input(input)).is_err() {
                    return;
                }
            }
            known = accounts;
        }
    })
}

fn diff_accounts(old: &[StoredAccount], new: &[StoredAccount]) -> Vec<Input> {
    let old_by_id: HashMap<Ulid, &StoredAccount> = old.iter().map(|a| (a.id, a)).collect();
    let new_ids: std::collections::HashSet<Ulid> = new.iter().map(|a| a.id).collect();
    let mut inputs: Vec<Input> =
        old.iter().filter(|a| !new_ids.contains(&a.id)).map(|a| Input::AccountRemoved { id: a.id }).collect();
    for a in new {
        let changed = old_by_id.get(&a.id).is_none_or(|o| o.key_rev != a.key_rev || o.name != a.name);
        if changed {
            tracing::info!(account = %a.name, "account added or changed");
            inputs.push(Input::AccountUpserted { id: a.id, name: a.name.clone(), key_rev: a.key_rev });
        }
    }
    inputs
}
