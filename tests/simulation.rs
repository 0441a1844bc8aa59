//! Seeded simulation of channels (PROTOCOL.md §7, §8): the real `Relay` core
//! driven by random schedules with no I/O: 3 to 9 members who connect,
//! disconnect, join, leave, stand for election (concurrently, with good and bad
//! numbers), vote (honestly or not), send, ack, commit (as honest leaders, as
//! lying leaders, as non-leaders), merge made-up history, and a store that
//! flushes in batches and loses its unflushed batch when the server crashes
//! and restarts from what was durable.
//!
//! After every step it checks:
//! - §7 elections: at most one leader per election number, ever; a leader only
//!   with a strict majority of its election's voter snapshot.
//! - §7 commits: nothing enters history without a strict majority of the
//!   recipients' real acks (the sender's included).
//! - §8: the durable history is append-only and gapless; every announced
//!   commit stays in it, at its position, across restarts.
//! - §7: every member online when a commit is announced receives that
//!   `CH_MSG_COMMIT`, and nobody receives one twice.
//! - §7 merges: a merged message enters history only in the step where a
//!   member other than its merger, named in its acks, confirmed it.
//!
//! A failure prints its seed: rerun it with `SIGIL_SIM_SEED=<seed> cargo test
//! --test simulation`, adding `SIGIL_SIM_TRACE=1` to see every step.
//! `SIGIL_SIM_SEEDS=<n>` runs more schedules.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sigil_core::relay::{ConnId, Effect, IdSource, Input, Relay};
use sigil_core::{durable_marks, ChannelSnapshot, Limits, StoreOp};
use sigil_proto::command::MergedMessage;
use sigil_proto::event::HistoryEntry;
use sigil_proto::{Body, Command, Envelope, Request, ServerEvent};
use ulid::Ulid;

const STEPS: usize = 250;
const DEFAULT_SEEDS: u64 = 2000;

#[derive(Default, Debug)]
struct MsgRecord {
    from: Ulid,
    recipients: BTreeSet<Ulid>,
    real_acks: BTreeSet<Ulid>,
    /// For merged messages: the merger and the acks it claimed.
    merge: Option<(Ulid, BTreeSet<Ulid>)>,
}

#[derive(Debug)]
struct BallotRecord {
    candidate: Ulid,
    voters: BTreeSet<Ulid>,
    yes: BTreeSet<Ulid>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now: u64,
    limits: Limits,
    relay: Relay,
    users: Vec<Ulid>,
    conn_of: BTreeMap<Ulid, ConnId>,
    user_of: BTreeMap<ConnId, Ulid>,
    next_conn: u64,
    channel: Option<Ulid>,
    // The store: what is durable, and the batch not yet flushed.
    durable_created: bool,
    durable_name: String,
    durable_members: BTreeSet<Ulid>,
    durable_election: u64,
    durable_history: Vec<HistoryEntry>,
    queue: Vec<StoreOp>,
    // What clients saw.
    received_msgs: BTreeMap<Ulid, Vec<Ulid>>,
    acks_seen_by: BTreeMap<Ulid, BTreeMap<Ulid, BTreeSet<Ulid>>>,
    confirm_asks: BTreeMap<Ulid, Vec<Ulid>>,
    last_vote_request: Option<(u64, Ulid)>,
    // Ground truth for the invariants.
    members: BTreeSet<Ulid>,
    msgs: BTreeMap<Ulid, MsgRecord>,
    ballots: BTreeMap<u64, BallotRecord>,
    leaders: BTreeMap<u64, Ulid>,
    announced: Vec<Ulid>,
    commit_received: BTreeMap<(Ulid, Ulid), u32>,
    step_confirmations: Vec<(Ulid, Ulid)>,
    /// Appends the core decided in this step (durable only after a flush).
    step_appends: Vec<HistoryEntry>,
    /// The election a CH_LEAD just asked for, until the store makes it durable.
    lead_requests: BTreeMap<u64, (Ulid, BTreeSet<Ulid>)>,
    /// FNV-1a over every effect the relay produced, in order: two runs of one
    /// seed must agree on it (the core is deterministic).
    digest: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.gen_range(3..=9);
        let users: Vec<Ulid> = (0..n).map(|i| Ulid::from((seed as u128) << 64 | (i as u128 + 1))).collect();
        let mut limits = Limits { min_online: rng.gen_range(1..=2), pending_ttl_s: 30, ..Limits::default() };
        limits.max_pending = 64;
        limits.max_merges = 16;
        let now = 1_800_000_000;
        let relay = Relay::new(limits.clone(), now, IdSource::counter(1 << 100));
        let mut sim = Sim {
            seed,
            rng,
            now,
            limits,
            relay,
            users,
            conn_of: BTreeMap::new(),
            user_of: BTreeMap::new(),
            next_conn: 0,
            channel: None,
            durable_created: false,
            durable_name: String::new(),
            durable_members: BTreeSet::new(),
            durable_election: 0,
            durable_history: Vec::new(),
            queue: Vec::new(),
            received_msgs: BTreeMap::new(),
            acks_seen_by: BTreeMap::new(),
            confirm_asks: BTreeMap::new(),
            last_vote_request: None,
            members: BTreeSet::new(),
            msgs: BTreeMap::new(),
            ballots: BTreeMap::new(),
            leaders: BTreeMap::new(),
            announced: Vec::new(),
            commit_received: BTreeMap::new(),
            step_confirmations: Vec::new(),
            step_appends: Vec::new(),
            lead_requests: BTreeMap::new(),
            digest: 0xcbf2_9ce4_8422_2325,
        };
        sim.add_accounts();
        sim
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if std::env::var("SIGIL_SIM_TRACE").is_ok() {
            eprintln!("[{}] {}", self.now, what());
        }
    }

    fn fail(&self, what: String) -> ! {
        if let Some(c) = self.channel.and_then(|id| self.relay.channel(&id)) {
            eprintln!("server view: members {:?} online {:?} leader {:?}", c.members(), c.online(), c.leader());
        }
        eprintln!("sim view: members {:?} online {:?}", self.members, self.online());
        panic!(
            "simulation seed {} failed: {what}\nrerun: SIGIL_SIM_SEED={} cargo test --test simulation",
            self.seed, self.seed
        )
    }

    fn add_accounts(&mut self) {
        for (i, &id) in self.users.clone().iter().enumerate() {
            let input = Input::AccountUpserted { id, name: format!("user{i}"), key_rev: 1 };
            self.step_input(input);
        }
    }

    fn online(&self) -> BTreeSet<Ulid> {
        self.conn_of.keys().copied().collect()
    }

    fn online_members(&self) -> BTreeSet<Ulid> {
        self.online().intersection(&self.members).copied().collect()
    }

    /// Feeds one input and processes every effect it causes.
    fn step_input(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.relay.step(input, self.now, &mut out);
        for byte in format!("{out:?}").bytes() {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        let effects = out.clone();
        let mut commit_recipients: BTreeMap<Ulid, BTreeSet<Ulid>> = BTreeMap::new();
        for effect in out {
            match effect {
                Effect::Send { conn, frame } => {
                    let Some(&user) = self.user_of.get(&conn) else {
                        self.fail(format!("frame {} to unknown conn {conn:?}", frame.command))
                    };
                    let ev = ServerEvent::decode(frame.command, &frame.payload)
                        .unwrap_or_else(|e| self.fail(format!("undecodable {}: {e}", frame.command)));
                    self.observe(user, ev, &mut commit_recipients);
                }
                Effect::Close { conn, .. } => {
                    if let Some(user) = self.user_of.remove(&conn) {
                        self.conn_of.remove(&user);
                    }
                }
                Effect::Store(op) => {
                    if let StoreOp::Append { entry, .. } = &op {
                        self.step_appends.push(entry.clone());
                    }
                    self.queue.push(op);
                }
                Effect::Pull(sigil_core::PullRequest { conn, channel, anchor, after_seq, limit, .. }) => {
                    let entries: Vec<HistoryEntry> =
                        self.durable_history.iter().skip(after_seq as usize).take(limit).cloned().collect();
                    let more = self.durable_history.len() > after_seq as usize + entries.len();
                    self.step_input(Input::Pulled { conn, channel, anchor, entries, more });
                }
            }
        }
        // Invariant: every member online at an announced commit received it.
        for (msg, got) in commit_recipients {
            let online = self.online_members();
            if got != online {
                self.fail(format!("CH_MSG_COMMIT {msg} went to {got:?}, online members were {online:?}"));
            }
        }
        effects
    }

    fn observe(&mut self, user: Ulid, ev: ServerEvent, commit_recipients: &mut BTreeMap<Ulid, BTreeSet<Ulid>>) {
        match ev {
            ServerEvent::ChUjoin(u) if u.user == user => {
                self.channel = Some(u.channel);
            }
            ServerEvent::ChVote(v) => {
                self.last_vote_request = Some((v.election, v.user));
                // The election started: its voters are who was online at its CH_LEAD.
                if !self.ballots.contains_key(&v.election) {
                    let Some((candidate, voters)) = self.lead_requests.remove(&v.election) else {
                        self.fail(format!("vote request for election {} nobody asked for", v.election))
                    };
                    if candidate != v.user {
                        self.fail(format!("election {} asked by {candidate}, announced for {}", v.election, v.user));
                    }
                    self.ballots
                        .insert(v.election, BallotRecord { candidate, voters, yes: BTreeSet::from([candidate]) });
                }
            }
            ServerEvent::ChElected(e) => {
                self.trace(|| format!("observed {e:?}"));
                if let Some(&other) = self.leaders.get(&e.election) {
                    if other != e.leader {
                        self.fail(format!("election {} elected {other} and {}", e.election, e.leader));
                    }
                }
                self.leaders.insert(e.election, e.leader);
                let Some(b) = self.ballots.get(&e.election) else { self.fail(format!("leader without ballot {e:?}")) };
                if b.candidate != e.leader || b.yes.len() * 2 <= b.voters.len() {
                    self.fail(format!("{} elected in {} without a strict majority: {b:?}", e.leader, e.election));
                }
            }
            ServerEvent::ChMsg(m) => self.received_msgs.entry(user).or_default().push(m.msg_id),
            ServerEvent::ChMsgAck(a) => {
                if !a.ids.is_empty() && !self.batch_of(user) {
                    self.fail(format!("{user} did not ask for batches but got {a:?}"));
                }
                // Each of `user` and `users` acked each of `id` and `ids` (§7.9).
                for id in std::iter::once(a.id).chain(a.ids) {
                    let seen = self.acks_seen_by.entry(user).or_default().entry(id).or_default();
                    seen.insert(a.user);
                    seen.extend(a.users.iter().copied());
                }
            }
            ServerEvent::ChMsgCommit(c) => {
                if !c.ids.is_empty() && !self.batch_of(user) {
                    self.fail(format!("{user} did not ask for batches but got {c:?}"));
                }
                // A batch lists consecutive commits in commit order.
                for id in std::iter::once(c.id).chain(c.ids) {
                    *self.commit_received.entry((id, user)).or_default() += 1;
                    if self.commit_received[&(id, user)] > 1 {
                        self.fail(format!("{user} received CH_MSG_COMMIT {id} twice"));
                    }
                    commit_recipients.entry(id).or_default().insert(user);
                    if !self.announced.contains(&id) {
                        self.announced.push(id);
                    }
                }
            }
            ServerEvent::ChAppend(a) if !a.more && a.messages.len() == 1 => {
                // Announcement of a confirmed merge (or a one-message pull page).
                let id = a.messages[0].id;
                if self.msgs.get(&id).is_some_and(|m| m.merge.is_some()) && !self.announced.contains(&id) {
                    self.announced.push(id);
                }
            }
            ServerEvent::ChMsgConfirm(c) => self.confirm_asks.entry(user).or_default().push(c.message),
            _ => {}
        }
    }

    /// Sends a command as `user`; returns whether it was accepted (no ERR with its nonce).
    fn send(&mut self, user: Ulid, command: Command) -> bool {
        let Some(&conn) = self.conn_of.get(&user) else { return false };
        let nonce: u64 = self.rng.gen();
        let trace = format!("{:?}", command);
        let request = Request { envelope: Envelope { nonce, timestamp: self.now }, command };
        let effects = self.step_input(Input::Request { conn, request });
        let accepted = !effects.iter().any(|e| match e {
            Effect::Send { conn: c, frame } if *c == conn && frame.command == "ERR" => {
                matches!(ServerEvent::decode("ERR", &frame.payload), Ok(ServerEvent::Err(p)) if p.nonce_ref == Some(nonce))
            }
            _ => false,
        });
        self.trace(|| format!("{user} {trace} -> {}", if accepted { "ok" } else { "refused" }));
        accepted
    }

    /// Every other user's sessions take batched frames (PROTOCOL.md §7.9).
    fn batch_of(&self, user: Ulid) -> bool {
        self.users.iter().position(|u| *u == user).is_some_and(|i| i % 2 == 0)
    }

    fn connect(&mut self, user: Ulid) {
        if self.conn_of.contains_key(&user) {
            return;
        }
        self.trace(|| format!("{user} connects"));
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conn_of.insert(user, conn);
        self.user_of.insert(conn, user);
        let envelope = Envelope { nonce: self.rng.gen(), timestamp: self.now };
        let batch = self.batch_of(user);
        self.step_input(Input::Open { conn, account: user, key_rev: 1, envelope, batch, bind: false });
    }

    fn disconnect(&mut self, user: Ulid) {
        self.trace(|| format!("{user} disconnects"));
        if let Some(conn) = self.conn_of.remove(&user) {
            self.step_input(Input::Closed { conn });
            self.user_of.remove(&conn);
        }
    }

    /// The store commits its batch, then tells the core what is durable.
    fn flush(&mut self) {
        let ops = std::mem::take(&mut self.queue);
        self.trace(|| format!("flush {ops:?}"));
        let reported = durable_marks(&ops);
        for op in ops {
            match op {
                StoreOp::CreateChannel { name, creator, .. } => {
                    self.durable_created = true;
                    self.durable_name = name;
                    self.durable_members.insert(creator);
                }
                StoreOp::AddMember { user, .. } => {
                    self.durable_members.insert(user);
                }
                StoreOp::RemoveMember { user, .. } => {
                    self.durable_members.remove(&user);
                }
                StoreOp::SetElection { election, .. } => {
                    self.durable_election = self.durable_election.max(election);
                }
                StoreOp::Append { seq, entry, .. } => {
                    // Invariant: append-only and gapless.
                    if seq != self.durable_history.len() as u64 + 1 {
                        self.fail(format!("append at {seq} onto a history of {}", self.durable_history.len()));
                    }
                    // As the store's UNIQUE (channel, msg_id) would: a duplicate stops the server.
                    if self.durable_history.iter().any(|e| e.id == entry.id) {
                        self.fail(format!("{} appended twice", entry.id));
                    }
                    if i64::try_from(entry.timestamp).is_err() {
                        self.fail(format!("{} has a timestamp the store cannot hold", entry.id));
                    }
                    self.durable_history.push(entry);
                }
            }
        }
        for (channel, (seq, election)) in reported {
            self.step_input(Input::Stored { channel, seq, election });
        }
    }

    /// The server crashes: the unflushed batch is lost, everyone is disconnected,
    /// and a new core starts from the durable state.
    fn crash_and_restart(&mut self) {
        self.trace(|| format!("crash, losing {:?}", self.queue));
        self.queue.clear();
        self.conn_of.clear();
        self.user_of.clear();
        self.now += 2;
        // Ids made after a restart must not reuse those made before it: start from the time.
        self.relay = Relay::new(self.limits.clone(), self.now, IdSource::counter(u128::from(self.now) << 64));
        self.now += 1;
        self.add_accounts();
        self.members = self.durable_members.clone();
        if let (true, Some(id)) = (self.durable_created, self.channel) {
            let history = self.durable_history.iter().enumerate().map(|(i, e)| (e.id, i as u64 + 1)).collect();
            self.relay.restore_channel(ChannelSnapshot {
                id,
                name: self.durable_name.clone(),
                members: self.durable_members.clone(),
                election: self.durable_election,
                history,
            });
        } else {
            self.channel = None;
            self.members.clear();
        }
        self.ballots.clear();
        self.lead_requests.clear();
        self.last_vote_request = None;
        self.received_msgs.clear();
        self.acks_seen_by.clear();
        self.confirm_asks.clear();
    }

    /// Checks the durable history against what was announced, and what the
    /// core decided to append in this step against the acks and confirmations.
    fn check_history(&self) {
        // Announced messages are durable, in the order they were announced
        // (a commit announced while nobody was online has no witness here).
        let position: BTreeMap<Ulid, usize> = self.durable_history.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
        let mut last = None;
        for id in &self.announced {
            let Some(&at) = position.get(id) else {
                self.fail(format!("announced {id} is not in the durable history"))
            };
            if last.is_some_and(|l| at <= l) {
                self.fail(format!("announced {id} is out of order in the durable history"));
            }
            last = Some(at);
        }
        for entry in &self.step_appends {
            let Some(rec) = self.msgs.get(&entry.id) else { self.fail(format!("unknown message {} stored", entry.id)) };
            match &rec.merge {
                None => {
                    let real: BTreeSet<Ulid> = rec.real_acks.iter().copied().chain([rec.from]).collect();
                    let acks: BTreeSet<Ulid> = entry.acks.iter().copied().collect();
                    if !acks.is_subset(&real) || acks.len() * 2 <= rec.recipients.len() {
                        self.fail(format!(
                            "{} committed on acks {acks:?}; real {real:?} of {:?}",
                            entry.id, rec.recipients
                        ));
                    }
                }
                Some((merger, claimed)) => {
                    let ok = self
                        .step_confirmations
                        .iter()
                        .any(|(u, m)| *m == entry.id && u != merger && claimed.contains(u));
                    if !ok {
                        self.fail(format!("merged {} entered history without a confirmation", entry.id));
                    }
                }
            }
        }
    }

    /// A message id from a small pool, so ids collide: new ones, ones the
    /// server has pending, merging, committed, or lost in a crash.
    fn pick_msg_id(&mut self) -> Ulid {
        Ulid::from((self.seed as u128) << 64 | self.rng.gen_range(1_000..1_300u128))
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        items.choose(&mut self.rng).cloned()
    }

    fn random_step(&mut self) {
        let online: Vec<Ulid> = self.online().into_iter().collect();
        let members: Vec<Ulid> = self.online_members().into_iter().collect();
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=9 => {
                let u = self.users[self.rng.gen_range(0..self.users.len())];
                self.connect(u);
            }
            10..=13 => {
                if let Some(u) = self.pick(&online) {
                    self.disconnect(u);
                }
            }
            14..=19 => {
                let Some(u) = self.pick(&online) else { return };
                match self.channel {
                    None => {
                        if self.send(u, Command::ChNew { name: "general".into() }) {
                            self.members.insert(u);
                        }
                    }
                    Some(id) => {
                        if self.send(u, Command::ChJoin { id }) {
                            self.members.insert(u);
                        }
                    }
                }
            }
            20 => {
                let (Some(u), Some(id)) = (self.pick(&members), self.channel) else { return };
                if self.send(u, Command::ChLeave { id }) {
                    self.members.remove(&u);
                }
            }
            21..=27 => {
                let (Some(u), Some(channel)) = (self.pick(&members), self.channel) else { return };
                let base = self.relay.channel(&channel).map_or(0, |c| c.election());
                let election = match self.rng.gen_range(0..10) {
                    0 => base,
                    1 => base.saturating_sub(1),
                    _ => base + self.rng.gen_range(1..3),
                };
                let voters = self.online_members();
                self.trace(|| {
                    let server = self.relay.channel(&channel).map(|c| c.online().clone());
                    format!("before CH_LEAD: sim voters {voters:?}, server online {server:?}")
                });
                if self.send(u, Command::ChLead { channel, election }) {
                    self.lead_requests.insert(election, (u, voters));
                }
            }
            28..=39 => {
                let (Some(u), Some(channel)) = (self.pick(&members), self.channel) else { return };
                let honest = self.rng.gen_bool(0.85);
                let (election, candidate) = match (honest, self.last_vote_request) {
                    (true, Some(v)) => v,
                    _ => (self.rng.gen_range(0..5), self.users[self.rng.gen_range(0..self.users.len())]),
                };
                // Counted before sending: the server may elect within this very step.
                let counted = self
                    .ballots
                    .get_mut(&election)
                    .is_some_and(|b| b.voters.contains(&u) && b.candidate == candidate && b.yes.insert(u));
                if !self.send(u, Command::ChVote { channel, election, user: candidate }) && counted {
                    if let Some(b) = self.ballots.get_mut(&election) {
                        b.yes.remove(&u);
                    }
                }
            }
            40..=51 => {
                let (Some(u), Some(id)) = (self.pick(&members), self.channel) else { return };
                let msg_id = self.pick_msg_id();
                let recipients = self.online_members();
                if self.send(u, Command::ChMsg { id, msg_id, msg: Body::text("m") }) {
                    // Reusing an id that expired or was lost in a crash is fine; a committed one is not.
                    if self.durable_history.iter().any(|e| e.id == msg_id) {
                        self.fail(format!("CH_MSG accepted {msg_id}, which is committed"));
                    }
                    self.msgs.insert(msg_id, MsgRecord { from: u, recipients, ..MsgRecord::default() });
                }
            }
            52..=65 => {
                // Someone acks a message it received (or, now and then, one it did not).
                let Some(u) = self.pick(&online) else { return };
                let got = self.received_msgs.get(&u).cloned().unwrap_or_default();
                let id = match (self.pick(&got), self.rng.gen_bool(0.9)) {
                    (Some(id), true) => id,
                    _ => match self.msgs.keys().next().copied() {
                        Some(id) => id,
                        None => return,
                    },
                };
                // Now and then several in one frame (batching, §7.9).
                let more: Vec<Ulid> = match self.rng.gen_bool(0.3) {
                    true => {
                        let n = self.rng.gen_range(1..=3);
                        got.choose_multiple(&mut self.rng, n).copied().filter(|m| *m != id).collect()
                    }
                    false => Vec::new(),
                };
                let accepted = self.send(u, Command::AckChMsg { id, ids: more.clone() });
                // In a batch every id is tried, whatever happens to the others.
                if accepted || !more.is_empty() {
                    for id in std::iter::once(id).chain(more) {
                        if let Some(r) = self.msgs.get_mut(&id) {
                            if r.merge.is_none() && r.recipients.contains(&u) {
                                r.real_acks.insert(u);
                            }
                        }
                        if self.msgs.get(&id).is_some_and(|r| r.merge.is_some()) {
                            self.step_confirmations.push((u, id));
                        }
                    }
                }
            }
            66..=77 => {
                // A commit: by the leader (honest or lying) or by anyone.
                let Some(channel) = self.channel else { return };
                let leader = self.relay.channel(&channel).and_then(|c| c.leader());
                let by = match (leader, self.rng.gen_bool(0.8)) {
                    (Some(l), true) => l,
                    _ => match self.pick(&members) {
                        Some(u) => u,
                        None => return,
                    },
                };
                let seen = self.acks_seen_by.get(&by).cloned().unwrap_or_default();
                let candidates: Vec<Ulid> = self.msgs.keys().copied().collect();
                let Some(id) = self.pick(&candidates) else { return };
                let acks: Vec<Ulid> = if self.rng.gen_bool(0.7) {
                    let from = self.msgs[&id].from;
                    seen.get(&id).into_iter().flatten().copied().chain([from, by]).collect()
                } else {
                    let n = self.rng.gen_range(0..=self.users.len());
                    self.users.choose_multiple(&mut self.rng, n).copied().collect()
                };
                // Now and then more messages with the same acks (batching, §7.9).
                let ids = match self.rng.gen_bool(0.3) {
                    true => candidates.choose_multiple(&mut self.rng, 2).copied().filter(|m| *m != id).collect(),
                    false => Vec::new(),
                };
                self.send(by, Command::ChCommit { id, acks, ids });
            }
            78..=81 => {
                // A member merges made-up history, claiming random acks.
                let (Some(u), Some(id)) = (self.pick(&members), self.channel) else { return };
                let n = self.rng.gen_range(0..=self.users.len());
                let claimed: Vec<Ulid> = self.users.choose_multiple(&mut self.rng, n).copied().collect();
                let msg_id = self.pick_msg_id();
                // Now and then a timestamp the store could not hold.
                let timestamp = if self.rng.gen_bool(0.1) { u64::MAX - self.rng.gen_range(0..2) } else { self.now };
                let entry =
                    MergedMessage { id: msg_id, from: u, timestamp, msg: Body::text("old"), acks: claimed.clone() };
                let was_live = self.relay.channel(&id).is_some_and(|c| c.is_live(&msg_id));
                self.send(u, Command::ChMerge { id, msg: vec![entry] });
                // Only a merge the channel took awaits confirmation; known ids are skipped.
                if !was_live && self.relay.channel(&id).is_some_and(|c| c.has_merge(&msg_id)) {
                    let claimed = claimed.into_iter().collect();
                    self.msgs.insert(msg_id, MsgRecord { from: u, merge: Some((u, claimed)), ..MsgRecord::default() });
                }
            }
            82..=85 => {
                // Someone asked to confirm a merge does so.
                let asked: Vec<(Ulid, Ulid)> =
                    self.confirm_asks.iter().flat_map(|(u, ms)| ms.iter().map(move |m| (*u, *m))).collect();
                let Some((u, id)) = self.pick(&asked) else { return };
                if self.send(u, Command::AckChMsg { id, ids: Vec::new() }) {
                    self.step_confirmations.push((u, id));
                }
            }
            86..=93 => {
                // The shell's inbox ran empty: gathered acks go out; and the store flushes.
                if self.rng.gen_bool(0.5) {
                    self.step_input(Input::Flush);
                }
                self.flush();
            }
            94..=96 => {
                self.now += self.rng.gen_range(1..20);
                self.step_input(Input::Tick);
            }
            97 => {
                let (Some(u), Some(channel)) = (self.pick(&members), self.channel) else { return };
                let anchor = self.durable_history.first().map(|e| e.id);
                let _ = self.send(u, Command::ChPull { id: channel, anchor });
            }
            _ => self.crash_and_restart(),
        }
        self.check_history();
        self.step_confirmations.clear();
        self.step_appends.clear();
    }
}

/// Runs seed `seed`: its commits and elections, and the digest of every
/// effect the relay produced.
fn run(seed: u64) -> (usize, usize, u64) {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.random_step();
    }
    // Settle: flush what is queued and check once more.
    sim.flush();
    sim.check_history();
    (sim.announced.len(), sim.leaders.len(), sim.digest)
}

#[test]
fn one_seed_gives_one_run_bit_for_bit() {
    for seed in 1..=40 {
        let (first, second) = (run(seed).2, run(seed).2);
        assert_eq!(first, second, "seed {seed}: two runs produced different effects");
    }
    assert_ne!(run(1).2, run(2).2, "the digest depends on the run");
}

#[test]
fn thousands_of_schedules_keep_the_invariants() {
    let seeds: Vec<u64> = match std::env::var("SIGIL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIGIL_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SIGIL_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEEDS);
            (1..=n).collect()
        }
    };
    let (mut commits, mut elections) = (0, 0);
    for seed in seeds.iter().copied() {
        let (c, e, _) = run(seed);
        commits += c;
        elections += e;
    }
    // The schedules must exercise what they check.
    assert!(commits >= seeds.len() / 4, "only {commits} commits over {} seeds", seeds.len());
    assert!(elections >= seeds.len() / 2, "only {elections} elections over {} seeds", seeds.len());
}
