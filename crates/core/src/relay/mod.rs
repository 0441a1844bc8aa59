//! `Relay`: the server's shared protocol state, as a pure state machine.
//!
//! `step(input, now)` appends [`Effect`]s: frames addressed to connections,
//! connections to close, store writes and reads. It knows nothing of
//! sockets, tasks or clocks. The relay itself checks nonces and routes: each
//! command goes, by its family in the command table
//! (`sigil_proto::command::COMMANDS`), to the part that handles it, and an
//! input that concerns several parts (a session starts or ends, an account
//! changes) is handed to each in turn.
//!
//! | module | owns | commands |
//! | --- | --- | --- |
//! | `mod.rs` | nonce windows, session start and end, routing | `CNN` (as [`Input::Open`]), `DCNN` |
//! | [`presence`] | accounts, sessions, who is online | `KALIVE`, `INFO`, `LST_USR`, `CNN_USR` |
//! | [`private`] | the private-message delivery ledger | `PV_MSG`, `ACK_MSG` |
//! | [`channels`] | the channel registry, routing to each [`Channel`](crate::channel::Channel) | `CH_*`, `ACK_CH_MSG` |
//! | [`acks`] | channel acks gathered across frames (§7.9) | — |
//! | [`outbox`] | routing output: users to connections, acks to the gatherer | — |
//! | [`paging`] | lists split to fit `max_payload` | — |
//! | [`types`] | [`Input`], [`Effect`], [`IdSource`] | — |
//!
//! The arrows point one way: `mod.rs` → `channels` → `outbox` → `presence`,
//! `acks` → `types`; `private` → `presence`; no part knows the `Relay`.

mod acks;
mod budget;
pub mod channels;
mod outbox;
pub mod paging;
mod presence;
mod private;
mod types;

use sigil_proto::command::{Envelope, Family, Request};
use sigil_proto::event::{Ucnn, Udcnn, UserPresence, UsrAdd, UsrRmd};
use sigil_proto::{Command, ErrorCode, Outbound, ProtoError};
use ulid::Ulid;

use crate::channel::{Channel, ChannelSnapshot};
use crate::config::Limits;
use crate::replay::ReplayGuard;
pub use channels::valid_channel_name;
use outbox::Outbox;
pub use paging::MAX_CHANNEL_NAME_LEN;
pub use types::{ConnId, Effect, IdSource, Input, PullRequest};

/// The relay's state: one part per concern, see the module doc.
#[derive(Debug)]
pub struct Relay {
    limits: Limits,
    ids: IdSource,
    sinfo: Outbound,
    /// Nonce windows, one per account, shared by its connections (§4).
    replay: ReplayGuard,
    presence: presence::Presence,
    private: private::Ledger,
    channels: channels::Channels,
    acks: acks::AckGatherer,
    /// The store takes no writes: commands that need one are refused (§3.8).
    read_only: bool,
    /// List entries per session and sign-ins per account (§3.7).
    budgets: budget::Budgets,
}

/// An [`Outbox`] over the relay's parts, leaving the others free to borrow.
macro_rules! outbox {
    ($relay:ident, $out:expr) => {
        &mut Outbox::new(&$relay.presence, &mut $relay.acks, $relay.limits.max_payload, $out)
    };
}

/// Whether a channel command starts something that must be stored before
/// it can finish: a channel, a membership, an election, a message. What is
/// already under way (acks, commits of pending messages, votes) goes on in
/// read-only mode; its writes wait in the store until it takes them.
fn needs_write(command: &Command) -> bool {
    matches!(
        command,
        Command::ChNew { .. }
            | Command::ChJoin { .. }
            | Command::ChLeave { .. }
            | Command::ChLead { .. }
            | Command::ChMsg { .. }
            | Command::ChMerge { .. }
    )
}

impl Relay {
    /// A relay with the given limits and no accounts, started at `now`,
    /// taking new ids from `ids`. Frames stamped before `now`'s second are
    /// refused: the nonces seen before a restart are forgotten, so their
    /// frames must not pass again.
    pub fn new(limits: Limits, now: u64, ids: IdSource) -> Self {
        let sinfo = Outbound::event(&limits.sinfo());
        Self {
            ids,
            replay: ReplayGuard::new(limits.skew_s, limits.replay_window).with_floor(now.saturating_sub(1)),
            limits,
            sinfo,
            presence: Default::default(),
            private: Default::default(),
            channels: Default::default(),
            acks: Default::default(),
            read_only: false,
            budgets: Default::default(),
        }
    }

    /// Adds a channel as the store holds it (at start).
    pub fn restore_channel(&mut self, snapshot: ChannelSnapshot) {
        self.channels.restore(snapshot, &self.limits);
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
        self.presence.account_of(conn)
    }

    /// How many channels have a leader, and how many have none.
    pub fn channel_counts(&self) -> (usize, usize) {
        self.channels.leader_counts()
    }

    /// Content bytes of the channel messages awaiting commit, server-wide.
    pub fn pending_bytes(&self) -> usize {
        self.channels.pending_total()
    }

    /// True when acks are gathered and not yet sent (the shell then sends [`Input::Flush`]).
    pub fn has_gathered_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Applies one input at `now` (unix seconds), appending effects to `out`.
    pub fn step(&mut self, input: Input, now: u64, out: &mut Vec<Effect>) {
        let gathers =
            matches!(&input, Input::Request { request, .. } if matches!(request.command, Command::AckChMsg { .. }));
        if !gathers {
            outbox!(self, out).flush_acks();
        }
        match input {
            Input::Flush => {}
            Input::Open { conn, account, key_rev, envelope, batch, bind } => {
                self.open(conn, account, key_rev, envelope, bind, now, out);
                if batch {
                    self.presence.set_batching(conn);
                }
            }
            Input::Request { conn, request } => {
                let Some(account) = self.presence.account_of(conn) else { return };
                if self.spend_nonce(conn, account, request.envelope, now, out) {
                    self.dispatch(conn, account, request, now, out);
                }
            }
            Input::Reject { conn, envelope, mut error } => {
                let Some(account) = self.presence.account_of(conn) else { return };
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
            Input::AccountRemoved { id } => self.account_removed(id, out),
            Input::Stored { channel, seq, election } => {
                self.channels.stored(channel, seq, election, outbox!(self, out))
            }
            Input::StoreMode { writable } => self.read_only = !writable,
            Input::Pulled { conn, channel, anchor, entries, more } => {
                let pull = channels::Pulled { conn, channel, anchor, entries, more };
                self.channels.pulled(pull, &self.limits, outbox!(self, out));
            }
            Input::Tick => {
                self.channels.tick(now, outbox!(self, out));
                self.replay.sweep(now);
                self.budgets.sweep(now);
                self.private.expire(now);
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

    /// How many entries a list command would send (what it costs), if it is one.
    fn list_len(&self, command: &Command) -> Option<usize> {
        match command {
            Command::LstUsr { all } => Some(self.presence.list_len(*all)),
            Command::ChLst => Some(self.channels.by_id.len()),
            Command::ChWho { id } => Some(self.channels.get(id).map_or(1, |c| c.members().len())),
            _ => None,
        }
    }

    /// Hands a verified request to the part its family names; answers its error.
    fn dispatch(&mut self, conn: ConnId, me: Ulid, request: Request, now: u64, out: &mut Vec<Effect>) {
        let nonce = request.envelope.nonce;
        let command = request.command;
        if let Some(entries) = self.list_len(&command) {
            if let Err(e) = self.budgets.list(conn, entries, &self.limits, now) {
                outbox!(self, out).flush_acks();
                out.push(Effect::Send { conn, frame: Outbound::error(&e.with_ref(nonce)) });
                return;
            }
        }
        let result = match (command.info().family, command) {
            // Ending a session concerns every part.
            (Family::Session, Command::Dcnn) => {
                self.end_session(conn, None, out);
                Ok(())
            }
            // The session turns a second CNN into a Reject; nothing else sends it here.
            (Family::Session, _) => {
                Err(ProtoError::new(ErrorCode::AlreadyAuthenticated, "this session is already authenticated"))
            }
            (Family::Presence, command) => {
                self.presence.command(conn, me, command, &self.sinfo, self.limits.max_payload, out)
            }
            (Family::Private, command) => self.private.command(&self.presence, me, command, now, &self.limits, out),
            (Family::Channel, command) if self.read_only && needs_write(&command) => Err(ProtoError::new(
                ErrorCode::ReadOnly,
                "the server cannot store anything now (see its log): channels resume when it can",
            )),
            (Family::Channel, command) => {
                let ob = outbox!(self, out);
                self.channels.command(conn, me, command, now, &self.limits, &mut self.ids, ob)
            }
        };
        if let Err(e) = result {
            // No frame overtakes gathered acks (§7.9).
            outbox!(self, out).flush_acks();
            out.push(Effect::Send { conn, frame: Outbound::error(&e.with_ref(nonce)) });
        }
    }

    /// A connection passed CNN's signature and time checks: check the key
    /// revision and nonce, replace an older session, announce it. A `bind`
    /// session's own `UCNN` says that it is bound (§7.10).
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        conn: ConnId,
        account: Ulid,
        key_rev: u64,
        envelope: Envelope,
        bind: bool,
        now: u64,
        out: &mut Vec<Effect>,
    ) {
        let refuse = |e: ProtoError, out: &mut Vec<Effect>| {
            out.push(Effect::Close { conn, last: Some(Outbound::error(&e).unsigned()) });
        };
        let name = match self.presence.check_key(&account, key_rev) {
            Ok(name) => name,
            Err(e) => return refuse(e, out),
        };
        if let Err(e) = self.replay.check(account, envelope.timestamp, envelope.nonce, now) {
            return refuse(ProtoError::from(e).with_ref(envelope.nonce), out);
        }
        // After the key and nonce checks: only the key's holder can spend it.
        if let Err(e) = self.budgets.sign_in(account, &self.limits, now) {
            return refuse(e.with_ref(envelope.nonce), out);
        }
        if let Some(old) = self.presence.conn_of(&account) {
            let e = ProtoError::new(ErrorCode::SessionReplaced, "a new session for this account connected");
            self.end_session(old, Some(Outbound::error(&e)), out);
        }
        self.presence.start(conn, account);
        // The session's own UCNN confirms the binding; everyone else gets the plain one.
        let own = bind.then(|| Outbound::event(&Ucnn(UserPresence { id: account, name: name.clone(), bind: true })));
        let ucnn = Outbound::event(&Ucnn(UserPresence { id: account, name, bind: false }));
        out.push(Effect::Send { conn, frame: own.unwrap_or_else(|| ucnn.clone()) });
        self.broadcast(ucnn, Some(conn), out);
        // Then one CH_STATUS per channel it is a member of (and recounts for the others).
        self.channels.session_up(account, outbox!(self, out));
    }

    /// Ends a session: closes it (with `last`, if given) and tells everyone else.
    fn end_session(&mut self, conn: ConnId, last: Option<Outbound>, out: &mut Vec<Effect>) {
        // No frame overtakes gathered acks (§7.9).
        outbox!(self, out).flush_acks();
        self.channels.forget_conn(conn);
        self.budgets.forget_conn(conn);
        let Some(account) = self.presence.stop(conn) else { return };
        out.push(Effect::Close { conn, last });
        let name = self.presence.name_of(&account);
        self.broadcast(Outbound::event(&Udcnn(UserPresence { id: account, name, bind: false })), None, out);
        self.channels.session_down(account, outbox!(self, out));
    }

    /// An account was created or its key rotated.
    fn account_upserted(&mut self, id: Ulid, name: String, key_rev: u64, out: &mut Vec<Effect>) {
        let (new, rotated) = self.presence.upsert(id, name, key_rev);
        if let Some(entry) = new {
            self.broadcast(Outbound::event(&UsrAdd(entry)), None, out);
        }
        if let Some(conn) = self.presence.conn_of(&id).filter(|_| rotated) {
            let e =
                ProtoError::new(ErrorCode::AuthFailed, "this account's key was rotated: reconnect with the new key");
            self.end_session(conn, Some(Outbound::error(&e)), out);
        }
    }

    /// An account was removed: end its session, take it out of its channels, announce it.
    fn account_removed(&mut self, id: Ulid, out: &mut Vec<Effect>) {
        if !self.presence.knows(&id) {
            return;
        }
        // End the session first: its UDCNN still names the account.
        if let Some(conn) = self.presence.conn_of(&id) {
            let e = ProtoError::new(ErrorCode::AccountRemoved, "this account was removed");
            self.end_session(conn, Some(Outbound::error(&e)), out);
        }
        self.channels.account_removed(id, outbox!(self, out));
        self.presence.remove(&id);
        self.replay.forget(&id);
        self.broadcast(Outbound::event(&UsrRmd { id }), None, out);
    }

    /// Sends `frame` to every session except `except`.
    fn broadcast(&self, frame: Outbound, except: Option<ConnId>, out: &mut Vec<Effect>) {
        for conn in self.presence.connections() {
            if Some(conn) != except {
                out.push(Effect::Send { conn, frame: frame.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::StoreOp;
    use sigil_proto::event::ChMsgAck;
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
        let mut relay = Relay::new(Limits::default(), now, IdSource::counter(1 << 64));
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
            let open = Input::Open { conn: conns[i], account: id, key_rev: 1, envelope, batch: i == 0, bind: false };
            relay.step(open, now, &mut out);
        }
        request(&mut relay, &mut out, 0, Command::ChNew { name: "c".into() });
        let channel = relay.channels.by_id.keys().next().copied().expect("created");
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

    /// The `ERR` codes sent to `conn` in `out`.
    fn errors_to(out: &[Effect], conn: ConnId) -> Vec<String> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Send { conn: c, frame } if *c == conn && frame.command == "ERR" => {
                    match sigil_proto::ServerEvent::decode("ERR", &frame.payload) {
                        Ok(sigil_proto::ServerEvent::Err(e)) => Some(e.code),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn read_only_refuses_what_needs_a_write_and_lets_the_rest_finish() {
        let mut f = Fixture::new(Limits::default(), 3);
        // users[0] leads a channel of users[0] and users[1]; users[2] is outside it.
        f.request(0, Command::ChNew { name: "c".into() });
        let channel = f.relay.channels.by_id.keys().next().copied().expect("created");
        f.request(1, Command::ChJoin { id: channel });
        f.request(0, Command::ChLead { channel, election: 1 });
        f.step(Input::Stored { channel, seq: 0, election: 1 });
        f.request(1, Command::ChVote { channel, election: 1, user: f.users[0] });
        assert_eq!(f.relay.channel(&channel).and_then(|c| c.leader()), Some(f.users[0]));
        let m = Ulid::from(99u128);
        f.request(1, Command::ChMsg { id: channel, msg_id: m, msg: Body::text("x") });

        f.step(Input::StoreMode { writable: false });
        let m2 = Ulid::from(100u128);
        assert_eq!(f.request(1, Command::ChMsg { id: channel, msg_id: m2, msg: Body::text("y") }), vec!["read_only"]);
        assert_eq!(f.request(2, Command::ChJoin { id: channel }), vec!["read_only"]);
        assert_eq!(f.request(2, Command::ChNew { name: "d".into() }), vec!["read_only"]);
        // The message under way is acked and committed; its append waits in the store.
        assert!(f.request(0, Command::AckChMsg { id: m, ids: Vec::new() }).is_empty(), "{:?}", f.out);
        let acks = vec![f.users[0], f.users[1]];
        assert!(f.request(0, Command::ChCommit { id: m, acks, ids: Vec::new() }).is_empty(), "{:?}", f.out);
        assert!(f.out.iter().any(|e| matches!(e, Effect::Store(StoreOp::Append { .. }))), "{:?}", f.out);
        // Lists and presence need no write.
        assert!(f.request(2, Command::ChLst).is_empty());

        f.step(Input::StoreMode { writable: true });
        assert!(f.request(2, Command::ChJoin { id: channel }).is_empty(), "{:?}", f.out);
    }

    /// A relay with `n` accounts, each signed in on its own connection.
    struct Fixture {
        relay: Relay,
        users: Vec<Ulid>,
        conns: Vec<ConnId>,
        nonce: u64,
        now: u64,
        out: Vec<Effect>,
    }

    impl Fixture {
        fn new(limits: Limits, n: usize) -> Self {
            let now = 1_800_000_000;
            let mut f = Fixture {
                relay: Relay::new(limits, now, IdSource::counter(1 << 64)),
                users: (1..=n as u128).map(Ulid::from).collect(),
                conns: (1..=n as u64).map(ConnId).collect(),
                nonce: 0,
                now,
                out: Vec::new(),
            };
            for i in 0..n {
                let (id, conn) = (f.users[i], f.conns[i]);
                f.relay.step(Input::AccountUpserted { id, name: format!("u{i}"), key_rev: 1 }, now, &mut f.out);
                f.open(i, conn);
            }
            f
        }

        /// `users[i]` signs in on `conn`.
        fn open(&mut self, i: usize, conn: ConnId) {
            self.nonce += 1;
            let envelope = Envelope { nonce: 1_000_000 + self.nonce, timestamp: self.now };
            let input = Input::Open { conn, account: self.users[i], key_rev: 1, envelope, batch: false, bind: false };
            self.relay.step(input, self.now, &mut self.out);
        }

        /// `users[i]` sends `command`; the `ERR` codes it gets.
        fn request(&mut self, i: usize, command: Command) -> Vec<String> {
            self.nonce += 1;
            self.out.clear();
            let request = Request { envelope: Envelope { nonce: self.nonce, timestamp: self.now }, command };
            self.relay.step(Input::Request { conn: self.conns[i], request }, self.now, &mut self.out);
            errors_to(&self.out, self.conns[i])
        }

        fn step(&mut self, input: Input) {
            self.out.clear();
            self.relay.step(input, self.now, &mut self.out);
        }

        /// A channel of every user, led by `users[0]`.
        fn led_channel(&mut self) -> Ulid {
            self.request(0, Command::ChNew { name: "c".into() });
            let channel = self.relay.channels.by_id.keys().next().copied().expect("created");
            for i in 1..self.users.len() {
                self.request(i, Command::ChJoin { id: channel });
            }
            self.request(0, Command::ChLead { channel, election: 1 });
            self.step(Input::Stored { channel, seq: 0, election: 1 });
            let leader = self.users[0];
            for i in 1..self.users.len() {
                self.request(i, Command::ChVote { channel, election: 1, user: leader });
            }
            assert_eq!(self.relay.channel(&channel).and_then(|c| c.leader()), Some(leader));
            channel
        }
    }

    #[test]
    fn uncommitted_bytes_are_capped_per_account_and_server_wide() {
        let limits = Limits { max_pending_bytes_per_account: 10, max_pending_bytes_total: 15, ..Limits::default() };
        let mut f = Fixture::new(limits, 3);
        let channel = f.led_channel();
        let msg = |n: u128, text: &str| Command::ChMsg { id: channel, msg_id: Ulid::from(n), msg: Body::text(text) };
        assert!(f.request(1, msg(1, "aaaaaa")).is_empty());
        assert_eq!(f.request(1, msg(2, "bbbbbb")), vec!["rate_limited"], "12 > 10 for the account");
        assert!(f.request(2, msg(3, "cccccc")).is_empty());
        assert_eq!(f.relay.pending_bytes(), 12);
        assert_eq!(f.request(2, msg(4, "dddd")), vec!["rate_limited"], "16 > 15 on the server");
        // The first is committed; the next tick recounts: room again.
        f.request(0, Command::AckChMsg { id: Ulid::from(1), ids: Vec::new() });
        assert!(f
            .request(0, Command::ChCommit { id: Ulid::from(1), acks: vec![f.users[0], f.users[1]], ids: vec![] })
            .is_empty());
        f.step(Input::Tick);
        assert_eq!(f.relay.pending_bytes(), 6);
        assert!(f.request(2, msg(4, "dddd")).is_empty());
    }

    #[test]
    fn lists_spend_a_budget_of_entries() {
        let limits = Limits { list_entries_per_s: 2, ..Limits::default() };
        let mut f = Fixture::new(limits, 3);
        // Three entries each; a burst of eight: twice, then refused.
        assert!(f.request(1, Command::LstUsr { all: true }).is_empty());
        assert!(f.request(1, Command::LstUsr { all: false }).is_empty());
        assert_eq!(f.request(1, Command::LstUsr { all: true }), vec!["rate_limited"]);
        assert!(f.out.iter().all(|e| !matches!(e, Effect::Send { frame, .. } if frame.command == "USR_LST")));
        assert!(f.request(2, Command::ChLst).is_empty(), "each session has its own");
        f.now += 3;
        assert!(f.request(1, Command::LstUsr { all: true }).is_empty());
    }

    #[test]
    fn sign_ins_are_limited_per_account_after_the_key_check() {
        let limits = Limits { cnn_per_minute: 3, ..Limits::default() };
        let mut f = Fixture::new(limits, 2);
        // users[0] signed in once; twice more pass, the fourth is refused and closed.
        f.open(0, ConnId(10));
        f.open(0, ConnId(11));
        f.out.clear();
        f.open(0, ConnId(12));
        let refused = f.out.iter().find_map(|e| match e {
            Effect::Close { conn: ConnId(12), last: Some(frame) } => Some(frame.clone()),
            _ => None,
        });
        let frame = refused.expect("the fourth sign-in is refused");
        assert!(String::from_utf8_lossy(&frame.payload).contains("rate_limited"));
        assert_eq!(f.relay.account_of(ConnId(11)), Some(f.users[0]), "the live session stays");
        f.out.clear();
        f.open(1, ConnId(13));
        assert_eq!(f.relay.account_of(ConnId(13)), Some(f.users[1]), "another account is not limited");
    }
}
