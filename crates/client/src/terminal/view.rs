//! `Chat`: everything the terminal client knows and shows, as a pure state
//! machine. Server events and typed lines go in; commands to send, window
//! contents, and the lines of the plain mode come out. No I/O and no clock:
//! the driver ([`super::run`]) passes the time in.
//!
//! Windows: 1 is the status window (the server, presence, errors); then one
//! per channel joined and one per private conversation, in the order they
//! opened. Own messages carry a [`Mark`] that fills in as they progress.

use std::collections::{BTreeSet, HashMap, HashSet};

use sigil_proto::event::{ChMsg, ErrPayload, Outbound};
use sigil_proto::{Body, Command, ServerEvent};
use ulid::Ulid;

use super::commands::{self, Line};
use super::seen::Seen;
use crate::agent::Agent;
use crate::SessionInfo;

/// The skew window assumed until the server's `SINFO` says (PROTOCOL.md §4.1's default).
const DEFAULT_SKEW_S: u64 = 30;

/// What a window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The server: presence, lists, errors.
    Status,
    /// A channel, by id.
    Channel(Ulid),
    /// A private conversation with a person, by id.
    Private(Ulid),
}

/// How far an own message got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Typed while it could not be sent (offline, or the channel has no
    /// leader): sent when it can be.
    Queued,
    /// Written to the server.
    Sent,
    /// Relayed by the server (a channel message came back), or acknowledged
    /// by someone.
    Delivered,
    /// Committed in its channel, or (private) acknowledged by the recipient.
    Done,
    /// Refused; the reason was shown.
    Failed,
}

impl Mark {
    /// The one-char mark shown after the message.
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Queued => "…",
            Mark::Sent => "○",
            Mark::Delivered => "◐",
            Mark::Done => "●",
            Mark::Failed => "✗",
        }
    }
}

/// Whether a message came from a history pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    /// Arrived live.
    Live,
    /// From history, not seen before.
    History,
    /// From history, already seen in an earlier run (shown dimmed, not counted).
    Seen,
}

/// One line of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message.
    Msg {
        /// Local time, `HH:MM:SS`.
        time: String,
        /// Its author.
        from: Ulid,
        /// The content, control characters escaped.
        text: String,
        /// A `/me` action.
        action: bool,
        /// Its id, for marks and acks.
        id: Ulid,
        /// Live or from history.
        age: Age,
    },
    /// Something that happened.
    Info {
        /// Local time.
        time: String,
        /// What.
        text: String,
    },
    /// An error or a refusal.
    Error {
        /// Local time.
        time: String,
        /// What.
        text: String,
    },
}

/// A window: what it shows and what it holds.
#[derive(Debug, Clone)]
pub struct Window {
    /// What it is for.
    pub target: Target,
    /// Its lines, oldest first.
    pub entries: Vec<Entry>,
    /// Messages that arrived while it was not the current window.
    pub unread: usize,
    /// One of them named this user.
    pub mention: bool,
    /// Rows scrolled back from the bottom (0: following new lines).
    pub scroll: usize,
}

/// Lines kept per window.
const WINDOW_LINES: usize = 5_000;

/// The connection, as shown in the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Connecting for the first time.
    Connecting,
    /// Signed in.
    Connected,
    /// Lost; the next attempt is at this time (ms, the driver's clock).
    Waiting {
        /// When the next attempt starts.
        at_ms: u64,
        /// Why the connection was lost, or the last attempt failed.
        why: String,
    },
    /// An attempt is under way.
    Reconnecting,
}

/// What the view knows of a channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    /// Its name, as created.
    pub name: String,
    /// Its leader.
    pub leader: Option<Ulid>,
    /// It accepts messages.
    pub healthy: bool,
    /// Online members (from `CH_STATUS`).
    pub online: u64,
    /// Members: from `CH_MEMBERS` (`/names`), and joins, authors, ackers and voters seen since.
    pub members: BTreeSet<Ulid>,
}

/// A line typed that waits to be sent.
#[derive(Debug, Clone)]
struct Queued {
    target: Target,
    id: Ulid,
    body: Body,
}

/// What a `/join` or `/new` under way waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SwitchTo {
    /// `CH_JOIN` of this channel.
    Join(Ulid),
    /// `/join NAME` of a channel not in the directory: `CH_LST` first.
    Lookup(String),
    /// `CH_NEW` of this name.
    New(String),
}

/// A `/join` or `/new` under way: lines typed meanwhile wait for it.
#[derive(Debug, Clone)]
struct Switch {
    to: SwitchTo,
    /// The command as typed, for messages.
    typed: String,
    /// The nonce of the command that asked (`CH_JOIN`, `CH_NEW`, `CH_LST`),
    /// once written: an `ERR` naming it ends the switch.
    nonce: Option<u64>,
    /// When it was (re)asked, in the driver's ms: it is given up after
    /// [`SWITCH_TIMEOUT_MS`] without an answer.
    since_ms: u64,
}

impl Switch {
    fn new(to: SwitchTo, typed: &str, now: &Now) -> Switch {
        Switch { to, typed: typed.trim().to_owned(), nonce: None, since_ms: now.ms }
    }
}

/// A `/join` or `/new` not answered in this long (connected) is given up:
/// the lines that waited for it are handled.
pub const SWITCH_TIMEOUT_MS: u64 = 10_000;

/// What handling a line produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    /// Commands to send now.
    pub send: Vec<Command>,
    /// End the client.
    pub quit: bool,
}

/// The time an event or a line is handled at.
#[derive(Debug, Clone)]
pub struct Now {
    /// The driver's clock, in ms.
    pub ms: u64,
    /// Local time, `HH:MM:SS`.
    pub local: String,
}

/// Everything the client shows.
#[derive(Debug)]
pub struct Chat {
    me: Ulid,
    names: HashMap<Ulid, String>,
    online: HashSet<Ulid>,
    /// Every channel known by name (lower-cased): id and name.
    directory: HashMap<String, (Ulid, String)>,
    /// Channels this client is in.
    channels: HashMap<Ulid, ChannelInfo>,
    windows: Vec<Window>,
    current: usize,
    marks: HashMap<Ulid, Mark>,
    /// Own channel messages not yet committed: their text, for the plain mode's line.
    own_text: HashMap<Ulid, String>,
    acks: HashMap<Ulid, BTreeSet<Ulid>>,
    /// Own private messages: to whom.
    private_to: HashMap<Ulid, Ulid>,
    queue: Vec<Queued>,
    /// Nonce of a sent message → its id (an `ERR` names the nonce).
    nonces: HashMap<u64, Ulid>,
    /// Message ids shown, per channel: a pull does not show them twice.
    shown: HashSet<Ulid>,
    /// Channel → the pull shows everything (an explicit `/pull`).
    replay: HashSet<Ulid>,
    /// Channel → the last message seen in an earlier run was passed in this pull.
    passed_seen: HashSet<Ulid>,
    /// Channel → a history separator was shown for the pull under way.
    history_open: HashSet<Ulid>,
    /// The state kept between runs.
    pub seen: Seen,
    /// `seen` changed since it was last saved.
    pub seen_dirty: bool,
    /// The last seen state when the client started: what counts as already read.
    seen_at_start: Seen,
    /// A `/join` or `/new` under way: lines typed meanwhile wait for it
    /// (a script that joins and then types must not race the server). Kept
    /// across a reconnection, and asked again.
    switch: Option<Switch>,
    /// Those lines.
    deferred: Vec<String>,
    /// Own messages written and not yet relayed, acknowledged or committed,
    /// in the order sent: queued again (same `msg_id`) if the connection
    /// is lost.
    in_flight: Vec<Queued>,
    /// Messages sent again after a reconnection: `duplicate_msg` about one
    /// means the server already had it.
    resent: HashSet<Ulid>,
    /// Channels whose pull (after connecting, or `/pull`) is under way: a
    /// live commit meanwhile does not move what was seen.
    pulling: HashSet<Ulid>,
    /// Channel → the last own-shown message committed live during its pull,
    /// recorded as seen when the pull ends (unless the pull held it).
    late_commit: HashMap<Ulid, Ulid>,
    /// Nonce of a `CH_PULL` written → its channel (an `ERR` ends the pull).
    pull_nonces: HashMap<u64, Ulid>,
    /// `LST_CH` pages were asked for by the user (shown), not by `/join`.
    listing: bool,
    /// `CH_MEMBERS` pages gathered so far, per channel (`/names`).
    member_pages: HashMap<Ulid, Vec<sigil_proto::event::UserEntry>>,
    /// `USR_LST` pages: the user asked (shown in full).
    max_payload: usize,
    /// The connection, for the status line.
    pub connection: Connection,
    /// The server's name, once known.
    pub server_name: String,
    /// Lines for the plain mode, in order.
    outbox: Vec<String>,
    /// The reference behaviour.
    pub agent: Agent,
    /// The session under way, once connected: a `MSG` stamped before it
    /// began is a replay when the server did not bind it (PROTOCOL.md §7.10).
    session: Option<SessionInfo>,
    /// The server's `skew_s`, once its `SINFO` said.
    skew_s: u64,
}

/// Fatal `ERR` codes: the client ends (reconnecting would not help, or
/// would take the session back from a newer one).
pub const FATAL: &[&str] = &["auth_failed", "account_removed", "session_replaced"];

impl Chat {
    /// A view for the account `me`, with what earlier runs saw.
    pub fn new(me: Ulid, my_name: &str, seed: u64, seen: Seen) -> Chat {
        let mut names = HashMap::new();
        names.insert(me, my_name.to_owned());
        Chat {
            me,
            names,
            online: HashSet::new(),
            directory: HashMap::new(),
            channels: HashMap::new(),
            windows: vec![Window { target: Target::Status, entries: Vec::new(), unread: 0, mention: false, scroll: 0 }],
            current: 0,
            marks: HashMap::new(),
            own_text: HashMap::new(),
            acks: HashMap::new(),
            private_to: HashMap::new(),
            queue: Vec::new(),
            nonces: HashMap::new(),
            shown: HashSet::new(),
            replay: HashSet::new(),
            passed_seen: HashSet::new(),
            history_open: HashSet::new(),
            seen_at_start: seen.clone(),
            seen,
            seen_dirty: false,
            switch: None,
            deferred: Vec::new(),
            in_flight: Vec::new(),
            resent: HashSet::new(),
            pulling: HashSet::new(),
            late_commit: HashMap::new(),
            pull_nonces: HashMap::new(),
            listing: true,
            member_pages: HashMap::new(),
            max_payload: sigil_proto::wire::codec::DEFAULT_MAX_PAYLOAD,
            connection: Connection::Connecting,
            server_name: String::new(),
            outbox: Vec::new(),
            agent: Agent::new(me, seed),
            session: None,
            skew_s: DEFAULT_SKEW_S,
        }
    }

    // ---- what the renderers read ----

    /// This account.
    pub fn me(&self) -> Ulid {
        self.me
    }

    /// The windows, in order (window N is `windows()[N - 1]`).
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The index of the current window.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The current window.
    pub fn current_window(&self) -> &Window {
        &self.windows[self.current]
    }

    /// A person's name; the tail of the id only while the name is unknown.
    pub fn name(&self, id: &Ulid) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| format!("…{}", &id.to_string()[20..]))
    }

    /// Is this person online?
    pub fn is_online(&self, id: &Ulid) -> bool {
        self.online.contains(id)
    }

    /// A channel this client is in.
    pub fn channel(&self, id: &Ulid) -> Option<&ChannelInfo> {
        self.channels.get(id)
    }

    /// `#name` of a channel.
    pub fn channel_name(&self, id: &Ulid) -> String {
        let name = self
            .channels
            .get(id)
            .map(|c| c.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| self.directory.values().find(|(c, _)| c == id).map(|(_, n)| n.clone()));
        match name {
            Some(n) => format!("#{}", n.trim_start_matches('#')),
            None => "#?".into(),
        }
    }

    /// A window's title: `sigil`, `#channel` or a person's name.
    pub fn title(&self, target: Target) -> String {
        match target {
            Target::Status => {
                if self.server_name.is_empty() {
                    "sigil".into()
                } else {
                    self.server_name.clone()
                }
            }
            Target::Channel(c) => self.channel_name(&c),
            Target::Private(p) => self.name(&p),
        }
    }

    /// The mark of an own message.
    pub fn mark(&self, id: &Ulid) -> Option<Mark> {
        self.marks.get(id).copied()
    }

    /// Lines typed and waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The plain mode's lines since the last call.
    pub fn drain_outbox(&mut self) -> Vec<String> {
        std::mem::take(&mut self.outbox)
    }

    // ---- windows ----

    fn window_of(&mut self, target: Target) -> usize {
        match self.windows.iter().position(|w| w.target == target) {
            Some(i) => i,
            None => {
                self.windows.push(Window { target, entries: Vec::new(), unread: 0, mention: false, scroll: 0 });
                self.windows.len() - 1
            }
        }
    }

    /// Makes window `i` (0-based) the current one.
    pub fn switch_to(&mut self, i: usize) -> bool {
        if i >= self.windows.len() {
            return false;
        }
        self.current = i;
        let w = &mut self.windows[i];
        w.unread = 0;
        w.mention = false;
        true
    }

    /// Ctrl-N.
    pub fn next_window(&mut self) {
        self.switch_to((self.current + 1) % self.windows.len());
    }

    /// Ctrl-P.
    pub fn previous_window(&mut self) {
        self.switch_to((self.current + self.windows.len() - 1) % self.windows.len());
    }

    /// PgUp (positive) or PgDn (negative) by `rows`.
    pub fn scroll(&mut self, rows: isize) {
        let w = &mut self.windows[self.current];
        w.scroll = w.scroll.saturating_add_signed(rows);
    }

    /// Keeps the scroll within what there is to show (the renderer knows).
    pub fn clamp_scroll(&mut self, max: usize) {
        let w = &mut self.windows[self.current];
        w.scroll = w.scroll.min(max);
    }

    fn push(&mut self, target: Target, entry: Entry, counts: bool) {
        let i = self.window_of(target);
        let mention = match &entry {
            Entry::Msg { text, from, .. } => *from != self.me && mentions(text, &self.name(&self.me)),
            _ => false,
        };
        let w = &mut self.windows[i];
        if w.scroll > 0 {
            w.scroll += 1;
        }
        w.entries.push(entry);
        if w.entries.len() > WINDOW_LINES {
            w.entries.remove(0);
        }
        if i != self.current && counts {
            w.unread += 1;
            w.mention |= mention;
        }
    }

    fn info(&mut self, target: Target, now: &Now, text: String) {
        self.outbox.push(format!("[{}] {text}", now.local));
        self.push(target, Entry::Info { time: now.local.clone(), text }, false);
    }

    fn error(&mut self, target: Target, now: &Now, text: String) {
        self.outbox.push(format!("[{}] ! {text}", now.local));
        self.push(target, Entry::Error { time: now.local.clone(), text }, false);
    }

    /// Something to show in the current window (local notes, help).
    pub fn note(&mut self, now: &Now, text: String) {
        let t = self.current_window().target;
        self.info(t, now, text);
    }

    fn complain(&mut self, now: &Now, text: String) {
        let t = self.current_window().target;
        self.error(t, now, text);
    }

    // ---- connection ----

    /// A session started: the commands to send first, the `/join` or
    /// `/new` that was under way (asked again), and the queued private
    /// messages.
    pub fn connected(&mut self, now: &Now, first: bool) -> Vec<Command> {
        self.connection = Connection::Connected;
        if !first {
            self.agent.reconnected();
            for c in self.channels.values_mut() {
                c.leader = None;
                c.healthy = false;
            }
            self.info(Target::Status, now, "reconnected".into());
        }
        let mut send = vec![Command::Info, Command::LstUsr { all: true }, Command::ChLst];
        self.listing = first;
        if let Some(s) = &mut self.switch {
            s.nonce = None;
            s.since_ms = now.ms;
            match &s.to {
                SwitchTo::Join(id) => send.push(Command::ChJoin { id: *id }),
                // The CH_LST above answers it.
                SwitchTo::Lookup(_) => {}
                SwitchTo::New(name) => send.push(Command::ChNew { name: name.clone() }),
            }
        }
        send.extend(self.flush_queue(None));
        send
    }

    /// What losing the connection changes, whatever comes next.
    fn went_offline(&mut self, now: &Now) {
        for c in self.channels.values_mut() {
            c.healthy = false;
        }
        // The `/join` or `/new` under way (and the lines waiting for it) is
        // asked again once reconnected; an answer to the old one cannot come.
        if let Some(s) = &mut self.switch {
            s.nonce = None;
        }
        self.member_pages.clear();
        self.pulling.clear();
        self.late_commit.clear();
        self.pull_nonces.clear();
        // Written but perhaps never read by the server: sent again, with the same id.
        let back: Vec<Queued> = std::mem::take(&mut self.in_flight)
            .into_iter()
            .filter(|q| self.marks.get(&q.id) == Some(&Mark::Sent))
            .collect();
        if !back.is_empty() {
            for q in &back {
                self.marks.insert(q.id, Mark::Queued);
                self.resent.insert(q.id);
            }
            if self.resent.len() > 10_000 {
                self.resent.clear();
                self.resent.extend(back.iter().map(|q| q.id));
            }
            let n = back.len();
            let text = format!(
                "{} sent just before the connection was lost will be sent again",
                if n == 1 { "1 line".to_owned() } else { format!("{n} lines") }
            );
            self.info(Target::Status, now, text);
            let later = std::mem::take(&mut self.queue);
            self.queue = back;
            self.queue.extend(later);
        }
    }

    /// The connection was lost; the next attempt is at `at_ms`.
    pub fn disconnected(&mut self, now: &Now, why: &str, at_ms: u64) {
        let was_connected = self.connection == Connection::Connected;
        self.connection = Connection::Waiting { at_ms, why: why.to_owned() };
        let secs = at_ms.saturating_sub(now.ms).div_ceil(1000);
        let text = if was_connected {
            format!("connection lost ({why}); reconnecting in {secs}s (Enter or Ctrl-R: now)")
        } else {
            format!("cannot connect ({why}); trying again in {secs}s (Enter or Ctrl-R: now)")
        };
        self.info(Target::Status, now, text);
        self.went_offline(now);
    }

    /// The connection was lost while the client was ending: no reconnection.
    pub fn lost_at_the_end(&mut self, now: &Now, why: &str) {
        self.connection = Connection::Waiting { at_ms: now.ms, why: why.to_owned() };
        self.info(Target::Status, now, format!("connection lost ({why})"));
        self.went_offline(now);
    }

    /// Something typed is still on its way and could go out shortly: a
    /// `/join` or `/new` under way (and the lines waiting for it), or lines
    /// queued for a channel this client is in (waiting for a leader). At the
    /// end of input the driver waits for these, for a bounded time.
    pub fn busy(&self) -> bool {
        self.connection == Connection::Connected
            && (self.switch.is_some()
                || self.queue.iter().any(|q| matches!(q.target, Target::Channel(c) if self.channels.contains_key(&c))))
    }

    /// Lines typed and not sent: queued, or waiting for a `/join` or `/new`.
    pub fn unsent(&self) -> usize {
        self.queue.len() + self.deferred.len()
    }

    /// The client ends: says what was typed and not sent, and returns what
    /// to send last (`DCNN`, when connected).
    pub fn sign_off(&mut self, now: &Now) -> Vec<Command> {
        let (queued, waiting) = (self.queue.len(), self.deferred.len());
        if queued + waiting > 0 {
            let mut parts = Vec::new();
            if queued > 0 {
                parts.push(format!("{queued} queued"));
            }
            if waiting > 0 {
                let what = self.switch.as_ref().map_or_else(|| "/join".to_owned(), |s| s.typed.clone());
                parts.push(format!("{waiting} waiting for {what}"));
            }
            let n = queued + waiting;
            let lines = if n == 1 { "1 line was".to_owned() } else { format!("{n} lines were") };
            self.complain(now, format!("{lines} not sent ({})", parts.join(", ")));
        }
        self.queue.clear();
        self.deferred.clear();
        self.switch = None;
        if self.connection == Connection::Connected {
            vec![Command::Dcnn]
        } else {
            Vec::new()
        }
    }

    /// Time passed: the reference behaviour's timers, and a `/join` or
    /// `/new` that got no answer is given up.
    pub fn tick(&mut self, now: &Now) -> Vec<Command> {
        let mut send = self.agent.tick(now.ms);
        self.expire_switch(now, &mut send);
        send
    }

    /// Gives up a `/join` or `/new` not answered in [`SWITCH_TIMEOUT_MS`].
    fn expire_switch(&mut self, now: &Now, send: &mut Vec<Command>) {
        let Some(s) = &self.switch else { return };
        if self.connection != Connection::Connected || now.ms < s.since_ms + SWITCH_TIMEOUT_MS {
            return;
        }
        let text = format!("no answer to {} in {}s; going on without it", s.typed, SWITCH_TIMEOUT_MS / 1000);
        self.complain(now, text);
        self.switched(now, send);
    }

    /// The session that is starting: what [`Chat::connected`] follows.
    pub fn session_started(&mut self, session: SessionInfo) {
        self.session = Some(session);
    }

    /// A `MSG` stamped this far back was sent before the session began:
    /// private messages go to online sessions only (PROTOCOL.md §6.1), and
    /// the server stamps them at relay time, at most `skew_s` before the
    /// `CNN` timestamp it accepted. In a bound session no replay verifies,
    /// so none is looked for.
    fn sent_before_session(&self, timestamp: u64) -> bool {
        match self.session {
            Some(s) if !s.bound => timestamp.saturating_add(self.skew_s) < s.cnn.timestamp,
            _ => false,
        }
    }

    /// A fatal `ERR` arrived in a session the server did not bind: it may
    /// be one recorded in an earlier session, so it does not end the client
    /// (PROTOCOL.md §7.10); if the server did end the session, it closes the
    /// connection and the client reconnects.
    pub fn unverified_fatal(&mut self, e: &ErrPayload, now: &Now) {
        let text = format!(
            "* the server sent ERR {} ({}), but this session is not bound to its sign-in (the server \
             does not speak §7.10), so it may be a replay from an earlier session: carrying on",
            e.code, e.reason
        );
        self.error(Target::Status, now, text);
    }

    /// What ends the client for this `ERR`, in words, if it is fatal.
    pub fn fatal_reason(&self, e: &ErrPayload) -> Option<String> {
        let me = self.name(&self.me);
        let words = match e.code.as_str() {
            "session_replaced" => format!("{me} signed in from another client, which took this session over"),
            "account_removed" => format!("the account {me} was removed from the server"),
            "auth_failed" => format!(
                "the server no longer accepts {me}'s key (it was rotated or the account is gone): \
                 use the new .cred file"
            ),
            _ => return None,
        };
        Some(format!("signed out: {words} ({}: {})", e.code, e.reason))
    }

    /// Sends what waited for `channel` (all channels and private
    /// conversations when `None`) if it can go now.
    fn flush_queue(&mut self, channel: Option<Ulid>) -> Vec<Command> {
        if self.connection != Connection::Connected {
            return Vec::new();
        }
        let mut send = Vec::new();
        let mut keep = Vec::new();
        for q in std::mem::take(&mut self.queue) {
            if self.marks.get(&q.id) == Some(&Mark::Done) {
                // Sent again after a reconnection, and found committed meanwhile.
                continue;
            }
            let ready = match q.target {
                Target::Channel(c) => {
                    (channel.is_none() || channel == Some(c)) && self.channels.get(&c).is_some_and(|c| c.healthy)
                }
                Target::Private(_) => true,
                Target::Status => false,
            };
            if !ready {
                keep.push(q);
                continue;
            }
            self.marks.insert(q.id, Mark::Sent);
            send.push(match q.target {
                Target::Channel(id) => Command::ChMsg { id, msg_id: q.id, msg: q.body.clone() },
                Target::Private(to) => Command::PvMsg { to, msg_id: q.id, msg: q.body.clone() },
                Target::Status => continue,
            });
            self.in_flight.push(q);
        }
        self.queue = keep;
        send
    }

    /// The driver wrote `command` with `nonce`: an `ERR` about it can name
    /// its message, the `/join` or `/new` under way, or a pull.
    pub fn sent(&mut self, command: &Command, nonce: u64) {
        match command {
            Command::ChMsg { msg_id, .. } | Command::PvMsg { msg_id, .. } => {
                self.nonces.insert(nonce, *msg_id);
                if self.nonces.len() > 10_000 {
                    self.nonces.clear();
                }
            }
            Command::ChPull { id, .. } => {
                self.pull_nonces.insert(nonce, *id);
                if self.pull_nonces.len() > 10_000 {
                    self.pull_nonces.clear();
                }
            }
            Command::ChJoin { .. } | Command::ChNew { .. } | Command::ChLst => {
                if let Some(s) = &mut self.switch {
                    let asks = match (&s.to, command) {
                        (SwitchTo::Join(want), Command::ChJoin { id }) => want == id,
                        (SwitchTo::New(want), Command::ChNew { name }) => want == name,
                        (SwitchTo::Lookup(_), Command::ChLst) => true,
                        _ => false,
                    };
                    if asks {
                        s.nonce = Some(nonce);
                    }
                }
            }
            _ => {}
        }
    }

    /// An own message got further than written: it is no longer at risk
    /// of being lost with the connection.
    fn progress(&mut self, id: Ulid, mark: Mark) {
        self.marks.insert(id, mark);
        if mark != Mark::Sent && mark != Mark::Queued {
            self.in_flight.retain(|q| q.id != id);
        }
    }

    /// Saves nothing itself: the driver writes `seen` when `seen_dirty`.
    fn saw(&mut self, channel: Ulid, msg: Ulid) {
        if self.seen.last.get(&channel) != Some(&msg) {
            self.seen.last.insert(channel, msg);
            self.seen_dirty = true;
        }
    }

    // ---- events ----

    /// Handles one server event; returns the commands to send.
    pub fn on_event(&mut self, event: ServerEvent, now: &Now) -> Vec<Command> {
        if let ServerEvent::Msg(m) = &event {
            if self.sent_before_session(m.timestamp) {
                // Neither shown nor acknowledged: a replay has no delivery on record.
                let text = format!(
                    "* a private message from {} stamped {} was sent before this session began: \
                     a replay, not shown",
                    self.name(&m.from),
                    local_time_of(m.timestamp)
                );
                self.error(Target::Status, now, text);
                return Vec::new();
            }
        }
        let mut send = self.agent.on_event(&event, now.ms);
        match event {
            ServerEvent::Sinfo(s) => {
                self.skew_s = s.skew_s;
                self.max_payload = usize::try_from(s.max_payload).unwrap_or(usize::MAX);
                self.server_name.clone_from(&s.server_name);
                let text = format!(
                    "connected to {} (sigil {}, protocol {}; messages up to {} bytes)",
                    s.server_name, s.version, s.protocol_version, s.max_payload
                );
                self.info(Target::Status, now, text);
            }
            ServerEvent::Ucnn(u) => {
                self.names.insert(u.id, u.name.clone());
                self.online.insert(u.id);
                if u.id != self.me {
                    self.presence(u.id, now, format!("{} is online", u.name));
                }
            }
            ServerEvent::Udcnn(u) => {
                self.names.insert(u.id, u.name.clone());
                self.online.remove(&u.id);
                self.presence(u.id, now, format!("{} went offline", u.name));
            }
            ServerEvent::UsrLst(l) => {
                for u in &l.users {
                    self.names.insert(u.id, u.name.clone());
                    if u.status == "online" {
                        self.online.insert(u.id);
                    } else {
                        self.online.remove(&u.id);
                    }
                }
                let with = |status: &str| -> Vec<String> {
                    l.users.iter().filter(|u| u.status == status).map(|u| u.name.clone()).collect()
                };
                let (on, off) = (with("online"), with("offline"));
                self.info(Target::Status, now, format!("online: {}", on.join(", ")));
                if !off.is_empty() {
                    self.info(Target::Status, now, format!("offline: {}", off.join(", ")));
                }
            }
            ServerEvent::UsrAdd(u) => {
                self.info(Target::Status, now, format!("* new account {}", u.name));
                self.names.insert(u.id, u.name);
            }
            ServerEvent::UsrRmd(u) => {
                let text = format!("* account {} was removed", self.name(&u.id));
                self.online.remove(&u.id);
                self.info(Target::Status, now, text);
            }
            ServerEvent::UsrHsk(h) => {
                let text = format!("* handshake with {}", self.name(&h.id));
                self.info(Target::Private(h.id), now, text);
            }
            // Sent again by a sender that did not learn of its ack: acked (the agent), not shown twice.
            ServerEvent::Msg(m) if !self.shown.insert(m.msg_id) => {}
            ServerEvent::Msg(m) => {
                let text = m.msg.to_display();
                let (action, shown) = action_of(&text);
                let name = self.name(&m.from);
                self.outbox.push(if action {
                    format!("[{}] * {name} (private) {shown}", now.local)
                } else {
                    format!("[{}] <{name}> (private) {shown}", now.local)
                });
                let entry = Entry::Msg {
                    time: now.local.clone(),
                    from: m.from,
                    text: shown.to_owned(),
                    action,
                    id: m.msg_id,
                    age: Age::Live,
                };
                self.push(Target::Private(m.from), entry, true);
            }
            ServerEvent::MsgAck(a) => {
                if self.marks.get(&a.msg_id).is_some_and(|m| *m != Mark::Done) {
                    self.progress(a.msg_id, Mark::Done);
                    self.acks.entry(a.msg_id).or_default().insert(a.by);
                    self.outbox.push(format!("[{}] ✓ {} received your message", now.local, self.name(&a.by)));
                }
            }
            ServerEvent::ChMembers(m) => {
                let gathered = self.member_pages.entry(m.id).or_default();
                // Pages are sorted by name: one that starts at or before the
                // last gathered entry is a new list (another `/names`).
                let key = |u: &sigil_proto::event::UserEntry| (u.name.to_ascii_lowercase(), u.id);
                if let (Some(last), Some(first)) = (gathered.last(), m.members.first()) {
                    if key(first) <= key(last) {
                        gathered.clear();
                    }
                }
                gathered.extend(m.members);
                if !m.more {
                    let members = self.member_pages.remove(&m.id).unwrap_or_default();
                    self.show_members(m.id, members, now);
                }
            }
            ServerEvent::LstCh(l) => {
                for c in &l.channels {
                    self.directory.insert(c.name.to_ascii_lowercase(), (c.id, c.name.clone()));
                }
                if self.listing {
                    let list: Vec<String> = l
                        .channels
                        .iter()
                        .map(|c| {
                            let leader = c.leader.map(|l| format!(", led by {}", self.name(&l))).unwrap_or_default();
                            let mine = if self.channels.contains_key(&c.id) { ", joined" } else { "" };
                            format!("#{} ({}{leader}{mine})", c.name.trim_start_matches('#'), c.status)
                        })
                        .collect();
                    let text = if list.is_empty() {
                        "no channels yet: /new NAME creates one".into()
                    } else {
                        format!("channels: {}", list.join("  "))
                    };
                    let t = self.current_window().target;
                    self.info(t, now, text);
                }
                if !l.more {
                    self.listing = false;
                    let lookup = match &self.switch {
                        Some(Switch { to: SwitchTo::Lookup(name), .. }) => Some(name.clone()),
                        _ => None,
                    };
                    if let Some(name) = lookup {
                        match self.directory.get(&name.to_ascii_lowercase()).map(|(id, _)| *id) {
                            Some(id) if self.channels.contains_key(&id) => {
                                // In it already (the list came after a reconnection): switch to it.
                                let i = self.window_of(Target::Channel(id));
                                self.switch_to(i);
                                self.switched(now, &mut send);
                            }
                            Some(id) => {
                                if let Some(s) = &mut self.switch {
                                    (s.to, s.nonce, s.since_ms) = (SwitchTo::Join(id), None, now.ms);
                                }
                                send.push(Command::ChJoin { id });
                            }
                            None => {
                                self.complain(now, format!("no channel named #{name}; /new {name} creates it"));
                                self.switched(now, &mut send);
                            }
                        }
                    }
                }
            }
            ServerEvent::ChUjoin(u) => {
                if u.user == self.me {
                    self.channels.entry(u.channel).or_default().members.insert(u.user);
                    let ends = match self.switch.as_ref().map(|s| &s.to) {
                        Some(SwitchTo::New(name)) => {
                            let name = name.clone();
                            self.directory.entry(name.to_ascii_lowercase()).or_insert((u.channel, name.clone()));
                            if let Some(c) = self.channels.get_mut(&u.channel) {
                                if c.name.is_empty() {
                                    c.name = name;
                                }
                            }
                            true
                        }
                        Some(SwitchTo::Join(id)) => *id == u.channel,
                        Some(SwitchTo::Lookup(_)) | None => false,
                    };
                    let i = self.window_of(Target::Channel(u.channel));
                    self.switch_to(i);
                    if ends {
                        self.switched(now, &mut send);
                    }
                    let text = format!("* you joined {}", self.channel_name(&u.channel));
                    self.outbox.push(format!(
                        "[{}] * {} joined {}",
                        now.local,
                        self.name(&u.user),
                        self.channel_name(&u.channel)
                    ));
                    self.push(Target::Channel(u.channel), Entry::Info { time: now.local.clone(), text }, false);
                } else {
                    if let Some(c) = self.channels.get_mut(&u.channel) {
                        c.members.insert(u.user);
                    }
                    let text = format!("* {} joined {}", self.name(&u.user), self.channel_name(&u.channel));
                    self.info(Target::Channel(u.channel), now, text);
                }
            }
            ServerEvent::ChUleave(u) => {
                let text = format!("* {} left {}", self.name(&u.user), self.channel_name(&u.channel));
                if u.user == self.me {
                    self.info(Target::Status, now, text);
                    let name = self.channel_name(&u.channel);
                    self.channels.remove(&u.channel);
                    let (dropped, kept): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut self.queue)
                        .into_iter()
                        .partition(|q| q.target == Target::Channel(u.channel));
                    self.queue = kept;
                    if !dropped.is_empty() {
                        for q in &dropped {
                            self.progress(q.id, Mark::Failed);
                            self.own_text.remove(&q.id);
                        }
                        let n = dropped.len();
                        let lines =
                            if n == 1 { "1 queued line was".to_owned() } else { format!("{n} queued lines were") };
                        self.error(Target::Status, now, format!("{lines} not sent: you left {name}"));
                    }
                    self.close(Target::Channel(u.channel));
                } else {
                    if let Some(c) = self.channels.get_mut(&u.channel) {
                        c.members.remove(&u.user);
                    }
                    self.info(Target::Channel(u.channel), now, text);
                }
            }
            ServerEvent::ChStatus(s) => {
                self.directory.insert(s.name.to_ascii_lowercase(), (s.id, s.name.clone()));
                let fresh = !self.channels.contains_key(&s.id);
                let healthy = s.status == "healthy";
                let c = self.channels.entry(s.id).or_default();
                let changed = fresh || c.leader != s.leader || c.healthy != healthy;
                c.name.clone_from(&s.name);
                c.leader = s.leader;
                c.healthy = healthy;
                c.online = s.online;
                if let Some(l) = s.leader {
                    c.members.insert(l);
                }
                let i = self.window_of(Target::Channel(s.id));
                if fresh && self.windows[self.current].target == Target::Status {
                    self.switch_to(i);
                }
                if changed {
                    let leader = s
                        .leader
                        .map(|l| format!("led by {}", self.name(&l)))
                        .unwrap_or_else(|| "no leader yet (electing one)".into());
                    let name = s.name.trim_start_matches('#');
                    self.info(
                        Target::Channel(s.id),
                        now,
                        format!("* #{name}: {}, {leader}, {} online", s.status, s.online),
                    );
                }
                if healthy {
                    send.extend(self.flush_queue(Some(s.id)));
                }
            }
            ServerEvent::ChVote(v) => {
                if let Some(c) = self.channels.get_mut(&v.channel) {
                    c.members.insert(v.user);
                }
            }
            ServerEvent::ChElected(e) => {
                if let Some(c) = self.channels.get_mut(&e.channel) {
                    c.members.insert(e.leader);
                    c.leader = Some(e.leader);
                }
            }
            ServerEvent::ChMsg(m) => self.channel_message(m, now),
            ServerEvent::ChMsgAck(a) => {
                for id in std::iter::once(&a.id).chain(&a.ids) {
                    let acks = self.acks.entry(*id).or_default();
                    acks.insert(a.user);
                    acks.extend(a.users.iter().copied());
                    if self.marks.get(id) == Some(&Mark::Sent) {
                        self.progress(*id, Mark::Delivered);
                    }
                }
            }
            ServerEvent::ChMsgCommit(c) => {
                let pulling = self.pulling.contains(&c.channel);
                for id in std::iter::once(&c.id).chain(&c.ids) {
                    self.acks.entry(*id).or_default().extend(c.acks.iter().copied());
                    if let Some(ch) = self.channels.get_mut(&c.channel) {
                        ch.members.extend(c.acks.iter().copied());
                    }
                    self.committed(c.channel, *id, now);
                    // Seen only if shown; during the pull, once the pull is through.
                    if self.shown.contains(id) {
                        if pulling {
                            self.late_commit.insert(c.channel, *id);
                        } else {
                            self.saw(c.channel, *id);
                        }
                    }
                }
                if !pulling {
                    self.passed_seen.insert(c.channel);
                }
            }
            ServerEvent::ChAppend(a) => self.history(a, now),
            ServerEvent::ChMsgConfirm(_) => {}
            ServerEvent::Err(e) => {
                if let Some(ch) = e.nonce_ref.and_then(|n| self.pull_nonces.remove(&n)) {
                    self.pull_ended(ch);
                }
                let answers_switch = self.switch.as_ref().is_some_and(|s| s.nonce.is_some() && s.nonce == e.nonce_ref);
                if answers_switch {
                    self.switch_refused(e, now, &mut send);
                } else {
                    self.refused(e, now);
                }
            }
            ServerEvent::Other { command, .. } => {
                self.info(Target::Status, now, format!("({command} from the server, not understood)"))
            }
        }
        for c in &send {
            if let Command::ChPull { id, .. } = c {
                self.pulling.insert(*id);
            }
        }
        send
    }

    /// The `ERR` that answers the `/join` or `/new` under way: it ends it.
    /// Asked again after a reconnection, the first may have been done: being
    /// a member already is then success.
    fn switch_refused(&mut self, e: ErrPayload, now: &Now, send: &mut Vec<Command>) {
        let to = self.switch.as_ref().map(|s| s.to.clone());
        let done = match (&to, e.code.as_str()) {
            (Some(SwitchTo::Join(id)), "already_member") => Some(*id),
            (Some(SwitchTo::New(name)), "name_taken") => {
                self.channels.iter().find(|(_, c)| c.name.eq_ignore_ascii_case(name)).map(|(id, _)| *id)
            }
            _ => None,
        };
        match done {
            Some(id) => {
                let i = self.window_of(Target::Channel(id));
                self.switch_to(i);
            }
            None => self.refused(e, now),
        }
        self.switched(now, send);
    }

    /// A pull is through (its last page, or refused).
    fn pull_ended(&mut self, ch: Ulid) {
        self.pulling.remove(&ch);
        self.passed_seen.insert(ch);
        if let Some(id) = self.late_commit.remove(&ch) {
            self.saw(ch, id);
        }
    }

    /// The `/join` or `/new` under way ended: the lines typed meanwhile are handled now.
    fn switched(&mut self, now: &Now, send: &mut Vec<Command>) {
        if self.switch.take().is_none() {
            return;
        }
        let lines = std::mem::take(&mut self.deferred);
        for (i, line) in lines.iter().enumerate() {
            send.extend(self.on_line(line, now).send);
            if self.switch.is_some() {
                // Another switch: the rest waits for it.
                self.deferred.extend(lines[i + 1..].iter().cloned());
                break;
            }
        }
    }

    fn presence(&mut self, who: Ulid, now: &Now, text: String) {
        self.info(Target::Status, now, format!("* {text}"));
        if let Some(i) = self.windows.iter().position(|w| w.target == Target::Private(who)) {
            let time = now.local.clone();
            self.windows[i].entries.push(Entry::Info { time, text: format!("* {text}") });
        }
    }

    fn committed(&mut self, channel: Ulid, id: Ulid, now: &Now) {
        if let Some(text) = self.own_text.remove(&id) {
            self.progress(id, Mark::Done);
            let name = self.channel_name(&channel);
            self.outbox.push(format!("[{}] ✓ committed in {name}: {text}", now.local));
        }
    }

    fn channel_message(&mut self, m: ChMsg, now: &Now) {
        if let Some(c) = self.channels.get_mut(&m.id) {
            c.members.insert(m.from);
        }
        let text = m.msg.to_display();
        let (action, shown) = action_of(&text);
        let name = self.name(&m.from);
        let ch = self.channel_name(&m.id);
        self.outbox.push(if action {
            format!("[{}] {ch} * {name} {shown}", now.local)
        } else {
            format!("[{}] {ch} <{name}> {shown}", now.local)
        });
        if !self.shown.insert(m.msg_id) {
            // Our own message, shown when typed: it was relayed.
            if self.marks.get(&m.msg_id) == Some(&Mark::Sent) {
                self.progress(m.msg_id, Mark::Delivered);
            }
            return;
        }
        let entry = Entry::Msg {
            time: now.local.clone(),
            from: m.from,
            text: shown.to_owned(),
            action,
            id: m.msg_id,
            age: Age::Live,
        };
        self.push(Target::Channel(m.id), entry, m.from != self.me);
    }

    fn history(&mut self, a: sigil_proto::event::ChAppend, now: &Now) {
        let ch = a.id;
        let replay = self.replay.contains(&ch);
        if a.anchor.is_some() || !self.seen_at_start.last.contains_key(&ch) {
            self.passed_seen.insert(ch);
        }
        let name = self.channel_name(&ch);
        for m in &a.messages {
            self.acks.entry(m.id).or_default().extend(m.acks.iter().copied());
            if let Some(c) = self.channels.get_mut(&ch) {
                c.members.insert(m.from);
            }
            self.committed(ch, m.id, now);
            if self.late_commit.get(&ch) == Some(&m.id) {
                // The pull holds it: its last page says what was seen.
                self.late_commit.remove(&ch);
            }
            if !replay && !self.shown.insert(m.id) {
                continue;
            }
            let age = if replay || self.passed_seen.contains(&ch) { Age::History } else { Age::Seen };
            if self.seen_at_start.last.get(&ch) == Some(&m.id) {
                self.passed_seen.insert(ch);
            }
            let time = local_time_of(m.timestamp);
            let text = m.msg.to_display();
            let (action, shown) = action_of(&text);
            if age == Age::History {
                if self.history_open.insert(ch) {
                    let note = if replay { "history" } else { "history: new since you were last here" };
                    self.push(
                        Target::Channel(ch),
                        Entry::Info { time: now.local.clone(), text: format!("── {note} ──") },
                        false,
                    );
                }
                let who = self.name(&m.from);
                self.outbox.push(if action {
                    format!("[{time}] {name} (history) * {who} {shown}")
                } else {
                    format!("[{time}] {name} (history) <{who}> {shown}")
                });
            }
            let entry = Entry::Msg { time, from: m.from, text: shown.to_owned(), action, id: m.id, age };
            self.push(Target::Channel(ch), entry, age == Age::History && m.from != self.me);
        }
        if let Some(last) = a.messages.last() {
            self.saw(ch, last.id);
        }
        if !a.more {
            if self.history_open.remove(&ch) {
                self.push(
                    Target::Channel(ch),
                    Entry::Info { time: now.local.clone(), text: "── end of history ──".into() },
                    false,
                );
            }
            self.replay.remove(&ch);
            self.pull_ended(ch);
        }
    }

    fn refused(&mut self, e: ErrPayload, now: &Now) {
        let about = e.msg_id.or_else(|| e.nonce_ref.and_then(|n| self.nonces.remove(&n)));
        if let Some(id) = about {
            if e.code == "duplicate_msg" && self.resent.contains(&id) {
                // Sent again after a reconnection: the server had it already.
                if self.marks.get(&id) == Some(&Mark::Sent) {
                    self.progress(id, Mark::Delivered);
                }
                return;
            }
            if self.marks.contains_key(&id) {
                self.progress(id, Mark::Failed);
                self.own_text.remove(&id);
                let text = match e.code.as_str() {
                    "user_offline" => format!("not delivered: the person is offline ({})", e.reason),
                    "not_committed" => format!("not committed in time, dropped ({})", e.reason),
                    _ => format!("not sent: {}: {}", e.code, e.reason),
                };
                let target = self
                    .private_to
                    .get(&id)
                    .map(|p| Target::Private(*p))
                    .unwrap_or_else(|| self.current_window().target);
                self.error(target, now, text);
                return;
            }
        }
        self.complain(now, format!("{}: {}", e.code, e.reason));
    }

    // ---- lines ----

    /// Handles one typed line.
    pub fn on_line(&mut self, line: &str, now: &Now) -> Reaction {
        let mut r = Reaction::default();
        if line.trim().is_empty() {
            return r;
        }
        let parsed = commands::parse(line);
        if parsed != Line::Quit {
            self.expire_switch(now, &mut r.send);
        }
        if let Some(s) = &self.switch {
            if parsed != Line::Quit {
                if self.connection != Connection::Connected {
                    let text = format!("… waits for {} (once reconnected): {line}", s.typed);
                    self.note(now, text);
                }
                self.deferred.push(line.to_owned());
                return r;
            }
        }
        let target = self.current_window().target;
        let online = self.connection == Connection::Connected;
        match parsed {
            Line::Text(text) => self.say(target, Body::text(text), now, &mut r),
            Line::Me(action) => self.say(target, Body::text(format!("/me {action}")), now, &mut r),
            // The driver ends the client: `sign_off` says what was not sent.
            Line::Quit => r.quit = true,
            Line::Help(None) => {
                for l in commands::help() {
                    self.note(now, l);
                }
            }
            Line::Help(Some(c)) => self.note(now, commands::help_for(&c)),
            Line::Topic => self.note(now, commands::help_for("topic")),
            Line::Usage(u) => self.complain(now, u),
            Line::Who => r.send.push(Command::LstUsr { all: true }),
            Line::List => {
                self.listing = true;
                r.send.push(Command::ChLst);
            }
            Line::New(name) if !online => {
                self.complain(now, format!("offline: /new {name} needs the server; try again once reconnected"))
            }
            Line::New(name) => {
                let name = name.trim_start_matches('#').to_owned();
                self.switch = Some(Switch::new(SwitchTo::New(name.clone()), line, now));
                r.send.push(Command::ChNew { name });
            }
            Line::Join(name) => {
                let bare = name.trim_start_matches('#');
                match self.resolve_channel(bare) {
                    Some(id) if self.channels.contains_key(&id) => {
                        let i = self.window_of(Target::Channel(id));
                        self.switch_to(i);
                    }
                    _ if !online => self
                        .complain(now, format!("offline: /join {name} needs the server; try again once reconnected")),
                    Some(id) => {
                        self.switch = Some(Switch::new(SwitchTo::Join(id), line, now));
                        r.send.push(Command::ChJoin { id });
                    }
                    None => {
                        // Perhaps created since the last list: ask again.
                        self.switch = Some(Switch::new(SwitchTo::Lookup(bare.to_owned()), line, now));
                        r.send.push(Command::ChLst);
                    }
                }
            }
            Line::Part(name) => match (name, target) {
                (None, Target::Private(_)) => self.close(target),
                (None, Target::Channel(id)) => r.send.push(Command::ChLeave { id }),
                (None, Target::Status) => self.complain(now, "leave which channel? /part NAME".into()),
                (Some(name), _) => match self.resolve_channel(name.trim_start_matches('#')) {
                    Some(id) => r.send.push(Command::ChLeave { id }),
                    None => self.complain(now, format!("unknown channel {name} (try /list)")),
                },
            },
            Line::Close => match target {
                Target::Private(_) => self.close(target),
                _ => self.complain(now, "/close closes a private window; /part leaves a channel".into()),
            },
            Line::Query(who) => match self.resolve_user(&who) {
                Some(id) => {
                    let i = self.window_of(Target::Private(id));
                    self.switch_to(i);
                }
                None => self.complain(now, format!("unknown user {who} (try /who)")),
            },
            Line::Msg(who, text) => match self.resolve_user(&who) {
                Some(id) => {
                    let i = self.window_of(Target::Private(id));
                    self.switch_to(i);
                    self.say(Target::Private(id), Body::text(text), now, &mut r);
                }
                None => self.complain(now, format!("unknown user {who} (try /who)")),
            },
            Line::Names => match target {
                // The server's list is exact; it is shown when it arrives (CH_MEMBERS).
                Target::Channel(id) => r.send.push(Command::ChWho { id }),
                _ => self.complain(now, "/names works in a channel window (/who lists every account)".into()),
            },
            Line::Pull => match target {
                Target::Channel(id) => {
                    // Offline, the driver says it needs the server.
                    if online {
                        self.replay.insert(id);
                        self.pulling.insert(id);
                    }
                    r.send.push(Command::ChPull { id, anchor: None });
                }
                _ => self.complain(now, "/pull works in a channel window".into()),
            },
            Line::Acks => self.show_acks(now),
            Line::Win(n) => {
                if !self.switch_to(n - 1) {
                    self.complain(now, format!("no window {n} (there are {})", self.windows.len()));
                }
            }
        }
        r
    }

    fn close(&mut self, target: Target) {
        if let Some(i) = self.windows.iter().position(|w| w.target == target) {
            if i == 0 {
                return;
            }
            self.windows.remove(i);
            if self.current >= i {
                self.current -= 1;
            }
            let cur = self.current;
            self.switch_to(cur);
        }
    }

    /// The largest text that fits a message to `target`, in bytes.
    pub fn text_limit(&self, target: Target) -> usize {
        let empty = Body::text("");
        let size = |text: &Body| match target {
            Target::Channel(id) => {
                let online = self.channels.get(&id).map_or(1, |c| c.online.max(1)) as usize;
                let relayed = Outbound::event(&ChMsg {
                    id,
                    msg_id: Ulid::nil(),
                    msg: text.clone(),
                    from: self.me,
                    timestamp: u64::from(u32::MAX) + 1,
                    recipients: online as u64,
                });
                relayed.payload.len() + 96 + 27 * online
            }
            _ => {
                let req = sigil_proto::Request {
                    envelope: sigil_proto::Envelope { nonce: u64::MAX, timestamp: u64::MAX },
                    command: Command::PvMsg { to: Ulid::nil(), msg_id: Ulid::nil(), msg: text.clone() },
                };
                req.encode().1.len()
            }
        };
        // msgpack's str header grows with the length: allow its largest (5 bytes).
        self.max_payload.saturating_sub(size(&empty) + 4)
    }

    fn say(&mut self, target: Target, body: Body, now: &Now, r: &mut Reaction) {
        let (text, channel) = match target {
            Target::Status => {
                self.complain(
                    now,
                    "this is the status window: /join NAME or /query USER first (/help lists the commands)".into(),
                );
                return;
            }
            Target::Channel(c) => (body.to_display(), Some(c)),
            Target::Private(_) => (body.to_display(), None),
        };
        let limit = self.text_limit(target);
        if body.bytes.len() > limit {
            self.complain(
                now,
                format!(
                    "not sent: the line is {} bytes, and at most {limit} fit in a message here (max_payload {})",
                    body.bytes.len(),
                    self.max_payload
                ),
            );
            return;
        }
        let id = Ulid::new();
        let (action, shown) = action_of(&text);
        let ready = self.connection == Connection::Connected
            && channel.is_none_or(|c| self.channels.get(&c).is_some_and(|c| c.healthy));
        self.shown.insert(id);
        if let Target::Private(p) = target {
            self.private_to.insert(id, p);
            let name = self.name(&p);
            self.outbox.push(format!("[{}] -> {name}: {text}", now.local));
        } else {
            self.own_text.insert(id, text.clone());
        }
        let entry =
            Entry::Msg { time: now.local.clone(), from: self.me, text: shown.to_owned(), action, id, age: Age::Live };
        self.push(target, entry, false);
        if ready {
            self.marks.insert(id, Mark::Sent);
            r.send.push(match target {
                Target::Channel(c) => Command::ChMsg { id: c, msg_id: id, msg: body.clone() },
                _ => Command::PvMsg {
                    to: match target {
                        Target::Private(p) => p,
                        _ => self.me,
                    },
                    msg_id: id,
                    msg: body.clone(),
                },
            });
            self.in_flight.push(Queued { target, id, body });
        } else {
            self.marks.insert(id, Mark::Queued);
            let why =
                if self.connection == Connection::Connected { "the channel has no leader yet" } else { "offline" };
            self.outbox.push(format!("[{}] … queued for {} ({why}): {text}", now.local, self.title(target)));
            self.queue.push(Queued { target, id, body });
        }
    }

    fn resolve_user(&self, who: &str) -> Option<Ulid> {
        sigil_proto::id::parse(who)
            .or_else(|| self.names.iter().find(|(_, n)| n.eq_ignore_ascii_case(who)).map(|(id, _)| *id))
    }

    fn resolve_channel(&self, name: &str) -> Option<Ulid> {
        sigil_proto::id::parse(name)
            .or_else(|| self.channels.iter().find(|(_, c)| c.name.eq_ignore_ascii_case(name)).map(|(id, _)| *id))
            .or_else(|| self.directory.get(&name.to_ascii_lowercase()).map(|(id, _)| *id))
    }

    /// Shows a channel's members as the server listed them (`/names`).
    fn show_members(&mut self, id: Ulid, members: Vec<sigil_proto::event::UserEntry>, now: &Now) {
        let leader_id = self.channels.get(&id).and_then(|c| c.leader);
        let leader = leader_id.map(|l| format!("led by {}", self.name(&l))).unwrap_or_else(|| "no leader".into());
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for m in &members {
            self.names.insert(m.id, m.name.clone());
            if m.status == "online" {
                self.online.insert(m.id);
                on.push(if leader_id == Some(m.id) { format!("@{}", m.name) } else { m.name.clone() });
            } else {
                self.online.remove(&m.id);
                off.push(m.name.clone());
            }
        }
        if let Some(c) = self.channels.get_mut(&id) {
            c.members = members.iter().map(|m| m.id).collect();
        }
        let text = format!(
            "{}: {leader}; {} members, online: {}; offline: {}",
            self.channel_name(&id),
            members.len(),
            if on.is_empty() { "-".into() } else { on.join(", ") },
            if off.is_empty() { "-".into() } else { off.join(", ") },
        );
        let target = if self.channels.contains_key(&id) { Target::Channel(id) } else { Target::Status };
        self.info(target, now, text);
    }

    fn show_acks(&mut self, now: &Now) {
        let w = self.current_window();
        let last: Vec<(Ulid, Ulid, String)> = w
            .entries
            .iter()
            .rev()
            .filter_map(|e| match e {
                Entry::Msg { id, from, text, .. } => Some((*id, *from, text.clone())),
                _ => None,
            })
            .take(5)
            .collect();
        if last.is_empty() {
            self.note(now, "no messages here yet".into());
            return;
        }
        for (id, from, text) in last.into_iter().rev() {
            let by: Vec<String> = self
                .acks
                .get(&id)
                .map(|a| a.iter().filter(|u| **u != from).map(|u| self.name(u)).collect())
                .unwrap_or_default();
            let mark = self.marks.get(&id).map(|m| format!(" {}", m.symbol())).unwrap_or_default();
            let short: String = text.chars().take(40).collect();
            let by = if by.is_empty() { "no acks known".into() } else { format!("acked by {}", by.join(", ")) };
            self.note(now, format!("<{}> {short}{mark}: {by}", self.name(&from)));
        }
    }
}

/// `"/me waves"` is an action: `(true, "waves")`.
pub fn action_of(text: &str) -> (bool, &str) {
    match text.strip_prefix("/me ") {
        Some(rest) => (true, rest),
        None => (false, text),
    }
}

fn mentions(text: &str, name: &str) -> bool {
    !name.is_empty()
        && text
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .any(|w| w.eq_ignore_ascii_case(name))
}

/// A server timestamp as local `HH:MM:SS`.
pub fn local_time_of(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sigil_proto::event::{
        ChAppend, ChMembers, ChMsgAck, ChMsgCommit, ChStatus, ChannelEntry, ChannelUser, HistoryEntry, LstCh,
        UserEntry, UsrLst,
    };

    pub(crate) fn at(ms: u64) -> Now {
        Now { ms, local: "12:00:00".into() }
    }

    pub(crate) fn ids() -> (Ulid, Ulid, Ulid) {
        (Ulid::from(1u128), Ulid::from(2u128), Ulid::from(100u128))
    }

    fn status(ch: Ulid, leader: Option<Ulid>, online: u64) -> ServerEvent {
        ServerEvent::ChStatus(ChStatus {
            id: ch,
            name: "general".into(),
            leader,
            status: if leader.is_some() { "healthy" } else { "unhealthy" }.into(),
            election: 1,
            online,
        })
    }

    /// alice, connected, in #general led by bob, who is known by name.
    pub(crate) fn alice_in_general() -> Chat {
        let (me, bob, ch) = ids();
        let mut c = Chat::new(me, "alice", 1, Seen::default());
        c.connected(&at(0), true);
        let users = vec![
            UserEntry { id: me, status: "online".into(), name: "alice".into() },
            UserEntry { id: bob, status: "offline".into(), name: "bob".into() },
        ];
        c.on_event(ServerEvent::UsrLst(UsrLst { users, more: false }), &at(0));
        let pull = c.on_event(status(ch, Some(bob), 2), &at(0));
        assert!(pull.contains(&Command::ChPull { id: ch, anchor: None }), "{pull:?}");
        // The pull after connecting: no history yet.
        c.on_event(ServerEvent::ChAppend(ChAppend { id: ch, anchor: None, messages: vec![], more: false }), &at(0));
        c.drain_outbox();
        c
    }

    fn msg(ch: Ulid, from: Ulid, id: u128, text: &str) -> ServerEvent {
        ServerEvent::ChMsg(ChMsg {
            id: ch,
            msg_id: Ulid::from(id),
            msg: Body::text(text),
            from,
            timestamp: 0,
            recipients: 2,
        })
    }

    fn entry(id: u128, from: Ulid, text: &str) -> HistoryEntry {
        HistoryEntry { id: Ulid::from(id), from, msg: Body::text(text), timestamp: 0, acks: vec![from] }
    }

    #[test]
    fn own_messages_carry_one_mark_that_fills_in_and_one_plain_line_at_commit() {
        let (me, bob, ch) = ids();
        let mut c = alice_in_general();
        let r = c.on_line("hello", &at(1));
        let [Command::ChMsg { id, msg_id, msg }] = &r.send[..] else { panic!("{:?}", r.send) };
        assert_eq!((*id, msg.clone()), (ch, Body::text("hello")));
        let m = *msg_id;
        assert_eq!(c.mark(&m), Some(Mark::Sent));
        assert!(c.drain_outbox().is_empty(), "nothing printed while typing");
        let echo = ServerEvent::ChMsg(ChMsg {
            id: ch,
            msg_id: m,
            msg: Body::text("hello"),
            from: me,
            timestamp: 0,
            recipients: 2,
        });
        c.on_event(echo, &at(2));
        assert_eq!(c.mark(&m), Some(Mark::Delivered));
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] #general <alice> hello"]);
        c.on_event(ServerEvent::ChMsgAck(ChMsgAck { id: m, user: bob, users: vec![], ids: vec![] }), &at(3));
        assert!(c.drain_outbox().is_empty(), "no line per acker");
        let commit = ServerEvent::ChMsgCommit(ChMsgCommit { id: m, channel: ch, acks: vec![me, bob], ids: vec![] });
        c.on_event(commit.clone(), &at(4));
        assert_eq!(c.mark(&m), Some(Mark::Done));
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] ✓ committed in #general: hello"]);
        c.on_event(commit, &at(5));
        assert!(c.drain_outbox().is_empty(), "shown once");
        let msgs = c.current_window().entries.iter().filter(|e| matches!(e, Entry::Msg { .. })).count();
        assert_eq!(msgs, 1, "the echo is not a second line");
        assert_eq!(c.seen.last.get(&ch), Some(&m));
        c.on_line("/acks", &at(6));
        assert!(c.drain_outbox().iter().any(|l| l.contains("<alice> hello ●: acked by bob")));
    }

    #[test]
    fn lines_typed_offline_or_without_a_leader_are_queued_and_sent_later() {
        let (_, bob, ch) = ids();
        let mut c = alice_in_general();
        c.disconnected(&at(0), "closed by the server", 1000);
        assert!(c.on_line("while away", &at(1)).send.is_empty());
        assert_eq!(c.queued(), 1);
        assert!(c.drain_outbox().iter().any(|l| l.contains("… queued for #general (offline): while away")));
        let first = c.connected(&at(2), false);
        assert!(!first.iter().any(|x| matches!(x, Command::ChMsg { .. })), "not before the channel has a leader");
        let sent = c.on_event(status(ch, None, 2), &at(3));
        assert!(!sent.iter().any(|x| matches!(x, Command::ChMsg { .. })));
        let sent = c.on_event(status(ch, Some(bob), 2), &at(4));
        assert!(sent.iter().any(|x| matches!(x, Command::ChMsg { msg, .. } if *msg == Body::text("while away"))));
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn a_line_over_max_payload_is_refused_with_its_size_and_the_limit() {
        let mut c = alice_in_general();
        let limit = c.text_limit(c.current_window().target);
        assert!(limit > 60_000 && limit < 65_536, "{limit}");
        let r = c.on_line(&"x".repeat(limit + 1), &at(1));
        assert!(r.send.is_empty());
        let out = c.drain_outbox();
        assert!(out[0].contains(&format!("the line is {} bytes, and at most {limit}", limit + 1)), "{out:?}");
        assert_eq!(c.on_line(&"x".repeat(limit), &at(1)).send.len(), 1, "the limit itself fits");
    }

    #[test]
    fn history_seen_in_an_earlier_run_is_not_shown_as_new() {
        let (me, bob, ch) = ids();
        let seen = Seen { last: [(ch, Ulid::from(51u128))].into() };
        let mut c = Chat::new(me, "alice", 1, seen);
        c.connected(&at(0), true);
        c.on_event(
            ServerEvent::Ucnn(sigil_proto::event::UserPresence { id: bob, name: "bob".into(), bind: false }),
            &at(0),
        );
        c.on_event(status(ch, Some(bob), 2), &at(0));
        c.drain_outbox();
        let page = ChAppend {
            id: ch,
            anchor: None,
            messages: vec![entry(50, bob, "old one"), entry(51, bob, "old two"), entry(52, bob, "new one")],
            more: false,
        };
        c.on_event(ServerEvent::ChAppend(page), &at(1));
        let out = c.drain_outbox();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].ends_with("#general (history) <bob> new one"), "{out:?}");
        let ages: Vec<Age> = c
            .current_window()
            .entries
            .iter()
            .filter_map(|e| if let Entry::Msg { age, .. } = e { Some(*age) } else { None })
            .collect();
        assert_eq!(ages, vec![Age::Seen, Age::Seen, Age::History]);
        assert_eq!(c.seen.last.get(&ch), Some(&Ulid::from(52u128)));
        // Live, then pulled again after a reconnection: not shown twice.
        c.on_event(msg(ch, bob, 53, "live"), &at(2));
        let again =
            ChAppend { id: ch, anchor: Some(Ulid::from(52u128)), messages: vec![entry(53, bob, "live")], more: false };
        c.on_event(ServerEvent::ChAppend(again), &at(3));
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] #general <bob> live"]);
    }

    #[test]
    fn names_are_shown_for_offline_people_and_join_switches_or_asks_for_the_list() {
        let (_, bob, ch) = ids();
        let mut c = alice_in_general();
        c.on_event(
            ServerEvent::ChAppend(ChAppend { id: ch, anchor: None, messages: vec![entry(60, bob, "hi")], more: false }),
            &at(1),
        );
        assert!(c.drain_outbox()[0].contains("<bob> hi"), "bob is offline and named");
        // Already in #general: switches to it.
        c.switch_to(0);
        assert!(c.on_line("/join #General", &at(2)).send.is_empty());
        assert_eq!(c.current_window().target, Target::Channel(ch));
        assert!(c.on_line("/join nope", &at(2)).send == vec![Command::ChLst]);
        c.on_event(ServerEvent::LstCh(LstCh { channels: vec![], more: false }), &at(2));
        assert!(c.drain_outbox().iter().any(|l| l.contains("no channel named #nope")));
        // A channel made after the last list: asked for again, then joined.
        assert_eq!(c.on_line("/join rust", &at(3)).send, vec![Command::ChLst]);
        let rust = Ulid::from(200u128);
        let list = LstCh {
            channels: vec![ChannelEntry { id: rust, name: "rust".into(), leader: None, status: "unhealthy".into() }],
            more: false,
        };
        assert_eq!(c.on_event(ServerEvent::LstCh(list), &at(4)), vec![Command::ChJoin { id: rust }]);
    }

    #[test]
    fn private_windows_open_and_text_there_goes_to_the_person() {
        let (_, bob, _) = ids();
        let mut c = alice_in_general();
        c.on_line("/query bob", &at(1));
        assert_eq!(c.current_window().target, Target::Private(bob));
        let r = c.on_line("psst", &at(2));
        assert!(matches!(&r.send[..], [Command::PvMsg { to, .. }] if *to == bob));
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] -> bob: psst"]);
        c.on_event(
            ServerEvent::Msg(sigil_proto::event::Msg {
                from: bob,
                msg_id: Ulid::from(9u128),
                msg: Body::text("/me nods"),
                timestamp: 0,
            }),
            &at(3),
        );
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] * bob (private) nods"]);
        c.switch_to(1);
        c.on_event(
            ServerEvent::Msg(sigil_proto::event::Msg {
                from: bob,
                msg_id: Ulid::from(10u128),
                msg: Body::text("alice?"),
                timestamp: 0,
            }),
            &at(4),
        );
        let w = c.windows().iter().find(|w| w.target == Target::Private(bob)).expect("window");
        assert_eq!((w.unread, w.mention), (1, true));
        c.on_line("/win 3", &at(5));
        assert_eq!(c.current_window().unread, 0);
        c.on_line("/part", &at(6));
        assert_eq!(c.windows().len(), 2, "/part closes a private window");
    }

    #[test]
    fn lines_typed_during_a_join_wait_for_it() {
        let (me, _, _) = ids();
        let mut c = alice_in_general();
        let rust = Ulid::from(300u128);
        c.on_event(
            ServerEvent::LstCh(LstCh {
                channels: vec![ChannelEntry {
                    id: rust,
                    name: "rust".into(),
                    leader: Some(me),
                    status: "healthy".into(),
                }],
                more: false,
            }),
            &at(0),
        );
        assert_eq!(c.on_line("/join rust", &at(1)).send, vec![Command::ChJoin { id: rust }]);
        assert!(c.on_line("hello rust", &at(1)).send.is_empty(), "waits for the join");
        c.on_event(ServerEvent::ChUjoin(ChannelUser { channel: rust, user: me }), &at(2));
        let sent = c.on_event(
            ServerEvent::ChStatus(ChStatus {
                id: rust,
                name: "rust".into(),
                leader: Some(me),
                status: "healthy".into(),
                election: 1,
                online: 1,
            }),
            &at(3),
        );
        assert!(
            sent.iter().any(
                |x| matches!(x, Command::ChMsg { id, msg, .. } if *id == rust && *msg == Body::text("hello rust"))
            ),
            "{sent:?}"
        );
    }

    #[test]
    fn fatal_refusals_are_put_in_words() {
        let c = alice_in_general();
        let e = ErrPayload { code: "session_replaced".into(), reason: "r".into(), nonce_ref: None, msg_id: None };
        assert!(c.fatal_reason(&e).is_some_and(|w| w.contains("alice signed in from another client")));
        let e = ErrPayload { code: "channel_unhealthy".into(), ..e };
        assert_eq!(c.fatal_reason(&e), None);
    }

    #[test]
    fn a_private_message_is_shown_once_and_one_sent_before_a_plain_session_not_at_all() {
        let (_, bob, _) = ids();
        let mut c = alice_in_general();
        let start = 1_800_000_000;
        c.session_started(SessionInfo { cnn: sigil_proto::Envelope { nonce: 1, timestamp: start }, bound: false });
        c.drain_outbox();
        let msg = |id: u128, timestamp: u64| {
            ServerEvent::Msg(sigil_proto::event::Msg {
                from: bob,
                msg_id: Ulid::from(id),
                msg: Body::text("hi"),
                timestamp,
            })
        };
        let ack = |id: u128| Command::AckMsg { from: bob, msg_id: Ulid::from(id) };
        // Live: shown and acknowledged.
        assert!(c.on_event(msg(9, start + 1), &at(1)).contains(&ack(9)));
        assert_eq!(c.drain_outbox().len(), 1);
        // The same msg_id again (its sender resent it, or a replay): acknowledged, never shown twice.
        assert!(c.on_event(msg(9, start + 2), &at(2)).contains(&ack(9)));
        assert_eq!(c.drain_outbox(), Vec::<String>::new());
        // Stamped more than skew_s before the session's CNN: sent before it began, so a
        // replay from an earlier session; neither shown nor acknowledged.
        assert_eq!(c.on_event(msg(10, start - 31), &at(3)), Vec::new());
        let said = c.drain_outbox();
        assert!(said.len() == 1 && said[0].contains("before this session began"), "{said:?}");
        assert!(c.windows().iter().all(|w| w.target != Target::Private(bob) || w.entries.len() == 1));
        // Within skew_s of it: the server's clock may be behind ours.
        assert!(c.on_event(msg(11, start - 30), &at(4)).contains(&ack(11)));
        assert!(c.drain_outbox()[0].contains("(private) hi"));
        // The server's skew_s, once known, is the margin.
        let sinfo = sigil_proto::event::Sinfo {
            protocol_version: 0,
            server_name: "s".into(),
            version: "0".into(),
            timeout_s: 180,
            cnn_timeout_s: 10,
            skew_s: 120,
            max_payload: 65_536,
            min_online: 1,
            list_entries_per_s: 4096,
            cnn_per_minute: 30,
            max_pending_bytes_per_account: 1 << 24,
            features: Vec::new(),
        };
        c.on_event(ServerEvent::Sinfo(sinfo), &at(5));
        assert!(c.on_event(msg(12, start - 100), &at(6)).contains(&ack(12)));
        // In a bound session no replay verifies: stamps are not looked at.
        c.session_started(SessionInfo { cnn: sigil_proto::Envelope { nonce: 2, timestamp: start }, bound: true });
        assert!(c.on_event(msg(13, start - 1000), &at(7)).contains(&ack(13)));
    }

    #[test]
    fn a_fatal_err_in_a_session_that_is_not_bound_is_said_to_be_unverified() {
        let mut c = alice_in_general();
        c.drain_outbox();
        let e = ErrPayload { code: "session_replaced".into(), reason: "r".into(), nonce_ref: None, msg_id: None };
        c.unverified_fatal(&e, &at(1));
        let said = c.drain_outbox();
        assert!(said.len() == 1 && said[0].contains("session_replaced") && said[0].contains("carrying on"), "{said:?}");
    }

    #[test]
    fn the_own_join_opens_and_switches_and_leaving_closes() {
        let (me, _, _) = ids();
        let mut c = alice_in_general();
        c.on_line("/new rust", &at(1));
        let rust = Ulid::from(300u128);
        c.on_event(ServerEvent::ChUjoin(ChannelUser { channel: rust, user: me }), &at(2));
        assert_eq!(c.current_window().target, Target::Channel(rust));
        assert_eq!(c.title(Target::Channel(rust)), "#rust");
        assert!(c.drain_outbox().iter().any(|l| l.contains("alice joined #rust")));
        assert_eq!(c.on_line("/part", &at(3)).send, vec![Command::ChLeave { id: rust }]);
        c.on_event(ServerEvent::ChUleave(ChannelUser { channel: rust, user: me }), &at(4));
        assert!(c.windows().iter().all(|w| w.target != Target::Channel(rust)));
    }

    fn err(code: &str, nonce: Option<u64>) -> ServerEvent {
        ServerEvent::Err(ErrPayload { code: code.into(), reason: "r".into(), nonce_ref: nonce, msg_id: None })
    }

    /// alice in #general, and #rust (id 300) known from the list.
    fn alice_who_knows_rust() -> (Chat, Ulid) {
        let mut c = alice_in_general();
        let rust = Ulid::from(300u128);
        let entry = ChannelEntry { id: rust, name: "rust".into(), leader: None, status: "unhealthy".into() };
        c.on_event(ServerEvent::LstCh(LstCh { channels: vec![entry], more: false }), &at(0));
        c.drain_outbox();
        (c, rust)
    }

    fn rust_status(rust: Ulid, leader: Ulid) -> ServerEvent {
        ServerEvent::ChStatus(ChStatus {
            id: rust,
            name: "rust".into(),
            leader: Some(leader),
            status: "healthy".into(),
            election: 1,
            online: 1,
        })
    }

    fn sends_text(sent: &[Command], channel: Ulid, text: &str) -> bool {
        sent.iter().any(|x| matches!(x, Command::ChMsg { id, msg, .. } if *id == channel && *msg == Body::text(text)))
    }

    #[test]
    fn quit_offline_ends_and_says_what_was_not_sent() {
        let mut c = alice_in_general();
        c.disconnected(&at(0), "closed by the server", 1000);
        c.on_line("while away", &at(1));
        c.drain_outbox();
        let r = c.on_line("/quit", &at(2));
        assert!(r.quit && r.send.is_empty(), "{r:?}");
        assert!(c.sign_off(&at(2)).is_empty(), "no DCNN offline");
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] ! 1 line was not sent (1 queued)"]);
        assert_eq!(c.unsent(), 0);
        // Connected with nothing pending: DCNN, and nothing said.
        let mut c = alice_in_general();
        assert_eq!(c.sign_off(&at(3)), vec![Command::Dcnn]);
        assert!(c.drain_outbox().is_empty());
    }

    #[test]
    fn join_and_new_typed_offline_are_refused_and_leave_nothing_pending() {
        let (me, bob, ch) = ids();
        let (mut c, rust) = alice_who_knows_rust();
        c.disconnected(&at(0), "closed by the server", 1000);
        c.drain_outbox();
        assert!(c.on_line("/join rust", &at(1)).send.is_empty());
        assert!(c.on_line("/new go", &at(1)).send.is_empty());
        let out = c.drain_outbox();
        assert!(out[0].contains("! offline: /join rust needs the server"), "{out:?}");
        assert!(out[1].contains("! offline: /new go needs the server"), "{out:?}");
        // /join of a channel one is in still switches windows.
        c.switch_to(0);
        assert!(c.on_line("/join general", &at(1)).send.is_empty());
        assert_eq!(c.current_window().target, Target::Channel(ch));
        let start = c.connected(&at(2), false);
        assert!(!start.iter().any(|x| matches!(x, Command::ChJoin { .. } | Command::ChNew { .. })), "{start:?}");
        c.on_event(status(ch, Some(bob), 2), &at(3));
        assert!(!c.busy());
        assert!(sends_text(&c.on_line("back", &at(4)).send, ch, "back"), "not held for a join");
        assert!(c.windows().iter().all(|w| w.target != Target::Channel(rust)));
        let _ = me;
    }

    #[test]
    fn lines_waiting_for_a_join_are_sent_after_it_or_counted_at_the_end() {
        let (me, _, _) = ids();
        let joining = || {
            let (mut c, rust) = alice_who_knows_rust();
            assert_eq!(c.on_line("/join rust", &at(1)).send, vec![Command::ChJoin { id: rust }]);
            assert!(c.on_line("hello rust", &at(1)).send.is_empty());
            (c, rust)
        };
        // Ending at once: the line is counted, not lost silently.
        let (mut c, _) = joining();
        assert!(c.busy(), "the driver waits at the end of input");
        assert_eq!(c.unsent(), 1);
        assert_eq!(c.sign_off(&at(2)), vec![Command::Dcnn]);
        assert_eq!(c.drain_outbox(), vec!["[12:00:00] ! 1 line was not sent (1 waiting for /join rust)"]);
        // Waiting instead: the join, then the channel gets its leader, and the line goes.
        let (mut c, rust) = joining();
        c.on_event(ServerEvent::ChUjoin(ChannelUser { channel: rust, user: me }), &at(2));
        assert!(c.busy(), "queued until the channel has a leader");
        let sent = c.on_event(rust_status(rust, me), &at(3));
        assert!(sends_text(&sent, rust, "hello rust"), "{sent:?}");
        assert!(!c.busy());
        assert_eq!(c.unsent(), 0);
    }

    #[test]
    fn a_join_that_gets_no_answer_is_given_up_and_the_lines_go_on() {
        let (_, _, ch) = ids();
        let (mut c, _) = alice_who_knows_rust();
        c.on_line("/join rust", &at(1000));
        assert!(c.on_line("still here", &at(1000)).send.is_empty());
        assert!(c.tick(&at(1000 + SWITCH_TIMEOUT_MS - 1)).iter().all(|x| !matches!(x, Command::ChMsg { .. })));
        let sent = c.tick(&at(1000 + SWITCH_TIMEOUT_MS));
        assert!(sends_text(&sent, ch, "still here"), "{sent:?}");
        assert!(c.drain_outbox().iter().any(|l| l.contains("! no answer to /join rust in 10s")));
        assert!(!c.busy());
    }

    #[test]
    fn only_the_joins_own_error_ends_it_and_a_reconnection_asks_again() {
        let (me, bob, ch) = ids();
        let (mut c, rust) = alice_who_knows_rust();
        c.on_line("/join rust", &at(1));
        c.sent(&Command::ChJoin { id: rust }, 7);
        c.on_line("hello rust", &at(1));
        // An error about something else (a commit, a vote) does not end the join.
        c.on_event(err("bad_election", Some(99)), &at(2));
        c.on_event(err("rate_limited", None), &at(2));
        assert!(c.busy() && c.unsent() == 1);
        // The connection is lost: the line keeps waiting, for #rust, not #general.
        c.disconnected(&at(3), "closed by the server", 4000);
        assert_eq!(c.queued(), 0, "not queued for the current window");
        assert!(c.on_line("more", &at(3)).send.is_empty());
        assert!(c.drain_outbox().iter().any(|l| l.contains("… waits for /join rust (once reconnected): more")));
        assert_eq!(c.unsent(), 2);
        // Reconnected: the join is asked again; the first one had been done.
        let start = c.connected(&at(4), false);
        assert!(start.contains(&Command::ChJoin { id: rust }), "{start:?}");
        c.sent(&Command::ChJoin { id: rust }, 8);
        c.on_event(status(ch, Some(bob), 2), &at(5));
        c.on_event(err("already_member", Some(7)), &at(5));
        assert!(c.busy(), "an answer to the old session's CH_JOIN");
        c.drain_outbox();
        c.on_event(err("already_member", Some(8)), &at(5));
        assert_eq!(c.current_window().target, Target::Channel(rust));
        assert!(!c.drain_outbox().iter().any(|l| l.contains("already_member")), "not an error");
        let sent = c.on_event(rust_status(rust, me), &at(6));
        assert!(sends_text(&sent, rust, "hello rust") && sends_text(&sent, rust, "more"), "{sent:?}");
        assert!(!sends_text(&sent, ch, "hello rust"));
        // A join refused for its own reason ends it, and says why.
        let (mut c, rust) = alice_who_knows_rust();
        c.on_line("/join rust", &at(1));
        c.sent(&Command::ChJoin { id: rust }, 9);
        c.on_line("hello", &at(1));
        let sent = c.on_event(err("rate_limited", Some(9)), &at(2));
        assert!(c.drain_outbox().iter().any(|l| l.contains("! rate_limited")));
        assert!(sends_text(&sent, ch, "hello"), "{sent:?}");
    }

    #[test]
    fn a_new_channel_made_just_before_the_connection_dropped_is_not_an_error() {
        let (me, _, _) = ids();
        let mut c = alice_in_general();
        assert_eq!(c.on_line("/new go", &at(1)).send, vec![Command::ChNew { name: "go".into() }]);
        c.on_line("first", &at(1));
        c.disconnected(&at(2), "closed by the server", 3000);
        let start = c.connected(&at(3), false);
        assert!(start.contains(&Command::ChNew { name: "go".into() }), "{start:?}");
        c.sent(&Command::ChNew { name: "go".into() }, 11);
        // The server had made it: its status comes at the session's start, then the refusal.
        let go = Ulid::from(400u128);
        let st =
            ChStatus { id: go, name: "go".into(), leader: None, status: "unhealthy".into(), election: 0, online: 1 };
        c.on_event(ServerEvent::ChStatus(st), &at(4));
        c.on_event(err("name_taken", Some(11)), &at(4));
        assert_eq!(c.current_window().target, Target::Channel(go));
        assert!(!c.drain_outbox().iter().any(|l| l.contains("name_taken")));
        let sent = c.on_event(rust_status(go, me), &at(5));
        assert!(sends_text(&sent, go, "first"), "{sent:?}");
    }

    #[test]
    fn lines_sent_but_not_relayed_are_sent_again_after_a_reconnection() {
        let (me, bob, ch) = ids();
        let mut c = alice_in_general();
        let sent = c.on_line("lost in the wire", &at(1)).send;
        let [Command::ChMsg { msg_id: lost, .. }] = sent[..] else { panic!("{sent:?}") };
        c.sent(&sent[0], 20);
        let sent = c.on_line("relayed", &at(1)).send;
        let [Command::ChMsg { msg_id: relayed, .. }] = sent[..] else { panic!("{sent:?}") };
        c.on_event(msg(ch, me, relayed.0, "relayed"), &at(2));
        assert_eq!(c.mark(&relayed), Some(Mark::Delivered));
        c.disconnected(&at(3), "closed by the server", 4000);
        assert_eq!((c.mark(&lost), c.queued()), (Some(Mark::Queued), 1));
        assert!(c.drain_outbox().iter().any(|l| l.contains("1 line sent just before the connection was lost")));
        c.connected(&at(4), false);
        let sent = c.on_event(status(ch, Some(bob), 2), &at(5));
        let again: Vec<&Command> = sent.iter().filter(|x| matches!(x, Command::ChMsg { .. })).collect();
        assert!(matches!(again[..], [Command::ChMsg { msg_id, .. }] if *msg_id == lost), "{sent:?}");
        c.sent(again[0], 21);
        // The server had it after all: not an error.
        c.on_event(err("duplicate_msg", Some(21)), &at(6));
        assert_eq!(c.mark(&lost), Some(Mark::Delivered));
        assert!(!c.drain_outbox().iter().any(|l| l.contains(" ! ")));
        // Lost again: a line the server relayed is not sent a second time.
        c.disconnected(&at(7), "closed by the server", 8000);
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn a_live_commit_during_the_first_pull_does_not_make_old_history_new() {
        let (me, bob, ch) = ids();
        let seen = Seen { last: [(ch, Ulid::from(51u128))].into() };
        let mut c = Chat::new(me, "alice", 1, seen);
        c.connected(&at(0), true);
        c.on_event(
            ServerEvent::Ucnn(sigil_proto::event::UserPresence { id: bob, name: "bob".into(), bind: false }),
            &at(0),
        );
        assert!(c.on_event(status(ch, Some(bob), 2), &at(0)).contains(&Command::ChPull { id: ch, anchor: None }));
        // Before the pull's answer: a live message, committed.
        c.on_event(msg(ch, bob, 60, "live"), &at(1));
        let commit = ChMsgCommit { id: Ulid::from(60u128), channel: ch, acks: vec![bob, me], ids: vec![] };
        c.on_event(ServerEvent::ChMsgCommit(commit), &at(1));
        assert_eq!(c.seen.last.get(&ch), Some(&Ulid::from(51u128)), "not before the pull is through");
        c.drain_outbox();
        let page = ChAppend {
            id: ch,
            anchor: None,
            messages: vec![entry(50, bob, "old one"), entry(51, bob, "old two"), entry(52, bob, "new one")],
            more: false,
        };
        c.on_event(ServerEvent::ChAppend(page), &at(2));
        let out = c.drain_outbox();
        assert_eq!(out.len(), 1, "only what is new: {out:?}");
        assert!(out[0].ends_with("(history) <bob> new one"), "{out:?}");
        assert_eq!(c.seen.last.get(&ch), Some(&Ulid::from(60u128)), "the live one, later than the pull");
        // A commit of a message never shown does not move what was seen.
        let unseen = ChMsgCommit { id: Ulid::from(70u128), channel: ch, acks: vec![bob], ids: vec![] };
        c.on_event(ServerEvent::ChMsgCommit(unseen), &at(3));
        assert_eq!(c.seen.last.get(&ch), Some(&Ulid::from(60u128)));
    }

    #[test]
    fn part_says_what_it_drops_and_names_pages_do_not_mix() {
        let (me, bob, ch) = ids();
        let mut c = alice_in_general();
        c.on_event(status(ch, None, 2), &at(1));
        c.on_line("waiting for a leader", &at(1));
        c.drain_outbox();
        c.on_event(ServerEvent::ChUleave(ChannelUser { channel: ch, user: me }), &at(2));
        assert!(c.drain_outbox().iter().any(|l| l.contains("! 1 queued line was not sent: you left #general")));
        assert_eq!(c.queued(), 0);
        // Two /names: the second list replaces a first one cut short, not added to it.
        let mut c = alice_in_general();
        let users = |more| ChMembers {
            id: ch,
            members: vec![
                UserEntry { id: me, status: "online".into(), name: "alice".into() },
                UserEntry { id: bob, status: "offline".into(), name: "bob".into() },
            ],
            more,
        };
        c.on_event(ServerEvent::ChMembers(users(true)), &at(3));
        c.on_event(ServerEvent::ChMembers(users(false)), &at(3));
        let out = c.drain_outbox();
        assert!(out.iter().any(|l| l.contains("2 members, online: alice; offline: bob")), "{out:?}");
        // A list cut by a lost connection is forgotten.
        c.on_event(ServerEvent::ChMembers(users(true)), &at(4));
        c.disconnected(&at(4), "closed by the server", 5000);
        assert!(c.member_pages.is_empty());
    }
}
