//! `Agent`: the reference client behaviour (PROTOCOL.md §7, "Reference client
//! behaviour"), as a pure state machine.
//!
//! Fed server events and the time, it answers with the commands a
//! well-behaved client sends on its own: it acknowledges what it receives,
//! stands for election after a randomized delay when a channel it is in has
//! no leader, votes for other candidates, commits as leader once a strict
//! majority acknowledged, confirms merged messages it has, and pulls the
//! history it missed after (re)connecting. It does no I/O; the terminal
//! client (and any other) drives it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ulid::Ulid;

use crate::core::quorum::is_majority;
use crate::proto::{Command, ServerEvent};

/// Delay before standing for election in a leaderless channel (ms, random in range).
pub const LEAD_DELAY_MS: std::ops::Range<u64> = 150..1_200;
/// After voting for someone, wait this long before standing ourselves (ms, random in range).
pub const YIELD_DELAY_MS: std::ops::Range<u64> = 1_500..3_000;

/// What the agent knows of one channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelView {
    /// The channel's name.
    pub name: String,
    /// Its leader.
    pub leader: Option<Ulid>,
    /// The highest election number seen.
    pub election: u64,
    /// Online members, from the last `CH_STATUS`.
    pub online: u64,
    /// Healthy, from the last `CH_STATUS`.
    pub healthy: bool,
    /// The last committed message this client has.
    pub last_committed: Option<Ulid>,
    committed: HashSet<Ulid>,
    pending: BTreeMap<Ulid, PendingView>,
    /// When to stand for election (ms), while leaderless.
    lead_at: Option<u64>,
    voted: BTreeSet<u64>,
    pulled: bool,
}

#[derive(Debug, Clone)]
struct PendingView {
    acks: BTreeSet<Ulid>,
    /// The recipients (from `CH_MSG`; a server without that field: the
    /// online count when it arrived).
    of: u64,
    /// A commit was sent at this time (ms) and not refused.
    committing: Option<u64>,
}

/// A refused or unanswered commit is tried again after this long (ms).
pub const COMMIT_RETRY_MS: u64 = 500;

/// The reference client behaviour.
#[derive(Debug)]
pub struct Agent {
    me: Ulid,
    rng: StdRng,
    channels: BTreeMap<Ulid, ChannelView>,
}

impl Agent {
    /// An agent for account `me`; `seed` makes its random delays reproducible.
    pub fn new(me: Ulid, seed: u64) -> Self {
        Self { me, rng: StdRng::seed_from_u64(seed), channels: BTreeMap::new() }
    }

    /// The channels this client is in.
    pub fn channels(&self) -> &BTreeMap<Ulid, ChannelView> {
        &self.channels
    }

    /// A channel by name (ignoring case).
    pub fn channel_named(&self, name: &str) -> Option<Ulid> {
        self.channels.iter().find(|(_, c)| c.name.eq_ignore_ascii_case(name)).map(|(id, _)| *id)
    }

    /// The connection was re-established: pull every channel again, forget leaders.
    pub fn reconnected(&mut self) {
        for c in self.channels.values_mut() {
            c.pulled = false;
            c.leader = None;
            c.lead_at = None;
            c.pending.clear();
        }
    }

    /// Handles one event at `now_ms`; returns the commands to send.
    pub fn on_event(&mut self, event: &ServerEvent, now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            ServerEvent::Msg(m) => out.push(Command::AckMsg { from: m.from, msg_id: m.msg_id }),
            ServerEvent::ChStatus(s) => {
                let delay = self.rng.gen_range(LEAD_DELAY_MS);
                let c = self.channels.entry(s.id).or_default();
                c.name.clone_from(&s.name);
                c.leader = s.leader;
                c.election = c.election.max(s.election);
                c.online = s.online;
                c.healthy = s.status == "healthy";
                if c.leader.is_some() {
                    c.lead_at = None;
                } else if c.lead_at.is_none() {
                    c.lead_at = Some(now_ms + delay);
                }
                if !c.pulled {
                    c.pulled = true;
                    out.push(Command::ChPull { id: s.id, anchor: c.last_committed });
                }
            }
            ServerEvent::ChUleave(u) if u.user == self.me => {
                self.channels.remove(&u.channel);
            }
            ServerEvent::ChVote(v) => {
                let delay = self.rng.gen_range(YIELD_DELAY_MS);
                let me = self.me;
                let c = self.channels.entry(v.channel).or_default();
                c.election = c.election.max(v.election);
                if v.user != me && c.voted.insert(v.election) {
                    // Like Raft: grant the vote and hold back our own candidacy.
                    out.push(Command::ChVote { channel: v.channel, election: v.election, user: v.user });
                    c.lead_at = Some(now_ms + delay);
                }
                // Votes are per election; old ones need not be remembered.
                let keep_from = c.election.saturating_sub(16);
                c.voted.retain(|e| *e >= keep_from);
            }
            ServerEvent::ChElected(e) => {
                let c = self.channels.entry(e.channel).or_default();
                c.leader = Some(e.leader);
                c.election = c.election.max(e.election);
                c.lead_at = None;
                if e.leader == self.me {
                    let ids: Vec<Ulid> = c.pending.keys().copied().collect();
                    for id in ids {
                        self.try_commit(e.channel, id, now_ms, &mut out);
                    }
                }
            }
            ServerEvent::ChMsg(m) => {
                let me = self.me;
                let c = self.channels.entry(m.id).or_default();
                let mut acks = BTreeSet::from([m.from]);
                if m.from != me {
                    out.push(Command::AckChMsg { id: m.msg_id });
                    acks.insert(me);
                }
                let of = if m.recipients > 0 { m.recipients } else { c.online.max(1) };
                c.pending.insert(m.msg_id, PendingView { acks, of, committing: None });
                self.try_commit(m.id, m.msg_id, now_ms, &mut out);
            }
            ServerEvent::ChMsgAck(a) => {
                let found = self.channels.iter_mut().find(|(_, c)| c.pending.contains_key(&a.id));
                if let Some((&channel, c)) = found {
                    if let Some(p) = c.pending.get_mut(&a.id) {
                        p.acks.insert(a.user);
                        p.acks.extend(a.users.iter().copied());
                    }
                    self.try_commit(channel, a.id, now_ms, &mut out);
                }
            }
            ServerEvent::ChMsgCommit(m) => {
                let c = self.channels.entry(m.channel).or_default();
                c.pending.remove(&m.id);
                c.committed.insert(m.id);
                c.last_committed = Some(m.id);
            }
            ServerEvent::ChAppend(a) => {
                let c = self.channels.entry(a.id).or_default();
                for m in &a.messages {
                    c.pending.remove(&m.id);
                    c.committed.insert(m.id);
                }
                if let Some(last) = a.messages.last() {
                    c.last_committed = Some(last.id);
                }
                if a.more {
                    out.push(Command::ChPull { id: a.id, anchor: c.last_committed });
                }
            }
            ServerEvent::ChMsgConfirm(m)
                if self.channels.get(&m.id).is_some_and(|c| c.committed.contains(&m.message)) =>
            {
                out.push(Command::AckChMsg { id: m.message });
            }
            ServerEvent::Err(e) if e.code == "bad_commit" => {
                // Which commit failed is not said: retry them all, on the next ack or tick.
                for c in self.channels.values_mut() {
                    for p in c.pending.values_mut() {
                        p.committing = None;
                    }
                }
            }
            ServerEvent::Err(e) if e.code == "not_committed" => {
                if let Some(id) = e.msg_id {
                    for c in self.channels.values_mut() {
                        c.pending.remove(&id);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// As leader, commits `msg_id` once a strict majority acknowledged it
    /// (again, if an earlier commit was refused or went unanswered).
    fn try_commit(&mut self, channel: Ulid, msg_id: Ulid, now_ms: u64, out: &mut Vec<Command>) {
        let Some(c) = self.channels.get_mut(&channel) else { return };
        if c.leader != Some(self.me) {
            return;
        }
        let Some(p) = c.pending.get_mut(&msg_id) else { return };
        let due = p.committing.is_none_or(|at| now_ms >= at + COMMIT_RETRY_MS);
        if due && is_majority(p.acks.len(), p.of as usize) {
            p.committing = Some(now_ms);
            out.push(Command::ChCommit { id: msg_id, acks: p.acks.iter().copied().collect() });
        }
    }

    /// Time passed: stand for election where it is due; retry commits.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        let due: Vec<(Ulid, Ulid)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.leader == Some(self.me))
            .flat_map(|(ch, c)| c.pending.keys().map(move |m| (*ch, *m)))
            .collect();
        for (channel, msg_id) in due {
            self.try_commit(channel, msg_id, now_ms, &mut out);
        }
        for (&channel, c) in &mut self.channels {
            let due = c.leader.is_none() && c.lead_at.is_some_and(|at| at <= now_ms);
            if due {
                let election = c.election + 1;
                c.election = election;
                c.voted.insert(election);
                // If this election fails, try again later with a higher number.
                c.lead_at = Some(now_ms + self.rng.gen_range(YIELD_DELAY_MS));
                out.push(Command::ChLead { channel, election });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::event::{ChElected, ChMsg, ChMsgAck, ChStatus, ChVoteRequest};
    use crate::proto::Body;

    fn status(id: Ulid, leader: Option<Ulid>, online: u64) -> ServerEvent {
        ServerEvent::ChStatus(ChStatus {
            id,
            name: "general".into(),
            leader,
            status: if leader.is_some() { "healthy" } else { "unhealthy" }.into(),
            election: 0,
            online,
        })
    }

    #[test]
    fn a_leaderless_channel_gets_a_candidate_after_a_delay() {
        let (me, ch) = (Ulid::from(1u128), Ulid::from(100u128));
        let mut a = Agent::new(me, 7);
        let first = a.on_event(&status(ch, None, 3), 0);
        assert_eq!(first, vec![Command::ChPull { id: ch, anchor: None }]);
        assert!(a.tick(LEAD_DELAY_MS.start - 1).is_empty());
        assert_eq!(a.tick(LEAD_DELAY_MS.end), vec![Command::ChLead { channel: ch, election: 1 }]);
    }

    #[test]
    fn votes_for_others_once_and_yields() {
        let (me, other, ch) = (Ulid::from(1u128), Ulid::from(2u128), Ulid::from(100u128));
        let mut a = Agent::new(me, 7);
        a.on_event(&status(ch, None, 3), 0);
        let vote = ServerEvent::ChVote(ChVoteRequest { channel: ch, election: 4, user: other });
        assert_eq!(a.on_event(&vote, 10), vec![Command::ChVote { channel: ch, election: 4, user: other }]);
        assert!(a.on_event(&vote, 11).is_empty(), "one vote per election");
        assert!(a.tick(LEAD_DELAY_MS.end).is_empty(), "yields to the candidate");
        assert_eq!(a.tick(10 + YIELD_DELAY_MS.end), vec![Command::ChLead { channel: ch, election: 5 }]);
    }

    #[test]
    fn the_leader_commits_on_a_strict_majority() {
        let (me, b, c, ch) = (Ulid::from(1u128), Ulid::from(2u128), Ulid::from(3u128), Ulid::from(100u128));
        let mut a = Agent::new(me, 7);
        a.on_event(&status(ch, Some(me), 4), 0);
        a.on_event(&ServerEvent::ChElected(ChElected { channel: ch, election: 1, leader: me }), 0);
        let m = Ulid::from(50u128);
        let msg =
            ServerEvent::ChMsg(ChMsg { id: ch, msg_id: m, msg: Body::text("x"), from: b, timestamp: 0, recipients: 4 });
        assert_eq!(a.on_event(&msg, 0), vec![Command::AckChMsg { id: m }], "2 of 4 is no majority");
        let ack = ServerEvent::ChMsgAck(ChMsgAck { id: m, user: c, users: Vec::new() });
        assert_eq!(a.on_event(&ack, 0), vec![Command::ChCommit { id: m, acks: vec![me, b, c] }]);
        assert!(a.on_event(&ack, 0).is_empty(), "commits once");
    }
}
