//! One TCP connection: a reader task and a writer task around a bounded queue.
//!
//! The reader decodes frames, runs the connection's [`Session`] and forwards
//! what it means to the hub; it owns the CNN and idle timers. Every close the
//! reader decides on (end of stream, a fatal error, a timeout) also goes
//! through the hub, so it takes effect after the replies to the frames read
//! before it. The writer signs each frame with the recipient's pre-keyed MAC
//! and coalesces what is queued into one write. The hub never waits on a
//! connection: a queue over its frame or byte bound is a slow consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use super::hub::HubMsg;
use super::{now_unix, Shared, MAX_PAYLOAD_BEFORE_AUTH};
use sigil_core::rate::{TokenBucket, Verdict};
use sigil_core::{ConnId, Input, Session, SessionOutput};
use sigil_proto::wire::{encode_frame, FrameCodec, FrameError, FrameMac, OutFrame, TAG_LEN};
use sigil_proto::{ErrorCode, Outbound, ProtoError};

/// Bytes gathered before a write is issued.
const WRITE_BATCH: usize = 64 * 1024;
/// Read buffer taken when a connection's socket has bytes (and given back
/// once they are all read: most connections are idle most of the time, and
/// their memory is what counts). Frames are small; a bigger one grows it.
const READ_BUFFER: usize = 512;
/// How long a closing connection may take to flush its last frames, and how
/// long its unread input is drained so the kernel does not reset the socket
/// (and destroy the final `ERR`) on close.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

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

/// A frame waiting for the writer, with its tag when the hub computed it
/// (one frame for many recipients is signed for all of them at once).
#[derive(Debug)]
struct Queued {
    frame: Outbound,
    tag: Option<[u8; TAG_LEN]>,
}

/// Frames a drained queue may keep room for: none, an idle session's memory
/// counts more than an allocation per burst.
const KEEP_FRAMES: usize = 0;

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
}

impl ConnHandle {
    fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
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
    pub fn mac(&self) -> Option<&FrameMac> {
        self.mac.get().map(|m| &**m)
    }

    /// Queues a frame without waiting; `tag` is its tag for this connection
    /// when the caller already computed it (else the writer signs it).
    pub fn offer(&self, frame: Outbound, tag: Option<[u8; TAG_LEN]>) -> Result<(), OfferError> {
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
            q.frames.push_back(Queued { frame, tag });
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Moves queued frames into `batch` until their payloads pass `limit`
    /// bytes (at least one frame), so what the writer holds stays bounded too.
    fn take(&self, batch: &mut VecDeque<Queued>, limit: usize) {
        let Ok(mut q) = self.queue.lock() else { return };
        let mut taken = 0;
        while taken < limit {
            let Some(queued) = q.frames.pop_front() else { break };
            taken += queued.frame.payload.len();
            batch.push_back(queued);
        }
        q.bytes -= taken.min(q.bytes);
        if q.frames.is_empty() && q.frames.capacity() > KEEP_FRAMES {
            q.frames = VecDeque::new();
        }
    }

    /// The writer stops: refuses further frames and returns what is queued.
    fn shut(&self) -> VecDeque<Queued> {
        let Ok(mut q) = self.queue.lock() else { return VecDeque::new() };
        q.closed = true;
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

    /// The relay accepted the session: sign from now on.
    pub fn accept_mac(&self) {
        if let Some(mac) = self.pending_mac.lock().ok().and_then(|mut m| m.take()) {
            let _ = self.mac.set(mac);
        }
    }

    fn take_close(&self) -> (Option<Outbound>, CloseMode) {
        self.last.lock().ok().and_then(|mut s| s.take()).unwrap_or((None, CloseMode::Flush))
    }
}

/// The read half, with a deadline for the frame being received: armed by the
/// frame's first byte, disarmed by the reader when the frame is complete.
/// Past it, reading fails with `TimedOut`, so a peer that trickles a frame in
/// byte by byte (slowloris) cannot hold the connection for long.
struct FrameDeadline {
    inner: OwnedReadHalf,
    limit: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl FrameDeadline {
    /// The reader is ready for the next frame; `more` is true when bytes of
    /// it are already buffered (its deadline starts now, else at its first byte).
    fn frame_done(&mut self, more: bool) {
        self.deadline = more.then(|| Box::pin(tokio::time::sleep(self.limit)));
    }
}

impl AsyncRead for FrameDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
        }
        let before = buf.filled().len();
        let limit = self.limit;
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.deadline.is_none() && buf.filled().len() > before {
            let mut sleep = Box::pin(tokio::time::sleep(limit));
            // Registers the waker, so the task wakes at the deadline.
            let _ = sleep.as_mut().poll(cx);
            self.deadline = Some(sleep);
        }
        result
    }
}

/// Starts the tasks of an accepted connection.
pub(super) async fn spawn(
    shared: Arc<Shared>,
    conn: ConnId,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: super::ConnSlot,
) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let max_bytes = shared.config.outbound_bytes.max(shared.config.limits.max_payload);
    let handle = Arc::new(ConnHandle::new(shared.config.outbound_queue.max(1), max_bytes));
    // Registered before the reader runs, so the hub knows the handle before any input.
    if shared.hub.send(HubMsg::Register { conn, handle: handle.clone() }).await.is_err() {
        return;
    }
    tracing::info!(conn = conn.0, %peer, "connected");
    shared.tracker.spawn(writer(handle.clone(), write));
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        reader(shared, conn, handle, read, accepted, peer).await;
        // The slot is held until the reader has drained and let go of the socket.
        drop(slot);
    });
}

/// How the reader loop ended.
enum End {
    /// Close through the hub, after what it has queued, with this last frame.
    Close(Option<Outbound>, String),
    /// The socket or the server is gone: nothing more to say.
    Gone(String),
}

async fn reader(
    shared: Arc<Shared>,
    conn: ConnId,
    handle: Arc<ConnHandle>,
    read: OwnedReadHalf,
    accepted: Instant,
    peer: std::net::SocketAddr,
) {
    let limits = &shared.config.limits;
    let timed = FrameDeadline { inner: read, limit: shared.config.frame_timeout(), deadline: None };
    let codec = FrameCodec::new(MAX_PAYLOAD_BEFORE_AUTH.min(limits.max_payload));
    let mut framed = FramedRead::with_capacity(timed, codec, 0);
    let started = Instant::now();
    let mut bucket = TokenBucket::new(shared.config.rate, shared.config.burst, 0.0);
    let mut warned = false;
    let mut session = Session::new(limits.skew_s);
    let idle = Duration::from_millis(shared.config.idle_timeout_ms());
    let mut deadline = accepted + Duration::from_millis(shared.config.cnn_timeout_ms());
    let fatal = |e: ProtoError| End::Close(Some(Outbound::error(&e)), e.to_string());
    let end = loop {
        // A frame's deadline runs from when the reader is ready for it: bytes of
        // it that arrived while the hub took the last one do not count against it.
        let more = !framed.read_buffer().is_empty();
        framed.get_mut().frame_done(more);
        // Most sessions are idle most of the time: hold no read buffer until
        // the socket has bytes (an allocation per burst is the price).
        if !more && framed.read_buffer().capacity() > 0 {
            *framed.read_buffer_mut() = BytesMut::new();
        }
        let next = async {
            if framed.read_buffer().capacity() == 0 {
                if let Err(e) = framed.get_ref().inner.readable().await {
                    return Some(Err(FrameError::Io(e)));
                }
                framed.read_buffer_mut().reserve(READ_BUFFER);
            }
            framed.next().await
        };
        let frame = tokio::select! {
            biased;
            _ = handle.closing.cancelled() => break End::Gone("closed by server".into()),
            _ = sleep_until(deadline) => {
                let what = if session.account().is_some() { "idle for too long" } else { "no CNN in time" };
                break fatal(ProtoError::new(ErrorCode::Timeout, what));
            }
            frame = next => frame,
        };
        let frame = match frame {
            None => break End::Close(None, "peer closed".into()),
            Some(Err(FrameError::Io(e))) if e.kind() == std::io::ErrorKind::TimedOut => {
                break fatal(ProtoError::new(ErrorCode::Timeout, "a frame took too long to arrive"));
            }
            Some(Err(FrameError::Io(e))) => {
                handle.close(None, CloseMode::Abort);
                break End::Gone(format!("read error: {e}"));
            }
            Some(Err(e)) => break fatal(ProtoError::from(e)),
            Some(Ok(frame)) => frame,
        };
        let was_authenticated = session.account().is_some();
        match bucket.take(started.elapsed().as_secs_f64()) {
            Verdict::Allowed => warned = false,
            Verdict::Flooding => break fatal(ProtoError::new(ErrorCode::RateLimited, "too many frames: closing")),
            Verdict::Limited => {
                // One ERR per run of refused frames: answering each would amplify the flood.
                if !warned {
                    warned = true;
                    let error = ProtoError::new(ErrorCode::RateLimited, "too many frames per second: frame dropped");
                    if !was_authenticated {
                        reply_before_auth(&handle, Outbound::error(&error).unsigned());
                    } else if shared
                        .hub
                        .send(HubMsg::Input(Input::Reject { conn, envelope: None, error }))
                        .await
                        .is_err()
                    {
                        break End::Gone("server stopping".into());
                    }
                }
                continue;
            }
        }
        if was_authenticated {
            deadline = Instant::now() + idle;
        }
        let output = session
            .on_frame(&frame, now_unix(), |id: &Ulid| shared.directory.read().ok().and_then(|d| d.get(id).cloned()));
        let input = match output {
            Err(e) => {
                if e.code == ErrorCode::AuthFailed {
                    tracing::info!(conn = conn.0, %peer, "authentication failed");
                }
                break fatal(e);
            }
            Ok(SessionOutput::Info) => {
                reply_before_auth(&handle, shared.sinfo_unsigned.clone());
                continue;
            }
            Ok(SessionOutput::Authenticate { account, key_rev, envelope, batch }) => {
                if let (Some(mac), Ok(mut slot)) = (session.mac(), handle.pending_mac.lock()) {
                    *slot = Some(Arc::clone(mac));
                }
                framed.decoder_mut().set_max_payload(limits.max_payload);
                tracing::info!(conn = conn.0, %peer, %account, "authenticated");
                deadline = Instant::now() + idle;
                Input::Open { conn, account, key_rev, envelope, batch }
            }
            Ok(SessionOutput::Reject { error, .. }) if !was_authenticated => {
                reply_before_auth(&handle, Outbound::error(&error).unsigned());
                continue;
            }
            Ok(SessionOutput::Reject { envelope, error }) => Input::Reject { conn, envelope, error },
            Ok(SessionOutput::Request(request)) => Input::Request { conn, request },
        };
        if shared.hub.send(HubMsg::Input(input)).await.is_err() {
            break End::Gone("server stopping".into());
        }
    };
    let account = session.account().map(|a| a.to_string()).unwrap_or_default();
    let reason = match end {
        End::Close(last, reason) => {
            if shared.hub.send(HubMsg::Disconnect { conn, last: last.clone() }).await.is_err() {
                handle.close(last, CloseMode::Flush);
            }
            reason
        }
        End::Gone(reason) => {
            let _ = shared.hub.send(HubMsg::Disconnect { conn, last: None }).await;
            reason
        }
    };
    tracing::info!(conn = conn.0, %peer, %account, %reason, "disconnected");
    // Read and drop what the peer still sends while the writer flushes, so
    // closing with unread input does not reset the connection under the ERR.
    let mut read = framed.into_inner().inner;
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        // On the heap: a buffer held across this await would be part of every
        // connection's reader future, idle or not.
        let mut scratch = vec![0u8; 4096];
        while matches!(read.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Queues an answer to an unauthenticated connection; one that asks faster
/// than it reads is a slow consumer like any other.
fn reply_before_auth(handle: &ConnHandle, frame: Outbound) {
    if handle.offer(frame, None) == Err(OfferError::Full) {
        let e = ProtoError::new(ErrorCode::SlowConsumer, "outbound queue full: you are not reading fast enough");
        handle.close(Some(Outbound::error(&e)), CloseMode::Abort);
    }
}

fn encode(handle: &ConnHandle, frame: &Outbound, tag: Option<[u8; TAG_LEN]>, buf: &mut BytesMut) {
    let tag = match (frame.signed, handle.mac.get()) {
        (true, Some(_)) if tag.is_some() => tag,
        (true, Some(mac)) => Some(mac.sign(frame.command.as_bytes(), &frame.payload)),
        _ => None,
    };
    encode_frame(&OutFrame { command: frame.command, signature: tag.as_ref(), payload: &frame.payload }, buf);
}

async fn writer(handle: Arc<ConnHandle>, mut write: OwnedWriteHalf) {
    let mut buf = BytesMut::new();
    let mut batch = VecDeque::new();
    loop {
        if buf.is_empty() {
            // An idle connection keeps no buffers: they are cheap to get again.
            if buf.capacity() > 0 {
                buf = BytesMut::new();
            }
            // Coalesce what is queued into one write.
            handle.take(&mut batch, WRITE_BATCH);
            if batch.is_empty() {
                if batch.capacity() > KEEP_FRAMES {
                    batch = VecDeque::new();
                }
                tokio::select! {
                    biased;
                    _ = handle.closing.cancelled() => break,
                    _ = handle.ready.notified() => continue,
                }
            }
            for Queued { frame, tag } in batch.drain(..) {
                encode(&handle, &frame, tag, &mut buf);
            }
        } else {
            tokio::select! {
                biased;
                _ = handle.closing.cancelled() => break,
                written = write.write_buf(&mut buf) => match written {
                    Ok(0) | Err(_) => {
                        // The peer is gone: close, and refuse what the hub offers from now on.
                        handle.close(None, CloseMode::Abort);
                        handle.shut();
                        return;
                    }
                    Ok(_) => {}
                },
            }
        }
    }
    // Closing: finish the frame in progress, then (when flushing) what is
    // queued, then the last frame, all within a bounded time.
    let (last, mode) = handle.take_close();
    let queued = handle.shut();
    if mode == CloseMode::Flush {
        for Queued { frame, tag } in batch.into_iter().chain(queued) {
            encode(&handle, &frame, tag, &mut buf);
        }
    }
    if let Some(last) = &last {
        encode(&handle, last, None, &mut buf);
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        write.write_all(&buf).await?;
        write.shutdown().await
    })
    .await;
}
