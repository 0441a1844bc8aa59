//! What a player sees: the game as the bot's messages describe it, kept
//! pure (no terminal, no socket) so both the terminal player and its tests
//! use it. The bot is the referee: this view only mirrors what it says, and
//! draws the board from the moves it reports.

use crate::board::{Board, Seat, COLUMNS, ROWS};
use crate::message::{EndReason, Incoming, Outgoing, Reply, Request, VERSION};

/// The player's side of the game.
#[derive(Debug, Default)]
pub struct PlayerView {
    /// The game, once seated.
    pub game: Option<String>,
    /// The game's channel.
    pub channel: Option<String>,
    /// My seat.
    pub seat: Option<Seat>,
    /// The other player's name.
    pub opponent: Option<String>,
    /// The board as the moves reported so far make it.
    pub board: Board,
    /// The cursor's column, while it is my turn.
    pub cursor: Option<usize>,
    /// A game is on.
    pub playing: bool,
    /// The last thing worth telling the player, in words.
    pub status: String,
    /// The winning line of the last game, as (column, row).
    pub line: Vec<(usize, usize)>,
    seq: u64,
}

impl PlayerView {
    /// A message to the bot asking `request`.
    pub fn request(&mut self, request: Request) -> String {
        self.seq += 1;
        Incoming { v: VERSION, seq: self.seq, request }.to_json()
    }

    /// True when it is my turn.
    pub fn my_turn(&self) -> bool {
        self.cursor.is_some()
    }

    fn name_of(&self, player: u8) -> String {
        match Seat::from_number(player) {
            Some(seat) if Some(seat) == self.seat => "you".to_owned(),
            _ => self.opponent.clone().unwrap_or_else(|| format!("player {player}")),
        }
    }

    /// Takes a message from the bot; returns the lines that say what happened
    /// (the plain mode prints them; the full-screen mode shows the last one).
    pub fn on_message(&mut self, text: &str) -> Vec<String> {
        let Some(message) = Outgoing::parse(text) else {
            return vec![format!("the bot sent something that is not a game message: {}", clean(text))];
        };
        let mut board_after = false;
        let summary = match message.reply {
            Reply::Ack => vec!["ok".to_owned()],
            Reply::Joined { game, player, channel } => {
                let line = format!("joined game {game} as player {player}; spectators can join {channel}");
                self.game = Some(game);
                self.channel = Some(channel);
                self.seat = Seat::from_number(player);
                vec![line, "waiting for another player".to_owned()]
            }
            Reply::Full { reason } => vec![format!("no seat: {reason}")],
            Reply::GameStart { game, player, colour, opponent, channel } => {
                self.game = Some(game);
                self.channel = Some(channel);
                self.seat = Seat::from_number(player);
                self.board = Board::new();
                self.line.clear();
                self.playing = true;
                let line = format!("game start: you are {colour} (player {player}) against {opponent}");
                self.opponent = Some(opponent);
                vec![line]
            }
            Reply::RequestMove { cursor, .. } => {
                self.cursor = Some(cursor);
                vec![format!("your move: cursor at column {}", cursor.saturating_add(1))]
            }
            Reply::Cursor { cursor, .. } => {
                self.cursor = Some(cursor);
                vec![format!("cursor at column {}", cursor.saturating_add(1))]
            }
            Reply::MoveReceived { column, row, .. } => {
                self.cursor = None;
                if let Some(seat) = self.seat {
                    let _ = self.board.drop_disc(seat, column);
                }
                board_after = true;
                vec![format!("move received: column {}, row {}", column.saturating_add(1), row.saturating_add(1))]
            }
            Reply::Moved { player, column, .. } => {
                if let Some(seat) = Seat::from_number(player) {
                    let _ = self.board.drop_disc(seat, column);
                }
                board_after = true;
                vec![format!("{} dropped in column {}", self.name_of(player), column.saturating_add(1))]
            }
            Reply::GameOver { winner, reason, line, .. } => {
                self.playing = false;
                self.cursor = None;
                self.line = line.iter().map(|[c, r]| (*c, *r)).collect();
                if matches!(reason, EndReason::PlayerLeft | EndReason::Forfeit) {
                    self.game = None;
                    self.seat = None;
                }
                let who = |w: u8| match self.name_of(w).as_str() {
                    "you" => "you win".to_owned(),
                    name => format!("{name} wins"),
                };
                let said = match (reason, winner) {
                    (EndReason::Win, Some(w)) => format!("game over: {}", who(w)),
                    (EndReason::Forfeit, Some(w)) => format!("game over: forfeit, {}", who(w)),
                    (EndReason::Draw, _) => "game over: a draw".to_owned(),
                    (EndReason::PlayerLeft, _) => "game over: player left".to_owned(),
                    (_, None) => "game over".to_owned(),
                };
                let next = if self.game.is_some() { "send ready to play again" } else { "send join to play again" };
                vec![said, next.to_owned()]
            }
            Reply::State { game, player, phase, turn, cursor, rows } => {
                self.game = game;
                self.seat = player.and_then(Seat::from_number);
                self.playing = phase == "playing";
                self.cursor = if turn.is_some() && turn == player { cursor } else { None };
                self.board = Board::new();
                // Rebuild the board bottom-up from the rows (the top row first).
                for row in (0..rows.len().min(ROWS)).rev() {
                    for (column, cell) in rows[row].chars().take(COLUMNS).enumerate() {
                        if let Some(seat) = cell.to_digit(10).and_then(|d| Seat::from_number(d as u8)) {
                            let _ = self.board.drop_disc(seat, column);
                        }
                    }
                }
                board_after = true;
                vec![format!("state: {phase}")]
            }
            Reply::Error { code, reason } => vec![format!("refused ({code}): {reason}")],
        };
        // The bot's strings (names, reasons, ids) reach a terminal: no control characters.
        let summary: Vec<String> = summary.iter().map(|line| clean(line)).collect();
        self.status = summary.join(" · ");
        let mut lines = summary;
        if board_after {
            lines.extend(self.board.to_text().lines().map(str::to_owned));
        }
        lines
    }
}

/// `text` with control characters (escape sequences, carriage returns)
/// replaced, so a message cannot drive the terminal.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// A plain-mode input line as a request: `join [GAME]`, `ready`, `left`,
/// `right`, `drop [COLUMN 1-7]`, `leave`, `state`.
pub fn parse_line(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(match words.as_slice() {
        ["join"] => Request::Join { game: None },
        ["join", game] => Request::Join { game: Some((*game).to_owned()) },
        ["ready"] => Request::Ready,
        ["left"] => Request::Left,
        ["right"] => Request::Right,
        ["drop"] => Request::Drop { column: None },
        ["drop", n] => match n.parse::<usize>() {
            Ok(n @ 1..=COLUMNS) => Request::Drop { column: Some(n - 1) },
            _ => return Err(format!("drop takes a column from 1 to {COLUMNS}")),
        },
        ["leave"] => Request::Leave,
        ["state"] => Request::State,
        _ => return Err("commands: join [GAME], ready, left, right, drop [COLUMN], leave, state, quit".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Outgoing;

    fn from_bot(view: &mut PlayerView, reply: Reply) -> Vec<String> {
        view.on_message(&Outgoing { v: 1, seq: 1, re: None, reply }.to_json())
    }

    #[test]
    fn the_view_follows_a_game_from_the_bot_s_messages() {
        let mut v = PlayerView::default();
        let start = Reply::GameStart {
            game: "g".into(),
            player: 2,
            colour: "yellow".into(),
            opponent: "alice".into(),
            channel: "c4-g".into(),
        };
        assert_eq!(from_bot(&mut v, start), ["game start: you are yellow (player 2) against alice"]);
        let moved = from_bot(&mut v, Reply::Moved { game: "g".into(), player: 1, column: 3, row: 0 });
        assert_eq!(moved[0], "alice dropped in column 4");
        assert!(!v.my_turn());
        from_bot(&mut v, Reply::RequestMove { game: "g".into(), cursor: 3 });
        assert!(v.my_turn());
        from_bot(&mut v, Reply::MoveReceived { game: "g".into(), column: 3, row: 1 });
        assert_eq!(v.board.at(3, 1), Some(Seat::Two));
        assert!(!v.my_turn());
        let over = Reply::GameOver { game: "g".into(), winner: Some(2), reason: EndReason::Win, line: vec![] };
        assert_eq!(from_bot(&mut v, over)[0], "game over: you win");
        assert_eq!(v.status, "game over: you win · send ready to play again");
    }

    #[test]
    fn lines_become_requests_and_bad_ones_say_what_is_allowed() {
        assert_eq!(parse_line("drop 7"), Ok(Request::Drop { column: Some(6) }));
        assert_eq!(parse_line(" left "), Ok(Request::Left));
        assert!(parse_line("drop 8").is_err());
        assert!(parse_line("fly").unwrap_err().contains("commands:"));
    }
}
