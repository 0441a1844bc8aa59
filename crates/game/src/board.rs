//! The rules of connect four: a 7×6 board, discs dropped into columns, four
//! in a row (across, down, or on either diagonal) wins, a full board with no
//! four is a draw. Pure: no players, no turns, no I/O.

use serde::{Deserialize, Serialize};

/// Columns on the board.
pub const COLUMNS: usize = 7;
/// Rows on the board.
pub const ROWS: usize = 6;

/// A player's seat: 1 plays red and moves first, 2 plays yellow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Seat {
    /// Player 1, red, moves first.
    One,
    /// Player 2, yellow.
    Two,
}

impl Seat {
    /// The player number the seed's messages use (1 or 2).
    pub fn number(self) -> u8 {
        match self {
            Seat::One => 1,
            Seat::Two => 2,
        }
    }

    /// The seat of player `n` (1 or 2).
    pub fn from_number(n: u8) -> Option<Seat> {
        match n {
            1 => Some(Seat::One),
            2 => Some(Seat::Two),
            _ => None,
        }
    }

    /// The other seat.
    pub fn other(self) -> Seat {
        match self {
            Seat::One => Seat::Two,
            Seat::Two => Seat::One,
        }
    }

    /// The colour of this seat's discs.
    pub fn colour(self) -> &'static str {
        match self {
            Seat::One => "red",
            Seat::Two => "yellow",
        }
    }

    /// Index into per-seat arrays.
    pub fn index(self) -> usize {
        usize::from(self.number() - 1)
    }
}

/// Why a drop is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropError {
    /// There is no such column.
    #[error("there is no column {0}: columns are 0 to 6")]
    NoSuchColumn(usize),
    /// The column has no room left.
    #[error("column {0} is full")]
    ColumnFull(usize),
}

/// What a drop led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The game goes on.
    Continue,
    /// The seat that dropped has four in a row: these cells, as (column, row).
    Win(Vec<(usize, usize)>),
    /// The board is full and nobody has four in a row.
    Draw,
}

/// The board: `cells[column][row]`, row 0 at the bottom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Board {
    cells: [[Option<Seat>; ROWS]; COLUMNS],
    moves: usize,
}

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Who holds a cell.
    pub fn at(&self, column: usize, row: usize) -> Option<Seat> {
        self.cells.get(column).and_then(|c| c.get(row)).copied().flatten()
    }

    /// Discs dropped so far.
    pub fn moves(&self) -> usize {
        self.moves
    }

    /// True when `column` has room for a disc.
    pub fn has_room(&self, column: usize) -> bool {
        column < COLUMNS && self.cells[column][ROWS - 1].is_none()
    }

    /// Drops `seat`'s disc into `column`; returns the row it landed on and what it led to.
    pub fn drop_disc(&mut self, seat: Seat, column: usize) -> Result<(usize, Outcome), DropError> {
        let cells = self.cells.get_mut(column).ok_or(DropError::NoSuchColumn(column))?;
        let row = cells.iter().position(Option::is_none).ok_or(DropError::ColumnFull(column))?;
        cells[row] = Some(seat);
        self.moves += 1;
        let outcome = match self.four_through(column, row, seat) {
            Some(line) => Outcome::Win(line),
            None if self.moves == COLUMNS * ROWS => Outcome::Draw,
            None => Outcome::Continue,
        };
        Ok((row, outcome))
    }

    /// Four (or more) of `seat` in a line through (column, row), if any.
    fn four_through(&self, column: usize, row: usize, seat: Seat) -> Option<Vec<(usize, usize)>> {
        const DIRECTIONS: [(isize, isize); 4] = [(1, 0), (0, 1), (1, 1), (1, -1)];
        for (dc, dr) in DIRECTIONS {
            let mut line = vec![(column, row)];
            for sign in [1isize, -1] {
                let (mut c, mut r) = (column as isize, row as isize);
                loop {
                    c += sign * dc;
                    r += sign * dr;
                    let (Ok(cu), Ok(ru)) = (usize::try_from(c), usize::try_from(r)) else { break };
                    if self.at(cu, ru) != Some(seat) {
                        break;
                    }
                    line.push((cu, ru));
                }
            }
            if line.len() >= 4 {
                line.sort_unstable();
                return Some(line);
            }
        }
        None
    }

    /// The board as text, top row first: `.` empty, `X` red (seat 1), `O` yellow.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for row in (0..ROWS).rev() {
            for column in 0..COLUMNS {
                out.push(match self.at(column, row) {
                    None => '.',
                    Some(Seat::One) => 'X',
                    Some(Seat::Two) => 'O',
                });
                if column + 1 < COLUMNS {
                    out.push(' ');
                }
            }
            out.push('\n');
        }
        out.push_str("1 2 3 4 5 6 7\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(board: &mut Board, moves: &[(Seat, usize)]) -> Outcome {
        let mut last = Outcome::Continue;
        for &(seat, column) in moves {
            last = board.drop_disc(seat, column).expect("legal move").1;
        }
        last
    }

    use Seat::{One as A, Two as B};

    #[test]
    fn four_across_wins() {
        let mut b = Board::new();
        let outcome = play(&mut b, &[(A, 0), (B, 0), (A, 1), (B, 1), (A, 2), (B, 2), (A, 3)]);
        assert_eq!(outcome, Outcome::Win(vec![(0, 0), (1, 0), (2, 0), (3, 0)]));
    }

    #[test]
    fn four_down_wins() {
        let mut b = Board::new();
        let outcome = play(&mut b, &[(A, 4), (B, 5), (A, 4), (B, 5), (A, 4), (B, 5), (A, 4)]);
        assert_eq!(outcome, Outcome::Win(vec![(4, 0), (4, 1), (4, 2), (4, 3)]));
    }

    #[test]
    fn both_diagonals_win() {
        // Rising: A at (0,0) (1,1) (2,2) (3,3).
        let mut b = Board::new();
        let rising = [(A, 0), (B, 1), (A, 1), (B, 2), (A, 2), (B, 3), (A, 2), (B, 3), (A, 3), (B, 6), (A, 3)];
        assert_eq!(play(&mut b, &rising), Outcome::Win(vec![(0, 0), (1, 1), (2, 2), (3, 3)]));
        // Falling: A at (3,0) (2,1) (1,2) (0,3), the last disc in the middle of the line.
        let mut b = Board::new();
        let falling = [(A, 3), (B, 2), (A, 2), (B, 1), (A, 0), (B, 1), (A, 1), (B, 0), (A, 6), (B, 0), (A, 0)];
        assert_eq!(play(&mut b, &falling), Outcome::Win(vec![(0, 3), (1, 2), (2, 1), (3, 0)]));
    }

    #[test]
    fn a_full_column_and_a_missing_one_are_refused_without_changing_the_board() {
        let mut b = Board::new();
        for i in 0..ROWS {
            let seat = if i % 2 == 0 { A } else { B };
            b.drop_disc(seat, 5).expect("room");
        }
        let before = b.clone();
        assert_eq!(b.drop_disc(A, 5), Err(DropError::ColumnFull(5)));
        assert_eq!(b.drop_disc(A, 7), Err(DropError::NoSuchColumn(7)));
        assert_eq!(b, before);
        assert!(!b.has_room(5) && b.has_room(4));
    }

    #[test]
    fn a_full_board_without_four_is_a_draw() {
        // Colour ((column / 2) + row) % 2: pairs of columns, alternating by row, hold no four.
        let mut b = Board::new();
        let mut outcome = Outcome::Continue;
        for row in 0..ROWS {
            for column in 0..COLUMNS {
                let seat = if (column / 2 + row) % 2 == 0 { A } else { B };
                outcome = b.drop_disc(seat, column).expect("room").1;
                assert!(!matches!(outcome, Outcome::Win(_)), "{}", b.to_text());
            }
        }
        assert_eq!(outcome, Outcome::Draw, "{}", b.to_text());
    }
}
