//! `sigil client`: an interactive terminal client.
//!
//! Lines typed are commands (`/new`, `/join`, `/leave`, `/list`, `/who`,
//! `/msg`, `/pull`, `/quit`, `/help`) or text for the current channel. Events
//! are shown with local times. What a client does on its own (acks, votes,
//! elections, commits, pulls) is the [`Agent`]'s; `View` is the pure part
//! that turns events and lines into text and commands.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use ulid::Ulid;

use super::agent::Agent;
use super::{Client, ClientError, ConnectOptions, Credentials, Endpoint};
use sigil_proto::{Body, Command, ServerEvent};

/// The client's picture of the server, and what to show.
#[derive(Debug)]
pub struct View {
    me: Ulid,
    names: HashMap<Ulid, String>,
    /// Every channel from the last `LST_CH`, by lower-cased name.
    known_channels: HashMap<String, Ulid>,
    current: Option<Ulid>,
    /// The name of the channel asked for with `/new`, until it exists.
    creating: Option<String>,
    /// Messages this client sent and has not yet seen committed.
    mine: HashSet<Ulid>,
    /// The reference behaviour.
    pub agent: Agent,
}

/// What handling an event or a line produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    /// Lines to show.
    pub lines: Vec<String>,
    /// Commands to send.
    pub send: Vec<Command>,
    /// Stop the client.
    pub quit: bool,
}

const HELP: &str = "commands: /new NAME  /join NAME  /leave [NAME]  /list  /who  /msg USER TEXT  /pull  /quit  \
                    (other text goes to the current channel)";

impl View {
    /// A view for the account `me`.
    pub fn new(me: Ulid, my_name: &str, seed: u64) -> Self {
        let mut names = HashMap::new();
        names.insert(me, my_name.to_owned());
        Self {
            me,
            names,
            known_channels: HashMap::new(),
            current: None,
            creating: None,
            mine: HashSet::new(),
            agent: Agent::new(me, seed),
        }
    }

    fn name(&self, id: &Ulid) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string()[20..].to_owned())
    }

    fn channel_name(&self, id: &Ulid) -> String {
        let known = self.agent.channels().get(id).filter(|c| !c.name.is_empty());
        known.map(|c| format!("#{}", c.name.trim_start_matches('#'))).unwrap_or_else(|| {
            self.known_channels
                .iter()
                .find(|(_, v)| *v == id)
                .map(|(n, _)| format!("#{n}"))
                .unwrap_or_else(|| "#?".into())
        })
    }

    fn resolve_user(&self, who: &str) -> Option<Ulid> {
        sigil_proto::id::parse(who)
            .or_else(|| self.names.iter().find(|(_, n)| n.eq_ignore_ascii_case(who)).map(|(id, _)| *id))
    }

    fn resolve_channel(&self, name: &str) -> Option<Ulid> {
        let name = name.trim_start_matches('#');
        sigil_proto::id::parse(name)
            .or_else(|| self.agent.channel_named(name))
            .or_else(|| self.known_channels.get(&name.to_ascii_lowercase()).copied())
    }

    /// Handles one server event at `now_ms`.
    pub fn on_event(&mut self, event: ServerEvent, time: &str, now_ms: u64) -> Reaction {
        let mut r = Reaction { send: self.agent.on_event(&event, now_ms), ..Reaction::default() };
        let mut show = |line: String| r.lines.push(format!("[{time}] {line}"));
        match event {
            ServerEvent::Ucnn(u) => {
                self.names.insert(u.id, u.name.clone());
                if u.id != self.me {
                    show(format!("* {} is online", u.name));
                }
            }
            ServerEvent::Udcnn(u) => show(format!("* {} went offline", u.name)),
            ServerEvent::UsrLst(l) => {
                let names: Vec<String> = l.users.iter().map(|u| u.name.clone()).collect();
                for u in l.users {
                    self.names.insert(u.id, u.name);
                }
                show(format!("online: {}", names.join(", ")));
            }
            ServerEvent::UsrAdd(u) => {
                show(format!("* new account {}", u.name));
                self.names.insert(u.id, u.name);
            }
            ServerEvent::UsrRmd(u) => show(format!("* account {} was removed", self.name(&u.id))),
            ServerEvent::UsrHsk(h) => show(format!("* handshake with {}", self.name(&h.id))),
            ServerEvent::Msg(m) => show(format!("<{}> (private) {}", self.name(&m.from), m.msg.to_display())),
            ServerEvent::MsgAck(a) => show(format!("✓ {} received your message", self.name(&a.by))),
            ServerEvent::Sinfo(s) => {
                show(format!("connected to {} (sigil {}, protocol {})", s.server_name, s.version, s.protocol_version))
            }
            ServerEvent::LstCh(l) => {
                for c in &l.channels {
                    self.known_channels.insert(c.name.to_ascii_lowercase(), c.id);
                }
                let list: Vec<String> = l
                    .channels
                    .iter()
                    .map(|c| {
                        let leader = c.leader.map(|l| format!(", led by {}", self.name(&l))).unwrap_or_default();
                        format!("#{} ({}{leader})", c.name, c.status)
                    })
                    .collect();
                show(if list.is_empty() {
                    "no channels yet: /new NAME".into()
                } else {
                    format!("channels: {}", list.join("  "))
                });
            }
            ServerEvent::ChUjoin(u) => {
                if u.user == self.me {
                    self.current = Some(u.channel);
                    // A channel this client just created: its status (and name) follows.
                    if let Some(name) = self.creating.take() {
                        self.known_channels.entry(name.to_ascii_lowercase()).or_insert(u.channel);
                    }
                }
                show(format!("* {} joined {}", self.name(&u.user), self.channel_name(&u.channel)));
            }
            ServerEvent::ChUleave(u) => {
                if u.user == self.me && self.current == Some(u.channel) {
                    self.current = self.agent.channels().keys().next().copied();
                }
                show(format!("* {} left", self.name(&u.user)));
            }
            ServerEvent::ChStatus(s) => {
                self.known_channels.insert(s.name.to_ascii_lowercase(), s.id);
                if self.current.is_none() {
                    self.current = Some(s.id);
                }
                let leader =
                    s.leader.map(|l| format!("led by {}", self.name(&l))).unwrap_or_else(|| "no leader".into());
                show(format!("* #{}: {}, {leader}, {} online", s.name, s.status, s.online));
            }
            ServerEvent::ChVote(v) if v.user != self.me => show(format!(
                "* {} stands for election {} in {}",
                self.name(&v.user),
                v.election,
                self.channel_name(&v.channel)
            )),
            ServerEvent::ChVote(_) => {}
            ServerEvent::ChElected(e) => show(format!(
                "* {} leads {} (election {})",
                self.name(&e.leader),
                self.channel_name(&e.channel),
                e.election
            )),
            ServerEvent::ChMsg(m) => {
                show(format!("{} <{}> {}", self.channel_name(&m.id), self.name(&m.from), m.msg.to_display()))
            }
            ServerEvent::ChMsgAck(a) if std::iter::once(&a.id).chain(&a.ids).any(|id| self.mine.contains(id)) => {
                show(format!("· {} has your message", self.name(&a.user)))
            }
            ServerEvent::ChMsgAck(_) => {}
            ServerEvent::ChMsgCommit(c) => {
                // Shown for our own messages: the moment they are safe.
                for id in std::iter::once(&c.id).chain(&c.ids) {
                    if self.mine.remove(id) {
                        show(format!("✓ committed in {} ({} acks)", self.channel_name(&c.channel), c.acks.len()));
                    }
                }
            }
            ServerEvent::ChAppend(a) => {
                for m in &a.messages {
                    let t = chrono::DateTime::from_timestamp(m.timestamp as i64, 0)
                        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
                        .unwrap_or_default();
                    r.lines.push(format!(
                        "[{t}] {} <{}> {}",
                        self.channel_name(&a.id),
                        self.name(&m.from),
                        m.msg.to_display()
                    ));
                }
            }
            ServerEvent::ChMsgConfirm(_) => {}
            ServerEvent::Err(e) => {
                if let Some(id) = e.msg_id {
                    self.mine.remove(&id);
                }
                show(format!("! {}: {}", e.code, e.reason))
            }
            ServerEvent::Other { command, .. } => show(format!("({command})")),
        }
        r
    }

    /// Handles one line the user typed.
    pub fn on_line(&mut self, line: &str) -> Reaction {
        let mut r = Reaction::default();
        let line = line.trim();
        if line.is_empty() {
            return r;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "/quit" => {
                r.send.push(Command::Dcnn);
                r.quit = true;
            }
            "/who" => r.send.push(Command::LstUsr),
            "/list" => r.send.push(Command::ChLst),
            "/help" => r.lines.push(HELP.to_owned()),
            "/new" if !rest.is_empty() => {
                let name = rest.trim_start_matches('#').to_owned();
                self.creating = Some(name.clone());
                r.send.push(Command::ChNew { name });
            }
            "/join" => match self.resolve_channel(rest) {
                Some(id) => r.send.push(Command::ChJoin { id }),
                None => r.lines.push(format!("! unknown channel {rest:?} (try /list)")),
            },
            "/leave" => {
                let target = if rest.is_empty() { self.current } else { self.resolve_channel(rest) };
                match target {
                    Some(id) => r.send.push(Command::ChLeave { id }),
                    None => r.lines.push("! leave which channel?".to_owned()),
                }
            }
            "/pull" => match self.current {
                Some(id) => r.send.push(Command::ChPull { id, anchor: None }),
                None => r.lines.push("! no current channel".to_owned()),
            },
            "/msg" => {
                let (who, text) = rest.split_once(' ').unwrap_or((rest, ""));
                match (self.resolve_user(who), text.trim()) {
                    (None, _) => r.lines.push(format!("! unknown user {who:?} (try /who)")),
                    (Some(_), "") => r.lines.push("! usage: /msg USER TEXT".to_owned()),
                    (Some(to), text) => {
                        r.send.push(Command::PvMsg { to, msg_id: Ulid::new(), msg: Body::text(text) });
                        r.lines.push(format!("-> {}: {text}", self.name(&to)));
                    }
                }
            }
            _ if cmd.starts_with('/') => r.lines.push(format!("! unknown or incomplete command {cmd}; {HELP}")),
            _ => match self.current {
                Some(id) => {
                    let msg_id = Ulid::new();
                    self.mine.insert(msg_id);
                    r.send.push(Command::ChMsg { id, msg_id, msg: Body::text(line) });
                }
                None => r.lines.push(format!("! you are in no channel: /list, /join NAME or /new NAME; {HELP}")),
            },
        }
        r
    }
}

fn local_time() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// How a connection ended.
enum End {
    /// The user quit (or stdin ended).
    Quit,
    /// The connection was lost: try again.
    Lost(String),
    /// The server refused this client for good (key rotated, account
    /// removed, session taken over): reconnecting would not help.
    Refused(String),
}

/// Reconnection attempts after a lost connection, one a second.
const RECONNECT_ATTEMPTS: u32 = 60;

/// Runs the interactive client until `/quit` or end of input, reconnecting
/// (and pulling what it missed) when the connection is lost.
pub async fn run(endpoint: &Endpoint, cred: &Credentials) -> Result<(), ClientError> {
    let started = Instant::now();
    let mut view = View::new(cred.id, &cred.name, rand::random());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut client =
        Client::connect_to(endpoint, cred, ConnectOptions { batch: true, ..ConnectOptions::default() }).await?;
    if !say(&format!("[{}] signed in as {} — {HELP}", local_time(), cred.name)) {
        return Ok(());
    }
    loop {
        match session(client, &mut view, &mut stdin, started).await? {
            End::Quit => return Ok(()),
            End::Refused(why) => {
                say(&format!("[{}] {why}", local_time()));
                return Ok(());
            }
            End::Lost(why) => {
                if !say(&format!("[{}] connection lost ({why}); reconnecting…", local_time())) {
                    return Ok(());
                }
            }
        }
        view.agent.reconnected();
        let mut attempt = 0;
        client = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            attempt += 1;
            match Client::connect_to(endpoint, cred, ConnectOptions { batch: true, ..ConnectOptions::default() }).await
            {
                Ok(c) => break c,
                Err(e) if attempt >= RECONNECT_ATTEMPTS => return Err(e),
                Err(_) => {}
            }
        };
        if !say(&format!("[{}] reconnected", local_time())) {
            return Ok(());
        }
    }
}

/// Writes a line to stdout; false once stdout is gone (`sigil client | head`
/// closed the pipe): the client then ends quietly instead of panicking.
fn say(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// One connection's life.
async fn session(
    client: Client,
    view: &mut View,
    stdin: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    started: Instant,
) -> Result<End, ClientError> {
    let now_ms = || started.elapsed().as_millis() as u64;
    let (mut reader, mut writer) = client.split();
    for command in [Command::Info, Command::LstUsr, Command::ChLst] {
        writer.send(command).await?;
    }
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    keepalive.tick().await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut refused = None;
    loop {
        let reaction = tokio::select! {
            event = reader.recv() => match event {
                Ok(None) | Err(ClientError::Io(_)) => {
                    return Ok(match refused {
                        Some(why) => End::Refused(why),
                        None => End::Lost("closed by the server".into()),
                    });
                }
                Err(e) => return Ok(End::Lost(e.to_string())),
                Ok(Some(ServerEvent::Sinfo(s))) => {
                    // Keep alive well within the server's idle timeout.
                    keepalive = tokio::time::interval(Duration::from_secs((s.timeout_s / 3).max(1)));
                    keepalive.tick().await;
                    view.on_event(ServerEvent::Sinfo(s), &local_time(), now_ms())
                }
                Ok(Some(event)) => {
                    if let ServerEvent::Err(e) = &event {
                        if matches!(e.code.as_str(), "auth_failed" | "account_removed" | "session_replaced") {
                            refused = Some(format!("{}: {}", e.code, e.reason));
                        }
                    }
                    view.on_event(event, &local_time(), now_ms())
                }
            },
            line = stdin.next_line() => match line? {
                Some(line) => view.on_line(&line),
                None => Reaction { send: vec![Command::Dcnn], quit: true, ..Reaction::default() },
            },
            _ = tick.tick() => Reaction { send: view.agent.tick(now_ms()), ..Reaction::default() },
            _ = keepalive.tick() => Reaction { send: vec![Command::Kalive], ..Reaction::default() },
        };
        for line in reaction.lines {
            if !say(&line) {
                return Ok(End::Quit);
            }
        }
        // One write for the whole reaction, its acks and commits batched.
        for command in view.agent.coalesce(reaction.send) {
            writer.queue(command);
        }
        if writer.flush().await.is_err() {
            return Ok(End::Lost("write failed".into()));
        }
        if reaction.quit {
            // DCNN makes the server flush and close; wait for that.
            while let Ok(Some(_)) = reader.recv().await {}
            return Ok(End::Quit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::event::{ChMsgCommit, ChannelUser};

    #[test]
    fn typing_text_goes_to_the_current_channel_and_its_commit_is_shown() {
        let (me, ch) = (Ulid::from(1u128), Ulid::from(100u128));
        let mut v = View::new(me, "alice", 1);
        let r = v.on_line("hello");
        assert!(r.send.is_empty() && r.lines[0].contains("no channel"));
        let r = v.on_line("/new general");
        assert_eq!(r.send, vec![Command::ChNew { name: "general".into() }]);
        let r = v.on_event(ServerEvent::ChUjoin(ChannelUser { channel: ch, user: me }), "t", 0);
        assert!(r.lines[0].contains("alice joined #general"), "{:?}", r.lines);
        let r = v.on_line("hello");
        let [Command::ChMsg { id, msg_id, msg }] = &r.send[..] else { panic!("{:?}", r.send) };
        assert_eq!((*id, msg.clone()), (ch, Body::text("hello")));
        let commit =
            ServerEvent::ChMsgCommit(ChMsgCommit { id: *msg_id, channel: ch, acks: vec![me], ids: Vec::new() });
        assert!(v.on_event(commit.clone(), "t", 0).lines[0].contains("✓ committed"));
        assert!(v.on_event(commit, "t", 0).lines.is_empty(), "shown once");
        assert!(v.on_line("/frobnicate").lines[0].contains("unknown"));
        assert_eq!(v.on_line("/quit").send, vec![Command::Dcnn]);
    }
}
