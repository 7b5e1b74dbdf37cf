//! The running node, as the HTTP API, the supervisor and the backup schedule reach it: its
//! role's actor and what that role shares.

use std::sync::Arc;

use actix::Addr;
use tokio::sync::mpsc;

use crate::actors::messages::ConfigChanged;
use crate::actors::monitor::MonitorActor;
use crate::actors::primary::committer::Job;
use crate::actors::primary::PrimaryActor;
use crate::actors::shared::{DataShared, PrimaryShared};
use crate::actors::spare::{SpareActor, SpareShared};
use crate::events::EventLog;

/// The running node, as the HTTP API reaches it.
#[derive(Clone)]
pub enum NodeAddr {
    Primary {
        actor: Addr<PrimaryActor>,
        writes: mpsc::Sender<Job>,
        shared: Arc<DataShared>,
        primary: Arc<PrimaryShared>,
    },
    Spare {
        actor: Addr<SpareActor>,
        shared: Arc<DataShared>,
        spare: Arc<SpareShared>,
    },
    Monitor {
        actor: Addr<MonitorActor>,
        events: Arc<EventLog>,
    },
}

impl NodeAddr {
    /// Tells the node's actor that the configuration changed.
    pub fn notify(&self, msg: ConfigChanged) {
        let sent = match self {
            NodeAddr::Primary { actor, .. } => actor.try_send(msg).is_ok(),
            NodeAddr::Spare { actor, .. } => actor.try_send(msg).is_ok(),
            NodeAddr::Monitor { actor, .. } => actor.try_send(msg).is_ok(),
        };
        if !sent {
            tracing::warn!(
                "a node's mailbox is full; it will see the new configuration at its next restart"
            );
        }
    }
}

impl NodeAddr {
    /// The node's events log.
    pub fn events(&self) -> Arc<EventLog> {
        match self {
            NodeAddr::Primary { shared, .. } | NodeAddr::Spare { shared, .. } => {
                shared.events.clone()
            }
            NodeAddr::Monitor { events, .. } => events.clone(),
        }
    }
}
