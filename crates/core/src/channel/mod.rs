//! `Channel`: one channel's replicated-log state machine (PROTOCOL.md §7), pure.
//!
//! The server referees a Raft-like protocol among the channel's members: it
//! runs elections from snapshots of the online members, records which
//! recipient acknowledged which pending message, accepts a commit only from
//! the leader and only on a strict majority of acks it really recorded, and
//! announces a commit only once the store reports it durable. Merged history
//! enters only after a second acker confirms it.
//!
//! Inputs are method calls with the time passed in; outputs are
//! [`ChannelEffect`]s addressed to users (not connections) and store writes.
//! Iteration is over ordered sets, so a run is deterministic and replayable;
//! the one hash map (committed positions) serves lookups only and prints in
//! position order, so even a channel's `Debug` is the same in every run.
//!
//! It must not do I/O, read a clock or the store, or know about
//! connections: the relay maps users to sessions and carries the effects out.
//! The invariants it keeps: an election number is durable before its ballot
//! starts and is never reused; history positions are 1-based and gapless;
//! `pending_bytes` is the content of the pending messages and merges (only
//! `take_pending` and `take_merge` remove them); a commit or merge is
//! announced only after its append is durable, in position order.
//!
//! One file per concern, each an `impl Channel` block over the state here:
//! - `membership`: create, join, leave, sessions, `CH_STATUS`;
//! - `election`: the `Ballot` state machine, `CH_LEAD`, `CH_VOTE`;
//! - `messages`: pending messages, acks, commits and their expiry;
//! - `merge`: merged history awaiting a second acker's confirmation;
//! - `durability`: store writes and the announcements waiting on them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use ulid::Ulid;

use super::batch::Batch;
use sigil_proto::event::Outbound;
use sigil_proto::{ErrorCode, ProtoError};

mod durability;
mod election;
mod membership;
mod merge;
mod messages;
mod sizes;
#[cfg(test)]
mod tests;

pub use durability::{durable_marks, StoreOp};
pub use election::MAX_ELECTION_STEP;
pub use sizes::ids_per_frame;

use durability::Announcement;
use election::Ballot;
use merge::Merge;
use messages::Pending;

/// What a channel asks of the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEffect {
    /// A frame for a user (dropped if the user is offline).
    Send {
        /// The recipient.
        to: Ulid,
        /// The frame.
        frame: Outbound,
    },
    /// `user` acknowledged `msg_id`: tell `to`. The relay gathers these
    /// across consecutive acks and sends them batched (PROTOCOL.md §7.9).
    AckNote {
        /// Who must hear of it.
        to: Ulid,
        /// The message.
        msg_id: Ulid,
        /// Who acknowledged it.
        user: Ulid,
    },
    /// Commits of several messages for a user: one frame if its session
    /// takes batched frames, else one per message (PROTOCOL.md §7.9).
    SendBatch {
        /// The recipient.
        to: Ulid,
        /// What to tell, shared by every recipient.
        batch: Arc<Batch>,
    },
    /// A write to the store.
    Store(StoreOp),
}

/// Limits a channel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Online members needed for health.
    pub min_online: u64,
    /// Lifetime of a pending message or merge (s).
    pub pending_ttl_s: u64,
    /// Pending messages per channel.
    pub max_pending: usize,
    /// Pending merges per channel.
    pub max_merges: usize,
    /// Bytes of message content pending per channel.
    pub max_pending_bytes: usize,
    /// Largest payload of any frame, sent or received.
    pub max_payload: usize,
}

/// What the store holds of a channel, to rebuild it at start.
#[derive(Debug, Clone, Default)]
pub struct ChannelSnapshot {
    /// The channel.
    pub id: Ulid,
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: BTreeSet<Ulid>,
    /// Its election number.
    pub election: u64,
    /// Committed message ids with their positions, in commit order.
    pub history: Vec<(Ulid, u64)>,
}

/// One channel's state.
#[derive(Debug, Clone)]
pub struct Channel {
    id: Ulid,
    name: String,
    limits: ChannelLimits,
    members: BTreeSet<Ulid>,
    online: BTreeSet<Ulid>,
    election: u64,
    leader: Option<Ulid>,
    ballot: Option<Ballot>,
    pending: BTreeMap<Ulid, Pending>,
    /// Content bytes of the pending messages and merges.
    pending_bytes: usize,
    /// The same, per sender (or merger): the relay caps each account's sum
    /// over its channels.
    pending_by: BTreeMap<Ulid, usize>,
    merges: BTreeMap<Ulid, Merge>,
    /// Committed message id → position (durable or not).
    committed: Positions,
    last_committed: Option<Ulid>,
    next_seq: u64,
    unannounced: BTreeMap<u64, Announcement>,
    /// The last status sent, to send CH_STATUS only on change.
    last_status: (Option<Ulid>, bool, usize),
}

/// Committed message id → position. A hash map, not a `BTreeMap`: it is
/// looked up on every commit, every late ack (about half of a message's acks
/// come after its commit) and every `CH_PULL` anchor, in a map as long as the
/// history, and never iterated to make output. Its `Debug` lists entries in
/// position order, so printing a channel does not depend on hash order.
#[derive(Clone, Default)]
struct Positions(HashMap<Ulid, u64>);

impl Deref for Positions {
    type Target = HashMap<Ulid, u64>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Positions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_seq: Vec<(u64, Ulid)> = self.0.iter().map(|(id, seq)| (*seq, *id)).collect();
        by_seq.sort_unstable();
        f.debug_map().entries(by_seq.into_iter().map(|(seq, id)| (id, seq))).finish()
    }
}

fn err(code: ErrorCode, reason: &'static str) -> ProtoError {
    ProtoError::new(code, reason)
}

impl Channel {
    /// A new channel with no members.
    pub fn new(id: Ulid, name: String, limits: ChannelLimits) -> Self {
        Self::restore(ChannelSnapshot { id, name, ..ChannelSnapshot::default() }, limits)
    }

    /// A channel rebuilt from the store: no one online, no leader.
    pub fn restore(s: ChannelSnapshot, limits: ChannelLimits) -> Self {
        let next_seq = s.history.last().map_or(1, |(_, seq)| seq + 1);
        let last_committed = s.history.last().map(|(id, _)| *id);
        Self {
            id: s.id,
            name: s.name,
            limits,
            members: s.members,
            online: BTreeSet::new(),
            election: s.election,
            leader: None,
            ballot: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            pending_by: BTreeMap::new(),
            merges: BTreeMap::new(),
            committed: Positions(s.history.into_iter().collect()),
            last_committed,
            next_seq,
            unannounced: BTreeMap::new(),
            last_status: (None, false, 0),
        }
    }

    /// Content bytes of the pending messages and merges.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Content bytes of the pending messages sent (and merges made) by `who`.
    pub fn pending_bytes_of(&self, who: &Ulid) -> usize {
        self.pending_by.get(who).copied().unwrap_or(0)
    }

    /// Counts `n` content bytes held for `who`.
    fn hold(&mut self, who: Ulid, n: usize) {
        self.pending_bytes += n;
        *self.pending_by.entry(who).or_default() += n;
    }

    /// Stops counting `n` content bytes held for `who`.
    fn release(&mut self, who: Ulid, n: usize) {
        self.pending_bytes -= n;
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.pending_by.entry(who) {
            *e.get_mut() = e.get().saturating_sub(n);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// The channel id.
    pub fn id(&self) -> Ulid {
        self.id
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader, if any.
    pub fn leader(&self) -> Option<Ulid> {
        self.leader
    }

    /// The current election number.
    pub fn election(&self) -> u64 {
        self.election
    }

    /// True when `user` is a member.
    pub fn is_member(&self, user: &Ulid) -> bool {
        self.members.contains(user)
    }

    /// The members.
    pub fn members(&self) -> &BTreeSet<Ulid> {
        &self.members
    }

    /// The online members.
    pub fn online(&self) -> &BTreeSet<Ulid> {
        &self.online
    }

    /// Enough members online and a leader.
    pub fn is_healthy(&self) -> bool {
        self.leader.is_some() && self.online.len() as u64 >= self.limits.min_online
    }

    /// The position of a committed message.
    pub fn seq_of(&self, msg_id: &Ulid) -> Option<u64> {
        self.committed.get(msg_id).copied()
    }

    /// True when the message is pending, merging or committed here.
    pub fn knows(&self, msg_id: &Ulid) -> bool {
        self.is_live(msg_id) || self.committed.contains_key(msg_id)
    }

    /// True when the message is pending or awaiting merge confirmation here.
    pub fn is_live(&self, msg_id: &Ulid) -> bool {
        self.pending.contains_key(msg_id) || self.merges.contains_key(msg_id)
    }

    /// Pending messages.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Pending merges.
    pub fn merge_count(&self) -> usize {
        self.merges.len()
    }

    /// Expires pending messages and merges due by `now`. A leader that let
    /// a message expire although a strict majority had acknowledged it did
    /// not do its job: it loses the leadership, so the channel can elect
    /// another (a leader that never commits cannot hold a channel forever).
    pub fn tick(&mut self, now: u64, out: &mut Vec<ChannelEffect>) {
        self.expire_pending(now, out);
        self.expire_merges(now, out);
    }
}
