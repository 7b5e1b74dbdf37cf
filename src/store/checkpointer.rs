//! The WAL checkpointer: a thread that copies committed WAL frames into the database file,
//! on its own connection, so that the connection that commits never does.
//!
//! Why: with SQLite's auto-checkpoint, the commit that crosses 1000 WAL pages copies them
//! into the database file and fsyncs it before it returns; on the primary every request of
//! that group waits for it, on a spare the apply thread does. Measured under 8 clients
//! before this thread: commit p99 was 8–10× the median. A PASSIVE checkpoint from another
//! connection blocks neither the writer nor readers (it stops at the oldest frame a reader
//! still uses); nothing about durability changes (the replication log, fsynced before
//! every acknowledgement, is what makes a commit durable).
//!
//! The WAL only starts over from its beginning when a commit finds every frame copied, which
//! a checkpoint racing continuous commits never achieves: the committing connection keeps a
//! backstop, SQLite's auto-checkpoint at [`BACKSTOP_PAGES`] (cheap then: the thread copied
//! all but the last moments), and [`WAL_SIZE_LIMIT_BYTES`] truncates the file after it.
//!
//! Bounds: one checkpoint at most every [`CHECKPOINT_INTERVAL`]; the WAL about
//! [`BACKSTOP_PAGES`] pages; the thread ends when its [`Checkpointer`] is dropped (it is
//! joined then, so the owner's stop waits for it).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::{checkpoint, open, ConnKind};

/// Pause between two checkpoints: the WAL grows by what commits in this time (a few MB
/// at most under a full load on the dev machine) before it is copied.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB each by default) at which a commit checkpoints by itself after all.
pub const BACKSTOP_PAGES: i64 = 10_000;
/// Size the WAL file is truncated to when it starts over.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// A running checkpointer; dropping it stops and joins the thread.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Moves `conn`'s auto-checkpoint to the backstop and starts a thread, named `name`,
    /// that checkpoints `conn`'s database instead.
    pub fn take_over(conn: &Connection, name: &str) -> Result<Self> {
        Self::take_over_with(conn, name, BACKSTOP_PAGES)
    }

    /// As [`Checkpointer::take_over`], with the committing connection's backstop at
    /// `backstop_pages`.
    pub fn take_over_with(conn: &Connection, name: &str, backstop_pages: i64) -> Result<Self> {
        let path = conn
            .path()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::InvalidInput("a checkpointer needs an on-disk database".into()))?
            .to_string();
        let own = open(Path::new(&path), ConnKind::Snapshot)?;
        conn.pragma_update(None, "wal_autocheckpoint", backstop_pages)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
        let (stop, stopped) = mpsc::channel();
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(own, stopped))
            .map_err(Error::io("start the checkpoint thread"))?;
        Ok(Checkpointer {
            stop: Some(stop),
            join: Some(join),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL) {
        match checkpoint(&conn) {
            Ok(_) => failing = false,
            // A busy database or a full disk: the next round tries again; the WAL only
            // grows meanwhile. Said once per streak.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(cause = %e, "a WAL checkpoint failed; retrying (the WAL grows until one succeeds)");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_file_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("db.sqlite")).unwrap().len()
    }

    #[test]
    fn commits_no_longer_checkpoint_and_the_thread_does_within_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("db.sqlite"), ConnKind::Applier).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let before = db_file_bytes(dir.path());
        let cp = Checkpointer::take_over(&conn, "test-checkpointer").unwrap();
        let auto: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            auto, BACKSTOP_PAGES,
            "the committing connection only checkpoints at the backstop"
        );
        for i in 0..200 {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("{i:0>500}")])
                .unwrap();
        }
        // 100 KB of rows: only a checkpoint moves them from the WAL into the file.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_file_bytes(dir.path()) < before + 100_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing was checkpointed into the database file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(cp);
    }

    #[test]
    fn the_wal_stays_bounded_under_continuous_commits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("db.sqlite"), ConnKind::Applier).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let _cp = Checkpointer::take_over_with(&conn, "test-checkpointer", 100).unwrap();
        let wal = dir.path().join("db.sqlite-wal");
        let mut largest = 0;
        // About 12 MB of commits, one row each, without a pause.
        for i in 0..6000 {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("{i:0>2000}")])
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        assert!(
            largest < 4 * 1024 * 1024,
            "the WAL reached {largest} bytes with a backstop of 100 pages"
        );
    }

    #[test]
    fn dropping_it_stops_and_joins_the_thread_within_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("db.sqlite"), ConnKind::Applier).unwrap();
        let cp = Checkpointer::take_over(&conn, "test-checkpointer").unwrap();
        let (done, dropped) = mpsc::channel();
        std::thread::spawn(move || {
            drop(cp);
            let _ = done.send(());
        });
        dropped
            .recv_timeout(Duration::from_secs(5))
            .expect("the checkpoint thread ended when its handle was dropped");
    }

    #[test]
    fn an_in_memory_database_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(Checkpointer::take_over(&conn, "x").is_err());
    }
}
