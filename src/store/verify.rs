//! `spare verify` on one node (DESIGN.md §9): a read snapshot of the database whose LSN is
//! known, and digests of it. The checksum chain proves the log; this proves the database
//! file: a copy edited behind the node's back is found here, not only when a later change
//! conflicts.
//!
//! A table's digest is SHA-256 over its rows in key order (the rowid, or the primary key of
//! a `WITHOUT ROWID` table), each row as its key and the hash of its values, every value
//! tagged with its type (1 and 1.0 and '1' differ). The schema (`sqlite_schema`'s SQL of the
//! user's objects) is compared as a table named `(schema)`. The node's own tables
//! (`_spare_*`), SQLite's (`sqlite_*`), virtual tables and their shadow tables are left out:
//! the first two differ by design, the last two are derived from their content.

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Most row hashes one answer lists (a table that differs in more rows is reported as
/// differing, with the first of them).
pub const MAX_ROW_HASHES: usize = 100_000;
/// What a spare's answer says when it already applied past the LSN asked (the caller
/// tries again with a newer one).
pub const PAST: &str = "already applied past";
/// The name the schema is compared under.
pub const SCHEMA_TABLE: &str = "(schema)";

/// One table's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub name: String,
    pub rows: u64,
    /// Hex SHA-256.
    pub digest: String,
}

/// One row: its key (JSON of the key's values) and the hex SHA-256 of its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowHash {
    pub key: String,
    pub hash: String,
}

/// A read transaction held open on its own connection: every digest of it describes the
/// database at `lsn`, whatever is written meanwhile (WAL keeps the snapshot).
pub struct Snapshot {
    conn: Connection,
    pub lsn: u64,
}

impl Snapshot {
    /// Opens a read snapshot of the database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Snapshot> {
        let conn = crate::store::open(path, crate::store::ConnKind::Reader)?;
        conn.execute_batch("BEGIN")?;
        // The first read fixes the snapshot; the applied LSN is read in it.
        let (lsn, _) = crate::store::meta::applied(&conn)?;
        Ok(Snapshot { conn, lsn })
    }

    /// The user's tables, by name.
    fn tables(&self) -> Result<Vec<Table>> {
        let mut stmt = self.conn.prepare(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_spare\\_%' ESCAPE '\\' \
             ORDER BY name",
        )?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        names
            .into_iter()
            .map(|n| Table::of(&self.conn, n))
            .collect()
    }

    /// Every user table's digest, and the schema's, in name order.
    pub fn digests(&self) -> Result<Vec<TableDigest>> {
        let mut out = vec![self.schema_digest()?];
        for t in self.tables()? {
            let mut h = Sha256::new();
            let rows = t.each_row(&self.conn, |key, row| {
                h.update(key.as_bytes());
                h.update(row);
                true
            })?;
            out.push(TableDigest {
                name: t.name,
                rows,
                digest: hex(&h.finalize()),
            });
        }
        Ok(out)
    }

    fn schema_digest(&self) -> Result<TableDigest> {
        let mut stmt = self.conn.prepare(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_spare\\_%' ESCAPE '\\' \
             ORDER BY type, name",
        )?;
        let mut h = Sha256::new();
        let mut rows = 0;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            for i in 0..3 {
                let s: String = r.get(i)?;
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            rows += 1;
        }
        Ok(TableDigest {
            name: SCHEMA_TABLE.into(),
            rows,
            digest: hex(&h.finalize()),
        })
    }

    /// The rows of `table` with their hashes, in key order, at most [`MAX_ROW_HASHES`];
    /// the flag says whether that is all of them.
    pub fn row_hashes(&self, table: &str) -> Result<(Vec<RowHash>, bool)> {
        let t = self
            .tables()?
            .into_iter()
            .find(|t| t.name == table)
            .ok_or_else(|| Error::InvalidInput(format!("no table {table} to compare")))?;
        let mut out = Vec::new();
        let mut complete = true;
        t.each_row(&self.conn, |key, row| {
            if out.len() == MAX_ROW_HASHES {
                complete = false;
                return false;
            }
            out.push(RowHash {
                key: key.to_string(),
                hash: hex(row),
            });
            true
        })?;
        Ok((out, complete))
    }
}

/// A table and how to walk it in key order.
struct Table {
    name: String,
    /// The key columns, quoted (`rowid` for a rowid table).
    key: Vec<String>,
}

impl Table {
    /// Rows are keyed by the declared primary key, as changesets carry them (the rowids of a
    /// table with a TEXT key may legitimately differ between copies); by rowid only when
    /// the table declares none.
    fn of(conn: &Connection, name: String) -> Result<Table> {
        let mut stmt =
            conn.prepare("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk")?;
        let cols: Vec<String> = stmt
            .query_map([&name], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        let key = if cols.is_empty() {
            vec!["rowid".to_string()]
        } else {
            cols.iter().map(|c| quote(c)).collect()
        };
        Ok(Table { name, key })
    }

    /// Calls `f(key JSON, row hash)` for each row in key order until it returns false;
    /// returns the rows seen.
    fn each_row(&self, conn: &Connection, mut f: impl FnMut(&str, &[u8]) -> bool) -> Result<u64> {
        let keys = self.key.join(", ");
        let sql = format!(
            "SELECT {keys}, * FROM {} ORDER BY {keys}",
            quote(&self.name)
        );
        let mut stmt = conn.prepare(&sql)?;
        let width = stmt.column_count();
        let nkey = self.key.len();
        let mut q = stmt.query([])?;
        let mut rows = 0;
        while let Some(r) = q.next()? {
            let mut key = Vec::with_capacity(nkey);
            for i in 0..nkey {
                key.push(json_of(r.get_ref(i)?));
            }
            let mut h = Sha256::new();
            for i in nkey..width {
                feed(&mut h, r.get_ref(i)?);
            }
            rows += 1;
            let key = serde_json::Value::Array(key).to_string();
            if !f(&key, &h.finalize()) {
                break;
            }
        }
        Ok(rows)
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A value, tagged with its type, into the hash.
fn feed(h: &mut Sha256, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => h.update([0u8]),
        ValueRef::Integer(i) => {
            h.update([1u8]);
            h.update(i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            h.update([2u8]);
            h.update(f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => {
            h.update([3u8]);
            h.update((t.len() as u64).to_be_bytes());
            h.update(t);
        }
        ValueRef::Blob(b) => {
            h.update([4u8]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

/// A key value as JSON, for the report.
fn json_of(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::json!(f),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        // A blob key by its content (hex; long ones by their first 32 bytes and length).
        ValueRef::Blob(b) => {
            let shown: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "blob": shown, "bytes": b.len() })
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where two lists of row hashes (both in key order) differ: keys on one side only, and
/// keys whose rows differ. At most `limit` keys are listed.
pub fn row_differences(a: &[RowHash], b: &[RowHash], limit: usize) -> Vec<String> {
    let ma: std::collections::BTreeMap<&str, &str> = a
        .iter()
        .map(|r| (r.key.as_str(), r.hash.as_str()))
        .collect();
    let mb: std::collections::BTreeMap<&str, &str> = b
        .iter()
        .map(|r| (r.key.as_str(), r.hash.as_str()))
        .collect();
    let mut out = Vec::new();
    for (k, h) in &ma {
        match mb.get(k) {
            None => out.push(format!("key {k}: only on the primary")),
            Some(o) if o != h => out.push(format!("key {k}: values differ")),
            _ => {}
        }
    }
    for k in mb.keys().filter(|k| !ma.contains_key(*k)) {
        out.push(format!("key {k}: only here"));
    }
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let conn = crate::store::open(&path, crate::store::ConnKind::Writer).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE c (id INTEGER PRIMARY KEY, name TEXT, total REAL);
             CREATE TABLE k (a TEXT, b INTEGER, v BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID;
             INSERT INTO c VALUES (1, 'ACME', 10.5), (2, 'Globex', 3);
             INSERT INTO k VALUES ('x', 1, x'00ff');
             {extra}"
        ))
        .unwrap();
        path
    }

    #[test]
    fn equal_databases_have_equal_digests_and_one_changed_value_shows_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Snapshot::open(&db(dir.path(), "a.sqlite", "")).unwrap();
        let b = Snapshot::open(&db(dir.path(), "b.sqlite", "")).unwrap();
        assert_eq!(a.digests().unwrap(), b.digests().unwrap());
        // Same row count, one value changed in place; and an integer stored as text.
        let c = Snapshot::open(&db(
            dir.path(),
            "c.sqlite",
            "UPDATE c SET name = 'ACNE' WHERE id = 1; UPDATE k SET b = '1' WHERE a = 'x';",
        ))
        .unwrap();
        let (da, dc) = (a.digests().unwrap(), c.digests().unwrap());
        let differ: Vec<&str> = da
            .iter()
            .zip(&dc)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.name.as_str())
            .collect();
        assert_eq!(differ, ["c"], "k's '1' is stored as 1 (column affinity)");
        assert_eq!(da[1].rows, dc[1].rows);
        let (ra, _) = a.row_hashes("c").unwrap();
        let (rc, complete) = c.row_hashes("c").unwrap();
        assert!(complete);
        assert_eq!(row_differences(&ra, &rc, 10), ["key [1]: values differ"]);
    }

    /// A TEXT-keyed table whose rowids differ (INSERT OR REPLACE on one copy, an update in
    /// place on the other) is the same table: rows are keyed by the declared key.
    #[test]
    fn rows_are_keyed_by_the_declared_primary_key_not_the_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, sql: &str| {
            let path = dir.path().join(name);
            let conn = crate::store::open(&path, crate::store::ConnKind::Writer).unwrap();
            conn.execute_batch(sql).unwrap();
            Snapshot::open(&path).unwrap()
        };
        let a = make(
            "a.sqlite",
            "CREATE TABLE t (code TEXT PRIMARY KEY NOT NULL, qty INTEGER);
             INSERT INTO t VALUES ('x', 1), ('y', 2);
             INSERT OR REPLACE INTO t VALUES ('x', 3);",
        );
        let b = make(
            "b.sqlite",
            "CREATE TABLE t (code TEXT PRIMARY KEY NOT NULL, qty INTEGER);
             INSERT INTO t VALUES ('x', 1), ('y', 2);
             UPDATE t SET qty = 3 WHERE code = 'x';",
        );
        assert_eq!(a.digests().unwrap(), b.digests().unwrap());
    }

    #[test]
    fn tables_named_like_the_nodes_own_are_still_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(
            dir.path(),
            "a.sqlite",
            "CREATE TABLE _spareparts (id INTEGER PRIMARY KEY);",
        );
        let names: Vec<String> = Snapshot::open(&path)
            .unwrap()
            .digests()
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert!(names.contains(&"_spareparts".to_string()), "{names:?}");
    }

    #[test]
    fn a_snapshot_keeps_its_lsn_and_rows_while_the_database_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(dir.path(), "a.sqlite", "");
        let snap = Snapshot::open(&path).unwrap();
        let before = snap.digests().unwrap();
        let w = crate::store::open(&path, crate::store::ConnKind::Writer).unwrap();
        w.execute_batch("INSERT INTO c VALUES (3, 'Initech', 1)")
            .unwrap();
        assert_eq!(snap.digests().unwrap(), before);
        let fresh = Snapshot::open(&path).unwrap();
        assert_ne!(fresh.digests().unwrap(), before);
    }

    #[test]
    fn missing_and_extra_rows_are_named() {
        let a = [
            RowHash {
                key: "[1]".into(),
                hash: "a".into(),
            },
            RowHash {
                key: "[2]".into(),
                hash: "b".into(),
            },
        ];
        let b = [
            RowHash {
                key: "[2]".into(),
                hash: "b".into(),
            },
            RowHash {
                key: "[3]".into(),
                hash: "c".into(),
            },
        ];
        assert_eq!(
            row_differences(&a, &b, 10),
            ["key [1]: only on the primary", "key [3]: only here"]
        );
    }
}
