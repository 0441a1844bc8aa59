//! Log lines for events anyone can repeat at will (connects, refusals, failed
//! sign-ins, slow consumers, TLS and WebSocket refusals) are rate-limited per
//! kind of event and summarised: in each window of [`LOG_WINDOW`] the first
//! lines of a kind are written, the rest only counted, and once the window is
//! over one line says how many were left out ("… and 4,211 more in 10 s").
//!
//! Without it a connect flood wrote about 420 KiB of log a second: a disk or a
//! log shipper filled by strangers who need no account. With it each kind
//! writes at most `per_window + 1` lines per window, whatever the flood.
//!
//! [`LogThrottle`] is the decision alone: time is an argument and nothing is
//! written, so it is unit-tested without a clock. [`LogLimiter`] shares one
//! between the server's tasks and writes the summary lines; a call site asks
//! it before it logs (`if limiter.admit(LogKind::Connected) { tracing::info!(..) }`).
//! A window's summary is written when the next event of its kind comes, or at
//! the hub's next one-second tick ([`LogLimiter::flush`]), whichever is first.
//! This module must not decide what is logged, only how often.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window a kind's line budget is counted in.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// A kind of event that can repeat at a stranger's will: each has its own
/// budget, so a flood of one does not hide the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A connection was admitted.
    Connected,
    /// A connection was refused at accept (a connection limit).
    Refused,
    /// A TLS connection was refused at accept (a connection limit).
    TlsRefused,
    /// A TLS handshake failed or timed out.
    TlsHandshakeFailed,
    /// An accept failed (out of descriptors, say).
    AcceptFailed,
    /// A WebSocket upgrade was refused (its origin).
    WebSocketRefused,
    /// A `CNN` failed its signature (unknown account or wrong key).
    AuthFailed,
    /// A session authenticated.
    Authenticated,
    /// A connection that never authenticated ended.
    DisconnectedBeforeCnn,
    /// An authenticated session ended.
    Disconnected,
    /// A connection was closed as a slow consumer.
    SlowConsumer,
    /// A frame or request was refused by a rate or cost limit.
    RateLimited,
}

impl LogKind {
    /// Every kind, in the order their state is kept.
    pub const ALL: [LogKind; 12] = [
        LogKind::Connected,
        LogKind::Refused,
        LogKind::TlsRefused,
        LogKind::TlsHandshakeFailed,
        LogKind::AcceptFailed,
        LogKind::WebSocketRefused,
        LogKind::AuthFailed,
        LogKind::Authenticated,
        LogKind::DisconnectedBeforeCnn,
        LogKind::Disconnected,
        LogKind::SlowConsumer,
        LogKind::RateLimited,
    ];

    /// What its summary line calls it (its log lines' message, where it has one).
    pub fn name(self) -> &'static str {
        match self {
            LogKind::Connected => "connected",
            LogKind::Refused => "connection refused",
            LogKind::TlsRefused => "TLS connection refused",
            LogKind::TlsHandshakeFailed => "TLS handshake failed",
            LogKind::AcceptFailed => "accept failed",
            LogKind::WebSocketRefused => "WebSocket refused",
            LogKind::AuthFailed => "authentication failed",
            LogKind::Authenticated => "authenticated",
            LogKind::DisconnectedBeforeCnn => "disconnected before CNN",
            LogKind::Disconnected => "disconnected",
            LogKind::SlowConsumer => "slow consumer",
            LogKind::RateLimited => "rate limited",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Its lines are warnings (its summary is one too).
    fn is_warning(self) -> bool {
        matches!(self, LogKind::AcceptFailed)
    }
}

/// Lines of one kind left out in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// The kind.
    pub kind: LogKind,
    /// How many lines were left out.
    pub count: u64,
    /// The window they were left out in.
    pub window: Duration,
}

impl Suppressed {
    /// The summary line's message: "connected: … and 4,211 more in 10 s".
    pub fn message(&self) -> String {
        format!("{}: … and {} more in {} s", self.kind.name(), thousands(self.count), self.window.as_secs())
    }
}

/// `4211` as `4,211`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One kind's current window.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// When it began (at its first event); `None`: no window open.
    start: Option<Instant>,
    /// Lines written in it.
    logged: u32,
    /// Lines left out in it.
    suppressed: u64,
}

/// Decides which events of each kind are logged: the first `per_window` of
/// each window, which begins at the first event after the last one ended.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    per_window: u32,
    window: Duration,
    kinds: [Window; LogKind::ALL.len()],
}

impl LogThrottle {
    /// Logs `per_window` lines of each kind per `window` (0: every line).
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self { per_window, window, kinds: [Window::default(); LogKind::ALL.len()] }
    }

    /// An event of `kind` at `now`: whether to log its line, and the summary
    /// of its kind's last window if that ended with lines left out (to be
    /// written before this event's line).
    pub fn admit(&mut self, kind: LogKind, now: Instant) -> (Option<Suppressed>, bool) {
        if self.per_window == 0 {
            return (None, true);
        }
        let window = self.window;
        let w = &mut self.kinds[kind.index()];
        let mut summary = None;
        if w.start.is_none_or(|start| now.saturating_duration_since(start) >= window) {
            summary = (w.suppressed > 0).then_some(Suppressed { kind, count: w.suppressed, window });
            *w = Window { start: Some(now), logged: 0, suppressed: 0 };
        }
        if w.logged < self.per_window {
            w.logged += 1;
            (summary, true)
        } else {
            w.suppressed += 1;
            (summary, false)
        }
    }

    /// The summaries of every window over at `now` that left lines out; those
    /// windows are closed, so the next event of their kind is logged.
    pub fn flush(&mut self, now: Instant) -> Vec<Suppressed> {
        let window = self.window;
        let mut out = Vec::new();
        for (kind, w) in LogKind::ALL.into_iter().zip(self.kinds.iter_mut()) {
            let over = w.start.is_some_and(|start| now.saturating_duration_since(start) >= window);
            if over && w.suppressed > 0 {
                out.push(Suppressed { kind, count: w.suppressed, window });
                *w = Window::default();
            }
        }
        out
    }

    /// The summaries of every window, over or not (at shutdown).
    pub fn flush_all(&mut self) -> Vec<Suppressed> {
        let window = self.window;
        let mut out = Vec::new();
        for (kind, w) in LogKind::ALL.into_iter().zip(self.kinds.iter_mut()) {
            if w.suppressed > 0 {
                out.push(Suppressed { kind, count: w.suppressed, window });
            }
            *w = Window::default();
        }
        out
    }
}

/// A [`LogThrottle`] shared by the server's tasks, on the real clock, that
/// writes the summary lines itself.
#[derive(Debug)]
pub struct LogLimiter(Mutex<LogThrottle>);

impl LogLimiter {
    /// Logs `per_window` lines of each kind per [`LOG_WINDOW`] (0: every line).
    pub fn new(per_window: u32) -> Self {
        Self(Mutex::new(LogThrottle::new(per_window, LOG_WINDOW)))
    }

    /// Whether to log this event of `kind` now; writes the summary of the
    /// kind's last window first when it left lines out.
    pub fn admit(&self, kind: LogKind) -> bool {
        // A poisoned lock (a panic while it was held) logs everything rather
        // than nothing: the state it guards is a few counters.
        let Ok(mut throttle) = self.0.lock() else { return true };
        let (summary, log) = throttle.admit(kind, Instant::now());
        drop(throttle);
        if let Some(summary) = summary {
            write(&summary);
        }
        log
    }

    /// Writes the summaries of the windows that are over (the hub calls
    /// this every second, so a flood that stops is still summed up).
    pub fn flush(&self) {
        let summaries = match self.0.lock() {
            Ok(mut throttle) => throttle.flush(Instant::now()),
            Err(_) => return,
        };
        summaries.iter().for_each(write);
    }

    /// Writes every summary still open (at shutdown).
    pub fn flush_all(&self) {
        let summaries = match self.0.lock() {
            Ok(mut throttle) => throttle.flush_all(),
            Err(_) => return,
        };
        summaries.iter().for_each(write);
    }
}

/// One summary line, at its kind's level.
fn write(s: &Suppressed) {
    let (event, suppressed, window_s) = (s.kind.name(), s.count, s.window.as_secs());
    if s.kind.is_warning() {
        tracing::warn!(event, suppressed, window_s, "{}", s.message());
    } else {
        tracing::info!(event, suppressed, window_s, "{}", s.message());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A flood of 10,000 connects over 25 s, one every 2.5 ms: a bounded
    /// number of lines, and summaries that add up to the rest.
    #[test]
    fn a_flood_is_logged_in_bounded_lines_plus_summaries_that_count_the_rest() {
        let t0 = Instant::now();
        let mut throttle = LogThrottle::new(5, Duration::from_secs(10));
        let (mut lines, mut summaries) = (0u64, Vec::new());
        for i in 0..10_000u64 {
            let (summary, log) = throttle.admit(LogKind::Connected, at(t0, i * 5 / 2));
            summaries.extend(summary);
            lines += u64::from(log);
        }
        // Windows at 0 s, 10 s and 20 s: 5 lines each.
        assert_eq!(lines, 15);
        // Two windows ended while the flood went on; the third is summed up by a flush.
        assert_eq!(summaries.len(), 2);
        assert!(throttle.flush(at(t0, 29_000)).is_empty(), "the third window is not over yet");
        summaries.extend(throttle.flush(at(t0, 30_000)));
        assert_eq!(summaries.len(), 3);
        assert_eq!(lines + summaries.iter().map(|s| s.count).sum::<u64>(), 10_000);
        assert!(summaries.iter().all(|s| s.kind == LogKind::Connected && s.window == Duration::from_secs(10)));
        assert_eq!(summaries[0].message(), "connected: … and 3,995 more in 10 s");
        // Flushed: the next event opens a new window and is logged, with no summary.
        assert_eq!(throttle.admit(LogKind::Connected, at(t0, 30_001)), (None, true));
    }

    #[test]
    fn each_kind_has_its_own_budget() {
        let t0 = Instant::now();
        let mut throttle = LogThrottle::new(2, Duration::from_secs(10));
        for _ in 0..100 {
            throttle.admit(LogKind::Refused, t0);
        }
        assert_eq!(throttle.admit(LogKind::Authenticated, t0), (None, true));
        assert_eq!(throttle.admit(LogKind::Refused, t0), (None, false));
        let summaries = throttle.flush(at(t0, 10_000));
        assert_eq!(summaries, vec![Suppressed { kind: LogKind::Refused, count: 99, window: Duration::from_secs(10) }]);
    }

    #[test]
    fn a_window_with_nothing_left_out_needs_no_summary() {
        let t0 = Instant::now();
        let mut throttle = LogThrottle::new(3, Duration::from_secs(10));
        for i in 0..3 {
            assert_eq!(throttle.admit(LogKind::AuthFailed, at(t0, i)), (None, true));
        }
        assert!(throttle.flush(at(t0, 60_000)).is_empty());
        assert_eq!(throttle.admit(LogKind::AuthFailed, at(t0, 60_000)), (None, true));
    }

    #[test]
    fn zero_logs_every_line() {
        let t0 = Instant::now();
        let mut throttle = LogThrottle::new(0, Duration::from_secs(10));
        assert!((0..1000).all(|_| throttle.admit(LogKind::Connected, t0) == (None, true)));
        assert!(throttle.flush_all().is_empty());
    }

    #[test]
    fn at_shutdown_open_windows_are_summed_up_too() {
        let t0 = Instant::now();
        let mut throttle = LogThrottle::new(1, Duration::from_secs(10));
        for _ in 0..4 {
            throttle.admit(LogKind::SlowConsumer, t0);
        }
        assert!(throttle.flush(t0).is_empty());
        let all = throttle.flush_all();
        assert_eq!(all, vec![Suppressed { kind: LogKind::SlowConsumer, count: 3, window: Duration::from_secs(10) }]);
        assert!(throttle.flush_all().is_empty());
    }

    #[test]
    fn counts_are_written_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(4211), "4,211");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
