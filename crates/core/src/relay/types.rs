//! What goes into the relay and what comes out: [`Input`]s from the shell,
//! [`Effect`]s for it to carry out, and where new ids come from. Plain data;
//! every other relay module depends on it, it on none of them.

use sigil_proto::command::{Envelope, Request};
use sigil_proto::event::HistoryEntry;
use sigil_proto::{Outbound, ProtoError};
use ulid::Ulid;

use crate::channel::StoreOp;

/// A connection, as the shell numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What happens to the relay.
#[derive(Debug)]
pub enum Input {
    /// A connection passed CNN's signature and time checks.
    Open {
        /// The connection.
        conn: ConnId,
        /// The account it authenticated as.
        account: Ulid,
        /// The key revision its tag was checked with.
        key_rev: u64,
        /// The CNN's nonce and timestamp.
        envelope: Envelope,
        /// The session takes batched frames (PROTOCOL.md §7.9).
        batch: bool,
        /// The shell signs the session with the key derived from its `CNN`
        /// (PROTOCOL.md §7.10): its own `UCNN` says so.
        bind: bool,
    },
    /// A verified request on an authenticated connection.
    Request {
        /// The connection.
        conn: ConnId,
        /// The request.
        request: Request,
    },
    /// A verified frame refused with a non-fatal error.
    Reject {
        /// The connection.
        conn: ConnId,
        /// Its envelope, when readable.
        envelope: Option<Envelope>,
        /// The error.
        error: ProtoError,
    },
    /// A connection is gone (any reason). Idempotent.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// An account was created or its key rotated.
    AccountUpserted {
        /// The account.
        id: Ulid,
        /// Its name.
        name: String,
        /// Its key revision.
        key_rev: u64,
    },
    /// An account was removed.
    AccountRemoved {
        /// The account.
        id: Ulid,
    },
    /// Time passed: expire what is due.
    Tick,
    /// Nothing more is waiting: send the acks gathered so far (§7.9). The
    /// shell sends this when its inbox is empty; any input other than an
    /// `ACK_CH_MSG` does the same first, so frames keep their order.
    Flush,
    /// The store made a channel's writes durable.
    Stored {
        /// The channel.
        channel: Ulid,
        /// The last durable history position (0: none in this batch).
        seq: u64,
        /// The highest durable election number (0: none in this batch).
        election: u64,
    },
    /// The store stopped taking writes (`writable: false`: read-only mode,
    /// PROTOCOL.md §3.8) or takes them again.
    StoreMode {
        /// Whether writes succeed.
        writable: bool,
    },
    /// History read for a `CH_PULL`.
    Pulled {
        /// The asking connection.
        conn: ConnId,
        /// The channel.
        channel: Ulid,
        /// The anchor the client gave.
        anchor: Option<Ulid>,
        /// Messages after it, in commit order (at most the page size).
        entries: Vec<HistoryEntry>,
        /// More history follows these entries.
        more: bool,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Queue a frame to a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Outbound,
    },
    /// Close a connection after what is queued and then `last`, if any.
    Close {
        /// The connection.
        conn: ConnId,
        /// The final frame (an `ERR`), if any.
        last: Option<Outbound>,
    },
    /// Write to the store; appends are reported back as [`Input::Stored`].
    Store(StoreOp),
    /// Read history for a `CH_PULL`; answered as [`Input::Pulled`].
    Pull(PullRequest),
}

/// A history read for a `CH_PULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullRequest {
    /// The asking connection.
    pub conn: ConnId,
    /// The channel.
    pub channel: Ulid,
    /// The anchor the client gave.
    pub anchor: Option<Ulid>,
    /// Read positions after this one.
    pub after_seq: u64,
    /// At most this many messages.
    pub limit: usize,
    /// Stop reading once the messages' content passes this many bytes.
    pub max_bytes: usize,
}

/// Where the relay's new ids (channel ids) come from. The core makes none
/// itself, so it reads no clock and draws no randomness: the server passes
/// `IdSource::new(Ulid::new)`, a simulation a counter, and a run replays exactly.
pub struct IdSource(Box<dyn FnMut() -> Ulid + Send>);

impl IdSource {
    /// Ids from `next`.
    pub fn new(next: impl FnMut() -> Ulid + Send + 'static) -> Self {
        Self(Box::new(next))
    }

    /// `first`, `first + 1`, …: deterministic, for tests and simulations.
    pub fn counter(first: u128) -> Self {
        let mut n = first;
        Self::new(move || {
            let id = Ulid::from(n);
            n = n.wrapping_add(1);
            id
        })
    }

    pub(crate) fn next(&mut self) -> Ulid {
        (self.0)()
    }
}

impl std::fmt::Debug for IdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdSource")
    }
}
