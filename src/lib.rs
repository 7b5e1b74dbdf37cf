//! spare: spare servers for a SQLite database.
pub mod config;
pub mod core;
pub mod error;
pub mod log;
pub mod net;
pub mod store;
pub mod wire;
