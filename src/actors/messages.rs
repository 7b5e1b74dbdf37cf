//! The messages every role actor (primary, spare, monitor) answers, in one place: the
//! supervisor, the HTTP API and the other actors send them without depending on one role's
//! file. Messages a single actor serves (the monitor's views, the supervisor's reloads)
//! stay at the top of that actor's file.

use std::time::Instant;

use actix::{Message, Recipient};
use serde::Serialize;

use crate::error::Result;
use crate::status::NodeStatus;

/// Asks for this node's status document (`GET /v1/status`).
#[derive(Message)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

/// Tells a node actor the configuration changed (it reads the new one from the cell).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigChanged;

/// Re-reads the configuration file and applies it.
#[derive(Message)]
#[rtype(result = "Result<ReloadReport>")]
pub struct Reload;

/// A node's state may call for another role: check, and change it if so.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoleCheck {
    /// The node's name.
    pub node: String,
}

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Nodes now in the file that were not (this process started those it runs).
    pub added: Vec<String>,
    /// Nodes no longer in the file.
    pub removed: Vec<String>,
    /// Spares whose settings changed.
    pub changed: Vec<String>,
}

/// The supervisor as the HTTP API reaches it: reloads and role checks.
#[derive(Clone)]
pub struct Supervisor {
    pub reload: Recipient<Reload>,
    pub role_check: Recipient<RoleCheck>,
}

/// State of the link to one spare, as its feeder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Streaming,
    Seeding,
    Disconnected,
    Diverged,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Streaming => "streaming",
            LinkState::Seeding => "seeding",
            LinkState::Disconnected => "disconnected",
            LinkState::Diverged => "diverged",
        }
    }
}

/// A feeder's latest view of its spare. Sent with `try_send`: when the mailbox is full the
/// update is dropped, and the next one (sent at every ack) supersedes it anyway.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SpareProgress {
    /// The spare's name.
    pub spare: String,
    pub state: LinkState,
    /// Highest LSN the spare received, fsynced, applied.
    pub received: u64,
    pub flushed: u64,
    pub applied: u64,
    /// Commit time of the oldest record sent and not yet applied, if known.
    pub oldest_unapplied_time_ms: Option<u64>,
    /// When the spare last answered; None if never.
    pub last_ack: Option<Instant>,
    /// Bytes sent and not yet flushed by the spare.
    pub in_flight_bytes: u64,
    /// While seeding: (bytes the spare holds, snapshot size).
    pub seed: Option<(u64, u64)>,
    /// Why the spare holds records back on purpose (`paused`, `delayed (30m)`), if it does.
    pub held: Option<String>,
    /// The protocol version the link speaks (2 to a spare of the previous release); None
    /// before a handshake.
    pub protocol: Option<u32>,
}

impl SpareProgress {
    /// A spare the feeder never reached.
    pub fn new(spare: &str, state: LinkState) -> Self {
        SpareProgress {
            spare: spare.to_string(),
            state,
            received: 0,
            flushed: 0,
            applied: 0,
            oldest_unapplied_time_ms: None,
            last_ack: None,
            in_flight_bytes: 0,
            seed: None,
            held: None,
            protocol: None,
        }
    }

    /// The state as status shows it: "seeding (42 %)" while seeding.
    pub fn state_text(&self) -> String {
        match (self.state, self.seed) {
            (LinkState::Seeding, Some((done, size))) => {
                format!("seeding ({} %)", crate::core::lag::seed_percent(done, size))
            }
            (state, _) => state.as_str().to_string(),
        }
    }
}
