//! spare: spare servers for a SQLite database.
pub mod config;
pub mod error;
pub mod log;
pub mod store;
