//! Gathering channel acks across frames (PROTOCOL.md §7.4, §7.9).
//!
//! A channel reports each recorded ack as a note for its leader and its
//! sender. The relay gathers the notes of consecutive `ACK_CH_MSG` frames and
//! sends them on [`Input::Flush`](super::Input::Flush) (or before any other
//! input, so nothing overtakes them): a batching session gets one
//! `CH_MSG_ACK {id, ids, user, users}` per set of messages with the same
//! ackers, any other session one `CH_MSG_ACK {id, user}` per ack.

use std::collections::HashMap;

use sigil_proto::event::{ChMsgAck, Outbound};
use ulid::Ulid;

use super::types::ConnId;
use crate::channel::ids_per_frame;

/// Acks gathered before they are sent even without [`Input::Flush`](super::Input::Flush).
pub(super) const MAX_GATHERED_ACKS: usize = 65_536;

/// A message and the users whose acks of it are gathered.
type AckedBy = (Ulid, Vec<Ulid>);

/// Acks to tell, in the order they were recorded.
#[derive(Debug, Default)]
pub(super) struct AckGatherer {
    /// (to, msg_id, acker).
    notes: Vec<(ConnId, Ulid, Ulid)>,
}

impl AckGatherer {
    /// Gathers one ack for `to`; true when the gatherer is full and must be flushed.
    pub(super) fn note(&mut self, to: ConnId, msg_id: Ulid, user: Ulid) -> bool {
        self.notes.push((to, msg_id, user));
        self.notes.len() >= MAX_GATHERED_ACKS
    }

    /// True when acks wait to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// Turns the gathered acks into frames, per connection: `alive` says
    /// whether a connection is still a session, `batching` whether it takes
    /// batched frames.
    pub(super) fn flush(
        &mut self,
        max_payload: usize,
        alive: impl Fn(ConnId) -> bool,
        batching: impl Fn(ConnId) -> bool,
    ) -> Vec<(ConnId, Outbound)> {
        let mut frames = Vec::new();
        if self.notes.is_empty() {
            return frames;
        }
        // Per connection, in order of first appearance: message → its ackers
        // (indexed: a round of acks is every member times every message).
        // The hash maps only find an entry's place in these vectors; frames
        // are made from the vectors, in the order the acks were recorded.
        let mut per_conn: Vec<(ConnId, Vec<AckedBy>)> = Vec::new();
        let mut conn_at: HashMap<ConnId, usize> = HashMap::new();
        let mut index: HashMap<(ConnId, Ulid), usize> = HashMap::new();
        for (conn, msg_id, user) in std::mem::take(&mut self.notes) {
            if !alive(conn) {
                continue;
            }
            if !batching(conn) {
                let frame = Outbound::event(&ChMsgAck { id: msg_id, user, users: Vec::new(), ids: Vec::new() });
                frames.push((conn, frame));
                continue;
            }
            let at = *conn_at.entry(conn).or_insert_with(|| {
                per_conn.push((conn, Vec::new()));
                per_conn.len() - 1
            });
            let msgs = &mut per_conn[at].1;
            match index.get(&(conn, msg_id)) {
                Some(&i) => msgs[i].1.push(user),
                None => {
                    index.insert((conn, msg_id), msgs.len());
                    msgs.push((msg_id, vec![user]));
                }
            }
        }
        for (conn, msgs) in per_conn {
            // Messages with the same set of ackers share a frame (groups in
            // order of their first message; `group_of` is only an index).
            let mut groups: Vec<(Vec<Ulid>, Vec<Ulid>)> = Vec::new();
            let mut group_of: HashMap<Vec<Ulid>, usize> = HashMap::new();
            for (msg_id, mut users) in msgs {
                users.sort_unstable();
                users.dedup();
                match group_of.get(&users) {
                    Some(&g) => groups[g].1.push(msg_id),
                    None => {
                        group_of.insert(users.clone(), groups.len());
                        groups.push((users, vec![msg_id]));
                    }
                }
            }
            for (users, ids) in groups {
                for chunk in ids.chunks(ids_per_frame(max_payload, users.len())) {
                    let frame = Outbound::event(&ChMsgAck {
                        id: chunk[0],
                        user: users[0],
                        users: users[1..].to_vec(),
                        ids: chunk[1..].to_vec(),
                    });
                    frames.push((conn, frame));
                }
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(frame: &Outbound) -> ChMsgAck {
        rmp_serde::from_slice(&frame.payload).expect("CH_MSG_ACK")
    }

    #[test]
    fn a_batching_session_gets_one_frame_per_set_of_ackers_and_others_one_per_ack() {
        let (m1, m2, m3) = (Ulid::from(11u128), Ulid::from(12u128), Ulid::from(13u128));
        let (u, v) = (Ulid::from(1u128), Ulid::from(2u128));
        let (batcher, plain, gone) = (ConnId(1), ConnId(2), ConnId(3));
        let mut g = AckGatherer::default();
        for (m, who) in [(m1, v), (m1, u), (m2, u), (m2, v), (m3, u)] {
            assert!(!g.note(batcher, m, who));
            g.note(plain, m, who);
            g.note(gone, m, who);
        }
        let frames = g.flush(65_536, |c| c != gone, |c| c == batcher);
        assert!(g.is_empty());
        let to_batcher: Vec<ChMsgAck> = frames.iter().filter(|(c, _)| *c == batcher).map(|(_, f)| decode(f)).collect();
        // m1 and m2 were acked by {u, v} in either order: one frame; m3 by u alone: another.
        assert_eq!(to_batcher.len(), 2, "{to_batcher:?}");
        assert_eq!(
            (to_batcher[0].id, &to_batcher[0].ids, to_batcher[0].user, &to_batcher[0].users),
            (m1, &vec![m2], u, &vec![v])
        );
        assert_eq!((to_batcher[1].id, to_batcher[1].user), (m3, u));
        assert_eq!(frames.iter().filter(|(c, _)| *c == plain).count(), 5, "one per ack, in order");
        assert!(frames.iter().all(|(c, _)| *c != gone), "a closed session gets nothing");
    }
}
