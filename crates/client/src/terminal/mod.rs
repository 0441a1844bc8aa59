//! `sigil client`: the terminal client (PROTOCOL.md §7.8, §9.5).
//!
//! Layout:
//! - [`view`]: `Chat`, the pure state: windows, names, marks, the queue of
//!   lines typed offline, what was seen; events and typed lines in,
//!   commands and lines to show out.
//! - [`commands`]: the slash commands and their `/help`.
//! - [`input`]: the input line's editing and history.
//! - [`tui`]: the full-screen client's drawing and keys (ratatui, crossterm).
//! - [`seen`]: the state file of the last message seen per channel.
//! - this module: the driver, the only part that does I/O: it connects and
//!   reconnects, runs the reference behaviour on a timer, reads the keyboard
//!   or standard input, and draws the screen or prints lines (plain mode:
//!   `--plain`, or standard input or output not a terminal).

pub mod commands;
pub mod input;
pub mod seen;
pub mod tui;
pub mod view;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::Event;
use sigil_proto::{Command, ServerEvent};
use tokio::sync::mpsc;

use self::input::InputLine;
use self::seen::Seen;
use self::tui::{Action, Screen};
use self::view::{Chat, Connection, Now, FATAL};
use super::{Client, ClientError, ClientWriter, ConnectOptions, Credentials, Endpoint};

/// How `sigil client` runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One line per event on standard output, lines read from standard
    /// input, even on a terminal.
    pub plain: bool,
    /// The state file (last message seen per channel); `None`: keep none.
    pub state: Option<PathBuf>,
}

/// Reconnection delays: 1, 2, 4, 8, then 15 s, at most this many attempts.
const RECONNECT_ATTEMPTS: u32 = 40;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end of input (or `/quit`), how long to wait for a `/join` under
/// way and for queued lines that are only waiting for a leader.
const QUIT_WAIT: Duration = Duration::from_secs(5);

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(match attempt {
        0 | 1 => 1,
        2 => 2,
        3 => 4,
        4 => 8,
        _ => 15,
    })
}

/// What the keyboard or standard input gave.
enum Input {
    Line(String),
    Eof,
    Key(crossterm::event::KeyEvent),
    Paste(String),
    Redraw,
}

/// Reads input on its own thread (a blocked read never holds up the end of
/// the client).
fn spawn_input(full_screen: bool) -> mpsc::UnboundedReceiver<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        if full_screen {
            loop {
                let input = match crossterm::event::read() {
                    Ok(Event::Key(k)) => Input::Key(k),
                    Ok(Event::Paste(s)) => Input::Paste(s),
                    Ok(Event::Resize(..)) => Input::Redraw,
                    Ok(_) => continue,
                    Err(_) => Input::Eof,
                };
                let end = matches!(input, Input::Eof);
                if tx.send(input).is_err() || end {
                    return;
                }
            }
        } else {
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let input = match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => Input::Eof,
                    Ok(_) => Input::Line(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned()),
                };
                let end = matches!(input, Input::Eof);
                if tx.send(input).is_err() || end {
                    return;
                }
            }
        }
    });
    rx
}

/// What the user asked for.
enum Step {
    Nothing,
    Line(String),
    Retry,
    /// End the client; `wait`: first let what was typed go out (end of
    /// input), rather than at once (Ctrl-C, Ctrl-D).
    Quit {
        wait: bool,
    },
}

/// The screen or the plain output.
enum Ui {
    Plain,
    Full { screen: Box<Screen>, input: InputLine, page: usize, most: usize },
}

impl Ui {
    /// Shows what changed; false once standard output is gone.
    fn show(&mut self, chat: &mut Chat, now_ms: u64) -> bool {
        let lines = chat.drain_outbox();
        match self {
            Ui::Plain => {
                let mut out = std::io::stdout().lock();
                for line in lines {
                    if writeln!(out, "{line}").is_err() {
                        return false;
                    }
                }
                out.flush().is_ok()
            }
            Ui::Full { screen, input, page, most } => {
                let drawn = screen.terminal.draw(|f| {
                    *page = tui::page_rows(f.area());
                    *most = tui::render(chat, input, now_ms, f);
                });
                chat.clamp_scroll(*most);
                drawn.is_ok()
            }
        }
    }

    fn handle(&mut self, input: Input, chat: &mut Chat) -> Step {
        match (self, input) {
            (_, Input::Eof) => Step::Quit { wait: true },
            (_, Input::Redraw) => Step::Nothing,
            // An empty line while offline: reconnect now.
            (Ui::Plain, Input::Line(l)) if l.trim().is_empty() => Step::Retry,
            (Ui::Plain, Input::Line(l)) => Step::Line(l),
            (Ui::Plain, _) => Step::Nothing,
            (Ui::Full { input, .. }, Input::Paste(s)) => {
                input.insert_str(&s);
                Step::Nothing
            }
            (Ui::Full { input, .. }, Input::Line(l)) => {
                input.insert_str(&l);
                Step::Nothing
            }
            (Ui::Full { input, page, .. }, Input::Key(k)) => match tui::key(input, k) {
                Action::Submit(l) => Step::Line(l),
                Action::RetryNow => Step::Retry,
                Action::Quit => Step::Quit { wait: false },
                Action::Window(i) => {
                    chat.switch_to(i);
                    Step::Nothing
                }
                Action::Next => {
                    chat.next_window();
                    Step::Nothing
                }
                Action::Previous => {
                    chat.previous_window();
                    Step::Nothing
                }
                Action::Page(dir) => {
                    chat.scroll(dir * (*page as isize - 1).max(1));
                    Step::Nothing
                }
                Action::Edited | Action::None => Step::Nothing,
            },
        }
    }
}

/// The driver's clock and the local time.
struct Clock(Instant);

impl Clock {
    fn ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn now(&self) -> Now {
        Now { ms: self.ms(), local: chrono::Local::now().format("%H:%M:%S").to_string() }
    }
}

/// Keeps the state file up to date (at most once a second, and at the end).
struct StateFile {
    path: Option<PathBuf>,
    account: ulid::Ulid,
    saved_at: Option<Instant>,
}

impl StateFile {
    fn save(&mut self, chat: &mut Chat, now: &Now, force: bool) {
        let Some(path) = &self.path else { return };
        if !chat.seen_dirty || (!force && self.saved_at.is_some_and(|t| t.elapsed() < Duration::from_secs(1))) {
            return;
        }
        self.saved_at = Some(Instant::now());
        chat.seen_dirty = false;
        if let Err(e) = chat.seen.save(path, self.account) {
            chat.note(now, format!("{e}; history will not be remembered as read"));
            self.path = None;
        }
    }
}

/// Runs the client until `/quit`, end of input or a fatal refusal
/// (`Err(ClientError::Ended)`, the reason in words), reconnecting when the
/// connection is lost.
pub async fn run(endpoint: &Endpoint, cred: &Credentials, options: Options) -> Result<(), ClientError> {
    let full_screen = !options.plain && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let mut state = StateFile { path: options.state.clone(), account: cred.id, saved_at: None };
    // A state file that cannot be used is named once, and none is kept (nor overwritten).
    let mut state_warning = None;
    let seen = match &options.state {
        Some(path) => Seen::load(path, cred.id).unwrap_or_else(|e| {
            state_warning = Some(e);
            state.path = None;
            Seen::default()
        }),
        None => Seen::default(),
    };
    let clock = Clock(Instant::now());
    let mut chat = Chat::new(cred.id, &cred.name, rand::random(), seen);
    // Connect once before taking over the terminal: a wrong address or key is an error on the command line.
    // Each session asks for server frame binding (the default, PROTOCOL.md §7.10).
    let connect = || Client::connect_to(endpoint, cred, ConnectOptions { batch: true, ..ConnectOptions::default() });
    let first = match tokio::time::timeout(CONNECT_TIMEOUT, connect()).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ClientError::Ended(format!(
                "cannot connect to {}: no answer in {}s",
                describe(endpoint),
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    };
    let mut ui = if full_screen {
        Ui::Full { screen: Box::new(Screen::open()?), input: InputLine::default(), page: 10, most: 0 }
    } else {
        Ui::Plain
    };
    let mut rx = spawn_input(full_screen);
    chat.note(&clock.now(), format!("signed in as {} — /help for commands", cred.name));
    if let Some(warning) = state_warning {
        chat.note(&clock.now(), warning);
    }
    let mut client = Some(first);
    let mut first_session = true;
    let result = loop {
        let c = match client.take() {
            Some(c) => c,
            None => match reconnect(&mut chat, &mut ui, &mut rx, &clock, &connect).await {
                Ok(Some(c)) => c,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
        };
        match session(c, &mut chat, &mut ui, &mut rx, &clock, &mut state, first_session).await {
            Ok(End::Quit) => break Ok(()),
            Ok(End::Lost(why)) => {
                let now = clock.now();
                chat.disconnected(&now, &why, now.ms + backoff(1).as_millis() as u64);
                if !ui.show(&mut chat, now.ms) {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
        first_session = false;
    };
    state.save(&mut chat, &clock.now(), true);
    // Leave the full screen before main prints the reason.
    drop(ui);
    result
}

/// How a session ended.
enum End {
    Quit,
    Lost(String),
}

/// Waits and reconnects, with backoff, until connected (`Some`), the user
/// quits (`None`), or a refusal or too many attempts end the client.
async fn reconnect<F, Fut>(
    chat: &mut Chat,
    ui: &mut Ui,
    rx: &mut mpsc::UnboundedReceiver<Input>,
    clock: &Clock,
    connect: &F,
) -> Result<Option<Client>, ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Client, ClientError>>,
{
    let mut attempt = 1;
    let mut redraw = tokio::time::interval(Duration::from_millis(250));
    loop {
        // Wait out the delay, or less if asked.
        let at = tokio::time::Instant::now() + backoff(attempt);
        loop {
            let wake = tokio::select! {
                _ = tokio::time::sleep_until(at) => break,
                _ = redraw.tick() => Step::Nothing,
                input = rx.recv() => match input {
                    Some(i) => ui.handle(i, chat),
                    None => Step::Quit { wait: true },
                },
            };
            let quit = match wake {
                Step::Retry => break,
                Step::Quit { .. } => true,
                Step::Line(l) => offline_line(chat, &l, clock),
                Step::Nothing => false,
            };
            if quit {
                // Offline: nothing can go out; say what was not sent.
                chat.sign_off(&clock.now());
                ui.show(chat, clock.ms());
                return Ok(None);
            }
            if !ui.show(chat, clock.ms()) {
                return Ok(None);
            }
        }
        chat.connection = Connection::Reconnecting;
        ui.show(chat, clock.ms());
        let why = match tokio::time::timeout(CONNECT_TIMEOUT, connect()).await {
            Ok(Ok(c)) => return Ok(Some(c)),
            // A refusal of CNN is unsigned (PROTOCOL.md §2): anyone on the path
            // could have sent it, so it does not end the client for good.
            Ok(Err(ClientError::Refused(e))) if FATAL.contains(&e.code.as_str()) => {
                format!("refused: {} ({}; unsigned, so trying again)", e.code, e.reason)
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {}s", CONNECT_TIMEOUT.as_secs()),
        };
        attempt += 1;
        if attempt > RECONNECT_ATTEMPTS {
            return Err(ClientError::Ended(format!("gave up reconnecting after {RECONNECT_ATTEMPTS} attempts: {why}")));
        }
        let now = clock.now();
        chat.disconnected(&now, &why, now.ms + backoff(attempt).as_millis() as u64);
        if !ui.show(chat, clock.ms()) {
            return Ok(None);
        }
    }
}

/// A line typed while offline: text is queued by the view; commands that
/// need the server are refused. True: the line was `/quit`.
fn offline_line(chat: &mut Chat, line: &str, clock: &Clock) -> bool {
    let now = clock.now();
    let r = chat.on_line(line, &now);
    if r.quit {
        return true;
    }
    if !r.send.is_empty() {
        chat.note(&now, "offline: that needs the server; try again once reconnected (text you type is queued)".into());
    }
    false
}

/// One connection's life.
async fn session(
    client: Client,
    chat: &mut Chat,
    ui: &mut Ui,
    rx: &mut mpsc::UnboundedReceiver<Input>,
    clock: &Clock,
    state: &mut StateFile,
    first: bool,
) -> Result<End, ClientError> {
    let (mut reader, mut writer) = client.split();
    chat.session_started(reader.session());
    let start = chat.connected(&clock.now(), first);
    if send(chat, &mut writer, start).await.is_err() {
        return Ok(End::Lost("write failed".into()));
    }
    if !ui.show(chat, clock.ms()) {
        return Ok(End::Quit);
    }
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    keepalive.tick().await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // Ending: waiting, until this time, for what was typed to go out.
    let mut quitting: Option<Instant> = None;
    // Input ended: nothing more to read (a closed channel would wake the loop at once).
    let mut input_open = true;
    loop {
        let (commands, quit) = tokio::select! {
            event = reader.recv() => match event {
                Ok(None) => return Ok(lost(chat, ui, clock, quitting, "closed by the server".into())),
                Err(e) => return Ok(lost(chat, ui, clock, quitting, e.to_string())),
                Ok(Some(event)) => {
                    if let ServerEvent::Err(e) = &event {
                        if let Some(why) = chat.fatal_reason(e) {
                            // Fresh only in a bound session (PROTOCOL.md §7.10).
                            if reader.session().bound {
                                return Err(ClientError::Ended(why));
                            }
                            chat.unverified_fatal(e, &clock.now());
                            if !ui.show(chat, clock.ms()) {
                                return Ok(End::Quit);
                            }
                            continue;
                        }
                    }
                    if let ServerEvent::Sinfo(s) = &event {
                        // Keep alive well within the server's idle timeout.
                        keepalive = tokio::time::interval(Duration::from_secs((s.timeout_s / 3).max(1)));
                        keepalive.tick().await;
                    }
                    (chat.on_event(event, &clock.now()), None)
                }
            },
            input = rx.recv(), if input_open => {
                let step = match input {
                    Some(Input::Eof) | None => {
                        input_open = false;
                        Step::Quit { wait: true }
                    }
                    Some(i) => ui.handle(i, chat),
                };
                match step {
                    // Once ending, lines typed are not read.
                    Step::Line(_) if quitting.is_some() => (Vec::new(), None),
                    Step::Line(l) => {
                        let r = chat.on_line(&l, &clock.now());
                        (r.send, r.quit.then_some(true))
                    }
                    Step::Quit { wait } => (Vec::new(), Some(wait)),
                    Step::Retry | Step::Nothing => (Vec::new(), None),
                }
            }
            _ = tick.tick() => {
                state.save(chat, &clock.now(), false);
                (chat.tick(&clock.now()), None)
            }
            _ = keepalive.tick() => (vec![Command::Kalive], None),
        };
        if !ui.show(chat, clock.ms()) {
            return Ok(End::Quit);
        }
        if send(chat, &mut writer, commands).await.is_err() {
            return Ok(lost(chat, ui, clock, quitting, "write failed".into()));
        }
        match quit {
            Some(true) if quitting.is_none() && chat.busy() => quitting = Some(Instant::now() + QUIT_WAIT),
            Some(true) if quitting.is_some() => {}
            Some(_) => quitting = Some(Instant::now()),
            None => {}
        }
        if quitting.is_some_and(|until| !chat.busy() || Instant::now() >= until) {
            let last = chat.sign_off(&clock.now());
            ui.show(chat, clock.ms());
            if send(chat, &mut writer, last).await.is_ok() {
                // DCNN makes the server flush and close; wait for that, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(Some(_)) = reader.recv().await {}
                })
                .await;
            }
            return Ok(End::Quit);
        }
    }
}

/// The connection was lost: reconnect, unless the client was ending.
fn lost(chat: &mut Chat, ui: &mut Ui, clock: &Clock, quitting: Option<Instant>, why: String) -> End {
    if quitting.is_none() {
        return End::Lost(why);
    }
    let now = clock.now();
    chat.lost_at_the_end(&now, &why);
    chat.sign_off(&now);
    ui.show(chat, now.ms);
    End::Quit
}

/// One write for everything a reaction sends, acks and commits batched.
async fn send(chat: &mut Chat, writer: &mut ClientWriter, commands: Vec<Command>) -> Result<(), ClientError> {
    for command in chat.agent.coalesce(commands) {
        let nonce = writer.queue(command.clone());
        chat.sent(&command, nonce);
    }
    writer.flush().await
}

/// The address as typed, for messages.
fn describe(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp(addr) => addr.clone(),
        Endpoint::Tls { addr, .. } => format!("tls://{addr}"),
    }
}
