//! `sigil game play` and `sigil game replay`: a player in the terminal, and
//! a game's record read back from its channel.
//!
//! The player is a sigil client that talks to the bot in private messages:
//! full-screen on a terminal (the board in colour; arrow keys, Enter, `r`,
//! `q`), or one line per event with commands read from stdin (`--plain`, and
//! whenever stdin or stdout is not a terminal), which is what scripts and
//! tests drive.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::{Color, Stylize};
use crossterm::{cursor, execute, queue, terminal};
use futures_util::StreamExt;
use sigil_client::agent::Agent;
use sigil_client::{Client, ClientError, ClientReader, ClientWriter, ConnectOptions, Credentials, Endpoint};
use sigil_proto::{Body, Command, ServerEvent};
use tokio::io::AsyncBufReadExt;
use ulid::Ulid;

use crate::board::{Seat, COLUMNS, ROWS};
use crate::message::Request;
use crate::player::{parse_line, PlayerView};
use crate::record::replay;

/// A game command that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// The connection failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The terminal failed.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// No account has the bot's name.
    #[error("no account is named {0:?}: give the bot's account name with --bot NAME")]
    NoBot(String),
    /// No channel has that name.
    #[error("no channel is named {0:?} (game channels are named c4-GAME)")]
    NoChannel(String),
    /// The server refused something for good.
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server closed the connection.
    #[error("the connection was closed: {0}")]
    Closed(String),
}

/// How long a command waits for the server's answer before giving up.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// How long quitting waits for the bot to confirm the seat is free.
const LEAVE_WAIT: Duration = Duration::from_secs(3);

/// The account named `name` (ignoring case), from `LST_USR {all: true}`,
/// and the other events that arrived meanwhile (the bot may already be
/// talking: they are not to be lost).
async fn find_account(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    name: &str,
) -> Result<(Ulid, Vec<ServerEvent>), PlayError> {
    writer.send(Command::LstUsr { all: true }).await?;
    let mut early = Vec::new();
    let found = tokio::time::timeout(ANSWER_WAIT, async {
        let mut found = None;
        loop {
            match reader.recv().await? {
                Some(ServerEvent::UsrLst(l)) => {
                    found = found.or_else(|| l.users.iter().find(|u| u.name.eq_ignore_ascii_case(name)).map(|u| u.id));
                    if !l.more {
                        return Ok::<_, PlayError>(found);
                    }
                }
                Some(other) => early.push(other),
                None => return Err(PlayError::Closed("while listing users".into())),
            }
        }
    })
    .await
    .map_err(|_| PlayError::Closed("no answer to LST_USR".into()))??;
    Ok((found.ok_or_else(|| PlayError::NoBot(name.to_owned()))?, early))
}

/// Plays against whoever the bot pairs this player with, until `q`/`quit`
/// or the end of input (which leave the game). `plain` forces line mode.
pub async fn play(endpoint: &Endpoint, cred: &Credentials, bot: &str, plain: bool) -> Result<(), PlayError> {
    let client = Client::connect_to(endpoint, cred, ConnectOptions::default()).await?;
    let (mut reader, mut writer) = client.split();
    let (bot_id, early) = find_account(&mut reader, &mut writer, bot).await?;
    let full_screen = !plain && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let mut game = Game {
        view: PlayerView::default(),
        agent: Agent::new(cred.id, rand::random()),
        bot: bot_id,
        me: cred.name.clone(),
    };
    let join = game.view.request(Request::Join { game: None });
    writer.send(Command::PvMsg { to: bot_id, msg_id: Ulid::new(), msg: Body::text(join) }).await?;
    if full_screen {
        let _screen = Screen::enter()?;
        for event in &early {
            let _ = game.on_event(event, &mut writer)?;
        }
        game.full_screen(&mut reader, &mut writer).await
    } else {
        say(&format!(
            "signed in as {}; commands: join, ready, left, right, drop [COLUMN], leave, state, quit",
            game.me
        ));
        for event in &early {
            for line in game.on_event(event, &mut writer)? {
                say(&line);
            }
        }
        game.plain(&mut reader, &mut writer).await
    }
}

struct Game {
    view: PlayerView,
    agent: Agent,
    bot: Ulid,
    me: String,
}

/// What one event or input asks of the loop.
enum Step {
    Go,
    Quit,
}

impl Game {
    /// Handles a server event: the lines to show (empty: nothing to say).
    fn on_event(&mut self, event: &ServerEvent, writer: &mut ClientWriter) -> Result<Vec<String>, PlayError> {
        for command in self.agent.on_event(event, 0) {
            writer.queue(command);
        }
        Ok(match event {
            ServerEvent::Msg(m) if m.from == self.bot => self.view.on_message(&String::from_utf8_lossy(&m.msg.bytes)),
            ServerEvent::Udcnn(u) if u.id == self.bot => vec!["the bot went offline: the game waits for it".into()],
            ServerEvent::Ucnn(u) if u.id == self.bot => vec!["the bot is back".into()],
            ServerEvent::Err(e)
                if matches!(e.code.as_str(), "auth_failed" | "account_removed" | "session_replaced") =>
            {
                return Err(PlayError::Refused(format!("{}: {}", e.code, e.reason)));
            }
            ServerEvent::Err(e) if e.code == "user_offline" => vec!["the bot is offline: try again later".into()],
            ServerEvent::Err(e) => vec![format!("server: {} ({})", e.reason, e.code)],
            _ => Vec::new(),
        })
    }

    fn send(&mut self, request: Request, writer: &mut ClientWriter) {
        let text = self.view.request(request);
        writer.queue(Command::PvMsg { to: self.bot, msg_id: Ulid::new(), msg: Body::text(text) });
    }

    /// Leaves the game and ends the session. The `leave` goes out even if
    /// no seat was confirmed yet (the answer to `join` may be on its way; the
    /// bot answers `not_in_game` otherwise), and the bot's answer is waited
    /// for (a little) so the seat is free when this ends. `print` shows what
    /// arrives meanwhile (the plain mode).
    async fn quit(
        &mut self,
        reader: &mut ClientReader,
        writer: &mut ClientWriter,
        print: bool,
    ) -> Result<(), PlayError> {
        self.send(Request::Leave, writer);
        writer.flush().await?;
        let _ = tokio::time::timeout(LEAVE_WAIT, async {
            while let Ok(Some(event)) = reader.recv().await {
                let answered = matches!(&event, ServerEvent::Msg(m) if m.from == self.bot);
                for line in self.on_event(&event, writer).unwrap_or_default() {
                    if print {
                        say(&line);
                    }
                }
                if answered && self.view.game.is_none() {
                    break;
                }
            }
        })
        .await;
        writer.queue(Command::Dcnn);
        writer.flush().await?;
        // The server flushes and closes after DCNN.
        let _ = tokio::time::timeout(ANSWER_WAIT, async { while let Ok(Some(_)) = reader.recv().await {} }).await;
        Ok(())
    }

    async fn plain(&mut self, reader: &mut ClientReader, writer: &mut ClientWriter) -> Result<(), PlayError> {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut keepalive = tokio::time::interval(Duration::from_secs(30));
        keepalive.tick().await;
        loop {
            let step = tokio::select! {
                event = reader.recv() => match event? {
                    Some(event) => {
                        for line in self.on_event(&event, writer)? {
                            if !say(&line) {
                                return self.quit(reader, writer, true).await;
                            }
                        }
                        Step::Go
                    }
                    None => return Err(PlayError::Closed("by the server".into())),
                },
                line = stdin.next_line() => match line? {
                    None => Step::Quit,
                    Some(line) if line.trim() == "quit" => Step::Quit,
                    Some(line) if line.trim().is_empty() => Step::Go,
                    Some(line) => {
                        match parse_line(&line) {
                            Ok(request) => self.send(request, writer),
                            Err(why) => {
                                say(&why);
                            }
                        }
                        Step::Go
                    }
                },
                _ = keepalive.tick() => {
                    writer.queue(Command::Kalive);
                    Step::Go
                }
            };
            if let Step::Quit = step {
                return self.quit(reader, writer, true).await;
            }
            writer.flush().await?;
        }
    }

    async fn full_screen(&mut self, reader: &mut ClientReader, writer: &mut ClientWriter) -> Result<(), PlayError> {
        let mut keys = EventStream::new();
        let mut keepalive = tokio::time::interval(Duration::from_secs(30));
        keepalive.tick().await;
        self.view.status = "asking the bot for a seat…".into();
        draw(&self.view)?;
        loop {
            let step = tokio::select! {
                event = reader.recv() => match event? {
                    Some(event) => {
                        let lines = self.on_event(&event, writer)?;
                        // Moves already set the status; anything else is said here.
                        let from_bot = matches!(&event, ServerEvent::Msg(m) if m.from == self.bot);
                        if let (false, Some(last)) = (from_bot, lines.last()) {
                            self.view.status.clone_from(last);
                        }
                        Step::Go
                    }
                    None => return Err(PlayError::Closed("by the server".into())),
                },
                key = keys.next() => match key {
                    Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                        match k.code {
                            _ if ctrl_c => Step::Quit,
                            KeyCode::Char('q') | KeyCode::Esc => Step::Quit,
                            KeyCode::Left | KeyCode::Char('h') => { self.send(Request::Left, writer); Step::Go }
                            KeyCode::Right | KeyCode::Char('l') => { self.send(Request::Right, writer); Step::Go }
                            KeyCode::Enter | KeyCode::Down | KeyCode::Char(' ') => {
                                self.send(Request::Drop { column: None }, writer);
                                Step::Go
                            }
                            KeyCode::Char('r') => { self.send(Request::Ready, writer); Step::Go }
                            KeyCode::Char('j') => { self.send(Request::Join { game: None }, writer); Step::Go }
                            _ => Step::Go,
                        }
                    }
                    Some(Ok(_)) => Step::Go,
                    Some(Err(e)) => return Err(PlayError::Terminal(e)),
                    None => Step::Quit,
                },
                _ = keepalive.tick() => {
                    writer.queue(Command::Kalive);
                    Step::Go
                }
            };
            if let Step::Quit = step {
                return self.quit(reader, writer, false).await;
            }
            writer.flush().await?;
            draw(&self.view)?;
        }
    }
}

/// Writes a line to stdout; false once stdout is gone.
fn say(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Raw mode and the alternate screen, restored on drop (also on errors).
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        terminal::enable_raw_mode()?;
        // From here on, Drop restores the terminal, also when entering fails.
        let screen = Screen;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        // A panic prints after the terminal is restored, not into raw mode.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
            let _ = terminal::disable_raw_mode();
            previous(info);
        }));
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Draws the board, the cursor, the status and the keys.
fn draw(view: &PlayerView) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    queue!(out, terminal::Clear(terminal::ClearType::All), cursor::MoveTo(0, 0))?;
    let title = match (&view.seat, &view.opponent) {
        (Some(seat), Some(opponent)) => format!("connect four: you are {} against {opponent}", seat.colour()),
        _ => "connect four".to_owned(),
    };
    write!(out, "{}\r\n\r\n", title.bold())?;
    let mut marker = String::from(" ");
    for column in 0..COLUMNS {
        marker.push_str(if view.cursor == Some(column) { " ▼ " } else { "   " });
    }
    let colour = view.seat.map_or(Color::White, seat_colour);
    write!(out, "{}\r\n", marker.with(colour))?;
    for row in (0..ROWS).rev() {
        write!(out, " ")?;
        for column in 0..COLUMNS {
            let cell = view.board.at(column, row);
            let winning = view.line.contains(&(column, row));
            let disc = match cell {
                None => " · ".with(Color::DarkGrey),
                Some(seat) if winning => " ◉ ".with(seat_colour(seat)).bold(),
                Some(seat) => " ● ".with(seat_colour(seat)),
            };
            write!(out, "{disc}")?;
        }
        write!(out, "\r\n")?;
    }
    write!(out, "  1  2  3  4  5  6  7\r\n\r\n")?;
    let turn = if view.my_turn() {
        "your turn".to_owned()
    } else if view.playing {
        "the other player's turn".to_owned()
    } else {
        String::new()
    };
    write!(out, "{}\r\n{}\r\n\r\n", turn.bold(), view.status)?;
    write!(out, "{}\r\n", "←/→ move · Enter drop · r ready · j join · q leave".with(Color::DarkGrey))?;
    out.flush()
}

fn seat_colour(seat: Seat) -> Color {
    match seat {
        Seat::One => Color::Red,
        Seat::Two => Color::Yellow,
    }
}

/// Reads a game channel's committed log and replays it as text: only the
/// lines the bot (`bot`, an account name) posted count, so nobody else in the
/// channel can change the record. Joins the channel for the time it takes
/// if this account is not a member, and leaves again on every path.
pub async fn replay_channel(
    endpoint: &Endpoint,
    cred: &Credentials,
    bot: &str,
    channel: &str,
) -> Result<String, PlayError> {
    let client = Client::connect_to(endpoint, cred, ConnectOptions::default()).await?;
    let (mut reader, mut writer) = client.split();
    let (bot_id, _) = find_account(&mut reader, &mut writer, bot).await?;
    writer.send(Command::ChLst).await?;
    let deadline = Instant::now() + ANSWER_WAIT;
    let id = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), async {
        let mut found = None;
        loop {
            match reader.recv().await? {
                Some(ServerEvent::LstCh(l)) => {
                    let name = channel.trim_start_matches('#');
                    found =
                        found.or_else(|| l.channels.iter().find(|c| c.name.eq_ignore_ascii_case(name)).map(|c| c.id));
                    if !l.more {
                        return Ok::<_, PlayError>(found);
                    }
                }
                Some(_) => {}
                None => return Err(PlayError::Closed("while listing channels".into())),
            }
        }
    })
    .await
    .map_err(|_| PlayError::Closed("no answer to CH_LST".into()))??
    .ok_or_else(|| PlayError::NoChannel(channel.to_owned()))?;
    // Members may pull: join (a member already gets already_member), pull
    // every page.
    writer.send(Command::ChJoin { id }).await?;
    writer.send(Command::ChPull { id, anchor: None }).await?;
    let mut joined = false;
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    let pulled = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), async {
        let mut asked: Option<Ulid> = None;
        loop {
            match reader.recv().await? {
                Some(ServerEvent::ChUjoin(u)) if u.channel == id && u.user == cred.id => joined = true,
                // Acknowledge what the channel relays meanwhile: a member that
                // does not would hold up the bot's commits while it reads.
                Some(ServerEvent::ChMsg(m)) if m.id == id => {
                    writer.send(Command::AckChMsg { id: m.msg_id, ids: Vec::new() }).await?;
                }
                // Only the page answering this pull (a confirmed merge also
                // arrives as CH_APPEND).
                Some(ServerEvent::ChAppend(a)) if a.id == id && a.anchor == asked => {
                    for m in a.messages.iter().filter(|m| m.from == bot_id && seen.insert(m.id)) {
                        lines.push(String::from_utf8_lossy(&m.msg.bytes).into_owned());
                    }
                    match (a.more, a.messages.last()) {
                        (true, Some(last)) => {
                            asked = Some(last.id);
                            writer.send(Command::ChPull { id, anchor: asked }).await?;
                        }
                        _ => return Ok::<_, PlayError>(()),
                    }
                }
                Some(ServerEvent::Err(e)) if e.code != "already_member" => {
                    return Err(PlayError::Refused(format!("{} ({})", e.reason, e.code)));
                }
                Some(_) => {}
                None => return Err(PlayError::Closed("while pulling the history".into())),
            }
        }
    })
    .await
    .map_err(|_| PlayError::Closed("the history did not arrive".into()))
    .and_then(|r| r);
    if joined {
        writer.queue(Command::ChLeave { id });
    }
    writer.queue(Command::Dcnn);
    let _ = writer.flush().await;
    pulled?;
    Ok(replay(lines.iter().map(String::as_str)))
}
