//! Recovery of a data node's storage, before any role starts: a seed whose installation a
//! crash cut short is finished, the log's torn tail is cut, and the log is replayed into
//! SQLite past its applied LSN (in bounded batches). Also the two rewrites of history an
//! operator asks for: installing a seed, and cutting the log at a promotion `--until`.
//! Pure storage: no actor, no thread, testable on a directory.

use std::path::Path;

use crate::error::{Error, Result};
use crate::log::{self, LogWriter};
use crate::store::apply::Applier;
use crate::store::{self, ConnKind};

/// Records replayed per SQLite transaction during recovery.
pub const REPLAY_BATCH_RECORDS: u64 = 1000;
/// Bytes of records read per replayed batch (at least one record): what recovery holds in
/// memory, whatever the backlog.
pub const REPLAY_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Opens the log and the database and replays the log past SQLite's applied LSN. A seed
/// whose installation a crash cut short is finished first.
pub fn recover(data_dir: &Path, segment_bytes: u64) -> Result<(LogWriter, Applier)> {
    recover_gated(
        data_dir,
        segment_bytes,
        crate::core::apply_gate::Gate::default(),
    )
}

/// Like [`recover`], replaying only what `gate` lets a spare apply now (paused: nothing;
/// delayed: what is due), so a restart does not apply what the operator held back.
pub fn recover_gated(
    data_dir: &Path,
    segment_bytes: u64,
    gate: crate::core::apply_gate::Gate,
) -> Result<(LogWriter, Applier)> {
    let seed = crate::store::snapshot::SeedDir::new(data_dir);
    if let Some(info) = seed.marker()? {
        tracing::warn!(
            lsn = info.position.lsn,
            "finishing the installation of a seed that a crash interrupted"
        );
        finish_install(data_dir, &info)?;
    }
    let mut applier = Applier::new(store::open(
        &data_dir.join(store::DB_FILE),
        ConnKind::Applier,
    )?)?;
    let now = crate::clock::wall_ms();
    let opened = log::open_with(&data_dir.join("log"), applier.applied().0, |r| {
        !gate.paused && gate.due(&[r.time_ms], now) == 1
    })?;
    if let Some(torn) = &opened.torn {
        tracing::warn!(%torn, "cut a torn record at the end of the log (a write cut short by a crash; it was never acknowledged)");
    }
    replay(&data_dir.join("log"), &opened, &mut applier)?;
    let mut writer = opened.writer;
    writer.set_segment_target_bytes(segment_bytes);
    Ok((writer, applier))
}

/// Applies the records recovery named, read from the log in bounded batches: a spare
/// restarted with a large backlog holds one batch in memory, not the backlog.
fn replay(log_dir: &Path, opened: &log::Opened, applier: &mut Applier) -> Result<()> {
    if opened.replay_count() == 0 {
        return Ok(());
    }
    tracing::info!(
        records = opened.replay_count(),
        from = opened.replay_after + 1,
        "replaying the log into the database"
    );
    let mut reader = log::LogReader::new(log_dir);
    let mut next = opened.replay_after + 1;
    while next <= opened.replay_to {
        let to = opened.replay_to.min(next + REPLAY_BATCH_RECORDS - 1);
        let batch = reader.read(next, to, REPLAY_BATCH_BYTES)?;
        applier.apply(&batch)?;
        next = batch.last().expect("a read returns a record at least").lsn + 1;
    }
    Ok(())
}

/// Puts a verified seed in place: the snapshot becomes the database, and the log restarts
/// right after the snapshot's last record. Every step can be redone after a crash.
pub fn finish_install(data_dir: &Path, info: &crate::store::snapshot::SnapshotInfo) -> Result<()> {
    let seed = crate::store::snapshot::SeedDir::new(data_dir);
    seed.replace_db(&data_dir.join(store::DB_FILE))?;
    let log_dir = data_dir.join("log");
    match std::fs::remove_dir_all(&log_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("remove {}", log_dir.display()))(e))
        }
        _ => {}
    }
    std::fs::create_dir_all(&log_dir)
        .map_err(Error::io(format!("create {}", log_dir.display())))?;
    crate::log::base::save(&log_dir, &info.position)?;
    seed.clear_marker()
}

/// A promotion `--until`: keeps the records after `until` in quarantine (readable), then
/// cuts the log there, before this node starts its history as the primary.
pub fn cut_history_after(data_dir: &Path, until: u64) -> Result<()> {
    let log_dir = data_dir.join("log");
    let tail = log::open_with(&log_dir, until, |_| false)?
        .writer
        .tail()
        .lsn;
    if tail <= until {
        return Ok(());
    }
    let dir = crate::store::quarantine::save(
        &log_dir,
        until,
        tail,
        &data_dir.join("quarantine"),
        &format!(
            "promoted up to LSN {until}: the records after it are not part of the new history"
        ),
        None,
    )?;
    crate::log::truncate_after(&log_dir, until)?;
    tracing::warn!(until, discarded_to = tail, folder = %dir.display(), "cut the log after the chosen LSN; the rest is kept in quarantine");
    Ok(())
}
