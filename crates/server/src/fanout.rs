//! Fan-out signing: one signed frame sent to many sessions is signed for all
//! of them together, by whichever writer needs a tag first.
//!
//! The hub groups each run of consecutive sends of one signed frame into
//! [`SignedRun`]s and queues, with each recipient's frame, a [`RunTag`]: its
//! run and its place in it. It does no signing itself, so the one task every
//! session waits on stays free for routing. The first writer that encodes a
//! frame of a run computes every tag of the run at once with the multi-lane
//! MAC ([`sign_many`]); the others take theirs. This module must not queue,
//! send or decide who receives what: it only signs what the hub grouped.
//!
//! A run holds at most [`RUN_CHUNK`] recipients; a longer fan-out is cut into
//! several. A queued frame keeps its run's tags alive until it is written, so
//! a slow consumer's full queue would otherwise pin a whole fan-out's tags
//! per frame (thousands of tags each); and the signing of a big fan-out is
//! spread over the first writer of each run instead of falling on one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sigil_core::{ConnId, Effect};
use sigil_proto::wire::{sign_many, FrameMac, TAG_LEN};
use sigil_proto::Outbound;

/// Recipients in one [`SignedRun`] at most: one group of the widest
/// multi-lane MAC (8 lanes; two groups of 4 on narrower CPUs). A queued frame
/// pins at most this many tags.
pub const RUN_CHUNK: usize = 8;

/// One signed frame for up to [`RUN_CHUNK`] accepted sessions, and their tags once signed.
#[derive(Debug)]
pub struct SignedRun {
    command: &'static str,
    payload: Bytes,
    /// The recipients' MACs, in the order the relay addressed them.
    macs: Vec<Arc<FrameMac>>,
    /// Every recipient's tag, computed by the first writer that needs one.
    tags: OnceLock<Vec<[u8; TAG_LEN]>>,
    /// A writer has taken on signing the run.
    claimed: AtomicBool,
}

impl SignedRun {
    /// A run of `frame` for the sessions keyed with `macs`, not signed yet.
    pub fn new(frame: &Outbound, macs: Vec<Arc<FrameMac>>) -> Self {
        Self {
            command: frame.command,
            payload: frame.payload.clone(),
            macs,
            tags: OnceLock::new(),
            claimed: AtomicBool::new(false),
        }
    }

    /// How many recipients the run signs for.
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// Whether the run has no recipient.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// The tag of recipient `index` (`None` past the run's end). The first
    /// writer to ask signs the whole run; one that asks while another signs
    /// signs its own tag alone rather than wait, so no worker thread ever
    /// blocks on another's signing.
    pub fn tag(&self, index: usize) -> Option<[u8; TAG_LEN]> {
        if let Some(tags) = self.tags.get() {
            return tags.get(index).copied();
        }
        if !self.claimed.swap(true, Ordering::AcqRel) {
            let macs: Vec<&FrameMac> = self.macs.iter().map(|m| &**m).collect();
            let mut tags = Vec::with_capacity(macs.len());
            sign_many(&macs, self.command.as_bytes(), &self.payload, &mut tags);
            let tag = tags.get(index).copied();
            let _ = self.tags.set(tags);
            return tag;
        }
        self.macs.get(index).map(|mac| mac.sign(self.command.as_bytes(), &self.payload))
    }
}

/// A queued frame's place in a [`SignedRun`].
#[derive(Debug, Clone)]
pub struct RunTag {
    run: Arc<SignedRun>,
    index: usize,
}

impl RunTag {
    /// The tag of this recipient (always `Some` for a place [`group_runs`] gave).
    pub fn tag(&self) -> Option<[u8; TAG_LEN]> {
        self.run.tag(self.index)
    }
}

/// Groups fan-out: for each run of two or more consecutive sends of one
/// signed frame (same command, same payload bytes), the recipients that have
/// a MAC (`mac_of`: accepted sessions) share [`SignedRun`]s of up to
/// [`RUN_CHUNK`], in the relay's order. `out[i]` is the run place of
/// `effects[i]`, or `None` where the writer signs alone (single frames,
/// sessions not accepted yet, other effects).
pub fn group_runs(effects: &[Effect], mac_of: impl Fn(ConnId) -> Option<Arc<FrameMac>>, out: &mut Vec<Option<RunTag>>) {
    out.clear();
    out.resize(effects.len(), None);
    // The relay clones one `Outbound` per recipient: the same payload buffer.
    let same = |a: &Outbound, b: &Outbound| {
        a.command == b.command && a.payload.as_ptr() == b.payload.as_ptr() && a.payload.len() == b.payload.len()
    };
    let mut chunk = Chunk::default();
    let mut start = 0;
    while start < effects.len() {
        let Effect::Send { frame: first, .. } = &effects[start] else {
            start += 1;
            continue;
        };
        let run = effects[start..]
            .iter()
            .take_while(|e| matches!(e, Effect::Send { frame, .. } if frame.signed && same(frame, first)))
            .count();
        if run >= 2 {
            for (i, effect) in effects.iter().enumerate().skip(start).take(run) {
                if let Effect::Send { conn, .. } = effect {
                    if let Some(mac) = mac_of(*conn) {
                        chunk.at.push(i);
                        chunk.macs.push(mac);
                        if chunk.macs.len() == RUN_CHUNK {
                            chunk.seal(first, out);
                        }
                    }
                }
            }
            chunk.seal(first, out);
        }
        start += run.max(1);
    }
}

/// The recipients gathered for the next [`SignedRun`].
#[derive(Default)]
struct Chunk {
    /// Their effects' indices.
    at: Vec<usize>,
    macs: Vec<Arc<FrameMac>>,
}

impl Chunk {
    /// Makes the gathered recipients a run of `frame` and gives each its place.
    fn seal(&mut self, frame: &Outbound, out: &mut [Option<RunTag>]) {
        if self.macs.is_empty() {
            return;
        }
        let run = Arc::new(SignedRun::new(frame, std::mem::take(&mut self.macs)));
        for (index, i) in self.at.drain(..).enumerate() {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(RunTag { run: run.clone(), index });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::wire::SecretKey;
    use std::collections::HashMap;

    fn send(conn: u64, frame: &Outbound) -> Effect {
        Effect::Send { conn: ConnId(conn), frame: frame.clone() }
    }

    fn frame(command: &'static str, payload: &'static [u8]) -> Outbound {
        Outbound { command, payload: Bytes::from_static(payload), signed: true }
    }

    #[test]
    fn run_tags_equal_each_recipients_own_signature() {
        let n = 2 * RUN_CHUNK + 3;
        let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate()).collect();
        let macs: HashMap<ConnId, Arc<FrameMac>> =
            keys.iter().enumerate().map(|(i, k)| (ConnId(i as u64), Arc::new(FrameMac::new(k)))).collect();
        let f = frame("CH_MSG", b"\x81\xa1a\x01");
        let effects: Vec<Effect> = (0..n as u64).map(|i| send(i, &f)).collect();
        let mut out = Vec::new();
        group_runs(&effects, |c| macs.get(&c).cloned(), &mut out);
        assert_eq!(out.len(), n);
        for (i, place) in out.iter().enumerate() {
            let place = place.as_ref().expect("every recipient is in a run");
            // Cut into runs of RUN_CHUNK, in order.
            assert_eq!(place.index, i % RUN_CHUNK);
            assert_eq!(place.run.len(), if i < 2 * RUN_CHUNK { RUN_CHUNK } else { 3 });
            let own = FrameMac::new(&keys[i]).sign(f.command.as_bytes(), &f.payload);
            assert_eq!(place.tag(), Some(own), "recipient {i}");
        }
        // A run is signed once and shared by its recipients.
        let first = out[0].as_ref().expect("in a run");
        assert!(out[..RUN_CHUNK].iter().flatten().all(|p| Arc::ptr_eq(&p.run, &first.run)));
        assert!(!Arc::ptr_eq(&first.run, &out[RUN_CHUNK].as_ref().expect("in a run").run));
        assert!(first.run.tags.get().is_some());
    }

    #[test]
    fn sessions_not_accepted_and_single_frames_are_left_to_the_writer() {
        let key = SecretKey::generate();
        let mac = Arc::new(FrameMac::new(&key));
        let f = frame("USR_ADD", b"\x90");
        let g = frame("CH_MSG", b"\x91");
        // conn 1 has no MAC yet (its CNN is not accepted); conns 0 and 2 do.
        let mac_of = |c: ConnId| (c.0 != 1).then(|| mac.clone());
        let effects = vec![
            send(0, &f),
            send(1, &f),
            send(2, &f),
            send(0, &g), // a run of one
            Effect::Close { conn: ConnId(0), last: None },
            send(2, &f), // same frame, but not in the run above
        ];
        let mut out = Vec::new();
        group_runs(&effects, mac_of, &mut out);
        assert_eq!(out.len(), effects.len());
        let own = mac.sign(f.command.as_bytes(), &f.payload);
        assert_eq!(out[0].as_ref().and_then(RunTag::tag), Some(own));
        assert!(out[1].is_none(), "a session not accepted yet is signed (or not) by its writer, as before");
        assert_eq!(out[2].as_ref().and_then(RunTag::tag), Some(own));
        assert_eq!(out[0].as_ref().map(|p| p.run.len()), Some(2));
        assert!(out[3..].iter().all(Option::is_none));
    }

    #[test]
    fn unsigned_frames_and_runs_without_accepted_sessions_get_no_run() {
        let f = frame("SINFO", b"\x80").unsigned();
        let effects = vec![send(0, &f), send(1, &f)];
        let mut out = Vec::new();
        group_runs(&effects, |_| Some(Arc::new(FrameMac::new(&SecretKey::generate()))), &mut out);
        assert!(out.iter().all(Option::is_none));
        let g = frame("CH_MSG", b"\x80");
        let effects = vec![send(0, &g), send(1, &g)];
        group_runs(&effects, |_| None, &mut out);
        assert!(out.iter().all(Option::is_none));
    }

    #[test]
    fn concurrent_writers_share_one_signing() {
        let keys: Vec<SecretKey> = (0..16).map(|_| SecretKey::generate()).collect();
        let f = frame("CH_MSG", b"\x81\xa1b\x02");
        let run = Arc::new(SignedRun::new(&f, keys.iter().map(|k| Arc::new(FrameMac::new(k))).collect()));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let run = run.clone();
                std::thread::spawn(move || (i, run.tag(i)))
            })
            .collect();
        for t in threads {
            let (i, tag) = t.join().expect("signer thread");
            assert_eq!(tag, Some(FrameMac::new(&keys[i]).sign(f.command.as_bytes(), &f.payload)));
        }
        assert_eq!(run.tag(16), None);
    }
}
