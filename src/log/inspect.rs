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

/// Whether the record `v` changes rows of `table`, or its schema (names compared in any
/// case, as SQLite does).
fn touches(v: &Value, table: &str) -> bool {
    let rows = v["tables"]
        .as_object()
        .is_some_and(|t| t.keys().any(|k| k.eq_ignore_ascii_case(table)));
    rows || v["ddl"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|d| match super::ddl_names::changed_tables(d) {
            Some(tables) => tables.iter().any(|t| t.eq_ignore_ascii_case(table)),
            // A statement whose head cannot be read: listed if it names the table at all.
            None => d.to_lowercase().contains(&table.to_lowercase()),
        })
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
    use super::touches;
    use serde_json::json;

    #[test]
    fn a_table_filter_matches_row_changes_in_any_case_and_only_the_ddl_of_that_table() {
        let rows = json!({ "tables": { "Customer": { "inserted": 1 } }, "ddl": [] });
        assert!(touches(&rows, "customer"));
        assert!(!touches(&rows, "invoice"));
        let ddl = |sql: &str| json!({ "tables": {}, "ddl": [sql] });
        let invoice = ddl("CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT)");
        assert!(touches(&invoice, "INVOICE"));
        assert!(!touches(&invoice, "customer"), "a column is not a table");
        // A head it cannot read is listed when it names the table at all.
        assert!(touches(&ddl("ANALYZE customer"), "customer"));
        assert!(!touches(&ddl("DROP INDEX customer_by_name"), "customer"));
    }
}
