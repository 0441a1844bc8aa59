//! The store thread: the only writer of channel data, with group commit.
//!
//! It takes every job waiting in its queue, applies all writes in one
//! transaction (one fsync for the batch, as strfry's writer does), and only
//! then reports the appends and election numbers durable to the hub, which
//! announces the commits and starts the elections.
//! History reads for `CH_PULL` run after the writes queued before them.
//! A failed write stops the server: nothing may be announced that is not stored.
//! It works on any [`Storage`]; it must not know which database is behind it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::metrics::Metrics;

use crate::store::{Storage, StoreError};
use sigil_core::{durable_marks, Input, PullRequest, StoreOp};

/// Jobs gathered into one transaction at most.
const MAX_BATCH: usize = 8192;

/// Work for the store thread.
#[derive(Debug)]
pub enum StoreJob {
    /// A write from the core.
    Write(StoreOp),
    /// A history read for `CH_PULL`.
    Pull(PullRequest),
}

/// What the store thread tells the hub. These go on their own unbounded
/// channel: a reply never waits for the hub, which may itself be waiting for
/// room in the store queue (a bounded reply queue could deadlock the two).
/// There is at most one reply per job taken (fewer for writes: one per
/// channel per batch), and the hub reads replies alongside its other input.
#[derive(Debug)]
pub enum StoreReply {
    /// Writes are durable, or a read is done.
    Input(Input),
    /// A write or read failed: the server must stop.
    Failed(String),
}

/// How long a batch is retried while another process holds the database's
/// write lock (an operator's `sqlite3`, say) before the server gives up.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Applies a batch, waiting out a database locked by another process.
fn apply_retrying<S: Storage>(store: &mut S, writes: &[StoreOp]) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + BUSY_RETRY;
    loop {
        match store.apply(writes) {
            Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                tracing::warn!("the database is locked by another process; retrying");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Runs the store thread until the queue closes and is drained.
pub(crate) fn spawn<S: Storage>(
    mut store: S,
    mut rx: mpsc::Receiver<StoreJob>,
    hub: mpsc::UnboundedSender<StoreReply>,
    metrics: Arc<Metrics>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut writes = Vec::new();
        let mut pulls = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut job = Some(first);
            let mut taken = 0;
            while let Some(j) = job.take() {
                match j {
                    StoreJob::Write(op) => writes.push(op),
                    StoreJob::Pull(pull) => pulls.push(pull),
                }
                taken += 1;
                if taken < MAX_BATCH {
                    job = rx.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                let started = std::time::Instant::now();
                if let Err(e) = apply_retrying(&mut store, &writes) {
                    tracing::error!(error = %e, "store write failed; stopping the server");
                    let _ = hub.send(StoreReply::Failed(e.to_string()));
                    return;
                }
                metrics.store_fsync.observe(started.elapsed().as_secs_f64());
                metrics.store_batch.observe(writes.len() as f64);
                let appended = writes.iter().filter(|op| matches!(op, StoreOp::Append { .. })).count();
                metrics.commits.inc_by(appended as u64);
                for (channel, (seq, election)) in durable_marks(&writes) {
                    // After a shutdown the hub is gone; the writes above still count.
                    let _ = hub.send(StoreReply::Input(Input::Stored { channel, seq, election }));
                }
                writes.clear();
            }
            for PullRequest { conn, channel, anchor, after_seq, limit, max_bytes } in pulls.drain(..) {
                match store.history_after(&channel, after_seq, limit, max_bytes) {
                    Ok((entries, more)) => {
                        let _ = hub.send(StoreReply::Input(Input::Pulled { conn, channel, anchor, entries, more }));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "history read failed; stopping the server");
                        let _ = hub.send(StoreReply::Failed(e.to_string()));
                        return;
                    }
                }
            }
        }
    })
}
