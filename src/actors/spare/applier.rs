//! The spare's apply thread: applies, in order, what the link has made durable in the local
//! log, [`MAX_APPLY_BATCH_RECORDS`] records per SQLite transaction. It reads from the log
//! files, so receiving never waits for applying (a slow apply only grows the local log).
//!
//! Every [`CHECKPOINT_EVERY_RECORDS`] it checkpoints SQLite's WAL; once a checkpoint completes,
//! what it applied is durable in the database file, and the log may drop records up to there
//! (`ApplyState::durable_floor`).
//!
//! A divergence (schema mismatch, changeset conflict, a record that cannot be read, a
//! database SQLite finds corrupt) stops applying, with an ERROR: the copy no longer matches
//! the primary and must be re-seeded; it is never papered over. A fault of this host (a full
//! disk, an I/O error, a database another process holds: `Error::is_transient`) is not the
//! copy's: the batch is retried, with a backoff
//! from [`APPLY_RETRY_MIN`] to [`APPLY_RETRY_MAX`], an ERROR and an `apply_error` event the
//! first time, and `apply_recovered` once it goes through. The thread also stops when asked
//! (a seed is being installed), and is started again on the new files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::core::apply_gate::{Gate, Next};
use crate::error::Error;
use crate::log::LogReader;
use crate::store::apply::Applier;
use crate::store::checkpointer::Checkpointer;

/// Records applied per SQLite transaction.
pub const MAX_APPLY_BATCH_RECORDS: u64 = 1000;
/// Bytes of records read per batch (at least one record).
pub const MAX_APPLY_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Applied records between two WAL checkpoints.
pub const CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// The thread re-checks for work (and for a stop request) at least this often.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// First and longest pause before retrying a batch that failed for a fault of this host.
pub const APPLY_RETRY_MIN: Duration = Duration::from_millis(100);
pub const APPLY_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the apply thread shares with the link and status.
#[derive(Default)]
pub struct ApplyState {
    /// Highest LSN durable in the local log: the apply target.
    pub flushed: AtomicU64,
    /// Highest LSN applied, and its commit time.
    pub applied: AtomicU64,
    pub applied_time_ms: AtomicU64,
    /// While held (paused, delayed, stopped at an LSN): commit time of the oldest record
    /// received and not applied; 0 otherwise (the primary knows it better then).
    pub held_since_ms: AtomicU64,
    /// Highest applied LSN known to be in the database file itself (after a checkpoint).
    pub durable_floor: AtomicU64,
    /// Why applying stopped, when it did (a divergence: a re-seed follows).
    pub failure: Mutex<Option<String>>,
    /// Why applying is being retried, while it is (a fault of this host).
    pub retrying: Mutex<Option<String>>,
    /// The operator's controls: pause, delay, stop LSN (`core::apply_gate`).
    /// Written by the spare's actor only (`controls.rs`); everyone else reads [`ApplyState::gate`].
    pub(super) gate: Mutex<crate::core::apply_gate::Gate>,
}

impl ApplyState {
    pub fn gate(&self) -> crate::core::apply_gate::Gate {
        *self.gate.lock().expect("gate lock")
    }
}

/// A running apply thread.
pub struct ApplierHandle {
    stop: Arc<AtomicBool>,
    wake: mpsc::SyncSender<()>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl ApplierHandle {
    /// Tells the thread there is new work.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Stops the thread and waits for it (it closes its database connection).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Starts the thread on `applier`, publishing applied LSNs to `applied_tx`.
pub fn spawn(
    name: &str,
    applier: Applier,
    log_dir: PathBuf,
    state: Arc<ApplyState>,
    applied_tx: Arc<watch::Sender<u64>>,
    events: Arc<crate::events::EventLog>,
) -> std::io::Result<ApplierHandle> {
    let (lsn, time) = applier.applied();
    state.applied.store(lsn, Ordering::Release);
    state.applied_time_ms.store(time, Ordering::Release);
    state.durable_floor.store(lsn, Ordering::Release);
    applied_tx.send_replace(lsn);
    *state.failure.lock().expect("failure lock") = None;
    let (wake, wake_rx) = mpsc::sync_channel(1);
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = Checkpointer::take_over(applier.connection(), &format!("{name}-checkpoint"))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let worker = Worker {
        _checkpointer: checkpointer,
        node: name.to_string(),
        applier,
        reader: LogReader::new(&log_dir),
        state,
        applied_tx,
        stop: stop.clone(),
        checkpointed: lsn,
        events,
        backoff: APPLY_RETRY_MIN,
        next_time: None,
    };
    let join = std::thread::Builder::new()
        .name(format!("{name}-applier"))
        .spawn(move || worker.run(wake_rx))?;
    Ok(ApplierHandle {
        stop,
        wake,
        join: Some(join),
    })
}

struct Worker {
    /// Checkpoints off the apply path; stopped and joined when the thread ends.
    _checkpointer: Checkpointer,
    node: String,
    applier: Applier,
    reader: LogReader,
    state: Arc<ApplyState>,
    applied_tx: Arc<watch::Sender<u64>>,
    stop: Arc<AtomicBool>,
    /// Applied LSN at the last complete checkpoint.
    checkpointed: u64,
    events: Arc<crate::events::EventLog>,
    /// The next pause before a retry.
    backoff: Duration,
    /// (LSN, commit time) of the next record to apply, once read.
    next_time: Option<(u64, u64)>,
}

impl Worker {
    fn run(mut self, wake: mpsc::Receiver<()>) {
        while !self.stop.load(Ordering::Acquire) {
            let pause = match self.step() {
                Ok(Next::ApplyTo(_)) => {
                    self.recovered();
                    continue;
                }
                Ok(Next::Wait { wait_ms }) => Duration::from_millis(wait_ms).min(IDLE_POLL),
                Ok(Next::Idle) => IDLE_POLL,
                Err(e) if e.is_transient() => {
                    // The full backoff, whatever arrives meanwhile: only a stop ends it.
                    let pause = self.failed(&e);
                    if !self.sleep_unless_stopped(&wake, pause) {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(node = %self.node, cause = %e, "applying stopped: this spare no longer matches the primary and must be re-seeded");
                    *self.state.failure.lock().expect("failure lock") = Some(e.to_string());
                    return;
                }
            };
            if wake.recv_timeout(pause) == Err(mpsc::RecvTimeoutError::Disconnected) {
                return;
            }
        }
    }

    /// A batch failed for a fault of this host: says so the first time, and returns how
    /// long to wait before trying again (longer each time, up to [`APPLY_RETRY_MAX`]).
    fn failed(&mut self, e: &Error) -> Duration {
        let mut retrying = self.state.retrying.lock().expect("retrying lock");
        if retrying.is_none() {
            tracing::error!(node = %self.node, cause = %e, "applying failed; retrying (a fault of this host, not a divergence: check the disk and what else uses the database)");
            self.events.record(
                "apply_error",
                None,
                &format!("applying failed, retrying: {e}"),
            );
        }
        *retrying = Some(e.to_string());
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(APPLY_RETRY_MAX);
        pause
    }

    /// Waits `pause` (new work does not cut it short); false once asked to stop.
    fn sleep_unless_stopped(&self, wake: &mpsc::Receiver<()>, pause: Duration) -> bool {
        let until = std::time::Instant::now() + pause;
        while !self.stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            if wake.recv_timeout(left) == Err(mpsc::RecvTimeoutError::Disconnected) {
                return false;
            }
        }
        false
    }

    /// A batch went through: ends a retry streak, saying so.
    fn recovered(&mut self) {
        self.backoff = APPLY_RETRY_MIN;
        let was = self.state.retrying.lock().expect("retrying lock").take();
        if let Some(why) = was {
            tracing::info!(node = %self.node, "applying resumed");
            self.events.record(
                "apply_recovered",
                None,
                &format!("applying resumed after: {why}"),
            );
        }
    }

    /// Applies what the gate allows now.
    fn step(&mut self) -> Result<Next, Error> {
        let applied = self.applier.applied().0;
        let flushed = self.state.flushed.load(Ordering::Acquire);
        let gate = self.state.gate();
        let held = gate.paused || gate.delay_ms > 0 || gate.stop_at.is_some();
        let next_time = if gate.delay_ms > 0 && flushed > applied {
            // The delay decides from it: read afresh, as always.
            Some(self.reader.record_at(applied + 1)?.time_ms)
        } else if held && flushed > applied {
            match self.time_of(applied + 1) {
                Ok(t) => Some(t),
                // Only for the lag shown (paused, stopped at an LSN): not knowing is fine.
                Err(e) => {
                    tracing::debug!(cause = %e, "cannot read the next record's time");
                    None
                }
            }
        } else {
            None
        };
        self.state
            .held_since_ms
            .store(next_time.unwrap_or(0), Ordering::Release);
        let now = crate::clock::wall_ms();
        let next = gate.next(applied, flushed, next_time, now, MAX_APPLY_BATCH_RECORDS);
        if let Next::ApplyTo(to) = next {
            self.apply_batch(applied + 1, to, &gate, now)?;
        }
        Ok(next)
    }

    /// The commit time of record `lsn` for the lag a paused spare shows, read once per
    /// record (it asks every poll).
    fn time_of(&mut self, lsn: u64) -> Result<u64, Error> {
        if let Some((at, t)) = self.next_time {
            if at == lsn {
                return Ok(t);
            }
        }
        let t = self.reader.record_at(lsn)?.time_ms;
        self.next_time = Some((lsn, t));
        Ok(t)
    }

    fn apply_batch(&mut self, from: u64, to: u64, gate: &Gate, now_ms: u64) -> Result<(), Error> {
        let mut records = self.reader.read(from, to, MAX_APPLY_BATCH_BYTES)?;
        let times: Vec<u64> = records.iter().map(|r| r.time_ms).collect();
        records.truncate(gate.due(&times, now_ms).max(1));
        self.applier.apply(&records)?;
        let (lsn, time) = self.applier.applied();
        self.state.applied_time_ms.store(time, Ordering::Release);
        self.state.applied.store(lsn, Ordering::Release);
        self.applied_tx.send_replace(lsn);
        if lsn - self.checkpointed >= CHECKPOINT_EVERY_RECORDS
            && crate::store::checkpoint(self.applier.connection())?
        {
            self.checkpointed = lsn;
            self.state.durable_floor.store(lsn, Ordering::Release);
        }
        Ok(())
    }
}
