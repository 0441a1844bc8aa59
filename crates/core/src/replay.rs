//! `ReplayGuard`: timestamp skew and nonce reuse checks (PROTOCOL.md §4).
//!
//! One window per account, shared by all of its connections. A nonce is
//! remembered until its timestamp leaves the skew window, after which the
//! timestamp check alone rejects a replay. Memory per account is capped: when
//! the cap is reached the oldest entries are evicted and the account's
//! *floor* is raised to their timestamp, so a replay of an evicted nonce is
//! still refused (as `stale`). Pure: `now` is passed in.
//!
//! `now` may go backwards (the shell reads the wall clock, which an NTP step
//! or a resumed virtual machine moves back): a nonce forgotten because time
//! passed must not pass again when the clock returns. So the guard keeps the
//! highest timestamp it ever forgot and refuses, for every account, any at or
//! below it. While the clock only moves forward that refuses nothing the skew
//! check would pass: a nonce is forgotten only once its timestamp is more
//! than `skew_s` in the past.

use std::collections::{BTreeSet, HashMap, HashSet};

use ulid::Ulid;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The timestamp is outside the skew window, or at or below a floor
    /// (server start, evicted nonces).
    #[error("timestamp is outside the accepted window (±{skew_s} s of the server's clock, after its start and evicted nonces)")]
    Stale {
        /// The configured skew.
        skew_s: u64,
    },
    /// The nonce was already used within the window.
    #[error("nonce already used")]
    Replay,
}

#[derive(Default, Debug)]
struct Window {
    /// The nonces remembered: lookups only (`by_time` orders them).
    seen: HashSet<u64>,
    by_time: BTreeSet<(u64, u64)>,
    /// Timestamps at or below this are refused: their nonces may have been evicted.
    floor: Option<u64>,
}

/// Per-account nonce windows.
#[derive(Debug)]
pub struct ReplayGuard {
    skew_s: u64,
    /// Timestamps at or below this are refused for every account: the
    /// server's start, and the highest timestamp forgotten as time passed.
    global_floor: Option<u64>,
    per_account: usize,
    /// Per account: looked up per frame; iterated only to prune and count,
    /// which makes no output.
    windows: HashMap<Ulid, Window>,
}

impl ReplayGuard {
    /// A guard with the given skew and per-account nonce capacity (at least 1).
    pub fn new(skew_s: u64, per_account: usize) -> Self {
        Self { skew_s, global_floor: None, per_account: per_account.max(1), windows: HashMap::new() }
    }

    /// Refuses, for every account, timestamps at or below `floor` (as `stale`).
    /// Set to the server's start time, since nonces from before are forgotten.
    pub fn with_floor(mut self, floor: u64) -> Self {
        self.global_floor = Some(floor);
        self
    }

    /// Checks only the timestamp against the skew window.
    pub fn check_timestamp(skew_s: u64, timestamp: u64, now: u64) -> Result<(), ReplayError> {
        if timestamp.abs_diff(now) > skew_s {
            Err(ReplayError::Stale { skew_s })
        } else {
            Ok(())
        }
    }

    /// Checks and records a frame's `(timestamp, nonce)` for `account`.
    pub fn check(&mut self, account: Ulid, timestamp: u64, nonce: u64, now: u64) -> Result<(), ReplayError> {
        Self::check_timestamp(self.skew_s, timestamp, now)?;
        let skew_s = self.skew_s;
        if self.global_floor.is_some_and(|floor| timestamp <= floor) {
            return Err(ReplayError::Stale { skew_s });
        }
        let window = self.windows.entry(account).or_default();
        let forgot = Self::expire(window, skew_s, now);
        Self::raise(&mut self.global_floor, forgot);
        if self.global_floor.is_some_and(|floor| timestamp <= floor) {
            return Err(ReplayError::Stale { skew_s });
        }
        if window.floor.is_some_and(|floor| timestamp <= floor) {
            return Err(ReplayError::Stale { skew_s });
        }
        if !window.seen.insert(nonce) {
            return Err(ReplayError::Replay);
        }
        window.by_time.insert((timestamp, nonce));
        while window.seen.len() > self.per_account {
            let Some((ts, old)) = window.by_time.pop_first() else { break };
            window.seen.remove(&old);
            window.floor = Some(window.floor.map_or(ts, |f| f.max(ts)));
        }
        Ok(())
    }

    /// Forgets what the timestamp check alone now refuses; returns the
    /// highest timestamp forgotten, if any.
    fn expire(window: &mut Window, skew_s: u64, now: u64) -> Option<u64> {
        // An entry with timestamp < now - skew can no longer pass the timestamp check
        // (as long as the clock does not step back: see the module doc).
        let limit = now.saturating_sub(skew_s);
        let mut forgot = None;
        while let Some(&(ts, nonce)) = window.by_time.first() {
            if ts >= limit {
                break;
            }
            window.by_time.pop_first();
            window.seen.remove(&nonce);
            forgot = Some(ts);
        }
        if let Some(f) = window.floor.filter(|f| *f < limit) {
            window.floor = None;
            forgot = forgot.max(Some(f));
        }
        forgot
    }

    /// Raises `floor` to `to`.
    fn raise(floor: &mut Option<u64>, to: Option<u64>) {
        *floor = (*floor).max(to);
    }

    /// Drops windows that hold nothing any more. Call periodically.
    pub fn sweep(&mut self, now: u64) {
        let skew_s = self.skew_s;
        let global_floor = &mut self.global_floor;
        self.windows.retain(|_, w| {
            Self::raise(global_floor, Self::expire(w, skew_s, now));
            !w.seen.is_empty() || w.floor.is_some()
        });
    }

    /// Forgets an account's window (the account was removed).
    pub fn forget(&mut self, account: &Ulid) {
        self.windows.remove(account);
    }

    /// Nonces currently remembered, over all accounts.
    pub fn len(&self) -> usize {
        self.windows.values().map(|w| w.seen.len()).sum()
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

impl From<ReplayError> for sigil_proto::ProtoError {
    fn from(e: ReplayError) -> Self {
        use sigil_proto::ErrorCode;
        let code = match e {
            ReplayError::Stale { .. } => ErrorCode::Stale,
            ReplayError::Replay => ErrorCode::Replay,
        };
        sigil_proto::ProtoError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_stale_and_future_timestamps() {
        let mut g = ReplayGuard::new(30, 16);
        let a = Ulid::nil();
        assert_eq!(g.check(a, 1000 - 31, 1, 1000), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 1000 + 31, 2, 1000), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 1000 - 30, 3, 1000), Ok(()));
        assert_eq!(g.check(a, 1000 + 30, 4, 1000), Ok(()));
    }

    #[test]
    fn refuses_reused_nonce_until_it_expires() {
        let mut g = ReplayGuard::new(30, 16);
        let a = Ulid::nil();
        assert_eq!(g.check(a, 1000, u64::MAX, 1000), Ok(()));
        assert_eq!(g.check(a, 1000, u64::MAX, 1010), Err(ReplayError::Replay));
        // Same nonce, other account: fine.
        assert_eq!(g.check(Ulid::from(1u128), 1000, u64::MAX, 1000), Ok(()));
        // Later, the old timestamp is stale anyway and the nonce is forgotten.
        assert_eq!(g.check(a, 1000, u64::MAX, 1031), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.len(), 2);
        assert_eq!(g.check(a, 1031, u64::MAX, 1031), Ok(()));
        assert_eq!(g.len(), 2, "the expired entry was replaced, not kept");
    }

    #[test]
    fn eviction_raises_the_floor_so_evicted_nonces_stay_refused() {
        let mut g = ReplayGuard::new(30, 2);
        let a = Ulid::nil();
        assert_eq!(g.check(a, 990, 1, 1000), Ok(()));
        assert_eq!(g.check(a, 995, 2, 1000), Ok(()));
        assert_eq!(g.check(a, 1000, 3, 1000), Ok(()));
        assert_eq!(g.len(), 2);
        // Nonce 1 was evicted; its replay is refused by the floor.
        assert_eq!(g.check(a, 990, 1, 1000), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 1000, 3, 1000), Err(ReplayError::Replay));
        g.sweep(2000);
        assert!(g.is_empty());
    }

    #[test]
    fn a_nonce_forgotten_as_time_passed_stays_refused_when_the_clock_steps_back() {
        let mut g = ReplayGuard::new(30, 16);
        let (a, b) = (Ulid::nil(), Ulid::from(1u128));
        assert_eq!(g.check(a, 1000, 7, 1000), Ok(()));
        assert_eq!(g.check(b, 1001, 8, 1001), Ok(()));
        // The clock jumps an hour ahead: the windows empty as time passes...
        g.sweep(4600);
        assert!(g.is_empty());
        // ...and the clock steps back (an NTP correction): the captured
        // frames are within the skew again, and must not pass.
        assert_eq!(g.check(a, 1000, 7, 1010), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(b, 1001, 8, 1010), Err(ReplayError::Stale { skew_s: 30 }));
        // Fresh frames pass: their timestamps are above every forgotten one.
        assert_eq!(g.check(a, 1010, 9, 1010), Ok(()));
        // The same through `check` alone (no sweep), and for an evicted floor.
        let mut g = ReplayGuard::new(30, 1);
        assert_eq!(g.check(a, 2000, 1, 2000), Ok(()));
        assert_eq!(g.check(a, 2001, 2, 2001), Ok(()), "evicts nonce 1: floor 2000");
        assert_eq!(g.check(a, 9000, 3, 9000), Ok(()), "forgets nonce 2 and the floor");
        assert_eq!(g.check(a, 2001, 2, 2005), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 2000, 1, 2005), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 2005, 4, 2005), Ok(()));
    }

    #[test]
    fn the_start_floor_refuses_frames_from_before_a_restart() {
        let mut g = ReplayGuard::new(30, 16).with_floor(1000);
        let a = Ulid::nil();
        assert_eq!(g.check(a, 990, 1, 1005), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 1000, 2, 1005), Err(ReplayError::Stale { skew_s: 30 }));
        assert_eq!(g.check(a, 1001, 3, 1005), Ok(()));
    }
}
