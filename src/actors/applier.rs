//! The spare's apply thread: applies, in order, what the link has made durable in the local
//! log, [`MAX_APPLY_BATCH_RECORDS`] records per SQLite transaction. It reads from the log
//! files, so receiving never waits for applying (a slow apply only grows the local log).
//!
//! Every [`CHECKPOINT_EVERY_RECORDS`] it checkpoints SQLite's WAL; once a checkpoint completes,
//! what it applied is durable in the database file, and the log may drop records up to there
//! (`ApplyState::durable_floor`).
//!
//! A divergence (schema mismatch, changeset conflict) stops applying, with an ERROR: the copy
//! no longer matches the primary and must be re-seeded; it is never papered over. The thread
//! also stops when asked (a seed is being installed), and is started again on the new files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::core::apply_gate::{Gate, Next};
use crate::error::Error;
use crate::log::LogReader;
use crate::store::apply::Applier;

/// Records applied per SQLite transaction.
pub const MAX_APPLY_BATCH_RECORDS: u64 = 1000;
/// Bytes of records read per batch (at least one record).
pub const MAX_APPLY_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Applied records between two WAL checkpoints.
pub const CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// The thread re-checks for work (and for a stop request) at least this often.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// What the apply thread shares with the link and status.
#[derive(Default)]
pub struct ApplyState {
    /// Highest LSN durable in the local log: the apply target.
    pub flushed: AtomicU64,
    /// Highest LSN applied, and its commit time.
    pub applied: AtomicU64,
    pub applied_time_ms: AtomicU64,
    /// Highest applied LSN known to be in the database file itself (after a checkpoint).
    pub durable_floor: AtomicU64,
    /// Why applying stopped, when it did.
    pub failure: Mutex<Option<String>>,
    /// The operator's controls: pause, delay, stop LSN (`core::apply_gate`).
    pub gate: Mutex<crate::core::apply_gate::Gate>,
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
) -> std::io::Result<ApplierHandle> {
    let (lsn, time) = applier.applied();
    state.applied.store(lsn, Ordering::Release);
    state.applied_time_ms.store(time, Ordering::Release);
    state.durable_floor.store(lsn, Ordering::Release);
    applied_tx.send_replace(lsn);
    *state.failure.lock().expect("failure lock") = None;
    let (wake, wake_rx) = mpsc::sync_channel(1);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        node: name.to_string(),
        applier,
        reader: LogReader::new(&log_dir),
        state,
        applied_tx,
        stop: stop.clone(),
        checkpointed: lsn,
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
    node: String,
    applier: Applier,
    reader: LogReader,
    state: Arc<ApplyState>,
    applied_tx: Arc<watch::Sender<u64>>,
    stop: Arc<AtomicBool>,
    /// Applied LSN at the last complete checkpoint.
    checkpointed: u64,
}

impl Worker {
    fn run(mut self, wake: mpsc::Receiver<()>) {
        while !self.stop.load(Ordering::Acquire) {
            let pause = match self.step() {
                Ok(Next::ApplyTo(_)) => continue,
                Ok(Next::Wait { wait_ms }) => Duration::from_millis(wait_ms).min(IDLE_POLL),
                Ok(Next::Idle) => IDLE_POLL,
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

    /// Applies what the gate allows now.
    fn step(&mut self) -> Result<Next, Error> {
        let applied = self.applier.applied().0;
        let flushed = self.state.flushed.load(Ordering::Acquire);
        let gate = self.state.gate();
        let next_time = if gate.delay_ms > 0 && flushed > applied {
            Some(self.reader.record_at(applied + 1)?.time_ms)
        } else {
            None
        };
        let now = crate::actors::committer::now_ms();
        let next = gate.next(applied, flushed, next_time, now, MAX_APPLY_BATCH_RECORDS);
        if let Next::ApplyTo(to) = next {
            self.apply_batch(applied + 1, to, &gate, now)?;
        }
        Ok(next)
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
