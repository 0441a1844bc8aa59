//! Channels as the relay sees them (PROTOCOL.md §7): the registry of
//! channels, their names and memberships, which channel a message id is
//! live in, and the channel commands. Each command is checked against the
//! registry here, then run by its [`Channel`] state machine (`crate::channel`),
//! whose user-addressed output the [`Outbox`] routes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sigil_proto::event::{ChMembers, HistoryEntry, LstCh, UserEntry};
use sigil_proto::{Command, ErrorCode, Outbound, ProtoError};
use ulid::Ulid;

use super::outbox::Outbox;
use super::paging::{append_page, pages, per_page, CHANNEL_ENTRY_MAX, MAX_CHANNEL_NAME_LEN, USER_ENTRY_MAX};
use super::types::{ConnId, Effect, IdSource, PullRequest};
use crate::channel::{Channel, ChannelEffect, ChannelSnapshot};
use crate::config::Limits;

/// History read for a `CH_PULL`, as the store answered it.
pub(super) struct Pulled {
    /// The asking connection.
    pub(super) conn: ConnId,
    /// The channel.
    pub(super) channel: Ulid,
    /// The anchor the client gave.
    pub(super) anchor: Option<Ulid>,
    /// Messages after it, in commit order.
    pub(super) entries: Vec<HistoryEntry>,
    /// More history follows.
    pub(super) more: bool,
}

/// Channel names: 1 to 64 of `[A-Za-z0-9_.-#]`, unique ignoring case.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'#'))
}

fn no_such_channel() -> ProtoError {
    ProtoError::new(ErrorCode::NoSuchChannel, "no such channel")
}

/// Every channel and the indexes over them. What is iterated to make
/// output is ordered (`by_id`, each account's channel set); the hash maps
/// are indexes, only looked up (or pruned, which sends nothing), so hash
/// order never reaches an effect.
#[derive(Debug, Default)]
pub(super) struct Channels {
    /// Ordered, so ticks and lists visit channels in one order.
    pub(super) by_id: BTreeMap<Ulid, Channel>,
    /// Lower-cased channel name → id. Lookups only.
    names: HashMap<String, Ulid>,
    /// Account → the channels it is a member of: looked up per session
    /// start and end; the sets are ordered, so channels are visited by id.
    memberships: HashMap<Ulid, BTreeSet<Ulid>>,
    /// Message ids pending or awaiting merge confirmation → their channel.
    /// Message-only commands are routed by it, and it keeps ids unique across
    /// channels so one channel cannot capture another's acks. Looked up on
    /// every ack and commit (the hot path: a hash map); pruned each tick.
    live_msgs: HashMap<Ulid, Ulid>,
    /// Connections with a `CH_PULL` being read: one at a time each. Lookups only.
    pulls_in_flight: HashSet<ConnId>,
    /// Content bytes pending in all channels: recounted each tick, added to
    /// as messages are accepted (so between ticks it may only overstate).
    pending_total: usize,
    /// Reused buffer for channel output.
    scratch: Vec<ChannelEffect>,
}

impl Channels {
    /// Adds a channel with its members to the indexes.
    fn insert(&mut self, channel: Channel) {
        let id = channel.id();
        for member in channel.members() {
            self.memberships.entry(*member).or_default().insert(id);
        }
        self.names.insert(channel.name().to_ascii_lowercase(), id);
        self.by_id.insert(id, channel);
    }

    /// The channels `account` is a member of.
    fn of(&self, account: &Ulid) -> Vec<Ulid> {
        self.memberships.get(account).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// How many channels have a leader, and how many have none.
    pub(super) fn leader_counts(&self) -> (usize, usize) {
        let led = self.by_id.values().filter(|c| c.leader().is_some()).count();
        (led, self.by_id.len() - led)
    }

    /// A connection is gone: it has no pull in flight any more.
    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        self.pulls_in_flight.remove(&conn);
    }

    /// Refuses one more channel for an account already in its maximum.
    fn check_room(&self, me: Ulid, max_per_account: usize) -> Result<(), ProtoError> {
        if self.memberships.get(&me).map_or(0, BTreeSet::len) >= max_per_account {
            return Err(ProtoError::new(ErrorCode::RateLimited, "you are in your maximum number of channels"));
        }
        Ok(())
    }

    /// The channel `id`, if it exists and `me` is a member.
    fn member_of(&self, me: Ulid, id: Ulid) -> Result<&Channel, ProtoError> {
        let c = self.by_id.get(&id).ok_or_else(no_such_channel)?;
        if !c.is_member(&me) {
            return Err(ProtoError::new(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        Ok(c)
    }

    /// The channel where `msg_id` is pending or awaiting merge confirmation.
    fn live_channel(&self, msg_id: &Ulid) -> Option<Ulid> {
        self.live_msgs.get(msg_id).copied().filter(|c| self.by_id.get(c).is_some_and(|c| c.is_live(msg_id)))
    }

    /// The channel a message-only command (ACK_CH_MSG, CH_COMMIT) is about:
    /// where the message is live, else one of `me`'s channels that committed it.
    fn message_channel(&self, me: Ulid, msg_id: &Ulid) -> Result<Ulid, ProtoError> {
        self.live_channel(msg_id)
            .or_else(|| {
                let mine = self.memberships.get(&me).into_iter().flatten();
                mine.copied().find(|c| self.by_id.get(c).is_some_and(|c| c.seq_of(msg_id).is_some()))
            })
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownMsg, "no such message in your channels"))
    }
}

impl Channels {
    /// Adds a channel as the store holds it (at start).
    pub(super) fn restore(&mut self, snapshot: ChannelSnapshot, limits: &Limits) {
        self.insert(Channel::restore(snapshot, limits.channel_limits()));
    }

    /// A channel, for inspection.
    pub(super) fn get(&self, id: &Ulid) -> Option<&Channel> {
        self.by_id.get(id)
    }

    /// Runs `f` on a channel and routes what it emits.
    fn with_channel<T>(
        &mut self,
        id: Ulid,
        ob: &mut Outbox<'_>,
        f: impl FnOnce(&mut Channel, &mut Vec<ChannelEffect>) -> Result<T, ProtoError>,
    ) -> Result<T, ProtoError> {
        let channel = self.by_id.get_mut(&id).ok_or_else(no_such_channel)?;
        let mut effects = std::mem::take(&mut self.scratch);
        let result = f(channel, &mut effects);
        ob.route(&mut effects);
        self.scratch = effects;
        result
    }

    /// Runs `f` on each of `ids` that exists (events that cannot fail).
    fn each_channel(&mut self, ids: Vec<Ulid>, ob: &mut Outbox<'_>, f: impl Fn(&mut Channel, &mut Vec<ChannelEffect>)) {
        for id in ids {
            let _ = self.with_channel(id, ob, |c, o| {
                f(c, o);
                Ok(())
            });
        }
    }

    /// A member's session started: its channels recount and tell it their status.
    pub(super) fn session_up(&mut self, account: Ulid, ob: &mut Outbox<'_>) {
        let ids = self.of(&account);
        self.each_channel(ids, ob, |c, o| c.session_up(account, o));
    }

    /// A member's session ended.
    pub(super) fn session_down(&mut self, account: Ulid, ob: &mut Outbox<'_>) {
        let ids = self.of(&account);
        self.each_channel(ids, ob, |c, o| c.session_down(account, o));
    }

    /// An account was removed: it leaves every channel (announced as CH_ULEAVE;
    /// the store already dropped the memberships).
    pub(super) fn account_removed(&mut self, account: Ulid, ob: &mut Outbox<'_>) {
        let ids = self.memberships.remove(&account).map(|s| s.into_iter().collect()).unwrap_or_default();
        self.each_channel(ids, ob, |c, o| {
            let _ = c.leave(account, o);
        });
    }

    /// The store made a channel's writes durable.
    pub(super) fn stored(&mut self, channel: Ulid, seq: u64, election: u64, ob: &mut Outbox<'_>) {
        self.each_channel(vec![channel], ob, |c, o| c.stored(seq, election, o));
    }

    /// History read for a `CH_PULL`: answer it as one `CH_APPEND` page.
    pub(super) fn pulled(&mut self, pull: Pulled, limits: &Limits, ob: &mut Outbox<'_>) {
        let Pulled { conn, channel, anchor, entries, more } = pull;
        self.pulls_in_flight.remove(&conn);
        if ob.presence.is_open(conn) {
            let frame = append_page(limits.max_payload, channel, anchor, entries, more);
            ob.send(conn, frame);
        }
    }

    /// Expires what is due in every channel and prunes the live ids.
    pub(super) fn tick(&mut self, now: u64, ob: &mut Outbox<'_>) {
        let ids: Vec<Ulid> = self.by_id.keys().copied().collect();
        self.each_channel(ids, ob, |c, o| c.tick(now, o));
        let by_id = &self.by_id;
        self.live_msgs.retain(|msg, c| by_id.get(c).is_some_and(|c| c.is_live(msg)));
        self.pending_total = self.by_id.values().map(Channel::pending_bytes).sum();
    }

    /// Content bytes pending in every channel (as of the last tick, plus
    /// what was accepted since).
    pub(super) fn pending_total(&self) -> usize {
        self.pending_total
    }

    /// Refuses `bytes` more pending content from `me` when it would take the
    /// account (over all its channels) or the server over its cap (§3.7).
    fn check_pending_caps(&self, me: &Ulid, bytes: usize, limits: &Limits) -> Result<(), ProtoError> {
        let mine: usize = self
            .memberships
            .get(me)
            .map_or(0, |chs| chs.iter().filter_map(|c| self.by_id.get(c)).map(|c| c.pending_bytes_of(me)).sum());
        if mine.saturating_add(bytes) > limits.max_pending_bytes_per_account {
            return Err(ProtoError::new(
                ErrorCode::RateLimited,
                format!(
                    "your messages awaiting commit hold {mine} bytes; an account may hold {}",
                    limits.max_pending_bytes_per_account
                ),
            ));
        }
        if self.pending_total.saturating_add(bytes) > limits.max_pending_bytes_total {
            return Err(ProtoError::new(
                ErrorCode::RateLimited,
                "the server holds as many messages awaiting commit as it may: try again shortly",
            ));
        }
        Ok(())
    }

    /// Channel commands (PROTOCOL.md §7).
    #[allow(clippy::too_many_arguments)] // the command, who sent it, and the step's context
    pub(super) fn command(
        &mut self,
        conn: ConnId,
        me: Ulid,
        command: Command,
        now: u64,
        limits: &Limits,
        ids: &mut IdSource,
        ob: &mut Outbox<'_>,
    ) -> Result<(), ProtoError> {
        match command {
            Command::ChNew { name } => self.create(me, name, now, limits, ids, ob),
            Command::ChJoin { id } => {
                let channel = self.by_id.get(&id);
                let newcomer = channel.is_some_and(|c| !c.is_member(&me));
                if newcomer && channel.is_some_and(|c| c.members().len() >= limits.max_members) {
                    return Err(ProtoError::new(
                        ErrorCode::RateLimited,
                        "the channel has its maximum number of members",
                    ));
                }
                if newcomer {
                    self.check_room(me, limits.max_channels_per_account)?;
                }
                self.with_channel(id, ob, |c, o| c.join(me, o))?;
                self.memberships.entry(me).or_default().insert(id);
                Ok(())
            }
            Command::ChLeave { id } => {
                self.with_channel(id, ob, |c, o| c.leave(me, o))?;
                if let Some(set) = self.memberships.get_mut(&me) {
                    set.remove(&id);
                }
                Ok(())
            }
            Command::ChWho { id } => {
                let members: Vec<UserEntry> = {
                    let c = self.member_of(me, id)?;
                    let mut m: Vec<UserEntry> = c.members().iter().filter_map(|u| ob.presence.entry(u)).collect();
                    m.sort_by_cached_key(|u| (u.name.to_ascii_lowercase(), u.id));
                    m
                };
                let per_page = per_page(limits.max_payload, USER_ENTRY_MAX);
                for frame in pages(members, per_page, |members, more| Outbound::event(&ChMembers { id, members, more }))
                {
                    ob.out.push(Effect::Send { conn, frame });
                }
                Ok(())
            }
            Command::ChLst => {
                let mut entries: Vec<_> = self.by_id.values().map(Channel::list_entry).collect();
                entries.sort_by_cached_key(|c| c.name.to_ascii_lowercase());
                let per_page = per_page(limits.max_payload, CHANNEL_ENTRY_MAX);
                for frame in pages(entries, per_page, |channels, more| Outbound::event(&LstCh { channels, more })) {
                    ob.out.push(Effect::Send { conn, frame });
                }
                Ok(())
            }
            Command::ChLead { channel, election } => self.with_channel(channel, ob, |c, o| c.lead(me, election, o)),
            Command::ChVote { channel, election, user } => {
                self.with_channel(channel, ob, |c, o| c.vote(me, election, user, o))
            }
            Command::ChMsg { id, msg_id, msg } => {
                // Membership first: non-members learn nothing about ids in use.
                self.member_of(me, id)?;
                if self.live_channel(&msg_id).is_some() {
                    return Err(ProtoError::new(ErrorCode::DuplicateMsg, "this msg_id is in use"));
                }
                let bytes = msg.bytes.len();
                self.check_pending_caps(&me, bytes, limits)?;
                self.with_channel(id, ob, |c, o| c.message(me, msg_id, msg, now, o))?;
                self.live_msgs.insert(msg_id, id);
                self.pending_total += bytes;
                Ok(())
            }
            Command::AckChMsg { id, ids } if ids.is_empty() => {
                let channel = self.message_channel(me, &id)?;
                self.with_channel(channel, ob, |c, o| c.ack(me, id, o))
            }
            Command::AckChMsg { id, ids } => {
                // Batching (§7.9): each id as its own ACK_CH_MSG, in frame order.
                let mut first_error = None;
                for msg_id in std::iter::once(id).chain(ids) {
                    let result = self
                        .message_channel(me, &msg_id)
                        .and_then(|channel| self.with_channel(channel, ob, |c, o| c.ack(me, msg_id, o)));
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
                        .and_then(|channel| self.with_channel(channel, ob, |c, o| c.commit(me, msg_id, &acks, o)));
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
                self.with_channel(channel, ob, |c, o| c.ack_request(me, id, &users, o))
            }
            Command::ChMerge { id, msg } => {
                self.member_of(me, id)?;
                if let Some(taken) = msg.iter().find(|m| self.live_channel(&m.id).is_some_and(|c| c != id)) {
                    return Err(ProtoError::new(ErrorCode::DuplicateMsg, format!("msg_id {} is in use", taken.id)));
                }
                let before = self.by_id.get(&id).map_or(0, Channel::pending_bytes);
                let bytes: usize = msg.iter().map(|m| m.msg.bytes.len()).sum();
                self.check_pending_caps(&me, bytes, limits)?;
                for msg_id in self.with_channel(id, ob, |c, o| c.merge(me, msg, now, o))? {
                    self.live_msgs.insert(msg_id, id);
                }
                let after = self.by_id.get(&id).map_or(0, Channel::pending_bytes);
                self.pending_total += after.saturating_sub(before);
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
                let (limit, max_bytes) = (limits.pull_page, limits.max_payload);
                ob.out.push(Effect::Pull(PullRequest { conn, channel: id, anchor, after_seq, limit, max_bytes }));
                Ok(())
            }
            other => {
                Err(ProtoError::new(ErrorCode::UnknownCommand, format!("{} is not a channel command", other.name())))
            }
        }
    }

    fn create(
        &mut self,
        me: Ulid,
        name: String,
        now: u64,
        limits: &Limits,
        ids: &mut IdSource,
        ob: &mut Outbox<'_>,
    ) -> Result<(), ProtoError> {
        if !valid_channel_name(&name) {
            return Err(ProtoError::new(
                ErrorCode::BadPayload,
                format!("invalid channel name: use 1 to {MAX_CHANNEL_NAME_LEN} of A-Z a-z 0-9 _ . - #"),
            ));
        }
        if self.names.contains_key(&name.to_ascii_lowercase()) {
            return Err(ProtoError::new(ErrorCode::NameTaken, "a channel with that name exists"));
        }
        if self.by_id.len() >= limits.max_channels {
            return Err(ProtoError::new(ErrorCode::RateLimited, "the server has its maximum number of channels"));
        }
        self.check_room(me, limits.max_channels_per_account)?;
        let id = ids.next();
        let mut channel = Channel::new(id, name, limits.channel_limits());
        let mut effects = std::mem::take(&mut self.scratch);
        channel.create(me, now, &mut effects);
        self.insert(channel);
        ob.route(&mut effects);
        self.scratch = effects;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked() {
        assert!(valid_channel_name("general") && valid_channel_name("#a.b-c_9"));
        assert!(!valid_channel_name("") && !valid_channel_name("a b") && !valid_channel_name(&"x".repeat(65)));
    }

    #[test]
    fn the_registry_indexes_members_and_limits_channels_per_account() {
        let mut reg = Channels::default();
        let (me, other) = (Ulid::from(1u128), Ulid::from(2u128));
        let snapshot = ChannelSnapshot {
            id: Ulid::from(10u128),
            name: "General".into(),
            members: BTreeSet::from([me]),
            ..ChannelSnapshot::default()
        };
        reg.insert(Channel::restore(snapshot, crate::Limits::default().channel_limits()));
        assert_eq!(reg.of(&me), vec![Ulid::from(10u128)]);
        assert!(reg.names.contains_key("general"), "names are unique ignoring case");
        assert!(reg.check_room(me, 1).is_err() && reg.check_room(other, 1).is_ok());
        assert_eq!(reg.member_of(other, Ulid::from(10u128)).map(|_| ()).map_err(|e| e.code), Err(ErrorCode::NotMember));
        assert_eq!(reg.message_channel(me, &Ulid::from(5u128)).map_err(|e| e.code), Err(ErrorCode::UnknownMsg));
    }
}
