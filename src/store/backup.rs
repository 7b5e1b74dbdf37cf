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
fn describe(file: &Path) -> Result<BackupInfo> {
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

/// Present in a data directory while `spare restore` fills it: a node refuses to start on
/// an unfinished restore (a database without its log's base, or the reverse, would start
/// a wrong history).
pub const RESTORING_MARK: &str = "RESTORING";

/// What a restore creates in the data directory, removed again if it fails.
const RESTORED: [&str; 3] = [crate::store::DB_FILE, "db.sqlite.restoring", "log"];

/// Copy buffer of a restore.
const RESTORE_COPY_BYTES: usize = 1024 * 1024;

/// Puts the backup `file` in place as the database of the empty data directory `data_dir`,
/// with the log starting right after it. Returns its description. `bar` follows the copy.
/// On failure the directory is left empty again (or, if even that fails, marked
/// [`RESTORING_MARK`], which a node refuses to start on).
pub fn restore(file: &Path, data_dir: &Path, bar: &ProgressBar) -> Result<BackupInfo> {
    let info = describe(file)?;
    let busy = std::fs::read_dir(data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if busy {
        return Err(Error::InvalidInput(format!(
            "{} is not empty: a restore never overwrites a node's data; stop the node and move its data directory away first",
            data_dir.display()
        )));
    }
    let mark = data_dir.join(RESTORING_MARK);
    crate::durable::create_new(&mark, b"spare restore in progress\n", false)?;
    crate::durable::sync_dir(data_dir)?;
    let restored = put_in_place(file, data_dir, &info, bar);
    if restored.is_err() {
        let cleaned = RESTORED.iter().all(|name| {
            let path = data_dir.join(name);
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.is_ok() || !path.exists()
        });
        if !cleaned {
            return restored.map(|()| info);
        }
    }
    std::fs::remove_file(&mark).map_err(Error::io(format!("remove {}", mark.display())))?;
    crate::durable::sync_dir(data_dir)?;
    restored.map(|()| info)
}

/// The copy (checked against the backup's CRC as it is read, so a file changed since its
/// description was written is refused), then the log's base, then the database's name.
fn put_in_place(file: &Path, data_dir: &Path, info: &BackupInfo, bar: &ProgressBar) -> Result<()> {
    use std::io::{Read, Write};
    let db = data_dir.join(crate::store::DB_FILE);
    let tmp = data_dir.join(RESTORED[1]);
    bar.set_length(info.size);
    let mut crc = 0u32;
    let copied = std::fs::File::open(file).and_then(|mut from| {
        let mut to = std::fs::File::create_new(&tmp)?;
        let mut buf = vec![0u8; RESTORE_COPY_BYTES];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return to.sync_all();
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            to.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
    });
    copied.map_err(Error::io(format!(
        "copy {} to {}",
        file.display(),
        tmp.display()
    )))?;
    if crc != info.crc {
        return Err(damaged(file));
    }
    let log_dir = data_dir.join("log");
    std::fs::create_dir_all(&log_dir)
        .map_err(Error::io(format!("create {}", log_dir.display())))?;
    crate::log::base::save(&log_dir, &info.position)?;
    std::fs::rename(&tmp, &db).map_err(Error::io(format!("rename to {}", db.display())))?;
    crate::durable::sync_dir(data_dir)
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
