//! Segment files: naming, listing, and the recovery scan of one segment.
//!
//! A segment is named after the LSN of its first record (`00000000000000000001.seg`) and
//! holds consecutive records. Only the newest segment may end with a torn write: the writer
//! fsyncs a segment before it starts the next one.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::record::{self, DecodeError, Record, FRAME_PREFIX_BYTES};

/// A segment is closed and a new one started once it reaches this size. Bounds the file a
/// recovery scan or a reader positioning has to read through.
pub const SEGMENT_TARGET_BYTES: u64 = 64 * 1024 * 1024;
const SEGMENT_SUFFIX: &str = ".seg";

pub fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SEGMENT_SUFFIX}"))
}

/// First LSNs of the segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(Error::io(format!("list log directory {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("list log directory {}", dir.display())))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(lsn) if lsn > 0 => out.push(lsn),
            _ => {
                return Err(Error::InvalidData(format!(
                    "unexpected file {} in log directory {}",
                    name.to_string_lossy(),
                    dir.display()
                )))
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What the recovery scan of a segment found.
pub struct ScannedSegment {
    /// The valid records, in order (only their headers matter to recovery, but replay needs
    /// the payloads past the applied LSN).
    pub records: Vec<Record>,
    /// Bytes of valid records; anything after is a torn tail to cut off.
    pub valid_len: u64,
    /// Why the tail was cut, when it was.
    pub torn: Option<String>,
}

/// Scans `bytes` of the segment at `path`, checking LSN continuity and the chain from
/// `prev` (last LSN and chain before this segment). A bad record is a torn tail only if this
/// is the newest segment and nothing valid follows it; otherwise the log is corrupt.
pub fn scan(
    path: &Path,
    bytes: &[u8],
    is_newest: bool,
    prev: (u64, u64),
) -> Result<ScannedSegment> {
    let (mut prev_lsn, mut prev_chain) = prev;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match record::decode(&bytes[offset..]) {
            Ok((rec, len)) => {
                check_continuity(path, offset, &rec, prev_lsn, prev_chain)?;
                (prev_lsn, prev_chain) = (rec.lsn, rec.chain);
                records.push(rec);
                offset += len;
            }
            Err(err) => {
                if !is_newest || valid_record_follows(&bytes[offset..]) {
                    return Err(corrupt(path, offset, &format!("{err:?}")));
                }
                let torn = Some(format!(
                    "{err:?} at offset {offset}, {} bytes cut",
                    bytes.len() - offset
                ));
                return Ok(ScannedSegment {
                    records,
                    valid_len: offset as u64,
                    torn,
                });
            }
        }
    }
    Ok(ScannedSegment {
        records,
        valid_len: offset as u64,
        torn: None,
    })
}

fn check_continuity(
    path: &Path,
    offset: usize,
    rec: &Record,
    prev_lsn: u64,
    prev_chain: u64,
) -> Result<()> {
    if rec.lsn != prev_lsn + 1 {
        return Err(corrupt(
            path,
            offset,
            &format!("LSN {} follows LSN {prev_lsn}", rec.lsn),
        ));
    }
    if !rec.follows(prev_chain) {
        return Err(corrupt(
            path,
            offset,
            &format!("record {} breaks the checksum chain", rec.lsn),
        ));
    }
    Ok(())
}

/// Whether a well-formed record starts right after the bad one: then the bad record is not a
/// torn tail but damage in the middle of the log.
fn valid_record_follows(rest: &[u8]) -> bool {
    let Some(prefix) = rest.get(..FRAME_PREFIX_BYTES) else {
        return false;
    };
    let Ok(len) = record::announced_len(prefix.try_into().expect("8 bytes")) else {
        return false;
    };
    rest.get(len..).is_some_and(|next| {
        !matches!(
            record::decode(next),
            Err(DecodeError::Truncated | DecodeError::Corrupt(_))
        )
    })
}

fn corrupt(path: &Path, offset: usize, what: &str) -> Error {
    Error::InvalidData(format!(
        "replication log is corrupt in {} at offset {offset}: {what}; the node stops rather than serve a damaged history (restore this node from a spare or a backup)",
        path.display()
    ))
}

/// fsyncs a directory so that a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("sync directory {}", dir.display())))
}
