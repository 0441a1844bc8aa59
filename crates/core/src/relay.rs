//! `Relay`: the server's shared protocol state, as a pure state machine.
//!
//! It owns who is online, the accounts' names, the nonce windows, the
//! private-message ledger that makes acks unforgeable (PROTOCOL.md §3, §4, §6),
//! and the channels (§7): it routes each channel command to its [`Channel`]
//! and turns the channel's user-addressed output into connection-addressed
//! effects.
//! `step(input, now)` appends [`Effect`]s: frames addressed to connections and
//! connections to close. It knows nothing of sockets, tasks or clocks.

use std::collections::{BTreeSet, HashMap};

use ulid::Ulid;

use super::channel::{Channel, ChannelEffect, ChannelSnapshot, StoreOp};
use super::config::Limits;
use crate::replay::ReplayGuard;
use sigil_proto::command::{Command, Envelope, Request};
use sigil_proto::event::{
    ChAppend, ChMsgAck, HistoryEntry, LstCh, Msg, MsgAck, Outbound, Ucnn, Udcnn, UserEntry, UserPresence, UsrAdd,
    UsrHsk, UsrLst, UsrRmd,
};
use sigil_proto::{ErrorCode, ProtoError};

use super::session::AUTH_FAILED_REASON;

/// Largest msgpack encoding of one `USR_LST` entry: map header, three keys,
/// a 26-character id, `"online"` and a name of at most 32 bytes.
const USER_ENTRY_MAX: usize = 1 + (3 + 28) + (7 + 8) + (5 + 2 + sigil_proto::MAX_NAME_LEN);

/// Largest msgpack encoding of one `LST_CH` entry (name ≤ 64 bytes, leader id or nil).
const CHANNEL_ENTRY_MAX: usize = 1 + (3 + 28) + (5 + 2 + MAX_CHANNEL_NAME_LEN) + (7 + 28) + (7 + 10);

/// Longest channel name.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;

/// Channel names: 1 to 64 of `[A-Za-z0-9_.-#]`, unique ignoring case.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'#'))
}

fn no_such_channel() -> ProtoError {
    ProtoError::new(ErrorCode::NoSuchChannel, "no such channel")
}

/// Splits a list into frames of at most `per_page` items; all but the last
/// say `more`. An empty list is one empty page.
fn pages<T>(items: Vec<T>, per_page: usize, mut frame: impl FnMut(Vec<T>, bool) -> Outbound) -> Vec<Outbound> {
    let mut out = Vec::new();
    let mut items = items.into_iter().peekable();
    loop {
        let page: Vec<T> = items.by_ref().take(per_page).collect();
        let more = items.peek().is_some();
        out.push(frame(page, more));
        if !more {
            return out;
        }
    }
}

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

#[derive(Debug, Clone)]
struct Account {
    name: String,
    key_rev: u64,
}

/// A message and the users whose acks of it are gathered.
type AckedBy = (Ulid, Vec<Ulid>);

/// Acks gathered before they are sent even without [`Input::Flush`].
const MAX_GATHERED_ACKS: usize = 65_536;

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
    /// Delivered, unacked private messages: when they expire, and their insertion number.
    deliveries: HashMap<Delivery, (u64, u64)>,
    /// (expiry, insertion number, delivery): expiries never decrease, so this
    /// is also the order of insertion; the first is the oldest.
    deliveries_by_expiry: BTreeSet<(u64, u64, Delivery)>,
    deliveries_made: u64,
    channels: HashMap<Ulid, Channel>,
    /// Lower-cased channel name → id.
    channel_names: HashMap<String, Ulid>,
    /// Account → the channels it is a member of.
    memberships: HashMap<Ulid, BTreeSet<Ulid>>,
    /// Message ids pending or awaiting merge confirmation → their channel.
    /// Message-only commands are routed by it, and it keeps ids unique across
    /// channels so one channel cannot capture another's acks. Pruned each tick.
    live_msgs: HashMap<Ulid, Ulid>,
    /// Connections with a `CH_PULL` being read: one at a time each.
    pulls_in_flight: std::collections::HashSet<ConnId>,
    /// Sessions that asked for batched frames (PROTOCOL.md §7.9).
    batching: std::collections::HashSet<ConnId>,
    /// Acks to tell, gathered across consecutive `ACK_CH_MSG`s: (to, msg_id, acker).
    ack_notes: Vec<(ConnId, Ulid, Ulid)>,
    /// Reused buffer for channel output.
    channel_out: Vec<ChannelEffect>,
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
            deliveries_made: 0,
            channels: HashMap::new(),
            channel_names: HashMap::new(),
            memberships: HashMap::new(),
            live_msgs: HashMap::new(),
            pulls_in_flight: std::collections::HashSet::new(),
            batching: std::collections::HashSet::new(),
            ack_notes: Vec::new(),
            channel_out: Vec::new(),
        }
    }

    /// Adds a channel as the store holds it (at start).
    pub fn restore_channel(&mut self, snapshot: ChannelSnapshot) {
        let id = snapshot.id;
        for member in &snapshot.members {
            self.memberships.entry(*member).or_default().insert(id);
        }
        self.channel_names.insert(snapshot.name.to_ascii_lowercase(), id);
        self.channels.insert(id, Channel::restore(snapshot, self.limits.channel_limits()));
    }

    /// A channel, for inspection.
    pub fn channel(&self, id: &Ulid) -> Option<&Channel> {
        self.channels.get(id)
    }

    /// The `SINFO` frame (unsigned form is `.unsigned()`).
    pub fn sinfo(&self) -> &Outbound {
        &self.sinfo
    }

    /// The account an open connection is authenticated as.
    pub fn account_of(&self, conn: ConnId) -> Option<Ulid> {
        self.sessions.get(&conn).copied()
    }

    /// Applies one input at `now` (unix seconds), appending effects to `out`.
    pub fn step(&mut self, input: Input, now: u64, out: &mut Vec<Effect>) {
        let gathers =
            matches!(&input, Input::Request { request, .. } if matches!(request.command, Command::AckChMsg { .. }));
        if !gathers {
            self.flush_acks(out);
        }
        match input {
            Input::Flush => {}
            Input::Open { conn, account, key_rev, envelope, batch } => {
                self.open(conn, account, key_rev, envelope, now, out);
                if batch && self.sessions.contains_key(&conn) {
                    self.batching.insert(conn);
                }
            }
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
                for channel in self.memberships.remove(&id).unwrap_or_default() {
                    // Announces CH_ULEAVE; the store already dropped the memberships.
                    let _ = self.with_channel(channel, out, |c, o| c.leave(id, o));
                }
                self.accounts.remove(&id);
                self.replay.forget(&id);
                self.broadcast(Outbound::event(&UsrRmd { id }), None, out);
            }
            Input::Stored { channel, seq, election } => {
                let _ = self.with_channel(channel, out, |c, o| {
                    c.stored(seq, election, o);
                    Ok(())
                });
            }
            Input::Pulled { conn, channel, anchor, entries, more } => {
                self.pulls_in_flight.remove(&conn);
                if self.sessions.contains_key(&conn) {
                    let frame = self.append_page(channel, anchor, entries, more);
                    out.push(Effect::Send { conn, frame });
                }
            }
            Input::Tick => {
                let ids: Vec<Ulid> = self.channels.keys().copied().collect();
                for channel in ids {
                    let _ = self.with_channel(channel, out, |c, o| {
                        c.tick(now, o);
                        Ok(())
                    });
                }
                let channels = &self.channels;
                self.live_msgs.retain(|msg, c| channels.get(c).is_some_and(|c| c.is_live(msg)));
                self.replay.sweep(now);
                while let Some(&(expires, _, key)) = self.deliveries_by_expiry.first() {
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
        // Then one CH_STATUS per channel it is a member of (and recounts for the others).
        for channel in self.memberships.get(&account).cloned().unwrap_or_default() {
            let _ = self.with_channel(channel, out, |c, o| {
                c.session_up(account, o);
                Ok(())
            });
        }
    }

    /// Ends a session: closes it (with `last`, if given) and tells everyone else.
    fn end_session(&mut self, conn: ConnId, last: Option<Outbound>, out: &mut Vec<Effect>) {
        // No frame overtakes gathered acks (§7.9).
        self.flush_acks(out);
        self.pulls_in_flight.remove(&conn);
        self.batching.remove(&conn);
        let Some(account) = self.sessions.remove(&conn) else { return };
        if self.online.get(&account) == Some(&conn) {
            self.online.remove(&account);
        }
        out.push(Effect::Close { conn, last });
        let name = self.accounts.get(&account).map(|a| a.name.clone()).unwrap_or_default();
        self.broadcast(Outbound::event(&Udcnn(UserPresence { id: account, name })), None, out);
        for channel in self.memberships.get(&account).cloned().unwrap_or_default() {
            let _ = self.with_channel(channel, out, |c, o| {
                c.session_down(account, o);
                Ok(())
            });
        }
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
            command @ (Command::ChNew { .. }
            | Command::ChJoin { .. }
            | Command::ChLeave { .. }
            | Command::ChLst
            | Command::ChLead { .. }
            | Command::ChVote { .. }
            | Command::ChMsg { .. }
            | Command::AckChMsg { .. }
            | Command::ChCommit { .. }
            | Command::ChPull { .. }
            | Command::ChMerge { .. }
            | Command::ChAckReq { .. }) => self.dispatch_channel(conn, me, command, now, out),
            Command::AckMsg { from, msg_id } => {
                let key = (me, from, msg_id);
                match self.deliveries.remove(&key) {
                    None => Err(ProtoError::new(
                        ErrorCode::UnknownMsg,
                        "no such message was delivered to you from that user",
                    )),
                    Some((expires, made)) => {
                        self.deliveries_by_expiry.remove(&(expires, made, key));
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
            // No frame overtakes gathered acks (§7.9).
            self.flush_acks(out);
            out.push(Effect::Send { conn, frame: Outbound::error(&e.with_ref(nonce)) });
        }
    }

    /// Channel commands (PROTOCOL.md §7).
    fn dispatch_channel(
        &mut self,
        conn: ConnId,
        me: Ulid,
        command: Command,
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Result<(), ProtoError> {
        match command {
            Command::ChNew { name } => self.create_channel(me, name, now, out),
            Command::ChJoin { id } => {
                let newcomer = self.channels.get(&id).is_some_and(|c| !c.is_member(&me));
                let full =
                    newcomer && self.channels.get(&id).is_some_and(|c| c.members().len() >= self.limits.max_members);
                if full {
                    return Err(ProtoError::new(
                        ErrorCode::RateLimited,
                        "the channel has its maximum number of members",
                    ));
                }
                if newcomer {
                    self.check_membership_room(me)?;
                }
                self.with_channel(id, out, |c, o| c.join(me, o))?;
                self.memberships.entry(me).or_default().insert(id);
                Ok(())
            }
            Command::ChLeave { id } => {
                self.with_channel(id, out, |c, o| c.leave(me, o))?;
                if let Some(set) = self.memberships.get_mut(&me) {
                    set.remove(&id);
                }
                Ok(())
            }
            Command::ChLst => {
                let mut entries: Vec<_> = self.channels.values().map(Channel::list_entry).collect();
                entries.sort_by_cached_key(|c| c.name.to_ascii_lowercase());
                let per_page = self.per_page(CHANNEL_ENTRY_MAX);
                for frame in pages(entries, per_page, |channels, more| Outbound::event(&LstCh { channels, more })) {
                    out.push(Effect::Send { conn, frame });
                }
                Ok(())
            }
            Command::ChLead { channel, election } => self.with_channel(channel, out, |c, o| c.lead(me, election, o)),
            Command::ChVote { channel, election, user } => {
                self.with_channel(channel, out, |c, o| c.vote(me, election, user, o))
            }
            Command::ChMsg { id, msg_id, msg } => {
                // Membership first: non-members learn nothing about ids in use.
                self.member_of(me, id)?;
                if self.live_channel(&msg_id).is_some() {
                    return Err(ProtoError::new(ErrorCode::DuplicateMsg, "this msg_id is in use"));
                }
                self.with_channel(id, out, |c, o| c.message(me, msg_id, msg, now, o))?;
                self.live_msgs.insert(msg_id, id);
                Ok(())
            }
            Command::AckChMsg { id, ids } if ids.is_empty() => {
                let channel = self.message_channel(me, &id)?;
                self.with_channel(channel, out, |c, o| c.ack(me, id, o))
            }
            Command::AckChMsg { id, ids } => {
                // Batching (§7.9): each id as its own ACK_CH_MSG, in frame order.
                let mut first_error = None;
                for msg_id in std::iter::once(id).chain(ids) {
                    let result = self
                        .message_channel(me, &msg_id)
                        .and_then(|channel| self.with_channel(channel, out, |c, o| c.ack(me, msg_id, o)));
                    if let (Err(e), None) = (result, &first_error) {
                        first_error = Some(ProtoError::new(e.code, format!("{msg_id}: {}", e.reason)));
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            Command::ChCommit { id, acks, ids } => {
                // Batching (§7.9): `ids` are committed after `id`, in order, with the same acks.
                let batched = !ids.is_empty();
                // One set for the whole frame: a batch costs per id, not per id and ack.
                let acks: BTreeSet<Ulid> = acks.into_iter().collect();
                let mut first_error = None;
                for msg_id in std::iter::once(id).chain(ids) {
                    let result = self
                        .message_channel(me, &msg_id)
                        .and_then(|channel| self.with_channel(channel, out, |c, o| c.commit(me, msg_id, &acks, o)));
                    if let (Err(e), None) = (result, &first_error) {
                        let e = if batched { ProtoError::new(e.code, format!("{msg_id}: {}", e.reason)) } else { e };
                        first_error = Some(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            Command::ChAckReq { id, users } => {
                let channel = self.live_channel(&id).ok_or_else(|| {
                    ProtoError::new(ErrorCode::UnknownMsg, "no merge of that message awaits confirmation")
                })?;
                self.with_channel(channel, out, |c, o| c.ack_request(me, id, &users, o))
            }
            Command::ChMerge { id, msg } => {
                self.member_of(me, id)?;
                if let Some(taken) = msg.iter().find(|m| self.live_channel(&m.id).is_some_and(|c| c != id)) {
                    return Err(ProtoError::new(ErrorCode::DuplicateMsg, format!("msg_id {} is in use", taken.id)));
                }
                for msg_id in self.with_channel(id, out, |c, o| c.merge(me, msg, now, o))? {
                    self.live_msgs.insert(msg_id, id);
                }
                Ok(())
            }
            Command::ChPull { id, anchor } => {
                let c = self.member_of(me, id)?;
                let after_seq = match anchor {
                    None => 0,
                    Some(a) => c.seq_of(&a).ok_or_else(|| ProtoError::new(ErrorCode::UnknownMsg, "unknown anchor"))?,
                };
                if !self.pulls_in_flight.insert(conn) {
                    return Err(ProtoError::new(ErrorCode::RateLimited, "wait for the answer to your last CH_PULL"));
                }
                let (limit, max_bytes) = (self.limits.pull_page, self.limits.max_payload);
                out.push(Effect::Pull(PullRequest { conn, channel: id, anchor, after_seq, limit, max_bytes }));
                Ok(())
            }
            other => {
                Err(ProtoError::new(ErrorCode::UnknownCommand, format!("{} is not a channel command", other.name())))
            }
        }
    }

    fn create_channel(&mut self, me: Ulid, name: String, now: u64, out: &mut Vec<Effect>) -> Result<(), ProtoError> {
        if !valid_channel_name(&name) {
            return Err(ProtoError::new(
                ErrorCode::BadPayload,
                format!("invalid channel name: use 1 to {MAX_CHANNEL_NAME_LEN} of A-Z a-z 0-9 _ . - #"),
            ));
        }
        let key = name.to_ascii_lowercase();
        if self.channel_names.contains_key(&key) {
            return Err(ProtoError::new(ErrorCode::NameTaken, "a channel with that name exists"));
        }
        if self.channels.len() >= self.limits.max_channels {
            return Err(ProtoError::new(ErrorCode::RateLimited, "the server has its maximum number of channels"));
        }
        self.check_membership_room(me)?;
        let id = Ulid::new();
        let mut channel = Channel::new(id, name, self.limits.channel_limits());
        let mut effects = std::mem::take(&mut self.channel_out);
        channel.create(me, now, &mut effects);
        self.channels.insert(id, channel);
        self.channel_names.insert(key, id);
        self.memberships.entry(me).or_default().insert(id);
        self.route(&mut effects, out);
        self.channel_out = effects;
        Ok(())
    }

    /// Refuses one more channel for an account already in its maximum.
    fn check_membership_room(&self, me: Ulid) -> Result<(), ProtoError> {
        if self.memberships.get(&me).map_or(0, BTreeSet::len) >= self.limits.max_channels_per_account {
            return Err(ProtoError::new(ErrorCode::RateLimited, "you are in your maximum number of channels"));
        }
        Ok(())
    }

    /// The channel `id`, if it exists and `me` is a member.
    fn member_of(&self, me: Ulid, id: Ulid) -> Result<&Channel, ProtoError> {
        let c = self.channels.get(&id).ok_or_else(no_such_channel)?;
        if !c.is_member(&me) {
            return Err(ProtoError::new(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        Ok(c)
    }

    /// The channel where `msg_id` is pending or awaiting merge confirmation.
    fn live_channel(&self, msg_id: &Ulid) -> Option<Ulid> {
        self.live_msgs.get(msg_id).copied().filter(|c| self.channels.get(c).is_some_and(|c| c.is_live(msg_id)))
    }

    /// The channel a message-only command (ACK_CH_MSG, CH_COMMIT) is about:
    /// where the message is live, else one of `me`'s channels that committed it.
    fn message_channel(&self, me: Ulid, msg_id: &Ulid) -> Result<Ulid, ProtoError> {
        self.live_channel(msg_id)
            .or_else(|| {
                let mine = self.memberships.get(&me).into_iter().flatten();
                mine.copied().find(|c| self.channels.get(c).is_some_and(|c| c.seq_of(msg_id).is_some()))
            })
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownMsg, "no such message in your channels"))
    }

    /// Runs `f` on a channel and routes what it emits.
    fn with_channel<T>(
        &mut self,
        id: Ulid,
        out: &mut Vec<Effect>,
        f: impl FnOnce(&mut Channel, &mut Vec<ChannelEffect>) -> Result<T, ProtoError>,
    ) -> Result<T, ProtoError> {
        let channel = self.channels.get_mut(&id).ok_or_else(no_such_channel)?;
        let mut effects = std::mem::take(&mut self.channel_out);
        let result = f(channel, &mut effects);
        self.route(&mut effects, out);
        self.channel_out = effects;
        result
    }

    /// Turns user-addressed channel output into connection-addressed effects.
    fn route(&mut self, effects: &mut Vec<ChannelEffect>, out: &mut Vec<Effect>) {
        for effect in effects.drain(..) {
            match effect {
                ChannelEffect::Send { to, frame } => {
                    if let Some(&conn) = self.online.get(&to) {
                        out.push(Effect::Send { conn, frame });
                    }
                }
                ChannelEffect::AckNote { to, msg_id, user } => {
                    if let Some(&conn) = self.online.get(&to) {
                        self.ack_notes.push((conn, msg_id, user));
                        // Bounded: a shell that never goes idle still gets them out.
                        if self.ack_notes.len() >= MAX_GATHERED_ACKS {
                            self.flush_acks(out);
                        }
                    }
                }
                ChannelEffect::SendBatch { to, batch } => {
                    let Some(&conn) = self.online.get(&to) else { continue };
                    if self.batching.contains(&conn) {
                        out.push(Effect::Send { conn, frame: batch.batched().clone() });
                    } else {
                        out.extend(batch.singles().iter().map(|frame| Effect::Send { conn, frame: frame.clone() }));
                    }
                }
                ChannelEffect::Store(op) => out.push(Effect::Store(op)),
            }
        }
    }

    /// Sends the gathered acks: to a batching session, each set of
    /// messages acknowledged by the same users as one `CH_MSG_ACK {id, ids,
    /// user, users}`; to any other, one `CH_MSG_ACK {id, user}` per ack.
    fn flush_acks(&mut self, out: &mut Vec<Effect>) {
        if self.ack_notes.is_empty() {
            return;
        }
        let notes = std::mem::take(&mut self.ack_notes);
        // Per connection, in order of first appearance: message → its ackers
        // (indexed: a round of acks is every member times every message).
        let mut per_conn: Vec<(ConnId, Vec<AckedBy>)> = Vec::new();
        let mut conn_at: HashMap<ConnId, usize> = HashMap::new();
        let mut index: HashMap<(ConnId, Ulid), usize> = HashMap::new();
        for (conn, msg_id, user) in notes {
            if !self.sessions.contains_key(&conn) {
                continue;
            }
            if !self.batching.contains(&conn) {
                let frame = Outbound::event(&ChMsgAck { id: msg_id, user, users: Vec::new(), ids: Vec::new() });
                out.push(Effect::Send { conn, frame });
                continue;
            }
            let at = *conn_at.entry(conn).or_insert_with(|| {
                per_conn.push((conn, Vec::new()));
                per_conn.len() - 1
            });
            let msgs = &mut per_conn[at].1;
            match index.get(&(conn, msg_id)) {
                Some(&i) => msgs[i].1.push(user),
                None => {
                    index.insert((conn, msg_id), msgs.len());
                    msgs.push((msg_id, vec![user]));
                }
            }
        }
        for (conn, msgs) in per_conn {
            // Messages with the same set of ackers share a frame.
            let mut groups: Vec<(Vec<Ulid>, Vec<Ulid>)> = Vec::new();
            let mut group_of: HashMap<Vec<Ulid>, usize> = HashMap::new();
            for (msg_id, mut users) in msgs {
                users.sort_unstable();
                users.dedup();
                match group_of.get(&users) {
                    Some(&g) => groups[g].1.push(msg_id),
                    None => {
                        group_of.insert(users.clone(), groups.len());
                        groups.push((users, vec![msg_id]));
                    }
                }
            }
            for (users, ids) in groups {
                let per_frame = super::channel::ids_per_frame(self.limits.max_payload, users.len());
                for chunk in ids.chunks(per_frame) {
                    let frame = Outbound::event(&ChMsgAck {
                        id: chunk[0],
                        user: users[0],
                        users: users[1..].to_vec(),
                        ids: chunk[1..].to_vec(),
                    });
                    out.push(Effect::Send { conn, frame });
                }
            }
        }
    }

    /// True when acks are gathered and not yet sent (the shell then sends [`Input::Flush`]).
    pub fn has_gathered_acks(&self) -> bool {
        !self.ack_notes.is_empty()
    }

    /// How many list entries of at most `entry_max` bytes fit one frame.
    fn per_page(&self, entry_max: usize) -> usize {
        (self.limits.max_payload.saturating_sub(32) / entry_max).max(1)
    }

    /// A `CH_APPEND` page within `max_payload`: entries that do not fit are
    /// left for the next pull (`more` is then true).
    fn append_page(
        &self,
        channel: Ulid,
        anchor: Option<Ulid>,
        mut entries: Vec<HistoryEntry>,
        mut more: bool,
    ) -> Outbound {
        loop {
            let frame = Outbound::event(&ChAppend { id: channel, anchor, messages: entries.clone(), more });
            if frame.payload.len() <= self.limits.max_payload || entries.len() <= 1 {
                return frame;
            }
            let keep = (entries.len() / 2).max(1);
            entries.truncate(keep);
            more = true;
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
        users.sort_by_cached_key(|u| (u.name.to_ascii_lowercase(), u.id));
        pages(users, self.per_page(USER_ENTRY_MAX), |users, more| Outbound::event(&UsrLst { users, more }))
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
            let Some((_, _, old)) = self.deliveries_by_expiry.pop_first() else { break };
            self.deliveries.remove(&old);
        }
        let expires = now.saturating_add(self.limits.pending_ttl_s);
        self.deliveries_made += 1;
        self.deliveries.insert(key, (expires, self.deliveries_made));
        self.deliveries_by_expiry.insert((expires, self.deliveries_made, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::Body;

    /// Decoded `CH_MSG_ACK`s sent to `conn`.
    fn acks_to(out: &[Effect], conn: ConnId) -> Vec<ChMsgAck> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Send { conn: c, frame } if *c == conn && frame.command == "CH_MSG_ACK" => {
                    match sigil_proto::ServerEvent::decode(frame.command, &frame.payload) {
                        Ok(sigil_proto::ServerEvent::ChMsgAck(a)) => Some(a),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn acks_from_consecutive_frames_reach_a_batching_leader_as_one_frame() {
        let now = 1_800_000_000;
        let mut relay = Relay::new(Limits::default(), now);
        let mut out = Vec::new();
        let users: Vec<Ulid> = (1..=4u128).map(Ulid::from).collect();
        let conns: Vec<ConnId> = (1..=4u64).map(ConnId).collect();
        let mut nonce = 0;
        let mut request = |relay: &mut Relay, out: &mut Vec<Effect>, i: usize, command: Command| {
            nonce += 1;
            let request = Request { envelope: Envelope { nonce, timestamp: now }, command };
            relay.step(Input::Request { conn: conns[i], request }, now, out);
        };
        for (i, &id) in users.iter().enumerate() {
            relay.step(Input::AccountUpserted { id, name: format!("u{i}"), key_rev: 1 }, now, &mut out);
            let envelope = Envelope { nonce: 1000 + i as u64, timestamp: now };
            // users[0] (the leader) asks for batches; the sender users[1] does not.
            relay.step(Input::Open { conn: conns[i], account: id, key_rev: 1, envelope, batch: i == 0 }, now, &mut out);
        }
        request(&mut relay, &mut out, 0, Command::ChNew { name: "c".into() });
        let channel = relay.channels.keys().next().copied().expect("created");
        for i in 1..4 {
            request(&mut relay, &mut out, i, Command::ChJoin { id: channel });
        }
        request(&mut relay, &mut out, 0, Command::ChLead { channel, election: 1 });
        relay.step(Input::Stored { channel, seq: 0, election: 1 }, now, &mut out);
        for i in 1..3 {
            request(&mut relay, &mut out, i, Command::ChVote { channel, election: 1, user: users[0] });
        }
        assert_eq!(relay.channel(&channel).and_then(|c| c.leader()), Some(users[0]));
        let m = Ulid::from(99u128);
        request(&mut relay, &mut out, 1, Command::ChMsg { id: channel, msg_id: m, msg: Body::text("x") });
        out.clear();
        // Two acks in two frames, then the shell's inbox runs empty.
        request(&mut relay, &mut out, 2, Command::AckChMsg { id: m, ids: Vec::new() });
        request(&mut relay, &mut out, 3, Command::AckChMsg { id: m, ids: Vec::new() });
        assert!(acks_to(&out, conns[0]).is_empty(), "gathered, not sent yet");
        relay.step(Input::Flush, now, &mut out);
        let leader = acks_to(&out, conns[0]);
        assert_eq!(leader.len(), 1, "{leader:?}");
        assert_eq!((leader[0].id, leader[0].user, &leader[0].users), (m, users[2], &vec![users[3]]));
        // The sender did not ask for batches: one plain CH_MSG_ACK per ack, in order.
        let sender: Vec<(Ulid, Ulid, usize)> =
            acks_to(&out, conns[1]).iter().map(|a| (a.id, a.user, a.users.len() + a.ids.len())).collect();
        assert_eq!(sender, vec![(m, users[2], 0), (m, users[3], 0)]);
        assert!(!relay.has_gathered_acks());

        // A second message: users[2]'s ack is gathered for the leader; then the
        // leader's own bad batch: its ERR must not overtake that ack, and names
        // the first failing id.
        let m2 = Ulid::from(100u128);
        request(&mut relay, &mut out, 1, Command::ChMsg { id: channel, msg_id: m2, msg: Body::text("y") });
        out.clear();
        request(&mut relay, &mut out, 2, Command::AckChMsg { id: m2, ids: Vec::new() });
        let unknown = Ulid::from(7u128);
        request(&mut relay, &mut out, 0, Command::AckChMsg { id: m2, ids: vec![unknown] });
        let to_leader: Vec<&str> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Send { conn, frame } if *conn == conns[0] => Some(frame.command),
                _ => None,
            })
            .collect();
        assert_eq!(to_leader, vec!["CH_MSG_ACK", "ERR"]);
        let err = out.iter().find_map(|e| match e {
            Effect::Send { conn, frame } if *conn == conns[0] && frame.command == "ERR" => {
                sigil_proto::ServerEvent::decode("ERR", &frame.payload).ok()
            }
            _ => None,
        });
        let Some(sigil_proto::ServerEvent::Err(err)) = err else { panic!("no ERR") };
        assert!(err.reason.starts_with(&unknown.to_string()), "{}", err.reason);
    }
}
