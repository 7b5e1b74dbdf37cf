//! What the actors' unit tests share: a data node's shared state on a temporary directory,
//! without listeners or a slot.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use crate::actors::node::voter::VoterCell;
use crate::actors::shared::DataShared;
use crate::actors::stop::Stopper;
use crate::config::ConfigCell;
use crate::events::EventLog;
use crate::log::Position;
use crate::net::handshake::Identity;
use crate::state::NodeState;
use crate::store::query::ReaderPool;

/// `name`'s shared state, its data in `dir`; the sender publishes its applied LSN, the
/// stopper ends the incarnation's parts.
pub fn data_shared(
    dir: &Path,
    cell: Arc<ConfigCell>,
    name: &str,
) -> (Arc<DataShared>, watch::Sender<u64>, Stopper) {
    let (stopper, stop) = Stopper::new(name);
    let config = cell.get();
    let node = config.node(name).unwrap().clone();
    let state = NodeState {
        epoch: 1,
        promised_epoch: 1,
        primary: "main".into(),
        role: node.role,
        promised_to: "main".into(),
        truncate_after: None,
        members: None,
        pending: Vec::new(),
        max_lease_ms: 0,
    };
    let (applied_tx, applied) = watch::channel(0);
    let shared = DataShared {
        cell: cell.clone(),
        readers: ReaderPool::new(&dir.join("db.sqlite"), 1),
        node,
        identity: Identity {
            cluster: "shop".into(),
            name: name.into(),
            secret: Arc::new(vec![7; 32]),
            tls: None,
        },
        applied,
        epoch: std::sync::atomic::AtomicU64::new(1),
        base: std::sync::Mutex::new(Position::default()),
        events: Arc::new(EventLog::new(name, None, None)),
        _lock: Arc::new(std::fs::File::create(dir.join("LOCK")).unwrap()),
        voter: Arc::new(VoterCell::new(name, state, dir.to_path_buf(), 4000)),
        stop,
    };
    (Arc::new(shared), applied_tx, stopper)
}

/// Stops the incarnation, failing the test if that takes over 10 s.
pub async fn stop_within_bound(stopper: Stopper) {
    tokio::time::timeout(std::time::Duration::from_secs(10), stopper.stop())
        .await
        .expect("the incarnation stops within 10 s");
}

/// Waits (at most 10 s) until `addr`'s actor stopped.
pub async fn wait_disconnected<A: actix::Actor>(addr: &actix::Addr<A>) {
    let started = std::time::Instant::now();
    while addr.connected() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the actor stops with its incarnation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
