//! Schema facts that replication depends on (DESIGN.md §3):
//! - DDL is not in changesets: it is recognised here, run in a transaction of its own, and
//!   logged as SQL text.
//! - Changesets silently skip tables the target lacks: every changeset carries a checksum of
//!   the schema it applies to, and the spare compares it with its own.
//! - Rows whose PRIMARY KEY holds NULL are silently left out of changesets: tables that allow
//!   that are refused at creation with a message that says how to declare them.
//! - AUTOINCREMENT counters (`sqlite_sequence`) are not in changesets: they are read here and
//!   replicated explicitly.

use std::collections::BTreeMap;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::session::INTERNAL_TABLE_PREFIX;
use crate::store::statement::first_keyword;

/// Whether `sql` changes the schema (CREATE, ALTER, DROP) or SQLite's statistics (ANALYZE),
/// judged by its first keyword after comments and whitespace. Such a statement is replayed
/// as SQL on spares; the authorizer makes sure no other statement changes the schema.
pub fn is_ddl(sql: &str) -> bool {
    let word = first_keyword(sql).to_ascii_uppercase();
    matches!(word.as_str(), "CREATE" | "ALTER" | "DROP" | "ANALYZE")
}

/// Checksum of the user's schema (tables, indexes, views, triggers; not ours, not SQLite's).
pub fn checksum(conn: &Connection) -> Result<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE ?1 ESCAPE '\\' ORDER BY type, name",
    )?;
    let pattern = format!("{}%", INTERNAL_TABLE_PREFIX.replace('_', "\\_"));
    let mut rows = stmt.query([pattern])?;
    let mut h = Sha256::new();
    while let Some(row) = rows.next()? {
        for i in 0..4 {
            let s: String = row.get(i)?;
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
    Ok(u64::from_le_bytes(
        h.finalize()[..8].try_into().expect("32-byte digest"),
    ))
}

/// Refuses tables whose rows could not all be replicated: a PRIMARY KEY that may hold NULL
/// (SQLite allows it outside INTEGER PRIMARY KEY and WITHOUT ROWID tables).
pub fn check_replicable(conn: &Connection) -> Result<()> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    for table in tables
        .iter()
        .filter(|t| !t.starts_with(INTERNAL_TABLE_PREFIX))
    {
        check_table(conn, table)?;
    }
    Ok(())
}

fn check_table(conn: &Connection, table: &str) -> Result<()> {
    check_conflict_clauses(conn, table)?;
    // (name, declared type, notnull, pk position)
    let cols: Vec<(String, String, bool, i64)> = conn
        .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")?
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<std::result::Result<_, _>>()?;
    let pk: Vec<&(String, String, bool, i64)> = cols.iter().filter(|c| c.3 > 0).collect();
    let without_rowid: bool = conn
        .query_row("SELECT coalesce((SELECT wr FROM pragma_table_list WHERE name = ?1 AND schema = 'main'), 0)", [table], |r| r.get(0))?;
    let integer_pk = pk.len() == 1 && pk[0].1.eq_ignore_ascii_case("INTEGER");
    if without_rowid || integer_pk {
        return Ok(());
    }
    if let Some(col) = pk.iter().find(|c| !c.2) {
        return Err(Error::InvalidInput(format!(
            "table \"{table}\": PRIMARY KEY column \"{}\" may hold NULL, and SQLite cannot replicate rows whose key is NULL; declare it NOT NULL (or make the table WITHOUT ROWID)",
            col.0
        )));
    }
    Ok(())
}

/// Refuses a table declaring a constraint `ON CONFLICT ROLLBACK`: on a spare, a change
/// meeting it would end the whole batch's transaction half way through an apply, and SQLite's
/// apply would go on outside any transaction.
fn check_conflict_clauses(conn: &Connection, table: &str) -> Result<()> {
    let sql: Option<String> = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    let words: Vec<String> = sql
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    if words
        .windows(3)
        .any(|w| w == ["ON", "CONFLICT", "ROLLBACK"])
    {
        return Err(Error::InvalidInput(format!(
            "table \"{table}\" declares a constraint ON CONFLICT ROLLBACK, which spares cannot apply safely (it would end a spare's transaction half way through); declare the constraint without it (ON CONFLICT ABORT, the default)"
        )));
    }
    Ok(())
}

/// The AUTOINCREMENT counters, by table.
pub fn sequences(conn: &Connection) -> Result<BTreeMap<String, i64>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let mut stmt = conn.prepare_cached("SELECT name, seq FROM sqlite_sequence")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// Sets AUTOINCREMENT counters to the primary's values (on a spare's applier, which runs no
/// client SQL: its statements come from the cache, see `store::run_cached`).
pub fn set_sequences(conn: &Connection, seqs: &[(String, i64)]) -> Result<()> {
    for (name, seq) in seqs {
        let updated = conn
            .prepare_cached("UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1")?
            .execute(rusqlite::params![name, seq])?;
        if updated == 0 {
            conn.prepare_cached("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)")?
                .execute(rusqlite::params![name, seq])?;
        }
    }
    Ok(())
}

/// Why `CREATE TABLE ... AS SELECT` is refused: spares would evaluate the SELECT again, with
/// other values for `random()` or the time. The executor finds it however it is spelled
/// (SQLite compiles a SELECT into the CREATE TABLE).
pub const CREATE_AS: &str = "CREATE TABLE ... AS SELECT is not supported (spares would re-evaluate it); create the table, then fill it with INSERT ... SELECT in a separate request";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_recognised_after_comments_and_in_any_case() {
        assert!(is_ddl("create table t(x)"));
        assert!(is_ddl("  -- make it\n /* now */ ALTER TABLE t ADD y"));
        assert!(is_ddl("Drop index i"));
        assert!(!is_ddl("INSERT INTO t VALUES (1)"));
        assert!(!is_ddl("-- CREATE\nUPDATE t SET x = 1"));
        assert!(!is_ddl(
            "WITH c AS (SELECT 1) INSERT INTO t SELECT * FROM c"
        ));
    }

    #[test]
    fn nullable_primary_keys_are_refused_and_safe_keys_accepted() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE ok1 (id INTEGER PRIMARY KEY, v); CREATE TABLE ok2 (code TEXT PRIMARY KEY NOT NULL); CREATE TABLE ok3 (code TEXT PRIMARY KEY) WITHOUT ROWID; CREATE TABLE ok4 (v)").unwrap();
        check_replicable(&conn).unwrap();
        conn.execute_batch("CREATE TABLE bad (code TEXT PRIMARY KEY, v)")
            .unwrap();
        let e = check_replicable(&conn).unwrap_err().to_string();
        assert!(
            e.contains("\"bad\"") && e.contains("\"code\"") && e.contains("NOT NULL"),
            "{e}"
        );
    }

    #[test]
    fn checksum_changes_with_the_schema_but_not_with_data() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .unwrap();
        let a = checksum(&conn).unwrap();
        conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        assert_eq!(a, checksum(&conn).unwrap());
        conn.execute_batch("ALTER TABLE t ADD COLUMN v TEXT")
            .unwrap();
        assert_ne!(a, checksum(&conn).unwrap());
    }
}
