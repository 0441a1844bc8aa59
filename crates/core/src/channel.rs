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
//! Iteration is over ordered sets, so a run is deterministic and replayable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ulid::Ulid;

use super::batch::Batch;
use sigil_proto::command::MergedMessage;
use sigil_proto::event::{
    ChAppend, ChElected, ChMsg, ChMsgAck, ChMsgConfirm, ChStatus, ChUjoin, ChUleave, ChVoteRequest, ChannelEntry,
    ChannelUser, HistoryEntry, Outbound,
};
use sigil_proto::quorum::is_majority;
use sigil_proto::{Body, ErrorCode, ProtoError};

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

/// A write the store must make. Appends and election numbers are reported
/// back with [`Channel::stored`] once durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// A new channel with its first member.
    CreateChannel {
        /// The channel.
        id: Ulid,
        /// Its name.
        name: String,
        /// Its creator, the first member.
        creator: Ulid,
        /// Creation time.
        created_at: u64,
    },
    /// A member joined.
    AddMember {
        /// The channel.
        channel: Ulid,
        /// The member.
        user: Ulid,
    },
    /// A member left.
    RemoveMember {
        /// The channel.
        channel: Ulid,
        /// The member.
        user: Ulid,
    },
    /// A new election number.
    SetElection {
        /// The channel.
        channel: Ulid,
        /// The number.
        election: u64,
    },
    /// A committed message at position `seq` (1-based, gapless).
    Append {
        /// The channel.
        channel: Ulid,
        /// Its position in commit order.
        seq: u64,
        /// The message.
        entry: HistoryEntry,
    },
}

/// What a batch of writes made durable, per channel: its highest history
/// position and election number (0 where the batch has none), as the store
/// reports them back with `Input::Stored`.
pub fn durable_marks<'a>(ops: impl IntoIterator<Item = &'a StoreOp>) -> BTreeMap<Ulid, (u64, u64)> {
    let mut marks: BTreeMap<Ulid, (u64, u64)> = BTreeMap::new();
    for op in ops {
        match *op {
            StoreOp::Append { channel, seq, .. } => {
                let m = marks.entry(channel).or_default();
                m.0 = m.0.max(seq);
            }
            StoreOp::SetElection { channel, election } => {
                let m = marks.entry(channel).or_default();
                m.1 = m.1.max(election);
            }
            _ => {}
        }
    }
    marks
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

/// Bytes a one-message `CH_APPEND` adds to the relayed `CH_MSG` fields, not
/// counting its acks: `anchor`, `messages`, `acks` and `more` keys and headers.
const APPEND_OVERHEAD: usize = 96;
/// Bytes one ack adds to a history entry (a 26-character id as msgpack str).
const ACK_BYTES: usize = 27;
/// How many message ids fit a batched frame (PROTOCOL.md §7.9) beside `acks`
/// user ids, within `max_payload`.
pub fn ids_per_frame(max_payload: usize, acks: usize) -> usize {
    (max_payload.saturating_sub(APPEND_OVERHEAD + ACK_BYTES * acks) / ACK_BYTES).max(1)
}

/// Largest step from one election number to the next: keeps one member from
/// using up the number space (and so all future elections) with one CH_LEAD.
pub const MAX_ELECTION_STEP: u64 = 1 << 32;

#[derive(Debug, Clone)]
struct Ballot {
    election: u64,
    candidate: Ulid,
    voters: BTreeSet<Ulid>,
    votes: BTreeSet<Ulid>,
    /// The election number is durable and the vote requests went out.
    started: bool,
    elected: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    from: Ulid,
    body: Body,
    timestamp: u64,
    recipients: BTreeSet<Ulid>,
    acks: BTreeSet<Ulid>,
    expires: u64,
}

#[derive(Debug, Clone)]
struct Merge {
    merger: Ulid,
    entry: MergedMessage,
    expires: u64,
}

/// An announcement waiting for its append to be durable.
#[derive(Debug, Clone)]
enum Announcement {
    Commit { msg_id: Ulid, acks: Vec<Ulid> },
    Merged { anchor: Option<Ulid>, entry: HistoryEntry },
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
    /// Content bytes of the pending messages.
    pending_bytes: usize,
    merges: BTreeMap<Ulid, Merge>,
    /// Committed message id → position (durable or not).
    committed: HashMap<Ulid, u64>,
    last_committed: Option<Ulid>,
    next_seq: u64,
    unannounced: BTreeMap<u64, Announcement>,
    /// The last status sent, to send CH_STATUS only on change.
    last_status: (Option<Ulid>, bool, usize),
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
            merges: BTreeMap::new(),
            committed: s.history.into_iter().collect(),
            last_committed,
            next_seq,
            unannounced: BTreeMap::new(),
            last_status: (None, false, 0),
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

    /// Pending messages.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Pending merges.
    pub fn merge_count(&self) -> usize {
        self.merges.len()
    }

    fn status_word(&self) -> &'static str {
        if self.is_healthy() {
            "healthy"
        } else {
            "unhealthy"
        }
    }

    /// The `CH_STATUS` frame.
    pub fn status_frame(&self) -> Outbound {
        Outbound::event(&ChStatus {
            id: self.id,
            name: self.name.clone(),
            leader: self.leader,
            status: self.status_word().to_owned(),
            election: self.election,
            online: self.online.len() as u64,
        })
    }

    /// The `LST_CH` entry.
    pub fn list_entry(&self) -> ChannelEntry {
        ChannelEntry {
            id: self.id,
            name: self.name.clone(),
            leader: self.leader,
            status: self.status_word().to_owned(),
        }
    }

    fn to_online(&self, frame: &Outbound, out: &mut Vec<ChannelEffect>) {
        for &to in &self.online {
            out.push(ChannelEffect::Send { to, frame: frame.clone() });
        }
    }

    /// Sends `CH_STATUS` to the online members when leader, health or the
    /// online count changed since the last one.
    fn status_if_changed(&mut self, out: &mut Vec<ChannelEffect>) {
        let now = (self.leader, self.is_healthy(), self.online.len());
        if now != self.last_status {
            self.last_status = now;
            self.to_online(&self.status_frame(), out);
        }
    }

    /// `CH_NEW`: the creator becomes the first member (and is online).
    pub fn create(&mut self, creator: Ulid, now: u64, out: &mut Vec<ChannelEffect>) {
        out.push(ChannelEffect::Store(StoreOp::CreateChannel {
            id: self.id,
            name: self.name.clone(),
            creator,
            created_at: now,
        }));
        self.members.insert(creator);
        self.online.insert(creator);
        let frame = Outbound::event(&ChUjoin(ChannelUser { channel: self.id, user: creator }));
        out.push(ChannelEffect::Send { to: creator, frame });
        self.last_status = (self.leader, self.is_healthy(), self.online.len());
        out.push(ChannelEffect::Send { to: creator, frame: self.status_frame() });
    }

    /// `CH_JOIN` from an online user.
    pub fn join(&mut self, user: Ulid, out: &mut Vec<ChannelEffect>) -> Result<(), ProtoError> {
        if self.members.contains(&user) {
            return Err(err(ErrorCode::AlreadyMember, "you are already a member of this channel"));
        }
        self.members.insert(user);
        self.online.insert(user);
        out.push(ChannelEffect::Store(StoreOp::AddMember { channel: self.id, user }));
        self.to_online(&Outbound::event(&ChUjoin(ChannelUser { channel: self.id, user })), out);
        // The joiner always learns the status; the others when it changed.
        let before = self.last_status;
        self.status_if_changed(out);
        if self.last_status == before {
            out.push(ChannelEffect::Send { to: user, frame: self.status_frame() });
        }
        Ok(())
    }

    /// `CH_LEAVE`, or the account was removed.
    pub fn leave(&mut self, user: Ulid, out: &mut Vec<ChannelEffect>) -> Result<(), ProtoError> {
        if !self.members.contains(&user) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        // The leaver gets its CH_ULEAVE too, so it goes out before it is offline here.
        self.to_online(&Outbound::event(&ChUleave(ChannelUser { channel: self.id, user })), out);
        self.members.remove(&user);
        out.push(ChannelEffect::Store(StoreOp::RemoveMember { channel: self.id, user }));
        self.went_away(user, out);
        Ok(())
    }

    /// A member's session started.
    pub fn session_up(&mut self, user: Ulid, out: &mut Vec<ChannelEffect>) {
        if !self.members.contains(&user) || !self.online.insert(user) {
            return;
        }
        // The new session always gets the status (after its UCNN).
        let before = self.last_status;
        self.status_if_changed(out);
        if self.last_status == before {
            out.push(ChannelEffect::Send { to: user, frame: self.status_frame() });
        }
    }

    /// A member's session ended.
    pub fn session_down(&mut self, user: Ulid, out: &mut Vec<ChannelEffect>) {
        if self.online.contains(&user) {
            self.went_away(user, out);
        }
    }

    /// A user is no longer online here (left or disconnected).
    fn went_away(&mut self, user: Ulid, out: &mut Vec<ChannelEffect>) {
        self.online.remove(&user);
        if self.leader == Some(user) {
            self.leader = None;
        }
        // A candidate that is gone cannot lead: its election is over. The
        // next CH_LEAD needs a higher number anyway, so nothing is wedged.
        if self.ballot.as_ref().is_some_and(|b| b.candidate == user && !b.elected) {
            self.ballot = None;
        }
        self.status_if_changed(out);
    }

    /// `CH_LEAD {election}` from a member.
    pub fn lead(&mut self, user: Ulid, election: u64, out: &mut Vec<ChannelEffect>) -> Result<(), ProtoError> {
        if !self.members.contains(&user) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        if self.leader.is_some() {
            return Err(err(ErrorCode::BadElection, "the channel has a leader"));
        }
        if election <= self.election || election - self.election > MAX_ELECTION_STEP {
            return Err(ProtoError::new(
                ErrorCode::BadElection,
                format!("election must be greater than the current {} by at most 2^32", self.election),
            ));
        }
        self.election = election;
        // Like Raft's term, the number is stored before the election starts:
        // after a crash it must never be reused by a second election.
        out.push(ChannelEffect::Store(StoreOp::SetElection { channel: self.id, election }));
        let voters = self.online.clone();
        let votes = BTreeSet::from([user]);
        self.ballot = Some(Ballot { election, candidate: user, voters, votes, started: false, elected: false });
        Ok(())
    }

    /// The election number is durable: ask for votes.
    fn start_ballot(&mut self, stored_election: u64, out: &mut Vec<ChannelEffect>) {
        let Some(b) = self.ballot.as_mut().filter(|b| !b.started && b.election <= stored_election) else { return };
        b.started = true;
        // The voters are who was online at CH_LEAD; ask those still online.
        let frame = Outbound::event(&ChVoteRequest { channel: self.id, election: b.election, user: b.candidate });
        for &to in b.voters.intersection(&self.online) {
            out.push(ChannelEffect::Send { to, frame: frame.clone() });
        }
        self.tally(out);
    }

    /// `CH_VOTE {election, user: candidate}` from `voter`.
    pub fn vote(
        &mut self,
        voter: Ulid,
        election: u64,
        candidate: Ulid,
        out: &mut Vec<ChannelEffect>,
    ) -> Result<(), ProtoError> {
        if !self.members.contains(&voter) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        let Some(ballot) = self.ballot.as_mut().filter(|b| b.election == election && b.started) else {
            return Err(err(ErrorCode::BadElection, "no such election is running"));
        };
        if ballot.candidate != candidate {
            return Err(err(ErrorCode::BadElection, "that user is not this election's candidate"));
        }
        if ballot.elected {
            // Late votes are normal: a majority was enough.
            return Ok(());
        }
        if !ballot.voters.contains(&voter) {
            return Err(err(ErrorCode::BadElection, "you were not online when this election started"));
        }
        if !ballot.votes.insert(voter) {
            return Err(err(ErrorCode::AlreadyVoted, "you already voted in this election"));
        }
        self.tally(out);
        Ok(())
    }

    fn tally(&mut self, out: &mut Vec<ChannelEffect>) {
        let Some(ballot) = self.ballot.as_mut() else { return };
        if ballot.elected || !is_majority(ballot.votes.len(), ballot.voters.len()) {
            return;
        }
        ballot.elected = true;
        let (leader, election) = (ballot.candidate, ballot.election);
        self.leader = Some(leader);
        self.to_online(&Outbound::event(&ChElected { channel: self.id, election, leader }), out);
        self.status_if_changed(out);
        // The new leader learns every ack recorded so far, so it can commit:
        // one frame per pending message, so the replay cannot flood its queue.
        for (msg_id, p) in &self.pending {
            let users: Vec<Ulid> = p.acks.iter().copied().filter(|&u| u != p.from).collect();
            if let Some(&user) = users.first() {
                let frame = Outbound::event(&ChMsgAck { id: *msg_id, user, users, ids: Vec::new() });
                out.push(ChannelEffect::Send { to: leader, frame });
            }
        }
    }

    /// `CH_MSG {msg_id, msg}` from `from`.
    pub fn message(
        &mut self,
        from: Ulid,
        msg_id: Ulid,
        msg: Body,
        now: u64,
        out: &mut Vec<ChannelEffect>,
    ) -> Result<(), ProtoError> {
        if !self.members.contains(&from) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        if !self.is_healthy() {
            return Err(ProtoError::new(
                ErrorCode::ChannelUnhealthy,
                format!(
                    "the channel needs a leader and {} online member(s); it has {} and {}",
                    self.limits.min_online,
                    if self.leader.is_some() { "a leader" } else { "no leader" },
                    self.online.len()
                ),
            ));
        }
        if self.knows(&msg_id) {
            return Err(err(ErrorCode::DuplicateMsg, "this msg_id is already used in this channel"));
        }
        if self.pending.len() >= self.limits.max_pending
            || self.pending_bytes.saturating_add(msg.bytes.len()) > self.limits.max_pending_bytes
        {
            return Err(err(ErrorCode::RateLimited, "too many messages await commit in this channel"));
        }
        let recipients = self.online.len() as u64;
        let frame = Outbound::event(&ChMsg { id: self.id, msg_id, msg: msg.clone(), from, timestamp: now, recipients });
        // The relayed frame, and later its history entry with every possible
        // ack, must fit max_payload like every frame the server sends.
        let worst = frame.payload.len() + APPEND_OVERHEAD + ACK_BYTES * self.online.len();
        if worst > self.limits.max_payload {
            return Err(ProtoError::new(
                ErrorCode::BadPayload,
                format!(
                    "message too large: relayed with its acks it would take {worst} of {} bytes",
                    self.limits.max_payload
                ),
            ));
        }
        self.to_online(&frame, out);
        let pending = Pending {
            from,
            body: msg,
            timestamp: now,
            recipients: self.online.clone(),
            acks: BTreeSet::from([from]),
            expires: now.saturating_add(self.limits.pending_ttl_s),
        };
        self.pending_bytes += pending.body.bytes.len();
        self.pending.insert(msg_id, pending);
        Ok(())
    }

    /// `ACK_CH_MSG {id}` from `user`, for a message this channel [`knows`](Self::knows).
    /// The acks it records are told to the leader and the sender as
    /// [`ChannelEffect::AckNote`]s, which the relay gathers (PROTOCOL.md §7.9).
    pub fn ack(&mut self, user: Ulid, msg_id: Ulid, out: &mut Vec<ChannelEffect>) -> Result<(), ProtoError> {
        if let Some(p) = self.pending.get_mut(&msg_id) {
            if !p.recipients.contains(&user) {
                return Err(err(ErrorCode::UnknownMsg, "that message was not delivered to you"));
            }
            if !p.acks.insert(user) {
                return Ok(());
            }
            // The leader and the sender, once each, never the acker itself.
            let sender = p.from;
            if let Some(leader) = self.leader.filter(|l| *l != user && *l != sender) {
                out.push(ChannelEffect::AckNote { to: leader, msg_id, user });
            }
            if sender != user {
                out.push(ChannelEffect::AckNote { to: sender, msg_id, user });
            }
            return Ok(());
        }
        if let Some(m) = self.merges.get(&msg_id) {
            if user == m.merger || !m.entry.acks.contains(&user) || !self.members.contains(&user) {
                return Err(err(ErrorCode::UnknownMsg, "you are not asked to confirm that message"));
            }
            if let Some(m) = self.take_merge(&msg_id) {
                let entry = HistoryEntry {
                    id: m.entry.id,
                    from: m.entry.from,
                    msg: m.entry.msg,
                    timestamp: m.entry.timestamp,
                    acks: m.entry.acks,
                };
                let anchor = self.last_committed;
                self.append(entry.clone(), Announcement::Merged { anchor, entry }, out);
            }
            return Ok(());
        }
        if self.committed.contains_key(&msg_id) {
            // Late acks are normal: a commit needs only a majority.
            return Ok(());
        }
        Err(err(ErrorCode::UnknownMsg, "no such message"))
    }

    /// `CH_COMMIT {id, acks}` from `user` (`acks` taken as a set).
    pub fn commit(
        &mut self,
        user: Ulid,
        msg_id: Ulid,
        acks: &BTreeSet<Ulid>,
        out: &mut Vec<ChannelEffect>,
    ) -> Result<(), ProtoError> {
        if self.leader != Some(user) {
            return Err(err(ErrorCode::NotLeader, "only the channel's leader commits"));
        }
        if self.committed.contains_key(&msg_id) {
            return Ok(());
        }
        let Some(p) = self.pending.get(&msg_id) else {
            return Err(err(ErrorCode::UnknownMsg, "no such pending message"));
        };
        if let Some(fake) = acks.iter().find(|a| !p.acks.contains(a)) {
            return Err(ProtoError::new(ErrorCode::BadCommit, format!("{fake} has not acknowledged this message")));
        }
        if !is_majority(acks.len(), p.recipients.len()) {
            return Err(ProtoError::new(
                ErrorCode::BadCommit,
                format!("{} acks are not a strict majority of {} recipients", acks.len(), p.recipients.len()),
            ));
        }
        if let Some(p) = self.take_pending(&msg_id) {
            let acks: Vec<Ulid> = acks.iter().copied().collect();
            let entry =
                HistoryEntry { id: msg_id, from: p.from, msg: p.body, timestamp: p.timestamp, acks: acks.clone() };
            self.append(entry, Announcement::Commit { msg_id, acks }, out);
        }
        Ok(())
    }

    /// Removes a merge awaiting confirmation, keeping the byte count right.
    fn take_merge(&mut self, msg_id: &Ulid) -> Option<Merge> {
        let m = self.merges.remove(msg_id)?;
        self.pending_bytes -= m.entry.msg.bytes.len();
        Some(m)
    }

    /// Removes a pending message, keeping the byte count right.
    fn take_pending(&mut self, msg_id: &Ulid) -> Option<Pending> {
        let p = self.pending.remove(msg_id)?;
        self.pending_bytes -= p.body.bytes.len();
        Some(p)
    }

    fn append(&mut self, entry: HistoryEntry, announce: Announcement, out: &mut Vec<ChannelEffect>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.committed.insert(entry.id, seq);
        self.last_committed = Some(entry.id);
        self.unannounced.insert(seq, announce);
        out.push(ChannelEffect::Store(StoreOp::Append { channel: self.id, seq, entry }));
    }

    /// The store made every append up to `seq` and the election number
    /// `election` durable: announce the commits, start the election.
    pub fn stored(&mut self, seq: u64, election: u64, out: &mut Vec<ChannelEffect>) {
        self.start_ballot(election, out);
        // Consecutive commits with the same acks go out as one batch (PROTOCOL.md §7.9).
        let mut run: Option<(Vec<Ulid>, Vec<Ulid>)> = None;
        while let Some(entry) = self.unannounced.first_entry() {
            if *entry.key() > seq {
                break;
            }
            match entry.remove() {
                Announcement::Commit { msg_id, acks } => match &mut run {
                    Some((a, ids)) if *a == acks && ids.len() < ids_per_frame(self.limits.max_payload, a.len()) => {
                        ids.push(msg_id)
                    }
                    _ => {
                        if let Some(done) = run.replace((acks, vec![msg_id])) {
                            self.announce_commits(done, out);
                        }
                    }
                },
                Announcement::Merged { anchor, entry } => {
                    if let Some(done) = run.take() {
                        self.announce_commits(done, out);
                    }
                    let frame = Outbound::event(&ChAppend { id: self.id, anchor, messages: vec![entry], more: false });
                    self.to_online(&frame, out);
                }
            }
        }
        if let Some(done) = run {
            self.announce_commits(done, out);
        }
    }

    /// `CH_MSG_COMMIT` of consecutive commits sharing `acks`, to every online member.
    fn announce_commits(&self, (acks, ids): (Vec<Ulid>, Vec<Ulid>), out: &mut Vec<ChannelEffect>) {
        let Some(batch) = Batch::new(self.id, acks, ids) else { return };
        if batch.ids().len() == 1 {
            return self.to_online(batch.batched(), out);
        }
        let batch = Arc::new(batch);
        for &to in &self.online {
            out.push(ChannelEffect::SendBatch { to, batch: batch.clone() });
        }
    }

    /// `CH_MERGE {msg}` from `user`. Returns the ids now awaiting confirmation.
    pub fn merge(
        &mut self,
        user: Ulid,
        messages: Vec<MergedMessage>,
        now: u64,
        out: &mut Vec<ChannelEffect>,
    ) -> Result<Vec<Ulid>, ProtoError> {
        if !self.members.contains(&user) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        let mut seen = BTreeSet::new();
        let mut new: Vec<MergedMessage> =
            messages.into_iter().filter(|m| !self.knows(&m.id) && seen.insert(m.id)).collect();
        let new_bytes: usize = new.iter().map(|m| m.msg.bytes.len()).sum();
        if self.merges.len() + new.len() > self.limits.max_merges
            || self.pending_bytes.saturating_add(new_bytes) > self.limits.max_pending_bytes
        {
            return Err(err(ErrorCode::RateLimited, "too many merged messages await confirmation in this channel"));
        }
        for m in &mut new {
            // The store keeps timestamps as SQLite integers (i64).
            if i64::try_from(m.timestamp).is_err() {
                return Err(ProtoError::new(
                    ErrorCode::BadPayload,
                    format!("merged message {}: timestamp out of range", m.id),
                ));
            }
            m.acks.sort_unstable();
            m.acks.dedup();
            // Its announcement must fit max_payload.
            let entry = HistoryEntry {
                id: m.id,
                from: m.from,
                msg: m.msg.clone(),
                timestamp: m.timestamp,
                acks: m.acks.clone(),
            };
            // The anchor is the last committed id when it is confirmed: count a full id.
            let frame =
                Outbound::event(&ChAppend { id: self.id, anchor: Some(m.id), messages: vec![entry], more: false });
            if frame.payload.len() > self.limits.max_payload {
                return Err(ProtoError::new(ErrorCode::BadPayload, format!("merged message {} is too large", m.id)));
            }
        }
        let ids = new.iter().map(|m| m.id).collect();
        self.pending_bytes += new_bytes;
        for m in new {
            let id = m.id;
            let merge = Merge { merger: user, entry: m, expires: now.saturating_add(self.limits.pending_ttl_s) };
            self.ask_confirmation(&merge, merge.entry.acks.iter(), out);
            self.merges.insert(id, merge);
        }
        Ok(ids)
    }

    /// True when a merge of `msg_id` awaits confirmation here.
    pub fn has_merge(&self, msg_id: &Ulid) -> bool {
        self.merges.contains_key(msg_id)
    }

    /// True when the message is pending or awaiting merge confirmation here.
    pub fn is_live(&self, msg_id: &Ulid) -> bool {
        self.pending.contains_key(msg_id) || self.merges.contains_key(msg_id)
    }

    /// Sends `CH_MSG_CONFIRM` to those of `users` who are online, in the
    /// message's acks, and not its merger.
    fn ask_confirmation<'a>(&self, m: &Merge, users: impl Iterator<Item = &'a Ulid>, out: &mut Vec<ChannelEffect>) {
        let asked: BTreeSet<Ulid> =
            users.filter(|u| **u != m.merger && self.online.contains(u) && m.entry.acks.contains(u)).copied().collect();
        let frame = Outbound::event(&ChMsgConfirm { id: self.id, message: m.entry.id });
        for to in asked {
            out.push(ChannelEffect::Send { to, frame: frame.clone() });
        }
    }

    /// `CH_ACK_REQ {id, users}` from `user`.
    pub fn ack_request(
        &mut self,
        user: Ulid,
        msg_id: Ulid,
        users: &[Ulid],
        out: &mut Vec<ChannelEffect>,
    ) -> Result<(), ProtoError> {
        if self.leader != Some(user) {
            return Err(err(ErrorCode::NotLeader, "only the channel's leader asks for confirmations"));
        }
        let Some(m) = self.merges.get(&msg_id) else {
            return Err(err(ErrorCode::UnknownMsg, "no merge of that message awaits confirmation"));
        };
        self.ask_confirmation(m, users.iter(), out);
        Ok(())
    }

    /// Expires pending messages and merges due by `now`. A leader that let
    /// a message expire although a strict majority had acknowledged it did
    /// not do its job: it loses the leadership, so the channel can elect
    /// another (a leader that never commits cannot hold a channel forever).
    pub fn tick(&mut self, now: u64, out: &mut Vec<ChannelEffect>) {
        let expired: Vec<Ulid> = self.pending.iter().filter(|(_, p)| p.expires <= now).map(|(id, _)| *id).collect();
        let mut leader_failed = false;
        for msg_id in expired {
            if let Some(p) = self.take_pending(&msg_id) {
                leader_failed |= is_majority(p.acks.len(), p.recipients.len());
                let e =
                    ProtoError::new(ErrorCode::NotCommitted, "the message was not committed in time").with_msg(msg_id);
                out.push(ChannelEffect::Send { to: p.from, frame: Outbound::error(&e) });
            }
        }
        if leader_failed && self.leader.take().is_some() {
            self.status_if_changed(out);
        }
        let expired: Vec<Ulid> = self.merges.iter().filter(|(_, m)| m.expires <= now).map(|(id, _)| *id).collect();
        for msg_id in expired {
            if let Some(m) = self.take_merge(&msg_id) {
                let e = ProtoError::new(ErrorCode::MergeUnconfirmed, "no other acker confirmed the merged message")
                    .with_msg(msg_id);
                out.push(ChannelEffect::Send { to: m.merger, frame: Outbound::error(&e) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::ServerEvent;

    const LIMITS: ChannelLimits = ChannelLimits {
        min_online: 1,
        pending_ttl_s: 10,
        max_pending: 8,
        max_merges: 8,
        max_pending_bytes: 1 << 20,
        max_payload: 65_536,
    };

    fn users(n: u128) -> Vec<Ulid> {
        (1..=n).map(Ulid::from).collect()
    }

    /// The events sent to `to`, decoded.
    fn sent_to(out: &[ChannelEffect], to: Ulid) -> Vec<ServerEvent> {
        out.iter()
            .filter_map(|e| match e {
                ChannelEffect::Send { to: t, frame } if *t == to => Some(vec![frame.clone()]),
                ChannelEffect::AckNote { to: t, msg_id, user } if *t == to => {
                    let ack = ChMsgAck { id: *msg_id, user: *user, users: Vec::new(), ids: Vec::new() };
                    Some(vec![Outbound::event(&ack)])
                }
                // As a session without batching sees it.
                ChannelEffect::SendBatch { to: t, batch } if *t == to => Some(batch.singles().to_vec()),
                _ => None,
            })
            .flatten()
            .filter_map(|frame| ServerEvent::decode(frame.command, &frame.payload).ok())
            .collect()
    }

    /// A channel with `u` as members, all online.
    fn channel(u: &[Ulid]) -> Channel {
        let mut c = Channel::new(Ulid::from(999u128), "general".into(), LIMITS);
        let mut out = Vec::new();
        c.create(u[0], 0, &mut out);
        for &m in &u[1..] {
            c.join(m, &mut out).unwrap();
        }
        c
    }

    /// A channel of `u` with `u[0]` elected by everyone.
    fn led_channel(u: &[Ulid]) -> Channel {
        let mut c = channel(u);
        let mut out = Vec::new();
        c.lead(u[0], 1, &mut out).unwrap();
        c.stored(0, 1, &mut out);
        for &v in &u[1..] {
            c.vote(v, 1, u[0], &mut out).unwrap();
        }
        assert_eq!(c.leader(), Some(u[0]));
        c
    }

    #[test]
    fn an_election_starts_only_once_its_number_is_durable() {
        let u = users(3);
        let mut c = channel(&u);
        let mut out = Vec::new();
        c.lead(u[0], 1, &mut out).unwrap();
        assert_eq!(out, vec![ChannelEffect::Store(StoreOp::SetElection { channel: c.id(), election: 1 })]);
        assert_eq!(c.vote(u[1], 1, u[0], &mut out).unwrap_err().code, ErrorCode::BadElection, "not started yet");
        out.clear();
        c.stored(0, 1, &mut out);
        assert!(sent_to(&out, u[2]).iter().any(|e| matches!(e, ServerEvent::ChVote(v) if v.user == u[0])));
        c.vote(u[1], 1, u[0], &mut out).unwrap();
        assert_eq!(c.leader(), Some(u[0]));
        // A late vote is silent; a second CH_LEAD is refused while there is a leader.
        c.vote(u[2], 1, u[0], &mut out).unwrap();
        assert_eq!(c.lead(u[2], 9, &mut out).unwrap_err().code, ErrorCode::BadElection);
    }

    #[test]
    fn a_commit_is_announced_only_once_stored_and_only_on_real_acks() {
        let u = users(3);
        let mut c = led_channel(&u);
        let mut out = Vec::new();
        let m = Ulid::from(500u128);
        c.message(u[2], m, Body::text("x"), 5, &mut out).unwrap();
        assert_eq!(c.commit(u[0], m, &BTreeSet::from([u[2], u[1]]), &mut out).unwrap_err().code, ErrorCode::BadCommit);
        out.clear();
        c.ack(u[1], m, &mut out).unwrap();
        // The ack goes to the leader and the sender, not back to the acker.
        assert_eq!(sent_to(&out, u[0]).len(), 1);
        assert_eq!(sent_to(&out, u[2]).len(), 1);
        assert!(sent_to(&out, u[1]).is_empty());
        assert_eq!(c.commit(u[1], m, &BTreeSet::from([u[2], u[1]]), &mut out).unwrap_err().code, ErrorCode::NotLeader);
        out.clear();
        c.commit(u[0], m, &BTreeSet::from([u[2], u[1]]), &mut out).unwrap();
        assert!(matches!(&out[..], [ChannelEffect::Store(StoreOp::Append { seq: 1, .. })]), "{out:?}");
        out.clear();
        c.stored(1, 0, &mut out);
        for &x in &u {
            assert!(matches!(&sent_to(&out, x)[..], [ServerEvent::ChMsgCommit(k)] if k.id == m));
        }
    }

    #[test]
    fn pending_messages_and_merges_expire_with_an_error_to_their_sender() {
        let u = users(2);
        let mut c = led_channel(&u);
        let mut out = Vec::new();
        let m = Ulid::from(501u128);
        c.message(u[1], m, Body::text("x"), 100, &mut out).unwrap();
        let merged =
            MergedMessage { id: Ulid::from(502u128), from: u[1], timestamp: 1, msg: Body::text("y"), acks: vec![u[1]] };
        c.merge(u[1], vec![merged], 100, &mut out).unwrap();
        out.clear();
        c.tick(109, &mut out);
        assert!(out.is_empty());
        c.tick(110, &mut out);
        let codes: Vec<String> = sent_to(&out, u[1])
            .into_iter()
            .filter_map(|e| if let ServerEvent::Err(e) = e { Some(e.code) } else { None })
            .collect();
        assert_eq!(codes, ["not_committed", "merge_unconfirmed"]);
        assert_eq!((c.pending_count(), c.merge_count()), (0, 0));
    }

    #[test]
    fn a_leader_that_lets_an_acknowledged_message_expire_is_deposed() {
        let u = users(3);
        let mut c = led_channel(&u);
        let mut out = Vec::new();
        // Not acknowledged by a majority: expiring is not the leader's fault.
        c.message(u[1], Ulid::from(600u128), Body::text("x"), 0, &mut out).unwrap();
        c.tick(10, &mut out);
        assert_eq!(c.leader(), Some(u[0]));
        // Acknowledged by a majority and left to expire: the leader is deposed.
        let m = Ulid::from(601u128);
        c.message(u[1], m, Body::text("y"), 20, &mut out).unwrap();
        c.ack(u[2], m, &mut out).unwrap();
        out.clear();
        c.tick(30, &mut out);
        assert_eq!(c.leader(), None);
        assert!(sent_to(&out, u[2]).iter().any(|e| matches!(e, ServerEvent::ChStatus(s) if s.leader.is_none())));
    }

    #[test]
    fn a_new_leader_gets_each_pending_message_acks_in_one_frame() {
        let u = users(4);
        let mut c = led_channel(&u);
        let mut out = Vec::new();
        let m = Ulid::from(700u128);
        c.message(u[3], m, Body::text("x"), 0, &mut out).unwrap();
        c.ack(u[1], m, &mut out).unwrap();
        c.ack(u[2], m, &mut out).unwrap();
        c.session_down(u[0], &mut out);
        c.lead(u[1], 2, &mut out).unwrap();
        out.clear();
        c.stored(0, 2, &mut out);
        c.vote(u[2], 2, u[1], &mut out).unwrap();
        let acks: Vec<_> = sent_to(&out, u[1])
            .into_iter()
            .filter_map(|e| if let ServerEvent::ChMsgAck(a) = e { Some(a) } else { None })
            .collect();
        assert_eq!(acks.len(), 1, "one frame for the message");
        assert_eq!((acks[0].id, acks[0].users.clone()), (m, vec![u[1], u[2]]));
    }

    #[test]
    fn merged_timestamps_must_fit_the_store() {
        let u = users(2);
        let mut c = channel(&u);
        let mut out = Vec::new();
        let m = MergedMessage {
            id: Ulid::from(800u128),
            from: u[0],
            timestamp: u64::MAX,
            msg: Body::text("m"),
            acks: vec![u[1]],
        };
        assert_eq!(c.merge(u[0], vec![m], 0, &mut out).unwrap_err().code, ErrorCode::BadPayload);
    }
}
