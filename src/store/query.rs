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
        return Err(Error::InvalidInput("not_read_only: this statement writes; send it to /v1/execute on the primary".into()));
    }
    bind(&mut stmt, &st.params)?;
    let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        if out.len() == MAX_QUERY_ROWS {
            return Err(Error::InvalidInput(format!("the result has more than {MAX_QUERY_ROWS} rows; add a LIMIT (and page with OFFSET or a key)")));
        }
        out.push((0..columns.len()).map(|i| row.get_ref(i).map(SqlValue::from_ref)).collect::<rusqlite::Result<Vec<_>>>()?);
    }
    Ok(QueryResult { columns, rows: out })
}
