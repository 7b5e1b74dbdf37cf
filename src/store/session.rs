//! A small, safe wrapper over SQLite's session extension (`sqlite3session_*`,
//! `sqlite3changeset_*`), reached through `rusqlite::ffi` because rusqlite's own `session`
//! feature needs libclang at build time (DESIGN.md §3).
//!
//! Invariants this module keeps:
//! - A [`Session`] records every table of the `main` database except the `_spare_*` tables
//!   (our own bookkeeping) and treats rowid tables (no explicit PRIMARY KEY) by their rowid,
//!   so they are replicated rather than silently skipped.
//! - [`apply_changeset`] never omits a change: any conflict (missing row, different old
//!   values, constraint, foreign key) aborts the whole apply and is reported as divergence.
//!
//! Caveat: a changeset entry for a table that does not exist on the target is skipped by
//! SQLite without any conflict; callers check a schema checksum before applying.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use rusqlite::ffi;
use rusqlite::Connection;

use crate::error::{Error, Result};

/// Prefix of the tables spare keeps for itself inside the user's database; never replicated
/// by changesets (each node writes its own).
pub const INTERNAL_TABLE_PREFIX: &str = "_spare_";

/// Records the changes made through one connection until it is dropped.
pub struct Session<'conn> {
    raw: *mut ffi::sqlite3_session,
    /// Ties the session's lifetime to the connection it observes: SQLite requires the
    /// session to be deleted before its connection is closed.
    _conn: std::marker::PhantomData<&'conn Connection>,
}

unsafe extern "C" fn skip_internal_tables(_ctx: *mut c_void, table: *const c_char) -> c_int {
    // SAFETY: SQLite passes a valid NUL-terminated table name.
    let name = unsafe { CStr::from_ptr(table) }.to_bytes();
    c_int::from(!name.starts_with(INTERNAL_TABLE_PREFIX.as_bytes()))
}

impl<'conn> Session<'conn> {
    /// Starts recording every table of `main` (present and future) on `conn`.
    pub fn attach_all(conn: &'conn Connection) -> Result<Self> {
        let session = Self::create(conn)?;
        session.config(
            conn,
            ffi::SQLITE_SESSION_OBJCONFIG_ROWID,
            "record rowid tables",
        )?;
        // SIZE makes SQLite keep the changeset's size as it grows, so that a request too
        // large for one log record is stopped before it is built.
        session.config(
            conn,
            ffi::SQLITE_SESSION_OBJCONFIG_SIZE,
            "track the changeset size",
        )?;
        // SAFETY: the callback is a plain function that reads only its table-name argument.
        unsafe {
            ffi::sqlite3session_table_filter(
                session.raw,
                Some(skip_internal_tables),
                ptr::null_mut(),
            );
        }
        // SAFETY: a NULL table name attaches every table.
        let rc = unsafe { ffi::sqlite3session_attach(session.raw, ptr::null()) };
        check(conn, rc, "attach the session to every table")?;
        Ok(session)
    }

    /// Starts recording only `tables` (which must exist) on `conn`: to learn whether a
    /// statement changed them.
    pub fn attach_tables(conn: &'conn Connection, tables: &[String]) -> Result<Self> {
        let session = Self::create(conn)?;
        // Tables without an explicit PRIMARY KEY are watched by rowid too; the size is kept
        // so that what the watch records stays bounded.
        session.config(
            conn,
            ffi::SQLITE_SESSION_OBJCONFIG_ROWID,
            "record rowid tables",
        )?;
        session.config(
            conn,
            ffi::SQLITE_SESSION_OBJCONFIG_SIZE,
            "track the changeset size",
        )?;
        for table in tables {
            let name = std::ffi::CString::new(table.as_str())
                .map_err(|_| Error::InvalidInput(format!("table name {table:?} holds a NUL")))?;
            // SAFETY: raw is live and name a NUL-terminated string that outlives the call.
            let rc = unsafe { ffi::sqlite3session_attach(session.raw, name.as_ptr()) };
            check(conn, rc, "attach a session to a table")?;
        }
        Ok(session)
    }

    fn create(conn: &'conn Connection) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: the handle is valid for the connection's lifetime, which bounds 'conn.
        let rc = unsafe { ffi::sqlite3session_create(conn.handle(), c"main".as_ptr(), &mut raw) };
        check(conn, rc, "create a session")?;
        Ok(Session {
            raw,
            _conn: std::marker::PhantomData,
        })
    }

    /// Turns on an object option (`SQLITE_SESSION_OBJCONFIG_*`).
    fn config(&self, conn: &Connection, option: c_int, what: &str) -> Result<()> {
        let mut on: c_int = 1;
        // SAFETY: raw is a live session; pArg points to an int as the API requires.
        let rc = unsafe {
            ffi::sqlite3session_object_config(self.raw, option, (&mut on as *mut c_int).cast())
        };
        check(conn, rc, what)
    }

    /// Whether no change was recorded yet.
    pub fn is_empty(&self) -> bool {
        // SAFETY: raw is a live session.
        unsafe { ffi::sqlite3session_isempty(self.raw) != 0 }
    }

    /// An upper bound of the changeset's size in bytes, were it built now.
    pub fn size(&self) -> u64 {
        // SAFETY: raw is a live session created with SQLITE_SESSION_OBJCONFIG_SIZE.
        unsafe { ffi::sqlite3session_changeset_size(self.raw) }.max(0) as u64
    }

    /// The net changes recorded so far. Must be called inside the recorded transaction,
    /// before COMMIT: SQLite reads the current row values while it builds the changeset.
    pub fn changeset(&self, conn: &Connection) -> Result<Vec<u8>> {
        let mut n: c_int = 0;
        let mut buf: *mut c_void = ptr::null_mut();
        // SAFETY: raw is live; SQLite allocates buf, which we free with sqlite3_free.
        let rc = unsafe { ffi::sqlite3session_changeset(self.raw, &mut n, &mut buf) };
        let result = check(conn, rc, "build the changeset").map(|()| {
            if buf.is_null() || n <= 0 {
                Vec::new()
            } else {
                // SAFETY: SQLite returned n valid bytes at buf.
                unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) }.to_vec()
            }
        });
        // SAFETY: buf is either NULL or memory SQLite allocated for us.
        unsafe { ffi::sqlite3_free(buf) };
        result
    }
}

/// Lets a connection's progress handler read the size of the session recording the running
/// request, so that a statement growing the changeset past the limit is stopped mid-way.
///
/// Only the thread running statements on the session's connection reads it (SQLite calls the
/// progress handler there), and only while a [`ProbeGuard`] (which borrows the session, so
/// the session outlives it) points it at the session.
#[derive(Default)]
pub struct SizeProbe {
    raw: std::sync::atomic::AtomicPtr<ffi::sqlite3_session>,
}

/// Points a [`SizeProbe`] at a session until dropped.
pub struct ProbeGuard<'a> {
    probe: &'a SizeProbe,
}

impl SizeProbe {
    pub fn watch<'a>(&'a self, session: &'a Session<'_>) -> ProbeGuard<'a> {
        use std::sync::atomic::Ordering;
        self.raw.store(session.raw, Ordering::Release);
        ProbeGuard { probe: self }
    }

    /// The watched session's changeset size, if one is watched.
    pub fn size(&self) -> Option<u64> {
        let raw = self.raw.load(std::sync::atomic::Ordering::Acquire);
        if raw.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer is a session kept alive by the ProbeGuard that stored
        // it (see the type's doc); changeset_size only reads a counter.
        Some(unsafe { ffi::sqlite3session_changeset_size(raw) }.max(0) as u64)
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.probe
            .raw
            .store(ptr::null_mut(), std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: raw was created by sqlite3session_create and is deleted once.
        unsafe { ffi::sqlite3session_delete(self.raw) };
    }
}

/// Counts of changes per kind, for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCounts {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

unsafe extern "C" fn abort_on_conflict(
    ctx: *mut c_void,
    kind: c_int,
    _it: *mut ffi::sqlite3_changeset_iter,
) -> c_int {
    // SAFETY: ctx points to the c_int owned by apply_changeset for the duration of the call.
    unsafe { *(ctx as *mut c_int) = kind };
    ffi::SQLITE_CHANGESET_ABORT
}

/// Applies `changeset` on `conn` inside the caller's transaction. Any conflict aborts the
/// apply and is returned as [`Error::Diverged`]: a spare never omits a change.
///
/// `conn` must have foreign keys off (an applier connection, which [`Applier::new`]
/// checks): the primary already ran every foreign-key action and the changeset holds their
/// effects, so none may run again here. Not `SQLITE_CHANGESETAPPLY_FKNOACTION` for that: it
/// shifts the connection's cached schema cookie on entry and on exit to force statements to
/// be compiled again, which makes SQLite read and parse the whole schema twice per call —
/// measured at 40 % of a spare's apply thread under steady load.
///
/// [`Applier::new`]: crate::store::apply::Applier::new
pub fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<()> {
    if changeset.is_empty() {
        return Ok(());
    }
    let len = c_int::try_from(changeset.len()).map_err(|_| {
        Error::InvalidData(format!(
            "changeset of {} bytes is too large",
            changeset.len()
        ))
    })?;
    let mut conflict: c_int = 0;
    // SAFETY: SQLite only reads the changeset buffer (the API takes *mut for history);
    // the conflict callback writes to `conflict`, which outlives the call.
    let rc = unsafe {
        ffi::sqlite3changeset_apply_v2(
            conn.handle(),
            len,
            changeset.as_ptr() as *mut c_void,
            None,
            Some(abort_on_conflict),
            (&mut conflict as *mut c_int).cast(),
            ptr::null_mut(),
            ptr::null_mut(),
            ffi::SQLITE_CHANGESETAPPLY_NOSAVEPOINT,
        )
    };
    if conflict != 0 {
        return Err(Error::Diverged(format!(
            "applying a changeset met a {} conflict",
            conflict_name(conflict)
        )));
    }
    check(conn, rc, "apply a changeset")
}

fn conflict_name(kind: c_int) -> &'static str {
    match kind {
        ffi::SQLITE_CHANGESET_DATA => "data (old values differ)",
        ffi::SQLITE_CHANGESET_NOTFOUND => "not-found (row missing)",
        ffi::SQLITE_CHANGESET_CONFLICT => "primary-key",
        ffi::SQLITE_CHANGESET_CONSTRAINT => "constraint",
        ffi::SQLITE_CHANGESET_FOREIGN_KEY => "foreign-key",
        _ => "unknown",
    }
}

/// One row change of a changeset, readable: the table, the operation, and the old and new
/// values by column position (`None`: not part of the change, as for an update's unchanged
/// columns).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowChange {
    pub table: String,
    /// `insert`, `update` or `delete`.
    pub op: &'static str,
    pub old: Vec<Option<crate::store::value::SqlValue>>,
    pub new: Vec<Option<crate::store::value::SqlValue>>,
}

/// Calls `f` with the iterator positioned on each change of `changeset`, until it fails.
pub(crate) fn each_change(
    changeset: &[u8],
    mut f: impl FnMut(*mut ffi::sqlite3_changeset_iter) -> Result<()>,
) -> Result<()> {
    if changeset.is_empty() {
        return Ok(());
    }
    let len = c_int::try_from(changeset.len())
        .map_err(|_| Error::InvalidData("changeset too large".into()))?;
    let mut it = ptr::null_mut();
    // SAFETY: the iterator only reads the buffer, which outlives it (finalized below).
    let rc =
        unsafe { ffi::sqlite3changeset_start(&mut it, len, changeset.as_ptr() as *mut c_void) };
    if rc != ffi::SQLITE_OK {
        return Err(changeset_error(rc));
    }
    let mut outcome = Ok(());
    // SAFETY: `it` is a live iterator until finalize.
    while outcome.is_ok() && unsafe { ffi::sqlite3changeset_next(it) } == ffi::SQLITE_ROW {
        outcome = f(it);
    }
    // SAFETY: finalize once; its code reports a malformed buffer met while iterating.
    let rc = unsafe { ffi::sqlite3changeset_finalize(it) };
    outcome?;
    if rc != ffi::SQLITE_OK {
        return Err(changeset_error(rc));
    }
    Ok(())
}

/// Reading a changeset failed: out of memory is this host's (retried), anything else is
/// the changeset's.
fn changeset_error(rc: c_int) -> Error {
    if crate::error::sqlite_transient(rc) {
        Error::Unavailable(format!("cannot read a changeset (SQLite code {rc})"))
    } else {
        Error::InvalidData(format!("changeset is malformed (SQLite code {rc})"))
    }
}

/// Calls `f` with (table, operation, iterator, column count) for each change of `changeset`.
fn for_each_change(
    changeset: &[u8],
    mut f: impl FnMut(String, c_int, *mut ffi::sqlite3_changeset_iter, c_int),
) -> Result<()> {
    each_change(changeset, |it| {
        let (mut tab, mut ncol, mut op, mut indirect) = (ptr::null(), 0, 0, 0);
        // SAFETY: `it` is positioned on a change; tab points into the iterator's memory,
        // copied at once.
        unsafe { ffi::sqlite3changeset_op(it, &mut tab, &mut ncol, &mut op, &mut indirect) };
        let name = unsafe { CStr::from_ptr(tab) }
            .to_string_lossy()
            .into_owned();
        f(name, op, it, ncol);
        Ok(())
    })
}

/// Counts the inserts, updates and deletes in a changeset, per table.
pub fn count_changes(changeset: &[u8]) -> Result<Vec<(String, ChangeCounts)>> {
    let mut out: Vec<(String, ChangeCounts)> = Vec::new();
    for_each_change(changeset, |name, op, _, _| {
        let idx = match out.iter().position(|(t, _)| *t == name) {
            Some(i) => i,
            None => {
                out.push((name, ChangeCounts::default()));
                out.len() - 1
            }
        };
        let counts = &mut out[idx].1;
        match op {
            ffi::SQLITE_INSERT => counts.inserts += 1,
            ffi::SQLITE_UPDATE => counts.updates += 1,
            _ => counts.deletes += 1,
        }
    })?;
    Ok(out)
}

/// The changes of a changeset as readable rows, at most `limit` of them.
pub fn decode_changes(changeset: &[u8], limit: usize) -> Result<Vec<RowChange>> {
    let mut out = Vec::new();
    for_each_change(changeset, |table, op, it, ncol| {
        if out.len() >= limit {
            return;
        }
        let (name, has_old, has_new) = match op {
            ffi::SQLITE_INSERT => ("insert", false, true),
            ffi::SQLITE_UPDATE => ("update", true, true),
            _ => ("delete", true, false),
        };
        let column = |old: bool, i: c_int| {
            let mut v = ptr::null_mut();
            // SAFETY: `it` is positioned on a row of this operation; i < ncol.
            let rc = unsafe {
                if old {
                    ffi::sqlite3changeset_old(it, i, &mut v)
                } else {
                    ffi::sqlite3changeset_new(it, i, &mut v)
                }
            };
            // SAFETY: a non-null value stays valid until the iterator moves.
            (rc == ffi::SQLITE_OK && !v.is_null()).then(|| unsafe { sql_value(v) })
        };
        out.push(RowChange {
            table,
            op: name,
            old: if has_old {
                (0..ncol).map(|i| column(true, i)).collect()
            } else {
                Vec::new()
            },
            new: if has_new {
                (0..ncol).map(|i| column(false, i)).collect()
            } else {
                Vec::new()
            },
        });
    })?;
    Ok(out)
}

/// Copies an `sqlite3_value` out.
///
/// # Safety
/// `v` must be a valid, protected value for the duration of the call.
unsafe fn sql_value(v: *mut ffi::sqlite3_value) -> crate::store::value::SqlValue {
    use crate::store::value::SqlValue;
    match ffi::sqlite3_value_type(v) {
        ffi::SQLITE_INTEGER => SqlValue::Integer(ffi::sqlite3_value_int64(v)),
        ffi::SQLITE_FLOAT => SqlValue::Real(ffi::sqlite3_value_double(v)),
        ffi::SQLITE_TEXT => {
            let p = ffi::sqlite3_value_text(v);
            let n = ffi::sqlite3_value_bytes(v) as usize;
            let bytes = if p.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(p, n)
            };
            SqlValue::Text(String::from_utf8_lossy(bytes).into_owned())
        }
        ffi::SQLITE_BLOB => {
            let p = ffi::sqlite3_value_blob(v) as *const u8;
            let n = ffi::sqlite3_value_bytes(v) as usize;
            SqlValue::Blob(if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p, n).to_vec()
            })
        }
        _ => SqlValue::Null,
    }
}

fn check(conn: &Connection, rc: c_int, what: &str) -> Result<()> {
    if rc == ffi::SQLITE_OK {
        return Ok(());
    }
    // SAFETY: errmsg returns a NUL-terminated string owned by the connection.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(conn.handle())) }
        .to_string_lossy()
        .into_owned();
    let text = format!("cannot {what}: {msg} (SQLite code {rc})");
    Err(if crate::error::sqlite_transient(rc) {
        Error::Unavailable(text)
    } else {
        Error::Sql(text)
    })
}
