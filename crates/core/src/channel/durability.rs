//! Store writes and what waits on them: the channel appends to its history
//! at once, but tells members of a commit or merge only when the store
//! reports the append durable, so a crash never unsays an announcement.

use std::collections::BTreeMap;
use std::sync::Arc;

use ulid::Ulid;

use super::sizes::ids_per_frame;
use super::{Channel, ChannelEffect};
use crate::batch::Batch;
use sigil_proto::event::{ChAppend, HistoryEntry, Outbound};

/// A write the store must make. Appends and election numbers are reported
/// back with [`Channel::stored`] once durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// A new channel with its first member.
    CreateChannel {
        /// The channel.
        id: Ulid,
        /// Its name.
        name: String,
        /// Its creator, the first member.
        creator: Ulid,
        /// Creation time.
        created_at: u64,
    },
    /// A member joined.
    AddMember {
        /// The channel.
        channel: Ulid,
        /// The member.
        user: Ulid,
    },
    /// A member left.
    RemoveMember {
        /// The channel.
        channel: Ulid,
        /// The member.
        user: Ulid,
    },
    /// A new election number.
    SetElection {
        /// The channel.
        channel: Ulid,
        /// The number.
        election: u64,
    },
    /// A committed message at position `seq` (1-based, gapless).
    Append {
        /// The channel.
        channel: Ulid,
        /// Its position in commit order.
        seq: u64,
        /// The message.
        entry: HistoryEntry,
    },
}

/// What a batch of writes made durable, per channel: its highest history
/// position and election number (0 where the batch has none), as the store
/// reports them back with `Input::Stored`.
pub fn durable_marks<'a>(ops: impl IntoIterator<Item = &'a StoreOp>) -> BTreeMap<Ulid, (u64, u64)> {
    let mut marks: BTreeMap<Ulid, (u64, u64)> = BTreeMap::new();
    for op in ops {
        match *op {
            StoreOp::Append { channel, seq, .. } => {
                let m = marks.entry(channel).or_default();
                m.0 = m.0.max(seq);
            }
            StoreOp::SetElection { channel, election } => {
                let m = marks.entry(channel).or_default();
                m.1 = m.1.max(election);
            }
            _ => {}
        }
    }
    marks
}

/// An announcement waiting for its append to be durable.
#[derive(Debug, Clone)]
pub(super) enum Announcement {
    Commit { msg_id: Ulid, acks: Vec<Ulid> },
    Merged { anchor: Option<Ulid>, entry: HistoryEntry },
}

impl Channel {
    /// Puts `entry` at the next position and writes it; `announce` goes out
    /// once the store reports that position durable.
    pub(super) fn append(&mut self, entry: HistoryEntry, announce: Announcement, out: &mut Vec<ChannelEffect>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.committed.insert(entry.id, seq);
        self.last_committed = Some(entry.id);
        self.unannounced.insert(seq, announce);
        out.push(ChannelEffect::Store(StoreOp::Append { channel: self.id, seq, entry }));
    }

    /// The store made every append up to `seq` and the election number
    /// `election` durable: announce the commits, start the election.
    pub fn stored(&mut self, seq: u64, election: u64, out: &mut Vec<ChannelEffect>) {
        self.start_ballot(election, out);
        // Consecutive commits with the same acks go out as one batch (PROTOCOL.md §7.9).
        let mut run: Option<(Vec<Ulid>, Vec<Ulid>)> = None;
        while let Some(entry) = self.unannounced.first_entry() {
            if *entry.key() > seq {
                break;
            }
            match entry.remove() {
                Announcement::Commit { msg_id, acks } => match &mut run {
                    Some((a, ids)) if *a == acks && ids.len() < ids_per_frame(self.limits.max_payload, a.len()) => {
                        ids.push(msg_id)
                    }
                    _ => {
                        if let Some(done) = run.replace((acks, vec![msg_id])) {
                            self.announce_commits(done, out);
                        }
                    }
                },
                Announcement::Merged { anchor, entry } => {
                    if let Some(done) = run.take() {
                        self.announce_commits(done, out);
                    }
                    let frame = Outbound::event(&ChAppend { id: self.id, anchor, messages: vec![entry], more: false });
                    self.to_online(&frame, out);
                }
            }
        }
        if let Some(done) = run {
            self.announce_commits(done, out);
        }
    }

    /// `CH_MSG_COMMIT` of consecutive commits sharing `acks`, to every online member.
    fn announce_commits(&self, (acks, ids): (Vec<Ulid>, Vec<Ulid>), out: &mut Vec<ChannelEffect>) {
        let Some(batch) = Batch::new(self.id, acks, ids) else { return };
        if batch.ids().len() == 1 {
            return self.to_online(batch.batched(), out);
        }
        let batch = Arc::new(batch);
        for &to in &self.online {
            out.push(ChannelEffect::SendBatch { to, batch: batch.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u128) -> HistoryEntry {
        HistoryEntry {
            id: Ulid::from(id),
            from: Ulid::from(1u128),
            msg: sigil_proto::Body::text("x"),
            timestamp: 0,
            acks: Vec::new(),
        }
    }

    #[test]
    fn durable_marks_keep_the_highest_position_and_election_per_channel() {
        let (a, b) = (Ulid::from(10u128), Ulid::from(20u128));
        let ops = [
            StoreOp::Append { channel: a, seq: 3, entry: entry(100) },
            StoreOp::SetElection { channel: b, election: 7 },
            StoreOp::Append { channel: a, seq: 2, entry: entry(101) },
            StoreOp::AddMember { channel: b, user: a },
            StoreOp::SetElection { channel: a, election: 4 },
            StoreOp::SetElection { channel: b, election: 5 },
        ];
        assert_eq!(durable_marks(&ops), BTreeMap::from([(a, (3, 4)), (b, (0, 7))]));
    }

    #[test]
    fn membership_writes_mark_nothing_durable() {
        let c = Ulid::from(10u128);
        let ops = [
            StoreOp::CreateChannel { id: c, name: "c".into(), creator: c, created_at: 0 },
            StoreOp::RemoveMember { channel: c, user: c },
        ];
        assert!(durable_marks(&ops).is_empty());
    }
}
