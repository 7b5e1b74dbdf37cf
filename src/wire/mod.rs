//! The peer protocol between data nodes (DESIGN.md §4): one documented message enum inside an
//! [`Envelope`], framed as length-prefixed msgpack by [`codec`].
//!
//! Flow on one connection, opened by the primary ("the primary pushes"):
//!
//! ```text
//! primary                                   spare
//!   Hello { protocol, to, nonce_p }  ───────►  checks cluster, names, version
//!                                    ◄───────  Challenge { nonce_s, proof_s }
//!   checks proof_s (spare knows the secret)
//!   Proof { proof_p }                ───────►  checks proof_p (primary knows the secret)
//!                                    ◄───────  Position { durable, applied_lsn }
//!   decides where to resume
//!   Records { bytes } ...            ───────►  appends, fsyncs, applies
//!                                    ◄───────  Ack { received, flushed, applied }
//!   KeepAlive                        ◄──────►  KeepAlive (when idle)
//! ```
//!
//! The dialer's `protocol` is the connection's version, if the acceptor speaks it (it speaks
//! this release's and the previous one: [`version`]).
//!
//! Either side may send `Refuse { reason }` and close. Nothing a peer sends before the
//! handshake completes is acted upon, and no record is accepted before it.

pub mod codec;
pub mod message;
#[cfg(test)]
mod message_v2_tests;
pub mod version;

pub use codec::{read_frame, read_frame_within, write_frame, MAX_FRAME_BYTES};
pub use message::{Envelope, Message, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
