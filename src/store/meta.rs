//! The meta table inside the user's database: the last applied LSN (and its commit time),
//! written in the same SQLite transaction as the changes it accounts for, so applying is
//! exactly-once across crashes. Never replicated (see `session::INTERNAL_TABLE_PREFIX`).

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

pub const META_TABLE: &str = "_spare_meta";

pub fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)"))?;
    Ok(())
}

fn get(conn: &Connection, key: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            &format!("SELECT value FROM {META_TABLE} WHERE key = ?1"),
            [key],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// (applied LSN, its commit time in ms); (0, 0) for a new database.
pub fn applied(conn: &Connection) -> Result<(u64, u64)> {
    Ok((get(conn, "applied_lsn")?, get(conn, "applied_time_ms")?))
}

/// Sets one key of the meta table (the table's name is `META_TABLE`).
const SET_META: &str = "INSERT INTO _spare_meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";

/// Records the applied position; call inside the transaction that applies it. Compiled
/// afresh: on the writer, client SQL is looked up in the same statement cache by its text,
/// and a cached statement is not authorized again (a client sending this very text would
/// run our compiled write to the meta table).
pub fn set_applied(conn: &Connection, lsn: u64, time_ms: u64) -> Result<()> {
    set_with(&mut conn.prepare(SET_META)?, lsn, time_ms)
}

/// [`set_applied`] from the connection's statement cache: only for a connection that never
/// runs client SQL (the spare's applier), where it is parsed once instead of per batch.
pub fn set_applied_cached(conn: &Connection, lsn: u64, time_ms: u64) -> Result<()> {
    let mut set = conn.prepare_cached(SET_META)?;
    set_with(&mut set, lsn, time_ms)
}

fn set_with(set: &mut rusqlite::Statement<'_>, lsn: u64, time_ms: u64) -> Result<()> {
    set.execute(rusqlite::params!["applied_lsn", lsn as i64])?;
    set.execute(rusqlite::params!["applied_time_ms", time_ms as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_compiled_meta_statement_names_the_meta_table() {
        assert!(super::SET_META.starts_with(&format!("INSERT INTO {} ", super::META_TABLE)));
    }
}
