//! Applying a changeset with statements compiled once per table and change shape, instead
//! of `sqlite3changeset_apply`, which compiles its own for every call: `PRAGMA
//! table_xinfo`, an INSERT, a DELETE, a SELECT and an UPDATE per call, and two `PRAGMA
//! defer_foreign_keys` whose OP_Expire also expires every statement the connection has
//! cached — measured at a third of a spare's apply thread under a steady load, where each
//! call applies one small transaction.
//!
//! The statements are the ones SQLite's apply builds (`sqlite3session.c`, 3.54): an INSERT
//! of every column, a DELETE matching the primary key with `=` and every other column with
//! `IS`, an UPDATE per set of changed columns matching the primary key and the old values
//! it carries with `IS`. A change that applies cleanly here applies identically there.
//!
//! Whatever SQLite's apply would handle in some other way is left to it, never guessed:
//! - before anything is applied, a table this path does not cover (no explicit primary
//!   key — those are recorded by rowid —, `sqlite_stat1`, a column count or primary key
//!   that differs from the change's, a table that does not exist) sends the whole
//!   changeset to `sqlite3changeset_apply` ([`Applied::BySqlite`]);
//! - a change that meets anything but a clean apply (a constraint error, no row matched)
//!   stops here with [`Applied::Redo`]: the caller rolls the batch back and applies it
//!   again with SQLite's apply, which retries constraint errors after the other changes
//!   (a unique value swapped between two rows) and names the conflict of a diverged copy.
//!
//! Statements are kept per table (bounded by the schema) and per table at most
//! [`MAX_UPDATE_SHAPES`] UPDATEs; all are forgotten when the schema changes.

use std::collections::HashMap;
use std::ffi::{c_int, CStr, CString};
use std::ptr;

use rusqlite::ffi;
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::session::each_change;

/// UPDATE statements kept per table, one per set of changed columns. A workload updating
/// columns in more combinations than this compiles the rarest again (SQLite's own apply
/// keeps 12 per call).
pub const MAX_UPDATE_SHAPES: usize = 16;
/// Tables whose statements are kept; past this many (a schema of thousands of tables), all
/// are forgotten and compiled again as changes arrive.
pub const MAX_CACHED_TABLES: usize = 1024;

/// How a changeset was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Every change applied here.
    Here,
    /// A table this path does not cover: the changeset went to `sqlite3changeset_apply`.
    BySqlite,
    /// A change did not apply cleanly, after others did: roll the transaction back and
    /// apply its records with `sqlite3changeset_apply`.
    Redo,
}

/// One compiled statement, finalized when dropped (before the connection: see [`Changes`]).
struct Stmt(*mut ffi::sqlite3_stmt);

// SAFETY: a statement belongs to its connection and, like rusqlite's `Connection`, may move
// to another thread with it; `Changes` lives beside its connection in `Applier`, used by
// one thread at a time.
unsafe impl Send for Stmt {}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: the statement was prepared by sqlite3_prepare_v3 and is finalized once.
        unsafe { ffi::sqlite3_finalize(self.0) };
    }
}

/// An UPDATE's shape: (columns with a new value, columns with an old value).
type Shape = (Vec<bool>, Vec<bool>);

/// What a table's changes need: its columns as SQLite's apply sees them, and statements.
struct Table {
    /// Quoted `main."name"`.
    target: String,
    /// Quoted names of the columns that are not hidden (generated columns are), in order.
    columns: Vec<String>,
    pk: Vec<bool>,
    /// False: changes of this table go to SQLite's apply (no explicit primary key, or
    /// `sqlite_stat1`, or no such table).
    covered: bool,
    insert: Option<Stmt>,
    delete: Option<Stmt>,
    /// Most recently used first.
    updates: Vec<(Shape, Stmt)>,
}

/// The statement cache of one applier connection. Must be dropped (or [`Changes::forget`]
/// called) before the connection closes: SQLite refuses to close a connection with
/// statements left.
#[derive(Default)]
pub(crate) struct Changes {
    tables: HashMap<String, Table>,
    /// `PRAGMA schema_version` the cache was filled at.
    schema_version: Option<i64>,
    /// The connection the statements belong to (its handle's address): they may run on no
    /// other, whose transaction and change count they would not see.
    conn: Option<usize>,
}

impl Changes {
    /// Forgets every table and statement (the schema changed).
    pub fn forget(&mut self) {
        self.tables.clear();
        self.schema_version = None;
    }

    /// Asserts that `conn` is the connection of the statements kept.
    fn check_connection(&mut self, conn: &Connection) {
        // SAFETY: handle() only reads the connection's pointer.
        let handle = unsafe { conn.handle() } as usize;
        assert_eq!(
            *self.conn.get_or_insert(handle),
            handle,
            "statements used on another connection"
        );
    }

    /// Forgets everything unless the schema is still at `version`.
    pub fn at_schema(&mut self, version: i64) {
        if self.schema_version != Some(version) {
            self.forget();
            self.schema_version = Some(version);
        }
    }

    /// Applies `changeset` on `conn` inside the caller's transaction (see the module doc).
    pub fn apply(&mut self, conn: &Connection, changeset: &[u8]) -> Result<Applied> {
        if changeset.is_empty() {
            return Ok(Applied::Here);
        }
        self.check_connection(conn);
        if self.tables.len() >= MAX_CACHED_TABLES {
            self.forget();
        }
        if !self.covers(conn, changeset)? {
            crate::store::session::apply_changeset(conn, changeset)?;
            return Ok(Applied::BySqlite);
        }
        let mut redo = false;
        each_change(changeset, |it| {
            if !redo {
                redo = !self.apply_one(conn, it)?;
            }
            Ok(())
        })?;
        Ok(if redo { Applied::Redo } else { Applied::Here })
    }

    /// Whether every table of the changeset is covered, its shape matching the change's.
    fn covers(&mut self, conn: &Connection, changeset: &[u8]) -> Result<bool> {
        let mut covered = true;
        each_change(changeset, |it| {
            // SAFETY: `it` is positioned on a change for the duration of this callback.
            let change = unsafe { Change::of(it) };
            if covered {
                let table = self.table(conn, change.table)?;
                let mut pk: *mut u8 = ptr::null_mut();
                let mut n: c_int = 0;
                // SAFETY: `it` is positioned on a change; pk points into the iterator.
                unsafe { ffi::sqlite3changeset_pk(it, &mut pk, &mut n) };
                // SAFETY: SQLite gives n flags, one per column of the change.
                let flags = unsafe { std::slice::from_raw_parts(pk, n.max(0) as usize) };
                covered = table.covered
                    && change.columns == table.columns.len()
                    && flags.iter().map(|&f| f != 0).eq(table.pk.iter().copied());
            }
            Ok(())
        })?;
        Ok(covered)
    }

    /// The table `name`, read from the schema the first time.
    fn table(&mut self, conn: &Connection, name: &str) -> Result<&mut Table> {
        if !self.tables.contains_key(name) {
            let table = read_table(conn, name)?;
            self.tables.insert(name.to_string(), table);
        }
        Ok(self.tables.get_mut(name).expect("inserted above"))
    }

    /// Applies the change `it` points at; false if it did not apply cleanly.
    fn apply_one(
        &mut self,
        conn: &Connection,
        it: *mut ffi::sqlite3_changeset_iter,
    ) -> Result<bool> {
        // SAFETY: `it` is positioned on a change until this function returns.
        let change = unsafe { Change::of(it) };
        let table = self
            .tables
            .get_mut(change.table)
            .expect("covered tables are cached");
        let stmt = match change.op {
            ffi::SQLITE_INSERT => {
                if table.insert.is_none() {
                    table.insert = Some(prepare(conn, &insert_sql(table))?);
                }
                bound_all(it, table.insert.as_ref(), change.columns, Side::New)?
            }
            ffi::SQLITE_DELETE => {
                if table.delete.is_none() {
                    table.delete = Some(prepare(conn, &delete_sql(table))?);
                }
                bound_all(it, table.delete.as_ref(), change.columns, Side::Old)?
            }
            _ => update_statement(conn, table, it, change.columns)?,
        };
        match stmt {
            Some(stmt) => step(conn, stmt, change.op != ffi::SQLITE_INSERT),
            None => Ok(false),
        }
    }
}

/// The table, operation and column count of the change `it` points at.
struct Change<'it> {
    table: &'it str,
    op: c_int,
    columns: usize,
}

impl Change<'_> {
    /// # Safety
    /// `it` must be positioned on a change, and the result used only until it moves.
    unsafe fn of<'it>(it: *mut ffi::sqlite3_changeset_iter) -> Change<'it> {
        let (mut tab, mut ncol, mut op, mut indirect) = (ptr::null(), 0, 0, 0);
        // SAFETY: `it` is positioned on a change; tab points into the iterator and stays
        // valid until it moves, which the borrow's use (within one callback) respects.
        unsafe { ffi::sqlite3changeset_op(it, &mut tab, &mut ncol, &mut op, &mut indirect) };
        // SAFETY: as above.
        let table = unsafe { CStr::from_ptr(tab) }.to_str().unwrap_or("");
        Change {
            table,
            op,
            columns: ncol.max(0) as usize,
        }
    }
}

/// Reads `name`'s columns as SQLite's apply does (`PRAGMA table_xinfo`, hidden columns
/// left out).
fn read_table(conn: &Connection, name: &str) -> Result<Table> {
    let mut stmt = conn.prepare("SELECT name, pk, hidden FROM pragma_table_xinfo(?1, 'main')")?;
    let rows: Vec<(String, i64, i64)> = stmt
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let visible: Vec<&(String, i64, i64)> = rows.iter().filter(|c| c.2 == 0).collect();
    let pk: Vec<bool> = visible.iter().map(|c| c.1 > 0).collect();
    Ok(Table {
        target: format!("main.{}", quote(name)),
        columns: visible.iter().map(|c| quote(&c.0)).collect(),
        covered: pk.iter().any(|&p| p) && !name.eq_ignore_ascii_case("sqlite_stat1"),
        pk,
        insert: None,
        delete: None,
        updates: Vec::new(),
    })
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn insert_sql(table: &Table) -> String {
    let params: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.target,
        table.columns.join(", "),
        params.join(", ")
    )
}

fn delete_sql(table: &Table) -> String {
    let terms: Vec<String> = table
        .columns
        .iter()
        .zip(&table.pk)
        .enumerate()
        .map(|(i, (c, &k))| format!("{c} {} ?{}", if k { "=" } else { "IS" }, i + 1))
        .collect();
    format!("DELETE FROM {} WHERE {}", table.target, terms.join(" AND "))
}

/// SET the columns with a new value (`?2i+1`), WHERE the primary key and the columns with
/// an old value match (`?2i+2`), as SQLite's apply writes it.
fn update_sql(table: &Table, new: &[bool], old: &[bool]) -> String {
    let sets: Vec<String> = (0..table.columns.len())
        .filter(|&i| new[i] && !table.pk[i])
        .map(|i| format!("{} = ?{}", table.columns[i], 2 * i + 1))
        .collect();
    let wheres: Vec<String> = (0..table.columns.len())
        .filter(|&i| table.pk[i] || old[i])
        .map(|i| format!("{} IS ?{}", table.columns[i], 2 * i + 2))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {}",
        table.target,
        sets.join(", "),
        wheres.join(" AND ")
    )
}

/// The UPDATE for this change's shape, compiled once, with its values bound (None: a
/// value it needs is missing).
fn update_statement(
    conn: &Connection,
    table: &mut Table,
    it: *mut ffi::sqlite3_changeset_iter,
    columns: usize,
) -> Result<Option<*mut ffi::sqlite3_stmt>> {
    let new: Vec<bool> = (0..columns)
        .map(|i| !value(it, Side::New, i).is_null())
        .collect();
    let old: Vec<bool> = (0..columns)
        .map(|i| !value(it, Side::Old, i).is_null())
        .collect();
    if !new.iter().zip(&table.pk).any(|(&n, &k)| n && !k) {
        // Nothing to set: not a change SQLite's session writes.
        return Ok(None);
    }
    let shape = (new, old);
    let entry = match table.updates.iter().position(|(s, _)| *s == shape) {
        Some(i) => table.updates.remove(i),
        None => {
            let sql = update_sql(table, &shape.0, &shape.1);
            table.updates.truncate(MAX_UPDATE_SHAPES - 1);
            (shape, prepare(conn, &sql)?)
        }
    };
    table.updates.insert(0, entry);
    let ((new, old), stmt) = &table.updates[0];
    for i in 0..columns {
        if new[i] && !table.pk[i] && !bind(stmt.0, 2 * i + 1, value(it, Side::New, i))? {
            return Ok(None);
        }
        if (table.pk[i] || old[i]) && !bind(stmt.0, 2 * i + 2, value(it, Side::Old, i))? {
            return Ok(None);
        }
    }
    Ok(Some(stmt.0))
}

fn prepare(conn: &Connection, sql: &str) -> Result<Stmt> {
    let text = CString::new(sql).map_err(|_| Error::Sql(format!("NUL in {sql:?}")))?;
    let mut stmt = ptr::null_mut();
    // SAFETY: `text` is NUL-terminated and outlives the call; PERSISTENT says the
    // statement is kept for many uses.
    let rc = unsafe {
        ffi::sqlite3_prepare_v3(
            conn.handle(),
            text.as_ptr(),
            -1,
            ffi::SQLITE_PREPARE_PERSISTENT,
            &mut stmt,
            ptr::null_mut(),
        )
    };
    if rc != ffi::SQLITE_OK {
        // SAFETY: a failed prepare leaves stmt null or a statement to finalize.
        unsafe { ffi::sqlite3_finalize(stmt) };
        return Err(sqlite_error(
            conn,
            rc,
            "compile a statement to apply changes",
        ));
    }
    Ok(Stmt(stmt))
}

#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

/// The change's old or new value of column `i` (null: not part of the change).
fn value(it: *mut ffi::sqlite3_changeset_iter, side: Side, i: usize) -> *mut ffi::sqlite3_value {
    let mut v = ptr::null_mut();
    // SAFETY: `it` is positioned on a change of at least i + 1 columns whose operation has
    // this side (the callers ask only for those); a null result means undefined.
    let rc = unsafe {
        match side {
            Side::Old => ffi::sqlite3changeset_old(it, i as c_int, &mut v),
            Side::New => ffi::sqlite3changeset_new(it, i as c_int, &mut v),
        }
    };
    if rc == ffi::SQLITE_OK {
        v
    } else {
        ptr::null_mut()
    }
}

/// `stmt` with every column's value of `side` bound to parameters 1..=columns (None: a
/// value is missing).
fn bound_all(
    it: *mut ffi::sqlite3_changeset_iter,
    stmt: Option<&Stmt>,
    columns: usize,
    side: Side,
) -> Result<Option<*mut ffi::sqlite3_stmt>> {
    let stmt = stmt.expect("compiled by the caller").0;
    for i in 0..columns {
        if !bind(stmt, i + 1, value(it, side, i))? {
            return Ok(None);
        }
    }
    Ok(Some(stmt))
}

/// Binds `v` to `param`; false if `v` is missing (the change is left to SQLite's apply).
fn bind(stmt: *mut ffi::sqlite3_stmt, param: usize, v: *mut ffi::sqlite3_value) -> Result<bool> {
    if v.is_null() {
        return Ok(false);
    }
    // SAFETY: stmt is live; v is valid until the iterator moves; SQLite copies it.
    let rc = unsafe { ffi::sqlite3_bind_value(stmt, param as c_int, v) };
    if rc != ffi::SQLITE_OK {
        let text = format!("cannot bind parameter {param} to apply a change (SQLite code {rc})");
        return Err(if crate::error::sqlite_transient(rc) {
            Error::Unavailable(text)
        } else {
            Error::Sql(text)
        });
    }
    Ok(true)
}

/// Runs `stmt` once; false if it met a constraint or (`must_match`) matched no row.
fn step(conn: &Connection, stmt: *mut ffi::sqlite3_stmt, must_match: bool) -> Result<bool> {
    // SAFETY: stmt is a live statement with its parameters bound; reset makes it reusable
    // and returns the step's error code, if any.
    let rc = unsafe {
        ffi::sqlite3_step(stmt);
        ffi::sqlite3_reset(stmt)
    };
    if rc == ffi::SQLITE_OK {
        // SAFETY: the connection is live; changes() is the statement just run's count.
        return Ok(!must_match || unsafe { ffi::sqlite3_changes64(conn.handle()) } > 0);
    }
    if rc & 0xff == ffi::SQLITE_CONSTRAINT {
        return Ok(false);
    }
    Err(sqlite_error(conn, rc, "apply a change"))
}

fn sqlite_error(conn: &Connection, rc: c_int, what: &str) -> Error {
    // SAFETY: errmsg returns a NUL-terminated string owned by the connection.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(conn.handle())) }
        .to_string_lossy()
        .into_owned();
    let text = format!("cannot {what}: {msg} (SQLite code {rc})");
    if crate::error::sqlite_transient(rc) {
        Error::Unavailable(text)
    } else {
        Error::Sql(text)
    }
}
