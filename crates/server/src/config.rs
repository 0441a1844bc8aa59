//! What `sigil serve` is configured with: [`Config`] and the shell's defaults.
//! The protocol's own limits are `sigil_core::Limits`, carried inside.

use std::path::PathBuf;
use std::time::Duration;

use sigil_core::Limits;

/// Default outbound queue length per connection, in frames (the byte bound
/// below is what bounds memory; this one bounds per-frame overhead).
pub const DEFAULT_OUTBOUND_QUEUE: usize = 8192;
/// Default outbound queue size per connection, in payload bytes.
pub const DEFAULT_OUTBOUND_BYTES: usize = 4 * 1024 * 1024;
/// Default time a shutdown waits for sessions to flush (s).
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;
/// Default address of the web listener (`sigil serve --web`).
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:7071";
/// Default connections in total.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default frames per second per connection (sustained).
pub const DEFAULT_RATE: f64 = 200.0;
/// Default frames a connection may send at once.
pub const DEFAULT_BURST: f64 = 400.0;
/// Default new connections per minute from one IP address (burst: a minute's worth).
pub const DEFAULT_CONNECTS_PER_IP_PER_MINUTE: u64 = 120;
/// Default time from a frame's first byte to its last (s).
pub const DEFAULT_FRAME_TIMEOUT_S: u64 = 30;
/// Default lines logged per kind of repeatable event per 10 s (`--log-repeats`).
pub const DEFAULT_LOG_REPEATS: u32 = 20;

/// Largest LEN accepted before authentication: a CNN is about 100 bytes and
/// an unsigned INFO's payload is ignored, so a stranger cannot make the
/// server hold `max_payload` per connection.
pub const MAX_PAYLOAD_BEFORE_AUTH: usize = 1024;
/// Store jobs queued before the hub waits for the disk.
pub const STORE_QUEUE: usize = 65_536;
/// How often the account table is polled for changes.
pub const ACCOUNT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Default address of the TLS frame listener.
pub const DEFAULT_TLS_LISTEN: &str = "127.0.0.1:7443";

/// A TLS frame listener beside the plain one (`serve --tls-cert --tls-key`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Address to listen on (port 0 picks one: see `RunningServer::tls_addr`).
    pub listen: String,
    /// PEM certificate chain, leaf first; re-read by `RunningServer::reload_tls`.
    pub cert: PathBuf,
    /// PEM private key; re-read by `RunningServer::reload_tls`.
    pub key: PathBuf,
}

impl TlsConfig {
    /// TLS on [`DEFAULT_TLS_LISTEN`] with these files.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self { listen: DEFAULT_TLS_LISTEN.to_owned(), cert: cert.into(), key: key.into() }
    }
}

/// Everything `sigil serve` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub addr: String,
    /// SQLite database path.
    pub db: PathBuf,
    /// Protocol limits.
    pub limits: Limits,
    /// Outbound queue length per connection (frames).
    pub outbound_queue: usize,
    /// Outbound queue size per connection (payload bytes).
    pub outbound_bytes: usize,
    /// Connections in total.
    pub max_connections: usize,
    /// Connections from one IP address.
    pub max_connections_per_ip: usize,
    /// New connections per minute from one IP address.
    pub connects_per_ip_per_minute: u64,
    /// Frames per second per connection.
    pub rate: f64,
    /// Frames a connection may send at once.
    pub burst: f64,
    /// Time from a frame's first byte to its last (s).
    pub frame_timeout_s: u64,
    /// Overrides `frame_timeout_s` with milliseconds (tests).
    pub frame_timeout_ms: Option<u64>,
    /// Overrides `limits.cnn_timeout_s` with milliseconds (tests).
    pub cnn_timeout_ms: Option<u64>,
    /// Overrides `limits.timeout_s` with milliseconds (tests).
    pub idle_timeout_ms: Option<u64>,
    /// Address of the web listener (the browser client, `/ws`, `/metrics`,
    /// `/healthz`); `None`: no web listener.
    pub web: Option<String>,
    /// Origins besides the page's own whose pages may open `/ws` (`*`: any).
    pub web_origins: Vec<String>,
    /// How long a shutdown waits for sessions to flush their last frames.
    pub shutdown_grace: Duration,
    /// A TLS frame listener as well, when set.
    pub tls: Option<TlsConfig>,
    /// Lines logged per kind of repeatable event (connects, refusals, failed
    /// sign-ins, ...) per 10 s; the rest are summarised (0: every line).
    pub log_repeats: u32,
}

impl Config {
    /// A configuration with every default, listening on `addr`, storing in `db`.
    pub fn new(addr: impl Into<String>, db: impl Into<PathBuf>) -> Self {
        Self {
            addr: addr.into(),
            db: db.into(),
            limits: Limits::default(),
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_bytes: DEFAULT_OUTBOUND_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            connects_per_ip_per_minute: DEFAULT_CONNECTS_PER_IP_PER_MINUTE,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            frame_timeout_s: DEFAULT_FRAME_TIMEOUT_S,
            frame_timeout_ms: None,
            cnn_timeout_ms: None,
            idle_timeout_ms: None,
            web: None,
            web_origins: Vec::new(),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_S),
            tls: None,
            log_repeats: DEFAULT_LOG_REPEATS,
        }
    }

    pub(crate) fn cnn_timeout_ms(&self) -> u64 {
        self.cnn_timeout_ms.unwrap_or(self.limits.cnn_timeout_s.saturating_mul(1000))
    }

    pub(crate) fn idle_timeout_ms(&self) -> u64 {
        self.idle_timeout_ms.unwrap_or(self.limits.timeout_s.saturating_mul(1000))
    }

    /// The limits a running server can change ([`crate::RunningServer::live_limits`]).
    pub fn live(&self) -> LiveLimits {
        LiveLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            connects_per_ip_per_minute: self.connects_per_ip_per_minute,
            rate: self.rate,
            burst: self.burst,
            frame_timeout_s: self.frame_timeout_s,
            outbound_queue: self.outbound_queue,
            outbound_bytes: self.outbound_bytes,
        }
    }

    pub(crate) fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms.unwrap_or(self.frame_timeout_s.saturating_mul(1000)))
    }
}

/// The connection limits a running server can change (SIGHUP with
/// `--config`): they apply to connections admitted from then on, and the
/// connection counts at once. The protocol's own limits (`Limits`, announced
/// in `SINFO`) need a restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveLimits {
    /// Connections in total.
    pub max_connections: usize,
    /// Connections from one IP address.
    pub max_connections_per_ip: usize,
    /// New connections per minute from one IP address.
    pub connects_per_ip_per_minute: u64,
    /// Frames per second per connection.
    pub rate: f64,
    /// Frames a connection may send at once.
    pub burst: f64,
    /// Time from a frame's first byte to its last (s).
    pub frame_timeout_s: u64,
    /// Outbound queue length per connection (frames).
    pub outbound_queue: usize,
    /// Outbound queue size per connection (payload bytes).
    pub outbound_bytes: usize,
}
