//! `Batch`: acks or commits of several messages that go to one user as a
//! single frame when its session asked for batched frames, and as one frame
//! per message otherwise (PROTOCOL.md §7.9). Either form is encoded once,
//! when a recipient first needs it, and shared by every recipient after.

use std::sync::OnceLock;

use ulid::Ulid;

use crate::proto::event::{ChMsgAck, ChMsgCommit, Outbound};

/// What a batch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchKind {
    /// `user` acknowledged each of `ids` (`CH_MSG_ACK`).
    Acks {
        /// Who acknowledged.
        user: Ulid,
    },
    /// Each of `ids` was committed in `channel`, in this order, with `acks` (`CH_MSG_COMMIT`).
    Commits {
        /// The channel.
        channel: Ulid,
        /// The acks of every commit in the batch.
        acks: Vec<Ulid>,
    },
}

/// Several messages' acks or commits, in order (at least one).
#[derive(Debug)]
pub struct Batch {
    kind: BatchKind,
    ids: Vec<Ulid>,
    batched: OnceLock<Outbound>,
    singles: OnceLock<Vec<Outbound>>,
}

impl Batch {
    /// A batch of `ids` (in order); `None` when `ids` is empty.
    pub fn new(kind: BatchKind, ids: Vec<Ulid>) -> Option<Batch> {
        (!ids.is_empty()).then(|| Batch { kind, ids, batched: OnceLock::new(), singles: OnceLock::new() })
    }

    /// The message ids, in order.
    pub fn ids(&self) -> &[Ulid] {
        &self.ids
    }

    /// What it reports.
    pub fn kind(&self) -> &BatchKind {
        &self.kind
    }

    fn frame(&self, first: Ulid, rest: Vec<Ulid>) -> Outbound {
        match &self.kind {
            BatchKind::Acks { user } => {
                Outbound::event(&ChMsgAck { id: first, user: *user, users: Vec::new(), ids: rest })
            }
            BatchKind::Commits { channel, acks } => {
                Outbound::event(&ChMsgCommit { id: first, channel: *channel, acks: acks.clone(), ids: rest })
            }
        }
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
        self.kind == other.kind && self.ids == other.ids
    }
}

impl Eq for Batch {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ServerEvent;

    #[test]
    fn both_forms_report_the_same_messages() {
        let ids: Vec<Ulid> = (1..=3u128).map(Ulid::from).collect();
        let user = Ulid::from(9u128);
        let batch = Batch::new(BatchKind::Acks { user }, ids.clone()).expect("not empty");
        let one = batch.batched();
        let Ok(ServerEvent::ChMsgAck(a)) = ServerEvent::decode(one.command, &one.payload) else {
            panic!("not a CH_MSG_ACK")
        };
        assert_eq!((a.id, a.user, a.ids.as_slice()), (ids[0], user, &ids[1..]));
        let singles: Vec<Ulid> = batch
            .singles()
            .iter()
            .map(|f| match ServerEvent::decode(f.command, &f.payload) {
                Ok(ServerEvent::ChMsgAck(a)) if a.ids.is_empty() && a.user == user => a.id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(singles, ids);
        assert!(Batch::new(BatchKind::Acks { user }, Vec::new()).is_none());
    }
}
