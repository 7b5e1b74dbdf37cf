//! The log writer: appends records to the newest segment and makes them durable.
//!
//! `append` only buffers; `sync` writes the buffer and fdatasyncs, so a caller that appends
//! many records and syncs once gets group commit (many transactions, one fsync). Only
//! records at or below [`LogWriter::durable`] may be acknowledged or sent to spares.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::log::position::Position;
use crate::log::record::{Record, RecordKind, MAX_PAYLOAD_BYTES};
use crate::log::segment;
use crate::log::segment::{
    header_bytes, mark_bytes, read_header, segment_path, HEADER_BYTES, SEGMENT_TARGET_BYTES,
};

/// What retention needs to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_lsn: u64,
    /// Position of its last record (for the open segment: the durable tail).
    pub last: Position,
    /// Bytes on disk.
    pub bytes: u64,
}

pub struct LogWriter {
    dir: PathBuf,
    file: File,
    /// First LSN of the segment `file` writes to.
    segment_first_lsn: u64,
    /// Bytes already written to `file` (its header included), all durable.
    segment_bytes: u64,
    /// Encoded records appended but not yet written and synced.
    pending: Vec<u8>,
    /// End of the history including unsynced records.
    tail: Position,
    /// End of the history that is on disk.
    durable: Position,
    /// Size at which a segment is closed; [`SEGMENT_TARGET_BYTES`] unless the retention
    /// budget calls for smaller ones.
    segment_target_bytes: u64,
    /// Every segment on disk, oldest first; the last one is the open segment.
    segments: Vec<SegmentInfo>,
    /// Bytes appended since this writer was opened: offsets for lag in bytes.
    appended: u64,
    /// The open segment's salt, in its sync marks.
    salt: u64,
}

impl LogWriter {
    /// Continues the log in `dir` after `tail`, given the segments recovery found.
    pub(crate) fn resume(
        dir: &Path,
        tail: Position,
        mut segments: Vec<SegmentInfo>,
    ) -> Result<Self> {
        if segments.is_empty() {
            segments.push(SegmentInfo {
                first_lsn: tail.lsn + 1,
                last: tail,
                bytes: 0,
            });
        }
        let open = *segments.last().expect("one segment at least");
        let path = segment_path(dir, open.first_lsn);
        let file = open_segment_file(&path, false)?;
        // What recovery read may sit in the page cache only (a process that crashed before
        // its fsync): make it durable before the next write's sync mark says it is.
        file.sync_data()
            .map_err(Error::io(format!("fsync log segment {}", path.display())))?;
        sync_dir(dir)?;
        let mut writer = LogWriter {
            dir: dir.to_path_buf(),
            file,
            segment_first_lsn: open.first_lsn,
            segment_bytes: open.bytes,
            pending: Vec::new(),
            tail,
            durable: tail,
            segment_target_bytes: SEGMENT_TARGET_BYTES,
            segments,
            appended: 0,
            salt: 0,
        };
        writer.start_format(&path)?;
        Ok(writer)
    }

    /// Brings the open segment to the current format: a new or emptied one gets its header;
    /// one of the older format, holding records, is closed and a new segment started.
    fn start_format(&mut self, path: &Path) -> Result<()> {
        if self.segment_bytes == 0 {
            self.write_header()?;
            self.segment_bytes = HEADER_BYTES;
            return Ok(());
        }
        let header = read_header(path)?;
        if header.records_at == 0 {
            self.roll(self.tail.lsn + 1)?;
        } else {
            self.salt = header.salt;
        }
        Ok(())
    }

    /// Writes the open segment's header (a new segment), with a new salt.
    fn write_header(&mut self) -> Result<()> {
        self.salt = rand::random();
        self.file
            .write_all_at(&header_bytes(self.salt), 0)
            .map_err(Error::io(format!(
                "write the header of log segment {}",
                segment_path(&self.dir, self.segment_first_lsn).display()
            )))
    }

    /// Bytes appended since this writer was opened (a record's end offset, right after
    /// appending it).
    pub fn appended_bytes(&self) -> u64 {
        self.appended
    }

    /// The segments on disk, oldest first (the last is the open one).
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Deletes every segment whose records are all at or below `upto` (never the open one):
    /// first records the new base, then removes the files, so a crash in between leaves at
    /// worst a file that the next deletion removes.
    pub fn delete_through(&mut self, upto: u64) -> Result<usize> {
        let n = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.last.lsn <= upto)
            .count();
        if n == 0 {
            return Ok(0);
        }
        crate::log::base::save(&self.dir, &self.segments[n - 1].last)?;
        for seg in self.segments.drain(..n) {
            let path = segment_path(&self.dir, seg.first_lsn);
            std::fs::remove_file(&path)
                .map_err(Error::io(format!("delete log segment {}", path.display())))?;
        }
        sync_dir(&self.dir)?;
        Ok(n)
    }

    /// Closes segments at `bytes` instead of [`SEGMENT_TARGET_BYTES`] (tests use small ones).
    pub fn set_segment_target_bytes(&mut self, bytes: u64) {
        self.segment_target_bytes = bytes;
    }

    /// End of the history, including records not yet synced.
    pub fn tail(&self) -> Position {
        self.tail
    }

    /// End of the durable history.
    pub fn durable(&self) -> Position {
        self.durable
    }

    /// Appends a new record at the next LSN. Refuses payloads over [`MAX_PAYLOAD_BYTES`].
    pub fn append(
        &mut self,
        epoch: u64,
        time_ms: u64,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Result<Record> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::InvalidInput(format!(
                "the transaction's changes take {} bytes, more than the {MAX_PAYLOAD_BYTES} a log record may hold; split it into smaller transactions",
                payload.len()
            )));
        }
        assert!(
            epoch >= self.tail.epoch,
            "epoch went down from {} to {epoch}",
            self.tail.epoch
        );
        let record = Record::new(
            self.tail.chain,
            self.tail.lsn + 1,
            epoch,
            time_ms,
            kind,
            payload,
        );
        self.push(&record)?;
        Ok(record)
    }

    /// Appends records received from the primary, after checking that the whole batch
    /// continues this history: a bad batch leaves the log untouched.
    pub fn append_received(&mut self, records: &[Record]) -> Result<()> {
        let mut tail = self.tail;
        for record in records {
            if record.lsn != tail.lsn + 1 {
                return Err(Error::InvalidData(format!(
                    "received LSN {} but the log ends at {}",
                    record.lsn, tail.lsn
                )));
            }
            if !record.follows(tail.chain) {
                return Err(Error::Diverged(format!(
                    "record {} does not continue this node's history (checksum chain)",
                    record.lsn
                )));
            }
            if record.epoch < tail.epoch {
                return Err(Error::InvalidData(format!(
                    "record {} has epoch {} below {}",
                    record.lsn, record.epoch, tail.epoch
                )));
            }
            tail = Position::of(record);
        }
        records.iter().try_for_each(|r| self.push(r))
    }

    fn push(&mut self, record: &Record) -> Result<()> {
        let len = record.encoded_len() as u64;
        if self.segment_bytes + self.pending.len() as u64 + len > self.segment_target_bytes
            && self.segment_bytes + self.pending.len() as u64 > HEADER_BYTES
        {
            self.roll(record.lsn)?;
        }
        record.encode_into(&mut self.pending);
        self.appended += len;
        self.tail = Position::of(record);
        Ok(())
    }

    /// Syncs the current segment and starts a new one whose first record is `next_lsn`.
    fn roll(&mut self, next_lsn: u64) -> Result<()> {
        self.sync()?;
        let path = segment_path(&self.dir, next_lsn);
        self.file = open_segment_file(&path, true)?;
        sync_dir(&self.dir)?;
        self.segment_first_lsn = next_lsn;
        // Not synced yet: a crash before the first sync leaves a header cut short or
        // whole, which recovery cuts or keeps; either way no record is lost.
        self.write_header()?;
        self.segment_bytes = HEADER_BYTES;
        self.segments.push(SegmentInfo {
            first_lsn: next_lsn,
            last: self.durable,
            bytes: HEADER_BYTES,
        });
        Ok(())
    }

    /// Writes what was appended and fsyncs it: one fsync for any number of records.
    pub fn sync(&mut self) -> Result<Position> {
        if self.pending.is_empty() {
            return Ok(self.durable);
        }
        let path = segment_path(&self.dir, self.segment_first_lsn);
        // The write begins with a sync mark: everything before it is durable (the last
        // fsync completed), which recovery uses to tell a torn last write from damaged
        // durable records (see `segment`).
        let mut write = Vec::with_capacity(segment::MARK_BYTES + self.pending.len());
        write.extend_from_slice(&mark_bytes(self.salt, self.segment_bytes));
        write.extend_from_slice(&self.pending);
        self.file
            .write_all_at(&write, self.segment_bytes)
            .map_err(Error::io(format!("write log segment {}", path.display())))?;
        self.file
            .sync_data()
            .map_err(Error::io(format!("fsync log segment {}", path.display())))?;
        self.segment_bytes += write.len() as u64;
        self.pending.clear();
        self.durable = self.tail;
        let open = self.segments.last_mut().expect("one segment at least");
        open.last = self.durable;
        open.bytes = self.segment_bytes;
        Ok(self.durable)
    }
}

/// Opens a segment file for writing at chosen offsets (`new`: it must not exist yet).
fn open_segment_file(path: &Path, new: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    options
        .open(path)
        .map_err(Error::io(format!("open log segment {}", path.display())))
}
