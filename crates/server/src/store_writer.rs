//! The store thread: the only writer of channel data, with group commit.
//!
//! It takes every job waiting in its queue, applies all writes in one
//! transaction (one fsync for the batch, as strfry's writer does), checks
//! that the file written is still the database at its path, and only then
//! reports the appends and election numbers durable to the hub, which
//! announces the commits and starts the elections.
//! History reads for `CH_PULL` run after the writes queued before them.
//!
//! Faults (PROTOCOL.md §3.8): a write the store cannot take now (disk full,
//! an I/O error, a read-only file system, a lock held too long) puts the
//! server in read-only mode: the batch is kept, nothing of it is announced,
//! and it is tried again every second with whatever came since until it
//! succeeds, which ends read-only mode. A damaged, removed or replaced
//! database stops the server: nothing may be announced that is not stored.
//! It works on any [`Storage`]; it must not know which database is behind it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::metrics::Metrics;

use crate::store::{Fault, Storage, StoreError};
use sigil_core::{durable_marks, Input, PullRequest, StoreOp};

/// Jobs gathered into one transaction at most (one job's writes are never
/// split; in read-only mode the kept batch grows past it: the relay refuses
/// new writes meanwhile).
const MAX_BATCH: usize = 8192;

/// How often a batch the store could not take is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How often the queue is looked at while waiting to retry (pulls are
/// served meanwhile).
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Work for the store thread.
#[derive(Debug)]
pub enum StoreJob {
    /// The writes of one input to the core, in order: applied in one transaction.
    Writes(Vec<StoreOp>),
    /// A history read for `CH_PULL`.
    Pull(PullRequest),
}

/// What the store thread tells the hub. These go on their own unbounded
/// channel: a reply never waits for the hub, which may itself be waiting for
/// room in the store queue (a bounded reply queue could deadlock the two).
/// There is at most one reply per job taken (fewer for writes: one per
/// channel per batch), plus one per change of mode, and the hub reads
/// replies alongside its other input.
#[derive(Debug)]
pub enum StoreReply {
    /// Writes are durable, or a read is done.
    Input(Input),
    /// The store stopped taking writes (with why), or takes them again (`None`).
    ReadOnly(Option<String>),
    /// The store is damaged or gone: the server must stop.
    Failed(String),
}

/// Why the store takes no writes, when it does not: for `/healthz` and
/// `SINFO`-independent status, shared with the web listener.
#[derive(Debug, Default)]
pub struct StoreStatus {
    read_only: Mutex<Option<String>>,
}

impl StoreStatus {
    /// The reason the server is read-only, if it is.
    pub fn read_only(&self) -> Option<String> {
        self.read_only.lock().map(|r| r.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set(&self, reason: Option<String>) {
        match self.read_only.lock() {
            Ok(mut r) => *r = reason,
            Err(poisoned) => *poisoned.into_inner() = reason,
        }
    }
}

/// How long a batch is retried while another process holds the database's
/// write lock (an operator's `sqlite3`, say) before the server turns
/// read-only until it is let go.
const BUSY_RETRY: Duration = Duration::from_secs(60);

/// Applies a batch, waiting out a database locked by another process.
fn apply_retrying<S: Storage>(store: &mut S, writes: &[StoreOp]) -> Result<(), StoreError> {
    let deadline = Instant::now() + BUSY_RETRY;
    loop {
        match store.apply(writes) {
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                tracing::warn!("the database is locked by another process; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// The store thread's state between batches.
struct Writer<S> {
    store: S,
    hub: mpsc::UnboundedSender<StoreReply>,
    metrics: Arc<Metrics>,
    status: Arc<StoreStatus>,
    /// Writes taken and not yet durable: one batch, or in read-only mode
    /// everything since the first failure.
    writes: Vec<StoreOp>,
    /// Read-only since, with why; `None` when writes succeed.
    read_only: Option<(Instant, String)>,
}

/// The store failed for good.
struct Stop;

impl<S: Storage> Writer<S> {
    /// Tries to make `writes` durable and announces them if so.
    fn flush(&mut self) -> Result<(), Stop> {
        let started = Instant::now();
        let applied = apply_retrying(&mut self.store, &self.writes).and_then(|()| self.store.verify_in_place());
        match applied {
            Ok(()) => {}
            Err(e) => match e.fault() {
                Fault::Fatal => return Err(self.fail("store write", &e)),
                Fault::Busy | Fault::Unwritable => {
                    self.metrics.store_write_failures.inc();
                    if self.read_only.is_none() {
                        let reason = e.to_string();
                        tracing::error!(
                            error = %reason,
                            writes = self.writes.len(),
                            "the store takes no writes: read-only until it does (retried every second)"
                        );
                        self.status.set(Some(reason.clone()));
                        self.metrics.store_read_only.set(1);
                        let _ = self.hub.send(StoreReply::ReadOnly(Some(reason.clone())));
                        self.read_only = Some((Instant::now(), reason));
                    }
                    return Ok(());
                }
            },
        }
        self.metrics.store_fsync.observe(started.elapsed().as_secs_f64());
        self.metrics.store_batch.observe(self.writes.len() as f64);
        let appended = self.writes.iter().filter(|op| matches!(op, StoreOp::Append { .. })).count();
        self.metrics.commits.inc_by(appended as u64);
        for (channel, (seq, election)) in durable_marks(&self.writes) {
            // After a shutdown the hub is gone; the writes above still count.
            let _ = self.hub.send(StoreReply::Input(Input::Stored { channel, seq, election }));
        }
        self.writes.clear();
        if let Some((since, _)) = self.read_only.take() {
            tracing::warn!(after_s = since.elapsed().as_secs(), "the store takes writes again: read-only mode ends");
            self.status.set(None);
            self.metrics.store_read_only.set(0);
            let _ = self.hub.send(StoreReply::ReadOnly(None));
        }
        Ok(())
    }

    fn pull(
        &mut self,
        PullRequest { conn, channel, anchor, after_seq, limit, max_bytes }: PullRequest,
    ) -> Result<(), Stop> {
        match self.store.history_after(&channel, after_seq, limit, max_bytes) {
            Ok((entries, more)) => {
                let _ = self.hub.send(StoreReply::Input(Input::Pulled { conn, channel, anchor, entries, more }));
                Ok(())
            }
            Err(e) => Err(self.fail("history read", &e)),
        }
    }

    fn fail(&self, what: &str, e: &StoreError) -> Stop {
        tracing::error!(error = %e, "{what} failed; stopping the server without announcing it");
        let _ = self.hub.send(StoreReply::Failed(e.to_string()));
        Stop
    }
}

/// The next job: waits for one, or in read-only mode until the next retry
/// is due (`Ok(None)`). `Err` once the queue is closed and empty.
fn next_job(rx: &mut mpsc::Receiver<StoreJob>, retry_at: Option<Instant>) -> Result<Option<StoreJob>, ()> {
    let Some(retry_at) = retry_at else { return rx.blocking_recv().map(Some).ok_or(()) };
    loop {
        match rx.try_recv() {
            Ok(job) => return Ok(Some(job)),
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(()),
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= retry_at => return Ok(None),
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(POLL_EVERY),
        }
    }
}

/// Runs the store thread until the queue closes and is drained.
pub(crate) fn spawn<S: Storage>(
    store: S,
    mut rx: mpsc::Receiver<StoreJob>,
    hub: mpsc::UnboundedSender<StoreReply>,
    metrics: Arc<Metrics>,
    status: Arc<StoreStatus>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = Writer { store, hub, metrics, status, writes: Vec::new(), read_only: None };
        let mut pulls = Vec::new();
        let mut last_try = Instant::now();
        loop {
            let retry_at = w.read_only.as_ref().map(|_| last_try + RETRY_EVERY);
            let Ok(first) = next_job(&mut rx, retry_at) else { break };
            let mut job = first;
            let mut taken = 0;
            while let Some(j) = job.take() {
                match j {
                    StoreJob::Writes(ops) => w.writes.extend(ops),
                    StoreJob::Pull(pull) => pulls.push(pull),
                }
                taken += 1;
                if taken < MAX_BATCH {
                    job = rx.try_recv().ok();
                }
            }
            // Read-only: new writes wait for the retry, which takes them all.
            let due = retry_at.is_none_or(|at| Instant::now() >= at);
            if !w.writes.is_empty() && due {
                last_try = Instant::now();
                if w.flush().is_err() {
                    return;
                }
            }
            for pull in pulls.drain(..) {
                if w.pull(pull).is_err() {
                    return;
                }
            }
        }
        // Shutting down: one last try for what the store could not take.
        if !w.writes.is_empty() && w.read_only.is_some() && w.flush().is_ok() && w.read_only.is_some() {
            tracing::error!(
                writes = w.writes.len(),
                "stopping with writes the store never took; none of them was announced"
            );
        }
    })
}
