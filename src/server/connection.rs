//! One TCP connection: a reader task and a writer task around a bounded queue.
//!
//! The reader decodes frames, runs the connection's [`Session`] and forwards
//! what it means to the hub; it owns the CNN and idle timers. The writer signs
//! each frame with the recipient's pre-keyed MAC and coalesces what is queued
//! into one write. The hub never waits on a connection: a full queue is a slow
//! consumer and is closed.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use super::hub::HubMsg;
use super::Shared;
use crate::core::{ConnId, Input, Session, SessionOutput};
use crate::proto::{ErrorCode, Outbound, ProtoError};
use crate::wire::{encode_frame, FrameCodec, FrameError, FrameMac, OutFrame};

/// Bytes gathered before a write is issued.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Write what is queued, then the last frame.
    Flush,
    /// Drop what is queued (the peer is not reading); try the last frame only.
    Abort,
}

/// The shared side of a connection: its queue, its close signal, its MAC.
#[derive(Debug)]
pub struct ConnHandle {
    /// The bounded outbound queue.
    pub tx: mpsc::Sender<Outbound>,
    closing: CancellationToken,
    last: Mutex<Option<(Option<Outbound>, CloseMode)>>,
    mac: OnceLock<FrameMac>,
}

impl ConnHandle {
    fn new(tx: mpsc::Sender<Outbound>) -> Self {
        Self { tx, closing: CancellationToken::new(), last: Mutex::new(None), mac: OnceLock::new() }
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

    fn take_close(&self) -> (Option<Outbound>, CloseMode) {
        self.last.lock().ok().and_then(|mut s| s.take()).unwrap_or((None, CloseMode::Flush))
    }
}

/// Starts the tasks of an accepted connection.
pub(super) async fn spawn(
    shared: Arc<Shared>,
    conn: ConnId,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel(shared.config.outbound_queue.max(1));
    let handle = Arc::new(ConnHandle::new(tx));
    // Registered before the reader runs, so the hub knows the handle before any input.
    if shared.hub.send(HubMsg::Register { conn, handle: handle.clone() }).await.is_err() {
        return;
    }
    tracing::info!(conn = conn.0, %peer, "connected");
    shared.tracker.spawn(writer(handle.clone(), rx, write));
    shared.tracker.spawn(reader(shared.clone(), conn, handle, read, accepted, peer));
}

fn now_unix() -> u64 {
    super::now_unix()
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
    let mut framed = FramedRead::new(read, FrameCodec::new(limits.max_payload));
    let mut session = Session::new(limits.skew_s);
    let idle = Duration::from_millis(shared.config.idle_timeout_ms());
    let mut deadline = accepted + Duration::from_millis(shared.config.cnn_timeout_ms());
    let reason: String = loop {
        let frame = tokio::select! {
            biased;
            _ = handle.closing.cancelled() => break "closed by server".into(),
            _ = sleep_until(deadline) => {
                let what = if session.account().is_some() { "idle for too long" } else { "no CNN in time" };
                fatal(&handle, ProtoError::new(ErrorCode::Timeout, what));
                break format!("timeout: {what}");
            }
            frame = framed.next() => frame,
        };
        let frame = match frame {
            None => {
                handle.close(None, CloseMode::Flush);
                break "peer closed".into();
            }
            Some(Err(FrameError::Io(e))) => {
                handle.close(None, CloseMode::Abort);
                break format!("read error: {e}");
            }
            Some(Err(e)) => {
                let e = ProtoError::from(e);
                fatal(&handle, e.clone());
                break e.to_string();
            }
            Some(Ok(frame)) => frame,
        };
        let was_authenticated = session.account().is_some();
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
                fatal(&handle, e.clone());
                break e.to_string();
            }
            Ok(SessionOutput::Info) => {
                reply_before_auth(&handle, shared.sinfo_unsigned.clone());
                continue;
            }
            Ok(SessionOutput::Authenticate { account, key_rev, envelope }) => {
                if let Some(mac) = session.mac() {
                    let _ = handle.mac.set(mac.clone());
                }
                tracing::info!(conn = conn.0, %peer, %account, "authenticated");
                deadline = Instant::now() + idle;
                Input::Open { conn, account, key_rev, envelope }
            }
            Ok(SessionOutput::Reject { error, .. }) if !was_authenticated => {
                reply_before_auth(&handle, Outbound::error(&error).unsigned());
                continue;
            }
            Ok(SessionOutput::Reject { envelope, error }) => Input::Reject { conn, envelope, error },
            Ok(SessionOutput::Request(request)) => Input::Request { conn, request },
        };
        if shared.hub.send(HubMsg::Input(input)).await.is_err() {
            break "server stopping".into();
        }
    };
    let account = session.account().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(conn = conn.0, %peer, %account, %reason, "disconnected");
    let _ = shared.hub.send(HubMsg::Input(Input::Closed { conn })).await;
}

/// Queues an answer to an unauthenticated connection; one that asks faster
/// than it reads is a slow consumer like any other.
fn reply_before_auth(handle: &ConnHandle, frame: Outbound) {
    if let Err(mpsc::error::TrySendError::Full(_)) = handle.tx.try_send(frame) {
        let e = ProtoError::new(ErrorCode::SlowConsumer, "outbound queue full: you are not reading fast enough");
        handle.close(Some(Outbound::error(&e)), CloseMode::Abort);
    }
}

/// Closes with a fatal error frame.
fn fatal(handle: &ConnHandle, e: ProtoError) {
    handle.close(Some(Outbound::error(&e)), CloseMode::Flush);
}

fn encode(handle: &ConnHandle, frame: &Outbound, buf: &mut BytesMut) {
    let tag = match (frame.signed, handle.mac.get()) {
        (true, Some(mac)) => Some(mac.sign(frame.command.as_bytes(), &frame.payload)),
        _ => None,
    };
    encode_frame(&OutFrame { command: frame.command, signature: tag.as_ref(), payload: &frame.payload }, buf);
}

async fn writer(handle: Arc<ConnHandle>, mut rx: mpsc::Receiver<Outbound>, mut write: OwnedWriteHalf) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        if buf.is_empty() {
            tokio::select! {
                biased;
                _ = handle.closing.cancelled() => break,
                item = rx.recv() => match item {
                    None => break,
                    Some(frame) => {
                        encode(&handle, &frame, &mut buf);
                        // Coalesce what is already queued into one write.
                        while buf.len() < WRITE_BATCH {
                            let Ok(frame) = rx.try_recv() else { break };
                            encode(&handle, &frame, &mut buf);
                        }
                    }
                },
            }
        } else {
            tokio::select! {
                biased;
                _ = handle.closing.cancelled() => break,
                written = write.write_buf(&mut buf) => match written {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
            }
        }
    }
    // Closing: finish the frame in progress, then (when flushing) what is
    // queued, then the last frame, all within a bounded time.
    let (last, mode) = handle.take_close();
    if mode == CloseMode::Flush {
        while let Ok(frame) = rx.try_recv() {
            encode(&handle, &frame, &mut buf);
        }
    }
    rx.close();
    if let Some(last) = &last {
        encode(&handle, last, &mut buf);
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        write.write_all(&buf).await?;
        write.shutdown().await
    })
    .await;
}
