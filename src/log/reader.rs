//! Reading the log from a given LSN, for feeders (streaming to spares), recovery replay and
//! positioning checks. A reader keeps a cursor so that a feeder streaming forward never
//! rescans; it repositions (scanning one segment from its start) only when asked for an LSN
//! other than the one that follows its last read.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::record::{self, Record, FRAME_PREFIX_BYTES};
use crate::log::segment::{list_segments, segment_path};

struct Cursor {
    segment_first_lsn: u64,
    file: BufReader<File>,
    offset: u64,
    next_lsn: u64,
}

pub struct LogReader {
    dir: PathBuf,
    cursor: Option<Cursor>,
}

impl LogReader {
    pub fn new(dir: &Path) -> Self {
        LogReader {
            dir: dir.to_path_buf(),
            cursor: None,
        }
    }

    /// Reads records from `from` up to `up_to` (inclusive, which the caller knows to be
    /// durable), stopping after `max_bytes` of encoded records (at least one record).
    pub fn read(&mut self, from: u64, up_to: u64, max_bytes: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut lsn = from;
        while lsn <= up_to && (out.is_empty() || bytes < max_bytes) {
            let rec = self.next_record(lsn)?;
            bytes += rec.encoded_len();
            out.push(rec);
            lsn += 1;
        }
        Ok(out)
    }

    /// The record at `lsn`, which the caller knows to be durable.
    pub fn record_at(&mut self, lsn: u64) -> Result<Record> {
        self.next_record(lsn)
    }

    fn next_record(&mut self, lsn: u64) -> Result<Record> {
        if self.cursor.as_ref().map(|c| c.next_lsn) != Some(lsn) {
            self.position(lsn)?;
        }
        let cursor = self.cursor.as_mut().expect("positioned above");
        match read_one(cursor)? {
            Some(rec) => return check_lsn(rec, lsn),
            None => {
                // The record must be at the start of the next segment.
                self.open_segment(lsn)?;
            }
        }
        let cursor = self.cursor.as_mut().expect("opened above");
        match read_one(cursor)? {
            Some(rec) => check_lsn(rec, lsn),
            None => Err(Error::InvalidData(format!(
                "log record {lsn} is missing from {}",
                self.dir.display()
            ))),
        }
    }

    /// Opens the segment that starts exactly at `lsn`.
    fn open_segment(&mut self, lsn: u64) -> Result<()> {
        let path = segment_path(&self.dir, lsn);
        let records_at = crate::log::segment::read_header(&path)?.records_at;
        let mut file = File::open(&path).map_err(Error::io(format!(
            "open log segment {} for record {lsn}",
            path.display()
        )))?;
        file.seek(SeekFrom::Start(records_at))
            .map_err(Error::io("seek in a log segment"))?;
        self.cursor = Some(Cursor {
            segment_first_lsn: lsn,
            file: BufReader::new(file),
            offset: records_at,
            next_lsn: lsn,
        });
        Ok(())
    }

    /// Positions the cursor on `lsn`: opens the segment holding it and skips the records
    /// before it.
    fn position(&mut self, lsn: u64) -> Result<()> {
        let segments = list_segments(&self.dir)?;
        let Some(&first) = segments.iter().rev().find(|&&f| f <= lsn) else {
            return Err(Error::InvalidData(format!(
                "log record {lsn} is older than the oldest segment in {}",
                self.dir.display()
            )));
        };
        let reuse = self
            .cursor
            .as_ref()
            .is_some_and(|c| c.segment_first_lsn == first && c.next_lsn <= lsn);
        if !reuse {
            self.open_segment(first)?;
        }
        let cursor = self.cursor.as_mut().expect("opened above");
        while cursor.next_lsn < lsn {
            let len = peek_len(cursor)?.ok_or_else(|| {
                Error::InvalidData(format!(
                    "log record {lsn} is missing from {}",
                    self.dir.display()
                ))
            })?;
            cursor
                .file
                .seek_relative(len as i64)
                .map_err(Error::io("skip a log record"))?;
            cursor.offset += len;
            cursor.next_lsn += 1;
        }
        Ok(())
    }
}

fn check_lsn(rec: Record, lsn: u64) -> Result<Record> {
    if rec.lsn != lsn {
        return Err(Error::InvalidData(format!(
            "expected log record {lsn}, found {}",
            rec.lsn
        )));
    }
    Ok(rec)
}

/// Reads the length of the record under the cursor, leaving the cursor on it (past the
/// sync marks before it).
fn peek_len(cursor: &mut Cursor) -> Result<Option<u64>> {
    loop {
        let Some(prefix) = peek_prefix(cursor)? else {
            return Ok(None);
        };
        if !crate::log::segment::is_mark_prefix(&prefix) {
            let len = record::announced_len(&prefix).map_err(|e| {
                Error::InvalidData(format!("log segment at offset {}: {e:?}", cursor.offset))
            })?;
            return Ok(Some(len as u64));
        }
        let mark = crate::log::segment::MARK_BYTES as u64;
        cursor
            .file
            .seek_relative(mark as i64)
            .map_err(Error::io("skip a sync mark"))?;
        cursor.offset += mark;
    }
}

/// The first bytes under the cursor, leaving the cursor in place; None at the end.
fn peek_prefix(cursor: &mut Cursor) -> Result<Option<[u8; FRAME_PREFIX_BYTES]>> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    match cursor.file.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            cursor
                .file
                .seek(SeekFrom::Start(cursor.offset))
                .map_err(Error::io("seek in a log segment"))?;
            return Ok(None);
        }
        Err(e) => return Err(Error::io("read a log segment")(e)),
    }
    cursor
        .file
        .seek_relative(-(FRAME_PREFIX_BYTES as i64))
        .map_err(Error::io("seek in a log segment"))?;
    Ok(Some(prefix))
}

/// Reads the record under the cursor; None at the end of the segment.
fn read_one(cursor: &mut Cursor) -> Result<Option<Record>> {
    let Some(len) = peek_len(cursor)? else {
        return Ok(None);
    };
    let mut buf = vec![0u8; len as usize];
    cursor.file.read_exact(&mut buf).map_err(Error::io(format!(
        "read log record at offset {}",
        cursor.offset
    )))?;
    let (rec, _) = record::decode(&buf).map_err(|e| {
        Error::InvalidData(format!("log record at offset {}: {e:?}", cursor.offset))
    })?;
    cursor.offset += len;
    cursor.next_lsn = rec.lsn + 1;
    Ok(Some(rec))
}
