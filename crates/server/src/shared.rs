//! State the server's tasks share: the configuration, the account keys
//! readers check `CNN` against, the hub's inbox, and the connection limits
//! (a [`ConnSlot`] per connection, given back on drop).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use ulid::Ulid;

use crate::config::{Config, LiveLimits};

/// The longest a `CNN` that failed waits for the accounts to be read again
/// before it is refused.
pub(crate) const ACCOUNT_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
use prometheus::IntGauge;

use crate::hub::HubMsg;
use crate::log_throttle::LogLimiter;
use crate::metrics::{Metrics, RateLimit};
use sigil_core::rate::TokenBucket;
use sigil_core::AccountKey;
use sigil_proto::Outbound;

/// The account keys readers check CNN against, with the accounts' names (for the logs).
pub type Directory = RwLock<HashMap<Ulid, (AccountKey, String)>>;

/// State shared by the server's tasks.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) directory: Directory,
    pub(crate) hub: mpsc::Sender<HubMsg>,
    pub(crate) sinfo_unsigned: Outbound,
    pub(crate) tracker: TaskTracker,
    /// Open connections, in total and per IP address.
    pub(crate) connections: std::sync::Mutex<(usize, HashMap<std::net::IpAddr, usize>)>,
    /// New connections per IP address lately: a reconnect loop costs every
    /// co-member presence frames per sign-in, so it is metered at accept.
    pub(crate) connects: std::sync::Mutex<HashMap<std::net::IpAddr, TokenBucket>>,
    /// The last connection id given out.
    pub(crate) last_conn: AtomicU64,
    /// What the server counts.
    pub(crate) metrics: Arc<Metrics>,
    /// The connection limits in force (changed while running by SIGHUP).
    pub(crate) live: RwLock<LiveLimits>,
    /// Asks the account watcher to read the accounts now; it answers on the
    /// sender once it has (see [`Shared::refresh_accounts`]).
    pub(crate) account_refresh: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    /// How often lines about events anyone can repeat are written.
    pub(crate) log: Arc<LogLimiter>,
}

/// A connection's place in the connection limits, given back on drop.
pub(crate) struct ConnSlot {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ip: std::net::IpAddr,
    /// The open-connections gauge of its transport.
    gauge: IntGauge,
    /// Its transport, as the metrics' `transport` label says it.
    pub(crate) transport: &'static str,
}

impl Shared {
    /// The connection limits in force now.
    pub(crate) fn live(&self) -> LiveLimits {
        self.live.read().map_or_else(|_| self.config.live(), |l| *l)
    }

    /// Has the account watcher read the store's accounts now, and waits
    /// (at most [`ACCOUNT_REFRESH_WAIT`]) until the directory holds what it
    /// read: an account created or rotated a moment ago can sign in at once,
    /// without waiting for the next poll.
    pub(crate) async fn refresh_accounts(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.account_refresh.send(done).is_ok() {
            let _ = tokio::time::timeout(ACCOUNT_REFRESH_WAIT, wait).await;
        }
    }

    /// Takes a connection slot for a connection over `transport`, or says
    /// which limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        transport: &'static str,
    ) -> Result<ConnSlot, &'static str> {
        let slot = self.take_slot(ip, transport);
        if slot.is_err() {
            self.metrics.rate_limited(RateLimit::Connections);
        }
        slot
    }

    fn take_slot(self: &Arc<Self>, ip: std::net::IpAddr, transport: &'static str) -> Result<ConnSlot, &'static str> {
        let live = self.live();
        self.take_connect(ip, &live)?;
        let mut guard = self.connections.lock().map_err(|_| "server state unavailable")?;
        let (total, per_ip) = &mut *guard;
        if *total >= live.max_connections {
            return Err("too many connections to this server");
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= live.max_connections_per_ip {
            return Err("too many connections from your address");
        }
        *mine += 1;
        *total += 1;
        let gauge = self.metrics.connections(transport);
        gauge.inc();
        Ok(ConnSlot { shared: self.clone(), ip, gauge, transport })
    }
}

/// Per-address buckets kept before full ones are swept.
const CONNECT_BUCKETS: usize = 4096;

impl Shared {
    /// Spends one of `ip`'s new connections, or says it has none left.
    fn take_connect(&self, ip: std::net::IpAddr, live: &LiveLimits) -> Result<(), &'static str> {
        let now = crate::clock::now_unix_f64();
        let per_min = live.connects_per_ip_per_minute as f64;
        let mut buckets = self.connects.lock().map_err(|_| "server state unavailable")?;
        if buckets.len() >= CONNECT_BUCKETS {
            buckets.retain(|_, b| !b.is_full(now));
        }
        let bucket = buckets.entry(ip).or_insert_with(|| TokenBucket::new(per_min / 60.0, per_min, now));
        if bucket.try_take(1.0, now) {
            Ok(())
        } else {
            Err("too many new connections from your address: wait a little")
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.gauge.dec();
        if let Ok(mut guard) = self.shared.connections.lock() {
            let (total, per_ip) = &mut *guard;
            *total = total.saturating_sub(1);
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}
