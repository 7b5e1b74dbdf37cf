//! Networking below the protocol: peer authentication (cluster secret challenge), the two
//! ends of a peer connection's handshake, and when a peer was last heard from.

pub mod auth;
pub mod handshake;
pub mod heard;
pub mod stream;
pub mod tls;
