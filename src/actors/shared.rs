//! What the parts of a data node share: the node's configuration, identity, readers and
//! positions (`DataShared`), and what only a primary's parts share (`PrimaryShared`). Each
//! field says who writes it; docs/architecture.md lists why each is shared rather than owned.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::watch;

use crate::actors::node::voter::VoterCell;
use crate::actors::primary::sync_tracker::SyncTracker;
use crate::actors::stop::Stop;
use crate::config::{ClusterConfig, ConfigCell, NodeConfig};
use crate::error::PrimaryRef;
use crate::events::EventLog;
use crate::log::Position;
use crate::net::handshake::Identity;
use crate::store::query::ReaderPool;

/// What every part of a data node shares.
pub struct DataShared {
    /// The process's configuration, replaced by reloads; read it with [`DataShared::config`].
    pub cell: Arc<ConfigCell>,
    pub node: NodeConfig,
    pub identity: Identity,
    pub readers: ReaderPool,
    /// Highest LSN applied to SQLite (committed, on a primary); queries with `min_lsn` wait on it.
    pub applied: watch::Receiver<u64>,
    /// Epoch this node follows or leads.
    pub epoch: AtomicU64,
    /// Position just before the oldest record the log still holds (LSN 0 when it holds
    /// everything); kept current by whoever owns the log writer.
    pub base: std::sync::Mutex<Position>,
    /// This node's events log.
    pub events: Arc<EventLog>,
    /// The data directory's lock, held as long as the node runs (the slot's).
    pub _lock: Arc<std::fs::File>,
    /// This node's voter (leases, promises), persisted in `node.state`.
    pub voter: Arc<VoterCell>,
    /// This incarnation's stop signal (`actors::stop`): its parts listen to it and enlist.
    pub stop: Stop,
}

/// What only a primary's parts share: feeders, the committer's retention, status.
#[derive(Default)]
pub struct PrimaryShared {
    /// Applied LSN of each spare, from its acknowledgements: segments every spare applied may go.
    pub spare_applied: dashmap::DashMap<String, u64>,
    /// Per seeding spare, the LSN above which the log must stay (its snapshot needs what follows).
    pub pins: dashmap::DashMap<String, u64>,
    /// Per seeding spare, the snapshot it is receiving (kept on disk until it is installed).
    pub seeding: dashmap::DashMap<String, String>,
    /// Commit latency as clients see it, for `/metrics`.
    pub latency: crate::http::metrics::LatencyHistogram,
    /// Transactions committed (Txn records) since this process started.
    pub commits: std::sync::atomic::AtomicU64,
    /// Offsets and commit times of the newest records, for lag in bytes and seconds.
    pub recent: std::sync::Mutex<crate::core::lag::RecentRecords>,
    /// The write lease (set once the primary starts).
    pub lease: std::sync::OnceLock<Arc<crate::actors::primary::lease_guard::LeaseGuard>>,
    /// The commit rule, when the configuration has one (None: `async`).
    pub sync: std::sync::RwLock<Option<Arc<SyncTracker>>>,
}

impl PrimaryShared {
    pub fn sync(&self) -> Option<Arc<SyncTracker>> {
        self.sync.read().expect("sync lock").clone()
    }

    /// Installs the configuration's commit rule (keeping what is known of its spares).
    pub fn set_commit_rule(&self, rule: &crate::config::CommitRule) {
        let mut sync = self.sync.write().expect("sync lock");
        match (rule, sync.as_ref()) {
            (crate::config::CommitRule::Async, _) => *sync = None,
            (crate::config::CommitRule::Any { any, of, deadline }, Some(t)) => {
                t.reconfigure(*any, of, *deadline)
            }
            (crate::config::CommitRule::Any { any, of, deadline }, None) => {
                *sync = Some(Arc::new(SyncTracker::new(
                    crate::core::commit_rule::CommitRule::new(*any, of),
                    *deadline,
                )));
            }
        }
    }
}

impl DataShared {
    /// The configuration as of now.
    pub fn config(&self) -> Arc<ClusterConfig> {
        self.cell.get()
    }

    /// The oldest LSN the log still holds.
    pub fn oldest_lsn(&self) -> u64 {
        self.base.lock().expect("base lock").lsn + 1
    }

    pub fn retention_budget(&self) -> crate::log::retention::Budget {
        crate::log::retention::Budget {
            bytes: self.config().cluster.retention_bytes,
            age: self.config().cluster.retention_age,
        }
    }
}

impl DataShared {
    pub fn log_dir(&self) -> PathBuf {
        self.node.data_dir.join("log")
    }
}

/// Where clients reach `node`'s HTTP API.
pub fn primary_ref(config: &ClusterConfig) -> PrimaryRef {
    let p = config.primary();
    PrimaryRef {
        name: p.name.clone(),
        http: p.http_advertise.clone(),
    }
}
