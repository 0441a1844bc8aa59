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
/// Bytes moved through (queued towards clients, or held for commit and let
/// go) since the last trim that make a trim worth its cost: a burst of a
/// few thousand 64 KB frames is few frames but much memory.
const BURST_BYTES: u64 = 32 * 1024 * 1024;
/// A tick with fewer frames than this is quiet.
const QUIET_FRAMES: u64 = 1_000;
/// A tick that moves fewer bytes than this is quiet.
const QUIET_BYTES: u64 = 4 * 1024 * 1024;

/// What the hub has moved so far (running totals).
#[derive(Debug, Default, Clone, Copy)]
pub struct Churn {
    /// Frames queued towards clients.
    pub frames: u64,
    /// Payload bytes queued towards clients, plus bytes of channel content
    /// that stopped being held for commit.
    pub bytes: u64,
}

/// Decides, once a tick, whether to trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// Frames and bytes since the last trim.
    since_trim: Churn,
    /// The totals at the last tick.
    at_last_tick: Churn,
}

impl Trimmer {
    /// Called once a tick with the totals so far; returns whether to trim
    /// now ([`release_free_memory`]): after a burst of frames or of bytes,
    /// once a tick is quiet in both.
    pub fn tick(&mut self, total: Churn) -> bool {
        let frames = total.frames.saturating_sub(self.at_last_tick.frames);
        let bytes = total.bytes.saturating_sub(self.at_last_tick.bytes);
        self.at_last_tick = total;
        self.since_trim.frames += frames;
        self.since_trim.bytes += bytes;
        let burst = self.since_trim.frames >= BURST_FRAMES || self.since_trim.bytes >= BURST_BYTES;
        if !burst || frames >= QUIET_FRAMES || bytes >= QUIET_BYTES {
            return false;
        }
        self.since_trim = Churn::default();
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
        let mut total = Churn::default();
        // Steady load: never.
        for _ in 0..10 {
            total.frames += 50_000;
            assert!(!t.tick(total));
        }
        // Quiet after it: once.
        assert!(t.tick(total));
        assert!(!t.tick(total));
        // A small trickle is not a burst.
        total.frames += 500;
        assert!(!t.tick(total));
    }

    #[test]
    fn a_burst_of_few_large_frames_is_a_burst() {
        let mut t = Trimmer::default();
        let mut total = Churn::default();
        // 600 frames of 64 KB: far from the frame count, but 37 MB moved.
        total.frames += 600;
        total.bytes += 600 * 65_536;
        assert!(!t.tick(total), "not while it is moving");
        assert!(t.tick(total), "once quiet");
        assert!(!t.tick(total));
    }
}
