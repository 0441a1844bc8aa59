//! A connection's outbound side as the hub sees it: the bounded queue of
//! frames for its writer, its close signal and the MAC its frames are signed
//! with.
//!
//! The hub offers frames and closes; the connection's writer takes them and
//! encodes them (`ConnHandle::encode`). Offering never waits: a queue over
//! its frame or byte bound refuses the frame (a slow consumer), and the
//! caller decides what that means. This module must not do I/O or know about
//! the relay.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use prometheus::IntGauge;

use crate::fanout::RunTag;
use crate::metrics::Metrics;
use sigil_proto::event::{ErrPayload, Event};
use sigil_proto::wire::{encode_frame, FrameMac, OutFrame};
use sigil_proto::{Outbound, ServerEvent};

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Write what is queued, then the last frame.
    Flush,
    /// Drop what is queued (the peer is not reading); try the last frame only.
    Abort,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    /// The queue is over its frame or byte bound: a slow consumer.
    Full,
    /// The connection is closing.
    Closed,
}

/// Frames waiting for the writer. A plain deque rather than a channel: it
/// gives its memory back once drained (an idle session should cost almost
/// nothing after a burst), and the writer takes a whole batch under one lock.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Queued>,
    /// Payload bytes of `frames`.
    bytes: usize,
    /// The writer is gone: nothing more is accepted.
    closed: bool,
}

/// A frame waiting for the writer, with its place in a fan-out run when the
/// hub grouped it with the same frame for other sessions (signed together).
#[derive(Debug)]
pub(crate) struct Queued {
    frame: Outbound,
    run: Option<RunTag>,
}

/// Frames a drained queue may keep room for: none, an idle session's memory
/// counts more than an allocation per burst.
pub(crate) const KEEP_FRAMES: usize = 0;

/// The shared side of a connection: its queue, its close signal, its MAC.
#[derive(Debug)]
pub struct ConnHandle {
    queue: Mutex<Queue>,
    /// Wakes the writer when a frame is queued.
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
    closing: CancellationToken,
    last: Mutex<Option<(Option<Outbound>, CloseMode)>>,
    /// The MAC the session verified CNN with, until the relay accepts it.
    pending_mac: Mutex<Option<Arc<FrameMac>>>,
    /// The MAC outbound frames are signed with, once the session is accepted.
    mac: OnceLock<Arc<FrameMac>>,
    /// What this connection counts into.
    metrics: Arc<Metrics>,
    /// The sessions gauge of its transport: counted from acceptance to drop.
    sessions: IntGauge,
}

impl ConnHandle {
    /// A handle whose queue holds at most `max_frames` frames and
    /// `max_bytes` payload bytes, counting into metrics of its own.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self::counted(max_frames, max_bytes, Arc::new(Metrics::new()), "stream")
    }

    /// The same, counting into `metrics` as a connection over `transport`.
    pub fn counted(max_frames: usize, max_bytes: usize, metrics: Arc<Metrics>, transport: &'static str) -> Self {
        Self {
            sessions: metrics.sessions(transport),
            metrics,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            max_frames,
            max_bytes,
            closing: CancellationToken::new(),
            last: Mutex::new(None),
            pending_mac: Mutex::new(None),
            mac: OnceLock::new(),
        }
    }

    /// The MAC this connection's frames are signed with, once its session was accepted.
    pub fn mac(&self) -> Option<&Arc<FrameMac>> {
        self.mac.get()
    }

    /// Queues a frame without waiting; `run` is its place in a fan-out run
    /// when the hub grouped it (else the writer signs it alone).
    pub fn offer(&self, frame: Outbound, run: Option<RunTag>) -> Result<(), OfferError> {
        let len = frame.payload.len();
        {
            let Ok(mut q) = self.queue.lock() else { return Err(OfferError::Closed) };
            if q.closed {
                return Err(OfferError::Closed);
            }
            if q.frames.len() >= self.max_frames || q.bytes.saturating_add(len) > self.max_bytes {
                return Err(OfferError::Full);
            }
            q.bytes += len;
            q.frames.push_back(Queued { frame, run });
        }
        self.metrics.queued_bytes.add(gauge_value(len));
        self.ready.notify_one();
        Ok(())
    }

    /// Moves queued frames into `batch` until their payloads pass `limit`
    /// bytes (at least one frame), so what the writer holds stays bounded too.
    pub(crate) fn take(&self, batch: &mut VecDeque<Queued>, limit: usize) {
        let Ok(mut q) = self.queue.lock() else { return };
        let mut taken = 0;
        while taken < limit {
            let Some(queued) = q.frames.pop_front() else { break };
            taken += queued.frame.payload.len();
            batch.push_back(queued);
        }
        let taken = taken.min(q.bytes);
        q.bytes -= taken;
        self.metrics.queued_bytes.sub(gauge_value(taken));
        if q.frames.is_empty() && q.frames.capacity() > KEEP_FRAMES {
            q.frames = VecDeque::new();
        }
    }

    /// The writer stops: refuses further frames and returns what is queued.
    pub(crate) fn shut(&self) -> VecDeque<Queued> {
        let Ok(mut q) = self.queue.lock() else { return VecDeque::new() };
        q.closed = true;
        self.metrics.queued_bytes.sub(gauge_value(q.bytes));
        q.bytes = 0;
        std::mem::take(&mut q.frames)
    }

    /// Closes the connection, once: later calls are ignored.
    pub fn close(&self, last: Option<Outbound>, mode: CloseMode) {
        if let Ok(mut slot) = self.last.lock() {
            if slot.is_none() && !self.closing.is_cancelled() {
                *slot = Some((last, mode));
            }
        }
        self.closing.cancel();
    }

    /// Resolves once the connection is closing.
    pub(crate) async fn closing(&self) {
        self.closing.cancelled().await
    }

    /// Resolves when a frame may have been queued since the writer last looked.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }

    /// The session verified CNN with `mac`; frames are signed with it once
    /// the relay accepts the session ([`ConnHandle::accept_mac`]).
    pub(crate) fn set_pending_mac(&self, mac: Arc<FrameMac>) {
        if let Ok(mut slot) = self.pending_mac.lock() {
            *slot = Some(mac);
        }
    }

    /// The relay accepted the session: sign from now on.
    pub fn accept_mac(&self) {
        if let Some(mac) = self.pending_mac.lock().ok().and_then(|mut m| m.take()) {
            if self.mac.set(mac).is_ok() {
                self.sessions.inc();
            }
        }
    }

    /// The last frame and how to close, once closing (taken once).
    pub(crate) fn take_close(&self) -> (Option<Outbound>, CloseMode) {
        self.last.lock().ok().and_then(|mut s| s.take()).unwrap_or((None, CloseMode::Flush))
    }

    /// Appends a queued frame to `buf`, signed for this connection when it
    /// is a signed frame and the session was accepted.
    pub(crate) fn encode_queued(&self, queued: &Queued, buf: &mut BytesMut) {
        self.encode(&queued.frame, queued.run.as_ref(), buf);
    }

    /// Appends `frame` to `buf`, signed for this connection when it is a
    /// signed frame and the session was accepted; with the run's tag when it
    /// has one (signing the run if no other writer has yet).
    pub(crate) fn encode(&self, frame: &Outbound, run: Option<&RunTag>, buf: &mut BytesMut) {
        let tag = match (frame.signed, self.mac.get()) {
            (true, Some(mac)) => {
                Some(run.and_then(RunTag::tag).unwrap_or_else(|| mac.sign(frame.command.as_bytes(), &frame.payload)))
            }
            _ => None,
        };
        encode_frame(&OutFrame { command: frame.command, signature: tag.as_ref(), payload: &frame.payload }, buf);
        self.metrics.frame_sent(frame.command);
        if frame.command == ErrPayload::COMMAND {
            // Rare: read the code back rather than carry it beside every frame.
            if let Ok(ServerEvent::Err(err)) = ServerEvent::decode(frame.command, &frame.payload) {
                self.metrics.error_sent(&err.code);
            }
        }
    }

    /// The metrics this connection counts into.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        // The last holder let go: the session (if it was one) is over.
        if self.mac.get().is_some() {
            self.sessions.dec();
        }
    }
}

/// A byte count as a gauge step.
fn gauge_value(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(len: usize) -> Outbound {
        Outbound { command: "CH_MSG", payload: Bytes::from(vec![0x90; len]), signed: true }
    }

    #[test]
    fn offers_are_bounded_by_frames_and_bytes() {
        let h = ConnHandle::new(2, 10);
        assert_eq!(h.offer(frame(4), None), Ok(()));
        assert_eq!(h.offer(frame(7), None), Err(OfferError::Full), "over the byte bound");
        assert_eq!(h.offer(frame(6), None), Ok(()));
        assert_eq!(h.offer(frame(0), None), Err(OfferError::Full), "over the frame bound");
        let mut batch = VecDeque::new();
        h.take(&mut batch, 1);
        assert_eq!(batch.len(), 1, "at least one frame, up to the limit");
        assert_eq!(h.offer(frame(4), None), Ok(()));
        assert_eq!(h.shut().len(), 2);
        assert_eq!(h.offer(frame(1), None), Err(OfferError::Closed));
    }

    #[test]
    fn frames_are_signed_only_once_the_session_is_accepted() {
        let key = sigil_proto::wire::SecretKey::generate();
        let mac = Arc::new(FrameMac::new(&key));
        let h = ConnHandle::new(4, 100);
        let f = frame(3);
        let mut unsigned = BytesMut::new();
        h.encode(&f, None, &mut unsigned);
        assert!(unsigned.starts_with(b"CH_MSG\n3\n\n"));
        h.set_pending_mac(mac.clone());
        let mut still = BytesMut::new();
        h.encode(&f, None, &mut still);
        assert_eq!(still, unsigned, "a pending MAC does not sign");
        h.accept_mac();
        let mut signed = BytesMut::new();
        h.encode(&f, None, &mut signed);
        let mut expected = BytesMut::new();
        let tag = mac.sign(b"CH_MSG", &f.payload);
        encode_frame(&OutFrame { command: "CH_MSG", signature: Some(&tag), payload: &f.payload }, &mut expected);
        assert_eq!(signed, expected);
    }
}
