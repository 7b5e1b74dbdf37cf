//! Scheduled backups on a data node (`backup_dir`, `backup_every`, DESIGN.md §9): every period
//! a consistent copy of the node's database goes to `backup_dir` as
//! `<node>-<time>-lsn<N>.sqlite` with its `.json` description, then the rolling retention of
//! `core::backup_retention` deletes what it does not keep. A failed backup is an ERROR and an
//! event; the next period tries again.

use std::path::Path;

use crate::actors::shared::DataShared;
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::store::backup::{self, BackupInfo};

/// Takes one scheduled backup of `shared`'s database into `dir`, then prunes what the
/// rolling retention does not keep.
pub fn take_scheduled(
    shared: &DataShared,
    dir: &Path,
    cluster: &str,
    keep: (usize, usize),
) -> Result<BackupInfo> {
    let base = *shared.base.lock().expect("base lock");
    let info = take_into(dir, shared, base, cluster)?;
    prune(dir, &shared.node.name, keep.0, keep.1)?;
    Ok(info)
}

/// Logs and records (events log) how a scheduled backup went.
pub fn report(
    events: &EventLog,
    result: std::result::Result<Result<BackupInfo>, tokio::task::JoinError>,
) {
    match result {
        Ok(Ok(info)) => {
            tracing::info!(
                lsn = info.position.lsn,
                bytes = info.size,
                "scheduled backup taken"
            );
            events.record(
                "backup_taken",
                None,
                &format!("backup at LSN {} ({} bytes)", info.position.lsn, info.size),
            );
        }
        Ok(Err(e)) => {
            tracing::error!(cause = %e, "the scheduled backup failed; it is tried again next period");
            events.record("backup_failed", None, &e.to_string());
        }
        Err(e) => tracing::error!(cause = %e, "the scheduled backup task failed"),
    }
}

/// Takes one backup into `dir`.
fn take_into(
    dir: &Path,
    shared: &DataShared,
    base: crate::log::Position,
    cluster: &str,
) -> Result<BackupInfo> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let tmp = dir.join(format!(".{}-{stamp}.partial", shared.node.name));
    let info = backup::take(
        &shared.node.data_dir.join(crate::store::DB_FILE),
        &shared.log_dir(),
        base,
        &tmp,
        cluster,
        &shared.node.name,
    )?;
    let file = dir.join(format!(
        "{}-{stamp}-lsn{}.sqlite",
        shared.node.name, info.position.lsn
    ));
    crate::durable::write_json(&backup::info_path(&file), &info)?;
    std::fs::rename(&tmp, &file).map_err(Error::io(format!("rename {}", tmp.display())))?;
    crate::durable::sync_dir(dir)?;
    Ok(info)
}

/// Deletes this node's backups in `dir` that the rolling retention does not keep.
pub fn prune(dir: &Path, node: &str, daily: usize, monthly: usize) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(Error::io(format!("list {}", dir.display())))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&format!("{node}-")) && name.ends_with(".sqlite")) {
            continue;
        }
        let path = e.path();
        if let Ok(Some(info)) = crate::durable::read_json::<BackupInfo>(&backup::info_path(&path)) {
            found.push((path, info.taken_ms));
        }
    }
    let times: Vec<u64> = found.iter().map(|(_, t)| *t).collect();
    let keep = crate::core::backup_retention::keep(&times, daily, monthly);
    let mut deleted = Vec::new();
    for (i, (path, _)) in found.iter().enumerate() {
        if !keep.contains(&i) {
            std::fs::remove_file(path).map_err(Error::io(format!("delete {}", path.display())))?;
            let _ = std::fs::remove_file(backup::info_path(path));
            deleted.push(path.display().to_string());
        }
    }
    Ok(deleted)
}
