//! Messages on their way into the history: `CH_MSG` makes one pending, its
//! recipients' acks are recorded here (the server's own count, not the
//! leader's word), `CH_COMMIT` appends it on a strict majority of those, and
//! a pending message that outlives its TTL is dropped with an error.

use std::collections::BTreeSet;

use ulid::Ulid;

use super::durability::Announcement;
use super::{err, Channel, ChannelEffect};
use sigil_proto::event::{ChMsg, HistoryEntry, Outbound};
use sigil_proto::quorum::is_majority;
use sigil_proto::{Body, ErrorCode, ProtoError};

use super::sizes::{ACK_BYTES, APPEND_OVERHEAD};

/// A message awaiting its commit.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) from: Ulid,
    body: Body,
    timestamp: u64,
    /// Who was online when it was sent: the majority is of these.
    recipients: BTreeSet<Ulid>,
    /// Who acknowledged it, the sender included.
    pub(super) acks: BTreeSet<Ulid>,
    expires: u64,
}

impl Channel {
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
        self.hold(from, pending.body.bytes.len());
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
        if self.merges.contains_key(&msg_id) {
            // For a merge, an ack is the confirmation it waits for.
            return self.confirm_merge(user, &msg_id, out);
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

    /// Removes a pending message, keeping the byte count right.
    fn take_pending(&mut self, msg_id: &Ulid) -> Option<Pending> {
        let p = self.pending.remove(msg_id)?;
        self.release(p.from, p.body.bytes.len());
        Some(p)
    }

    /// Drops the pending messages due by `now`, each with an error to its
    /// sender; deposes the leader if a majority had acknowledged one of them.
    pub(super) fn expire_pending(&mut self, now: u64, out: &mut Vec<ChannelEffect>) {
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
    }
}
