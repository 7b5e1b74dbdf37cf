//! Snapshots for seeding spares (DESIGN.md §5).
//!
//! On the primary, a snapshot is a consistent copy of the database taken with `VACUUM INTO`
//! on its own connection: a read transaction, so writers never pause. The copy's meta table
//! says which LSN it holds; the snapshot records that record's full position (epoch, chain)
//! so the spare's log can continue the chain right after it. Files live in
//! `data/<node>/snapshots/` as `<id>.sqlite` + `<id>.json`.
//!
//! On a spare, the incoming snapshot is written to `data/<node>/seed/partial.sqlite`, and
//! `partial.json` records how far it got, so a cut link resumes at the last acknowledged
//! chunk instead of from zero. Installing is redone from `install.json` if a crash cuts it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::sync_dir;
use crate::durable::{read_json, write_json as write_json_atomic};
use crate::error::{Error, Result};
use crate::log::{LogReader, Position};
use crate::store::{meta, open, ConnKind};

/// Bytes per chunk on the wire; each chunk carries its own CRC32C.
pub const SEED_CHUNK_BYTES: usize = 256 * 1024;

/// A snapshot ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Names this snapshot across reconnections (a resumed seed must continue the same file).
    pub id: String,
    /// The last record the snapshot includes.
    pub position: Position,
    pub size: u64,
    /// CRC32C of the whole file.
    pub crc: u32,
}

/// CRC32C of a whole file.
pub fn file_crc(path: &Path) -> Result<u32> {
    let mut f = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut crc = 0u32;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(Error::io(format!("read {}", path.display())))?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// The primary's snapshot directory.
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    pub fn new(data_dir: &Path) -> Self {
        Snapshots {
            dir: data_dir.join("snapshots"),
        }
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sqlite"))
    }

    /// A new snapshot id (reserve it before [`Snapshots::create`], so that a concurrent
    /// prune keeps the files being written).
    pub fn new_id() -> String {
        format!("{:016x}", rand::random::<u64>())
    }

    /// A complete snapshot still on disk, by id.
    pub fn find(&self, id: &str) -> Result<Option<SnapshotInfo>> {
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || !self.path(id).exists() {
            return Ok(None);
        }
        read_json(&self.dir.join(format!("{id}.json")))
    }

    /// Takes a new snapshot of `db` (blocking; writers go on). `log_dir` gives the position
    /// of the record it ends at, which the caller keeps retained.
    pub fn create(&self, db: &Path, log_dir: &Path, id: &str) -> Result<SnapshotInfo> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("create {}", self.dir.display())))?;
        let tmp = self.dir.join(format!("{id}.tmp"));
        let conn = open(db, ConnKind::Snapshot)?;
        conn.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])?;
        drop(conn);
        let copy = rusqlite::Connection::open_with_flags(
            &tmp,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let (lsn, _) = meta::applied(&copy)?;
        drop(copy);
        let position = if lsn == 0 {
            Position::default()
        } else {
            Position::of(&LogReader::new(log_dir).record_at(lsn)?)
        };
        let path = self.path(id);
        std::fs::rename(&tmp, &path).map_err(Error::io(format!("rename {}", tmp.display())))?;
        let size = std::fs::metadata(&path)
            .map_err(Error::io(format!("stat {}", path.display())))?
            .len();
        let info = SnapshotInfo {
            id: id.to_string(),
            position,
            size,
            crc: file_crc(&path)?,
        };
        write_json_atomic(&self.dir.join(format!("{id}.json")), &info)?;
        Ok(info)
    }

    /// Deletes every snapshot whose id is not in `keep`.
    pub fn prune(&self, keep: &[String]) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or("");
            if !keep.iter().any(|k| k == id) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Reads up to `max` bytes of snapshot `id` at `offset`.
    pub fn read_chunk(&self, id: &str, offset: u64, max: usize) -> Result<Vec<u8>> {
        let path = self.path(id);
        let mut f =
            std::fs::File::open(&path).map_err(Error::io(format!("open {}", path.display())))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(Error::io("seek in a snapshot"))?;
        let mut buf = Vec::with_capacity(max);
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(Error::io(format!("read {}", path.display())))?;
        Ok(buf)
    }
}

/// A seed being received on a spare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSeed {
    pub info: SnapshotInfo,
    /// Bytes received and fsynced from the start of the file.
    pub offset: u64,
}

/// The spare's seed directory.
pub struct SeedDir {
    pub dir: PathBuf,
}

impl SeedDir {
    pub fn new(data_dir: &Path) -> Self {
        SeedDir {
            dir: data_dir.join("seed"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("partial.sqlite")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("partial.json")
    }

    pub fn install_marker(&self) -> PathBuf {
        self.dir.join("install.json")
    }

    /// The seed in progress, if any.
    pub fn partial(&self) -> Result<Option<PartialSeed>> {
        read_json(&self.state())
    }

    /// Starts receiving `info` at `offset`: keeps what a previous connection received of the
    /// same snapshot, starts over otherwise. Returns the offset to receive from.
    pub fn begin(&self, info: &SnapshotInfo) -> Result<u64> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("create {}", self.dir.display())))?;
        if let Some(p) = self.partial()? {
            if p.info == *info {
                return Ok(p.offset);
            }
        }
        std::fs::File::create(self.file()).map_err(Error::io("create the seed file"))?;
        write_json_atomic(
            &self.state(),
            &PartialSeed {
                info: info.clone(),
                offset: 0,
            },
        )?;
        Ok(0)
    }

    /// Writes consecutive chunks, the first at `offset` (which must be where the seed
    /// stands), fsyncs them, then records the new offset: the recorded offset never counts
    /// a byte that is not durable. Returns it.
    pub fn write_chunks(&self, chunks: &[(u64, Vec<u8>)]) -> Result<u64> {
        let mut p = self.partial()?.ok_or_else(|| {
            Error::InvalidData("a seed chunk arrived before the seed started".into())
        })?;
        let Some(&(start, _)) = chunks.first() else {
            return Ok(p.offset);
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.file())
            .map_err(Error::io("open the seed file"))?;
        f.seek(SeekFrom::Start(start))
            .map_err(Error::io("seek in the seed file"))?;
        let mut at = p.offset;
        for (offset, bytes) in chunks {
            if *offset != at || offset + bytes.len() as u64 > p.info.size {
                return Err(Error::InvalidData(format!(
                    "seed chunk at {offset} (+{}) does not follow offset {at} of {}",
                    bytes.len(),
                    p.info.size
                )));
            }
            f.write_all(bytes)
                .map_err(Error::io("write the seed file"))?;
            at += bytes.len() as u64;
        }
        f.sync_data().map_err(Error::io("fsync the seed file"))?;
        p.offset = at;
        write_json_atomic(&self.state(), &p)?;
        Ok(p.offset)
    }

    /// Forgets the seed being received (its file and its state), if any.
    pub fn discard(&self) -> Result<()> {
        for path in [self.state(), self.file()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()))(e)),
            }
        }
        Ok(())
    }

    /// Checks the whole file; returns the snapshot it holds.
    pub fn verify(&self) -> Result<SnapshotInfo> {
        let p = self
            .partial()?
            .ok_or_else(|| Error::InvalidData("no seed to install".into()))?;
        if p.offset != p.info.size {
            return Err(Error::InvalidData(format!(
                "seed incomplete: {} of {} bytes",
                p.offset, p.info.size
            )));
        }
        let crc = file_crc(&self.file())?;
        if crc != p.info.crc {
            return Err(Error::InvalidData(
                "the received snapshot does not match its checksum; it will be sent again".into(),
            ));
        }
        Ok(p.info)
    }

    /// Moves the verified snapshot over `db` (removing the old WAL first) and forgets the
    /// partial state.
    pub fn replace_db(&self, db: &Path) -> Result<()> {
        for ext in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{ext}", db.display()));
            if p.exists() {
                std::fs::remove_file(&p).map_err(Error::io(format!("remove {}", p.display())))?;
            }
        }
        if self.file().exists() {
            std::fs::rename(self.file(), db)
                .map_err(Error::io(format!("install the seed as {}", db.display())))?;
        }
        sync_dir(db.parent().expect("db has a parent"))?;
        let _ = std::fs::remove_file(self.state());
        Ok(())
    }

    pub fn write_marker(&self, info: &SnapshotInfo) -> Result<()> {
        write_json_atomic(&self.install_marker(), info)
    }

    pub fn marker(&self) -> Result<Option<SnapshotInfo>> {
        read_json(&self.install_marker())
    }

    pub fn clear_marker(&self) -> Result<()> {
        let _ = std::fs::remove_file(self.install_marker());
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of_a_small_db(dir: &Path, id: &str) -> (Snapshots, SnapshotInfo) {
        let db = dir.join("db.sqlite");
        let conn = open(&db, ConnKind::Writer).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .unwrap();
        let snaps = Snapshots::new(dir);
        let info = snaps.create(&db, &dir.join("log"), id).unwrap();
        (snaps, info)
    }

    #[test]
    fn a_snapshot_whose_file_is_gone_is_not_found_so_a_new_one_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (snaps, info) = snapshot_of_a_small_db(dir.path(), "aaaa");
        assert_eq!(snaps.find("aaaa").unwrap(), Some(info));
        std::fs::remove_file(snaps.path("aaaa")).unwrap();
        assert_eq!(snaps.find("aaaa").unwrap(), None);
        assert_eq!(snaps.find("../etc").unwrap(), None, "ids are plain names");
    }

    #[test]
    fn chunks_are_recorded_only_once_written_in_order_and_a_gap_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (snaps, info) = snapshot_of_a_small_db(dir.path(), "cccc");
        let bytes = std::fs::read(snaps.path("cccc")).unwrap();
        let seed = SeedDir::new(&dir.path().join("spare"));
        assert_eq!(seed.begin(&info).unwrap(), 0);
        let half = bytes.len() / 2;
        let (a, b) = bytes.split_at(half);
        let (b1, b2) = b.split_at(b.len() / 2);
        // A gap: nothing recorded, the seed still stands at 0.
        let gap = seed.write_chunks(&[(1, a[1..].to_vec())]).unwrap_err();
        assert!(gap.to_string().contains("does not follow"), "{gap}");
        assert_eq!(seed.partial().unwrap().unwrap().offset, 0);
        assert_eq!(seed.write_chunks(&[(0, a.to_vec())]).unwrap(), half as u64);
        let end = seed
            .write_chunks(&[
                (half as u64, b1.to_vec()),
                ((half + b1.len()) as u64, b2.to_vec()),
            ])
            .unwrap();
        assert_eq!(end, bytes.len() as u64);
        assert_eq!(seed.verify().unwrap(), info, "the file is the snapshot");
    }

    #[test]
    fn prune_keeps_reserved_snapshots_even_while_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (snaps, _) = snapshot_of_a_small_db(dir.path(), "old0");
        std::fs::write(dir.path().join("snapshots/busy1.tmp"), b"being written").unwrap();
        snaps.prune(&["busy1".to_string()]).unwrap();
        assert!(
            dir.path().join("snapshots/busy1.tmp").exists(),
            "a reserved snapshot's files stay"
        );
        assert!(!snaps.path("old0").exists(), "unreserved snapshots go");
    }
}
