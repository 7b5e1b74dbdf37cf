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
use crate::store::session::apply_changeset;
use crate::store::value::bind;
use crate::store::{meta, run_cached, schema, TxnPayload};

/// Applies records in order on an applier connection; `expected_first` is the LSN the
/// database expects next (applied + 1). Returns the new applied position.
pub struct Applier {
    conn: Connection,
    applied_lsn: u64,
    applied_time_ms: u64,
    /// The schema checksum, with the `PRAGMA schema_version` it was computed at. SQLite
    /// bumps that counter on every schema change, through any connection or process, so
    /// an unchanged counter means an unchanged schema: the checksum (a read of
    /// `sqlite_schema` and a hash) is computed again only when it moved.
    schema: Option<(i64, u64)>,
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
            conn,
            applied_lsn,
            applied_time_ms,
            schema: None,
        })
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
        run_cached(&self.conn, "BEGIN IMMEDIATE")?;
        // Checked in every batch: a schema changed behind spare's back (someone editing the
        // spare's file) must show up as divergence, not as silently skipped changes.
        let mut schema = match self.schema_checksum() {
            Ok(s) => s,
            Err(e) => {
                let _ = run_cached(&self.conn, "ROLLBACK");
                return Err(e);
            }
        };
        let outcome = records
            .iter()
            .try_for_each(|r| apply_one(&self.conn, r, &mut schema))
            .and_then(|()| meta::set_applied_cached(&self.conn, last.lsn, last.time_ms));
        match outcome.and_then(|()| Ok(run_cached(&self.conn, "COMMIT")?)) {
            Ok(()) => {
                self.applied_lsn = last.lsn;
                self.applied_time_ms = last.time_ms;
                Ok(())
            }
            Err(e) => {
                // The batch's DDL (if any) is rolled back too: forget the checksum.
                self.schema = None;
                let _ = run_cached(&self.conn, "ROLLBACK");
                Err(e)
            }
        }
    }

    /// This database's schema checksum now (inside the batch's transaction), computed
    /// again only when `PRAGMA schema_version` moved since the last time.
    fn schema_checksum(&mut self) -> Result<u64> {
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?;
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
        self.conn
    }
}

fn apply_one(conn: &Connection, record: &Record, schema: &mut u64) -> Result<()> {
    if record.kind != RecordKind::Txn {
        return Ok(());
    }
    let payload = TxnPayload::decode(&record.payload)?;
    // A schema change that fails here diverged, unless the failure is this host's (a full
    // disk, a busy database): that one is retried.
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
    }
    if *schema != payload.schema {
        return Err(Error::Diverged(format!(
            "record {}: this node's schema differs from the primary's (checksum mismatch)",
            record.lsn
        )));
    }
    apply_changeset(conn, &payload.changeset).map_err(|e| match e {
        Error::Diverged(m) => Error::Diverged(format!("record {}: {m}", record.lsn)),
        other => other,
    })?;
    schema::set_sequences(conn, &payload.sequences)
}
