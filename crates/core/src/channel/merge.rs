//! Merged history (PROTOCOL.md §7.6): committed messages the server lacks
//! (say its database was lost) that a member brings back with `CH_MERGE`.
//! One member's word is not enough, so a merge waits until another user in
//! its `acks` confirms it with an ack, and is dropped with an error to its
//! merger when its TTL runs out.

use std::collections::BTreeSet;

use ulid::Ulid;

use super::durability::Announcement;
use super::{err, Channel, ChannelEffect};
use sigil_proto::command::MergedMessage;
use sigil_proto::event::{ChAppend, ChMsgConfirm, HistoryEntry, Outbound};
use sigil_proto::{ErrorCode, ProtoError};

/// A merged message awaiting confirmation.
#[derive(Debug, Clone)]
pub(super) struct Merge {
    merger: Ulid,
    entry: MergedMessage,
    expires: u64,
}

impl Channel {
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
        self.hold(user, new_bytes);
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

    /// An ack of the merge of `msg_id` from `user`: from one of its ackers
    /// other than its merger, it confirms the merge, which is appended after
    /// the last commit. Without such a merge, does nothing.
    pub(super) fn confirm_merge(
        &mut self,
        user: Ulid,
        msg_id: &Ulid,
        out: &mut Vec<ChannelEffect>,
    ) -> Result<(), ProtoError> {
        if let Some(m) = self.merges.get(msg_id) {
            if user == m.merger || !m.entry.acks.contains(&user) || !self.members.contains(&user) {
                return Err(err(ErrorCode::UnknownMsg, "you are not asked to confirm that message"));
            }
        }
        if let Some(m) = self.take_merge(msg_id) {
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
        Ok(())
    }

    /// Removes a merge awaiting confirmation, keeping the byte count right.
    fn take_merge(&mut self, msg_id: &Ulid) -> Option<Merge> {
        let m = self.merges.remove(msg_id)?;
        self.release(m.merger, m.entry.msg.bytes.len());
        Some(m)
    }

    /// Drops the merges due by `now`, each with an error to its merger.
    pub(super) fn expire_merges(&mut self, now: u64, out: &mut Vec<ChannelEffect>) {
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
    use super::super::tests::LIMITS;
    use super::super::StoreOp;
    use super::*;
    use sigil_proto::{Body, ServerEvent};

    /// A channel of users 1..=3, all online, no leader.
    fn channel() -> (Channel, [Ulid; 3]) {
        let u = [1u128, 2, 3].map(Ulid::from);
        let mut c = Channel::new(Ulid::from(99u128), "c".into(), LIMITS);
        let mut out = Vec::new();
        c.create(u[0], 0, &mut out);
        c.join(u[1], &mut out).unwrap();
        c.join(u[2], &mut out).unwrap();
        (c, u)
    }

    fn merged(id: u128, acks: Vec<Ulid>) -> MergedMessage {
        MergedMessage { id: Ulid::from(id), from: acks[0], timestamp: 1, msg: Body::text("m"), acks }
    }

    /// Who got `CH_MSG_CONFIRM` for `msg_id`.
    fn asked(out: &[ChannelEffect], msg_id: Ulid) -> Vec<Ulid> {
        out.iter()
            .filter_map(|e| match e {
                ChannelEffect::Send { to, frame } => match ServerEvent::decode(frame.command, &frame.payload) {
                    Ok(ServerEvent::ChMsgConfirm(m)) if m.message == msg_id => Some(*to),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_merge_enters_the_history_only_when_another_acker_confirms_it() {
        let (mut c, u) = channel();
        let mut out = Vec::new();
        let m = merged(500, vec![u[1], u[0], u[1]]);
        assert_eq!(c.merge(u[0], vec![m.clone()], 0, &mut out).unwrap(), [m.id]);
        // Not the merger, not a user outside its acks.
        assert_eq!(asked(&out, m.id), [u[1]]);
        out.clear();
        assert_eq!(c.ack(u[0], m.id, &mut out).unwrap_err().code, ErrorCode::UnknownMsg, "the merger");
        assert_eq!(c.ack(u[2], m.id, &mut out).unwrap_err().code, ErrorCode::UnknownMsg, "not an acker");
        assert!(out.is_empty() && c.has_merge(&m.id));
        c.ack(u[1], m.id, &mut out).unwrap();
        assert!(!c.has_merge(&m.id) && c.seq_of(&m.id) == Some(1));
        match &out[..] {
            [ChannelEffect::Store(StoreOp::Append { seq: 1, entry, .. })] => assert_eq!(entry.acks, [u[0], u[1]]),
            _ => panic!("{out:?}"),
        }
        out.clear();
        c.stored(1, 0, &mut out);
        let appends: Vec<Option<Ulid>> = out
            .iter()
            .filter_map(|e| match e {
                ChannelEffect::Send { frame, .. } => match ServerEvent::decode(frame.command, &frame.payload) {
                    Ok(ServerEvent::ChAppend(a)) if a.messages.len() == 1 && a.messages[0].id == m.id => Some(a.anchor),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(appends, [None, None, None], "one CH_APPEND, with no anchor, to each online member");
    }

    #[test]
    fn known_and_repeated_ids_are_skipped() {
        let (mut c, u) = channel();
        let mut out = Vec::new();
        let m = merged(500, vec![u[0], u[1]]);
        assert_eq!(c.merge(u[0], vec![m.clone(), m.clone()], 0, &mut out).unwrap(), [m.id]);
        assert!(c.merge(u[1], vec![m], 0, &mut out).unwrap().is_empty());
        assert_eq!(c.merge_count(), 1);
    }

    #[test]
    fn only_the_leader_asks_again_and_only_ackers_are_asked() {
        let (mut c, u) = channel();
        let mut out = Vec::new();
        let m = merged(500, vec![u[0], u[1]]);
        c.merge(u[0], vec![m.clone()], 0, &mut out).unwrap();
        assert_eq!(c.ack_request(u[1], m.id, &u, &mut out).unwrap_err().code, ErrorCode::NotLeader);
        c.lead(u[1], 1, &mut out).unwrap();
        c.stored(0, 1, &mut out);
        c.vote(u[0], 1, u[1], &mut out).unwrap();
        assert_eq!(c.leader(), Some(u[1]));
        out.clear();
        assert_eq!(c.ack_request(u[1], Ulid::from(7u128), &u, &mut out).unwrap_err().code, ErrorCode::UnknownMsg);
        c.ack_request(u[1], m.id, &u, &mut out).unwrap();
        assert_eq!(asked(&out, m.id), [u[1]]);
    }
}
