//! `sigil client`: an interactive terminal client.
//!
//! Reads lines from stdin (`/who`, `/msg USER TEXT`, `/quit`, `/help`), shows
//! presence and private messages with local times, acknowledges what it
//! receives, and keeps the session alive. `View` is the pure part: it turns
//! events into lines to print and commands to send.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use ulid::Ulid;

use super::{Client, ClientError, Credentials};
use crate::proto::{Body, Command, ServerEvent};

/// The client's picture of the server: who is who.
#[derive(Debug, Default)]
pub struct View {
    me: Option<Ulid>,
    names: HashMap<Ulid, String>,
    online: HashMap<Ulid, bool>,
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

const HELP: &str = "commands: /who  /msg USER TEXT  /quit  /help";

impl View {
    /// A view for the account `me`.
    pub fn new(me: Ulid, my_name: &str) -> Self {
        let mut v = Self { me: Some(me), ..Self::default() };
        v.names.insert(me, my_name.to_owned());
        v
    }

    fn name(&self, id: &Ulid) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    fn resolve(&self, who: &str) -> Option<Ulid> {
        crate::proto::id::parse(who)
            .or_else(|| self.names.iter().find(|(_, n)| n.eq_ignore_ascii_case(who)).map(|(id, _)| *id))
    }

    /// Handles one server event.
    pub fn on_event(&mut self, event: ServerEvent, time: &str) -> Reaction {
        let mut r = Reaction::default();
        match event {
            ServerEvent::Ucnn(u) => {
                self.names.insert(u.id, u.name.clone());
                self.online.insert(u.id, true);
                r.lines.push(format!("[{time}] * {} is online", u.name));
            }
            ServerEvent::Udcnn(u) => {
                self.online.insert(u.id, false);
                r.lines.push(format!("[{time}] * {} went offline", u.name));
            }
            ServerEvent::UsrLst(l) => {
                let names: Vec<String> = l.users.iter().map(|u| u.name.clone()).collect();
                for u in l.users {
                    self.online.insert(u.id, true);
                    self.names.insert(u.id, u.name);
                }
                r.lines.push(format!("[{time}] online: {}", names.join(", ")));
            }
            ServerEvent::UsrAdd(u) => {
                r.lines.push(format!("[{time}] * new account {}", u.name));
                self.names.insert(u.id, u.name);
            }
            ServerEvent::UsrRmd(u) => {
                r.lines.push(format!("[{time}] * account {} was removed", self.name(&u.id)));
                self.names.remove(&u.id);
            }
            ServerEvent::UsrHsk(h) => r.lines.push(format!("[{time}] * handshake with {}", self.name(&h.id))),
            ServerEvent::Msg(m) => {
                r.lines.push(format!("[{time}] <{}> (private) {}", self.name(&m.from), m.msg.to_display()));
                r.send.push(Command::AckMsg { from: m.from, msg_id: m.msg_id });
            }
            ServerEvent::MsgAck(a) => r.lines.push(format!("[{time}] ✓ {} received your message", self.name(&a.by))),
            ServerEvent::Err(e) => r.lines.push(format!("[{time}] ! {}: {}", e.code, e.reason)),
            ServerEvent::Sinfo(s) => r.lines.push(format!(
                "[{time}] connected to {} (sigil {}, protocol {})",
                s.server_name, s.version, s.protocol_version
            )),
            ServerEvent::Other { command, .. } => r.lines.push(format!("[{time}] ({command})")),
            other => r.lines.push(format!("[{time}] {other:?}")),
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
        match cmd {
            "/quit" => {
                r.send.push(Command::Dcnn);
                r.quit = true;
            }
            "/who" => r.send.push(Command::LstUsr),
            "/help" => r.lines.push(HELP.to_owned()),
            "/msg" => {
                let (who, text) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                match (self.resolve(who), text.trim()) {
                    (None, _) => r.lines.push(format!("! unknown user {who:?} (try /who)")),
                    (Some(_), "") => r.lines.push("! usage: /msg USER TEXT".to_owned()),
                    (Some(to), text) => {
                        r.send.push(Command::PvMsg { to, msg_id: Ulid::new(), msg: Body::text(text) });
                        r.lines.push(format!("-> {}: {text}", self.name(&to)));
                    }
                }
            }
            _ if cmd.starts_with('/') => r.lines.push(format!("! unknown command {cmd}; {HELP}")),
            _ => r.lines.push(format!("! no channel yet: use /msg USER TEXT; {HELP}")),
        }
        let _ = self.me;
        r
    }
}

fn local_time() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Runs the interactive client until `/quit`, end of input or disconnection.
pub async fn run(addr: &str, cred: &Credentials) -> Result<(), ClientError> {
    let client = Client::connect(addr, cred).await?;
    let mut view = View::new(cred.id, &cred.name);
    println!("[{}] signed in as {} — {HELP}", local_time(), cred.name);
    let (mut reader, mut writer) = client.split();
    writer.send(Command::Info).await?;
    writer.send(Command::LstUsr).await?;
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    keepalive.tick().await;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        let reaction = tokio::select! {
            event = reader.recv() => match event? {
                None => {
                    println!("[{}] connection closed", local_time());
                    return Ok(());
                }
                Some(ServerEvent::Sinfo(s)) => {
                    // Keep alive well within the server's idle timeout.
                    let period = Duration::from_secs((s.timeout_s / 3).max(1));
                    keepalive = tokio::time::interval(period);
                    keepalive.tick().await;
                    view.on_event(ServerEvent::Sinfo(s), &local_time())
                }
                Some(event) => view.on_event(event, &local_time()),
            },
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) => view.on_line(&line),
                None => {
                    stdin_open = false;
                    Reaction { send: vec![Command::Dcnn], quit: true, ..Reaction::default() }
                }
            },
            _ = keepalive.tick() => Reaction { send: vec![Command::Kalive], ..Reaction::default() },
        };
        for line in reaction.lines {
            println!("{line}");
        }
        for command in reaction.send {
            writer.send(command).await?;
        }
        if reaction.quit {
            // DCNN makes the server flush and close; wait for that.
            while let Ok(Some(_)) = reader.recv().await {}
            return Ok(());
        }
    }
}
