//! `Limits`: every timeout and bound of the protocol core, with its default.
//!
//! Each default is stated once, here; `sigil serve --help`, `SINFO` and the
//! docs show these values.

use super::channel::ChannelLimits;
use sigil_proto::event::{Sinfo, PROTOCOL_VERSION};

/// Default idle timeout (s).
pub const DEFAULT_TIMEOUT_S: u64 = 180;
/// Default time allowed for CNN after accept (s).
pub const DEFAULT_CNN_TIMEOUT_S: u64 = 10;
/// Default accepted clock skew (s).
pub const DEFAULT_SKEW_S: u64 = 30;
/// Default online members for a healthy channel.
pub const DEFAULT_MIN_ONLINE: u64 = 1;
/// Default lifetime of an unacknowledged message (s).
pub const DEFAULT_PENDING_TTL_S: u64 = 120;
/// Default nonces remembered per account.
pub const DEFAULT_REPLAY_WINDOW: usize = 16_384;
/// Default cap on delivered, unacknowledged private messages (server-wide).
pub const DEFAULT_MAX_UNACKED_PRIVATE: usize = 65_536;

/// Default pending (uncommitted) messages per channel.
pub const DEFAULT_MAX_PENDING: usize = 4096;
/// Default bytes of message content awaiting commit per channel.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;
/// Default bytes of message content awaiting commit sent by one account, over
/// all its channels.
pub const DEFAULT_MAX_PENDING_BYTES_PER_ACCOUNT: usize = 16 * 1024 * 1024;
/// Default bytes of message content awaiting commit on the whole server.
pub const DEFAULT_MAX_PENDING_BYTES_TOTAL: usize = 256 * 1024 * 1024;
/// Default list entries (`LST_USR`, `CH_LST`, `CH_WHO`) per second per session.
pub const DEFAULT_LIST_ENTRIES_PER_S: u64 = 4096;
/// Default sign-ins (`CNN`) per minute per account.
pub const DEFAULT_CNN_PER_MINUTE: u64 = 30;
/// Default merged messages awaiting confirmation per channel.
pub const DEFAULT_MAX_MERGES: usize = 1024;
/// Default messages per `CH_APPEND` page (pages are also cut to fit `max_payload`).
pub const DEFAULT_PULL_PAGE: usize = 256;

/// Default channels on the server.
pub const DEFAULT_MAX_CHANNELS: usize = 10_000;
/// Default channels one account may be a member of.
pub const DEFAULT_MAX_CHANNELS_PER_ACCOUNT: usize = 64;
/// Default members per channel.
pub const DEFAULT_MAX_MEMBERS: usize = 1_000;

/// The protocol core's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Name sent in SINFO.
    pub server_name: String,
    /// Idle timeout (s).
    pub timeout_s: u64,
    /// CNN deadline after accept (s).
    pub cnn_timeout_s: u64,
    /// Accepted clock skew (s).
    pub skew_s: u64,
    /// Largest payload (bytes).
    pub max_payload: usize,
    /// Online members for a healthy channel.
    pub min_online: u64,
    /// Lifetime of an unacknowledged message (s).
    pub pending_ttl_s: u64,
    /// Nonces remembered per account.
    pub replay_window: usize,
    /// Delivered, unacknowledged private messages remembered server-wide.
    pub max_unacked_private: usize,
    /// Pending messages per channel.
    pub max_pending: usize,
    /// Bytes of message content pending per channel.
    pub max_pending_bytes: usize,
    /// Bytes of message content pending sent by one account, all channels.
    pub max_pending_bytes_per_account: usize,
    /// Bytes of message content pending on the whole server.
    pub max_pending_bytes_total: usize,
    /// List entries per second a session may ask for (burst: four seconds' worth).
    pub list_entries_per_s: u64,
    /// Sign-ins per minute per account (burst: a minute's worth).
    pub cnn_per_minute: u64,
    /// Merged messages awaiting confirmation per channel.
    pub max_merges: usize,
    /// Messages per `CH_APPEND` page.
    pub pull_page: usize,
    /// Channels on the server.
    pub max_channels: usize,
    /// Channels one account may be a member of.
    pub max_channels_per_account: usize,
    /// Members per channel.
    pub max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            server_name: "sigil".to_owned(),
            timeout_s: DEFAULT_TIMEOUT_S,
            cnn_timeout_s: DEFAULT_CNN_TIMEOUT_S,
            skew_s: DEFAULT_SKEW_S,
            max_payload: sigil_proto::wire::codec::DEFAULT_MAX_PAYLOAD,
            min_online: DEFAULT_MIN_ONLINE,
            pending_ttl_s: DEFAULT_PENDING_TTL_S,
            replay_window: DEFAULT_REPLAY_WINDOW,
            max_unacked_private: DEFAULT_MAX_UNACKED_PRIVATE,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_pending_bytes_per_account: DEFAULT_MAX_PENDING_BYTES_PER_ACCOUNT,
            max_pending_bytes_total: DEFAULT_MAX_PENDING_BYTES_TOTAL,
            list_entries_per_s: DEFAULT_LIST_ENTRIES_PER_S,
            cnn_per_minute: DEFAULT_CNN_PER_MINUTE,
            max_merges: DEFAULT_MAX_MERGES,
            pull_page: DEFAULT_PULL_PAGE,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_channels_per_account: DEFAULT_MAX_CHANNELS_PER_ACCOUNT,
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }
}

impl Limits {
    /// The part of the limits a channel enforces.
    pub fn channel_limits(&self) -> ChannelLimits {
        ChannelLimits {
            min_online: self.min_online,
            pending_ttl_s: self.pending_ttl_s,
            max_pending: self.max_pending,
            max_merges: self.max_merges,
            max_pending_bytes: self.max_pending_bytes,
            max_payload: self.max_payload,
        }
    }

    /// The SINFO payload describing these limits.
    pub fn sinfo(&self) -> Sinfo {
        Sinfo {
            protocol_version: PROTOCOL_VERSION,
            server_name: self.server_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            timeout_s: self.timeout_s,
            cnn_timeout_s: self.cnn_timeout_s,
            skew_s: self.skew_s,
            max_payload: self.max_payload as u64,
            min_online: self.min_online,
            list_entries_per_s: self.list_entries_per_s,
            cnn_per_minute: self.cnn_per_minute,
            max_pending_bytes_per_account: self.max_pending_bytes_per_account as u64,
            features: [sigil_proto::event::FEATURE_BATCH, sigil_proto::event::FEATURE_BIND].map(str::to_owned).to_vec(),
        }
    }
}
