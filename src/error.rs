//! The library's error type, classified by how the caller handles it (toydb's habit):
//! the caller retries, reports the user's mistake, stops the node, or redirects the client.

use serde::{Deserialize, Serialize};

/// Where clients reach the primary, carried by [`Error::NotPrimary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryRef {
    pub name: String,
    pub http: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong (bad SQL shape, bad parameters): report it, retrying is useless.
    #[error("{0}")]
    InvalidInput(String),
    /// SQLite refused the statement; the message is SQLite's own.
    #[error("{0}")]
    Sql(String),
    /// Data read from disk or the network is corrupt or does not follow the protocol.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// This node's copy no longer matches the primary's history: it must be re-seeded.
    #[error("diverged from the primary: {0}")]
    Diverged(String),
    /// A write was sent where only reads are served (`/v1/query`).
    #[error("this statement writes; send it to /v1/execute on the primary")]
    NotReadOnly,
    /// The statement does something clients may not do on a node (touch its own tables,
    /// ATTACH, temporary objects, transaction control); the message says what to do instead.
    #[error("{0}")]
    NotAllowed(String),
    /// The request ran longer than its time limit (`read_time_limit`, `write_time_limit`)
    /// and was stopped, changing nothing; the message names the setting.
    #[error("{0}")]
    TimeLimit(String),
    /// The request or its answer is larger than a limit (`max_result_bytes`, the largest
    /// transaction a log record holds); the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// Every slot for this kind of work is taken (concurrent reads): retry in a moment.
    #[error("busy: {0}")]
    Busy(String),
    /// Writes go to the primary.
    #[error("this node is not the primary")]
    NotPrimary { primary: Option<PrimaryRef> },
    /// Temporarily impossible (shutting down, overloaded, timed out): the caller may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write refused before anything of it ran (no write lease, the node changing role):
    /// sending it again cannot apply it twice. 503 "unavailable" with `"retry_safe": true`.
    #[error("unavailable: {0}")]
    NotTaken(String),
    /// The configuration is invalid; the message names the file, node and field.
    #[error("{0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what we were doing, as a verb phrase.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// Whether this error is a fault of this host that a retry can outlast (a full disk, an
    /// I/O error, a busy or locked database, memory): met while applying, it is retried;
    /// anything else means the copy cannot follow the primary's history as it is (re-seed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::NotTaken(_) | Error::Busy(_) | Error::Io { .. }
        )
    }

    /// The same refusal again, for each write of a group (errors are not `Clone`: they may
    /// hold an I/O error).
    pub fn clone_refusal(&self) -> Error {
        match self {
            Error::NotTaken(m) => Error::NotTaken(m.clone()),
            other => Error::Unavailable(other.to_string()),
        }
    }

    /// The stable code clients see in `{"error": code}`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_request",
            Error::Sql(_) => "sql_error",
            Error::InvalidData(_) => "invalid_data",
            Error::Diverged(_) => "diverged",
            Error::NotPrimary { .. } => "not_primary",
            Error::NotReadOnly => "not_read_only",
            Error::NotAllowed(_) => "not_allowed",
            Error::TimeLimit(_) => "time_limit",
            Error::TooLarge(_) => "too_large",
            Error::Busy(_) => "busy",
            Error::Unavailable(_) | Error::NotTaken(_) => "unavailable",
            Error::Config(_) => "invalid_config",
            Error::Io { .. } => "io_error",
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::MultipleStatement => Error::InvalidInput(
                "the SQL text holds several statements; send one per \"sql\", and several as one {\"batch\": [...]}".into(),
            ),
            rusqlite::Error::SqliteFailure(ref e, _) if sqlite_transient(e.extended_code) => {
                Error::Unavailable(format!("the database: {err}"))
            }
            other => Error::Sql(other.to_string()),
        }
    }
}

/// Whether a SQLite result code is a fault of this host a retry can outlast (busy, locked,
/// full disk, I/O, memory, cannot open), not a property of the statement or the data.
pub fn sqlite_transient(code: std::ffi::c_int) -> bool {
    use rusqlite::ffi;
    matches!(
        code & 0xff,
        ffi::SQLITE_BUSY
            | ffi::SQLITE_LOCKED
            | ffi::SQLITE_FULL
            | ffi::SQLITE_IOERR
            | ffi::SQLITE_NOMEM
            | ffi::SQLITE_CANTOPEN
    )
}
