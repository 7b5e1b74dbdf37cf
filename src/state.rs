//! `data/<node>/node.state`: what a data node must remember about the cluster across
//! restarts (epoch, promised epoch, known primary, role). Replaced atomically: written to a
//! temporary file, fsynced, renamed over the old one, directory fsynced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Role;
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
