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

/// Records the applied position; call inside the transaction that applies it.
pub fn set_applied(conn: &Connection, lsn: u64, time_ms: u64) -> Result<()> {
    let sql = format!("INSERT INTO {META_TABLE} (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    conn.execute(&sql, rusqlite::params!["applied_lsn", lsn as i64])?;
    conn.execute(&sql, rusqlite::params!["applied_time_ms", time_ms as i64])?;
    Ok(())
}
