//! Segment files: naming, listing, the header, and the recovery scan of one segment.
//!
//! A segment is named after the LSN of its first record (`00000000000000000001.seg`) and
//! holds consecutive records after a small header:
//!
//! ```text
//! offset size field
//!  0      8   magic "SPARELOG"
//!  8      4   format version (u32 LE) = 2
//! 12      4   CRC32C (u32 LE) of bytes 16..32
//! 16      8   synced end (u64 LE): bytes of this file that were durable before its last write
//! 24      8   reserved, zero
//! ```
//!
//! Torn tail or damage? Only what was written after the last completed fsync may be torn by
//! a crash. The writer rewrites the header with each write, before the fsync that covers
//! both: the synced end then says where the durable part ended, at no extra fsync. A bad
//! record below it was durable, so acknowledged (the primary) or reported durable (a spare's
//! ack): the node stops, naming file and offset. A bad record at or past it is in the last
//! write, whose fsync may not have completed: a torn tail, cut with a WARN.
//!
//! Caveats: the last write itself is not covered (its fsync is what would make its end
//! durable; knowing it completed would take a second fsync): a bad record in it is cut as a
//! torn tail, though it may have been acknowledged. The primary's idle heartbeat records
//! keep that window to one heartbeat. Segments written before this format (no header) are
//! still read; their newest one is told apart by the older rule (a valid record right after
//! the bad one means damage).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::record::{self, DecodeError, Record, FRAME_PREFIX_BYTES};

/// Bytes of a segment's header.
pub const HEADER_BYTES: u64 = 32;
const MAGIC: &[u8; 8] = b"SPARELOG";
const FORMAT_VERSION: u32 = 2;
/// Bytes read at a time by the recovery scan.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// A segment's header: where the records start, and how far they were durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Offset of the first record (0 for a segment of the older format).
    pub records_at: u64,
    /// Bytes of the file durable before its last write (None: older format, unknown).
    pub synced_end: Option<u64>,
}

/// The header bytes of a segment whose first `synced_end` bytes are durable.
pub fn header_bytes(synced_end: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&synced_end.to_le_bytes());
    let crc = crc32c::crc32c(&h[16..]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads the header from the first bytes of a segment (`start`, up to [`HEADER_BYTES`]).
/// A segment without the magic is of the older format; a header with the magic that is cut
/// short or fails its CRC is unknown (`synced_end` None), records after it.
pub fn parse_header(path: &Path, start: &[u8]) -> Result<Header> {
    if start.len() < MAGIC.len() || &start[..MAGIC.len()] != MAGIC {
        return Ok(Header {
            records_at: 0,
            synced_end: None,
        });
    }
    let Some(h) = start.get(..HEADER_BYTES as usize) else {
        return Ok(Header {
            records_at: HEADER_BYTES,
            synced_end: None,
        });
    };
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::InvalidData(format!(
            "log segment {} has format version {version}, which this version of spare does not read (it reads {FORMAT_VERSION}); run the version that wrote it",
            path.display()
        )));
    }
    let crc = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    let synced_end = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    Ok(Header {
        records_at: HEADER_BYTES,
        synced_end: (crc32c::crc32c(&h[16..]) == crc).then_some(synced_end),
    })
}

/// Reads the header of the segment file at `path`.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut start = Vec::with_capacity(HEADER_BYTES as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(HEADER_BYTES).read_to_end(&mut start))
        .map_err(Error::io(format!("read the header of {}", path.display())))?;
    parse_header(path, &start)
}

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
    /// The last valid record's position (None: no record).
    pub last: Option<crate::log::Position>,
    /// Bytes of header and valid records; anything after is a torn tail to cut off.
    pub valid_len: u64,
    /// Why the tail was cut, when it was.
    pub torn: Option<String>,
}

/// Scans the segment at `path` record by record (one record in memory at a time), checking
/// LSN continuity and the chain from `prev` (last LSN and chain before this segment), and
/// calls `visit` with each valid record. A bad record is a torn tail only in the newest
/// segment and past what its header says was durable; otherwise the log is corrupt.
pub fn scan(
    path: &Path,
    is_newest: bool,
    prev: (u64, u64),
    mut visit: impl FnMut(&Record),
) -> Result<ScannedSegment> {
    let file = std::fs::File::open(path)
        .map_err(Error::io(format!("read log segment {}", path.display())))?;
    let file_len = file
        .metadata()
        .map_err(Error::io(format!("read log segment {}", path.display())))?
        .len();
    let mut rd = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let header = read_start(path, &mut rd)?;
    if header.records_at > file_len {
        // A header cut short: the file was created and its first write torn.
        if !is_newest {
            return Err(corrupt(path, 0, "the segment header is cut short"));
        }
        return Ok(ScannedSegment {
            last: None,
            valid_len: 0,
            torn: Some(format!("a header of {file_len} bytes cut")),
        });
    }
    let (mut prev_lsn, mut prev_chain) = prev;
    let mut last = None;
    let mut offset = header.records_at.min(file_len);
    while offset < file_len {
        match next_record(&mut rd, path)? {
            Ok((rec, len)) => {
                check_continuity(path, offset as usize, &rec, prev_lsn, prev_chain)?;
                (prev_lsn, prev_chain) = (rec.lsn, rec.chain);
                visit(&rec);
                last = Some(crate::log::Position::of(&rec));
                offset += len as u64;
            }
            Err(err) => {
                let torn = judge(path, is_newest, &header, offset, file_len, &err)?;
                return Ok(ScannedSegment {
                    last,
                    valid_len: offset,
                    torn: Some(torn),
                });
            }
        }
    }
    Ok(ScannedSegment {
        last,
        valid_len: offset,
        torn: None,
    })
}

/// Reads the header (if any) off the start of a segment, leaving `rd` on the first record.
fn read_start(path: &Path, rd: &mut BufReader<std::fs::File>) -> Result<Header> {
    use std::io::BufRead;
    let start = rd
        .fill_buf()
        .map_err(Error::io(format!("read log segment {}", path.display())))?;
    let header = parse_header(path, &start[..start.len().min(HEADER_BYTES as usize)])?;
    let skip = (header.records_at as usize).min(start.len());
    rd.consume(skip);
    Ok(header)
}

/// The next record under `rd` and its length, or why the bytes there are not one (an
/// error of the file itself is the outer error).
fn next_record(
    rd: &mut BufReader<std::fs::File>,
    path: &Path,
) -> Result<std::result::Result<(Record, usize), DecodeError>> {
    let mut frame = vec![0u8; FRAME_PREFIX_BYTES];
    if !read_fully(rd, &mut frame, path)? {
        return Ok(Err(DecodeError::Truncated));
    }
    let len = match record::announced_len(frame[..].try_into().expect("8 bytes")) {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    frame.resize(len, 0);
    if !read_fully(rd, &mut frame[FRAME_PREFIX_BYTES..], path)? {
        return Ok(Err(DecodeError::Truncated));
    }
    Ok(record::decode(&frame))
}

/// Fills `buf`; false if the file ends first.
fn read_fully(rd: &mut BufReader<std::fs::File>, buf: &mut [u8], path: &Path) -> Result<bool> {
    match rd.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(format!("read log segment {}", path.display()))(e)),
    }
}

/// Whether a bad record at `offset` is a torn tail (the reason, to cut it) or damage to
/// durable records (the error that stops the node).
fn judge(
    path: &Path,
    is_newest: bool,
    header: &Header,
    offset: u64,
    file_len: u64,
    err: &DecodeError,
) -> Result<String> {
    let cut = || {
        format!(
            "{err:?} at offset {offset}, {} bytes cut",
            file_len - offset
        )
    };
    if !is_newest {
        return Err(corrupt(path, offset as usize, &format!("{err:?}")));
    }
    match header.synced_end {
        Some(synced) if offset < synced => Err(corrupt(
            path,
            offset as usize,
            &format!("{err:?}, in records that were durable (the file was synced up to offset {synced}): acknowledged records would be lost"),
        )),
        Some(_) => Ok(cut()),
        None => {
            // The older format (or a header whose CRC fails): a valid record right after
            // the bad one means damage.
            let rest = read_from(path, offset)?;
            if valid_record_follows(&rest) {
                return Err(corrupt(path, offset as usize, &format!("{err:?}")));
            }
            Ok(cut())
        }
    }
}

/// The bytes of the file at `path` from `offset` on (the tail of a segment: at most one).
fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)
        .map_err(Error::io(format!("read log segment {}", path.display())))?;
    let mut rest = Vec::new();
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_to_end(&mut rest))
        .map_err(Error::io(format!("read log segment {}", path.display())))?;
    Ok(rest)
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
