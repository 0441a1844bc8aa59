//! The game's messages (spec/GAME.md): one JSON object per private
//! message, `{"v": 1, "seq": N, "type": "...", ...}`; the bot's answers also
//! carry `re`, the `seq` of the message they answer.

use serde::{Deserialize, Serialize};

/// The message format's version.
pub const VERSION: u32 = 1;

/// What a player asks of the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Join a game: a given one, or any with a free seat (a new one if none).
    Join {
        /// The game to join, if a particular one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        game: Option<String>,
    },
    /// Ready for the next game of this pair.
    Ready,
    /// Move the cursor one column left.
    Left,
    /// Move the cursor one column right.
    Right,
    /// Drop a disc in the cursor's column (or in `column`, when given).
    Drop {
        /// A column to drop in directly (0 to 6), instead of the cursor's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<usize>,
    },
    /// Leave the game: it ends.
    Leave,
    /// The game as it stands (after a reconnect, say).
    State,
}

/// A player's message: the request with its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// The sender's sequence number, echoed as `re` in the answer.
    pub seq: u64,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// How a game ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Four in a row.
    Win,
    /// The board is full.
    Draw,
    /// A player left.
    PlayerLeft,
    /// A player was away longer than the grace period.
    Forfeit,
}

/// The board as the bot sends it: `rows[0]` is the top row, each a string
/// of 7 cells, `.` empty, `1` player 1 (red), `2` player 2 (yellow).
pub type Rows = Vec<String>;

/// What the bot sends a player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Done; nothing more to say.
    Ack,
    /// You have a seat: player 1 or 2 of `game`.
    Joined {
        /// The game.
        game: String,
        /// Your player number.
        player: u8,
        /// The game's channel (moves and results, for anyone to watch).
        channel: String,
    },
    /// No seat for you.
    Full {
        /// Why, in words.
        reason: String,
    },
    /// Both players are ready: the game begins.
    GameStart {
        /// The game.
        game: String,
        /// Your player number.
        player: u8,
        /// Your colour: `red` (player 1, moves first) or `yellow`.
        colour: String,
        /// The other player's name.
        opponent: String,
        /// The game's channel.
        channel: String,
    },
    /// Your turn: move the cursor, then drop.
    RequestMove {
        /// The game.
        game: String,
        /// The cursor's column (0 to 6).
        cursor: usize,
    },
    /// The cursor moved.
    Cursor {
        /// The game.
        game: String,
        /// Its column now.
        cursor: usize,
    },
    /// Your disc is in: the other player's turn follows (unless the game is over).
    MoveReceived {
        /// The game.
        game: String,
        /// Where it landed.
        column: usize,
        /// The row, 0 at the bottom.
        row: usize,
    },
    /// The other player moved.
    Moved {
        /// The game.
        game: String,
        /// Who moved.
        player: u8,
        /// Where the disc landed.
        column: usize,
        /// The row, 0 at the bottom.
        row: usize,
    },
    /// The game is over; both players are not ready until they say `ready`.
    GameOver {
        /// The game.
        game: String,
        /// The winner's player number, when there is one.
        winner: Option<u8>,
        /// Why it ended.
        reason: EndReason,
        /// The winning four (or more), as `[column, row]`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        line: Vec<[usize; 2]>,
    },
    /// The game as it stands.
    State {
        /// The game, if you have a seat.
        game: Option<String>,
        /// Your player number.
        player: Option<u8>,
        /// `waiting` (for a player or for both to be ready), `playing` or `over`.
        phase: String,
        /// Whose turn it is, while playing.
        turn: Option<u8>,
        /// The cursor's column, while playing.
        cursor: Option<usize>,
        /// The board.
        rows: Rows,
    },
    /// Your message was refused; the game is unchanged.
    Error {
        /// A stable code: `bad_message`, `unsupported_version`, `not_in_game`,
        /// `not_your_turn`, `not_playing`, `column_full`, `no_such_column`, `no_such_game`.
        code: String,
        /// Why, in words.
        reason: String,
    },
}

/// A bot's message: the reply with its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// The bot's sequence number for this player.
    pub seq: u64,
    /// The `seq` of the player's message this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<u64>,
    /// The reply.
    #[serde(flatten)]
    pub reply: Reply,
}

impl Incoming {
    /// Parses a player's message: `Err` with the refusal to send back (and
    /// the `seq` to answer, when it could be read).
    pub fn parse(text: &str) -> Result<Incoming, (Option<u64>, Reply)> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|_| (None, error("bad_message", "not a game message: send a JSON object (spec/GAME.md)")))?;
        let seq = value.get("seq").and_then(serde_json::Value::as_u64);
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                let why = format!("message format version {v} is not supported: this bot speaks version {VERSION}");
                return Err((seq, error("unsupported_version", why)));
            }
            None => return Err((seq, error("bad_message", "a game message needs \"v\": 1"))),
        }
        serde_json::from_value(value).map_err(|e| (seq, error("bad_message", format!("not a game message: {e}"))))
    }

    /// The message as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Outgoing {
    /// The message as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a bot's message.
    pub fn parse(text: &str) -> Option<Outgoing> {
        serde_json::from_str(text).ok()
    }
}

/// An [`Reply::Error`].
pub fn error(code: &str, reason: impl Into<String>) -> Reply {
    Reply::Error { code: code.to_owned(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let join = Incoming { v: 1, seq: 7, request: Request::Join { game: None } };
        assert_eq!(join.to_json(), r#"{"v":1,"seq":7,"type":"join"}"#);
        let drop = Incoming::parse(r#"{"v":1,"seq":8,"type":"drop","column":3}"#).expect("drop");
        assert_eq!(drop.request, Request::Drop { column: Some(3) });
        let out = Outgoing { v: 1, seq: 1, re: Some(7), reply: Reply::Cursor { game: "g".into(), cursor: 2 } };
        assert_eq!(out.to_json(), r#"{"v":1,"seq":1,"re":7,"type":"cursor","game":"g","cursor":2}"#);
        assert_eq!(Outgoing::parse(&out.to_json()), Some(out));
    }

    #[test]
    fn garbage_unknown_types_and_other_versions_are_refused_in_words() {
        let code = |text: &str| match Incoming::parse(text) {
            Err((_, Reply::Error { code, .. })) => code,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(code("hello"), "bad_message");
        assert_eq!(code(r#"{"v":1,"seq":1,"type":"fly"}"#), "bad_message");
        assert_eq!(code(r#"{"seq":1,"type":"ready"}"#), "bad_message");
        assert_eq!(code(r#"{"v":2,"seq":1,"type":"ready"}"#), "unsupported_version");
        assert!(matches!(Incoming::parse(r#"{"v":1,"seq":5,"type":"fly"}"#), Err((Some(5), _))));
    }
}
