//! `Batch`: commits of several consecutive messages of a channel that go to
//! a member as one `CH_MSG_COMMIT` when its session asked for batched frames,
//! and as one frame per message otherwise (PROTOCOL.md §7.9). Either form is
//! encoded once, when a recipient first needs it, and shared by every
//! recipient after.

use std::sync::OnceLock;

use ulid::Ulid;

use sigil_proto::event::{ChMsgCommit, Outbound};

/// Consecutive commits of one channel with the same acks, in commit order (at least one).
#[derive(Debug)]
pub struct Batch {
    channel: Ulid,
    acks: Vec<Ulid>,
    ids: Vec<Ulid>,
    batched: OnceLock<Outbound>,
    singles: OnceLock<Vec<Outbound>>,
}

impl Batch {
    /// The commits of `ids` (in order) in `channel`, all with `acks`; `None` when `ids` is empty.
    pub fn new(channel: Ulid, acks: Vec<Ulid>, ids: Vec<Ulid>) -> Option<Batch> {
        (!ids.is_empty()).then(|| Batch { channel, acks, ids, batched: OnceLock::new(), singles: OnceLock::new() })
    }

    /// The message ids, in commit order.
    pub fn ids(&self) -> &[Ulid] {
        &self.ids
    }

    fn frame(&self, first: Ulid, rest: Vec<Ulid>) -> Outbound {
        Outbound::event(&ChMsgCommit { id: first, channel: self.channel, acks: self.acks.clone(), ids: rest })
    }

    /// The one frame for a session that takes batched frames.
    pub fn batched(&self) -> &Outbound {
        self.batched.get_or_init(|| match self.ids.split_first() {
            Some((first, rest)) => self.frame(*first, rest.to_vec()),
            // Not constructible: `new` refuses an empty batch.
            None => self.frame(Ulid::nil(), Vec::new()),
        })
    }

    /// One frame per message, for a session that does not.
    pub fn singles(&self) -> &[Outbound] {
        self.singles.get_or_init(|| self.ids.iter().map(|&id| self.frame(id, Vec::new())).collect())
    }
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        (self.channel, &self.acks, &self.ids) == (other.channel, &other.acks, &other.ids)
    }
}

impl Eq for Batch {}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::ServerEvent;

    #[test]
    fn both_forms_report_the_same_commits() {
        let ids: Vec<Ulid> = (1..=3u128).map(Ulid::from).collect();
        let (channel, acks) = (Ulid::from(9u128), vec![Ulid::from(7u128), Ulid::from(8u128)]);
        let batch = Batch::new(channel, acks.clone(), ids.clone()).expect("not empty");
        let one = batch.batched();
        let Ok(ServerEvent::ChMsgCommit(c)) = ServerEvent::decode(one.command, &one.payload) else {
            panic!("not a CH_MSG_COMMIT")
        };
        assert_eq!((c.id, c.channel, &c.acks, c.ids.as_slice()), (ids[0], channel, &acks, &ids[1..]));
        let singles: Vec<Ulid> = batch
            .singles()
            .iter()
            .map(|f| match ServerEvent::decode(f.command, &f.payload) {
                Ok(ServerEvent::ChMsgCommit(c)) if c.ids.is_empty() && c.acks == acks => c.id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(singles, ids);
        assert!(Batch::new(channel, acks, Vec::new()).is_none());
    }
}
