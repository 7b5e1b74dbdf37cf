//! SQLite: the primary's execution with changeset capture, the spares' apply, reads, and
//! the meta table that makes apply exactly-once.
//!
//! A data node's database is `data/<node>/db.sqlite` in WAL mode with `synchronous=NORMAL`:
//! the replication log, fsynced at every commit, is what makes a commit durable, and
//! recovery replays the log past the LSN in the meta table.
//!
//! Connections come in three kinds ([`ConnKind`]): the primary's single writer (foreign keys
//! and triggers on), the applier used by spares and by recovery (triggers and foreign-key
//! actions off: the changeset already holds what they wrote on the primary), and read-only
//! connections for queries.

pub mod apply;
pub mod backup;
pub mod change_apply;
pub mod checkpointer;
pub mod exec;
pub mod guard;
pub mod meta;
pub mod quarantine;
pub mod query;
pub mod recovery;
pub mod schema;
pub mod session;
pub mod snapshot;
pub mod statement;
pub mod value;
pub mod verify;

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use value::{SqlValue, Statement};

/// How long a connection waits for a lock held by another connection of the same node
/// (a reader during a checkpoint) before reporting busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// File name of the database inside a node's data directory.
pub const DB_FILE: &str = "db.sqlite";

/// The payload of a `Txn` log record: one committed transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxnPayload {
    /// Schema changes, applied as SQL before the changeset (empty for plain writes).
    pub ddl: Vec<Statement>,
    /// Row changes, from the session extension.
    #[serde(with = "serde_bytes")]
    pub changeset: Vec<u8>,
    /// AUTOINCREMENT counters this transaction changed, with their new values.
    pub sequences: Vec<(String, i64)>,
    /// Checksum of the schema the changeset applies to (after `ddl`).
    pub schema: u64,
}

impl TxnPayload {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a payload always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        rmp_serde::from_slice(bytes)
            .map_err(|e| Error::InvalidData(format!("transaction record payload: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    Writer,
    Applier,
    Reader,
    /// Reads the database to copy it (`VACUUM INTO`): no settings changed.
    Snapshot,
}

/// Statements each connection keeps compiled (`prepare_cached`): the writer's client
/// statements, the apply thread's own (transaction control, meta, schema checks,
/// sequences); parsing the latter again for every batch showed at the top of a spare's
/// profile (issue 17).
const STATEMENT_CACHE: usize = 32;

/// Runs one of spare's own statements (no parameters, no rows) from the connection's cache
/// of compiled statements: `BEGIN IMMEDIATE`, `COMMIT`... Only on a connection that never
/// runs client SQL (the spare's applier): the cache is keyed by the SQL text and a cached
/// statement is not authorized again, so on the writer a client's `COMMIT` would reuse our
/// compiled one past the guard (`guard_tests` caught exactly that).
pub(crate) fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Opens the node's database for one purpose (see the module doc).
pub fn open(path: &Path, kind: ConnKind) -> Result<Connection> {
    let flags = match kind {
        ConnKind::Reader => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        _ => {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Sql(format!("cannot open database {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    match kind {
        ConnKind::Reader => conn.execute_batch("PRAGMA query_only = ON")?,
        ConnKind::Snapshot => {}
        ConnKind::Writer | ConnKind::Applier => {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Sql(format!(
                    "database {} refused WAL journal mode (got {mode})",
                    path.display()
                )));
            }
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
            meta::ensure(&conn)?;
        }
    }
    if kind == ConnKind::Writer {
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
    }
    if kind == ConnKind::Applier {
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod change_apply_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;

/// Runs a passive WAL checkpoint; true if every frame reached the database file (then every
/// transaction committed before the call is durable there, not only in the WAL).
pub fn checkpoint(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(checkpoint_passive(conn)? == Checkpointed::Wholly)
}

/// How far a passive checkpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpointed {
    /// Another connection held the checkpoint lock: nothing was done.
    Busy,
    /// Some frames stay in the WAL (a reader still uses them).
    Partly,
    /// Every frame reached the database file.
    Wholly,
}

/// Runs a passive WAL checkpoint and says how far it went.
pub fn checkpoint_passive(conn: &rusqlite::Connection) -> Result<Checkpointed> {
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(match (busy, log == done) {
        (0, true) => Checkpointed::Wholly,
        (0, false) => Checkpointed::Partly,
        _ => Checkpointed::Busy,
    })
}
