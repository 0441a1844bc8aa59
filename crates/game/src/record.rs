//! The game's record: one line per event, posted to the game's channel,
//! whose committed log is the durable, replayable history of the game.
//! Each line starts with a bracketed, machine-readable part and goes on in
//! words for people watching the channel:
//!
//! ```text
//! [c4 start 01JD… red=alice yellow=bob] alice (red) plays bob (yellow)
//! [c4 move 1 3 0] player 1 (red) drops in column 4
//! [c4 over win 1] player 1 (red) wins
//! ```

use std::fmt::Write;

use crate::board::{Board, Outcome, Seat};
use crate::message::EndReason;

/// One line of a game's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A game begins (a pair may play several in one channel).
    Start {
        /// The game.
        game: String,
        /// Player 1's name.
        red: String,
        /// Player 2's name.
        yellow: String,
    },
    /// A disc was dropped.
    Move {
        /// The player (1 or 2).
        player: u8,
        /// The column (0 to 6).
        column: usize,
        /// The row it landed on (0 at the bottom).
        row: usize,
    },
    /// The game ended.
    Over {
        /// The winner, if any.
        winner: Option<u8>,
        /// Why.
        reason: EndReason,
    },
}

fn reason_word(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Win => "win",
        EndReason::Draw => "draw",
        EndReason::PlayerLeft => "player_left",
        EndReason::Forfeit => "forfeit",
    }
}

fn colour(player: u8) -> &'static str {
    Seat::from_number(player).map_or("?", Seat::colour)
}

impl Record {
    /// The line posted to the channel.
    pub fn to_line(&self) -> String {
        match self {
            Record::Start { game, red, yellow } => {
                format!("[c4 start {game} red={red} yellow={yellow}] {red} (red) plays {yellow} (yellow)")
            }
            Record::Move { player, column, row } => format!(
                "[c4 move {player} {column} {row}] player {player} ({}) drops in column {}",
                colour(*player),
                column + 1
            ),
            Record::Over { winner, reason } => {
                let mut line = format!("[c4 over {}", reason_word(*reason));
                if let Some(w) = winner {
                    let _ = write!(line, " {w}");
                }
                line.push_str("] ");
                line.push_str(&match (reason, winner) {
                    (EndReason::Win, Some(w)) => format!("player {w} ({}) wins", colour(*w)),
                    (EndReason::Forfeit, Some(w)) => {
                        format!("the other player forfeits: player {w} ({}) wins", colour(*w))
                    }
                    (EndReason::Draw, _) => "a draw: the board is full".to_owned(),
                    (EndReason::PlayerLeft, _) => "game over: player left".to_owned(),
                    (_, None) => "game over".to_owned(),
                });
                line
            }
        }
    }

    /// Reads a line of the record; `None` for any other line.
    pub fn parse(line: &str) -> Option<Record> {
        let inner = line.strip_prefix("[c4 ")?.split(']').next()?;
        let words: Vec<&str> = inner.split_whitespace().collect();
        match words.as_slice() {
            ["start", game, red, yellow] => Some(Record::Start {
                game: (*game).to_owned(),
                red: red.strip_prefix("red=")?.to_owned(),
                yellow: yellow.strip_prefix("yellow=")?.to_owned(),
            }),
            ["move", player, column, row] => Some(Record::Move {
                player: player.parse().ok().filter(|p| Seat::from_number(*p).is_some())?,
                column: column.parse().ok()?,
                row: row.parse().ok()?,
            }),
            ["over", reason, rest @ ..] => {
                let reason = match *reason {
                    "win" => EndReason::Win,
                    "draw" => EndReason::Draw,
                    "player_left" => EndReason::PlayerLeft,
                    "forfeit" => EndReason::Forfeit,
                    _ => return None,
                };
                let winner = match rest {
                    [] => None,
                    [w] => Some(w.parse().ok().filter(|p| Seat::from_number(*p).is_some())?),
                    _ => return None,
                };
                Some(Record::Over { winner, reason })
            }
            _ => None,
        }
    }
}

/// Replays a channel's lines (in commit order): the board after each move,
/// as text, for `sigil game replay`. Lines that are not records are skipped;
/// a move the rules refuse is reported, not applied.
pub fn replay<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    let mut board = Board::new();
    let mut names = (String::from("player 1"), String::from("player 2"));
    let mut moves = 0;
    for line in lines {
        let Some(record) = Record::parse(line) else { continue };
        match record {
            Record::Start { game, red, yellow } => {
                board = Board::new();
                moves = 0;
                let _ = writeln!(out, "game {game}: {red} (red, X) plays {yellow} (yellow, O)\n");
                names = (red, yellow);
            }
            Record::Move { player, column, row } => {
                let Some(seat) = Seat::from_number(player) else { continue };
                let name = if seat == Seat::One { &names.0 } else { &names.1 };
                moves += 1;
                match board.drop_disc(seat, column) {
                    Ok((landed, outcome)) => {
                        let _ =
                            writeln!(out, "move {moves}: {name} ({}) drops in column {}", seat.colour(), column + 1);
                        if landed != row {
                            let _ = writeln!(out, "  (the record says row {row}, the rules say row {landed})");
                        }
                        out.push_str(&board.to_text());
                        out.push('\n');
                        if let Outcome::Win(_) = outcome {
                            let _ = writeln!(out, "{name} has four in a row");
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "move {moves}: {name} ({}): refused by the rules: {e}", seat.colour());
                    }
                }
            }
            Record::Over { winner, reason } => {
                let winner_name = |w: u8| if w == 1 { names.0.clone() } else { names.1.clone() };
                let _ = match (reason, winner) {
                    (EndReason::Win, Some(w)) => writeln!(out, "game over: {} wins\n", winner_name(w)),
                    (EndReason::Forfeit, Some(w)) => writeln!(out, "game over: forfeit, {} wins\n", winner_name(w)),
                    (EndReason::Draw, _) => writeln!(out, "game over: a draw\n"),
                    (EndReason::PlayerLeft, _) => writeln!(out, "game over: player left\n"),
                    (_, None) => writeln!(out, "game over\n"),
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let records = [
            Record::Start { game: "01ABC".into(), red: "alice".into(), yellow: "bob".into() },
            Record::Move { player: 2, column: 6, row: 5 },
            Record::Over { winner: Some(1), reason: EndReason::Win },
            Record::Over { winner: None, reason: EndReason::PlayerLeft },
            Record::Over { winner: Some(2), reason: EndReason::Forfeit },
            Record::Over { winner: None, reason: EndReason::Draw },
        ];
        for record in records {
            assert_eq!(Record::parse(&record.to_line()), Some(record.clone()), "{}", record.to_line());
        }
        assert_eq!(Record::parse("hello"), None);
        assert_eq!(Record::parse("[c4 move 3 1 0]"), None, "no player 3");
    }

    #[test]
    fn a_replay_draws_the_board_after_each_move() {
        let lines: Vec<String> =
            std::iter::once(Record::Start { game: "g".into(), red: "al".into(), yellow: "bo".into() })
                .chain([(1, 0, 0), (2, 0, 1), (1, 1, 0)].map(|(player, column, row)| Record::Move {
                    player,
                    column,
                    row,
                }))
                .map(|r| r.to_line())
                .chain(["someone chatting".to_owned()])
                .collect();
        let text = replay(lines.iter().map(String::as_str));
        assert!(text.contains("al (red, X) plays bo (yellow, O)"), "{text}");
        assert!(text.contains("move 3: al (red) drops in column 2"), "{text}");
        assert!(text.ends_with("O . . . . . .\nX X . . . . .\n1 2 3 4 5 6 7\n\n"), "{text}");
    }
}
