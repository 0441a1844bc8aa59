//! `TokenBucket`: frames per second per connection, pure (time is passed in).
//! The same bucket meters costlier things by weight ([`TokenBucket::try_take`]):
//! list entries per connection, sign-ins per account, connections per address.
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

impl TokenBucket {
    fn refill(&mut self, now: f64) {
        let elapsed = (now - self.last).max(0.0);
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes `cost` tokens at `now` if there are that many (a cost above
    /// the burst is taken as the burst, so it can pass once the bucket is
    /// full). Nothing is taken when it fails: a refusal costs no debt.
    pub fn try_take(&mut self, cost: f64, now: f64) -> bool {
        self.refill(now);
        let cost = cost.clamp(0.0, self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Seconds from `now` until `cost` tokens are there (0 if they are).
    pub fn wait_for(&self, cost: f64, now: f64) -> f64 {
        let elapsed = (now - self.last).max(0.0);
        let tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let missing = cost.clamp(0.0, self.burst) - tokens;
        if missing <= 0.0 || self.rate <= 0.0 {
            0.0
        } else {
            missing / self.rate
        }
    }

    /// Whether the bucket is full at `now`: forgetting it changes nothing.
    pub fn is_full(&self, now: f64) -> bool {
        let elapsed = (now - self.last).max(0.0);
        self.tokens + elapsed * self.rate >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_takes_refuse_without_debt_and_cap_at_the_burst() {
        let mut b = TokenBucket::new(100.0, 1000.0, 0.0);
        assert!(b.try_take(600.0, 0.0));
        assert!(!b.try_take(600.0, 0.0), "400 left");
        assert!(b.try_take(400.0, 0.0), "the refusal took nothing");
        assert!((b.wait_for(250.0, 0.0) - 2.5).abs() < 1e-9);
        // A list longer than the burst passes once the bucket is full.
        assert!(!b.try_take(5000.0, 5.0));
        assert!(b.try_take(5000.0, 10.0));
        assert!(!b.is_full(10.0));
        assert!(b.is_full(20.0));
    }

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
