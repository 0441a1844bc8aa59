//! `InputLine`: the line being typed, with readline-style editing and a
//! history of sent lines. Pure: keys are applied by the full-screen client,
//! and nothing that arrives from the network touches it.

/// The line being typed, its cursor, and the lines typed before.
#[derive(Debug, Default, Clone)]
pub struct InputLine {
    chars: Vec<char>,
    /// Cursor position, in chars (0..=len).
    cursor: usize,
    history: Vec<String>,
    /// While browsing history: the entry shown, and the line typed before browsing.
    browsing: Option<(usize, String)>,
}

/// History kept, in lines.
const HISTORY: usize = 500;

impl InputLine {
    /// The text typed.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// The cursor, in chars from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// True when nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Inserts a char at the cursor.
    pub fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Inserts text (a paste), newlines as spaces.
    pub fn insert_str(&mut self, s: &str) {
        for c in s.chars() {
            self.insert(if c == '\n' || c == '\r' { ' ' } else { c });
        }
    }

    /// Deletes the char before the cursor (Backspace).
    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the char under the cursor (Delete).
    pub fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    /// Moves the cursor one char left.
    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Moves the cursor one char right.
    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    /// Home / Ctrl-A.
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// End / Ctrl-E.
    pub fn end(&mut self) {
        self.cursor = self.chars.len();
    }

    /// Ctrl-U: deletes from the start of the line to the cursor.
    pub fn kill_to_start(&mut self) {
        self.chars.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Ctrl-K: deletes from the cursor to the end of the line.
    pub fn kill_to_end(&mut self) {
        self.chars.truncate(self.cursor);
    }

    /// Ctrl-W: deletes the word before the cursor (and the spaces after it).
    pub fn kill_word(&mut self) {
        let mut at = self.cursor;
        while at > 0 && self.chars[at - 1] == ' ' {
            at -= 1;
        }
        while at > 0 && self.chars[at - 1] != ' ' {
            at -= 1;
        }
        self.chars.drain(at..self.cursor);
        self.cursor = at;
    }

    /// Alt-B / Ctrl-Left: to the start of the previous word.
    pub fn word_left(&mut self) {
        while self.cursor > 0 && self.chars[self.cursor - 1] == ' ' {
            self.cursor -= 1;
        }
        while self.cursor > 0 && self.chars[self.cursor - 1] != ' ' {
            self.cursor -= 1;
        }
    }

    /// Alt-F / Ctrl-Right: past the end of the next word.
    pub fn word_right(&mut self) {
        let n = self.chars.len();
        while self.cursor < n && self.chars[self.cursor] == ' ' {
            self.cursor += 1;
        }
        while self.cursor < n && self.chars[self.cursor] != ' ' {
            self.cursor += 1;
        }
    }

    /// Enter: takes the line (kept in history unless blank or a repeat) and clears it.
    pub fn submit(&mut self) -> String {
        let line = self.text();
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.set(String::new());
        self.browsing = None;
        line
    }

    /// Up: the previous line of history (the line being typed is kept).
    pub fn history_up(&mut self) {
        let at = match &self.browsing {
            Some((0, _)) => return,
            Some((at, _)) => at - 1,
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len(), self.text()));
                self.history.len() - 1
            }
        };
        if let Some((i, _)) = &mut self.browsing {
            *i = at;
        }
        self.set(self.history[at].clone());
    }

    /// Down: the next line of history, then back to the line being typed.
    pub fn history_down(&mut self) {
        let Some((at, draft)) = self.browsing.clone() else { return };
        if at + 1 >= self.history.len() {
            self.browsing = None;
            self.set(draft);
        } else {
            self.browsing = Some((at + 1, draft));
            self.set(self.history[at + 1].clone());
        }
    }

    fn set(&mut self, text: String) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> InputLine {
        let mut i = InputLine::default();
        i.insert_str(s);
        i
    }

    #[test]
    fn editing_moves_and_deletes_at_the_cursor() {
        let mut i = typed("hello world");
        i.home();
        i.delete();
        i.insert('H');
        i.end();
        i.backspace();
        assert_eq!(i.text(), "Hello worl");
        i.kill_word();
        assert_eq!((i.text().as_str(), i.cursor()), ("Hello ", 6));
        i.insert_str("there");
        i.word_left();
        i.kill_to_end();
        assert_eq!(i.text(), "Hello ");
        i.left();
        i.kill_to_start();
        assert_eq!((i.text().as_str(), i.cursor()), (" ", 0));
        i.right();
        i.right();
        assert_eq!(i.cursor(), 1, "the cursor stays within the line");
    }

    #[test]
    fn history_browses_back_and_returns_to_the_draft() {
        let mut i = InputLine::default();
        for line in ["one", "two", "two", "  "] {
            i.insert_str(line);
            i.submit();
        }
        i.insert_str("dra");
        i.history_up();
        assert_eq!(i.text(), "two");
        i.history_up();
        i.history_up();
        assert_eq!(i.text(), "one", "repeats and blank lines are not kept");
        i.history_down();
        assert_eq!(i.text(), "two");
        i.history_down();
        assert_eq!((i.text().as_str(), i.cursor()), ("dra", 3));
        assert_eq!(i.submit(), "dra");
        assert!(i.is_empty());
    }
}
