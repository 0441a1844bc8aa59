//! `Relay`: the server's shared protocol state, as a pure state machine.
//!
//! It owns who is online, the accounts' names, the nonce windows, and the
//! private-message ledger that makes acks unforgeable (PROTOCOL.md §3, §4, §6).
//! `step(input, now)` appends [`Effect`]s: frames addressed to connections and
//! connections to close. It knows nothing of sockets, tasks or clocks.

use std::collections::{BTreeSet, HashMap};

use ulid::Ulid;

use super::config::Limits;
use crate::proto::command::{Command, Envelope, Request};
use crate::proto::event::{
    Msg, MsgAck, Outbound, Ucnn, Udcnn, UserEntry, UserPresence, UsrAdd, UsrHsk, UsrLst, UsrRmd,
};
use crate::proto::{ErrorCode, ProtoError};
use crate::wire::ReplayGuard;

use super::session::AUTH_FAILED_REASON;

/// Largest msgpack encoding of one `USR_LST` entry: map header, three keys,
/// a 26-character id, `"online"` and a name of at most 32 bytes.
const USER_ENTRY_MAX: usize = 1 + (3 + 28) + (7 + 8) + (5 + 2 + crate::store::MAX_NAME_LEN);

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
}

#[derive(Debug, Clone)]
struct Account {
    name: String,
    key_rev: u64,
}

/// Key of a delivered private message awaiting its ack: (recipient, sender, msg_id).
type Delivery = (Ulid, Ulid, Ulid);

/// The relay's state.
#[derive(Debug)]
pub struct Relay {
    limits: Limits,
    sinfo: Outbound,
    accounts: HashMap<Ulid, Account>,
    sessions: HashMap<ConnId, Ulid>,
    online: HashMap<Ulid, ConnId>,
    replay: ReplayGuard,
    /// Delivered, unacked private messages and when they expire.
    deliveries: HashMap<Delivery, u64>,
    deliveries_by_expiry: BTreeSet<(u64, Delivery)>,
}

impl Relay {
    /// A relay with the given limits and no accounts, started at `now`.
    /// Frames stamped before `now`'s second are refused: the nonces seen
    /// before a restart are forgotten, so their frames must not pass again.
    pub fn new(limits: Limits, now: u64) -> Self {
        let sinfo = Outbound::event(&limits.sinfo());
        Self {
            replay: ReplayGuard::new(limits.skew_s, limits.replay_window).with_floor(now.saturating_sub(1)),
            limits,
            sinfo,
            accounts: HashMap::new(),
            sessions: HashMap::new(),
            online: HashMap::new(),
            deliveries: HashMap::new(),
            deliveries_by_expiry: BTreeSet::new(),
        }
    }

    /// The `SINFO` frame (unsigned form is `.unsigned()`).
    pub fn sinfo(&self) -> &Outbound {
        &self.sinfo
    }

    /// The account an open connection is authenticated as.
    pub fn account_of(&self, conn: ConnId) -> Option<Ulid> {
        self.sessions.get(&conn).copied()
    }

    /// How many sessions are open.
    pub fn online_count(&self) -> usize {
        self.sessions.len()
    }

    /// Private messages awaiting an ack.
    pub fn pending_deliveries(&self) -> usize {
        self.deliveries.len()
    }

    /// Applies one input at `now` (unix seconds), appending effects to `out`.
    pub fn step(&mut self, input: Input, now: u64, out: &mut Vec<Effect>) {
        match input {
            Input::Open { conn, account, key_rev, envelope } => self.open(conn, account, key_rev, envelope, now, out),
            Input::Request { conn, request } => {
                let Some(&account) = self.sessions.get(&conn) else { return };
                if self.spend_nonce(conn, account, request.envelope, now, out) {
                    self.dispatch(conn, account, request, now, out);
                }
            }
            Input::Reject { conn, envelope, mut error } => {
                let Some(&account) = self.sessions.get(&conn) else { return };
                if let Some(envelope) = envelope {
                    if !self.spend_nonce(conn, account, envelope, now, out) {
                        return;
                    }
                    error.nonce_ref = Some(envelope.nonce);
                }
                out.push(Effect::Send { conn, frame: Outbound::error(&error) });
            }
            Input::Closed { conn } => self.end_session(conn, None, out),
            Input::AccountUpserted { id, name, key_rev } => self.account_upserted(id, name, key_rev, out),
            Input::AccountRemoved { id } => {
                if !self.accounts.contains_key(&id) {
                    return;
                }
                // End the session first: its UDCNN still names the account.
                if let Some(&conn) = self.online.get(&id) {
                    let e = ProtoError::new(ErrorCode::AccountRemoved, "this account was removed");
                    self.end_session(conn, Some(Outbound::error(&e)), out);
                }
                self.accounts.remove(&id);
                self.replay.forget(&id);
                self.broadcast(Outbound::event(&UsrRmd { id }), None, out);
            }
            Input::Tick => {
                self.replay.sweep(now);
                while let Some(&(expires, key)) = self.deliveries_by_expiry.first() {
                    if expires > now {
                        break;
                    }
                    self.deliveries_by_expiry.pop_first();
                    self.deliveries.remove(&key);
                }
            }
        }
    }

    /// Checks and records a request's nonce; on failure closes the session.
    fn spend_nonce(
        &mut self,
        conn: ConnId,
        account: Ulid,
        envelope: Envelope,
        now: u64,
        out: &mut Vec<Effect>,
    ) -> bool {
        match self.replay.check(account, envelope.timestamp, envelope.nonce, now) {
            Ok(()) => true,
            Err(e) => {
                let e = ProtoError::from(e).with_ref(envelope.nonce);
                self.end_session(conn, Some(Outbound::error(&e)), out);
                false
            }
        }
    }

    fn open(&mut self, conn: ConnId, account: Ulid, key_rev: u64, envelope: Envelope, now: u64, out: &mut Vec<Effect>) {
        let refuse = |e: ProtoError, out: &mut Vec<Effect>| {
            out.push(Effect::Close { conn, last: Some(Outbound::error(&e).unsigned()) });
        };
        let Some(info) = self.accounts.get(&account) else {
            return refuse(ProtoError::new(ErrorCode::AuthFailed, AUTH_FAILED_REASON), out);
        };
        if info.key_rev != key_rev {
            return refuse(ProtoError::new(ErrorCode::AuthFailed, AUTH_FAILED_REASON), out);
        }
        let name = info.name.clone();
        if let Err(e) = self.replay.check(account, envelope.timestamp, envelope.nonce, now) {
            return refuse(ProtoError::from(e).with_ref(envelope.nonce), out);
        }
        if let Some(&old) = self.online.get(&account) {
            let e = ProtoError::new(ErrorCode::SessionReplaced, "a new session for this account connected");
            self.end_session(old, Some(Outbound::error(&e)), out);
        }
        self.sessions.insert(conn, account);
        self.online.insert(account, conn);
        let ucnn = Outbound::event(&Ucnn(UserPresence { id: account, name }));
        out.push(Effect::Send { conn, frame: ucnn.clone() });
        self.broadcast(ucnn, Some(conn), out);
    }

    /// Ends a session: closes it (with `last`, if given) and tells everyone else.
    fn end_session(&mut self, conn: ConnId, last: Option<Outbound>, out: &mut Vec<Effect>) {
        let Some(account) = self.sessions.remove(&conn) else { return };
        if self.online.get(&account) == Some(&conn) {
            self.online.remove(&account);
        }
        out.push(Effect::Close { conn, last });
        let name = self.accounts.get(&account).map(|a| a.name.clone()).unwrap_or_default();
        self.broadcast(Outbound::event(&Udcnn(UserPresence { id: account, name })), None, out);
    }

    fn account_upserted(&mut self, id: Ulid, name: String, key_rev: u64, out: &mut Vec<Effect>) {
        match self.accounts.get_mut(&id) {
            None => {
                self.accounts.insert(id, Account { name: name.clone(), key_rev });
                let entry = UserEntry { id, status: "offline".to_owned(), name };
                self.broadcast(Outbound::event(&UsrAdd(entry)), None, out);
            }
            Some(account) => {
                account.name = name;
                if account.key_rev != key_rev {
                    account.key_rev = key_rev;
                    if let Some(&conn) = self.online.get(&id) {
                        let e = ProtoError::new(
                            ErrorCode::AuthFailed,
                            "this account's key was rotated: reconnect with the new key",
                        );
                        self.end_session(conn, Some(Outbound::error(&e)), out);
                    }
                }
            }
        }
    }

    /// Sends `frame` to every session except `except`.
    fn broadcast(&self, frame: Outbound, except: Option<ConnId>, out: &mut Vec<Effect>) {
        for &conn in self.sessions.keys() {
            if Some(conn) != except {
                out.push(Effect::Send { conn, frame: frame.clone() });
            }
        }
    }

    fn dispatch(&mut self, conn: ConnId, me: Ulid, request: Request, now: u64, out: &mut Vec<Effect>) {
        let nonce = request.envelope.nonce;
        let result = match request.command {
            Command::Kalive => Ok(()),
            Command::Info => {
                out.push(Effect::Send { conn, frame: self.sinfo.clone() });
                Ok(())
            }
            Command::Dcnn => {
                self.end_session(conn, None, out);
                Ok(())
            }
            // The session turns a second CNN into a Reject; nothing else sends it here.
            Command::Cnn { .. } => {
                Err(ProtoError::new(ErrorCode::AlreadyAuthenticated, "this session is already authenticated"))
            }
            Command::LstUsr => {
                for frame in self.user_list_pages() {
                    out.push(Effect::Send { conn, frame });
                }
                Ok(())
            }
            Command::CnnUsr { to } => self.target(to).map(|peer| {
                out.push(Effect::Send { conn: peer, frame: Outbound::event(&UsrHsk { id: me }) });
                out.push(Effect::Send { conn, frame: Outbound::event(&UsrHsk { id: to }) });
            }),
            Command::PvMsg { to, msg_id, msg } => self.target(to).and_then(|peer| {
                let key = (to, me, msg_id);
                if self.deliveries.contains_key(&key) {
                    return Err(ProtoError::new(ErrorCode::DuplicateMsg, "this msg_id is already awaiting its ack"));
                }
                self.record_delivery(key, now);
                let frame = Outbound::event(&Msg { from: me, msg_id, msg, timestamp: now });
                out.push(Effect::Send { conn: peer, frame });
                Ok(())
            }),
            Command::AckMsg { from, msg_id } => {
                let key = (me, from, msg_id);
                match self.deliveries.remove(&key) {
                    None => Err(ProtoError::new(
                        ErrorCode::UnknownMsg,
                        "no such message was delivered to you from that user",
                    )),
                    Some(expires) => {
                        self.deliveries_by_expiry.remove(&(expires, key));
                        match self.online.get(&from) {
                            Some(&peer) => {
                                out.push(Effect::Send {
                                    conn: peer,
                                    frame: Outbound::event(&MsgAck { msg_id, by: me }),
                                });
                                Ok(())
                            }
                            None => Err(ProtoError::new(
                                ErrorCode::UserOffline,
                                "the sender is offline; the ack was not delivered",
                            )),
                        }
                    }
                }
            }
        };
        if let Err(e) = result {
            out.push(Effect::Send { conn, frame: Outbound::error(&e.with_ref(nonce)) });
        }
    }

    /// `USR_LST` split into frames that each fit `max_payload`; all but the
    /// last have `more: true`. Sorted by name, ignoring case.
    fn user_list_pages(&self) -> Vec<Outbound> {
        let mut users: Vec<UserEntry> = self
            .online
            .keys()
            .filter_map(|id| {
                let a = self.accounts.get(id)?;
                Some(UserEntry { id: *id, status: "online".to_owned(), name: a.name.clone() })
            })
            .collect();
        users.sort_by(|a, b| a.name.to_ascii_lowercase().cmp(&b.name.to_ascii_lowercase()).then(a.id.cmp(&b.id)));
        // An entry encodes to at most USER_ENTRY_MAX bytes; the envelope to a few.
        let per_page = ((self.limits.max_payload.saturating_sub(16)) / USER_ENTRY_MAX).max(1);
        let mut pages: Vec<Outbound> = users
            .chunks(per_page)
            .enumerate()
            .map(|(i, chunk)| {
                let more = (i + 1) * per_page < users.len();
                Outbound::event(&UsrLst { users: chunk.to_vec(), more })
            })
            .collect();
        if pages.is_empty() {
            pages.push(Outbound::event(&UsrLst { users: Vec::new(), more: false }));
        }
        pages
    }

    /// The connection of a user who must exist and be online.
    fn target(&self, to: Ulid) -> Result<ConnId, ProtoError> {
        if !self.accounts.contains_key(&to) {
            return Err(ProtoError::new(ErrorCode::NoSuchUser, "no such user"));
        }
        self.online.get(&to).copied().ok_or_else(|| ProtoError::new(ErrorCode::UserOffline, "that user is offline"))
    }

    fn record_delivery(&mut self, key: Delivery, now: u64) {
        // The ledger is bounded: the oldest record goes first.
        while self.deliveries.len() >= self.limits.max_unacked_private {
            let Some((_, old)) = self.deliveries_by_expiry.pop_first() else { break };
            self.deliveries.remove(&old);
        }
        let expires = now + self.limits.pending_ttl_s;
        self.deliveries.insert(key, expires);
        self.deliveries_by_expiry.insert((expires, key));
    }
}
