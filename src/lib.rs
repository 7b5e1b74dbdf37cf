//! spare: spare servers for a SQLite database.
//!
//! One primary serves the database over HTTP and streams every committed transaction, as a
//! record of its replication log, to its spares; monitors report each spare's lag. See
//! `docs/architecture.md` for the tour and `../shared/DESIGN.md` for the design.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | `cluster.toml`: types, defaults as named constants, validation with precise errors |
//! | [`error`] | the library's error enum, classified by how the caller handles it |
//! | [`log`] | the replication log: records (CRC32C, checksum chain), segments, writer, reader, recovery |
//! | [`store`] | SQLite: execution with changeset capture (session extension), apply (own statements per table and change shape, SQLite's apply as the reference), queries, meta; the guard on client statements (authorizer, time and size limits) |
//! | [`wire`] | the peer protocol: `Envelope`, `Message`, length-prefixed msgpack framing; the versions spoken (this release's and the previous one's) |
//! | [`net`] | peer authentication (secret challenge), the handshake, TLS (re-read on reload), liveness counted in bytes |
//! | [`core`] | pure decisions: feeder window, where to resume a spare, lag, voter, lease, memberships, promotion; the simulator (tests) |
//! | [`actors`] | the actix side: node slots (roles), primary, feeders, spare, monitor, voter, lease, the promotion coordinator; the committer and apply threads |
//! | [`http`] | the HTTP API on actix-web |
//! | [`clock`] | the boot clock (leases, grants: counts suspended time), wall time, a process's CPU time |
//! | [`client`] | a blocking HTTP client for the command line and monitors (resends writes refused before they ran) |
//! | [`verify`] | `spare verify`: every data node's database against the primary's at one LSN |
//! | [`view`] | the cluster document shared by `spare status` and `GET /v1/cluster` |
//! | [`durable`] | small files replaced atomically; secret files created once, owner-only |
//! | [`events`] | the events log (JSON lines) and `notify_command` |
//! | [`status`] | the typed status document of a node (`GET /v1/status`), tagged by role |
//! | [`state`] | `node.state`: epoch, promise, primary, role, the epoch's membership and pending promises, replaced atomically; the role a node runs as |
pub mod actors;
pub mod client;
pub mod clock;
pub mod config;
pub mod core;
pub mod durable;
pub mod error;
pub mod events;
pub mod http;
pub mod log;
pub mod net;
pub mod state;
pub mod status;
pub mod store;
pub mod verify;
pub mod view;
pub mod wire;
