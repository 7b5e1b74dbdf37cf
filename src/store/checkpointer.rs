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
//! Bounds: one checkpoint at most every [`CHECKPOINT_INTERVAL`]; the thread ends when its
//! [`Checkpointer`] is dropped (it is joined then, so the owner's stop waits for it).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::{checkpoint, open, ConnKind};

/// Pause between two checkpoints: the WAL grows by what commits in this time (a few MB
/// at most under a full load on the dev machine) before it is copied.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// A running checkpointer; dropping it stops and joins the thread.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns `conn`'s auto-checkpoint off and starts a thread, named `name`, that
    /// checkpoints `conn`'s database instead.
    pub fn take_over(conn: &Connection, name: &str) -> Result<Self> {
        let path = conn
            .path()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::InvalidInput("a checkpointer needs an on-disk database".into()))?
            .to_string();
        let own = open(Path::new(&path), ConnKind::Snapshot)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
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
        assert_eq!(auto, 0, "the committing connection no longer checkpoints");
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
