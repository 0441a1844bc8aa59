//! One connection, over any [`Transport`]: a reader task and a writer task
//! around its bounded outbound queue ([`ConnHandle`]).
//!
//! The reader decodes frames, runs the connection's [`Session`] and forwards
//! what it means to the hub; it owns the CNN and idle timers, the frame
//! deadline and the rate bucket. Every close the reader decides on (end of
//! stream, a fatal error, a timeout) also goes through the hub, so it takes
//! effect after the replies to the frames read before it. The writer signs
//! each frame with the recipient's pre-keyed MAC (the account key's, or for a
//! bound session the key derived from its `CNN`, PROTOCOL.md §7.10), or takes
//! its tag from a fan-out run, and coalesces what is queued into one write.
//! This module must not know what carries the bytes (TCP, TLS, a WebSocket):
//! one session code path serves them all. The hub never waits on a
//! connection: a queue over its frame or byte bound is a slow consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::codec::FramedRead;
use ulid::Ulid;

use crate::clock::now_unix;
use crate::config::MAX_PAYLOAD_BEFORE_AUTH;
use crate::hub::HubMsg;
use crate::log_throttle::LogKind;
use crate::metrics::RateLimit;
use crate::outbound::{CloseMode, ConnHandle, OfferError, KEEP_FRAMES};
use crate::shared::{ConnSlot, Shared};
use crate::transport::{as_refusal, Transport, WaitReadable};
use sigil_core::rate::{TokenBucket, Verdict};
use sigil_core::{ConnId, Input, Session, SessionOutput};
use sigil_proto::wire::{FrameCodec, FrameError};
use sigil_proto::{ErrorCode, Outbound, ProtoError};

/// Bytes gathered before a write is issued.
pub(crate) const WRITE_BATCH: usize = 64 * 1024;
/// Read buffer taken when a connection's socket has bytes (and given back
/// once they are all read: most connections are idle most of the time, and
/// their memory is what counts). Frames are small; a bigger one grows it.
const READ_BUFFER: usize = 512;
/// How long a closing connection may take to flush its last frames, and how
/// long its unread input is drained so the kernel does not reset the socket
/// (and destroy the final `ERR`) on close.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The read half, with a deadline for the frame being received: armed by the
/// frame's first byte, disarmed by the reader when the frame is complete.
/// Past it, reading fails with `TimedOut`, so a peer that trickles a frame in
/// byte by byte (slowloris) cannot hold the connection for long.
struct FrameDeadline<R> {
    inner: R,
    limit: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<R> FrameDeadline<R> {
    /// The reader is ready for the next frame; `more` is true when bytes of
    /// it are already buffered (its deadline starts now, else at its first byte).
    fn frame_done(&mut self, more: bool) {
        self.deadline = more.then(|| Box::pin(tokio::time::sleep(self.limit)));
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameDeadline<R> {
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

/// Starts the tasks of an admitted connection.
pub(crate) async fn spawn<T: Transport>(
    shared: Arc<Shared>,
    conn: ConnId,
    stream: T,
    peer: std::net::SocketAddr,
    slot: ConnSlot,
) {
    let accepted = Instant::now();
    let (read, write) = stream.split();
    let live = shared.live();
    let max_bytes = live.outbound_bytes.max(shared.config.limits.max_payload);
    let metrics = shared.metrics.clone();
    let handle = Arc::new(ConnHandle::counted(live.outbound_queue.max(1), max_bytes, metrics, slot.transport));
    // Registered before the reader runs, so the hub knows the handle before any input.
    if shared.hub.send(HubMsg::Register { conn, handle: handle.clone() }).await.is_err() {
        return;
    }
    if shared.log.admit(LogKind::Connected) {
        tracing::info!(conn = conn.0, %peer, "connected");
    }
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

/// Reads and checks frames until the connection ends, then closes it through
/// the hub and drains what the peer still sends.
async fn reader<R: AsyncRead + WaitReadable + Unpin>(
    shared: Arc<Shared>,
    conn: ConnId,
    handle: Arc<ConnHandle>,
    read: R,
    accepted: Instant,
    peer: std::net::SocketAddr,
) {
    let limits = &shared.config.limits;
    let live = shared.live();
    // A test's millisecond override stands; otherwise the live limit.
    let frame_timeout = match shared.config.frame_timeout_ms {
        Some(_) => shared.config.frame_timeout(),
        None => Duration::from_secs(live.frame_timeout_s),
    };
    let timed = FrameDeadline { inner: read, limit: frame_timeout, deadline: None };
    let codec = FrameCodec::new(MAX_PAYLOAD_BEFORE_AUTH.min(limits.max_payload));
    let mut framed = FramedRead::with_capacity(timed, codec, 0);
    let started = Instant::now();
    let mut bucket = TokenBucket::new(live.rate, live.burst, 0.0);
    let mut warned = false;
    // The account's name, once authenticated, for the log.
    let mut name = String::new();
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
                if let Err(e) = framed.get_ref().inner.wait_readable().await {
                    return Some(Err(FrameError::Io(e)));
                }
                framed.read_buffer_mut().reserve(READ_BUFFER);
            }
            framed.next().await
        };
        let frame = tokio::select! {
            biased;
            _ = handle.closing() => break End::Gone("closed by server".into()),
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
                if let Some(refused) = as_refusal(&e) {
                    break fatal(refused.clone());
                }
                handle.close(None, CloseMode::Abort);
                break End::Gone(format!("read error: {e}"));
            }
            Some(Err(e)) => break fatal(ProtoError::from(e)),
            Some(Ok(frame)) => frame,
        };
        let metrics = &shared.metrics;
        metrics.frame_received(frame.command.as_str());
        let was_authenticated = session.account().is_some();
        match bucket.take(started.elapsed().as_secs_f64()) {
            Verdict::Allowed => warned = false,
            Verdict::Flooding => {
                metrics.rate_limited(RateLimit::Flood);
                break fatal(ProtoError::new(ErrorCode::RateLimited, "too many frames: closing"));
            }
            Verdict::Limited => {
                metrics.rate_limited(RateLimit::Frames);
                // One ERR per run of refused frames: answering each would amplify the flood.
                if !warned {
                    warned = true;
                    if shared.log.admit(LogKind::RateLimited) {
                        tracing::info!(conn = conn.0, %peer, "rate limited: frames dropped");
                    }
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
        let lookup = |id: &Ulid| shared.directory.read().ok().and_then(|d| d.get(id).map(|e| e.0.clone()));
        let mut output = session.on_frame(&frame, now_unix(), lookup);
        if !was_authenticated && matches!(&output, Err(e) if e.code == ErrorCode::AuthFailed) {
            // The account may be a moment old (or its key just rotated): read
            // the accounts again and check once more. Every failed CNN waits
            // the same way, so the time it takes does not tell an unknown id
            // from a wrong key.
            shared.refresh_accounts().await;
            output = session.on_frame(&frame, now_unix(), lookup);
        }
        let input = match output {
            Err(e) => {
                if e.code == ErrorCode::AuthFailed {
                    metrics.auth_failures.inc();
                    if shared.log.admit(LogKind::AuthFailed) {
                        tracing::info!(conn = conn.0, %peer, "authentication failed");
                    }
                }
                break fatal(e);
            }
            Ok(SessionOutput::Info) => {
                reply_before_auth(&handle, shared.sinfo_unsigned.clone());
                continue;
            }
            Ok(SessionOutput::Authenticate { account, key_rev, envelope, batch, bind, signer }) => {
                // Every frame to the session is signed with it from its UCNN
                // on, whatever the transport: ERRs, SINFO and fan-out runs too.
                handle.set_pending_mac(signer);
                framed.decoder_mut().set_max_payload(limits.max_payload);
                name =
                    shared.directory.read().ok().and_then(|d| d.get(&account).map(|e| e.1.clone())).unwrap_or_default();
                if shared.log.admit(LogKind::Authenticated) {
                    tracing::info!(conn = conn.0, %peer, %account, %name, "authenticated");
                }
                deadline = Instant::now() + idle;
                Input::Open { conn, account, key_rev, envelope, batch, bind }
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
            // Without a hub (the server stopped) nobody else closes the handle.
            if shared.hub.send(HubMsg::Disconnect { conn, last: None }).await.is_err() {
                handle.close(None, CloseMode::Flush);
            }
            reason
        }
    };
    // Sessions that never signed in are what a connect flood makes: they
    // have a budget of their own, so they cannot hide the others' ends.
    let kind = if account.is_empty() { LogKind::DisconnectedBeforeCnn } else { LogKind::Disconnected };
    if shared.log.admit(kind) {
        tracing::info!(conn = conn.0, %peer, %account, %name, %reason, "disconnected");
    }
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
        handle.metrics().slow_consumers.inc();
        let e = ProtoError::new(ErrorCode::SlowConsumer, "outbound queue full: you are not reading fast enough");
        handle.close(Some(Outbound::error(&e)), CloseMode::Abort);
    }
}

/// Writes what the hub queues, coalesced, until the connection closes; then
/// flushes (or drops) the rest and the last frame within a bounded time.
async fn writer<W: AsyncWrite + Unpin>(handle: Arc<ConnHandle>, mut write: W) {
    let mut buf = BytesMut::new();
    let mut batch = VecDeque::new();
    // Bytes were written since the last flush. A TCP socket has nothing to
    // flush; a TLS or WebSocket writer buffers until it is flushed.
    let mut unflushed = false;
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
                if unflushed {
                    unflushed = false;
                    let flushed = tokio::select! {
                        biased;
                        _ = handle.closing() => break,
                        flushed = write.flush() => flushed,
                    };
                    if flushed.is_err() {
                        write_failed(&handle);
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    biased;
                    _ = handle.closing() => break,
                    _ = handle.ready() => continue,
                }
            }
            for queued in batch.drain(..) {
                handle.encode_queued(&queued, &mut buf);
            }
        } else {
            tokio::select! {
                biased;
                _ = handle.closing() => break,
                written = write.write_buf(&mut buf) => match written {
                    Ok(0) | Err(_) => {
                        write_failed(&handle);
                        return;
                    }
                    Ok(_) => unflushed = true,
                },
            }
        }
    }
    // Closing: finish the frame in progress, then (when flushing) what is
    // queued, then the last frame, all within a bounded time.
    let (last, mode) = handle.take_close();
    let queued = handle.shut();
    if mode == CloseMode::Flush {
        for queued in batch.into_iter().chain(queued) {
            handle.encode_queued(&queued, &mut buf);
        }
    }
    if let Some(last) = &last {
        handle.encode(last, None, &mut buf);
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        write.write_all(&buf).await?;
        write.flush().await?;
        write.shutdown().await
    })
    .await;
}

/// The peer is gone: close, and refuse what the hub offers from now on.
fn write_failed(handle: &ConnHandle) {
    handle.close(None, CloseMode::Abort);
    handle.shut();
}
