//! Exhaustive check of the small cases (PROTOCOL.md §7, §8): every
//! interleaving, up to a depth, of what three members, the store, the clock
//! and a crash can do to one channel, by a search over the pure core's
//! states that visits each one from its shallowest depth (the states a
//! breadth-first search would reach, with the memory of a depth-first one).
//!
//! The state is a [`Channel`] (the core: pure, `Clone`, every rule of §7 in
//! it) with the store's queue and durable data, what each member learned from
//! the frames it got, and the ghost records the invariants need. From each
//! state every action that applies is taken: a member's session starts or
//! ends, it joins or leaves, stands for election (with the next number),
//! votes (as asked, or unasked for the latest candidate), sends one of two
//! messages (a fresh one, or again after it expired or was lost), acks a
//! message it received, commits as leader (with the acks it heard of, or
//! lying: everyone's); the store makes its whole queue durable or only its
//! first write (a batch cut short, or the rest kept back by a failed write:
//! to the core, a late `stored`); time passes beyond every message's TTL;
//! the server crashes, restarts from what is durable, and the members
//! reconnect. States are deduplicated by a 128-bit hash of the core's
//! `Debug` form (the same for equal states whatever the hash order inside:
//! see `crates/core/src/channel/mod.rs`) and of the rest. A member's frames
//! reach the channel in any order relative to the others', which covers
//! delays and reordering between members; within one member, the order is
//! what it chose.
//!
//! Two searches: from a new channel with two of the three online (so one can
//! come online during an election), and from the state right after the first
//! election (a reachable state), so that the depth goes to messages, commits,
//! the store and crashes. Each path may crash once, end or start one session,
//! and (from the new channel) leave or join once; election numbers stop at 2.
//!
//! Checked on every transition:
//! - a refused action (an `ERR`) leaves the channel as it was and sends nothing;
//! - an election starts (vote requests go out) only once its number is
//!   durable, and no number starts twice, even across crashes;
//! - at most one leader per election, only with a strict majority of its
//!   voters' votes; the leader is an online member;
//! - nothing is appended without a strict majority of its recipients' real
//!   acks; appends are gapless and never duplicate an id;
//! - a commit is announced only once durable, to every online member, in
//!   position order, never twice to one member in a session.
//!
//! Why a search of its own rather than the `stateright` crate: the core is
//! already a transition function over a `Clone` state, `Channel` holds a
//! hash map (so it is not `Hash`; stateright wants `Hash + Eq` states), and
//! a few dozen lines of search keep the dependency tree as it is, the memory
//! at a hash per state (a breadth-first frontier of cloned states took 2.4 GB
//! at depth 8, this takes 37 MB), and the counterexample a list of actions.
//!
//! The default depth is 6 in a debug build (`cargo test`: about 15 s) and 8
//! in release. Deeper or wider: `SIGIL_MC_DEPTH=<n>`, `SIGIL_MC_MSGS` (message
//! ids, 2), `SIGIL_MC_ELECTIONS` (highest election number, 2),
//! `SIGIL_MC_CRASHES` (1), `SIGIL_MC_SESSIONS` (session changes, 1),
//! `SIGIL_MC_JOINS` (leaves and joins: 1 from a new channel, 0 from the
//! first election), e.g.
//!
//! ```sh
//! SIGIL_MC_DEPTH=10 cargo test --release --test model_check -- --nocapture
//! ```
//!
//! It prints the states per depth, transitions and time of each search.
//! Measured (release, 2 cores shared with other work): depth 8 in 22 s, 37 MB
//! (142,818 states from a new channel, 277,764 from the first election);
//! depth 10 in 296 s, 206 MB: 2,085,760 states and 9.5 million transitions
//! from a new channel, 1,738,976 states and 11.9 million transitions from
//! the first election (421,098 commit announcements, 73,040 crashes after a
//! commit); 0 violations. The debug default (depth 6): 45,555 states in
//! about 15 s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use sigil_core::{durable_marks, Channel, ChannelEffect, ChannelSnapshot, Limits, StoreOp};
use sigil_proto::event::{ChElected, ChMsgCommit, HistoryEntry};
use sigil_proto::{Body, Outbound, ServerEvent};
use ulid::Ulid;

/// Deep enough, from an elected leader, for a commit, a crash after it and
/// a new candidacy (in release: the next election too); a debug build (plain
/// `cargo test`) goes less deep so that it stays well under a minute.
const DEFAULT_DEPTH: usize = if cfg!(debug_assertions) { 6 } else { 8 };
const USERS: [u128; 3] = [1, 2, 3];
const CHANNEL: u128 = 100;
const START: u64 = 1_800_000_000;

fn user(i: u8) -> Ulid {
    Ulid::from(USERS[usize::from(i)])
}

fn msg(i: u8) -> Ulid {
    Ulid::from(1000 + u128::from(i))
}

/// What can happen next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Up(u8),
    Down(u8),
    Join(u8),
    Leave(u8),
    Lead(u8),
    /// A vote as asked by the last `CH_VOTE` the member got.
    Vote(u8),
    /// A vote, unasked, for the candidate of the latest election that
    /// started (a member that came online later, or heard of it elsewhere).
    VoteUnasked(u8),
    Send(u8, u8),
    Ack(u8, u8),
    Commit(u8, u8),
    CommitLying(u8, u8),
    StoreAll,
    StoreFirst,
    Tick,
    Crash,
}

/// A message as it really went: for the commit check.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct MsgRecord {
    from: Ulid,
    recipients: BTreeSet<Ulid>,
    real_acks: BTreeSet<Ulid>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct BallotRecord {
    candidate: Ulid,
    voters: BTreeSet<Ulid>,
    yes: BTreeSet<Ulid>,
}

/// How far the search goes: its depth, and how many of each costly kind of
/// action one path may take (each multiplies the states).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    depth: usize,
    /// Message ids the members use (sent again after an expiry or a crash).
    msgs: u8,
    /// Highest election number a `CH_LEAD` may ask for.
    elections: u64,
    crashes: u8,
    /// Session ends and starts.
    sessions: u8,
    /// Leaves and joins.
    joins: u8,
}

impl Bounds {
    /// The defaults (finishing in well under a minute in a debug build),
    /// each overridden by its `SIGIL_MC_*` variable; `joins` is the default
    /// number of leaves and joins.
    fn from_env(joins: u64) -> Bounds {
        let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
        let small = |name: &str, default: u64| env(name, default).min(u64::from(u8::MAX)) as u8;
        Bounds {
            depth: env("SIGIL_MC_DEPTH", DEFAULT_DEPTH as u64) as usize,
            msgs: small("SIGIL_MC_MSGS", 2),
            elections: env("SIGIL_MC_ELECTIONS", 2),
            crashes: small("SIGIL_MC_CRASHES", 1),
            sessions: small("SIGIL_MC_SESSIONS", 1),
            joins: small("SIGIL_MC_JOINS", joins),
        }
    }
}

#[derive(Debug, Clone)]
struct State {
    channel: Channel,
    /// What this path may still do of the bounded kinds (crashes, session
    /// changes, membership changes).
    budget: (u8, u8, u8),
    now: u64,
    /// Users with a session.
    sessions: BTreeSet<Ulid>,
    // The store.
    queue: Vec<StoreOp>,
    durable_members: BTreeSet<Ulid>,
    durable_election: u64,
    durable_history: Vec<Ulid>,
    // What members learned.
    received: BTreeMap<Ulid, BTreeSet<Ulid>>,
    vote_asks: BTreeMap<Ulid, (u64, Ulid)>,
    /// Per member: the acks it knows of, per message (its own included).
    heard: BTreeMap<Ulid, BTreeMap<Ulid, BTreeSet<Ulid>>>,
    /// Commits announced to each member in its current session.
    told: BTreeSet<(Ulid, Ulid)>,
    // Ghosts: the truth the invariants compare with, kept across crashes.
    msgs: BTreeMap<Ulid, MsgRecord>,
    ballots: BTreeMap<u64, BallotRecord>,
    started: BTreeSet<u64>,
    elected: BTreeMap<u64, Ulid>,
    /// Per member: the position of the last commit announced to it.
    last_announced: BTreeMap<Ulid, usize>,
}

/// What the search saw, over all states: it must have reached what it checks.
#[derive(Debug, Default)]
struct Seen {
    elections: u64,
    announced: u64,
    refused: u64,
    crashes_after_commit: u64,
}

type Violation = String;

impl State {
    /// A channel of the three users, with `online` connected.
    fn initial(bounds: &Bounds, online: &[u8]) -> State {
        let limits = Limits { min_online: 1, pending_ttl_s: 30, ..Limits::default() }.channel_limits();
        let members: BTreeSet<Ulid> = (0..3).map(user).collect();
        let snapshot = ChannelSnapshot {
            id: Ulid::from(CHANNEL),
            name: "c".into(),
            members: members.clone(),
            election: 0,
            history: Vec::new(),
        };
        let mut s = State {
            channel: Channel::restore(snapshot, limits),
            budget: (0, 0, 0),
            now: START,
            sessions: BTreeSet::new(),
            queue: Vec::new(),
            durable_members: members,
            durable_election: 0,
            durable_history: Vec::new(),
            received: BTreeMap::new(),
            vote_asks: BTreeMap::new(),
            heard: BTreeMap::new(),
            told: BTreeSet::new(),
            msgs: BTreeMap::new(),
            ballots: BTreeMap::new(),
            started: BTreeSet::new(),
            elected: BTreeMap::new(),
            last_announced: BTreeMap::new(),
        };
        let mut seen = Seen::default();
        for &i in online {
            s.apply(Action::Up(i), &mut seen).expect("starting sessions violates nothing");
        }
        s.budget = (bounds.crashes, bounds.sessions, bounds.joins);
        s
    }

    /// A hash of everything that decides what can happen next.
    fn key(&self, text: &mut String) -> u128 {
        let mut h = Twin::new();
        // The core and the store's queue as they print (neither is `Hash`),
        // hashed in one piece; the rest as it hashes.
        text.clear();
        let _ = write!(text, "{:?} {:?}", self.channel, self.queue);
        h.write(text.as_bytes());
        (self.budget, self.now, &self.sessions, &self.durable_members, self.durable_election, &self.durable_history)
            .hash(&mut h);
        (&self.received, &self.vote_asks, &self.heard, &self.told).hash(&mut h);
        (&self.msgs, &self.ballots, &self.started, &self.elected, &self.last_announced).hash(&mut h);
        h.finish128()
    }

    /// The actions that apply here.
    fn actions(&self, bounds: &Bounds) -> Vec<Action> {
        let (crashes, sessions, joins) = self.budget;
        let msgs = bounds.msgs;
        let mut all = Vec::new();
        for i in 0..3u8 {
            let u = user(i);
            let member = self.channel.is_member(&u);
            if self.sessions.contains(&u) {
                if sessions > 0 {
                    all.push(Action::Down(i));
                }
                if member {
                    if joins > 0 {
                        all.push(Action::Leave(i));
                    }
                    if self.channel.leader().is_none() && self.channel.election() < bounds.elections {
                        all.push(Action::Lead(i));
                    }
                    let asked = self.vote_asks.get(&u);
                    if asked.is_some() {
                        all.push(Action::Vote(i));
                    }
                    if self.latest_ballot().is_some_and(|b| Some(&b) != asked) {
                        all.push(Action::VoteUnasked(i));
                    }
                    all.extend((0..msgs).map(|m| Action::Send(i, m)));
                } else if joins > 0 {
                    all.push(Action::Join(i));
                }
                for m in 0..msgs {
                    if self.received.get(&u).is_some_and(|r| r.contains(&msg(m))) {
                        all.push(Action::Ack(i, m));
                    }
                    if self.channel.leader() == Some(u) && self.channel.is_live(&msg(m)) {
                        all.extend([Action::Commit(i, m), Action::CommitLying(i, m)]);
                    }
                }
            } else if sessions > 0 {
                all.push(Action::Up(i));
            }
        }
        if !self.queue.is_empty() {
            all.push(Action::StoreAll);
            if self.queue.len() > 1 {
                all.push(Action::StoreFirst);
            }
        }
        if self.channel.pending_count() > 0 {
            all.push(Action::Tick);
        }
        if crashes > 0 {
            all.push(Action::Crash);
        }
        all
    }

    /// Takes `action`; an error names the invariant it broke.
    fn apply(&mut self, action: Action, seen: &mut Seen) -> Result<(), Violation> {
        let mut out = Vec::new();
        let before = self.channel.clone();
        let c = &mut self.channel;
        let result = match action {
            Action::Up(i) => {
                self.budget.1 = self.budget.1.saturating_sub(1);
                self.sessions.insert(user(i));
                c.session_up(user(i), &mut out);
                Ok(())
            }
            Action::Down(i) => {
                self.budget.1 = self.budget.1.saturating_sub(1);
                self.sessions.remove(&user(i));
                c.session_down(user(i), &mut out);
                // A new session starts without what the last one was told.
                self.told.retain(|(to, _)| *to != user(i));
                Ok(())
            }
            Action::Join(i) => {
                self.budget.2 = self.budget.2.saturating_sub(1);
                c.join(user(i), &mut out)
            }
            Action::Leave(i) => {
                self.budget.2 = self.budget.2.saturating_sub(1);
                c.leave(user(i), &mut out)
            }
            Action::Lead(i) => {
                let election = c.election() + 1;
                let voters = c.online().clone();
                let r = c.lead(user(i), election, &mut out);
                if r.is_ok() {
                    let candidate = user(i);
                    self.ballots.insert(election, BallotRecord { candidate, voters, yes: BTreeSet::from([candidate]) });
                }
                r
            }
            Action::Vote(i) | Action::VoteUnasked(i) => {
                let ballot = if let Action::Vote(_) = action {
                    self.vote_asks.get(&user(i)).copied()
                } else {
                    self.latest_ballot()
                };
                let Some((election, candidate)) = ballot else { return Err(format!("{action:?} without a ballot")) };
                let c = &mut self.channel;
                let r = c.vote(user(i), election, candidate, &mut out);
                if r.is_ok() {
                    if let Some(b) = self.ballots.get_mut(&election) {
                        if b.voters.contains(&user(i)) && b.candidate == candidate {
                            b.yes.insert(user(i));
                        }
                    }
                }
                r
            }
            Action::Send(i, m) => {
                let recipients = c.online().clone();
                let r = c.message(user(i), msg(m), Body::text("m"), self.now, &mut out);
                if r.is_ok() {
                    let record = MsgRecord { from: user(i), recipients, real_acks: BTreeSet::new() };
                    self.msgs.insert(msg(m), record);
                }
                r
            }
            Action::Ack(i, m) => {
                let r = c.ack(user(i), msg(m), &mut out);
                if r.is_ok() {
                    if let Some(rec) = self.msgs.get_mut(&msg(m)).filter(|r| r.recipients.contains(&user(i))) {
                        rec.real_acks.insert(user(i));
                    }
                    self.heard.entry(user(i)).or_default().entry(msg(m)).or_default().insert(user(i));
                }
                r
            }
            Action::Commit(i, m) | Action::CommitLying(i, m) => {
                let acks: BTreeSet<Ulid> = if matches!(action, Action::Commit(..)) {
                    let heard = self.heard.get(&user(i)).and_then(|h| h.get(&msg(m))).cloned().unwrap_or_default();
                    let from = self.msgs.get(&msg(m)).map(|r| r.from);
                    heard.into_iter().chain(from).collect()
                } else {
                    (0..3).map(user).collect()
                };
                c.commit(user(i), msg(m), &acks, &mut out)
            }
            Action::StoreAll | Action::StoreFirst => {
                let n = if action == Action::StoreAll { self.queue.len() } else { 1 };
                let batch: Vec<StoreOp> = self.queue.drain(..n).collect();
                self.make_durable(&batch)?;
                for (_, (seq, election)) in durable_marks(&batch) {
                    self.channel.stored(seq, election, &mut out);
                }
                Ok(())
            }
            Action::Tick => {
                self.now += 31;
                c.tick(self.now, &mut out);
                Ok(())
            }
            Action::Crash => {
                self.budget.0 = self.budget.0.saturating_sub(1);
                if !self.durable_history.is_empty() {
                    seen.crashes_after_commit += 1;
                }
                return self.crash(seen).and_then(|()| self.check());
            }
        };
        if let Err(e) = result {
            // An ERR refuses: the channel is as it was, and nothing else goes out.
            seen.refused += 1;
            if !out.is_empty() || format!("{before:?}") != format!("{:?}", self.channel) {
                return Err(format!("{action:?} was refused ({}) but changed the channel or sent {out:?}", e.code));
            }
        }
        self.effects(out, seen)?;
        self.check()
    }

    /// The latest election that started, with its candidate.
    fn latest_ballot(&self) -> Option<(u64, Ulid)> {
        let (&election, b) = self.ballots.iter().rev().find(|(e, _)| self.started.contains(e))?;
        Some((election, b.candidate))
    }

    fn make_durable(&mut self, batch: &[StoreOp]) -> Result<(), Violation> {
        for op in batch {
            match op {
                StoreOp::AddMember { user, .. } => {
                    self.durable_members.insert(*user);
                }
                StoreOp::RemoveMember { user, .. } => {
                    self.durable_members.remove(user);
                }
                StoreOp::SetElection { election, .. } => self.durable_election = self.durable_election.max(*election),
                StoreOp::Append { seq, entry, .. } => {
                    if *seq != self.durable_history.len() as u64 + 1 {
                        return Err(format!("append at {seq} onto a history of {}", self.durable_history.len()));
                    }
                    if self.durable_history.contains(&entry.id) {
                        return Err(format!("{} appended twice", entry.id));
                    }
                    self.durable_history.push(entry.id);
                }
                StoreOp::CreateChannel { .. } => {}
            }
        }
        Ok(())
    }

    /// The server restarts from what is durable: no leader, no pending
    /// message; members forget what they were told and reconnect.
    fn crash(&mut self, seen: &mut Seen) -> Result<(), Violation> {
        self.queue.clear();
        self.sessions.clear();
        let snapshot = ChannelSnapshot {
            id: Ulid::from(CHANNEL),
            name: "c".into(),
            members: self.durable_members.clone(),
            election: self.durable_election,
            history: self.durable_history.iter().enumerate().map(|(i, id)| (*id, i as u64 + 1)).collect(),
        };
        let limits = Limits { min_online: 1, pending_ttl_s: 30, ..Limits::default() }.channel_limits();
        self.channel = Channel::restore(snapshot, limits);
        self.now += 2;
        self.received.clear();
        self.vote_asks.clear();
        self.heard.clear();
        self.told.clear();
        self.ballots.clear();
        for i in 0..3 {
            let mut out = Vec::new();
            self.sessions.insert(user(i));
            self.channel.session_up(user(i), &mut out);
            self.effects(out, seen)?;
        }
        Ok(())
    }

    /// Carries out what the channel emitted, checking it.
    fn effects(&mut self, out: Vec<ChannelEffect>, seen: &mut Seen) -> Result<(), Violation> {
        let mut commits: BTreeMap<Ulid, BTreeSet<Ulid>> = BTreeMap::new();
        for effect in out {
            match effect {
                ChannelEffect::Store(op) => {
                    if let StoreOp::Append { entry, .. } = &op {
                        let Some(rec) = self.msgs.get(&entry.id) else {
                            return Err(format!("{} appended, never sent", entry.id));
                        };
                        let real: BTreeSet<Ulid> = rec.real_acks.iter().copied().chain([rec.from]).collect();
                        let acks: BTreeSet<Ulid> = entry.acks.iter().copied().collect();
                        if !acks.is_subset(&real) || acks.len() * 2 <= rec.recipients.len() {
                            return Err(format!(
                                "{} committed on {acks:?}: real {real:?} of {:?}",
                                entry.id, rec.recipients
                            ));
                        }
                    }
                    self.queue.push(op);
                }
                ChannelEffect::AckNote { to, msg_id, user } => {
                    self.heard.entry(to).or_default().entry(msg_id).or_default().insert(user);
                }
                ChannelEffect::SendBatch { to, batch } => {
                    for id in batch.ids() {
                        self.announce(to, *id, &mut commits, seen)?;
                    }
                }
                ChannelEffect::Send { to, frame } => {
                    // Only what the members or the checks read (decoding costs).
                    if !matches!(frame.command, "CH_VOTE" | "CH_ELECTED" | "CH_MSG" | "CH_MSG_ACK" | "CH_MSG_COMMIT") {
                        continue;
                    }
                    let ev = ServerEvent::decode(frame.command, &frame.payload)
                        .map_err(|e| format!("undecodable {}: {e}", frame.command))?;
                    self.event(to, ev, &mut commits, seen)?;
                }
            }
        }
        let online = self.channel.online().clone();
        for (id, to) in commits {
            if to != online {
                return Err(format!("commit {id} announced to {to:?}, online {online:?}"));
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        to: Ulid,
        ev: ServerEvent,
        commits: &mut BTreeMap<Ulid, BTreeSet<Ulid>>,
        seen: &mut Seen,
    ) -> Result<(), Violation> {
        match ev {
            ServerEvent::ChVote(v) => {
                if self.started.insert(v.election) {
                    if v.election > self.durable_election {
                        return Err(format!("election {} started before its number was durable", v.election));
                    }
                    if self.ballots.get(&v.election).map(|b| b.candidate) != Some(v.user) {
                        return Err(format!("election {} started for {}, not its candidate", v.election, v.user));
                    }
                } else if !self.ballots.contains_key(&v.election) {
                    return Err(format!("election {} started twice", v.election));
                }
                self.vote_asks.insert(to, (v.election, v.user));
            }
            ServerEvent::ChElected(e) => {
                if let Some(other) = self.elected.insert(e.election, e.leader).filter(|l| *l != e.leader) {
                    return Err(format!("election {} elected {other} and {}", e.election, e.leader));
                }
                let Some(b) = self.ballots.get(&e.election) else {
                    return Err(format!("{} elected in {} without a ballot", e.leader, e.election));
                };
                if b.candidate != e.leader || b.yes.len() * 2 <= b.voters.len() {
                    return Err(format!("{} elected in {} without a strict majority: {b:?}", e.leader, e.election));
                }
                seen.elections += 1;
            }
            ServerEvent::ChMsg(m) => {
                self.received.entry(to).or_default().insert(m.msg_id);
            }
            ServerEvent::ChMsgAck(a) => {
                let heard = self.heard.entry(to).or_default().entry(a.id).or_default();
                heard.insert(a.user);
                heard.extend(a.users);
            }
            ServerEvent::ChMsgCommit(c) => {
                for id in std::iter::once(c.id).chain(c.ids) {
                    self.announce(to, id, commits, seen)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `id`'s commit announced to `to`: durable, in order, once.
    fn announce(
        &mut self,
        to: Ulid,
        id: Ulid,
        commits: &mut BTreeMap<Ulid, BTreeSet<Ulid>>,
        seen: &mut Seen,
    ) -> Result<(), Violation> {
        let Some(at) = self.durable_history.iter().position(|m| *m == id) else {
            return Err(format!("commit {id} announced before it was durable"));
        };
        let last = self.last_announced.entry(to).or_default();
        if at < *last {
            return Err(format!("commit {id} (position {}) announced to {to} after position {last}", at + 1));
        }
        *last = at + 1;
        if !self.told.insert((to, id)) {
            return Err(format!("commit {id} announced twice to {to}"));
        }
        commits.entry(id).or_default().insert(to);
        seen.announced += 1;
        Ok(())
    }

    /// What must hold in every state.
    fn check(&self) -> Result<(), Violation> {
        let c = &self.channel;
        let online: BTreeSet<Ulid> = self.sessions.iter().filter(|u| c.is_member(u)).copied().collect();
        if *c.online() != online {
            return Err(format!("the channel counts {:?} online, the sessions say {online:?}", c.online()));
        }
        if c.leader().is_some_and(|l| !c.online().contains(&l)) {
            return Err(format!("leader {:?} is not an online member", c.leader()));
        }
        Ok(())
    }
}

/// Two SipHashers over the same input, one of them keyed by a prefix: a
/// 128-bit state hash, so that no two of millions of states collide.
struct Twin(DefaultHasher, DefaultHasher);

impl Twin {
    fn new() -> Twin {
        let mut second = DefaultHasher::new();
        second.write_u64(0x9e37_79b9_7f4a_7c15);
        Twin(DefaultHasher::new(), second)
    }

    fn finish128(&self) -> u128 {
        u128::from(self.0.finish()) << 64 | u128::from(self.1.finish())
    }
}

impl Hasher for Twin {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// What one search found.
struct Search {
    /// Distinct states by the fewest actions that reach them (0: the start).
    layers: Vec<usize>,
    transitions: u64,
    seen: Seen,
}

/// Every state within `bounds.depth` actions of `start`, searched depth
/// first with a map from each state's hash to the fewest actions it was
/// reached in: a state reached again in no fewer is skipped, one reached in
/// fewer is searched again (it has more depth left), so every state is
/// searched from its shallowest depth, as a breadth-first search would, while
/// memory holds only the map (about 40 bytes a state) and one path. The first
/// violation comes back with its path (a shallower run finds a shorter one).
fn search(start: State, bounds: &Bounds) -> Result<Search, String> {
    let mut text = String::new();
    let mut visited: HashMap<u128, u8> = HashMap::from([(start.key(&mut text), 0)]);
    let mut found = Search { layers: Vec::new(), transitions: 0, seen: Seen::default() };
    let mut path = Vec::new();
    deepen(&start, bounds, &mut visited, &mut path, &mut text, &mut found)?;
    found.layers = vec![0; bounds.depth + 1];
    for &depth in visited.values() {
        found.layers[usize::from(depth)] += 1;
    }
    while found.layers.len() > 1 && found.layers.last() == Some(&0) {
        found.layers.pop();
    }
    Ok(found)
}

/// One level of [`search`]: the actions from `state`, at `path.len()` deep.
fn deepen(
    state: &State,
    bounds: &Bounds,
    visited: &mut HashMap<u128, u8>,
    path: &mut Vec<Action>,
    text: &mut String,
    found: &mut Search,
) -> Result<(), String> {
    if path.len() >= bounds.depth {
        return Ok(());
    }
    let depth = (path.len() + 1).min(usize::from(u8::MAX)) as u8;
    for action in state.actions(bounds) {
        let mut s = state.clone();
        found.transitions += 1;
        path.push(action);
        if let Err(violation) = s.apply(action, &mut found.seen) {
            return Err(format!("{violation}\nafter {path:?}"));
        }
        let key = s.key(text);
        if visited.get(&key).is_none_or(|&seen| seen > depth) {
            visited.insert(key, depth);
            deepen(&s, bounds, visited, path, text, found)?;
        }
        path.pop();
    }
    Ok(())
}

/// Searches from `start`, printing what it found; panics with the path on a violation.
fn check_from(name: &str, start: State, bounds: &Bounds) -> Search {
    let started = Instant::now();
    let found = search(start, bounds).unwrap_or_else(|e| panic!("model check from {name} ({bounds:?}): {e}"));
    let states: usize = found.layers.iter().sum();
    println!(
        "model check from {name}: 3 members, {bounds:?}: {states} distinct states (new per depth {:?}), \
         {} transitions, in {:.1} s; {} elections, {} commit announcements, {} refusals, \
         {} crashes after a commit; 0 violations",
        found.layers,
        found.transitions,
        started.elapsed().as_secs_f64(),
        found.seen.elections,
        found.seen.announced,
        found.seen.refused,
        found.seen.crashes_after_commit,
    );
    found
}

#[test]
fn every_interleaving_of_three_members_keeps_the_invariants() {
    // From a new channel: elections, sessions, a leave and a join.
    let bounds = Bounds::from_env(1);
    // One member offline at first, so that one can come online during an election.
    let fresh = check_from("a new channel", State::initial(&bounds, &[0, 1]), &bounds);
    assert!(fresh.seen.elections > 0, "no election within depth {}", bounds.depth);
    // From a channel that just elected its first leader (a reachable state):
    // the depth goes to messages, commits, the store and crashes (membership
    // changes too with SIGIL_MC_JOINS=1: five times the states).
    let bounds = Bounds::from_env(0);
    let mut led = State::initial(&bounds, &[0, 1, 2]);
    let mut seen = Seen::default();
    for action in [Action::Lead(0), Action::StoreAll, Action::Vote(1)] {
        led.apply(action, &mut seen).expect("the first election");
    }
    assert_eq!(led.channel.leader(), Some(user(0)));
    let led = check_from("an elected leader", led, &bounds);
    // It must reach what it checks: commits announced, and crashes after one.
    assert!(led.seen.announced > 0, "no commit within depth {}", bounds.depth);
    if bounds.depth >= DEFAULT_DEPTH {
        assert!(led.seen.crashes_after_commit > 0, "no crash after a commit within depth {}", bounds.depth);
    }
}

#[test]
fn the_checks_catch_what_a_broken_core_would_emit() {
    let mut seen = Seen::default();
    let s = State::initial(&Bounds::from_env(0), &[0, 1, 2]);
    let channel = Ulid::from(CHANNEL);
    let caught = |effect: ChannelEffect, s: &State| {
        let mut seen = Seen::default();
        s.clone().effects(vec![effect], &mut seen).expect_err("a violation")
    };
    // A commit announced that the store never made durable.
    let frame = Outbound::event(&ChMsgCommit { id: msg(0), channel, acks: vec![user(0)], ids: Vec::new() });
    let err = caught(ChannelEffect::Send { to: user(0), frame }, &s);
    assert!(err.contains("before it was durable"), "{err}");
    // A leader no ballot elected.
    let frame = Outbound::event(&ChElected { channel, election: 1, leader: user(1) });
    let err = caught(ChannelEffect::Send { to: user(0), frame }, &s);
    assert!(err.contains("without a ballot"), "{err}");
    // An append on acks nobody gave.
    let mut s = s;
    let everyone: BTreeSet<Ulid> = (0..3).map(user).collect();
    s.msgs.insert(msg(0), MsgRecord { from: user(0), recipients: everyone, real_acks: BTreeSet::new() });
    let entry = HistoryEntry {
        id: msg(0),
        from: user(0),
        msg: Body::text("m"),
        timestamp: START,
        acks: vec![user(0), user(2)],
    };
    let err = caught(ChannelEffect::Store(StoreOp::Append { channel, seq: 1, entry }), &s);
    assert!(err.contains("committed on"), "{err}");
    // And a state the search reaches by itself passes them.
    assert!(s.apply(Action::Lead(0), &mut seen).is_ok());
}
