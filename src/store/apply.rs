//! Applying log records to SQLite: on spares as records arrive, and on any data node at
//! start to replay what the log holds past the meta table's LSN.
//!
//! Records are applied in LSN order, several per SQLite transaction, with the meta table's
//! applied LSN set in the same transaction: a crash leaves either all of a batch or none.
//! A schema checksum mismatch or any changeset conflict means this copy diverged from the
//! primary; the batch is rolled back and the error returned (never skipped).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::log::{Record, RecordKind};
use crate::store::change_apply::{Applied, Changes};
use crate::store::session::apply_changeset;
use crate::store::value::bind;
use crate::store::{meta, run_cached, schema, TxnPayload};

/// Applies records in order on an applier connection; `expected_first` is the LSN the
/// database expects next (applied + 1). Returns the new applied position.
pub struct Applier {
    /// Statements compiled on `conn`: declared first, so dropped before it (SQLite does
    /// not close a connection with statements left).
    changes: Changes,
    conn: Connection,
    applied_lsn: u64,
    applied_time_ms: u64,
    /// The schema checksum, with the `PRAGMA schema_version` it was computed at. SQLite
    /// bumps that counter on every schema change, through any connection or process, so
    /// an unchanged counter means an unchanged schema: the checksum (a read of
    /// `sqlite_schema` and a hash) is computed again only when it moved.
    schema: Option<(i64, u64)>,
    /// The apply a batch tries first: ours (SQLite's for the tests' reference applier).
    first_path: Path,
    paths: ApplyPaths,
}

/// How changesets were applied since the applier was made (tests and diagnostics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyPaths {
    /// Changesets applied with our statements (in committed batches; empty ones not
    /// counted).
    pub ours: u64,
    /// Changesets sent to `sqlite3changeset_apply` (a table ours does not cover).
    pub by_sqlite: u64,
    /// Batches rolled back and applied again, successfully, with SQLite's apply.
    pub redone: u64,
}

impl Applier {
    /// Takes an applier connection (`ConnKind::Applier`): foreign keys off, triggers off.
    pub fn new(conn: Connection) -> Result<Self> {
        // Changesets hold the effects of the primary's foreign-key actions; running them
        // again here would change rows the primary did not (see `apply_changeset`).
        let foreign_keys: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if foreign_keys != 0 {
            return Err(Error::Sql(
                "an applier connection must have foreign keys off (open it as ConnKind::Applier)"
                    .into(),
            ));
        }
        let (applied_lsn, applied_time_ms) = meta::applied(&conn)?;
        Ok(Applier {
            changes: Changes::default(),
            conn,
            applied_lsn,
            applied_time_ms,
            schema: None,
            first_path: Path::Ours,
            paths: ApplyPaths::default(),
        })
    }

    /// An applier that applies with `sqlite3changeset_apply` only: the reference.
    #[cfg(test)]
    pub(crate) fn reference(conn: Connection) -> Result<Self> {
        let mut applier = Self::new(conn)?;
        applier.first_path = Path::Sqlite;
        Ok(applier)
    }

    pub fn paths(&self) -> ApplyPaths {
        self.paths
    }

    /// (LSN, commit time in ms) of the last applied record.
    pub fn applied(&self) -> (u64, u64) {
        (self.applied_lsn, self.applied_time_ms)
    }

    /// Applies `records` (consecutive, starting right after the applied LSN) atomically.
    pub fn apply(&mut self, records: &[Record]) -> Result<()> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        assert_eq!(
            records[0].lsn,
            self.applied_lsn + 1,
            "records must continue the applied history"
        );
        // With our own statements first; if a change did not apply cleanly with them, the
        // batch again with SQLite's apply, which decides (see `store::change_apply`).
        let paths = match self.transaction(records, self.first_path)? {
            Some(paths) => paths,
            None => {
                let paths = self.transaction(records, Path::Sqlite)?;
                self.paths.redone += 1;
                paths.expect("SQLite's apply never asks for a redo")
            }
        };
        self.paths.ours += paths.ours;
        self.paths.by_sqlite += paths.by_sqlite;
        self.applied_lsn = last.lsn;
        self.applied_time_ms = last.time_ms;
        Ok(())
    }

    /// Applies `records` in one transaction: committed, with how its changesets were
    /// applied; or rolled back: None when a change asked for a redo, or an error.
    fn transaction(&mut self, records: &[Record], path: Path) -> Result<Option<ApplyPaths>> {
        let last = records.last().expect("a batch is never empty");
        run_cached(&self.conn, "BEGIN IMMEDIATE")?;
        let outcome = self.apply_all(records, path).and_then(|paths| {
            if paths.is_some() {
                meta::set_applied_cached(&self.conn, last.lsn, last.time_ms)?;
                run_cached(&self.conn, "COMMIT")?;
            }
            Ok(paths)
        });
        if !matches!(outcome, Ok(Some(_))) {
            // The batch's DDL (if any) is rolled back too: forget what depends on it.
            self.schema = None;
            self.changes.forget();
            let _ = run_cached(&self.conn, "ROLLBACK");
        }
        outcome
    }

    /// Applies every record inside the open transaction; stops at the first redo (None).
    fn apply_all(&mut self, records: &[Record], path: Path) -> Result<Option<ApplyPaths>> {
        // Checked in every batch: a schema changed behind spare's back (someone editing the
        // spare's file) must show up as divergence, not as silently skipped changes.
        let mut schema = self.schema_checksum()?;
        let mut paths = ApplyPaths::default();
        for r in records {
            if self.apply_one(r, &mut schema, path, &mut paths)? == Applied::Redo {
                return Ok(None);
            }
            // A constraint declared ON CONFLICT ROLLBACK ends the transaction itself, and
            // SQLite's apply would go on in autocommit mode: stop before anything more is
            // written outside the batch (the primary refuses such tables; a database made
            // elsewhere may hold one).
            if self.conn.is_autocommit() {
                return Err(Error::Sql(format!(
                    "record {}: a constraint declared ON CONFLICT ROLLBACK ended the apply's transaction; this spare must be re-seeded",
                    r.lsn
                )));
            }
        }
        Ok(Some(paths))
    }

    /// This database's schema checksum now (inside the batch's transaction), computed
    /// again only when `PRAGMA schema_version` moved since the last time.
    fn schema_checksum(&mut self) -> Result<u64> {
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?;
        self.changes.at_schema(version);
        if let Some((at, sum)) = self.schema.filter(|(at, _)| *at == version) {
            debug_assert_eq!(at, version);
            return Ok(sum);
        }
        let sum = schema::checksum(&self.conn)?;
        self.schema = Some((version, sum));
        Ok(sum)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn into_connection(self) -> Connection {
        let Applier { changes, conn, .. } = self;
        drop(changes);
        conn
    }
}

/// Which apply a batch goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `store::change_apply`: statements compiled once.
    Ours,
    /// `sqlite3changeset_apply`, the reference.
    Sqlite,
}

impl Applier {
    fn apply_one(
        &mut self,
        record: &Record,
        schema: &mut u64,
        path: Path,
        paths: &mut ApplyPaths,
    ) -> Result<Applied> {
        if record.kind != RecordKind::Txn {
            return Ok(Applied::Here);
        }
        let conn = &self.conn;
        let payload = TxnPayload::decode(&record.payload)?;
        // A schema change that fails here diverged, unless the failure is this host's (a
        // full disk, a busy database): that one is retried.
        let failed = |e: rusqlite::Error| match Error::from(e) {
            transient @ Error::Unavailable(_) => transient,
            other => Error::Diverged(format!(
                "record {}: schema change failed here: {other}",
                record.lsn
            )),
        };
        for st in &payload.ddl {
            let mut stmt = conn.prepare(&st.sql).map_err(failed)?;
            bind(&mut stmt, &st.params)?;
            stmt.raw_execute().map_err(failed)?;
        }
        if !payload.ddl.is_empty() {
            *schema = schema::checksum(conn)?;
            self.changes.forget();
        }
        if *schema != payload.schema {
            return Err(Error::Diverged(format!(
                "record {}: this node's schema differs from the primary's (checksum mismatch)",
                record.lsn
            )));
        }
        let diverged = |e| match e {
            Error::Diverged(m) => Error::Diverged(format!("record {}: {m}", record.lsn)),
            other => other,
        };
        let applied = match path {
            Path::Ours => self
                .changes
                .apply(conn, &payload.changeset)
                .map_err(diverged)?,
            Path::Sqlite => {
                apply_changeset(conn, &payload.changeset).map_err(diverged)?;
                Applied::BySqlite
            }
        };
        match applied {
            _ if payload.changeset.is_empty() => {}
            Applied::Here => paths.ours += 1,
            Applied::BySqlite => paths.by_sqlite += 1,
            Applied::Redo => {}
        }
        if applied != Applied::Redo {
            schema::set_sequences(conn, &payload.sequences)?;
        }
        Ok(applied)
    }
}
