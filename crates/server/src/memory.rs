//! Gives memory back to the operating system after a burst.
//!
//! A burst (thousands of sessions arriving, each announced to all the others)
//! allocates and frees millions of frames. glibc's malloc keeps the freed
//! pages resident, scattered between long-lived allocations, so an idle server
//! would go on holding its peak: about three times the memory its sessions
//! need. `malloc_trim` returns free pages from inside the heap. It walks the
//! heap under its locks, so it runs only once traffic has quieted after a
//! burst, never under steady load (where freed memory is reused anyway).
//! This module only decides when and trims; it must not run the trim on an
//! async worker (the hub spawns it on the blocking pool).

/// Frames queued since the last trim that make a trim worth its cost.
const BURST_FRAMES: u64 = 100_000;
/// A tick with fewer frames than this is quiet.
const QUIET_FRAMES: u64 = 1_000;

/// Decides, once a tick, whether to trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// Frames queued since the last trim.
    since_trim: u64,
    /// Frames queued at the last tick.
    at_last_tick: u64,
}

impl Trimmer {
    /// Called once a tick with the total of frames queued so far; returns
    /// whether to trim now ([`release_free_memory`]).
    pub fn tick(&mut self, queued_total: u64) -> bool {
        let this_tick = queued_total.saturating_sub(self.at_last_tick);
        self.at_last_tick = queued_total;
        self.since_trim += this_tick;
        if self.since_trim < BURST_FRAMES || this_tick >= QUIET_FRAMES {
            return false;
        }
        self.since_trim = 0;
        true
    }
}

/// Returns free heap pages to the OS (glibc only; elsewhere a no-op). It
/// walks the heap: call it off the async workers (`spawn_blocking`).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_quiet_after_a_burst_and_never_under_load() {
        let mut t = Trimmer::default();
        let mut total = 0;
        // Steady load: never.
        for _ in 0..10 {
            total += 50_000;
            assert!(!t.tick(total));
        }
        // Quiet after it: once.
        assert!(t.tick(total));
        assert!(!t.tick(total));
        // A small trickle is not a burst.
        total += 500;
        assert!(!t.tick(total));
    }
}
