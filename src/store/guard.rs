//! What client SQL may do on a node: a SQLite authorizer and a progress handler, installed on
//! every connection that runs clients' statements (the primary's writer, the read pool),
//! switched on only while a client's statement is prepared and run ([`Guard::run`]).
//!
//! Why an authorizer and not keyword checks: SQLite itself reports every object a statement
//! touches, including through views, triggers, CTEs and foreign-key actions, so no spelling
//! of a statement escapes it. What clients may not do, and why:
//! - touch the node's own tables (`_spare_*`): the applied LSN lives there, and a node whose
//!   meta table is gone cannot write or recover;
//! - ATTACH/DETACH: an attached database is not replicated, and ATTACH opens any file the
//!   process can read;
//! - temporary tables, views, triggers and indexes: they live on one pooled connection of one
//!   node, are never replicated, and a temporary trigger on the shared write connection would
//!   silently rewrite other clients' writes;
//! - transaction control: each request is one transaction (a batch for several statements);
//!   a `BEGIN` on a pooled reader would pin an old snapshot and stop checkpoints;
//! - PRAGMA, except a list of read-only ones: the node owns its connection settings;
//! - write `sqlite_sequence` or `sqlite_stat*` by hand: SQLite's own bookkeeping;
//! - virtual tables other than FTS5 and R*Tree: their storage is not known to replicate.
//!
//! The progress handler stops a running statement at its deadline (time limit), and on the
//! writer when the request's changeset outgrows what one log record can hold.
//!
//! Caveats: the authorizer is consulted when a statement is compiled; the mode is therefore
//! kept for the whole run of the statement (SQLite may recompile it while it steps, and
//! virtual tables compile statements of their own while they run, which the lists below
//! allow). Internal statements on these connections run in [`Mode::Internal`] and must not
//! be cached under a text a client could send if they touch what clients may not.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::session::{SizeProbe, INTERNAL_TABLE_PREFIX};
use crate::store::statement::{ATTACH, PRAGMA, TRANSACTION};

/// Virtual machine steps between two checks of the deadline and the changeset size: a few
/// microseconds of work, so a statement stops within milliseconds of its limit.
pub const PROGRESS_STEPS: i32 = 1000;

/// PRAGMAs a client may run, without a value: they only read. The table-valued forms
/// (`pragma_table_info(..)`) exist only for PRAGMAs without side effects and are reads of
/// their own. Virtual tables run `data_version` and `page_size` themselves while they work.
pub const READ_ONLY_PRAGMAS: &[&str] = &[
    "table_list",
    "integrity_check",
    "quick_check",
    "foreign_key_check",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "data_version",
    "page_size",
    "page_count",
    "freelist_count",
];

/// PRAGMAs a client may run with or without an argument, which names a table or an index
/// (or, for the checks, a table or a row count): reads too.
pub const NAMING_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Virtual table modules a client may create: their data lives in ordinary shadow tables,
/// which changesets carry.
pub const ALLOWED_MODULES: &[&str] = &["fts5", "rtree", "rtree_i32"];

/// What the statement being run is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// The node's own statements: everything.
    Internal = 0,
    /// A client's query (`/v1/query`).
    Read = 1,
    /// A client's write (`/v1/execute`), no schema change.
    Write = 2,
    /// A client's schema change (CREATE, ALTER, DROP, ANALYZE), in a request of its own.
    Schema = 3,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Read,
            2 => Mode::Write,
            3 => Mode::Schema,
            _ => Mode::Internal,
        }
    }
}

/// Why a running statement was stopped by the progress handler.
const STOP_NONE: u8 = 0;
const STOP_TIME: u8 = 1;
const STOP_SIZE: u8 = 2;

/// Tables a schema statement writes as SQLite compiles it (foreign-key actions, triggers),
/// and the tables it drops or alters itself (their changes are replayed by the DDL).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    pub written: BTreeSet<String>,
    pub reshaped: BTreeSet<String>,
    /// Tables the statement creates itself (a virtual table's shadow tables are created
    /// while it runs, not compiled into the statement, so they are not here).
    pub created: BTreeSet<String>,
    /// Whether a SELECT was compiled into the statement.
    pub selects: bool,
}

impl Effects {
    /// Tables whose rows the statement may change besides those it drops or alters: a
    /// change there would not be replayed by running the DDL on a spare.
    pub fn others(&self) -> Vec<String> {
        self.written.difference(&self.reshaped).cloned().collect()
    }

    /// Whether the statement creates a table from a query (`CREATE TABLE ... AS SELECT`):
    /// no other CREATE TABLE compiles a SELECT (defaults, checks and generated columns
    /// take no subquery).
    pub fn copies(&self) -> bool {
        self.selects && !self.created.is_empty()
    }

    fn note(&mut self, action: &AuthAction<'_>) {
        match *action {
            AuthAction::Select => self.selects = true,
            AuthAction::Insert { table_name }
            | AuthAction::Delete { table_name }
            | AuthAction::Update { table_name, .. }
                if !is_sqlite_table(table_name) =>
            {
                self.written.insert(table_name.to_string());
            }
            AuthAction::DropTable { table_name }
            | AuthAction::DropVtable { table_name, .. }
            | AuthAction::AlterTable { table_name, .. } => {
                self.reshaped.insert(table_name.to_string());
            }
            AuthAction::CreateTable { table_name } if !is_sqlite_table(table_name) => {
                self.created.insert(table_name.to_string());
            }
            _ => {}
        }
    }
}

/// The state a connection's authorizer and progress handler share with the code running
/// client statements on it.
pub struct Guard {
    mode: AtomicU8,
    origin: Instant,
    /// Deadline of the running client statement, in ms since `origin` (0: none).
    deadline_ms: AtomicU64,
    /// Largest changeset the running request may grow, in bytes (0: not checked).
    max_changeset_bytes: AtomicU64,
    /// The session recording the running request (writer only).
    pub probe: SizeProbe,
    /// Why the progress handler stopped the running statement (`STOP_*`).
    stopped: AtomicU8,
    /// Why the authorizer refused the statement, said for the client.
    refusal: Mutex<Option<String>>,
    /// What the schema statement being compiled touches.
    effects: Mutex<Effects>,
}

/// The limits of one client request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long the statement (or request) may run.
    pub time: Duration,
    /// The setting that holds `time`, named in the error.
    pub time_setting: &'static str,
    /// Largest changeset the request may produce (0: not checked).
    pub max_changeset_bytes: u64,
}

impl Guard {
    /// Installs a guard on `conn`; client statements then run through [`Guard::run`].
    pub fn install(conn: &mut Connection) -> Result<Arc<Guard>> {
        let guard = Arc::new(Guard {
            mode: AtomicU8::new(Mode::Internal as u8),
            origin: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            max_changeset_bytes: AtomicU64::new(0),
            probe: SizeProbe::default(),
            stopped: AtomicU8::new(STOP_NONE),
            refusal: Mutex::new(None),
            effects: Mutex::new(Effects::default()),
        });
        let g = guard.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| g.authorize(&ctx)))?;
        let g = guard.clone();
        conn.progress_handler(PROGRESS_STEPS, Some(move || g.should_stop()))?;
        Ok(guard)
    }

    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Acquire))
    }

    fn authorize(&self, ctx: &AuthContext<'_>) -> Authorization {
        let mode = self.mode();
        if mode == Mode::Schema {
            self.effects.lock().expect("effects lock").note(&ctx.action);
        }
        match decide(mode, &ctx.action, ctx.database_name) {
            Ok(()) => Authorization::Allow,
            Err(why) => {
                let mut refusal = self.refusal.lock().expect("refusal lock");
                refusal.get_or_insert(why);
                Authorization::Deny
            }
        }
    }

    fn should_stop(&self) -> bool {
        if self.mode() == Mode::Internal {
            return false;
        }
        let deadline = self.deadline_ms.load(Ordering::Acquire);
        if deadline != 0 && self.origin.elapsed().as_millis() as u64 >= deadline {
            self.stopped.store(STOP_TIME, Ordering::Release);
            return true;
        }
        let max = self.max_changeset_bytes.load(Ordering::Acquire);
        if max != 0 && self.probe.size().is_some_and(|s| s > max) {
            self.stopped.store(STOP_SIZE, Ordering::Release);
            return true;
        }
        false
    }

    /// Runs `f` (which prepares and runs client statements on the guarded connection) in
    /// `mode` under `limits`, then turns SQLite's terse refusals into errors that say what
    /// to do. The connection is back in [`Mode::Internal`] when this returns.
    pub fn run<T>(&self, mode: Mode, limits: &Limits, f: impl FnOnce() -> Result<T>) -> Result<T> {
        assert_ne!(
            mode,
            Mode::Internal,
            "client statements run in a client mode"
        );
        *self.refusal.lock().expect("refusal lock") = None;
        *self.effects.lock().expect("effects lock") = Effects::default();
        self.stopped.store(STOP_NONE, Ordering::Release);
        let deadline = self.origin.elapsed() + limits.time;
        self.deadline_ms
            .store((deadline.as_millis() as u64).max(1), Ordering::Release);
        self.max_changeset_bytes
            .store(limits.max_changeset_bytes, Ordering::Release);
        self.mode.store(mode as u8, Ordering::Release);
        let result = f();
        self.mode.store(Mode::Internal as u8, Ordering::Release);
        self.deadline_ms.store(0, Ordering::Release);
        self.max_changeset_bytes.store(0, Ordering::Release);
        result.map_err(|e| self.explain(e, limits))
    }

    /// Bounds, from now until the end of [`Guard::run`], the size of the session the probe
    /// watches.
    pub fn limit_size(&self, bytes: u64) {
        self.max_changeset_bytes.store(bytes, Ordering::Release);
    }

    /// Runs `f` as the node's own work in the middle of a client statement's run (SQLite's
    /// session extension runs statements of its own), then goes back to the client's mode.
    pub fn internal<T>(&self, f: impl FnOnce() -> T) -> T {
        let mode = self.mode.swap(Mode::Internal as u8, Ordering::AcqRel);
        let out = f();
        self.mode.store(mode, Ordering::Release);
        out
    }

    /// Whether the progress handler stopped the last request for its size.
    pub fn stopped_for_size(&self) -> bool {
        self.stopped.load(Ordering::Acquire) == STOP_SIZE
    }

    /// What the schema statement compiled last may touch (see [`Effects`]).
    pub fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects.lock().expect("effects lock"))
    }

    fn explain(&self, err: Error, limits: &Limits) -> Error {
        let refusal = self.refusal.lock().expect("refusal lock").take();
        // Our own checks (parameters; several statements, which rusqlite finds by compiling
        // the rest of the text, so the authorizer may have refused that rest; the executor's
        // refusals) say it best.
        if let Error::InvalidInput(_) | Error::NotAllowed(_) = err {
            return err;
        }
        if let Some(why) = refusal {
            // Clients (`spare sql`) send a statement refused as a write to the primary.
            if why == WRITE_IN_READ {
                return Error::NotReadOnly;
            }
            return Error::NotAllowed(why);
        }
        match self.stopped.load(Ordering::Acquire) {
            STOP_TIME => {
                return Error::TimeLimit(format!(
                    "the request ran longer than {} ({:?}) and was stopped, changing nothing; make it cheaper (an index, a LIMIT, smaller batches) or raise {} in [cluster]",
                    limits.time_setting, limits.time, limits.time_setting
                ))
            }
            STOP_SIZE => return too_large_transaction(limits.max_changeset_bytes),
            _ => {}
        }
        match err {
            Error::Sql(m) if m.contains("string or blob too big") => Error::TooLarge(format!(
                "a value is larger than this node allows ({m}); store it in smaller pieces, or read less at once (max_result_bytes in [cluster] bounds reads)"
            )),
            other => other,
        }
    }
}

/// Turns a failure to compile `sql` into the plain "several statements" error when that is
/// what it was: rusqlite compiles the rest of the text to find out, so the authorizer may
/// have refused the second statement first, which would be a misleading answer.
pub fn compile_error(conn: &Connection, sql: &str, err: rusqlite::Error) -> Error {
    if holds_several_statements(conn, sql) {
        return Error::from(rusqlite::Error::MultipleStatement);
    }
    err.into()
}

/// Whether the first statement of `sql` compiles and other SQL follows it.
fn holds_several_statements(conn: &Connection, sql: &str) -> bool {
    use rusqlite::ffi;
    let Ok(len) = std::ffi::c_int::try_from(sql.len()) else {
        return false;
    };
    let (mut stmt, mut tail) = (std::ptr::null_mut(), std::ptr::null());
    // SAFETY: a live handle; the text outlives the call, `tail` points into it (or is null);
    // the statement is finalized at once.
    let rc = unsafe {
        ffi::sqlite3_prepare_v2(
            conn.handle(),
            sql.as_ptr().cast(),
            len,
            &mut stmt,
            &mut tail,
        )
    };
    let consumed = if tail.is_null() {
        sql.len()
    } else {
        (tail as usize)
            .saturating_sub(sql.as_ptr() as usize)
            .min(sql.len())
    };
    // SAFETY: finalizing a null statement is a no-op.
    unsafe { ffi::sqlite3_finalize(stmt) };
    rc == ffi::SQLITE_OK
        && !stmt.is_null()
        && crate::store::statement::holds_statement(&sql[consumed..])
}

/// The refusal of a request whose changes would not fit in one log record.
pub fn too_large_transaction(max: u64) -> Error {
    Error::TooLarge(format!(
        "the request changes more than {} MiB of rows, more than one replicated transaction may hold; split it into smaller requests (fewer rows per statement or batch)",
        max >> 20
    ))
}

fn is_sqlite_table(name: &str) -> bool {
    name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_")
}

fn is_internal(name: &str) -> bool {
    name.len() >= INTERNAL_TABLE_PREFIX.len()
        && name[..INTERNAL_TABLE_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_TABLE_PREFIX)
}

const OWN_TABLES: &str = "the node's own tables (_spare_*) are not reachable through the API: they record what this copy has applied; name your tables otherwise";
pub(crate) const TEMP: &str = "temporary tables, views, triggers and indexes are not allowed: they would live on one connection of one node and never be replicated; create a regular table (and drop it when done)";
const SQLITE_TABLES: &str = "SQLite's own tables (sqlite_master, sqlite_sequence, sqlite_stat*) cannot be written by hand: the schema changes through CREATE, ALTER and DROP, AUTOINCREMENT counters follow the rows, ANALYZE fills the statistics";
const SCHEMA_IN_WRITE: &str = "schema changes (CREATE, ALTER, DROP, ANALYZE) go in a request of their own, without other statements";
const WRITE_IN_READ: &str = "this statement writes; send it to /v1/execute on the primary";

/// Whether a client statement in `mode` may do `action` (on database `db`); else why not.
pub fn decide(mode: Mode, action: &AuthAction<'_>, db: Option<&str>) -> Result<(), String> {
    use AuthAction as A;
    if mode == Mode::Internal {
        return Ok(());
    }
    let refuse = |why: &str| Err(why.to_string());
    // SQLite passes the database's name, except for ALTER TABLE, which passes a column's.
    let temp = db == Some("temp") && !matches!(action, A::AlterTable { .. });
    if temp && !catalogue_rewrite(mode, action) {
        return refuse(TEMP);
    }
    match *action {
        A::CreateTempIndex { .. }
        | A::CreateTempTable { .. }
        | A::CreateTempTrigger { .. }
        | A::CreateTempView { .. }
        | A::DropTempIndex { .. }
        | A::DropTempTable { .. }
        | A::DropTempTrigger { .. }
        | A::DropTempView { .. } => refuse(TEMP),
        A::Attach { .. } | A::Detach { .. } => refuse(ATTACH),
        A::Transaction { .. } | A::Savepoint { .. } => refuse(TRANSACTION),
        A::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let naming = NAMING_PRAGMAS.contains(&name.as_str());
            // Without a value a read-only PRAGMA only reads; with one, only those whose
            // value names what to read (`pragma_table_info(name)` passes it so, too).
            let reads =
                naming || (pragma_value.is_none() && READ_ONLY_PRAGMAS.contains(&name.as_str()));
            if reads {
                Ok(())
            } else {
                refuse(PRAGMA)
            }
        }
        A::Select | A::Recursive | A::Function { .. } => Ok(()),
        A::Read { table_name, .. } => read(table_name),
        A::Insert { table_name } | A::Delete { table_name } | A::Update { table_name, .. } => {
            write(mode, table_name)
        }
        _ => schema(mode, action),
    }
}

/// Whether `action` is SQLite rewriting its own catalogue for a schema change (ALTER TABLE
/// rewrites the temporary schema's catalogue too).
fn catalogue_rewrite(mode: Mode, action: &AuthAction<'_>) -> bool {
    use AuthAction as A;
    let table = match *action {
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Delete { table_name }
        | A::Update { table_name, .. } => table_name,
        _ => return false,
    };
    mode == Mode::Schema && is_sqlite_table(table)
}

fn read(table: &str) -> Result<(), String> {
    if is_internal(table) {
        return Err(OWN_TABLES.into());
    }
    Ok(())
}

fn write(mode: Mode, table: &str) -> Result<(), String> {
    if is_internal(table) {
        return Err(OWN_TABLES.into());
    }
    // A virtual table (R*Tree) compiles its own write statements while a query merely
    // reads it: on the read path, a statement that writes is refused as a whole (it is not
    // read-only), and the connection itself is opened read-only.
    if mode == Mode::Read {
        return Ok(());
    }
    // A schema change rewrites SQLite's catalogues (sqlite_master, sqlite_temp_master,
    // sqlite_sequence) itself; a client's own statement may not.
    if is_sqlite_table(table) && mode != Mode::Schema {
        // SQLite writes its catalogue itself for a schema change compiled here.
        let catalogue = ["sqlite_master", "sqlite_schema", "sqlite_temp_master"]
            .iter()
            .any(|c| table.eq_ignore_ascii_case(c));
        return Err(if catalogue {
            SCHEMA_IN_WRITE
        } else {
            SQLITE_TABLES
        }
        .into());
    }
    Ok(())
}

/// Schema actions: only in a schema request, never on the node's own tables.
fn schema(mode: Mode, action: &AuthAction<'_>) -> Result<(), String> {
    use AuthAction as A;
    let names: Vec<&str> = match *action {
        A::CreateIndex {
            index_name,
            table_name,
        }
        | A::DropIndex {
            index_name,
            table_name,
        } => vec![index_name, table_name],
        A::CreateTrigger {
            trigger_name,
            table_name,
        }
        | A::DropTrigger {
            trigger_name,
            table_name,
        } => vec![trigger_name, table_name],
        A::CreateView { view_name } | A::DropView { view_name } => vec![view_name],
        A::CreateTable { table_name }
        | A::DropTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::DropVtable { table_name, .. } => vec![table_name],
        // ANALYZE of every table reads the node's own table too: statistics only.
        A::Analyze { .. } => Vec::new(),
        A::CreateVtable {
            table_name,
            module_name,
        } => {
            if !ALLOWED_MODULES.contains(&module_name.to_ascii_lowercase().as_str()) {
                return Err(format!("virtual tables of module {module_name:?} are not allowed: only {} keep their data in tables that replicate", ALLOWED_MODULES.join(", ")));
            }
            vec![table_name]
        }
        // Rebuilding indexes changes no row: harmless anywhere a write may run.
        A::Reindex { .. } if mode != Mode::Read => Vec::new(),
        _ if mode == Mode::Read => return Err(WRITE_IN_READ.into()),
        _ => return Err("this kind of statement is not allowed through the API".into()),
    };
    if names.iter().any(|n| is_internal(n)) {
        return Err(OWN_TABLES.into());
    }
    match (mode, action) {
        (Mode::Schema, _) | (Mode::Write, A::Reindex { .. }) => Ok(()),
        (Mode::Read, _) => Err(WRITE_IN_READ.into()),
        _ => Err(SCHEMA_IN_WRITE.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::hooks::{AuthAction as A, TransactionOperation};

    fn allowed(mode: Mode, a: A<'_>) -> bool {
        decide(mode, &a, Some("main")).is_ok()
    }

    #[test]
    fn the_nodes_own_tables_are_out_of_reach_in_every_client_mode() {
        for mode in [Mode::Read, Mode::Write, Mode::Schema] {
            let read = A::Read {
                table_name: "_spare_meta",
                column_name: "value",
            };
            assert!(!allowed(mode, read), "{mode:?}");
            assert!(!allowed(
                mode,
                A::Delete {
                    table_name: "_SPARE_META"
                }
            ));
            assert!(!allowed(
                mode,
                A::CreateTrigger {
                    trigger_name: "t",
                    table_name: "_spare_meta"
                }
            ));
            assert!(!allowed(
                mode,
                A::CreateTable {
                    table_name: "_spare_x"
                }
            ));
        }
        assert!(allowed(
            Mode::Internal,
            A::Delete {
                table_name: "_spare_meta"
            }
        ));
    }

    #[test]
    fn transaction_control_attach_and_temp_objects_are_refused_on_both_paths() {
        for mode in [Mode::Read, Mode::Write, Mode::Schema] {
            let begin = A::Transaction {
                operation: TransactionOperation::Begin,
            };
            assert!(!allowed(mode, begin));
            assert!(!allowed(
                mode,
                A::Attach {
                    filename: "/etc/passwd"
                }
            ));
            assert!(!allowed(mode, A::CreateTempTable { table_name: "t" }));
            assert!(!allowed(
                mode,
                A::CreateTempTrigger {
                    trigger_name: "t",
                    table_name: "x"
                }
            ));
        }
    }

    #[test]
    fn schema_changes_only_in_a_schema_request() {
        let create = || A::CreateTable { table_name: "t" };
        assert!(allowed(Mode::Schema, create()));
        assert!(!allowed(Mode::Write, create()));
        assert!(!allowed(Mode::Read, create()));
        let fts = A::CreateVtable {
            table_name: "f",
            module_name: "FTS5",
        };
        assert!(allowed(Mode::Schema, fts));
        let other = A::CreateVtable {
            table_name: "f",
            module_name: "fts4",
        };
        assert!(!allowed(Mode::Schema, other));
    }

    #[test]
    fn sqlites_catalogues_are_written_by_schema_changes_only() {
        let seq = || A::Delete {
            table_name: "sqlite_sequence",
        };
        assert!(!allowed(Mode::Write, seq()));
        assert!(allowed(Mode::Schema, seq()));
        let temp_master = A::Update {
            table_name: "sqlite_temp_master",
            column_name: "sql",
        };
        assert!(decide(Mode::Schema, &temp_master, Some("temp")).is_ok());
        let temp_user = A::Insert { table_name: "t" };
        assert!(decide(Mode::Write, &temp_user, Some("temp")).is_err());
        let temp_table = A::CreateTable { table_name: "t" };
        assert!(decide(Mode::Schema, &temp_table, Some("temp")).is_err());
        // ALTER TABLE passes a column's name where other actions pass the database's.
        let alter = A::AlterTable {
            database_name: "main",
            table_name: "t",
        };
        assert!(decide(Mode::Schema, &alter, Some("temp")).is_ok());
    }

    #[test]
    fn only_read_only_pragmas_pass() {
        let p = |name, value| A::Pragma {
            pragma_name: name,
            pragma_value: value,
        };
        assert!(allowed(Mode::Read, p("table_info", Some("t"))));
        assert!(allowed(Mode::Write, p("data_version", None)));
        assert!(!allowed(Mode::Read, p("query_only", Some("0"))));
        assert!(!allowed(Mode::Write, p("foreign_keys", Some("off"))));
        assert!(!allowed(Mode::Write, p("writable_schema", Some("1"))));
        assert!(!allowed(Mode::Read, p("page_size", Some("1024"))));
        assert!(allowed(Mode::Read, p("integrity_check", None)));
    }

    #[test]
    fn schema_effects_name_the_tables_changed_besides_the_dropped_one() {
        let mut e = Effects::default();
        e.note(&A::DropTable {
            table_name: "parent",
        });
        e.note(&A::Delete {
            table_name: "parent",
        });
        e.note(&A::Delete {
            table_name: "child",
        });
        e.note(&A::Delete {
            table_name: "sqlite_master",
        });
        assert_eq!(e.others(), vec!["child".to_string()]);
    }
}
