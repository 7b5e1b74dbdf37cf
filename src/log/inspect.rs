//! `spare log` (DESIGN.md §9): the transactions in a node's log, newest last, filtered by
//! LSN range, time and table, to find an operator's mistake; and one transaction's changes.
//! Heartbeat records are skipped; epoch records are listed (they mark promotions).
//! Bounded: at most [`MAX_SCANNED_RECORDS`] records read and [`MAX_LISTED`] listed per call.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::log::{LogReader, Record, RecordKind};
use crate::store::session::count_changes;
use crate::store::TxnPayload;

/// Records read per call, at most.
pub const MAX_SCANNED_RECORDS: u64 = 1_000_000;
/// Transactions listed per call, at most.
pub const MAX_LISTED: usize = 10_000;
/// Without `--from`, the listing looks at this many of the newest records.
pub const DEFAULT_TAIL_RECORDS: u64 = 5_000;
const READ_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What to list (`GET /v1/log`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// Commit time at or after (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    pub table: Option<String>,
    pub limit: Option<usize>,
}

/// One listed record: LSN, epoch, time, kind, tables touched with row counts, schema SQL.
pub fn summary(r: &Record) -> Value {
    let mut v = json!({ "lsn": r.lsn, "epoch": r.epoch, "time_ms": r.time_ms, "kind": format!("{:?}", r.kind) });
    if r.kind == RecordKind::Epoch {
        v["primary"] = json!(String::from_utf8_lossy(&r.payload));
    }
    if r.kind == RecordKind::Txn {
        if let Ok(p) = TxnPayload::decode(&r.payload) {
            let counts = count_changes(&p.changeset).unwrap_or_default();
            v["tables"] = counts
                .iter()
                .map(|(t, c)| (t.clone(), json!({ "inserted": c.inserts, "updated": c.updates, "deleted": c.deletes })))
                .collect::<serde_json::Map<_, _>>()
                .into();
            v["ddl"] = json!(p.ddl.iter().map(|s| s.sql.clone()).collect::<Vec<_>>());
        }
    }
    v
}

fn touches(v: &Value, table: &str) -> bool {
    v["tables"].get(table).is_some()
        || v["ddl"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|d| ddl_target(d).is_some_and(|t| t.eq_ignore_ascii_case(table)))
}

/// The table (or view) a schema statement changes: the name after `TABLE`/`VIEW` (past `IF
/// [NOT] EXISTS`), else after the first `ON` (an index or a trigger). Not a column, nor a table
/// a view or trigger merely reads: `spare log --table customer` must not list the invoice
/// table's creation because invoice has a `customer` column. `DROP INDEX` names no table.
fn ddl_target(sql: &str) -> Option<String> {
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == '(')
        .filter(|w| !w.is_empty())
        .collect();
    let upper = |w: &&str| w.to_ascii_uppercase();
    let after = |i: usize| {
        words[i + 1..]
            .iter()
            .find(|w| !matches!(upper(w).as_str(), "IF" | "NOT" | "EXISTS"))
    };
    let name = words
        .iter()
        .position(|w| matches!(upper(w).as_str(), "TABLE" | "VIEW"))
        .or_else(|| words.iter().position(|w| upper(w) == "ON"))
        .and_then(after)?;
    let name = name.rsplit('.').next().unwrap_or(name);
    Some(
        name.trim_matches(|c| matches!(c, '"' | '`' | '[' | ']' | '\'' | ';'))
            .to_string(),
    )
}

/// Lists the log in `dir` (records `oldest..=last` exist) as the filter asks.
pub fn list(dir: &Path, oldest: u64, last: u64, f: &Filter) -> Result<Value> {
    let from = f
        .from
        .unwrap_or_else(|| last.saturating_sub(DEFAULT_TAIL_RECORDS) + 1)
        .max(oldest)
        .max(1);
    let to = f.to.unwrap_or(last).min(last);
    let end = to.min(from.saturating_add(MAX_SCANNED_RECORDS - 1));
    let limit = f.limit.unwrap_or(MAX_LISTED).min(MAX_LISTED);
    let mut out = Vec::new();
    let mut reader = LogReader::new(dir);
    let mut lsn = from;
    while lsn <= end {
        let batch = reader.read(lsn, end, READ_BATCH_BYTES)?;
        lsn += batch.len() as u64;
        for r in batch.iter().filter(|r| r.kind != RecordKind::Heartbeat) {
            if f.since_ms.is_some_and(|s| r.time_ms < s) {
                continue;
            }
            let v = summary(r);
            if f.table.as_deref().is_some_and(|t| !touches(&v, t)) {
                continue;
            }
            out.push(v);
        }
    }
    // The newest `limit` of them.
    let skip = out.len().saturating_sub(limit);
    let truncated = skip > 0 || end < to;
    Ok(
        json!({ "from": from, "to": end, "oldest_lsn": oldest, "last_lsn": last, "truncated": truncated, "records": out.split_off(skip) }),
    )
}

/// One record with its changes (`spare log --show LSN`).
pub fn show(dir: &Path, oldest: u64, last: u64, lsn: u64) -> Result<Value> {
    if lsn < oldest || lsn > last || lsn == 0 {
        return Err(Error::InvalidInput(format!(
            "LSN {lsn} is not in this node's log (it holds {oldest}..={last}); older records are gone with retention"
        )));
    }
    let r = LogReader::new(dir).record_at(lsn)?;
    Ok(crate::store::quarantine::describe(&r))
}

#[cfg(test)]
mod tests {
    use super::ddl_target;

    #[test]
    fn a_schema_statement_names_the_table_it_changes_not_its_columns() {
        let cases = [
            (
                "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT)",
                Some("invoice"),
            ),
            (
                "CREATE TABLE IF NOT EXISTS \"customer\"(id INTEGER)",
                Some("customer"),
            ),
            (
                "ALTER TABLE main.customer ADD COLUMN city TEXT",
                Some("customer"),
            ),
            ("DROP TABLE IF EXISTS [customer];", Some("customer")),
            (
                "CREATE UNIQUE INDEX IF NOT EXISTS by_name ON customer (name)",
                Some("customer"),
            ),
            ("CREATE VIEW big AS SELECT * FROM customer", Some("big")),
            (
                "CREATE TRIGGER t AFTER INSERT ON invoice BEGIN UPDATE customer SET n = 1; END",
                Some("invoice"),
            ),
            ("DROP INDEX by_name", None),
        ];
        for (sql, table) in cases {
            assert_eq!(ddl_target(sql).as_deref(), table, "{sql}");
        }
    }
}
