//! `data/<node>/node.state`: what a data node must remember about the cluster across
//! restarts (epoch, promised epoch, known primary, role). Replaced atomically: written to a
//! temporary file, fsynced, renamed over the old one, directory fsynced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::core::members::{Members, Pending};
use crate::error::Result;

pub const STATE_FILE: &str = "node.state";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Epoch of the history this node follows or leads.
    pub epoch: u64,
    /// Highest epoch this node promised to a promotion (never below `epoch`).
    pub promised_epoch: u64,
    /// The primary of `epoch`, as this node knows it.
    pub primary: String,
    pub role: Role,
    /// The candidate `promised_epoch` was promised to (empty in files of older versions:
    /// then the primary of `epoch`).
    #[serde(default)]
    pub promised_to: String,
    /// Set when this node was promoted `--until` an LSN and has not yet cut its log there
    /// (it does, keeping the rest in quarantine, before it starts as the primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_after: Option<u64>,
    /// The membership of `epoch` (voters, lease length), once known (`core::members`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Members>,
    /// Promises made above `epoch`, with the memberships they were made for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// The longest lease this node ever granted as a voter.
    #[serde(default)]
    pub max_lease_ms: u64,
}

impl NodeState {
    /// The voter's part of the state.
    pub fn voter(&self) -> crate::core::voter::VoterState {
        let promised_to = if self.promised_to.is_empty() {
            self.primary.clone()
        } else {
            self.promised_to.clone()
        };
        crate::core::voter::VoterState {
            epoch: self.epoch,
            primary: self.primary.clone(),
            promised_epoch: self.promised_epoch,
            promised_to,
            members: self.members.clone(),
            pending: self.pending.clone(),
            max_lease_ms: self.max_lease_ms,
        }
    }

    /// This state with the voter's part replaced.
    pub fn with_voter(&self, v: &crate::core::voter::VoterState) -> Self {
        NodeState {
            epoch: v.epoch,
            primary: v.primary.clone(),
            promised_epoch: v.promised_epoch,
            promised_to: v.promised_to.clone(),
            role: self.role,
            truncate_after: self.truncate_after,
            members: v.members.clone(),
            pending: v.pending.clone(),
            max_lease_ms: v.max_lease_ms,
        }
    }
}

/// What a node runs as, from its state (DESIGN.md §2 "role").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incarnation {
    Primary,
    Spare,
    /// An old primary that learned of a newer epoch: read-only until `spare rejoin`.
    Fenced,
    Monitor,
}

impl Incarnation {
    pub fn as_str(self) -> &'static str {
        match self {
            Incarnation::Primary => "primary",
            Incarnation::Spare => "spare",
            Incarnation::Fenced => "fenced",
            Incarnation::Monitor => "monitor",
        }
    }
}

impl NodeState {
    /// The node named primary of the newest epoch it knows leads; an old primary that has
    /// not rejoined is fenced; other data nodes are spares.
    pub fn incarnation(&self, me: &str) -> Incarnation {
        match self.role {
            Role::Monitor => Incarnation::Monitor,
            _ if self.primary == me => Incarnation::Primary,
            Role::Primary => Incarnation::Fenced,
            Role::Spare => Incarnation::Spare,
        }
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

impl NodeState {
    /// Loads the state, or None for a node that never started.
    pub fn load(data_dir: &Path) -> Result<Option<Self>> {
        crate::durable::read_json(&path(data_dir))
    }

    pub fn save(&self, data_dir: &Path) -> Result<()> {
        assert!(
            self.promised_epoch >= self.epoch,
            "a node never promises less than the epoch it follows"
        );
        crate::durable::write_json(&path(data_dir), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(primary: &str, role: Role) -> NodeState {
        NodeState {
            epoch: 2,
            promised_epoch: 2,
            primary: primary.into(),
            role,
            promised_to: primary.into(),
            truncate_after: None,
            members: None,
            pending: Vec::new(),
            max_lease_ms: 0,
        }
    }

    #[test]
    fn the_role_follows_the_newest_primary_and_an_old_primary_is_fenced() {
        assert_eq!(
            state("lan-1", Role::Spare).incarnation("lan-1"),
            Incarnation::Primary
        );
        assert_eq!(
            state("lan-1", Role::Primary).incarnation("main"),
            Incarnation::Fenced
        );
        assert_eq!(
            state("lan-1", Role::Spare).incarnation("main"),
            Incarnation::Spare,
            "rejoined"
        );
        assert_eq!(
            state("main", Role::Primary).incarnation("main"),
            Incarnation::Primary
        );
        assert_eq!(
            state("lan-1", Role::Monitor).incarnation("watch-1"),
            Incarnation::Monitor
        );
    }
}
