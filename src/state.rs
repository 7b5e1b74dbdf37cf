//! `data/<node>/node.state`: what a data node must remember about the cluster across
//! restarts (epoch, promised epoch, known primary, role). Replaced atomically: written to a
//! temporary file, fsynced, renamed over the old one, directory fsynced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::error::{Error, Result};
use crate::log::segment::sync_dir;

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
        let p = path(data_dir);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::InvalidData(format!("{} is unreadable: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", p.display()))(e)),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<()> {
        assert!(
            self.promised_epoch >= self.epoch,
            "a node never promises less than the epoch it follows"
        );
        let p = path(data_dir);
        let tmp = data_dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)
        };
        write().map_err(Error::io(format!("write {}", p.display())))?;
        sync_dir(data_dir)
    }
}
