//! Networking below the protocol: peer authentication (cluster secret challenge), and the
//! two ends of a peer connection's handshake.

pub mod auth;
pub mod handshake;
pub mod stream;
pub mod tls;
