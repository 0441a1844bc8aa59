//! The scenarios against sigil itself, through the crate's client library:
//! channel fan-out with acks and commits as the protocol requires, private
//! messages with acks, connect + CNN, and idle sessions.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use super::stats::{gather, read_stamp, settle, write_message, Clock, Errors, Progress, Recorder, Stamp};
use super::{BenchError, FanoutParams, LoadShape, Measured};
use rmpv::ValueRef;
use sigil_client::agent::{batched_acks, batched_commits, MAX_IDS_PER_FRAME};
use sigil_client::{Client, ClientReader, ClientWriter, ConnectOptions, Credentials};
use sigil_proto::quorum::{is_majority, smallest_majority};
use sigil_proto::wire::Frame;
use sigil_proto::{Body, Command, ServerEvent};

/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;
/// Events handled before pending writes are flushed, so a busy socket still gets its acks out.
const EVENTS_PER_FLUSH: usize = 256;
/// How long setup steps (channel, election) may take.
const SETUP_LIMIT: Duration = Duration::from_secs(60);

fn setup_err(what: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(what.to_string())
}

/// Connects and authenticates every account, `CONNECT_CONCURRENCY` at a time.
pub async fn connect_all(addr: SocketAddr, creds: &[Credentials], batch: bool) -> Result<Vec<Client>, BenchError> {
    let options = ConnectOptions { batch, ..ConnectOptions::default() };
    let clients: Vec<Result<Client, _>> = futures_util::stream::iter(creds.iter().cloned())
        .map(|cred| async move { Client::connect_with(addr, &cred, options).await })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    clients.into_iter().map(|c| c.map_err(|e| setup_err(format!("connect: {e}")))).collect()
}

/// Reads events until `pick` returns something, within `SETUP_LIMIT`.
async fn wait_for<T>(
    client: &mut Client,
    mut pick: impl FnMut(ServerEvent) -> Option<Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(SETUP_LIMIT, async {
        loop {
            match client.recv().await {
                Ok(Some(ev)) => {
                    if let Some(t) = pick(ev) {
                        return t;
                    }
                }
                Ok(None) => return Err(setup_err("server closed during setup")),
                Err(e) => return Err(setup_err(e)),
            }
        }
    })
    .await
    .map_err(|_| setup_err("setup timed out"))?
}

/// Shared state of a fan-out run.
struct Run {
    clock: Clock,
    progress: Arc<Progress>,
    /// Messages sent and not yet committed, over all publishers.
    inflight: AtomicI64,
    /// Messages sent.
    sent: AtomicU64,
    /// `ERR` frames received.
    errors: Errors,
    /// Publishing stops.
    publish_end: CancellationToken,
    /// Everything stops.
    stop: CancellationToken,
}

/// A message the leader tracks until it commits it.
struct Pending {
    recipients: u64,
    acks: BTreeSet<Ulid>,
}

/// One member connection's task.
struct Member {
    me: Ulid,
    channel: Ulid,
    leader: bool,
    /// Publisher number, for publishers.
    publisher: Option<u16>,
    params: FanoutParams,
    reader: ClientReader,
    writer: ClientWriter,
    rec: Recorder,
    run: Arc<Run>,
    /// Own messages not yet committed: msg_id → send time.
    own: HashMap<Ulid, u64>,
    seq: u32,
    /// Leader only: messages awaiting a majority.
    pending: HashMap<Ulid, Pending>,
    to_ack: Vec<Ulid>,
    /// When the oldest of `to_ack` arrived (ns), for the ack delay.
    to_ack_since: Option<u64>,
    /// Leader only: messages with a majority, to commit at the next flush.
    ready: Vec<Ulid>,
    body: Vec<u8>,
}

impl Member {
    fn on_event(&mut self, ev: ServerEvent, go: &watch::Sender<bool>, online: &mut u64, elected: &mut bool) {
        let now = self.run.clock.now_ns();
        match ev {
            ServerEvent::ChMsg(m) if m.id == self.channel => {
                self.delivered(m.msg_id, read_stamp(&m.msg.bytes), m.from, m.recipients, now)
            }
            ServerEvent::ChMsgAck(a) if self.leader => {
                // Each of `user` and `users` acked each of `id` and `ids` (§7.9).
                for id in std::iter::once(a.id).chain(a.ids) {
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.acks.insert(a.user);
                        p.acks.extend(a.users.iter().copied());
                        self.try_commit(id);
                    }
                }
            }
            ServerEvent::ChMsgCommit(c) => {
                for id in std::iter::once(c.id).chain(c.ids) {
                    if let Some(sent) = self.own.remove(&id) {
                        self.rec.completed(sent, now);
                        self.run.progress.complete();
                        self.run.inflight.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            ServerEvent::ChVote(v) if v.user != self.me => {
                self.writer.queue(Command::ChVote { channel: v.channel, election: v.election, user: v.user });
            }
            ServerEvent::ChElected(e) if self.leader && e.channel == self.channel => {
                *elected = e.leader == self.me;
                let _ = go.send(*elected && *online >= self.params.members as u64);
            }
            ServerEvent::ChStatus(s) if self.leader && s.id == self.channel => {
                *online = s.online;
                let _ = go.send(*elected && *online >= self.params.members as u64);
            }
            ServerEvent::Err(e) => self.run.errors.record(format!("member got ERR {} ({})", e.code, e.reason)),
            _ => {}
        }
    }

    /// A `CH_MSG` of the channel arrived.
    fn delivered(&mut self, msg_id: Ulid, stamp: Option<Stamp>, from: Ulid, recipients: u64, now: u64) {
        self.rec.stamped(stamp, now);
        self.run.progress.delivered();
        if from != self.me {
            self.to_ack.push(msg_id);
            self.to_ack_since.get_or_insert(now);
        }
        if self.leader {
            let acks = BTreeSet::from([from, self.me]);
            self.pending.insert(msg_id, Pending { recipients, acks });
            self.try_commit(msg_id);
        }
    }

    /// One frame: a `CH_MSG` (nearly every frame) is read field by field
    /// without building the event, so the generator's CPU goes to the load.
    fn on_frame(&mut self, frame: Frame, go: &watch::Sender<bool>, online: &mut u64, elected: &mut bool) {
        if frame.command.as_str() == "CH_MSG" {
            if let Some(m) = ChMsgFields::read(&frame.payload) {
                let now = self.run.clock.now_ns();
                return self.delivered(m.msg_id, m.stamp, m.from, m.recipients, now);
            }
        }
        match ServerEvent::decode(frame.command.as_str(), &frame.payload) {
            Ok(ev) => self.on_event(ev, go, online, elected),
            Err(e) => self.run.errors.record(e),
        }
    }

    /// Leader: a message is ready once a strict majority of its recipients acked.
    fn try_commit(&mut self, id: Ulid) {
        let Some(p) = self.pending.get(&id) else { return };
        if is_majority(p.acks.len(), p.recipients as usize) && !self.ready.contains(&id) {
            self.ready.push(id);
        }
    }

    /// Queues the acks and commits gathered since the last flush, batched
    /// as the reference client does (PROTOCOL.md §7.9) unless told not to.
    fn queue_acks_and_commits(&mut self) {
        // Acks may wait up to the ack delay, gathering more (like TCP's delayed ACK).
        if self.ack_wait().is_some_and(|w| !w.is_zero()) {
            return self.queue_commits();
        }
        self.to_ack_since = None;
        if self.params.batch {
            for command in batched_acks(&self.to_ack) {
                self.writer.queue(command);
            }
        } else {
            for &id in &self.to_ack {
                self.writer.queue(Command::AckChMsg { id, ids: Vec::new() });
            }
        }
        self.to_ack.clear();
        self.queue_commits();
    }

    /// How long the pending acks may still wait (`None`: there are none).
    fn ack_wait(&self) -> Option<Duration> {
        let since = self.to_ack_since?;
        // A commit names our own ack, so it must not overtake it.
        if !self.ready.is_empty() || self.to_ack.len() >= MAX_IDS_PER_FRAME || self.run.publish_end.is_cancelled() {
            return Some(Duration::ZERO);
        }
        let due = since + self.params.ack_delay.as_nanos() as u64;
        Some(Duration::from_nanos(due.saturating_sub(self.run.clock.now_ns())))
    }

    /// Queues the commits gathered since the last flush.
    fn queue_commits(&mut self) {
        let ready: Vec<(Ulid, usize, BTreeSet<Ulid>)> = self
            .ready
            .drain(..)
            .filter_map(|id| self.pending.remove(&id).map(|p| (id, smallest_majority(p.recipients as usize), p.acks)))
            .collect();
        if self.params.batch {
            for command in batched_commits(&ready) {
                self.writer.queue(command);
            }
        } else {
            for (id, need, acks) in ready {
                self.writer.queue(Command::ChCommit {
                    id,
                    acks: acks.into_iter().take(need).collect(),
                    ids: Vec::new(),
                });
            }
        }
    }

    /// Publishes what the load shape allows now.
    fn publish(&mut self, started_ns: u64) {
        let Some(publisher) = self.publisher else { return };
        if self.run.publish_end.is_cancelled() {
            return;
        }
        let now = self.run.clock.now_ns();
        let room = self.params.window.saturating_sub(self.own.len());
        let (count, spacing) = match self.params.shape {
            LoadShape::Closed => (room, 0),
            LoadShape::Open { messages_per_s } => {
                let due = ((now.saturating_sub(started_ns)) as f64 * messages_per_s / 1e9) as u64;
                (due.saturating_sub(self.seq as u64).min(room as u64) as usize, (1e9 / messages_per_s) as u64)
            }
        };
        for _ in 0..count {
            // Open loop: stamped with the scheduled time, so a late send counts as latency.
            let sent = match spacing {
                0 => now,
                s => started_ns + self.seq as u64 * s,
            };
            write_message(&mut self.body, self.params.size, sent, publisher, self.seq);
            self.seq += 1;
            let msg_id = Ulid::new();
            self.own.insert(msg_id, sent);
            self.writer.queue(Command::ChMsg {
                id: self.channel,
                msg_id,
                msg: Body::text(String::from_utf8_lossy(&self.body).into_owned()),
            });
            self.run.sent.fetch_add(1, Ordering::Relaxed);
            self.run.inflight.fetch_add(1, Ordering::AcqRel);
        }
    }

    async fn run(mut self, go: watch::Sender<bool>, mut go_rx: watch::Receiver<bool>) -> Recorder {
        let (mut online, mut elected) = (self.params.members as u64, false);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut started_ns = None;
        loop {
            if *go_rx.borrow() {
                let started = *started_ns.get_or_insert_with(|| self.run.clock.now_ns());
                self.publish(started);
            }
            self.queue_acks_and_commits();
            if self.writer.flush().await.is_err() {
                break;
            }
            let open = matches!(self.params.shape, LoadShape::Open { .. }) && self.publisher.is_some();
            let ack_wait = self.ack_wait();
            let ev = tokio::select! {
                biased;
                _ = self.run.stop.cancelled() => break,
                ev = self.reader.recv_frame() => ev,
                _ = tokio::time::sleep(ack_wait.unwrap_or_default()), if ack_wait.is_some() => continue,
                _ = go_rx.changed(), if started_ns.is_none() => continue,
                _ = tick.tick(), if open && started_ns.is_some() && !self.run.publish_end.is_cancelled() => continue,
            };
            let Ok(Some(frame)) = ev else { break };
            self.on_frame(frame, &go, &mut online, &mut elected);
            // Handle what is already buffered before writing once for all of it.
            for _ in 0..EVENTS_PER_FLUSH {
                match self.reader.recv_frame().now_or_never() {
                    Some(Ok(Some(frame))) => self.on_frame(frame, &go, &mut online, &mut elected),
                    _ => break,
                }
            }
        }
        self.rec
    }
}

/// The fields of a server `CH_MSG` the generator uses.
struct ChMsgFields {
    msg_id: Ulid,
    stamp: Option<Stamp>,
    from: Ulid,
    recipients: u64,
}

impl ChMsgFields {
    fn read(payload: &[u8]) -> Option<Self> {
        let ValueRef::Map(pairs) = rmpv::decode::read_value_ref(&mut &payload[..]).ok()? else { return None };
        let (mut msg_id, mut stamp, mut from, mut recipients) = (None, None, None, 0);
        let id = |v: &ValueRef<'_>| match v {
            ValueRef::String(s) => s.as_str().and_then(|s| Ulid::from_string(s).ok()),
            _ => None,
        };
        for (k, v) in &pairs {
            let ValueRef::String(k) = k else { return None };
            match k.as_bytes() {
                b"msg_id" => msg_id = id(v),
                b"from" => from = id(v),
                b"recipients" => recipients = v.as_u64()?,
                b"msg" => {
                    stamp = match v {
                        ValueRef::String(s) => read_stamp(s.as_bytes()),
                        ValueRef::Binary(b) => read_stamp(b),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        Some(ChMsgFields { msg_id: msg_id?, stamp, from: from?, recipients })
    }
}

/// Channel fan-out: `members` in one channel, the first elected leader,
/// `publishers` of them (not the leader) sending.
pub async fn fanout(
    addr: SocketAddr,
    creds: &[Credentials],
    params: &FanoutParams,
    progress: Arc<Progress>,
) -> Result<Measured, BenchError> {
    let mut clients = connect_all(addr, &creds[..params.members], params.batch).await?;
    let name = format!("bench-{}", Ulid::new());
    let leader = &mut clients[0];
    leader.send(Command::ChNew { name: name.clone() }).await.map_err(setup_err)?;
    let channel = wait_for(leader, |ev| match ev {
        ServerEvent::ChStatus(s) if s.name == name => Some(Ok(s.id)),
        ServerEvent::Err(e) => Some(Err(setup_err(format!("CH_NEW: {} ({})", e.code, e.reason)))),
        _ => None,
    })
    .await?;
    for c in &mut clients[1..] {
        c.send(Command::ChJoin { id: channel }).await.map_err(setup_err)?;
    }
    // The leader stands once every member has joined (its CH_STATUS tells);
    // the others vote when their tasks read the CH_VOTE.
    let members = params.members as u64;
    let leader = &mut clients[0];
    wait_for(leader, |ev| {
        matches!(ev, ServerEvent::ChStatus(s) if s.id == channel && s.online >= members).then_some(Ok(()))
    })
    .await?;
    leader.send(Command::ChLead { channel, election: 1 }).await.map_err(setup_err)?;
    let clock = Clock::start();
    let run = Arc::new(Run {
        clock,
        progress,
        inflight: AtomicI64::new(0),
        sent: AtomicU64::new(0),
        errors: Errors::default(),
        publish_end: CancellationToken::new(),
        stop: CancellationToken::new(),
    });
    let (go_tx, mut go_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let publishers = params.publishers.clamp(1, params.members.saturating_sub(1).max(1));
    for (i, client) in clients.into_iter().enumerate() {
        let me = client.credentials.id;
        let (mut reader, writer) = client.split();
        reader.trust_tags();
        let member = Member {
            me,
            channel,
            leader: i == 0,
            // The leader publishes only when it is alone.
            publisher: ((1..=publishers).contains(&i) || params.members == 1).then_some(i as u16),
            params: params.clone(),
            reader,
            writer,
            rec: Recorder::default(),
            run: run.clone(),
            own: HashMap::new(),
            seq: 0,
            pending: HashMap::new(),
            to_ack: Vec::new(),
            to_ack_since: None,
            ready: Vec::new(),
            body: Vec::with_capacity(params.size),
        };
        tasks.push(tokio::spawn(member.run(go_tx.clone(), go_rx.clone())));
    }
    drop(go_tx);
    tokio::time::timeout(SETUP_LIMIT, go_rx.wait_for(|g| *g))
        .await
        .map_err(|_| setup_err("the channel did not elect its leader in time"))?
        .map_err(setup_err)?;
    let started = run.clock.now_ns();
    tokio::time::sleep(params.duration).await;
    run.publish_end.cancel();
    let published_ns = run.clock.now_ns() - started;
    // Drain: wait for every sent message to commit, within a bound.
    let drain_start = std::time::Instant::now();
    settle(drain_start, params.drain, || run.inflight.load(Ordering::Acquire) > 0).await;
    let expected = run.sent.load(Ordering::Relaxed) * params.members as u64;
    settle(drain_start, params.drain, || run.progress.deliveries.load(Ordering::Relaxed) < expected).await;
    let elapsed_ns = run.clock.now_ns() - started;
    run.stop.cancel();
    let rec = gather(tasks).await?;
    let sent = run.sent.load(Ordering::Relaxed);
    let elapsed = Duration::from_nanos(elapsed_ns.max(published_ns));
    Ok(Measured::from_record(rec, expected, Some(sent), run.errors.count(), elapsed))
}

/// Private messages: `pairs` pairs, each side sending `PV_MSG` to the other
/// with `window` messages awaiting their `MSG_ACK`.
pub async fn private(
    addr: SocketAddr,
    creds: &[Credentials],
    pairs: usize,
    params: &FanoutParams,
    progress: Arc<Progress>,
) -> Result<Measured, BenchError> {
    let clients = connect_all(addr, &creds[..pairs * 2], false).await?;
    let ids: Vec<Ulid> = clients.iter().map(|c| c.credentials.id).collect();
    let clock = Clock::start();
    let (publish_end, stop) = (CancellationToken::new(), CancellationToken::new());
    let sent = Arc::new(AtomicU64::new(0));
    // Sent and not yet acked, over all sessions: each keeps acking its
    // partner's messages until every session's are acked (or the drain ends).
    let unacked = Arc::new(AtomicI64::new(0));
    let errors = Arc::new(Errors::default());
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let partner = ids[i ^ 1];
        let (mut reader, mut writer) = client.split();
        reader.trust_tags();
        let (end, stop, sent, unacked, errors, progress, params) = (
            publish_end.clone(),
            stop.clone(),
            sent.clone(),
            unacked.clone(),
            errors.clone(),
            progress.clone(),
            params.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut own: HashMap<Ulid, u64> = HashMap::new();
            let mut body = Vec::new();
            let mut seq = 0u32;
            let mut acks: Vec<(Ulid, Ulid)> = Vec::new();
            loop {
                while !end.is_cancelled() && own.len() < params.window {
                    let now = clock.now_ns();
                    write_message(&mut body, params.size, now, i as u16, seq);
                    seq += 1;
                    let msg_id = Ulid::new();
                    own.insert(msg_id, now);
                    let msg = Body::text(String::from_utf8_lossy(&body).into_owned());
                    writer.queue(Command::PvMsg { to: partner, msg_id, msg });
                    sent.fetch_add(1, Ordering::Relaxed);
                    unacked.fetch_add(1, Ordering::AcqRel);
                }
                for (from, msg_id) in acks.drain(..) {
                    writer.queue(Command::AckMsg { from, msg_id });
                }
                if writer.flush().await.is_err() {
                    break;
                }
                let ev = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    ev = reader.recv() => ev,
                };
                let mut next = match ev {
                    Ok(Some(ev)) => Some(ev),
                    _ => break,
                };
                let mut handled = 0;
                while let Some(ev) = next.take() {
                    let now = clock.now_ns();
                    match ev {
                        ServerEvent::Msg(m) => {
                            rec.delivered(&m.msg.bytes, now);
                            progress.delivered();
                            acks.push((m.from, m.msg_id));
                        }
                        ServerEvent::MsgAck(a) => {
                            if let Some(sent) = own.remove(&a.msg_id) {
                                rec.completed(sent, now);
                                progress.complete();
                                unacked.fetch_sub(1, Ordering::AcqRel);
                            }
                        }
                        ServerEvent::Err(e) => errors.record(format!("private got ERR {} ({})", e.code, e.reason)),
                        _ => {}
                    }
                    handled += 1;
                    if handled < EVENTS_PER_FLUSH {
                        if let Some(Ok(Some(ev))) = reader.recv().now_or_never() {
                            next = Some(ev);
                        }
                    }
                }
            }
            rec
        }));
    }
    let started = clock.now_ns();
    tokio::time::sleep(params.duration).await;
    publish_end.cancel();
    settle(std::time::Instant::now(), params.drain, || unacked.load(Ordering::Acquire) > 0).await;
    let elapsed_ns = clock.now_ns() - started;
    stop.cancel();
    let rec = gather(tasks).await?;
    let sent = sent.load(Ordering::Relaxed);
    Ok(Measured::from_record(rec, sent, Some(sent), errors.count(), Duration::from_nanos(elapsed_ns)))
}

/// New connections + CNN per second: `count` sessions, `concurrency` at a
/// time, each closed once its own `UCNN` confirmed it.
pub async fn connect(
    addr: SocketAddr,
    creds: &[Credentials],
    count: usize,
    concurrency: usize,
    progress: Arc<Progress>,
) -> Result<(usize, Duration), BenchError> {
    let start = std::time::Instant::now();
    let ok = futures_util::stream::iter(0..count)
        .map(|i| {
            let cred = creds[i % creds.len()].clone();
            let progress = progress.clone();
            async move {
                let done = Client::connect(addr, &cred).await.is_ok();
                if done {
                    progress.complete();
                }
                done
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    Ok((ok, start.elapsed()))
}

/// Idle sessions: opens one per credential and keeps each reading (the
/// server announces every arrival to every session) until `hold` is cancelled.
/// Returns the sessions opened and a counter of those still open.
pub async fn idle(
    addr: SocketAddr,
    creds: &[Credentials],
    hold: CancellationToken,
    progress: Arc<Progress>,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>), BenchError> {
    let open = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(creds.len());
    let mut connecting = futures_util::stream::iter(creds.iter().cloned())
        .map(|cred| async move { Client::connect(addr, &cred).await })
        .buffered(CONNECT_CONCURRENCY);
    while let Some(client) = connecting.next().await {
        let mut client = client.map_err(|e| setup_err(format!("connect: {e}")))?;
        client.reader.trust_tags();
        progress.complete();
        let (open, hold) = (open.clone(), hold.clone());
        open.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hold.cancelled() => break,
                    ev = client.recv() => if !matches!(ev, Ok(Some(_))) { break },
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    Ok((tasks, open))
}
