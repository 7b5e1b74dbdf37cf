//! The messages every role actor (primary, spare, monitor) answers, in one place: the
//! supervisor, the HTTP API and the other actors send them without depending on one role's
//! file. Messages a single actor serves (the monitor's views, the supervisor's reloads)
//! stay at the top of that actor's file.

use actix::Message;
use serde_json::Value;

/// Asks for this node's status document (`GET /v1/status`).
#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetStatus;

/// Tells a node actor the configuration changed (it reads the new one from the cell).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigChanged;

/// Stops a node actor (its node left the configuration).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopNode;
