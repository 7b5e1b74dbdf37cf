//! The primary's execution of client requests, with changeset capture.
//!
//! A group of requests runs in one SQLite transaction, each request under its own
//! savepoint, with one session recording the whole transaction: a failing request is rolled
//! back to its savepoint and fails alone, and the changeset holds only what the others did.
//! The caller then logs the payload, fsyncs, and calls [`Executor::commit`] with the LSN.
//!
//! A request that changes the schema runs in a group of its own and may hold only schema
//! statements: DDL is replayed on spares as SQL, before the changeset.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::session::Session;
use crate::store::value::{bind, Statement};
use crate::store::{meta, schema, TxnPayload};

/// Most statements one request (batch) may hold.
pub const MAX_BATCH_STATEMENTS: usize = 10_000;

/// One client request: one statement, or an atomic batch.
#[derive(Debug, Clone)]
pub struct Request {
    pub statements: Vec<Statement>,
}

/// What one statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatementResult {
    pub rows_affected: u64,
    pub last_insert_rowid: i64,
}

/// What a group produced: each request's outcome, and what to log (None: nothing changed).
pub struct GroupOutcome {
    pub results: Vec<Result<Vec<StatementResult>>>,
    pub payload: Option<TxnPayload>,
}

impl Request {
    /// Checks the request's shape before it reaches SQLite; says what to do instead.
    pub fn validate(&self) -> Result<()> {
        if self.statements.is_empty() {
            return Err(Error::InvalidInput("the request holds no statement".into()));
        }
        if self.statements.len() > MAX_BATCH_STATEMENTS {
            return Err(Error::InvalidInput(format!(
                "a batch may hold at most {MAX_BATCH_STATEMENTS} statements; split it"
            )));
        }
        for st in &self.statements {
            schema::check_statement_allowed(&st.sql)?;
        }
        let ddl = self
            .statements
            .iter()
            .filter(|s| schema::is_ddl(&s.sql))
            .count();
        if ddl > 0 && ddl < self.statements.len() {
            return Err(Error::InvalidInput(
                "this batch mixes schema changes (CREATE, ALTER, DROP) with other statements; send the schema changes in a request of their own".into(),
            ));
        }
        Ok(())
    }

    pub fn is_ddl(&self) -> bool {
        self.statements
            .first()
            .is_some_and(|s| schema::is_ddl(&s.sql))
    }
}

/// The primary's single write connection and what it caches about the schema.
pub struct Executor {
    conn: Connection,
    /// Checksum of the current schema, recomputed after each DDL.
    schema: u64,
    /// AUTOINCREMENT counters as of the last commit, to log only the ones that change.
    sequences: BTreeMap<String, i64>,
}

impl Executor {
    pub fn new(conn: Connection) -> Result<Self> {
        let schema = schema::checksum(&conn)?;
        let sequences = schema::sequences(&conn)?;
        Ok(Executor {
            conn,
            schema,
            sequences,
        })
    }

    /// Runs `requests` in one open transaction. Callers pass a DDL request alone.
    pub fn run_group(&mut self, requests: &[Request]) -> Result<GroupOutcome> {
        let ddl = requests.iter().any(Request::is_ddl);
        assert!(
            !ddl || requests.len() == 1,
            "a schema change must run in a group of its own"
        );
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let session = Session::attach_all(&self.conn);
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                rollback(&self.conn);
                return Err(e);
            }
        };
        let mut results = Vec::with_capacity(requests.len());
        for req in requests {
            results.push(self.run_request(req, ddl));
        }
        let changeset = match session.changeset(&self.conn) {
            Ok(c) => c,
            // DDL such as ALTER TABLE ... DROP COLUMN makes SQLite refuse to build the
            // changeset; a schema-only request has its effect replayed as SQL instead.
            Err(_) if ddl => Vec::new(),
            Err(e) => {
                drop(session);
                rollback(&self.conn);
                return Err(e);
            }
        };
        drop(session);
        let payload = self.payload(requests, &results, changeset, ddl)?;
        Ok(GroupOutcome { results, payload })
    }

    fn run_request(&self, req: &Request, ddl: bool) -> Result<Vec<StatementResult>> {
        self.conn.execute_batch("SAVEPOINT request")?;
        let outcome = req
            .statements
            .iter()
            .map(|st| run_statement(&self.conn, st))
            .collect::<Result<Vec<_>>>();
        let outcome = outcome.and_then(|r| {
            if ddl {
                schema::check_replicable(&self.conn).map(|()| r)
            } else {
                Ok(r)
            }
        });
        if outcome.is_err() {
            self.conn.execute_batch("ROLLBACK TO request")?;
        }
        self.conn.execute_batch("RELEASE request")?;
        outcome
    }

    fn payload(
        &self,
        requests: &[Request],
        results: &[Result<Vec<StatementResult>>],
        changeset: Vec<u8>,
        ddl: bool,
    ) -> Result<Option<TxnPayload>> {
        let ddl_statements: Vec<Statement> = if ddl && results[0].is_ok() {
            requests[0].statements.clone()
        } else {
            Vec::new()
        };
        let now = schema::sequences(&self.conn)?;
        let sequences: Vec<(String, i64)> = now
            .iter()
            .filter(|(k, v)| self.sequences.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if ddl_statements.is_empty() && changeset.is_empty() && sequences.is_empty() {
            return Ok(None);
        }
        let schema = if ddl_statements.is_empty() {
            self.schema
        } else {
            schema::checksum(&self.conn)?
        };
        Ok(Some(TxnPayload {
            ddl: ddl_statements,
            changeset,
            sequences,
            schema,
        }))
    }

    /// Commits the open transaction, recording that it is log record `lsn`.
    pub fn commit(
        &mut self,
        applied: Option<(u64, u64)>,
        payload: Option<&TxnPayload>,
    ) -> Result<()> {
        if let Some((lsn, time_ms)) = applied {
            meta::set_applied(&self.conn, lsn, time_ms)?;
        }
        self.conn.execute_batch("COMMIT")?;
        if let Some(p) = payload {
            self.schema = p.schema;
            for (name, seq) in &p.sequences {
                self.sequences.insert(name.clone(), *seq);
            }
        }
        Ok(())
    }

    /// Abandons the open transaction (the log write failed).
    pub fn rollback(&mut self) {
        rollback(&self.conn);
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn rollback(conn: &Connection) {
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        tracing::warn!(cause = %e, "rolling back a failed group");
    }
}

fn run_statement(conn: &Connection, st: &Statement) -> Result<StatementResult> {
    let mut stmt = conn.prepare_cached(&st.sql)?;
    bind(&mut stmt, &st.params)?;
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    Ok(StatementResult {
        rows_affected: conn.changes(),
        last_insert_rowid: conn.last_insert_rowid(),
    })
}
