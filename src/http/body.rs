//! The JSON bodies of `/v1/execute` and `/v1/query`, parsed into requests the node runs:
//! every field checked, with a message that names it; nothing reaches SQLite before the
//! whole body is valid (fuzzed: `fuzz/fuzz_targets/http_body.rs`).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::exec::Request;
use crate::store::value::{params_from_json, Statement};

/// A query: one read-only statement, and the LSN the node must have applied first.
#[derive(Debug)]
pub struct Query {
    pub statement: Statement,
    pub min_lsn: u64,
}

/// `{"sql", "params"}` or `{"batch": [{"sql", "params"}, ...]}`, checked as a request.
pub fn write_request(body: &[u8]) -> Result<Request> {
    let v = json(body)?;
    let statements = match v.get("batch") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s, &format!("batch[{i}]")))
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::InvalidInput(
                "\"batch\" must be an array of {\"sql\", \"params\"}".into(),
            ))
        }
        None => vec![statement(&v, "request")?],
    };
    let request = Request { statements };
    request.validate()?;
    Ok(request)
}

/// `{"sql", "params", "min_lsn"?}`.
pub fn query(body: &[u8]) -> Result<Query> {
    let v = json(body)?;
    let statement = statement(&v, "query")?;
    crate::store::statement::check_query_allowed(&statement.sql)?;
    let min_lsn = match v.get("min_lsn") {
        None | Some(Value::Null) => 0,
        Some(m) => m.as_u64().ok_or_else(|| {
            Error::InvalidInput("\"min_lsn\" must be a non-negative integer".into())
        })?,
    };
    Ok(Query { statement, min_lsn })
}

fn json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| Error::InvalidInput(format!("the body is not valid JSON: {e}")))
}

fn statement(v: &Value, what: &str) -> Result<Statement> {
    let sql = v
        .get("sql")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidInput(format!("{what}: \"sql\" (a string) is required")))?;
    Ok(Statement {
        sql: sql.to_string(),
        params: params_from_json(v.get("params"))?,
    })
}
