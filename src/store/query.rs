//! Read-only queries, on any data node.

use rusqlite::Connection;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::value::{bind, SqlValue, Statement};

/// Most rows one query may return; past it the client is told to add a LIMIT rather than the
/// node building an unbounded answer in memory.
pub const MAX_QUERY_ROWS: usize = 100_000;

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
}

/// Runs a read-only statement; a statement that would write is refused with where to send it.
pub fn run(conn: &Connection, st: &Statement) -> Result<QueryResult> {
    let mut stmt = conn.prepare_cached(&st.sql)?;
    if !stmt.readonly() {
        return Err(Error::NotReadOnly);
    }
    bind(&mut stmt, &st.params)?;
    let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        if out.len() == MAX_QUERY_ROWS {
            return Err(Error::InvalidInput(format!("the result has more than {MAX_QUERY_ROWS} rows; add a LIMIT (and page with OFFSET or a key)")));
        }
        out.push(
            (0..columns.len())
                .map(|i| row.get_ref(i).map(SqlValue::from_ref))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(QueryResult { columns, rows: out })
}

/// Most read connections a node keeps open for queries.
pub const MAX_READERS: usize = 8;

/// A small pool of read-only connections, opened on demand.
pub struct ReaderPool {
    path: std::path::PathBuf,
    /// Idle connections with the generation they were opened in.
    idle: std::sync::Mutex<(u64, Vec<Connection>)>,
}

impl ReaderPool {
    pub fn new(path: &std::path::Path) -> Self {
        ReaderPool {
            path: path.to_path_buf(),
            idle: std::sync::Mutex::new((0, Vec::new())),
        }
    }

    /// Runs `st` on an idle connection (or a new one); blocking.
    pub fn query(&self, st: &Statement) -> Result<QueryResult> {
        let (generation, conn) = {
            let mut idle = self.idle.lock().expect("reader pool lock");
            (idle.0, idle.1.pop())
        };
        let conn = match conn {
            Some(c) => c,
            None => crate::store::open(&self.path, crate::store::ConnKind::Reader)?,
        };
        let result = run(&conn, st);
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.0 == generation && idle.1.len() < MAX_READERS {
            idle.1.push(conn);
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
