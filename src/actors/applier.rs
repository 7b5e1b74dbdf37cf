//! The spare's apply thread: applies, in order, what the link has made durable in the local
//! log, [`MAX_APPLY_BATCH_RECORDS`] records per SQLite transaction. It reads from the log
//! files, so receiving never waits for applying (a slow apply only grows the local log).
//!
//! A divergence (schema mismatch, changeset conflict) stops applying, with an ERROR: the copy
//! no longer matches the primary and must be re-seeded; it is never papered over.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;
use crate::log::LogReader;
use crate::store::apply::Applier;

/// Records applied per SQLite transaction.
pub const MAX_APPLY_BATCH_RECORDS: u64 = 1000;
/// Bytes of records read per batch (at least one record).
pub const MAX_APPLY_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The thread re-checks for work at least this often even without a wake-up.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// What the apply thread shares with the link and status.
#[derive(Default)]
pub struct ApplyState {
    /// Highest LSN durable in the local log: the apply target.
    pub flushed: AtomicU64,
    /// Highest LSN applied, and its commit time.
    pub applied: AtomicU64,
    pub applied_time_ms: AtomicU64,
    /// Why applying stopped, when it did.
    pub failure: Mutex<Option<String>>,
}

/// Starts the thread; it ends when `wake`'s sender is dropped.
pub fn spawn(
    name: &str,
    mut applier: Applier,
    log_dir: PathBuf,
    state: Arc<ApplyState>,
    wake: mpsc::Receiver<()>,
    applied_tx: watch::Sender<u64>,
) -> std::io::Result<()> {
    let (lsn, time) = applier.applied();
    state.applied.store(lsn, Ordering::Release);
    state.applied_time_ms.store(time, Ordering::Release);
    let node = name.to_string();
    std::thread::Builder::new()
        .name(format!("{name}-applier"))
        .spawn(move || {
            let mut reader = LogReader::new(&log_dir);
            loop {
                let applied = applier.applied().0;
                let target = state
                    .flushed
                    .load(Ordering::Acquire)
                    .min(applied + MAX_APPLY_BATCH_RECORDS);
                if target > applied {
                    let batch = reader
                        .read(applied + 1, target, MAX_APPLY_BATCH_BYTES)
                        .and_then(|recs| applier.apply(&recs));
                    if let Err(e) = batch {
                        report_failure(&node, &state, &e);
                        return;
                    }
                    let (lsn, time) = applier.applied();
                    state.applied_time_ms.store(time, Ordering::Release);
                    state.applied.store(lsn, Ordering::Release);
                    applied_tx.send_replace(lsn);
                    continue;
                }
                match wake.recv_timeout(IDLE_POLL) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
    Ok(())
}

fn report_failure(node: &str, state: &ApplyState, e: &Error) {
    tracing::error!(%node, cause = %e, "applying stopped: this spare no longer matches the primary and must be re-seeded");
    *state.failure.lock().expect("failure lock") = Some(e.to_string());
}
