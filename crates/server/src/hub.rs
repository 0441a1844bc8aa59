//! The hub: one task that owns the [`Relay`] and every connection's handle.
//!
//! It feeds the relay its inputs in arrival order and carries out the effects.
//! Sending to a client never waits: `try_send` on a full queue closes that
//! connection as a slow consumer, and the relay is told it is gone. Store work
//! goes to the store thread's bounded queue; when the disk falls behind, the
//! hub waits for it (backpressure), because store writes cannot be dropped.
//! The hub must not sign: a frame for many sessions is grouped into a
//! fan-out run ([`crate::fanout`]) that their writers sign.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::fanout::group_runs;
use crate::log_throttle::{LogKind, LogLimiter};
use crate::memory::{release_free_memory, Churn, Trimmer};
use crate::metrics::Metrics;
use crate::outbound::{CloseMode, ConnHandle, OfferError};
use crate::store_writer::{StoreJob, StoreReply};
use sigil_core::{ConnId, Effect, Input, Relay};
use sigil_proto::{ErrorCode, Outbound, ProtoError};

/// A message to the hub.
#[derive(Debug)]
pub enum HubMsg {
    /// A new connection's handle, before any of its input.
    Register {
        /// The connection.
        conn: ConnId,
        /// Its handle.
        handle: Arc<ConnHandle>,
    },
    /// An input for the relay.
    Input(Input),
    /// The reader ends the connection: close it after what the hub queued
    /// for it so far, with `last` (a fatal `ERR`), and tell the relay.
    Disconnect {
        /// The connection.
        conn: ConnId,
        /// The final frame, if any.
        last: Option<Outbound>,
    },
    /// Close every connection with `ERR shutdown`, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// Runs the hub until shutdown or until every sender is gone.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    mut relay: Relay,
    mut rx: mpsc::Receiver<HubMsg>,
    store: mpsc::Sender<StoreJob>,
    mut replies: mpsc::UnboundedReceiver<StoreReply>,
    stop: tokio_util::sync::CancellationToken,
    failure: Arc<std::sync::OnceLock<String>>,
    metrics: Arc<Metrics>,
    log: Arc<LogLimiter>,
) {
    let mut conns: HashMap<ConnId, Arc<ConnHandle>> = HashMap::new();
    let mut effects = Vec::new();
    let mut writes = Vec::new();
    let mut runs = Vec::new();
    let (mut churn, mut trimmer) = (Churn::default(), Trimmer::default());
    let mut last_pending = 0usize;
    let mut pending: VecDeque<Input> = VecDeque::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            Some(reply) = replies.recv() => match reply {
                StoreReply::Input(input) => Some(HubMsg::Input(input)),
                StoreReply::ReadOnly(reason) => Some(HubMsg::Input(Input::StoreMode { writable: reason.is_none() })),
                StoreReply::Failed(error) => {
                    tracing::error!(%error, "the store failed: shutting down");
                    let _ = failure.set(format!("the store failed: {error}"));
                    stop.cancel();
                    continue;
                }
            },
            _ = tick.tick() => {
                // Content let go from the commit queues counts as churn too.
                let pending = relay.pending_bytes();
                churn.bytes += last_pending.saturating_sub(pending) as u64;
                last_pending = pending;
                if trimmer.tick(churn) {
                    tracing::debug!(frames = churn.frames, bytes = churn.bytes, "giving free memory back after a burst");
                    tokio::task::spawn_blocking(release_free_memory);
                }
                let (led, leaderless) = relay.channel_counts();
                metrics.set_channels(led, leaderless);
                metrics.pending_bytes.set(i64::try_from(relay.pending_bytes()).unwrap_or(i64::MAX));
                // A flood that stopped is summed up within a second of its window's end.
                log.flush();
                Some(HubMsg::Input(Input::Tick))
            }
        };
        match msg {
            None => break,
            Some(HubMsg::Register { conn, handle }) => {
                conns.insert(conn, handle);
            }
            Some(HubMsg::Shutdown(done)) => {
                let e = Outbound::error(&ProtoError::new(ErrorCode::Shutdown, "the server is shutting down"));
                for (_, handle) in conns.drain() {
                    handle.close(Some(e.clone()), CloseMode::Flush);
                }
                let _ = done.send(());
                break;
            }
            Some(HubMsg::Input(input)) => pending.push_back(input),
            Some(HubMsg::Disconnect { conn, last }) => {
                // Closed first, so this ERR wins over the relay's own close.
                if let Some(handle) = conns.remove(&conn) {
                    handle.close(last, CloseMode::Flush);
                }
                pending.push_back(Input::Closed { conn });
            }
        }
        let now = crate::clock::now_unix();
        // Once nothing else waits, the acks the relay gathered go out (§7.9).
        while let Some(input) =
            pending.pop_front().or_else(|| (relay.has_gathered_acks() && rx.is_empty()).then_some(Input::Flush))
        {
            let (closed, opened) = match &input {
                Input::Closed { conn } => (Some(*conn), None),
                Input::Open { conn, .. } => (None, Some(*conn)),
                _ => (None, None),
            };
            relay.step(input, now, &mut effects);
            if let Some(conn) = closed {
                conns.remove(&conn);
            }
            // Sign only once the relay accepted the CNN (nonce, key revision).
            if let Some(conn) = opened {
                match (relay.account_of(conn), conns.get(&conn)) {
                    (Some(_), Some(handle)) => handle.accept_mac(),
                    (None, _) => metrics.auth_failures.inc(),
                    _ => {}
                }
            }
            group_runs(&effects, |conn| conns.get(&conn).and_then(|h| h.mac()).cloned(), &mut runs);
            for (effect, run) in effects.drain(..).zip(runs.drain(..)) {
                match effect {
                    Effect::Send { conn, frame } => {
                        let Some(handle) = conns.get(&conn) else { continue };
                        let bytes = frame.payload.len() as u64;
                        match handle.offer(frame, run) {
                            Ok(()) => {
                                churn.frames += 1;
                                churn.bytes += bytes;
                            }
                            Err(OfferError::Full) => {
                                metrics.slow_consumers.inc();
                                if log.admit(LogKind::SlowConsumer) {
                                    tracing::info!(conn = conn.0, "slow consumer: outbound queue full");
                                }
                                let e = ProtoError::new(
                                    ErrorCode::SlowConsumer,
                                    "outbound queue full: you are not reading fast enough",
                                );
                                handle.close(Some(Outbound::error(&e)), CloseMode::Abort);
                                conns.remove(&conn);
                                pending.push_back(Input::Closed { conn });
                            }
                            Err(OfferError::Closed) => {
                                conns.remove(&conn);
                                pending.push_back(Input::Closed { conn });
                            }
                        }
                    }
                    // One input's writes go to the store as one job, so they
                    // land in one transaction: a leader's batched CH_COMMIT
                    // becomes durable, and is announced, as one batch.
                    Effect::Store(op) => writes.push(op),
                    Effect::Pull(pull) => {
                        // After the writes before it, as the store promises.
                        if !writes.is_empty()
                            && store.send(StoreJob::Writes(std::mem::take(&mut writes))).await.is_err()
                        {
                            stop.cancel();
                        }
                        if store.send(StoreJob::Pull(pull)).await.is_err() {
                            stop.cancel();
                        }
                    }
                    Effect::Close { conn, last } => {
                        if let Some(handle) = conns.remove(&conn) {
                            if let Some(last) = &last {
                                tracing::debug!(conn = conn.0, frame = last.command, "closing");
                            }
                            handle.close(last, CloseMode::Flush);
                        }
                    }
                }
            }
            if !writes.is_empty() && store.send(StoreJob::Writes(std::mem::take(&mut writes))).await.is_err() {
                stop.cancel();
            }
        }
    }
}
