//! The replication log: the source of truth for durability.
//!
//! Every committed transaction is one record (see [`record`] for the byte format), appended
//! to segment files in `data/<node>/log/` and fsynced before the commit is acknowledged.
//! SQLite is a materialised view of the log: recovery replays the records past the LSN that
//! SQLite says it applied.
//!
//! Invariants:
//! - LSNs are consecutive from 1; every record's chain follows its predecessor's.
//! - Epochs never go down along the log.
//! - Records at or below the writer's durable position are on disk and never change.
//!
//! Recovery ([`open`]): every segment is scanned record by record and checked. A bad record
//! in the last write of the newest segment (no sync mark after it: a write a crash cut
//! short, never acknowledged) is cut off with a warning, unless the database already
//! applied it (then it was durable). Damage anywhere else, durable records included, stops
//! the node with an error naming the file and offset, and cuts nothing (see [`segment`]). The records to replay into SQLite are named, not loaded: the caller
//! reads them in bounded batches.
//!
//! Caveats: the whole log is kept (retention comes with re-seeding); recovery reads every
//! segment at start.

pub mod base;
pub mod ddl_names;
pub mod inspect;
pub mod position;
pub mod reader;
pub mod record;
pub mod retention;
pub mod segment;
pub mod summary;
pub mod writer;

use std::path::Path;

use crate::error::{Error, Result};
pub use position::Position;
pub use reader::LogReader;
pub use record::{Record, RecordKind};
pub use writer::{LogWriter, SegmentInfo};

/// What opening a log found: the writer positioned at the end, and which records the
/// caller should re-apply to SQLite: `replay_after < lsn <= replay_to` (none when
/// `replay_to <= replay_after`), to be read with a [`LogReader`] in bounded batches.
pub struct Opened {
    pub writer: LogWriter,
    pub replay_after: u64,
    pub replay_to: u64,
    /// Number of bytes cut from a torn tail, with why, if any.
    pub torn: Option<String>,
}

impl Opened {
    /// How many records the caller should replay.
    pub fn replay_count(&self) -> u64 {
        self.replay_to.saturating_sub(self.replay_after)
    }
}

/// Opens (creating if needed) the log in `dir`, checks it, cuts a torn tail, and says which
/// records follow `replay_after` for replay.
pub fn open(dir: &Path, replay_after: u64) -> Result<Opened> {
    open_with(dir, replay_after, |_| true)
}

/// Like [`open`], replaying only the records after `replay_after` while `keep` says so (a
/// paused spare replays nothing, a delayed one only what is due). Memory stays bounded by
/// one record whatever the log's size (segments are scanned record by record), and on a
/// bad record by the rest of its segment.
pub fn open_with(
    dir: &Path,
    replay_after: u64,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<Opened> {
    std::fs::create_dir_all(dir)
        .map_err(Error::io(format!("create log directory {}", dir.display())))?;
    let segments = segment::list_segments(dir)?;
    let mut tail = base::load(dir)?.unwrap_or_default();
    let mut infos = Vec::new();
    let mut replay_to = replay_after;
    let mut keeping = true;
    let mut torn = None;
    for (i, &first) in segments.iter().enumerate() {
        let path = segment::segment_path(dir, first);
        if first != tail.lsn + 1 {
            return Err(Error::InvalidData(format!(
                "log segment {} should start at LSN {} (records are missing)",
                path.display(),
                tail.lsn + 1
            )));
        }
        let is_newest = i + 1 == segments.len();
        let scanned = segment::scan(&path, is_newest, (tail.lsn, tail.chain), |r| {
            if keeping && r.lsn > replay_after {
                keeping = keep(r);
                if keeping {
                    replay_to = r.lsn;
                }
            }
        })?;
        if let Some(why) = scanned.torn {
            torn = Some((path.clone(), scanned.valid_len, why));
        }
        if let Some(last) = scanned.last {
            tail = last;
        }
        infos.push(SegmentInfo {
            first_lsn: first,
            last: tail,
            bytes: scanned.valid_len,
        });
    }
    if tail.lsn < replay_after {
        // The database commits a record only once the log holds it durably: a cut below
        // what it applied would cut durable records, so it is damage, not a torn write.
        if let Some((path, at, why)) = &torn {
            return Err(Error::InvalidData(format!(
                "replication log is corrupt in {} at offset {at} ({why}): the database already applied LSN {replay_after}, so these records were durable; the node stops rather than cut them (restore this node from a spare or a backup)",
                path.display()
            )));
        }
        return Err(Error::InvalidData(format!(
            "the database says it applied LSN {replay_after} but the log in {} ends at {}: the log was lost or truncated",
            dir.display(),
            tail.lsn
        )));
    }
    let oldest = infos.first().map_or(tail.lsn + 1, |s| s.first_lsn);
    if replay_after + 1 < oldest {
        return Err(Error::InvalidData(format!(
            "the database applied LSN {replay_after} but the log in {} starts at {oldest}: records it needs were deleted",
            dir.display()
        )));
    }
    let torn = match torn {
        Some((path, at, why)) => {
            truncate(&path, at)?;
            Some(format!("{}: {why}", path.display()))
        }
        None => None,
    };
    let writer = LogWriter::resume(dir, tail, infos)?;
    Ok(Opened {
        writer,
        replay_after,
        replay_to,
        torn,
    })
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io(format!(
            "open {} to cut its torn tail",
            path.display()
        )))?;
    file.set_len(len).map_err(Error::io(format!(
        "cut the torn tail of {}",
        path.display()
    )))?;
    file.sync_all()
        .map_err(Error::io(format!("fsync {}", path.display())))
}

#[cfg(test)]
mod tests;

/// Cuts the log in `dir` right after record `lsn` (a promotion `--until`: what follows was
/// kept in quarantine first). `lsn` must be in the log or its base.
pub fn truncate_after(dir: &Path, lsn: u64) -> Result<()> {
    let segments = segment::list_segments(dir)?;
    for &first in segments.iter().filter(|&&f| f > lsn) {
        let path = segment::segment_path(dir, first);
        std::fs::remove_file(&path).map_err(Error::io(format!("remove {}", path.display())))?;
    }
    if let Some(&first) = segments.iter().rev().find(|&&f| f <= lsn) {
        let path = segment::segment_path(dir, first);
        let bytes = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        let spans = segment::record_spans(&path, &bytes)?;
        let kept = (lsn + 1 - first) as usize;
        let Some(&(at, len)) = spans.get(kept - 1) else {
            return Err(Error::InvalidData(format!(
                "{}: record {lsn} is not readable",
                path.display()
            )));
        };
        cut_segment(&path, (at + len) as u64)?;
    }
    crate::durable::sync_dir(dir)
}

/// Cuts the segment at `path` to `len` bytes and syncs it.
fn cut_segment(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("truncate {}", path.display())))
}

/// About how many bytes the log in `dir` holds after record `lsn`: every segment that
/// starts after it, and of the segment holding it the share of its records that follow it
/// (`last_lsn`: the log's last record). An estimate, for choosing how to catch a spare up.
pub fn bytes_after(dir: &Path, lsn: u64, last_lsn: u64) -> Result<u64> {
    let firsts = segment::list_segments(dir)?;
    let mut total = 0u64;
    for (i, &first) in firsts.iter().enumerate() {
        let last = firsts.get(i + 1).map_or(last_lsn, |next| next - 1);
        if last <= lsn || last < first {
            continue;
        }
        let path = segment::segment_path(dir, first);
        let size = std::fs::metadata(&path)
            .map_err(Error::io(format!("read the size of {}", path.display())))?
            .len();
        let records = last - first + 1;
        let after = (last - lsn).min(records);
        total += (size as u128 * after as u128 / records as u128) as u64;
    }
    Ok(total)
}

/// The LSN of the last whole record in the segments of `dir` (an archive, which has no base
/// file), or None if it holds no segment.
pub fn last_lsn_in(dir: &Path) -> Result<Option<u64>> {
    let Some(&first) = segment::list_segments(dir)?.last() else {
        return Ok(None);
    };
    let path = segment::segment_path(dir, first);
    let bytes = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
    let count = segment::record_spans(&path, &bytes)?.len() as u64;
    Ok((count > 0).then(|| first + count - 1))
}

/// Copies every complete segment of the log in `dir` (all but the newest) that `archive`
/// lacks: for point-in-time restore. Each copy is written aside, synced, then renamed, so the
/// archive holds only whole segments. Returns how many were copied.
pub fn archive_segments(dir: &Path, archive: &Path) -> Result<usize> {
    let segments = segment::list_segments(dir)?;
    let Some((_, complete)) = segments.split_last() else {
        return Ok(0);
    };
    std::fs::create_dir_all(archive).map_err(Error::io(format!(
        "create the log archive {}",
        archive.display()
    )))?;
    let mut copied = 0;
    for &first in complete {
        let src = segment::segment_path(dir, first);
        let dst = segment::segment_path(archive, first);
        if dst.exists() {
            continue;
        }
        let tmp = dst.with_extension("partial");
        std::fs::copy(&src, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &dst))
            .map_err(Error::io(format!(
                "archive {} to {}",
                src.display(),
                dst.display()
            )))?;
        copied += 1;
    }
    if copied > 0 {
        crate::durable::sync_dir(archive)?;
    }
    Ok(copied)
}
