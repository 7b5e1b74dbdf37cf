//! Backups (DESIGN.md §9): a consistent online copy of a data node's database with the
//! position of the last record it holds, taken with `VACUUM INTO` in a read transaction
//! (writers go on); restoring one into an empty data directory (the database, and the log's
//! base at that position, so the node continues the history right after it); and
//! point-in-time restore: the records of an archived log after the backup, up to an LSN or
//! a time, appended to the restored log (the node applies them when it starts).
//!
//! A backup is two files: `NAME.sqlite` (an ordinary SQLite database) and `NAME.sqlite.json`
//! ([`BackupInfo`]).

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::durable::LOCK_FILE;
use crate::error::{Error, Result};
use crate::log::{LogReader, Position};
use crate::store::{meta, open, ConnKind};

/// Records copied from the archive per step.
const ARCHIVE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub cluster: String,
    pub node: String,
    /// The last record the copy includes.
    pub position: Position,
    /// When it was taken (ms since the Unix epoch).
    pub taken_ms: u64,
    pub size: u64,
    /// CRC32C of the whole file.
    pub crc: u32,
}

/// The sidecar of a backup file.
pub fn info_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(".json");
    PathBuf::from(s)
}

/// Copies the database `db` to `out` (a new file) and describes it; `log_dir` and `base`
/// give the position of its last record.
pub fn take(
    db: &Path,
    log_dir: &Path,
    base: Position,
    out: &Path,
    cluster: &str,
    node: &str,
) -> Result<BackupInfo> {
    let conn = open(db, ConnKind::Snapshot)?;
    conn.execute("VACUUM INTO ?1", [out.to_string_lossy()])?;
    drop(conn);
    let copy =
        rusqlite::Connection::open_with_flags(out, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (lsn, _) = meta::applied(&copy)?;
    drop(copy);
    let position = if lsn == base.lsn {
        base
    } else {
        Position::of(&LogReader::new(log_dir).record_at(lsn)?)
    };
    let size = std::fs::metadata(out)
        .map_err(Error::io(format!("stat {}", out.display())))?
        .len();
    Ok(BackupInfo {
        cluster: cluster.to_string(),
        node: node.to_string(),
        position,
        taken_ms: crate::clock::wall_ms(),
        size,
        crc: crate::store::snapshot::file_crc(out)?,
    })
}

/// Reads a backup's description (the file is checked against it where it is read whole).
pub fn describe(file: &Path) -> Result<BackupInfo> {
    crate::durable::read_json(&info_path(file))?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} is missing: a backup is the .sqlite file and its .json description",
            info_path(file).display()
        ))
    })
}

/// Reads a backup's description and checks the file against it.
pub fn verify(file: &Path) -> Result<BackupInfo> {
    let info = describe(file)?;
    let crc = crate::store::snapshot::file_crc(file)?;
    if crc != info.crc {
        return Err(damaged(file));
    }
    Ok(info)
}

fn damaged(file: &Path) -> Error {
    Error::InvalidData(format!(
        "{} does not match its description (checksum): the file is damaged or not this backup",
        file.display()
    ))
}

/// Present in a data directory while `spare restore` fills it (and rolls it forward): a
/// node refuses to start on an unfinished restore (a database without its log's base, or
/// short of the point in time asked, would start a wrong history).
pub const RESTORING_MARK: &str = "RESTORING";

/// What a restore creates in the data directory, removed again if it fails.
const RESTORED: [&str; 3] = [crate::store::DB_FILE, "db.sqlite.restoring", "log"];

/// Copy buffer of a restore.
const RESTORE_COPY_BYTES: usize = 1024 * 1024;

/// A restore under way in a data directory: it holds the directory's lock (no node starts
/// meanwhile), and the [`RESTORING_MARK`] stays until [`Restoring::finish`].
pub struct Restoring {
    data_dir: PathBuf,
    _lock: std::fs::File,
}

/// Puts the backup `file` in place as the database of the empty data directory `data_dir`
/// (created if missing), with the log starting right after it; `bar` follows the copy.
/// Returns the restore, to roll forward and finish, and the backup's description. On
/// failure the directory is left empty again.
pub fn begin_restore(
    file: &Path,
    data_dir: &Path,
    bar: &ProgressBar,
) -> Result<(Restoring, BackupInfo)> {
    let info = describe(file)?;
    std::fs::create_dir_all(data_dir)
        .map_err(Error::io(format!("create {}", data_dir.display())))?;
    if let Some(parent) = data_dir.parent() {
        crate::durable::sync_dir(parent)?;
    }
    // The lock first: from then on no node writes here, so what the check below sees empty
    // stays empty, and nothing a node made is ever removed.
    let had_lock = data_dir.join(LOCK_FILE).exists();
    let restoring = Restoring {
        data_dir: data_dir.to_path_buf(),
        _lock: lock(data_dir)?,
    };
    if entries(data_dir)?.iter().any(|n| n != LOCK_FILE) {
        if !had_lock {
            let _ = std::fs::remove_file(data_dir.join(LOCK_FILE));
        }
        return Err(not_empty(data_dir));
    }
    let mark = data_dir.join(RESTORING_MARK);
    crate::durable::create_new(&mark, b"spare restore in progress\n", false)?;
    crate::durable::sync_dir(data_dir)?;
    match put_in_place(file, data_dir, &info, bar) {
        Ok(()) => Ok((restoring, info)),
        Err(e) => Err(restoring.abandon_with(e)),
    }
}

fn entries(dir: &Path) -> Result<Vec<String>> {
    let list = std::fs::read_dir(dir).map_err(Error::io(format!("read {}", dir.display())))?;
    Ok(list
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

fn not_empty(data_dir: &Path) -> Error {
    Error::InvalidInput(format!(
        "{} is not empty: a restore never overwrites a node's data; stop the node and move its data directory away first",
        data_dir.display()
    ))
}

/// Takes the data directory's lock as a node does: a running node holds it.
fn lock(data_dir: &Path) -> Result<std::fs::File> {
    crate::durable::try_lock_dir(data_dir)?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} is in use by a running spare process: stop the node first",
            data_dir.display()
        ))
    })
}

impl Restoring {
    /// Rolls the restored log forward through `archive` (see [`roll_forward`]); on failure
    /// the directory is emptied again.
    pub fn roll_forward(
        &self,
        archive: &Path,
        from: Position,
        target: Target,
        bar: &ProgressBar,
    ) -> Result<u64> {
        roll_forward(&self.data_dir, archive, from, target, bar).map_err(|e| self.abandon_with(e))
    }

    /// The restore is complete: the mark goes, the node may start.
    pub fn finish(self) -> Result<()> {
        let mark = self.data_dir.join(RESTORING_MARK);
        std::fs::remove_file(&mark).map_err(Error::io(format!("remove {}", mark.display())))?;
        crate::durable::sync_dir(&self.data_dir)
    }

    /// Empties the directory again (what the restore made, then its lock and mark) and
    /// returns `e`, saying so if the directory could not be emptied (the mark then stays).
    fn abandon_with(&self, e: Error) -> Error {
        if self.abandon() {
            return Error::InvalidData(format!(
                "{e} (nothing was restored: {} is empty again)",
                self.data_dir.display()
            ));
        }
        Error::InvalidData(format!(
            "{e}; and {} could not be emptied again: it keeps a {RESTORING_MARK} file, so no node starts on it; move its contents away before restoring again",
            self.data_dir.display()
        ))
    }

    fn abandon(&self) -> bool {
        let removed = RESTORED.iter().chain([&LOCK_FILE]).all(|name| {
            let path = self.data_dir.join(name);
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.is_ok() || !path.exists()
        });
        removed
            && crate::durable::sync_dir(&self.data_dir).is_ok()
            && std::fs::remove_file(self.data_dir.join(RESTORING_MARK)).is_ok()
            && crate::durable::sync_dir(&self.data_dir).is_ok()
    }
}

/// The copy (checked against the backup's CRC as it is read, so a file changed since its
/// description was written is refused), then the log's base, then the database's name.
fn put_in_place(file: &Path, data_dir: &Path, info: &BackupInfo, bar: &ProgressBar) -> Result<()> {
    let tmp = data_dir.join(RESTORED[1]);
    let crc = copy_counting(file, &tmp, info.size, bar)?;
    if crc != info.crc {
        return Err(damaged(file));
    }
    let log_dir = data_dir.join("log");
    std::fs::create_dir(&log_dir).map_err(Error::io(format!("create {}", log_dir.display())))?;
    crate::log::base::save(&log_dir, &info.position)?;
    let db = data_dir.join(crate::store::DB_FILE);
    // Under the lock, in a directory that held nothing else: nothing to replace.
    std::fs::rename(&tmp, &db).map_err(Error::io(format!("put {} in place", db.display())))?;
    crate::durable::sync_dir(data_dir)
}

/// Copies `file` to the new file `to` (synced), `bar` counting; returns the CRC32C read.
fn copy_counting(file: &Path, to: &Path, size: u64, bar: &ProgressBar) -> Result<u32> {
    use std::io::{Read, Write};
    bar.set_length(size);
    let mut crc = 0u32;
    let copied = std::fs::File::open(file).and_then(|mut from| {
        let mut out = std::fs::File::create_new(to)?;
        let mut buf = vec![0u8; RESTORE_COPY_BYTES];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return out.sync_all();
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            out.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
    });
    copied.map_err(Error::io(format!(
        "copy {} to {}",
        file.display(),
        to.display()
    )))?;
    Ok(crc)
}

/// Where a point-in-time restore stops.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Lsn(u64),
    /// The last record committed at or before this time (ms since the Unix epoch).
    Time(u64),
}

/// Appends to the restored log in `data_dir` the records of the archive `archive` after the
/// backup's position, up to `target`. Returns the LSN reached. `bar` counts the records.
pub fn roll_forward(
    data_dir: &Path,
    archive: &Path,
    from: Position,
    target: Target,
    bar: &ProgressBar,
) -> Result<u64> {
    let log_dir = data_dir.join("log");
    let mut log = crate::log::open(&log_dir, from.lsn)?.writer;
    let end = crate::log::last_lsn_in(archive)?.unwrap_or(0);
    let last = match target {
        Target::Lsn(l) if l > end => {
            return Err(Error::InvalidInput(format!(
                "the archive {} ends at LSN {end}, before {l}",
                archive.display()
            )))
        }
        Target::Lsn(l) => l,
        Target::Time(_) => end,
    };
    bar.set_length(last.saturating_sub(from.lsn));
    let mut reader = LogReader::new(archive);
    let mut next = from.lsn + 1;
    while next <= last {
        let batch = reader.read(next, last, ARCHIVE_BATCH_BYTES).map_err(|e| {
            Error::InvalidInput(format!(
                "the archive {} does not hold record {next} (the backup ends at {}): {e}",
                archive.display(),
                from.lsn
            ))
        })?;
        let keep: Vec<_> = match target {
            Target::Time(t) => batch.into_iter().take_while(|r| r.time_ms <= t).collect(),
            Target::Lsn(_) => batch,
        };
        if keep.is_empty() {
            break;
        }
        next += keep.len() as u64;
        log.append_received(&keep)?;
        log.sync()?;
        bar.inc(keep.len() as u64);
    }
    Ok(next - 1)
}
