//! What a scenario measures: latency histograms, per-publisher sequence
//! tracking (so lost and duplicated deliveries are counted, not guessed), and
//! the live counters behind the progress line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Bytes of a message that carry its send time, publisher and sequence number.
pub const HEADER_LEN: usize = 28;

/// The bench's clock: nanoseconds since one shared start, so a time written
/// into a message by one task can be compared by another.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Fills `out` with a message of `size` bytes (at least [`HEADER_LEN`]):
/// the send time, publisher and sequence in hex, then filler. ASCII, so the
/// same bytes go through every protocol (IRC included).
pub fn write_message(out: &mut Vec<u8>, size: usize, sent_ns: u64, publisher: u16, seq: u32) {
    use std::io::Write;
    out.clear();
    // Cannot fail: writing to a Vec.
    let _ = write!(out, "{sent_ns:016x}{publisher:04x}{seq:08x}");
    out.resize(size.max(HEADER_LEN), b'.');
}

/// The header of a message written by [`write_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When it was (or was scheduled to be) sent.
    pub sent_ns: u64,
    /// Which publisher sent it.
    pub publisher: u16,
    /// Its sequence number at that publisher.
    pub seq: u32,
}

/// Reads the header of a message, if it has one.
pub fn read_stamp(msg: &[u8]) -> Option<Stamp> {
    let head = std::str::from_utf8(msg.get(..HEADER_LEN)?).ok()?;
    Some(Stamp {
        sent_ns: u64::from_str_radix(&head[..16], 16).ok()?,
        publisher: u16::from_str_radix(&head[16..20], 16).ok()?,
        seq: u32::from_str_radix(&head[20..28], 16).ok()?,
    })
}

/// Counters every task bumps, read by the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages delivered to a subscriber.
    pub deliveries: AtomicU64,
    /// Messages committed (sigil) or otherwise completed.
    pub completed: AtomicU64,
}

impl Progress {
    /// Adds one delivery.
    pub fn delivered(&self) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one completion.
    pub fn complete(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Errors a run received: counted, and the first few printed.
#[derive(Debug, Default)]
pub struct Errors(AtomicU64);

impl Errors {
    /// How many are printed.
    const SHOWN: u64 = 5;

    /// Counts one; prints it if it is among the first few.
    pub fn record(&self, what: impl std::fmt::Display) {
        if self.0.fetch_add(1, Ordering::Relaxed) < Self::SHOWN {
            eprintln!("\nbench: {what}");
        }
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// One receiver's record (merged across receivers at the end).
#[derive(Debug)]
pub struct Recorder {
    /// Send to delivery, µs.
    pub delivery: Histogram<u64>,
    /// Send to completion (commit, ack), µs.
    pub completion: Histogram<u64>,
    /// Deliveries seen for the first time.
    pub unique: u64,
    /// Deliveries seen again.
    pub duplicated: u64,
    /// Deliveries without a readable header.
    pub foreign: u64,
    seen: Vec<Vec<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { delivery: histogram(), completion: histogram(), unique: 0, duplicated: 0, foreign: 0, seen: Vec::new() }
    }
}

impl Recorder {
    /// Records a delivery of `msg` at `now_ns`.
    pub fn delivered(&mut self, msg: &[u8], now_ns: u64) -> Option<Stamp> {
        self.stamped(read_stamp(msg), now_ns)
    }

    /// Records a delivery whose header was already read (`None`: it had none).
    pub fn stamped(&mut self, stamp: Option<Stamp>, now_ns: u64) -> Option<Stamp> {
        let Some(stamp) = stamp else {
            self.foreign += 1;
            return None;
        };
        let p = stamp.publisher as usize;
        if self.seen.len() <= p {
            self.seen.resize_with(p + 1, Vec::new);
        }
        let bits = &mut self.seen[p];
        let (word, bit) = (stamp.seq as usize / 64, stamp.seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicated += 1;
        } else {
            bits[word] |= 1 << bit;
            self.unique += 1;
            self.delivery.saturating_record(now_ns.saturating_sub(stamp.sent_ns) / 1000);
        }
        Some(stamp)
    }

    /// Records a completion of a message sent at `sent_ns`.
    pub fn completed(&mut self, sent_ns: u64, now_ns: u64) {
        self.completion.saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
    }

    /// Folds another receiver's record into this one.
    pub fn merge(&mut self, other: Recorder) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.delivery.add(&other.delivery);
        let _ = self.completion.add(&other.completion);
        self.unique += other.unique;
        self.duplicated += other.duplicated;
        self.foreign += other.foreign;
    }
}

/// Waits while `busy()` holds (the last deliveries of a run), until `limit` after `start`.
pub async fn settle(start: Instant, limit: std::time::Duration, mut busy: impl FnMut() -> bool) {
    while busy() && start.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits for a run's tasks and merges their records.
pub async fn gather(tasks: Vec<tokio::task::JoinHandle<Recorder>>) -> Result<Recorder, super::BenchError> {
    let mut rec = Recorder::default();
    for t in tasks {
        rec.merge(t.await.map_err(|e| super::BenchError::Setup(e.to_string()))?);
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_duplicates_are_counted() {
        let mut msg = Vec::new();
        write_message(&mut msg, 128, 123_456_789, 3, 70);
        assert_eq!(msg.len(), 128);
        assert_eq!(read_stamp(&msg), Some(Stamp { sent_ns: 123_456_789, publisher: 3, seq: 70 }));
        let mut r = Recorder::default();
        assert!(r.delivered(&msg, 123_456_789 + 5_000).is_some());
        r.delivered(&msg, 123_456_789 + 6_000);
        assert_eq!((r.unique, r.duplicated), (1, 1));
        assert_eq!(r.delivery.max(), 5);
        assert!(r.delivered(b"short", 0).is_none());
        assert_eq!(r.foreign, 1);
    }
}
