//! spare: spare servers for a SQLite database.
pub mod actors;
pub mod client;
pub mod config;
pub mod core;
pub mod error;
pub mod http;
pub mod log;
pub mod net;
pub mod state;
pub mod store;
pub mod view;
pub mod wire;
