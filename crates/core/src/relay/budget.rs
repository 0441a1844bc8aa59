//! Budgets for requests whose cost is not one frame's: list entries per
//! session (`LST_USR`, `CH_LST`, `CH_WHO` cost O(N) each, so a frame rate
//! alone let a few connections flooding them slow everyone), and sign-ins per
//! account (each `CNN` makes every co-member of the account's channels
//! receive presence and status frames).

use std::collections::HashMap;

use sigil_proto::{ErrorCode, ProtoError};
use ulid::Ulid;

use super::types::ConnId;
use crate::config::Limits;
use crate::rate::TokenBucket;

/// Token buckets by session and by account. Hash maps: looked up, and
/// pruned of full buckets, never iterated to make output.
#[derive(Debug, Default)]
pub(super) struct Budgets {
    lists: HashMap<ConnId, TokenBucket>,
    sign_ins: HashMap<Ulid, TokenBucket>,
}

impl Budgets {
    /// Spends `entries` of `conn`'s list budget, or refuses (spending nothing).
    pub(super) fn list(&mut self, conn: ConnId, entries: usize, limits: &Limits, now: u64) -> Result<(), ProtoError> {
        let rate = limits.list_entries_per_s as f64;
        let bucket = self.lists.entry(conn).or_insert_with(|| TokenBucket::new(rate, rate * 4.0, now as f64));
        let cost = entries.max(1) as f64;
        if bucket.try_take(cost, now as f64) {
            return Ok(());
        }
        let wait = bucket.wait_for(cost, now as f64).ceil();
        Err(ProtoError::new(
            ErrorCode::RateLimited,
            format!(
                "this list has {entries} entries and a session may list {} per second: ask again in {wait} s",
                limits.list_entries_per_s
            ),
        ))
    }

    /// Spends one of `account`'s sign-ins, or refuses.
    pub(super) fn sign_in(&mut self, account: Ulid, limits: &Limits, now: u64) -> Result<(), ProtoError> {
        let per_min = limits.cnn_per_minute as f64;
        let bucket =
            self.sign_ins.entry(account).or_insert_with(|| TokenBucket::new(per_min / 60.0, per_min, now as f64));
        if bucket.try_take(1.0, now as f64) {
            return Ok(());
        }
        let wait = bucket.wait_for(1.0, now as f64).ceil();
        Err(ProtoError::new(
            ErrorCode::RateLimited,
            format!(
                "this account signed in {} times in the last minute: sign in again in {wait} s",
                limits.cnn_per_minute
            ),
        ))
    }

    /// A session ended: its list budget goes with it.
    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        self.lists.remove(&conn);
    }

    /// Forgets the accounts whose sign-in budget is full again (it would be
    /// made full anyway): the map holds only accounts that signed in lately.
    pub(super) fn sweep(&mut self, now: u64) {
        self.sign_ins.retain(|_, b| !b.is_full(now as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_spend_by_entries_and_sign_ins_by_account() {
        let limits = Limits { list_entries_per_s: 100, cnn_per_minute: 3, ..Limits::default() };
        let mut b = Budgets::default();
        let conn = ConnId(1);
        // Burst of four seconds' worth, then refused (with how long to wait), then refilled.
        assert!(b.list(conn, 300, &limits, 0).is_ok());
        let e = b.list(conn, 300, &limits, 0).expect_err("over budget");
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.reason.contains("ask again in 2 s"), "{}", e.reason);
        assert!(b.list(ConnId(2), 300, &limits, 0).is_ok(), "another session has its own budget");
        assert!(b.list(conn, 300, &limits, 2).is_ok());

        let alice = Ulid::from(1u128);
        for _ in 0..3 {
            assert!(b.sign_in(alice, &limits, 0).is_ok());
        }
        assert!(b.sign_in(alice, &limits, 0).is_err());
        assert!(b.sign_in(Ulid::from(2u128), &limits, 0).is_ok(), "per account");
        assert!(b.sign_in(alice, &limits, 20).is_ok(), "one per 20 s after the burst");
        b.sweep(1000);
        assert!(b.sign_ins.is_empty());
    }
}
