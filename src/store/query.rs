//! Read-only queries, on any data node.
//!
//! Bounds (each a setting of `[cluster]`, see `config::ClientLimits`): a node runs at most
//! `max_concurrent_reads` queries at once and a query waits at most `read_queue_wait` for its
//! turn (then 503 busy); a query runs at most `read_time_limit`; its answer holds at most
//! `max_result_bytes` of values and [`MAX_QUERY_ROWS`] rows, and no single value it builds
//! may exceed `max_result_bytes` (SQLite refuses it as it is made, before allocating it).
//!
//! Every query runs in a read transaction of its own, which also reads the LSN this copy
//! had applied: the answer's `lsn` is exactly the state it read. What a query may touch is
//! the [`Guard`]'s: no transaction control (a pooled connection never stays inside a
//! transaction), no ATTACH, no temporary objects, no node tables.

use std::sync::Arc;

use rusqlite::Connection;
use serde::Serialize;

use crate::config::ClientLimits;
use crate::error::{Error, Result};
use crate::store::guard::{Guard, Limits, Mode};
use crate::store::value::{bind, SqlValue, Statement};

/// Most rows one query may return; past it the client is told to add a LIMIT rather than the
/// node building an unbounded answer in memory.
pub const MAX_QUERY_ROWS: usize = 100_000;
/// Bytes a value counts for in the result bound besides its content (its JSON framing).
const VALUE_OVERHEAD_BYTES: u64 = 8;

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
}

/// Runs a read-only statement; a statement that would write is refused with where to send
/// it. The answer holds at most `max_bytes` of values.
pub fn run(conn: &Connection, st: &Statement, max_bytes: u64) -> Result<QueryResult> {
    let mut stmt = conn
        .prepare_cached(&st.sql)
        .map_err(|e| crate::store::guard::compile_error(conn, &st.sql, e))?;
    if !stmt.readonly() {
        return Err(Error::NotReadOnly);
    }
    bind(&mut stmt, &st.params)?;
    let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    let mut bytes = 0u64;
    while let Some(row) = rows.next()? {
        if out.len() == MAX_QUERY_ROWS {
            return Err(Error::TooLarge(format!("the result has more than {MAX_QUERY_ROWS} rows; add a LIMIT (and page with OFFSET or a key)")));
        }
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let v = row.get_ref(i)?;
            bytes += value_bytes(&v);
            if bytes > max_bytes {
                return Err(Error::TooLarge(format!("the result is larger than max_result_bytes ({} KiB); select fewer rows or columns (a LIMIT, paging by key), or raise max_result_bytes in [cluster]", max_bytes >> 10)));
            }
            values.push(SqlValue::from_ref(v));
        }
        out.push(values);
    }
    Ok(QueryResult { columns, rows: out })
}

fn value_bytes(v: &rusqlite::types::ValueRef<'_>) -> u64 {
    use rusqlite::types::ValueRef;
    VALUE_OVERHEAD_BYTES
        + match v {
            ValueRef::Text(t) | ValueRef::Blob(t) => t.len() as u64,
            _ => 0,
        }
}

/// One pooled read connection and its guard.
struct Reader {
    conn: Connection,
    guard: Arc<Guard>,
}

/// A small pool of read-only connections, opened on demand, and the turns to use them.
pub struct ReaderPool {
    path: std::path::PathBuf,
    /// Idle connections with the generation they were opened in.
    idle: std::sync::Mutex<(u64, Vec<Reader>)>,
    /// Turns to run a query: at most this many run at once, the rest wait (bounded).
    turns: Arc<tokio::sync::Semaphore>,
    /// How many turns exist (`max_concurrent_reads`, followed across reloads); also the most
    /// idle connections kept.
    capacity: std::sync::Mutex<usize>,
}

/// A turn to run one query, held until it is dropped.
pub type Turn = tokio::sync::OwnedSemaphorePermit;

impl ReaderPool {
    /// A pool running at most `max_concurrent` queries at once.
    pub fn new(path: &std::path::Path, max_concurrent: usize) -> Self {
        assert!(max_concurrent > 0, "a node must run at least one query");
        ReaderPool {
            path: path.to_path_buf(),
            idle: std::sync::Mutex::new((0, Vec::new())),
            turns: Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
            capacity: std::sync::Mutex::new(max_concurrent),
        }
    }

    /// Waits (at most `read_queue_wait`) for a turn to run a query; busy past that.
    pub async fn turn(&self, limits: &ClientLimits) -> Result<Turn> {
        let running = self.resize(limits.max_concurrent_reads);
        let wait = limits.read_queue_wait;
        match tokio::time::timeout(wait, self.turns.clone().acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            _ => Err(Error::Busy(format!(
                "{running} queries are running on this node and none finished within read_queue_wait ({wait:?}); retry in a moment, read from another node, or raise max_concurrent_reads"
            ))),
        }
    }

    /// Follows `max_concurrent_reads` after a reload: adds turns, or takes back the idle
    /// ones (busy ones are taken back at a later call). Returns the number of turns.
    fn resize(&self, want: usize) -> usize {
        let mut capacity = self.capacity.lock().expect("capacity lock");
        if want > *capacity {
            self.turns.add_permits(want - *capacity);
            *capacity = want;
        } else if want < *capacity {
            *capacity -= self.turns.forget_permits(*capacity - want);
        }
        *capacity
    }

    /// Runs a client's query on an idle connection (or a new one), blocking; returns the
    /// answer and the LSN of the state it read.
    pub fn query(&self, st: &Statement, limits: &ClientLimits) -> Result<(QueryResult, u64)> {
        let (generation, reader) = {
            let mut idle = self.idle.lock().expect("reader pool lock");
            (idle.0, idle.1.pop())
        };
        let reader = match reader {
            Some(r) => r,
            None => open_reader(&self.path)?,
        };
        let (result, reusable) = read(&reader, st, limits);
        let mut idle = self.idle.lock().expect("reader pool lock");
        let max_idle = *self.capacity.lock().expect("capacity lock");
        if reusable && idle.0 == generation && idle.1.len() < max_idle {
            idle.1.push(reader);
        }
        result
    }

    /// Drops every idle connection and makes busy ones close when they finish: the database
    /// file was replaced (a seed was installed).
    pub fn reset(&self) {
        let mut idle = self.idle.lock().expect("reader pool lock");
        idle.0 += 1;
        idle.1.clear();
    }
}

fn open_reader(path: &std::path::Path) -> Result<Reader> {
    let mut conn = crate::store::open(path, crate::store::ConnKind::Reader)?;
    let guard = Guard::install(&mut conn)?;
    Ok(Reader { conn, guard })
}

/// Runs `st` in a read transaction that also reads the applied LSN; says whether the
/// connection is fit to serve again (it left no transaction open).
fn read(r: &Reader, st: &Statement, limits: &ClientLimits) -> (Result<(QueryResult, u64)>, bool) {
    let max_bytes = limits.max_result_bytes;
    let length = i32::try_from(max_bytes).unwrap_or(i32::MAX);
    if let Err(e) = r
        .conn
        .set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, length)
    {
        return (Err(e.into()), false);
    }
    if let Err(e) = r.conn.execute_batch("BEGIN") {
        return (Err(e.into()), false);
    }
    let bounds = Limits {
        time: limits.read_time_limit,
        time_setting: "read_time_limit",
        max_changeset_bytes: 0,
    };
    let result = crate::store::meta::applied(&r.conn).and_then(|(lsn, _)| {
        let answer = r
            .guard
            .run(Mode::Read, &bounds, || run(&r.conn, st, max_bytes))?;
        Ok((answer, lsn))
    });
    let ended = r.conn.is_autocommit() || r.conn.execute_batch("COMMIT").is_ok();
    (result, ended && r.conn.is_autocommit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent_reads: usize) -> ClientLimits {
        ClientLimits {
            max_concurrent_reads,
            read_queue_wait: std::time::Duration::from_millis(50),
            ..ClientLimits::default()
        }
    }

    #[tokio::test]
    async fn a_query_past_the_concurrent_bound_is_busy_until_a_turn_frees_or_the_bound_grows() {
        let pool = ReaderPool::new(std::path::Path::new("/nonexistent"), 1);
        let first = pool.turn(&limits(1)).await.unwrap();
        let e = pool.turn(&limits(1)).await.unwrap_err();
        assert!(
            matches!(e, Error::Busy(ref m) if m.contains("max_concurrent_reads")),
            "{e}"
        );
        // A reload raised the bound: a second query runs beside the first.
        let second = pool.turn(&limits(2)).await.unwrap();
        drop((first, second));
        // Lowered again: only one turn is left.
        let one = pool.turn(&limits(1)).await.unwrap();
        assert!(pool.turn(&limits(1)).await.is_err());
        drop(one);
    }

    #[test]
    fn a_begin_is_refused_so_pooled_readers_serve_the_newest_state_with_its_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let w = crate::store::open(&path, crate::store::ConnKind::Writer).unwrap();
        w.execute_batch("CREATE TABLE t (x)").unwrap();
        crate::store::meta::set_applied(&w, 7, 0).unwrap();
        let pool = ReaderPool::new(&path, 2);
        let st = |sql: &str| Statement {
            sql: sql.into(),
            params: vec![],
        };
        let l = ClientLimits::default();
        let e = pool.query(&st("BEGIN"), &l).unwrap_err();
        assert!(matches!(e, Error::NotAllowed(_)), "{e}");
        let (r, lsn) = pool.query(&st("SELECT count(*) FROM t"), &l).unwrap();
        assert_eq!((r.rows[0][0].clone(), lsn), (SqlValue::Integer(0), 7));
        w.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        crate::store::meta::set_applied(&w, 8, 0).unwrap();
        let (r, lsn) = pool.query(&st("SELECT count(*) FROM t"), &l).unwrap();
        assert_eq!((r.rows[0][0].clone(), lsn), (SqlValue::Integer(1), 8));
        let idle = pool.idle.lock().unwrap();
        assert!(idle.1.iter().all(|r| r.conn.is_autocommit()));
    }
}
