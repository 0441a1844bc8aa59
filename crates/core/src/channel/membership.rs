//! Who is in the channel and who is online, and the `CH_STATUS` they see.
//! Health depends on the online count, so every change of presence may
//! change the status; it is sent only when it did change.

use ulid::Ulid;

use super::{err, Channel, ChannelEffect, StoreOp};
use sigil_proto::event::{ChStatus, ChUjoin, ChUleave, ChannelEntry, ChannelUser, Outbound};
use sigil_proto::{ErrorCode, ProtoError};

impl Channel {
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

    pub(super) fn to_online(&self, frame: &Outbound, out: &mut Vec<ChannelEffect>) {
        for &to in &self.online {
            out.push(ChannelEffect::Send { to, frame: frame.clone() });
        }
    }

    /// Sends `CH_STATUS` to the online members when leader, health or the
    /// online count changed since the last one.
    pub(super) fn status_if_changed(&mut self, out: &mut Vec<ChannelEffect>) {
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
        if self.ballot.as_ref().is_some_and(|b| b.candidate() == user && !b.is_elected()) {
            self.ballot = None;
        }
        self.status_if_changed(out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::LIMITS;
    use super::*;
    use sigil_proto::ServerEvent;

    /// The events sent to `to`, decoded.
    fn events(out: &[ChannelEffect], to: Ulid) -> Vec<ServerEvent> {
        out.iter()
            .filter_map(|e| match e {
                ChannelEffect::Send { to: t, frame } if *t == to => {
                    ServerEvent::decode(frame.command, &frame.payload).ok()
                }
                _ => None,
            })
            .collect()
    }

    /// The (online, status) of each `CH_STATUS` sent to `to`.
    fn statuses(out: &[ChannelEffect], to: Ulid) -> Vec<(u64, String)> {
        events(out, to)
            .into_iter()
            .filter_map(|e| if let ServerEvent::ChStatus(s) = e { Some((s.online, s.status)) } else { None })
            .collect()
    }

    #[test]
    fn a_joiner_always_learns_the_status_the_others_only_on_change() {
        let (a, b) = (Ulid::from(1u128), Ulid::from(2u128));
        let mut c = Channel::new(Ulid::from(99u128), "c".into(), LIMITS);
        let mut out = Vec::new();
        c.create(a, 0, &mut out);
        assert_eq!(statuses(&out, a), [(1, "unhealthy".to_owned())]);
        out.clear();
        c.join(b, &mut out).unwrap();
        // The online count changed: both hear of it, once each.
        assert_eq!(statuses(&out, a), [(2, "unhealthy".to_owned())]);
        assert_eq!(statuses(&out, b), [(2, "unhealthy".to_owned())]);
        out.clear();
        // A second session of an online member changes nothing.
        c.session_up(b, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.join(b, &mut out).unwrap_err().code, ErrorCode::AlreadyMember);
    }

    #[test]
    fn a_leaver_hears_its_own_leave_and_is_no_longer_a_member() {
        let (a, b) = (Ulid::from(1u128), Ulid::from(2u128));
        let mut c = Channel::new(Ulid::from(99u128), "c".into(), LIMITS);
        let mut out = Vec::new();
        c.create(a, 0, &mut out);
        c.join(b, &mut out).unwrap();
        out.clear();
        c.leave(b, &mut out).unwrap();
        for to in [a, b] {
            assert!(events(&out, to).iter().any(|e| matches!(e, ServerEvent::ChUleave(u) if u.user == b)), "{to}");
        }
        assert!(out.contains(&ChannelEffect::Store(StoreOp::RemoveMember { channel: c.id(), user: b })));
        assert!(!c.is_member(&b) && !c.online().contains(&b));
        assert_eq!(c.leave(b, &mut out).unwrap_err().code, ErrorCode::NotMember);
    }

    #[test]
    fn a_session_of_a_non_member_is_ignored() {
        let mut c = Channel::new(Ulid::from(99u128), "c".into(), LIMITS);
        let mut out = Vec::new();
        c.create(Ulid::from(1u128), 0, &mut out);
        out.clear();
        c.session_up(Ulid::from(2u128), &mut out);
        c.session_down(Ulid::from(2u128), &mut out);
        assert!(out.is_empty());
        assert_eq!(c.online().len(), 1);
    }
}
