//! The primary's execution of client requests, with changeset capture.
//!
//! A group of requests runs in one SQLite transaction, each request under its own
//! savepoint, with one session recording the whole transaction: a failing request is rolled
//! back to its savepoint and fails alone, and the changeset holds only what the others did.
//! The caller then logs the payload, fsyncs, and calls [`Executor::commit`] with the LSN.
//!
//! A request that changes the schema runs in a group of its own and may hold only schema
//! statements: DDL is replayed on spares as SQL, so its record carries no changeset, and a
//! schema statement that would change other tables' rows (a DROP TABLE whose foreign keys
//! cascade) is refused, since replaying it on a spare (foreign-key actions off) would not.
//!
//! Bounds: every client statement runs under the connection's [`Guard`] (what it may touch,
//! how long it may run); a request whose changes outgrow [`MAX_CHANGESET_BYTES`] is stopped
//! and rolled back. A group stops taking requests once it ran for the time limit or its
//! changeset grew too large: the requests it did not run go to the next group, so that only
//! a request too large by itself is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::guard::{self, Guard, Limits, Mode};
use crate::store::session::Session;
use crate::store::value::{bind, Statement};
use crate::store::{meta, schema, TxnPayload};

/// Largest changeset one group (and so one request) may produce: what a log record holds,
/// less room for the record's other fields (schema statements, counters).
pub const MAX_CHANGESET_BYTES: u64 = (crate::log::record::MAX_PAYLOAD_BYTES - (1 << 20)) as u64;
/// Time limit of a write request when the configuration does not say (`write_time_limit`).
pub const DEFAULT_WRITE_TIME_LIMIT: Duration = Duration::from_secs(2);
/// Rows a schema statement may change in other tables before it is stopped and refused
/// (any change there refuses it; this only bounds what the check records), in changeset bytes.
pub const MAX_WATCHED_BYTES: u64 = 1 << 20;
/// Time limit of a schema change when the configuration does not say (`schema_time_limit`).
pub const DEFAULT_SCHEMA_TIME_LIMIT: Duration = Duration::from_secs(60);

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

/// What a group produced, and what to log (None: nothing changed).
pub struct GroupOutcome {
    /// One entry per request, in order: its outcome, or None when it is not part of this
    /// group's transaction and must run again in the next group (the group reached a bound
    /// before it, or a stopped statement took the group's transaction with it).
    pub results: Vec<Outcome>,
    pub payload: Option<TxnPayload>,
}

/// The bounds of a group of write requests.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// How long one request may run, and how long a group takes new requests.
    pub time: Duration,
    /// How long a schema change may run.
    pub schema_time: Duration,
    /// Largest changeset of a group.
    pub max_changeset_bytes: u64,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            time: DEFAULT_WRITE_TIME_LIMIT,
            schema_time: DEFAULT_SCHEMA_TIME_LIMIT,
            max_changeset_bytes: MAX_CHANGESET_BYTES,
        }
    }
}

impl WriteLimits {
    fn request(&self, ddl: bool) -> Limits {
        if ddl {
            // Replayed as SQL, it records no changeset.
            return Limits {
                time: self.schema_time,
                time_setting: "schema_time_limit",
                max_changeset_bytes: 0,
            };
        }
        Limits {
            time: self.time,
            time_setting: "write_time_limit",
            max_changeset_bytes: self.max_changeset_bytes,
        }
    }
}

/// One request's outcome in a group; None: not run in this group's transaction.
pub type Outcome = Option<Result<Vec<StatementResult>>>;

/// How the requests of one transaction ran.
enum Ran {
    /// Every request ran or was left for the next group; the transaction is open.
    All(Vec<Outcome>),
    /// SQLite rolled the transaction back while request `at` ran; `answer` is that
    /// request's (None: it runs again in a later group).
    Lost { at: usize, answer: Outcome },
}

/// How one try of a group ended.
enum Tried {
    Kept {
        outcomes: Vec<Outcome>,
        payload: Option<TxnPayload>,
    },
    Lost {
        at: usize,
        answer: Outcome,
    },
}

/// How one request of a group ended.
enum Attempt {
    Done(Result<Vec<StatementResult>>),
    /// Rolled back to its savepoint: with the group's earlier changes it outgrew the
    /// changeset bound.
    TooLarge,
    /// SQLite rolled back the group's whole transaction while the request ran.
    Lost {
        error: Error,
        too_large: bool,
    },
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
            crate::store::statement::check_statement_allowed(&st.sql)?;
        }
        let ddl = self
            .statements
            .iter()
            .filter(|s| schema::is_ddl(&s.sql))
            .count();
        if ddl > 0 && ddl < self.statements.len() {
            return Err(Error::InvalidInput(
                "this batch mixes schema changes (CREATE, ALTER, DROP, ANALYZE) with other statements; send the schema changes in a request of their own".into(),
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
    /// What client statements may do on `conn`.
    guard: Arc<Guard>,
    /// Checksum of the current schema, recomputed after each DDL.
    schema: u64,
    /// AUTOINCREMENT counters as of the last commit, to log only the ones that change.
    sequences: BTreeMap<String, i64>,
}

impl Executor {
    pub fn new(mut conn: Connection) -> Result<Self> {
        let guard = Guard::install(&mut conn)?;
        // No single value may exceed what a record can carry: SQLite refuses it as it is
        // made, instead of the node building a changeset it cannot log.
        conn.set_limit(
            rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH,
            MAX_CHANGESET_BYTES as i32,
        )?;
        let schema = schema::checksum(&conn)?;
        let sequences = schema::sequences(&conn)?;
        Ok(Executor {
            conn,
            guard,
            schema,
            sequences,
        })
    }

    /// Runs `requests` in one open transaction, as many as the bounds allow (see
    /// [`GroupOutcome`]). Callers pass a DDL request alone. An error means the group failed
    /// as a whole and its transaction is rolled back.
    ///
    /// When SQLite takes the transaction back while request `i` runs (a write statement
    /// stopped at a limit), the requests before it ran for nothing: they run again, alone,
    /// in a new transaction here, so that they are not stuck behind request `i` for ever.
    pub fn run_group(
        &mut self,
        requests: &[Request],
        limits: &WriteLimits,
    ) -> Result<GroupOutcome> {
        let ddl = requests.iter().any(Request::is_ddl);
        assert!(
            !ddl || requests.len() == 1,
            "a schema change must run in a group of its own"
        );
        let mut results: Vec<Outcome> = requests.iter().map(|_| None).collect();
        let mut upto = requests.len();
        loop {
            match self.try_group(&requests[..upto], ddl, limits)? {
                Tried::Kept { outcomes, payload } => {
                    for (slot, outcome) in results.iter_mut().zip(outcomes) {
                        *slot = outcome;
                    }
                    return Ok(GroupOutcome { results, payload });
                }
                Tried::Lost { at, answer } => {
                    results[at] = answer;
                    if at == 0 {
                        return Ok(GroupOutcome {
                            results,
                            payload: None,
                        });
                    }
                    // Each try is shorter: this ends.
                    upto = at;
                }
            }
        }
    }

    /// One transaction over `requests`: kept open (for the caller to log and commit), or
    /// lost while a request ran.
    fn try_group(
        &mut self,
        requests: &[Request],
        ddl: bool,
        limits: &WriteLimits,
    ) -> Result<Tried> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        // A schema change is replayed as SQL on spares, with the same effect on the same
        // rows: nothing to record (a DROP TABLE would record every row it deletes).
        let session = match (!ddl).then(|| Session::attach_all(&self.conn)).transpose() {
            Ok(s) => s,
            Err(e) => {
                rollback(&self.conn);
                return Err(e);
            }
        };
        let outcomes = match self.run_requests(requests, ddl, limits, session.as_ref()) {
            Ok(Ran::All(o)) => o,
            // SQLite rolled the transaction back: nothing of it remains to log.
            Ok(Ran::Lost { at, answer }) => return Ok(Tried::Lost { at, answer }),
            Err(e) => {
                drop(session);
                rollback(&self.conn);
                return Err(e);
            }
        };
        let changeset = match &session {
            Some(s) => s.changeset(&self.conn),
            None => Ok(Vec::new()),
        };
        drop(session);
        let changeset = match changeset {
            Ok(c) => c,
            Err(e) => {
                rollback(&self.conn);
                return Err(e);
            }
        };
        let payload = self.payload(requests, &outcomes, changeset, ddl)?;
        Ok(Tried::Kept { outcomes, payload })
    }

    fn run_requests(
        &self,
        requests: &[Request],
        ddl: bool,
        limits: &WriteLimits,
        session: Option<&Session<'_>>,
    ) -> Result<Ran> {
        let _probe = session.map(|s| self.guard.probe.watch(s));
        let started = Instant::now();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(requests.len());
        for (at, req) in requests.iter().enumerate() {
            let first = at == 0;
            if !first && started.elapsed() >= limits.time {
                break;
            }
            match self.run_request(req, ddl, limits, session)? {
                Attempt::Done(r) => outcomes.push(Some(r)),
                // The session's size never goes down (rolled-back changes still count):
                // the rest of the group goes to a fresh one.
                Attempt::TooLarge if first => {
                    outcomes.push(Some(Err(guard::too_large_transaction(
                        limits.max_changeset_bytes,
                    ))));
                    break;
                }
                Attempt::TooLarge => break,
                Attempt::Lost { error, too_large } => {
                    // Too large only with the others: it runs again, first of a group.
                    let answer = (first || !too_large).then_some(Err(error));
                    return Ok(Ran::Lost { at, answer });
                }
            }
        }
        outcomes.resize_with(requests.len(), || None);
        Ok(Ran::All(outcomes))
    }

    /// Runs one request under its savepoint. An error means the transaction is in a state
    /// the group cannot go on from.
    fn run_request(
        &self,
        req: &Request,
        ddl: bool,
        limits: &WriteLimits,
        session: Option<&Session<'_>>,
    ) -> Result<Attempt> {
        self.conn.execute_batch("SAVEPOINT request")?;
        let mode = if ddl { Mode::Schema } else { Mode::Write };
        let outcome = self.guard.run(mode, &limits.request(ddl), || {
            req.statements
                .iter()
                .map(|st| self.run_statement(st, ddl))
                .collect::<Result<Vec<_>>>()
        });
        // (A schema request records no changeset; its own size stop is a refusal.)
        let too_large = !ddl
            && (self.guard.stopped_for_size()
                || session.is_some_and(|s| s.size() > limits.max_changeset_bytes));
        if self.conn.is_autocommit() {
            // A write statement that SQLite stops (time or size limit, I/O error) takes the
            // whole transaction with it, savepoints included.
            let error = outcome.err().unwrap_or_else(|| {
                Error::Unavailable("the group's transaction was rolled back; retry".into())
            });
            return Ok(Attempt::Lost { error, too_large });
        }
        let outcome = outcome.and_then(|r| self.check_request(ddl).map(|()| r));
        if outcome.is_err() || too_large {
            self.conn.execute_batch("ROLLBACK TO request")?;
        }
        self.conn.execute_batch("RELEASE request")?;
        Ok(if too_large {
            Attempt::TooLarge
        } else {
            Attempt::Done(outcome)
        })
    }

    /// What a request must leave true before it joins the group's transaction.
    fn check_request(&self, ddl: bool) -> Result<()> {
        if deferred_foreign_keys(&self.conn) > 0 {
            // The group's COMMIT would fail after its record was logged: refuse this
            // request alone now.
            return Err(Error::Sql("FOREIGN KEY constraint failed: a deferred foreign key is not satisfied at the end of the request (each request is its own transaction)".into()));
        }
        if ddl {
            schema::check_replicable(&self.conn)?;
        }
        Ok(())
    }

    fn run_statement(&self, st: &Statement, ddl: bool) -> Result<StatementResult> {
        let compile_error = |e| guard::compile_error(&self.conn, &st.sql, e);
        if !ddl {
            let mut stmt = self.conn.prepare_cached(&st.sql).map_err(compile_error)?;
            bind(&mut stmt, &st.params)?;
            return step_all(&self.conn, &mut stmt);
        }
        // Compiled afresh, never from the cache: the authorizer must see it compiled to
        // report what it touches (a cached statement is not compiled again). What the last
        // statement's run compiled (a virtual table's own statements) is not this one's.
        self.guard.take_effects();
        let mut stmt = self.conn.prepare(&st.sql).map_err(compile_error)?;
        bind(&mut stmt, &st.params)?;
        self.run_schema_statement(&mut stmt)
    }

    /// Runs a schema statement, refusing it if it changes rows a replay would not: SQLite
    /// told the authorizer, while compiling, which tables it may write besides those it
    /// drops or alters (foreign-key actions, their triggers), and which it creates.
    fn run_schema_statement(&self, stmt: &mut rusqlite::Statement<'_>) -> Result<StatementResult> {
        let effects = self.guard.take_effects();
        if effects.copies() {
            return Err(Error::InvalidInput(schema::CREATE_AS.into()));
        }
        let others = self.existing(effects.others())?;
        // `CREATE TABLE IF NOT EXISTS` names a table that may exist already.
        let existing_created = self.existing(effects.created.iter().cloned().collect())?;
        let result = match others.is_empty() {
            true => step_all(&self.conn, stmt)?,
            false => self.step_watching(stmt, &others)?,
        };
        for table in effects
            .created
            .difference(&existing_created.into_iter().collect())
        {
            if self.has_rows(table)? {
                return Err(Error::InvalidInput(schema::CREATE_AS.into()));
            }
        }
        Ok(result)
    }

    /// Runs `stmt` with a session on `others`: any row it changes there refuses it. The
    /// session may grow to [`MAX_WATCHED_BYTES`] only (the statement is stopped there), so a
    /// cascade over a large table costs no memory to refuse.
    fn step_watching(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        others: &[String],
    ) -> Result<StatementResult> {
        let watch = Session::attach_tables(&self.conn, others)?;
        let stepped = {
            let _probe = self.guard.probe.watch(&watch);
            self.guard.limit_size(MAX_WATCHED_BYTES);
            step_all(&self.conn, stmt)
        };
        let counts = if self.guard.stopped_for_size() {
            format!(
                "more than {} KiB of rows of {}",
                MAX_WATCHED_BYTES >> 10,
                others.join(", ")
            )
        } else if watch.is_empty() {
            return stepped;
        } else {
            let changeset = self.guard.internal(|| watch.changeset(&self.conn))?;
            let changed = crate::store::session::count_changes(&changeset)?;
            let rows: Vec<String> = changed
                .iter()
                .map(|(t, n)| format!("{} of {t}", n.inserts + n.updates + n.deletes))
                .collect();
            rows.join(", ")
        };
        Err(Error::NotAllowed(format!(
            "this schema change would also delete or change rows ({counts}) through foreign-key actions such as ON DELETE CASCADE (or their triggers), which spares could not replay; first delete or update the rows of {} that reference the table, then retry",
            others.join(", ")
        )))
    }

    /// Whether `table` holds a row.
    fn has_rows(&self, table: &str) -> Result<bool> {
        let quoted = table.replace('"', "\"\"");
        let sql = format!("SELECT EXISTS (SELECT 1 FROM \"{quoted}\")");
        Ok(self.conn.query_row(&sql, [], |r| r.get(0))?)
    }

    /// The tables of `names` that exist (a session can watch only those).
    fn existing(&self, names: Vec<String>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in names {
            // Names compare as SQLite compares them; a view answers rows as a table does.
            let exists: bool = self.conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
                [&name],
                |r| r.get(0),
            )?;
            if exists {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn payload(
        &self,
        requests: &[Request],
        results: &[Outcome],
        changeset: Vec<u8>,
        ddl: bool,
    ) -> Result<Option<TxnPayload>> {
        let ddl_statements: Vec<Statement> = if ddl && matches!(results[0], Some(Ok(_))) {
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

    /// Commits the open transaction, recording that it is log record `lsn` (nothing to do
    /// when SQLite already rolled the group back, which only happens to a group not logged).
    pub fn commit(
        &mut self,
        applied: Option<(u64, u64)>,
        payload: Option<&TxnPayload>,
    ) -> Result<()> {
        if self.conn.is_autocommit() {
            assert!(
                applied.is_none(),
                "a logged group must still hold its transaction"
            );
            return Ok(());
        }
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
    if conn.is_autocommit() {
        return;
    }
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        tracing::warn!(cause = %e, "rolling back a failed group");
    }
}

/// Runs a prepared statement to its end (rows it returns, as `RETURNING`, are dropped).
fn step_all(conn: &Connection, stmt: &mut rusqlite::Statement<'_>) -> Result<StatementResult> {
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    Ok(StatementResult {
        rows_affected: conn.changes(),
        last_insert_rowid: conn.last_insert_rowid(),
    })
}

/// Deferred foreign-key violations pending in the open transaction.
fn deferred_foreign_keys(conn: &Connection) -> i32 {
    let (mut current, mut high) = (0, 0);
    // SAFETY: a valid handle and out-pointers to locals.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut high,
            0,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        current
    } else {
        0
    }
}
