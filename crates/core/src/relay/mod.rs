//! `Relay`: the server's shared protocol state, as a pure state machine.
//!
//! `step(input, now)` appends [`Effect`]s: frames addressed to connections,
//! connections to close, store writes and reads. It knows nothing of
//! sockets, tasks or clocks. The relay itself only checks nonces and routes:
//! each command goes, by its family in the command table
//! (`sigil_proto::command::COMMANDS`), to the module that handles it.
//!
//! | module | owns | commands |
//! | --- | --- | --- |
//! | [`presence`] | accounts, sessions, who is online | `CNN` (as [`Input::Open`]), `KALIVE`, `DCNN`, `INFO`, `LST_USR`, `CNN_USR` |
//! | [`private`] | the private-message delivery ledger | `PV_MSG`, `ACK_MSG` |
//! | [`channels`] | the channel registry, routing to each [`Channel`](crate::channel::Channel) | `CH_*`, `ACK_CH_MSG` |
//! | [`acks`] | channel acks gathered across frames (§7.9) | — |
//! | [`paging`] | lists split to fit `max_payload` | — |

mod acks;
pub mod channels;
pub mod paging;
mod presence;
mod private;

use sigil_proto::command::{Envelope, Family, Request};
use sigil_proto::event::HistoryEntry;
use sigil_proto::{Command, Outbound, ProtoError};
use ulid::Ulid;

use crate::channel::StoreOp;
use crate::config::Limits;
use crate::replay::ReplayGuard;
pub use channels::valid_channel_name;
pub use paging::MAX_CHANNEL_NAME_LEN;

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
        }
    }

    /// The `SINFO` frame (unsigned form is `.unsigned()`).
    pub fn sinfo(&self) -> &Outbound {
        &self.sinfo
    }

    /// The account an open connection is authenticated as.
    pub fn account_of(&self, conn: ConnId) -> Option<Ulid> {
        self.presence.account_of(conn)
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
            self.flush_acks(out);
        }
        match input {
            Input::Flush => {}
            Input::Open { conn, account, key_rev, envelope, batch } => {
                self.open(conn, account, key_rev, envelope, now, out);
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
            Input::Stored { channel, seq, election } => self.channel_stored(channel, seq, election, out),
            Input::Pulled { conn, channel, anchor, entries, more } => {
                self.channel_pulled(conn, channel, anchor, entries, more, out)
            }
            Input::Tick => {
                self.channels_tick(now, out);
                self.replay.sweep(now);
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

    /// Hands a verified request to the module its family names; answers its error.
    fn dispatch(&mut self, conn: ConnId, me: Ulid, request: Request, now: u64, out: &mut Vec<Effect>) {
        let nonce = request.envelope.nonce;
        let command = request.command;
        let result = match command.info().family {
            Family::Session | Family::Users => self.presence_command(conn, me, command, out),
            Family::Private => self.private_command(me, command, now, out),
            Family::Channel => self.channel_command(conn, me, command, now, out),
        };
        if let Err(e) = result {
            // No frame overtakes gathered acks (§7.9).
            self.flush_acks(out);
            out.push(Effect::Send { conn, frame: Outbound::error(&e.with_ref(nonce)) });
        }
    }

    /// Sends the gathered channel acks (see [`acks`]).
    fn flush_acks(&mut self, out: &mut Vec<Effect>) {
        let presence = &self.presence;
        let frames = self.acks.flush(self.limits.max_payload, |c| presence.is_open(c), |c| presence.is_batching(c));
        out.extend(frames.into_iter().map(|(conn, frame)| Effect::Send { conn, frame }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            relay.step(Input::Open { conn: conns[i], account: id, key_rev: 1, envelope, batch: i == 0 }, now, &mut out);
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
}
