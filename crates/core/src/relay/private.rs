//! Private messages and their acks (PROTOCOL.md §6.1–6.2): `PV_MSG` and
//! `ACK_MSG`, and the delivery ledger that makes acks unforgeable.
//!
//! [`Ledger`] is the state: one record per delivered, unacknowledged message,
//! expiring after `pending_ttl_s` and capped (the oldest evicted first).
//! [`Ledger::command`] handles the two commands against it.

use std::collections::{BTreeSet, HashMap};

use sigil_proto::event::{Msg, MsgAck, Outbound};
use sigil_proto::{Command, ErrorCode, ProtoError};
use ulid::Ulid;

use super::presence::Presence;
use super::types::Effect;
use crate::config::Limits;

/// Key of a delivered private message awaiting its ack: (recipient, sender, msg_id).
pub(super) type Delivery = (Ulid, Ulid, Ulid);

/// Delivered, unacknowledged private messages.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Each record: when it expires, and its insertion number. Looked up
    /// per `PV_MSG` and `ACK_MSG`; never iterated (`by_expiry` orders them).
    records: HashMap<Delivery, (u64, u64)>,
    /// (expiry, insertion number, delivery): the first is due first, which
    /// is the oldest unless the server's clock stepped back (then the one due
    /// first is evicted first, still one defined order).
    by_expiry: BTreeSet<(u64, u64, Delivery)>,
    made: u64,
}

impl Ledger {
    /// True while `key` awaits its ack.
    pub(super) fn contains(&self, key: &Delivery) -> bool {
        self.records.contains_key(key)
    }

    /// Records a delivery expiring at `expires`, evicting the oldest records
    /// to stay within `cap`.
    pub(super) fn record(&mut self, key: Delivery, expires: u64, cap: usize) {
        while self.records.len() >= cap {
            let Some((_, _, old)) = self.by_expiry.pop_first() else { break };
            self.records.remove(&old);
        }
        self.made += 1;
        self.records.insert(key, (expires, self.made));
        self.by_expiry.insert((expires, self.made, key));
    }

    /// Settles a record; false when there is none (never delivered, already
    /// acked, expired or evicted).
    pub(super) fn settle(&mut self, key: &Delivery) -> bool {
        match self.records.remove(key) {
            Some((expires, made)) => {
                self.by_expiry.remove(&(expires, made, *key));
                true
            }
            None => false,
        }
    }

    /// Forgets the records due by `now`.
    pub(super) fn expire(&mut self, now: u64) {
        while let Some(&(expires, _, key)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.records.remove(&key);
        }
    }

    /// How many records are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }
}

impl Ledger {
    /// `PV_MSG` and `ACK_MSG` from `me`; `presence` says who is online.
    pub(super) fn command(
        &mut self,
        presence: &Presence,
        me: Ulid,
        command: Command,
        now: u64,
        limits: &Limits,
        out: &mut Vec<Effect>,
    ) -> Result<(), ProtoError> {
        match command {
            Command::PvMsg { to, msg_id, msg } => {
                let peer = presence.target(to)?;
                let key = (to, me, msg_id);
                if self.contains(&key) {
                    return Err(ProtoError::new(ErrorCode::DuplicateMsg, "this msg_id is already awaiting its ack"));
                }
                let expires = now.saturating_add(limits.pending_ttl_s);
                self.record(key, expires, limits.max_unacked_private);
                let frame = Outbound::event(&Msg { from: me, msg_id, msg, timestamp: now });
                out.push(Effect::Send { conn: peer, frame });
                Ok(())
            }
            Command::AckMsg { from, msg_id } => {
                if !self.settle(&(me, from, msg_id)) {
                    return Err(ProtoError::new(
                        ErrorCode::UnknownMsg,
                        "no such message was delivered to you from that user",
                    ));
                }
                let Some(peer) = presence.conn_of(&from) else {
                    return Err(ProtoError::new(
                        ErrorCode::UserOffline,
                        "the sender is offline; the ack was not delivered",
                    ));
                };
                out.push(Effect::Send { conn: peer, frame: Outbound::event(&MsgAck { msg_id, by: me }) });
                Ok(())
            }
            other => Err(ProtoError::new(
                ErrorCode::UnknownCommand,
                format!("{} is not a private-message command", other.name()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128) -> Delivery {
        (Ulid::from(1u128), Ulid::from(2u128), Ulid::from(n))
    }

    #[test]
    fn a_record_settles_once() {
        let mut l = Ledger::default();
        l.record(key(1), 10, 8);
        assert!(l.contains(&key(1)));
        assert!(l.settle(&key(1)));
        assert!(!l.settle(&key(1)), "a second ack is unknown");
        assert!(!l.settle(&key(2)), "never delivered");
    }

    #[test]
    fn records_expire_and_the_oldest_is_evicted_at_the_cap() {
        let mut l = Ledger::default();
        l.record(key(1), 10, 2);
        l.record(key(2), 11, 2);
        l.record(key(3), 12, 2);
        assert!(!l.contains(&key(1)), "evicted, oldest first");
        assert_eq!(l.len(), 2);
        l.expire(11);
        assert!(!l.contains(&key(2)) && l.contains(&key(3)));
        l.expire(12);
        assert_eq!(l.len(), 0);
    }
}
