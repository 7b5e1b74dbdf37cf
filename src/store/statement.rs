//! What a statement's text says before SQLite compiles it: its first keyword, whether it
//! holds a statement at all, and the early refusals of what no request may send (transaction
//! control, ATTACH, PRAGMA, VACUUM). The authorizer in `guard.rs` enforces the same rules
//! however they are spelt; these answer the common spellings before any SQLite work, with the
//! same words.

use crate::error::{Error, Result};

pub const ATTACH: &str = "ATTACH and DETACH are not allowed: an attached database is not replicated, and it would open files on the node's disk";
pub const TRANSACTION: &str = "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is not allowed: each request is one transaction; send several statements as one {\"batch\": [...]}";
pub const PRAGMA: &str = "this PRAGMA is not allowed: the node manages its connection settings; read-only PRAGMAs (table_info, index_list, foreign_key_list, integrity_check, ...) work on /v1/query";

pub(crate) fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Whether `sql` holds anything but spaces, comments and semicolons.
pub fn holds_statement(sql: &str) -> bool {
    !first_keyword(sql.trim_start_matches(|c: char| c == ';' || c.is_whitespace())).is_empty()
}

/// Refuses SQL text no statement should have: empty, or holding a NUL (SQLite would stop
/// reading at the NUL, so the text logged for spares would not be the text run here).
pub fn check_text(sql: &str) -> Result<()> {
    if sql.contains('\0') {
        return Err(Error::InvalidInput(
            "the SQL text holds a NUL character; remove it (pass values as parameters)".into(),
        ));
    }
    if first_keyword(sql).is_empty() {
        return Err(Error::InvalidInput(
            "the SQL text does not start with a statement keyword (SELECT, INSERT, ...): it is empty, only comments, or starts with another character".into(),
        ));
    }
    Ok(())
}

/// Refuses, before any SQLite work, what a query may never be: the authorizer refuses the
/// rest as SQLite compiles it.
pub fn check_query_allowed(sql: &str) -> Result<()> {
    check_text(sql)?;
    if first_keyword(sql).eq_ignore_ascii_case("VACUUM") {
        return Err(Error::NotAllowed(
            "VACUUM is not allowed through the API: it would rewrite the database file or write a copy on the node's disk; use `spare backup` for a copy".into(),
        ));
    }
    Ok(())
}

/// Refuses statements that would break the group transaction or the node's setup, with what
/// to do instead (the authorizer enforces the same rules whatever the spelling; this answers
/// the common spellings before any SQLite work).
pub fn check_statement_allowed(sql: &str) -> Result<()> {
    check_text(sql)?;
    let word = first_keyword(sql).to_ascii_uppercase();
    let why = match word.as_str() {
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => TRANSACTION,
        "ATTACH" | "DETACH" => ATTACH,
        "PRAGMA" => PRAGMA,
        "VACUUM" => "VACUUM is not allowed through the API: it would rewrite the database file or write a copy on the node's disk; use `spare backup` for a copy",
        _ => return Ok(()),
    };
    Err(Error::NotAllowed(why.into()))
}
