//! Segment files: naming, listing, the format (header, sync marks), and the recovery scan
//! of one segment.
//!
//! A segment is named after the LSN of its first record (`00000000000000000001.seg`). It
//! starts with a header, then holds consecutive records, each write of them preceded by a
//! sync mark:
//!
//! ```text
//! header (24 bytes): magic "SPARELOG", format version (u32 LE) = 3, reserved (u32),
//!                    salt (u64 LE, random per segment)
//! sync mark (16 bytes): 0 (u32, where a record has its length), CRC32C (u32 LE) of the
//!                       salt and the mark's offset, the mark's own offset (u64 LE)
//! ```
//!
//! Torn tail or damage? Only what was written after the last completed fsync may be torn by
//! a crash. A write begins with a mark, and begins only once the previous write's fsync
//! completed: a mark at offset P proves that every byte before P was durable. So at
//! recovery, a bad record followed (anywhere later in the file) by a valid mark was durable,
//! hence acknowledged (the primary) or reported durable (a spare's ack): the node stops,
//! naming file and offset. A bad record with no mark after it is in the last write, whose
//! fsync may not have completed (a spare writes a batch at once; a power cut may persist its
//! pages out of order): a torn tail, cut with a WARN. The marks are in the data the write
//! appends anyway: no extra fsync, no extra page. The salt keeps bytes a client chose (a
//! changeset in a torn write) or stale blocks from passing for a mark.
//!
//! Caveats: what follows the last intact mark is not covered (knowing the last write's
//! fsync completed would take a second fsync per commit): a bad record there is cut as a
//! torn tail although it may have been acknowledged, unless the database already applied
//! it (recovery then refuses: `log::open`); the primary's idle heartbeat records close that
//! window within a heartbeat. Segments written before this format (no header, no marks)
//! are still read; their newest one is judged by the older rule (a valid record right after
//! the bad one means damage), and by marks too (a header damaged into "no header").

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::record::{self, DecodeError, Record, FRAME_PREFIX_BYTES};

/// Bytes of a segment's header.
pub const HEADER_BYTES: u64 = 24;
/// Bytes of a sync mark.
pub const MARK_BYTES: usize = 16;
const MAGIC: &[u8; 8] = b"SPARELOG";
const FORMAT_VERSION: u32 = 3;
/// Bytes read at a time by the recovery scan.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// What a segment's start says of its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Offset of the first record (0 for a segment of the older format).
    pub records_at: u64,
    /// Whether writes carry sync marks (the current format).
    pub marked: bool,
    /// The segment's salt, in its marks.
    pub salt: u64,
}

/// The header bytes of a new segment with `salt`.
pub fn header_bytes(salt: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&salt.to_le_bytes());
    h
}

fn mark_crc(salt: u64, offset: u64) -> [u8; 4] {
    let mut input = [0u8; 16];
    input[..8].copy_from_slice(&salt.to_le_bytes());
    input[8..].copy_from_slice(&offset.to_le_bytes());
    crc32c::crc32c(&input).to_le_bytes()
}

/// The sync mark that starts a write at `offset` in a segment with `salt`.
pub fn mark_bytes(salt: u64, offset: u64) -> [u8; MARK_BYTES] {
    let mut m = [0u8; MARK_BYTES];
    m[4..8].copy_from_slice(&mark_crc(salt, offset));
    m[8..].copy_from_slice(&offset.to_le_bytes());
    m
}

/// Whether the 4 bytes where a record has its length say a sync mark starts here.
pub fn is_mark_prefix(prefix: &[u8]) -> bool {
    prefix.len() >= 4 && prefix[..4] == [0, 0, 0, 0]
}

/// Whether `bytes` (at least [`MARK_BYTES`]) hold a valid sync mark written at `offset` in
/// a segment with `salt`.
pub fn is_mark_at(bytes: &[u8], salt: u64, offset: u64) -> bool {
    let Some(m) = bytes.get(..MARK_BYTES) else {
        return false;
    };
    is_mark_prefix(m) && m[8..] == offset.to_le_bytes() && m[4..8] == mark_crc(salt, offset)
}

/// Reads the header from the first bytes of a segment. A segment without the magic is of
/// the older format; one with the magic cut short is a header torn by a crash (records
/// after it, none yet).
pub fn parse_header(path: &Path, start: &[u8]) -> Result<Header> {
    if start.len() < MAGIC.len() || &start[..MAGIC.len()] != MAGIC {
        return Ok(Header {
            records_at: 0,
            marked: false,
            salt: 0,
        });
    }
    let mut salt = 0;
    if let Some(h) = start.get(..HEADER_BYTES as usize) {
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(Error::InvalidData(format!(
                "log segment {} has format version {version}, which this version of spare does not read (it reads {FORMAT_VERSION}): a log of another version, or a damaged header",
                path.display()
            )));
        }
        salt = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    }
    Ok(Header {
        records_at: HEADER_BYTES,
        marked: true,
        salt,
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

/// The (offset, length) of each record in the bytes of a segment, up to the first bad one.
pub fn record_spans(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, usize)>> {
    let header = parse_header(path, bytes)?;
    let mut at = header.records_at as usize;
    let mut out = Vec::new();
    loop {
        let rest = bytes.get(at..).unwrap_or_default();
        if header.marked && is_mark_at(rest, header.salt, at as u64) {
            at += MARK_BYTES;
            continue;
        }
        match record::decode(rest) {
            Ok((_, len)) => {
                out.push((at, len));
                at += len;
            }
            Err(_) => return Ok(out),
        }
    }
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
    pub last: Option<crate::log::position::Position>,
    /// Bytes of header and valid records; anything after is a torn tail to cut off.
    pub valid_len: u64,
    /// Why the tail was cut, when it was.
    pub torn: Option<String>,
}

/// Scans the segment at `path` record by record (one record in memory at a time), checking
/// LSN continuity and the chain from `prev` (last LSN and chain before this segment), and
/// calls `visit` with each valid record. A bad record is a torn tail only in the newest
/// segment and when no sync mark follows it; otherwise the log is corrupt.
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
        match next_record(&mut rd, path, offset, &header)? {
            Ok(None) => offset += MARK_BYTES as u64,
            Ok(Some((rec, len))) => {
                check_continuity(path, offset as usize, &rec, prev_lsn, prev_chain)?;
                (prev_lsn, prev_chain) = (rec.lsn, rec.chain);
                visit(&rec);
                last = Some(crate::log::position::Position::of(&rec));
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

/// The next record under `rd` (at `offset`) and its length, None for a valid sync mark,
/// or why the bytes there are neither (an error of the file itself is the outer error).
fn next_record(
    rd: &mut BufReader<std::fs::File>,
    path: &Path,
    offset: u64,
    header: &Header,
) -> Result<std::result::Result<Option<(Record, usize)>, DecodeError>> {
    let mut frame = vec![0u8; FRAME_PREFIX_BYTES];
    if !read_fully(rd, &mut frame, path)? {
        return Ok(Err(DecodeError::Truncated));
    }
    if header.marked && is_mark_prefix(&frame) {
        frame.resize(MARK_BYTES, 0);
        if !read_fully(rd, &mut frame[FRAME_PREFIX_BYTES..], path)? {
            return Ok(Err(DecodeError::Truncated));
        }
        if !is_mark_at(&frame, header.salt, offset) {
            return Ok(Err(DecodeError::Corrupt("a damaged sync mark".into())));
        }
        return Ok(Ok(None));
    }
    let len = match record::announced_len(frame[..].try_into().expect("8 bytes")) {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    frame.resize(len, 0);
    if !read_fully(rd, &mut frame[FRAME_PREFIX_BYTES..], path)? {
        return Ok(Err(DecodeError::Truncated));
    }
    Ok(record::decode(&frame).map(Some))
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
    let rest = read_from(path, offset)?;
    // A later write began once this one was durable. The older format has no marks, but a
    // header damaged into "no header" still has them (its salt is read off the damaged
    // header's place); and there, a valid record right after the bad one means damage.
    let salt = match header.marked {
        true => header.salt,
        false => salt_at(path)?,
    };
    let marked_later = (1..rest.len()).any(|p| is_mark_at(&rest[p..], salt, offset + p as u64));
    let damaged = marked_later || (!header.marked && valid_record_follows(&rest));
    if damaged {
        return Err(corrupt(
            path,
            offset as usize,
            &format!("{err:?}, in records that were durable (a later write follows them): acknowledged records would be lost"),
        ));
    }
    Ok(cut())
}

/// The salt where a header would hold it (for a header damaged into "no header").
fn salt_at(path: &Path) -> Result<u64> {
    let start = read_from(path, 0)?;
    Ok(start
        .get(16..24)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))))
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
