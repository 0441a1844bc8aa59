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

use sigil_proto::event::FEATURE_BATCH;
use sigil_proto::quorum::{is_majority, smallest_majority};
use sigil_proto::{Command, ServerEvent};

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
    /// The pull after (re)connecting reached the end of the history: until
    /// then a live commit does not move `last_committed`, or a pull cut off
    /// by a disconnect would resume past messages it never fetched.
    synced: bool,
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

/// Message ids per batched frame: 27 bytes each, well within the default `max_payload`.
pub const MAX_IDS_PER_FRAME: usize = 1024;

/// Groups messages ready to commit, in order, into as few `CH_COMMIT`s as
/// possible: each input is `(msg_id, acks needed, acks recorded)`, each output
/// `(msg_ids, acks)` where `acks` were recorded for every one of its messages
/// and number the most any of them needs. Consecutive messages share a group
/// while the acks common to all of them are still enough.
pub fn group_commits(ready: &[(Ulid, usize, BTreeSet<Ulid>)]) -> Vec<(Vec<Ulid>, Vec<Ulid>)> {
    let mut groups: Vec<(Vec<Ulid>, usize, BTreeSet<Ulid>)> = Vec::new();
    for (id, need, acks) in ready {
        if let Some((ids, group_need, common)) = groups.last_mut() {
            let shared: BTreeSet<Ulid> = common.intersection(acks).copied().collect();
            let needed = (*group_need).max(*need);
            if shared.len() >= needed {
                ids.push(*id);
                (*group_need, *common) = (needed, shared);
                continue;
            }
        }
        groups.push((vec![*id], *need, acks.clone()));
    }
    // The fewest acks that make every message's majority: the frames stay small.
    groups.into_iter().map(|(ids, need, common)| (ids, common.into_iter().take(need.max(1)).collect())).collect()
}

/// The `ACK_CH_MSG`s that acknowledge `ids` in the batched form (PROTOCOL.md
/// §7.9), at most [`MAX_IDS_PER_FRAME`] ids each.
pub fn batched_acks(ids: &[Ulid]) -> impl Iterator<Item = Command> + '_ {
    ids.chunks(MAX_IDS_PER_FRAME).map(|chunk| Command::AckChMsg { id: chunk[0], ids: chunk[1..].to_vec() })
}

/// The `CH_COMMIT`s of messages ready to commit (as [`group_commits`] takes
/// them) in the batched form, at most [`MAX_IDS_PER_FRAME`] ids each.
pub fn batched_commits(ready: &[(Ulid, usize, BTreeSet<Ulid>)]) -> Vec<Command> {
    let mut out = Vec::new();
    for (ids, acks) in group_commits(ready) {
        for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
            out.push(Command::ChCommit { id: chunk[0], acks: acks.clone(), ids: chunk[1..].to_vec() });
        }
    }
    out
}

/// A refused or unanswered commit is tried again after this long (ms).
pub const COMMIT_RETRY_MS: u64 = 500;

/// The reference client behaviour.
#[derive(Debug)]
pub struct Agent {
    me: Ulid,
    rng: StdRng,
    channels: BTreeMap<Ulid, ChannelView>,
    /// The server's SINFO named the `batch` feature (PROTOCOL.md §7.9).
    batching: bool,
}

impl Agent {
    /// An agent for account `me`; `seed` makes its random delays reproducible.
    pub fn new(me: Ulid, seed: u64) -> Self {
        Self { me, rng: StdRng::seed_from_u64(seed), channels: BTreeMap::new(), batching: false }
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
            c.synced = false;
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
            ServerEvent::Sinfo(s) => self.batching = s.features.iter().any(|f| f == FEATURE_BATCH),
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
                    out.push(Command::AckChMsg { id: m.msg_id, ids: Vec::new() });
                    acks.insert(me);
                }
                let of = if m.recipients > 0 { m.recipients } else { c.online.max(1) };
                c.pending.insert(m.msg_id, PendingView { acks, of, committing: None });
                self.try_commit(m.id, m.msg_id, now_ms, &mut out);
            }
            ServerEvent::ChMsgAck(a) => {
                // Each of `user` and `users` acknowledged each of `id` and `ids` (§7.3, §7.9).
                for id in std::iter::once(&a.id).chain(&a.ids) {
                    let found = self.channels.iter_mut().find(|(_, c)| c.pending.contains_key(id));
                    if let Some((&channel, c)) = found {
                        if let Some(p) = c.pending.get_mut(id) {
                            p.acks.insert(a.user);
                            p.acks.extend(a.users.iter().copied());
                        }
                        self.try_commit(channel, *id, now_ms, &mut out);
                    }
                }
            }
            ServerEvent::ChMsgCommit(m) => {
                let c = self.channels.entry(m.channel).or_default();
                // `ids`: further commits, in commit order (batching, §7.9).
                for id in std::iter::once(&m.id).chain(&m.ids) {
                    c.pending.remove(id);
                    c.committed.insert(*id);
                    if c.synced {
                        c.last_committed = Some(*id);
                    }
                }
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
                } else {
                    c.synced = true;
                }
            }
            ServerEvent::ChMsgConfirm(m)
                if self.channels.get(&m.id).is_some_and(|c| c.committed.contains(&m.message)) =>
            {
                out.push(Command::AckChMsg { id: m.message, ids: Vec::new() });
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
            out.push(Command::ChCommit { id: msg_id, acks: p.acks.iter().copied().collect(), ids: Vec::new() });
        }
    }

    /// Batches commands the driver is about to send together (PROTOCOL.md
    /// §7.9), once the server's `SINFO` named the `batch` feature: every
    /// `ACK_CH_MSG` becomes one, and commits become as few `CH_COMMIT`s as
    /// [`group_commits`] allows. Other commands keep their order; a batch
    /// takes the place of its first command.
    pub fn coalesce(&self, commands: Vec<Command>) -> Vec<Command> {
        if !self.batching {
            return commands;
        }
        let mut out = Vec::with_capacity(commands.len());
        let mut acks: Vec<Ulid> = Vec::new();
        let mut commits: Vec<(Ulid, usize, BTreeSet<Ulid>)> = Vec::new();
        let (mut ack_at, mut commit_at) = (None, None);
        for command in commands {
            match command {
                Command::AckChMsg { id, ids } => {
                    ack_at.get_or_insert(out.len());
                    acks.push(id);
                    acks.extend(ids);
                }
                Command::ChCommit { id, acks: by, ids } if ids.is_empty() => {
                    let of = self.channels.values().find_map(|c| c.pending.get(&id)).map_or(0, |p| p.of as usize);
                    commit_at.get_or_insert(out.len());
                    commits.push((id, smallest_majority(of), by.into_iter().collect()));
                }
                other => out.push(other),
            }
        }
        let mut batches: Vec<(usize, Command)> = Vec::new();
        if let Some(at) = ack_at {
            batches.extend(batched_acks(&acks).map(|c| (at, c)));
        }
        if let Some(at) = commit_at {
            batches.extend(batched_commits(&commits).into_iter().map(|c| (at, c)));
        }
        // Inserted back to front, so earlier positions stay right.
        batches.sort_by_key(|(at, _)| *at);
        for (at, command) in batches.into_iter().rev() {
            out.insert(at, command);
        }
        out
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
    use sigil_proto::event::{
        ChAppend, ChElected, ChMsg, ChMsgAck, ChMsgCommit, ChStatus, ChVoteRequest, HistoryEntry,
    };
    use sigil_proto::Body;

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

    fn append(id: Ulid, messages: &[Ulid], more: bool) -> ServerEvent {
        let messages = messages
            .iter()
            .map(|m| HistoryEntry { id: *m, from: id, msg: Body::text("h"), timestamp: 0, acks: Vec::new() })
            .collect();
        ServerEvent::ChAppend(ChAppend { id, anchor: None, messages, more })
    }

    #[test]
    fn a_pull_cut_off_by_a_disconnect_resumes_where_it_stopped_not_at_a_live_commit() {
        let (me, other, ch) = (Ulid::from(1u128), Ulid::from(2u128), Ulid::from(100u128));
        let (m1, m2, m9) = (Ulid::from(51u128), Ulid::from(52u128), Ulid::from(59u128));
        let mut a = Agent::new(me, 3);
        assert!(a.on_event(&status(ch, Some(other), 2), 0).contains(&Command::ChPull { id: ch, anchor: None }));
        // The first page, then a live commit far past it, then the connection drops.
        a.on_event(&append(ch, &[m1, m2], true), 0);
        a.on_event(&ServerEvent::ChMsgCommit(ChMsgCommit { id: m9, channel: ch, acks: vec![other], ids: vec![] }), 0);
        a.reconnected();
        let again = a.on_event(&status(ch, Some(other), 2), 0);
        assert!(again.contains(&Command::ChPull { id: ch, anchor: Some(m2) }), "{again:?}");
        // Once the history is pulled to its end, live commits count.
        a.on_event(&append(ch, &[], false), 0);
        a.on_event(&ServerEvent::ChMsgCommit(ChMsgCommit { id: m9, channel: ch, acks: vec![other], ids: vec![] }), 0);
        assert_eq!(a.channels()[&ch].last_committed, Some(m9));
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
        a.on_event(&append(ch, &[], false), 0);
        a.on_event(&ServerEvent::ChElected(ChElected { channel: ch, election: 1, leader: me }), 0);
        let m = Ulid::from(50u128);
        let msg =
            ServerEvent::ChMsg(ChMsg { id: ch, msg_id: m, msg: Body::text("x"), from: b, timestamp: 0, recipients: 4 });
        assert_eq!(a.on_event(&msg, 0), vec![Command::AckChMsg { id: m, ids: Vec::new() }], "2 of 4 is no majority");
        let ack = ServerEvent::ChMsgAck(ChMsgAck { id: m, user: c, users: Vec::new(), ids: Vec::new() });
        assert_eq!(a.on_event(&ack, 0), vec![Command::ChCommit { id: m, acks: vec![me, b, c], ids: Vec::new() }]);
        assert!(a.on_event(&ack, 0).is_empty(), "commits once");
    }

    #[test]
    fn batched_acks_and_commits_are_read_and_written() {
        let (me, b, c, ch) = (Ulid::from(1u128), Ulid::from(2u128), Ulid::from(3u128), Ulid::from(100u128));
        let mut a = Agent::new(me, 7);
        a.on_event(&status(ch, Some(me), 4), 0);
        a.on_event(&append(ch, &[], false), 0);
        a.on_event(&ServerEvent::ChElected(ChElected { channel: ch, election: 1, leader: me }), 0);
        let sinfo = sigil_core::Limits::default().sinfo();
        a.on_event(&ServerEvent::Sinfo(sinfo.clone()), 0);
        let (m1, m2) = (Ulid::from(50u128), Ulid::from(51u128));
        let mut sent = Vec::new();
        for m in [m1, m2] {
            let msg = ServerEvent::ChMsg(ChMsg {
                id: ch,
                msg_id: m,
                msg: Body::text("x"),
                from: b,
                timestamp: 0,
                recipients: 4,
            });
            sent.extend(a.on_event(&msg, 0));
        }
        // One ack of both messages from c, in the batched form.
        let ack = ServerEvent::ChMsgAck(ChMsgAck { id: m1, user: c, users: Vec::new(), ids: vec![m2] });
        sent.extend(a.on_event(&ack, 0));
        assert_eq!(
            a.coalesce(sent),
            vec![
                Command::AckChMsg { id: m1, ids: vec![m2] },
                Command::ChCommit { id: m1, acks: vec![me, b, c], ids: vec![m2] },
            ]
        );
        let commit = ServerEvent::ChMsgCommit(ChMsgCommit { id: m1, channel: ch, acks: vec![me, b, c], ids: vec![m2] });
        a.on_event(&commit, 0);
        assert_eq!(a.channels()[&ch].last_committed, Some(m2));
        assert!(a.tick(10_000).is_empty(), "both are committed: nothing to retry");
        // A server without the feature gets one command per message.
        a.on_event(&ServerEvent::Sinfo(sigil_proto::event::Sinfo { features: Vec::new(), ..sinfo }), 0);
        let plain = vec![Command::AckChMsg { id: m1, ids: Vec::new() }, Command::AckChMsg { id: m2, ids: Vec::new() }];
        assert_eq!(a.coalesce(plain.clone()), plain);
    }

    #[test]
    fn commits_are_grouped_while_their_common_acks_suffice() {
        let u: Vec<Ulid> = (1..=6u128).map(Ulid::from).collect();
        let set = |ix: &[usize]| ix.iter().map(|&i| u[i]).collect::<BTreeSet<Ulid>>();
        let (m1, m2, m3) = (Ulid::from(50u128), Ulid::from(51u128), Ulid::from(52u128));
        let ready = vec![(m1, 3, set(&[0, 1, 2, 3])), (m2, 3, set(&[0, 1, 2, 4])), (m3, 3, set(&[3, 4, 5]))];
        assert_eq!(
            group_commits(&ready),
            vec![(vec![m1, m2], vec![u[0], u[1], u[2]]), (vec![m3], vec![u[3], u[4], u[5]])]
        );
    }
}
