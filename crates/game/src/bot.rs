//! `sigil game serve`: the referee bot, an ordinary sigil account and client
//! (no hooks into the server). Players' private messages go to the
//! [`Referee`]; its answers go back as private messages, whose delivery acks
//! (`MSG_ACK`) say what reached whom; each game's record is posted to the
//! game's channel, where the bot behaves as the reference client (§7.8:
//! stands, votes, acks, commits), so the committed log is the game's
//! durable, replayable history.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use sigil_client::agent::Agent;
use sigil_client::{Client, ClientError, ConnectOptions, Credentials, Endpoint};
use sigil_proto::{Body, Command, ServerEvent};
use ulid::Ulid;

use crate::referee::{Action, Referee, Rules};

/// Reconnection attempts after the connection is lost, one a second.
const RECONNECT_ATTEMPTS: u32 = 300;

/// The bot's state beyond the referee: names, and the record lines on their
/// way to each game's channel.
struct Bot {
    me: Ulid,
    referee: Referee,
    agent: Agent,
    names: HashMap<Ulid, String>,
    /// Lines to post (with their message ids), by channel name, in order,
    /// once the channel is led and healthy.
    posts: BTreeMap<String, VecDeque<(Ulid, String)>>,
    /// Lines posted and not yet seen committed, by channel name, in order.
    sent: BTreeMap<String, Vec<(Ulid, String)>>,
    /// Nonces of `CH_MSG`s posted: an `ERR` names one when it refuses the post.
    post_nonces: HashMap<u64, Ulid>,
    /// Nonces of `CH_NEW`s under way, with the channel's name.
    creating: HashMap<u64, String>,
    /// Channels to leave once their lines are committed.
    closing: HashSet<String>,
    /// The bot's private messages each player has not acknowledged yet
    /// (`MSG_ACK` settles them): what may not have reached them.
    unacked: HashMap<Ulid, HashSet<Ulid>>,
    /// Nonces of the bot's `PV_MSG`s, with the recipient: an `ERR
    /// user_offline` names one.
    pv_nonces: HashMap<u64, Ulid>,
    /// Players who missed a message: told the game as it stands when back.
    missed: HashSet<Ulid>,
    started: Instant,
}

/// How a session ended.
enum End {
    Lost(String),
    Refused(String),
}

/// The channel of a game this bot referees (or did, before a restart).
fn is_game_channel(name: &str) -> bool {
    name.starts_with("c4-")
}

impl Bot {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// What an event means: the agent's answers and the referee's actions.
    fn on_event(&mut self, event: &ServerEvent, out: &mut Vec<Command>) {
        let now = self.now_ms();
        out.extend(self.agent.on_event(event, now));
        let actions = match event {
            ServerEvent::Ucnn(u) => {
                self.names.insert(u.id, u.name.clone());
                self.referee.on_online(u.id);
                if self.missed.remove(&u.id) {
                    self.referee.resync(u.id)
                } else {
                    Vec::new()
                }
            }
            ServerEvent::Udcnn(u) => {
                self.referee.on_offline(u.id, now);
                // Gone before acknowledging: the message may never have reached them.
                if self.unacked.remove(&u.id).is_some_and(|m| !m.is_empty()) {
                    self.missed.insert(u.id);
                }
                Vec::new()
            }
            ServerEvent::MsgAck(a) => {
                if let Some(waiting) = self.unacked.get_mut(&a.by) {
                    waiting.remove(&a.msg_id);
                }
                Vec::new()
            }
            ServerEvent::UsrLst(l) => {
                self.names.extend(l.users.iter().map(|u| (u.id, u.name.clone())));
                Vec::new()
            }
            ServerEvent::UsrAdd(u) => {
                self.names.insert(u.id, u.name.clone());
                Vec::new()
            }
            ServerEvent::Msg(m) if m.from != self.me => {
                let name = self.names.get(&m.from).cloned().unwrap_or_else(|| m.from.to_string());
                let text = String::from_utf8_lossy(&m.msg.bytes);
                self.referee.on_message(m.from, &name, &text, now)
            }
            ServerEvent::ChMsgCommit(c) => {
                let committed: HashSet<&Ulid> = std::iter::once(&c.id).chain(&c.ids).collect();
                for lines in self.sent.values_mut() {
                    lines.retain(|(id, _)| !committed.contains(id));
                }
                Vec::new()
            }
            ServerEvent::ChStatus(c) => {
                // A game channel of no game here (its game was lost with a
                // restart of the bot): leave it, or memberships pile up.
                let active = self.posts.contains_key(&c.name) || self.closing.contains(&c.name);
                if is_game_channel(&c.name) && !active {
                    tracing::info!(channel = %c.name, "leaving the channel of a game this bot no longer has");
                    self.posts.insert(c.name.clone(), VecDeque::new());
                    self.closing.insert(c.name.clone());
                }
                Vec::new()
            }
            ServerEvent::Err(e) => {
                self.on_refusal(e);
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.apply(actions, out);
    }

    /// A refused command: a channel that could not be created loses its
    /// lines; a refused post is posted again.
    fn on_refusal(&mut self, e: &sigil_proto::event::ErrPayload) {
        tracing::info!(code = %e.code, reason = %e.reason, "the server refused a command");
        if let Some(player) = e.nonce_ref.and_then(|n| self.pv_nonces.remove(&n)) {
            // A message to a player who is offline: tell them the game when they are back.
            self.missed.insert(player);
            return;
        }
        if let Some(channel) = e.nonce_ref.and_then(|n| self.creating.remove(&n)) {
            tracing::warn!(%channel, code = %e.code, "cannot create the game's channel: its record is not kept");
            self.posts.remove(&channel);
            self.sent.remove(&channel);
            self.closing.remove(&channel);
            return;
        }
        let refused = e.msg_id.or_else(|| e.nonce_ref.and_then(|n| self.post_nonces.remove(&n)));
        let Some(msg_id) = refused.filter(|_| e.code != "duplicate_msg") else { return };
        for (channel, lines) in &mut self.sent {
            if let Some(at) = lines.iter().position(|(id, _)| *id == msg_id) {
                let (_, text) = lines.remove(at);
                tracing::info!(%channel, code = %e.code, "a record line was refused: posting it again");
                self.posts.entry(channel.clone()).or_default().push_front((Ulid::new(), text));
                return;
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>, out: &mut Vec<Command>) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    let msg_id = Ulid::new();
                    self.unacked.entry(to).or_default().insert(msg_id);
                    out.push(Command::PvMsg { to, msg_id, msg: Body::text(message.to_json()) });
                }
                Action::OpenChannel { channel } => {
                    tracing::info!(%channel, "opening the game's channel");
                    self.posts.entry(channel.clone()).or_default();
                    out.push(Command::ChNew { name: channel });
                }
                Action::Post { channel, text } => self.posts.entry(channel).or_default().push_back((Ulid::new(), text)),
                Action::CloseChannel { channel } => {
                    self.closing.insert(channel);
                }
            }
        }
        self.flush_posts(out);
    }

    /// Posts what waits for a channel that is now led and healthy; leaves
    /// channels whose game is over once their record is committed.
    fn flush_posts(&mut self, out: &mut Vec<Command>) {
        for (name, queue) in &mut self.posts {
            let Some(id) = self.agent.channel_named(name) else { continue };
            let ready = self.agent.channels().get(&id).is_some_and(|c| c.leader.is_some() && c.healthy);
            if !ready {
                continue;
            }
            for (msg_id, text) in queue.drain(..) {
                self.sent.entry(name.clone()).or_default().push((msg_id, text.clone()));
                out.push(Command::ChMsg { id, msg_id, msg: Body::text(text) });
            }
        }
        let done: Vec<String> = self
            .closing
            .iter()
            .filter(|name| {
                self.posts.get(*name).is_none_or(VecDeque::is_empty) && self.sent.get(*name).is_none_or(Vec::is_empty)
            })
            .cloned()
            .collect();
        for name in done {
            self.closing.remove(&name);
            self.posts.remove(&name);
            self.sent.remove(&name);
            if let Some(id) = self.agent.channel_named(&name) {
                tracing::info!(channel = %name, "the game is over: leaving its channel");
                out.push(Command::ChLeave { id });
            }
        }
    }

    /// Lines posted but not seen committed when the connection was lost go
    /// out again, first and with their ids, once their channel is led again:
    /// one the server kept is refused as a duplicate (and commits as it
    /// would have), one it lost is posted anew.
    fn repost_after_reconnect(&mut self) {
        for (name, lines) in std::mem::take(&mut self.sent) {
            let queue = self.posts.entry(name).or_default();
            for line in lines.into_iter().rev() {
                queue.push_front(line);
            }
        }
    }

    async fn session(&mut self, client: Client) -> Result<End, ClientError> {
        let (mut reader, mut writer) = client.split();
        for command in [Command::Info, Command::LstUsr { all: true }, Command::ChLst] {
            writer.send(command).await?;
        }
        let mut keepalive = tokio::time::interval(Duration::from_secs(30));
        keepalive.tick().await;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut refused = None;
        loop {
            let mut out = Vec::new();
            tokio::select! {
                event = reader.recv() => match event {
                    Ok(Some(event)) => {
                        if let ServerEvent::Sinfo(s) = &event {
                            keepalive = tokio::time::interval(Duration::from_secs((s.timeout_s / 3).max(1)));
                            keepalive.tick().await;
                        }
                        if let ServerEvent::Err(e) = &event {
                            if matches!(e.code.as_str(), "auth_failed" | "account_removed" | "session_replaced") {
                                refused = Some(format!("{}: {}", e.code, e.reason));
                            }
                        }
                        self.on_event(&event, &mut out);
                    }
                    Ok(None) | Err(ClientError::Io(_)) => {
                        return Ok(match refused {
                            Some(why) => End::Refused(why),
                            None => End::Lost("closed by the server".into()),
                        });
                    }
                    Err(e) => return Ok(End::Lost(e.to_string())),
                },
                _ = tick.tick() => {
                    let now = self.now_ms();
                    out.extend(self.agent.tick(now));
                    let actions = self.referee.tick(now);
                    self.apply(actions, &mut out);
                }
                _ = keepalive.tick() => out.push(Command::Kalive),
            }
            for command in self.agent.coalesce(out) {
                let is_new = if let Command::ChNew { name } = &command { Some(name.clone()) } else { None };
                let post = if let Command::ChMsg { msg_id, .. } = &command { Some(*msg_id) } else { None };
                let private = if let Command::PvMsg { to, .. } = &command { Some(*to) } else { None };
                let nonce = writer.queue(command);
                if let Some(to) = private {
                    self.pv_nonces.insert(nonce, to);
                }
                if let Some(name) = is_new {
                    self.creating.insert(nonce, name);
                }
                if let Some(msg_id) = post {
                    self.post_nonces.insert(nonce, msg_id);
                }
            }
            if writer.flush().await.is_err() {
                return Ok(End::Lost("write failed".into()));
            }
            // Only refusals of recent commands arrive: keep the maps small.
            if self.post_nonces.len() > 4096 {
                self.post_nonces.clear();
            }
            if self.pv_nonces.len() > 4096 {
                self.pv_nonces.clear();
            }
            if self.creating.len() > 1024 {
                self.creating.clear();
            }
        }
    }
}

/// A bot that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// Connecting failed (at start, or for too long after a loss).
    #[error("{0}")]
    Connect(#[from] ClientError),
    /// The server refused this account for good.
    #[error("the server refused the bot: {0}")]
    Refused(String),
}

/// True for a refusal that reconnecting would not change.
fn is_final(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused(p) if matches!(p.code.as_str(), "auth_failed" | "account_removed"))
}

/// Runs the referee bot as `cred` on `endpoint` until the server refuses
/// it for good; reconnects (keeping its games, and posting again what may
/// not have reached their channels) when the connection is lost.
pub async fn serve(endpoint: &Endpoint, cred: &Credentials, rules: Rules) -> Result<(), BotError> {
    let options = || ConnectOptions { batch: true, ..ConnectOptions::default() };
    let mut client = Client::connect_to(endpoint, cred, options()).await?;
    let mut bot = Bot {
        me: cred.id,
        referee: Referee::new(rules, || Ulid::new().to_string().to_ascii_lowercase()),
        agent: Agent::new(cred.id, rand::random()),
        names: HashMap::from([(cred.id, cred.name.clone())]),
        posts: BTreeMap::new(),
        sent: BTreeMap::new(),
        post_nonces: HashMap::new(),
        creating: HashMap::new(),
        closing: HashSet::new(),
        unacked: HashMap::new(),
        pv_nonces: HashMap::new(),
        missed: HashSet::new(),
        started: Instant::now(),
    };
    tracing::info!(bot = %cred.name, "refereeing connect four: players send it private messages (spec/GAME.md)");
    loop {
        match bot.session(client).await {
            Ok(End::Refused(why)) => return Err(BotError::Refused(why)),
            Ok(End::Lost(why)) => tracing::warn!(%why, "connection lost; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "connection lost; reconnecting"),
        }
        bot.agent.reconnected();
        bot.creating.clear();
        bot.post_nonces.clear();
        bot.pv_nonces.clear();
        // Whoever the bot wrote to while it was away from the server may have missed it.
        bot.missed.extend(bot.unacked.drain().filter(|(_, m)| !m.is_empty()).map(|(p, _)| p));
        bot.repost_after_reconnect();
        let mut attempt = 0;
        client = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            attempt += 1;
            match Client::connect_to(endpoint, cred, options()).await {
                Ok(c) => break c,
                Err(e) if is_final(&e) => return Err(BotError::Refused(e.to_string())),
                Err(e) if attempt >= RECONNECT_ATTEMPTS => return Err(BotError::Connect(e)),
                Err(_) => {}
            }
        };
        tracing::info!("reconnected");
    }
}
