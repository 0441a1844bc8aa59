//! The referee: the seed's game states as a pure state machine. It takes a
//! player's message (or a player going offline, or the time passing) and
//! returns what to send to whom and what to post to the game's channel. It
//! knows nothing of sigil, sockets or clocks: the bot (`bot.rs`) feeds it.
//!
//! Every player message is answered, with information or an `ack` (the
//! seed's transactional rule); refusals leave every game unchanged. Several
//! games run at once, one per pair of players.

use std::collections::{BTreeMap, HashMap};

use ulid::Ulid;

use crate::board::{Board, DropError, Outcome, Seat, COLUMNS, ROWS};
use crate::message::{error, EndReason, Incoming, Outgoing, Reply, Request, Rows, VERSION};
use crate::record::Record;

/// Where the cursor starts: the middle column.
const START_CURSOR: usize = COLUMNS / 2;

/// What the referee asks the bot to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `message` to `to` as a private message.
    Send {
        /// The player.
        to: Ulid,
        /// The message.
        message: Outgoing,
    },
    /// Create the game's channel (named `channel`) and post there from now
    /// on. It comes before the seat's `joined` that names the channel, so
    /// nobody told the name can create the channel first.
    OpenChannel {
        /// Its name.
        channel: String,
    },
    /// Post a record line to the game's channel.
    Post {
        /// The channel's name.
        channel: String,
        /// The line (see [`Record`]).
        text: String,
    },
    /// The game is gone: leave its channel (its committed log stays).
    CloseChannel {
        /// The channel's name.
        channel: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for a second player, or for both to be ready.
    Waiting,
    /// A game is on.
    Playing { board: Board, turn: Seat, cursor: usize },
    /// A game ended; the board stays for `state` until both are ready again.
    Over { board: Board },
}

#[derive(Debug)]
struct Game {
    id: String,
    seats: [Option<Ulid>; 2],
    ready: [bool; 2],
    phase: Phase,
    /// A game was started here: the channel holds a record worth closing.
    started: bool,
}

impl Game {
    fn channel(&self) -> String {
        channel_name(&self.id)
    }

    fn seat_of(&self, player: Ulid) -> Option<Seat> {
        [Seat::One, Seat::Two].into_iter().find(|s| self.seats[s.index()] == Some(player))
    }

    fn player(&self, seat: Seat) -> Option<Ulid> {
        self.seats[seat.index()]
    }

    fn board(&self) -> Option<&Board> {
        match &self.phase {
            Phase::Playing { board, .. } | Phase::Over { board } => Some(board),
            Phase::Waiting => None,
        }
    }
}

/// The channel of game `id`.
pub fn channel_name(id: &str) -> String {
    format!("c4-{id}")
}

/// The referee's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Games at once; a join beyond is answered `full`.
    pub max_games: usize,
    /// How long a player may be offline during a game before forfeiting (ms).
    pub grace_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        // Below the server's default channels per account (64): each game has one.
        Self { max_games: 32, grace_ms: 60_000 }
    }
}

/// All games, and who sits where.
pub struct Referee {
    rules: Rules,
    games: BTreeMap<String, Game>,
    /// Each seated player's game.
    seated: HashMap<Ulid, String>,
    /// Names of the players seen.
    names: HashMap<Ulid, String>,
    /// The bot's next sequence number per player.
    seq: HashMap<Ulid, u64>,
    /// Seated players offline since (ms).
    away: HashMap<Ulid, u64>,
    /// New game ids (ULIDs from the bot; a counter in tests).
    new_id: Box<dyn FnMut() -> String + Send>,
}

impl Referee {
    /// A referee with `rules`, naming new games with `new_id`.
    pub fn new(rules: Rules, new_id: impl FnMut() -> String + Send + 'static) -> Self {
        Self {
            rules,
            games: BTreeMap::new(),
            seated: HashMap::new(),
            names: HashMap::new(),
            seq: HashMap::new(),
            away: HashMap::new(),
            new_id: Box::new(new_id),
        }
    }

    /// Games in progress or waiting.
    pub fn games(&self) -> usize {
        self.games.len()
    }

    /// The game `player` sits in.
    pub fn game_of(&self, player: Ulid) -> Option<&str> {
        self.seated.get(&player).map(String::as_str)
    }

    fn send(&mut self, out: &mut Vec<Action>, to: Ulid, re: Option<u64>, reply: Reply) {
        let seq = self.seq.entry(to).or_insert(0);
        *seq += 1;
        out.push(Action::Send { to, message: Outgoing { v: VERSION, seq: *seq, re, reply } });
    }

    fn name(&self, player: Ulid) -> String {
        self.names.get(&player).cloned().unwrap_or_else(|| player.to_string())
    }

    /// A private message from `from` (named `name`), received at `now_ms`.
    pub fn on_message(&mut self, from: Ulid, name: &str, text: &str, now_ms: u64) -> Vec<Action> {
        self.names.insert(from, name.to_owned());
        self.away.remove(&from);
        let mut out = Vec::new();
        let (seq, request) = match Incoming::parse(text) {
            Ok(m) => (m.seq, m.request),
            Err((seq, refusal)) => {
                self.send(&mut out, from, seq, refusal);
                return out;
            }
        };
        let re = Some(seq);
        let answer = match request {
            Request::Join { game } => self.join(from, game, re, &mut out),
            Request::Ready => self.ready(from, re, &mut out),
            Request::Left => self.cursor(from, -1),
            Request::Right => self.cursor(from, 1),
            Request::Drop { column } => self.drop_disc(from, column, re, &mut out),
            Request::Leave => self.leave(from, EndReason::PlayerLeft, re, &mut out),
            Request::State => Some(self.state(from)),
        };
        if let Some(reply) = answer {
            self.send(&mut out, from, re, reply);
        }
        let _ = now_ms;
        out
    }

    fn join(&mut self, from: Ulid, wanted: Option<String>, re: Option<u64>, out: &mut Vec<Action>) -> Option<Reply> {
        if let Some(game) = self.seated.get(&from).and_then(|id| self.games.get(id)) {
            // Already seated: say where again (a client that lost track).
            let seat = game.seat_of(from)?;
            return Some(Reply::Joined { game: game.id.clone(), player: seat.number(), channel: game.channel() });
        }
        let id = match wanted {
            Some(id) => match self.games.get(&id) {
                None => return Some(error("no_such_game", format!("there is no game {id}"))),
                Some(g) if g.seats.iter().all(Option::is_some) => {
                    return Some(Reply::Full { reason: format!("game {id} is full: it has two players") })
                }
                Some(_) => id,
            },
            None => match self.games.values().find(|g| g.seats.iter().any(Option::is_none)) {
                Some(g) => g.id.clone(),
                None if self.games.len() >= self.rules.max_games => {
                    let reason = format!("game is full: {} games are being played", self.games.len());
                    return Some(Reply::Full { reason });
                }
                None => {
                    let id = (self.new_id)();
                    let game = Game {
                        id: id.clone(),
                        seats: [None, None],
                        ready: [false, false],
                        phase: Phase::Waiting,
                        started: false,
                    };
                    out.push(Action::OpenChannel { channel: channel_name(&id) });
                    self.games.insert(id.clone(), game);
                    id
                }
            },
        };
        let game = self.games.get_mut(&id)?;
        let seat = if game.seats[0].is_none() { Seat::One } else { Seat::Two };
        game.seats[seat.index()] = Some(from);
        // Joining makes the player ready (the seed).
        game.ready[seat.index()] = true;
        self.seated.insert(from, id.clone());
        let channel = channel_name(&id);
        self.send(out, from, re, Reply::Joined { game: id.clone(), player: seat.number(), channel });
        self.start_if_ready(&id, out);
        None
    }

    fn ready(&mut self, from: Ulid, re: Option<u64>, out: &mut Vec<Action>) -> Option<Reply> {
        let Some(id) = self.seated.get(&from).cloned() else {
            return Some(error("not_in_game", "you have no seat: send join first"));
        };
        let game = self.games.get_mut(&id)?;
        if matches!(game.phase, Phase::Playing { .. }) {
            return Some(error("not_playing", "a game is already on"));
        }
        let seat = game.seat_of(from)?;
        game.ready[seat.index()] = true;
        self.send(out, from, re, Reply::Ack);
        self.start_if_ready(&id, out);
        None
    }

    /// Starts a game when both seats are taken and ready.
    fn start_if_ready(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(game) = self.games.get_mut(id) else { return };
        let (Some(one), Some(two)) = (game.seats[0], game.seats[1]) else { return };
        if !(game.ready[0] && game.ready[1]) || matches!(game.phase, Phase::Playing { .. }) {
            return;
        }
        game.phase = Phase::Playing { board: Board::new(), turn: Seat::One, cursor: START_CURSOR };
        game.started = true;
        let channel = game.channel();
        let (n1, n2) = (self.name(one), self.name(two));
        let record = Record::Start { game: id.to_owned(), red: n1.clone(), yellow: n2.clone() };
        out.push(Action::Post { channel: channel.clone(), text: record.to_line() });
        for (seat, who, opponent) in [(Seat::One, one, n2), (Seat::Two, two, n1)] {
            let start = Reply::GameStart {
                game: id.to_owned(),
                player: seat.number(),
                colour: seat.colour().to_owned(),
                opponent,
                channel: channel.clone(),
            };
            self.send(out, who, None, start);
        }
        self.send(out, one, None, Reply::RequestMove { game: id.to_owned(), cursor: START_CURSOR });
    }

    /// The game `from` is to move in, with their seat, or the refusal.
    fn my_turn(&mut self, from: Ulid) -> Result<(String, Seat), Reply> {
        let not_seated = || error("not_in_game", "you have no seat: send join first");
        let id = self.seated.get(&from).ok_or_else(not_seated)?;
        let game = self.games.get(id).ok_or_else(not_seated)?;
        let seat = game.seat_of(from).ok_or_else(|| error("not_in_game", "you have no seat"))?;
        match &game.phase {
            Phase::Playing { turn, .. } if *turn == seat => Ok((id.clone(), seat)),
            Phase::Playing { .. } => Err(error("not_your_turn", "it is the other player's turn")),
            _ => Err(error("not_playing", "no game is on: send ready when you want to play")),
        }
    }

    fn cursor(&mut self, from: Ulid, step: isize) -> Option<Reply> {
        let (id, _) = match self.my_turn(from) {
            Ok(turn) => turn,
            Err(refusal) => return Some(refusal),
        };
        let game = self.games.get_mut(&id)?;
        let Phase::Playing { cursor, .. } = &mut game.phase else { return None };
        *cursor = cursor.saturating_add_signed(step).min(COLUMNS - 1);
        Some(Reply::Cursor { game: id, cursor: *cursor })
    }

    fn drop_disc(
        &mut self,
        from: Ulid,
        column: Option<usize>,
        re: Option<u64>,
        out: &mut Vec<Action>,
    ) -> Option<Reply> {
        let (id, seat) = match self.my_turn(from) {
            Ok(turn) => turn,
            Err(refusal) => return Some(refusal),
        };
        let game = self.games.get_mut(&id)?;
        let Phase::Playing { board, turn, cursor } = &mut game.phase else { return None };
        let column = column.unwrap_or(*cursor);
        let (row, outcome) = match board.drop_disc(seat, column) {
            Ok(landed) => landed,
            Err(e @ DropError::ColumnFull(_)) => return Some(error("column_full", e.to_string())),
            Err(e @ DropError::NoSuchColumn(_)) => return Some(error("no_such_column", e.to_string())),
        };
        *turn = seat.other();
        *cursor = START_CURSOR;
        let board = board.clone();
        let other = game.player(seat.other());
        let channel = game.channel();
        let next_cursor = START_CURSOR;
        self.send(out, from, re, Reply::MoveReceived { game: id.clone(), column, row });
        if let Some(other) = other {
            self.send(out, other, None, Reply::Moved { game: id.clone(), player: seat.number(), column, row });
        }
        let record = Record::Move { player: seat.number(), column, row };
        out.push(Action::Post { channel, text: record.to_line() });
        match outcome {
            Outcome::Continue => {
                if let Some(other) = other {
                    self.send(out, other, None, Reply::RequestMove { game: id, cursor: next_cursor });
                }
            }
            Outcome::Win(line) => self.finish(&id, board, Some(seat), EndReason::Win, line, out),
            Outcome::Draw => self.finish(&id, board, None, EndReason::Draw, Vec::new(), out),
        }
        None
    }

    /// A game ended with a result: both players are told and become not ready.
    fn finish(
        &mut self,
        id: &str,
        board: Board,
        winner: Option<Seat>,
        reason: EndReason,
        line: Vec<(usize, usize)>,
        out: &mut Vec<Action>,
    ) {
        let Some(game) = self.games.get_mut(id) else { return };
        game.phase = Phase::Over { board };
        game.ready = [false, false];
        let seats = game.seats;
        let channel = game.channel();
        let line: Vec<[usize; 2]> = line.into_iter().map(|(c, r)| [c, r]).collect();
        let record = Record::Over { winner: winner.map(Seat::number), reason };
        out.push(Action::Post { channel, text: record.to_line() });
        for who in seats.into_iter().flatten() {
            let over =
                Reply::GameOver { game: id.to_owned(), winner: winner.map(Seat::number), reason, line: line.clone() };
            self.send(out, who, None, over);
        }
    }

    /// `from` leaves (or forfeits): the game ends for both, and both lose their seats.
    fn leave(&mut self, from: Ulid, reason: EndReason, re: Option<u64>, out: &mut Vec<Action>) -> Option<Reply> {
        let Some(id) = self.seated.get(&from).cloned() else {
            return Some(error("not_in_game", "you have no seat to leave"));
        };
        let game = self.games.remove(&id)?;
        let seat = game.seat_of(from)?;
        let winner = match (&game.phase, reason) {
            (Phase::Playing { .. }, EndReason::Forfeit) => game.player(seat.other()).map(|_| seat.other().number()),
            _ => None,
        };
        let channel = game.channel();
        if game.started {
            let record = Record::Over { winner, reason };
            out.push(Action::Post { channel: channel.clone(), text: record.to_line() });
        }
        out.push(Action::CloseChannel { channel });
        for who in game.seats.into_iter().flatten() {
            self.seated.remove(&who);
            self.away.remove(&who);
            let over = Reply::GameOver { game: id.clone(), winner, reason, line: Vec::new() };
            let answer = if who == from { re } else { None };
            self.send(out, who, answer, over);
        }
        None
    }

    fn state(&self, from: Ulid) -> Reply {
        let Some((id, game)) = self.seated.get(&from).and_then(|id| Some((id, self.games.get(id)?))) else {
            return Reply::State {
                game: None,
                player: None,
                phase: "waiting".into(),
                turn: None,
                cursor: None,
                rows: rows(None),
            };
        };
        let (phase, turn, cursor) = match &game.phase {
            Phase::Waiting => ("waiting", None, None),
            Phase::Playing { turn, cursor, .. } => ("playing", Some(turn.number()), Some(*cursor)),
            Phase::Over { .. } => ("over", None, None),
        };
        Reply::State {
            game: Some(id.clone()),
            player: game.seat_of(from).map(Seat::number),
            phase: phase.into(),
            turn,
            cursor,
            rows: rows(game.board()),
        }
    }

    /// Tells `player` the game as it stands (`state`), if seated: for a
    /// player who missed a message while away.
    pub fn resync(&mut self, player: Ulid) -> Vec<Action> {
        let mut out = Vec::new();
        if self.seated.contains_key(&player) {
            let state = self.state(player);
            self.send(&mut out, player, None, state);
        }
        out
    }

    /// `player` went offline at `now_ms`: a seated one forfeits if still away
    /// after the grace period ([`Referee::tick`]).
    pub fn on_offline(&mut self, player: Ulid, now_ms: u64) {
        if self.seated.contains_key(&player) {
            self.away.entry(player).or_insert(now_ms);
        }
    }

    /// `player` is online again.
    pub fn on_online(&mut self, player: Ulid) {
        self.away.remove(&player);
    }

    /// Ends the games of players away longer than the grace period.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let grace = self.rules.grace_ms;
        let gone: Vec<Ulid> =
            self.away.iter().filter(|(_, since)| now_ms.saturating_sub(**since) >= grace).map(|(p, _)| *p).collect();
        let mut out = Vec::new();
        for player in gone {
            if self.seated.contains_key(&player) {
                let _ = self.leave(player, EndReason::Forfeit, None, &mut out);
            }
            self.away.remove(&player);
        }
        out
    }
}

/// The board as [`Rows`]: the top row first.
pub fn rows(board: Option<&Board>) -> Rows {
    (0..ROWS)
        .rev()
        .map(|row| {
            (0..COLUMNS)
                .map(|column| match board.and_then(|b| b.at(column, row)) {
                    None => '.',
                    Some(Seat::One) => '1',
                    Some(Seat::Two) => '2',
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests;
