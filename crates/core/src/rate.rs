//! `TokenBucket`: frames per second per connection, pure (time is passed in).
//!
//! A connection may send `burst` frames at once and `rate` per second after
//! that. A frame with no token left is refused (`rate_limited`) and puts the
//! bucket in debt; a connection whose debt reaches another `burst` keeps
//! flooding and is closed. Debt is repaid at `rate`, so a client that slows
//! down recovers.

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process it.
    Allowed,
    /// Refuse it; the connection goes on.
    Limited,
    /// Refuse it and close the connection.
    Flooding,
}

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    /// A full bucket at time `now` (seconds).
    pub fn new(rate: f64, burst: f64, now: f64) -> Self {
        let burst = burst.max(1.0);
        Self { rate: rate.max(0.0), burst, tokens: burst, last: now }
    }

    /// Takes a token for one frame at `now` (seconds, never decreasing).
    pub fn take(&mut self, now: f64) -> Verdict {
        let elapsed = (now - self.last).max(0.0);
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Verdict::Allowed
        } else if self.tokens > -self.burst {
            Verdict::Limited
        } else {
            Verdict::Flooding
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_flooding_then_recovery() {
        let mut b = TokenBucket::new(10.0, 5.0, 0.0);
        for _ in 0..5 {
            assert_eq!(b.take(0.0), Verdict::Allowed);
        }
        assert_eq!(b.take(0.0), Verdict::Limited);
        // A tenth of a second buys one frame (the debt is repaid first).
        assert_eq!(b.take(0.2), Verdict::Allowed);
        let verdicts: Vec<Verdict> = (0..10).map(|_| b.take(0.2)).collect();
        assert!(verdicts.contains(&Verdict::Flooding));
        // A client that stops for a while is welcome again.
        assert_eq!(b.take(10.0), Verdict::Allowed);
    }
}
