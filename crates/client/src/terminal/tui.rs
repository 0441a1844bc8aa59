//! The full-screen client's drawing and keys: `render(&Chat, &InputLine)`
//! draws one frame with ratatui (window list, messages, status line, input
//! line), and `key` turns a key press into an [`Action`]. Pure apart from
//! the frame it draws into; the terminal itself is set up and restored by
//! [`Screen`].

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use unicode_width::UnicodeWidthChar;

use super::input::InputLine;
use super::view::{Age, Chat, Connection, Entry, Target};

/// What a key press asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing more than a redraw (the input line was edited).
    Edited,
    /// A line was entered.
    Submit(String),
    /// Enter on an empty line, or Ctrl-R: reconnect now if waiting.
    RetryNow,
    /// Go to window N (0-based).
    Window(usize),
    /// Ctrl-N.
    Next,
    /// Ctrl-P.
    Previous,
    /// PgUp (+1) / PgDn (-1) by a page.
    Page(isize),
    /// Ctrl-D on an empty line, Ctrl-C.
    Quit,
    /// A key with no meaning.
    None,
}

/// Applies a key press to the input line; says what else it asks for.
pub fn key(input: &mut InputLine, k: KeyEvent) -> Action {
    if k.kind == KeyEventKind::Release {
        return Action::None;
    }
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let alt = k.modifiers.contains(KeyModifiers::ALT);
    match k.code {
        KeyCode::Char(c) if alt && c.is_ascii_digit() && c != '0' => Action::Window(c as usize - '1' as usize),
        KeyCode::Char('0') if alt => Action::Window(9),
        KeyCode::Char('b') if alt => {
            input.word_left();
            Action::Edited
        }
        KeyCode::Char('f') if alt => {
            input.word_right();
            Action::Edited
        }
        KeyCode::Char(c) if ctrl => match c {
            'a' => edited(input, InputLine::home),
            'e' => edited(input, InputLine::end),
            'u' => edited(input, InputLine::kill_to_start),
            'k' => edited(input, InputLine::kill_to_end),
            'w' | 'h' => edited(input, if c == 'w' { InputLine::kill_word } else { InputLine::backspace }),
            'b' => edited(input, InputLine::left),
            'f' => edited(input, InputLine::right),
            'n' => Action::Next,
            'p' => Action::Previous,
            'r' => Action::RetryNow,
            'c' => Action::Quit,
            'd' if input.is_empty() => Action::Quit,
            'd' => edited(input, InputLine::delete),
            'l' => Action::Edited,
            _ => Action::None,
        },
        KeyCode::Char(c) => {
            input.insert(c);
            Action::Edited
        }
        KeyCode::Enter if input.is_empty() => Action::RetryNow,
        KeyCode::Enter => Action::Submit(input.submit()),
        KeyCode::Backspace => edited(input, InputLine::backspace),
        KeyCode::Delete => edited(input, InputLine::delete),
        KeyCode::Left if ctrl => edited(input, InputLine::word_left),
        KeyCode::Right if ctrl => edited(input, InputLine::word_right),
        KeyCode::Left => edited(input, InputLine::left),
        KeyCode::Right => edited(input, InputLine::right),
        KeyCode::Home => edited(input, InputLine::home),
        KeyCode::End => edited(input, InputLine::end),
        KeyCode::Up => edited(input, InputLine::history_up),
        KeyCode::Down => edited(input, InputLine::history_down),
        KeyCode::PageUp => Action::Page(1),
        KeyCode::PageDown => Action::Page(-1),
        KeyCode::Tab => Action::Next,
        KeyCode::BackTab => Action::Previous,
        _ => Action::None,
    }
}

fn edited(input: &mut InputLine, f: fn(&mut InputLine)) -> Action {
    f(input);
    Action::Edited
}

const NAME_COLORS: [Color; 6] = [Color::Cyan, Color::Green, Color::Yellow, Color::Magenta, Color::Blue, Color::Red];

fn color_of(name: &str) -> Color {
    let h = name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    NAME_COLORS[h as usize % NAME_COLORS.len()]
}

/// The width of the window list.
fn list_width(area: Rect) -> u16 {
    if area.width < 60 {
        0
    } else {
        (area.width / 5).clamp(14, 24)
    }
}

/// Rows the message pane has at this terminal size.
pub fn page_rows(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(2)).max(1)
}

/// Draws the whole screen; returns the most the current window can scroll back.
pub fn render(chat: &Chat, input: &InputLine, now_ms: u64, frame: &mut Frame) -> usize {
    let area = frame.area();
    let [body, status, prompt] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let [list, messages] = Layout::horizontal([Constraint::Length(list_width(area)), Constraint::Min(1)]).areas(body);
    if list.width > 0 {
        frame.render_widget(Paragraph::new(window_list(chat, list.width)), list);
    }
    let rows = message_rows(chat, messages.width.saturating_sub(1).max(1) as usize);
    let height = messages.height as usize;
    let most = rows.len().saturating_sub(height);
    let scroll = chat.current_window().scroll.min(most);
    let end = rows.len() - scroll;
    let shown: Vec<Line> = rows[end.saturating_sub(height)..end].to_vec();
    let pad = height.saturating_sub(shown.len());
    let mut lines: Vec<Line> = vec![Line::default(); pad];
    lines.extend(shown);
    let pane = Rect { x: messages.x + u16::from(list.width > 0), width: messages.width.saturating_sub(1), ..messages };
    frame.render_widget(Paragraph::new(lines), pane);
    frame.render_widget(Paragraph::new(status_line(chat, now_ms, scroll)).style(bar()), status);
    let (text, cursor) = prompt_line(chat, input, prompt.width as usize);
    frame.render_widget(Paragraph::new(text), prompt);
    frame.set_cursor_position(Position { x: prompt.x + cursor as u16, y: prompt.y });
    most
}

fn bar() -> Style {
    Style::default().bg(Color::Blue).fg(Color::White)
}

fn window_list(chat: &Chat, width: u16) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for (i, w) in chat.windows().iter().enumerate() {
        let current = i == chat.current();
        let unread = if w.unread > 0 { format!(" {}", w.unread) } else { String::new() };
        let title = chat.title(w.target);
        let room = (width as usize).saturating_sub(5 + unread.len());
        let title: String = title.chars().take(room).collect();
        let text = format!("{}{:>2} {title}{unread}", if current { '>' } else { ' ' }, i + 1);
        let style = if current {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else if w.mention {
            Style::default().fg(Color::Magenta).add_modifier(Modifier::BOLD)
        } else if w.unread > 0 {
            Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        out.push(Line::from(Span::styled(text, style)));
    }
    out
}

/// The current window's entries as rows of at most `width` columns.
pub fn message_rows(chat: &Chat, width: usize) -> Vec<Line<'static>> {
    let mut rows = Vec::new();
    for e in &chat.current_window().entries {
        let spans = entry_spans(chat, e);
        rows.extend(wrap(spans, width));
    }
    rows
}

fn entry_spans(chat: &Chat, e: &Entry) -> Vec<Span<'static>> {
    let dim = Style::default().fg(Color::DarkGray);
    match e {
        Entry::Msg { time, from, text, action, id, age } => {
            let name = chat.name(from);
            let faded = *age == Age::Seen;
            let text_style = if faded { dim } else { Style::default() };
            let name_style =
                if faded { dim } else { Style::default().fg(color_of(&name)).add_modifier(Modifier::BOLD) };
            let mut spans = vec![Span::styled(format!("{time} "), dim)];
            if *age == Age::History {
                spans.push(Span::styled("h ", dim));
            }
            if *action {
                spans.push(Span::styled(format!("* {name} "), name_style));
            } else {
                spans.push(Span::styled(format!("<{name}> "), name_style));
            }
            spans.push(Span::styled(text.clone(), text_style));
            if let Some(mark) = chat.mark(id) {
                spans.push(Span::styled(format!(" {}", mark.symbol()), Style::default().fg(Color::Green)));
            }
            spans
        }
        Entry::Info { time, text } => {
            vec![Span::styled(format!("{time} "), dim), Span::styled(text.clone(), Style::default().fg(Color::Cyan))]
        }
        Entry::Error { time, text } => vec![
            Span::styled(format!("{time} "), dim),
            Span::styled(format!("! {text}"), Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)),
        ],
    }
}

/// Splits styled text into rows of at most `width` columns (continuation
/// rows indented), between words where it can: a word longer than a row is
/// cut where the row ends.
pub fn wrap(spans: Vec<Span<'static>>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(10);
    let indent = 9.min(width / 2);
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    // Nothing but the indent on the row yet: a word is never moved off it.
    let mut fresh = true;
    for span in spans {
        // Each piece is a word with the spaces after it.
        for word in span.content.split_inclusive(' ') {
            let visible: usize = word.trim_end_matches(' ').chars().map(|c| c.width().unwrap_or(0)).sum();
            if !fresh && used + visible > width {
                rows.push(Line::from(std::mem::take(&mut row)));
                row.push(Span::raw(" ".repeat(indent)));
                used = indent;
                fresh = true;
            }
            let mut piece = String::new();
            for c in word.chars() {
                let w = c.width().unwrap_or(0);
                // A word longer than the row: cut it (spaces at a row's end may overhang).
                if c != ' ' && used + w > width {
                    if !piece.is_empty() {
                        row.push(Span::styled(std::mem::take(&mut piece), span.style));
                    }
                    rows.push(Line::from(std::mem::take(&mut row)));
                    row.push(Span::raw(" ".repeat(indent)));
                    used = indent;
                }
                piece.push(c);
                used += w;
            }
            if !piece.is_empty() {
                fresh = false;
                row.push(Span::styled(piece, span.style));
            }
        }
    }
    rows.push(Line::from(row));
    rows
}

/// The status line: the connection, the current window, queued lines.
pub fn status_text(chat: &Chat, now_ms: u64, scroll: usize) -> String {
    let conn = match &chat.connection {
        Connection::Connecting => "connecting…".to_owned(),
        Connection::Connected => "connected".to_owned(),
        Connection::Reconnecting => "reconnecting…".to_owned(),
        Connection::Waiting { at_ms, why } => {
            format!(
                "offline ({why}): reconnecting in {}s, Enter or Ctrl-R: now",
                at_ms.saturating_sub(now_ms).div_ceil(1000)
            )
        }
    };
    let mut parts = vec![format!("[{conn}]")];
    if chat.queued() > 0 {
        parts.push(format!("{} queued", chat.queued()));
    }
    parts.push(chat.name(&chat.me()));
    match chat.current_window().target {
        Target::Channel(id) => {
            let title = chat.channel_name(&id);
            match chat.channel(&id) {
                Some(c) => {
                    let leader =
                        c.leader.map(|l| format!("led by {}", chat.name(&l))).unwrap_or_else(|| "no leader".into());
                    parts.push(format!("{title}: {leader}, {} online", c.online));
                }
                None => parts.push(title),
            }
        }
        Target::Private(p) => {
            let state = if chat.is_online(&p) { "online" } else { "offline" };
            parts.push(format!("private with {} ({state})", chat.name(&p)));
        }
        Target::Status => parts.push("/help for commands".into()),
    }
    if scroll > 0 {
        parts.push(format!("scrolled back {scroll} (PgDn)"));
    }
    parts.join(" · ")
}

fn status_line(chat: &Chat, now_ms: u64, scroll: usize) -> Line<'static> {
    Line::from(status_text(chat, now_ms, scroll))
}

/// The input line with its prompt, scrolled so the cursor shows; and the cursor's column.
fn prompt_line(chat: &Chat, input: &InputLine, width: usize) -> (Line<'static>, usize) {
    let prompt = format!("[{}] ", chat.title(chat.current_window().target));
    let text: Vec<char> = input.text().chars().collect();
    let room = width.saturating_sub(prompt.chars().count() + 1).max(1);
    let start = input.cursor().saturating_sub(room);
    let visible: String = text[start..].iter().take(room).collect();
    let before: usize = text[start..input.cursor()].iter().map(|c| c.width().unwrap_or(0)).sum();
    let cursor = (prompt.chars().count() + before).min(width.saturating_sub(1));
    (Line::from(vec![Span::styled(prompt, Style::default().add_modifier(Modifier::BOLD)), Span::raw(visible)]), cursor)
}

/// The terminal in full-screen mode; restored when dropped (also on a panic
/// or an error: a fatal refusal must leave a usable terminal behind).
pub struct Screen {
    pub terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>,
}

impl Screen {
    /// Raw mode, the alternate screen, bracketed paste.
    pub fn open() -> std::io::Result<Screen> {
        crossterm::terminal::enable_raw_mode()?;
        let mut out = std::io::stdout();
        if let Err(e) =
            crossterm::execute!(out, crossterm::terminal::EnterAlternateScreen, crossterm::event::EnableBracketedPaste)
        {
            let _ = crossterm::terminal::disable_raw_mode();
            return Err(e);
        }
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        match ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::event::DisableBracketedPaste,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::view::Chat;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use sigil_proto::ServerEvent;
    use ulid::Ulid;

    use crate::terminal::view::tests::{alice_in_general, at};

    fn screen(chat: &Chat, input: &InputLine, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        t.draw(|f| {
            render(chat, input, 0, f);
        })
        .expect("draw");
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_owned()).collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_screen_shows_windows_messages_status_and_the_input_line() {
        let mut c = alice_in_general();
        c.on_line("hello there", &at(1));
        let mut input = InputLine::default();
        input.insert_str("half typed");
        let s = screen(&c, &input, 80, 10);
        assert!(s.contains("  1 sigil"), "{s}");
        assert!(s.contains("> 2 #general"), "the current window is marked:\n{s}");
        assert!(s.contains("<alice> hello there ○"), "own message with its mark:\n{s}");
        assert!(s.contains("[connected] · alice · #general: led by bob, 2 online"), "{s}");
        assert!(s.lines().last().is_some_and(|l| l == "[#general] half typed"), "{s}");
        // Something arriving elsewhere counts as unread; the input line is untouched.
        c.switch_to(0);
        let ch = Ulid::from(100u128);
        let m = sigil_proto::event::ChMsg {
            id: ch,
            msg_id: Ulid::from(5u128),
            msg: sigil_proto::Body::text("from bob"),
            from: Ulid::from(2u128),
            timestamp: 0,
            recipients: 2,
        };
        c.on_event(ServerEvent::ChMsg(m), &at(2));
        let s = screen(&c, &input, 80, 10);
        assert!(s.contains("  2 #general 1"), "{s}");
        assert!(s.lines().last().is_some_and(|l| l == "[sigil] half typed"), "{s}");
    }

    #[test]
    fn long_lines_wrap_and_scrollback_moves_by_pages() {
        let mut c = alice_in_general();
        for i in 0..30 {
            c.on_line(&format!("line {i} {}", "word ".repeat(12)), &at(1));
        }
        let input = InputLine::default();
        let s = screen(&c, &input, 50, 8);
        assert!(s.contains("line 29"), "{s}");
        c.scroll(20);
        let s = screen(&c, &input, 50, 8);
        assert!(!s.contains("line 29"), "{s}");
        assert!(status_text(&c, 0, 20).ends_with("scrolled back 20 (PgDn)"));
        let rows = wrap(vec![Span::raw("x".repeat(25))], 10);
        assert_eq!(rows.len(), 4, "10, then 5 per continuation row after the indent");
        // Between words where it can.
        let text = |rows: &[Line<'_>]| -> Vec<String> { rows.iter().map(|r| r.to_string()).collect() };
        let rows = wrap(vec![Span::raw("12:00 "), Span::raw("messages up to 65536 bytes")], 24);
        assert_eq!(text(&rows), ["12:00 messages up to ", "         65536 bytes"]);
    }

    #[test]
    fn keys_edit_switch_and_submit() {
        use crossterm::event::{KeyCode as K, KeyEvent, KeyModifiers as M};
        let mut i = InputLine::default();
        let press = |i: &mut InputLine, code, m| key(i, KeyEvent::new(code, m));
        for ch in "hi bob".chars() {
            press(&mut i, K::Char(ch), M::NONE);
        }
        assert_eq!(press(&mut i, K::Char('w'), M::CONTROL), Action::Edited);
        assert_eq!(i.text(), "hi ");
        assert_eq!(press(&mut i, K::Char('3'), M::ALT), Action::Window(2));
        assert_eq!(press(&mut i, K::Char('n'), M::CONTROL), Action::Next);
        assert_eq!(press(&mut i, K::PageUp, M::NONE), Action::Page(1));
        assert_eq!(press(&mut i, K::Enter, M::NONE), Action::Submit("hi ".into()));
        assert_eq!(press(&mut i, K::Enter, M::NONE), Action::RetryNow, "Enter on an empty line");
        assert_eq!(press(&mut i, K::Up, M::NONE), Action::Edited);
        assert_eq!(i.text(), "hi ");
        assert_eq!(press(&mut i, K::Char('d'), M::CONTROL), Action::Edited, "Ctrl-D deletes on a non-empty line");
        press(&mut i, K::Char('u'), M::CONTROL);
        assert_eq!(press(&mut i, K::Char('d'), M::CONTROL), Action::Quit);
    }
}
