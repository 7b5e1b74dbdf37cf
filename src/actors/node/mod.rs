//! Starting one incarnation of a node (the slot, `slot.rs`, owns what outlives it): open and
//! recover its storage, start its actor.
//!
//! Recovery (data nodes): the log is opened and checked (a torn tail is cut with a WARN), then
//! every record past the LSN that SQLite says it applied is applied again. Only then does the
//! node serve anything.

pub mod addr;
pub mod backups;
pub mod coordinator;
pub mod places;
pub mod slot;
pub mod supervisor;
pub mod survey;
pub mod voter;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::Actor;
use tokio::sync::{mpsc, watch};

use crate::actors::monitor::MonitorActor;
use crate::actors::node::addr::NodeAddr;
use crate::actors::node::voter::VoterCell;
use crate::actors::primary::committer::{Committer, WRITE_QUEUE_CAPACITY};
use crate::actors::primary::lease_guard::LeaseGuard;
use crate::actors::primary::PrimaryActor;
use crate::actors::shared::{DataShared, PrimaryShared};
use crate::actors::spare::SpareActor;
use crate::actors::stop::{Running, Stop, Stopper};
use crate::config::{ClusterConfig, ConfigCell, NodeConfig, Role};
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::log::{LogWriter, Position, RecordKind};
use crate::net::handshake::Identity;
use crate::state::{Incarnation, NodeState};
use crate::store::exec::Executor;
use crate::store::query::ReaderPool;
use crate::store::{self, ConnKind};

/// What a node keeps across its incarnations (the slot's), handed to each role it starts.
pub struct NodeBase {
    pub cell: Arc<ConfigCell>,
    pub identity: Identity,
    pub voter: Arc<VoterCell>,
    pub events: Arc<EventLog>,
    /// The data directory's lock, held as long as the node runs.
    pub lock: Arc<std::fs::File>,
}

/// Starts a monitor's actor (its voter and listeners are the slot's).
pub fn start_monitor(slot: &NodeBase, node: &NodeConfig) -> (NodeAddr, Stopper) {
    let (stopper, stop) = Stopper::new(format!("{} as monitor", node.name));
    let actor = MonitorActor::new(slot.cell.clone(), node.clone(), slot.events.clone(), stop);
    let addr = NodeAddr::Monitor {
        actor: actor.start(),
        events: slot.events.clone(),
    };
    (addr, stopper)
}

/// The node's events log, in its data directory (created if needed).
pub(crate) fn node_events(config: &ClusterConfig, node: &NodeConfig) -> Result<Arc<EventLog>> {
    prepare_data_dir(config, node)?;
    Ok(Arc::new(EventLog::new(
        &node.name,
        Some(node.data_dir.join("events.jsonl")),
        config.cluster.notify_command.clone(),
    )))
}

pub(crate) fn prepare_data_dir(config: &ClusterConfig, node: &NodeConfig) -> Result<()> {
    std::fs::create_dir_all(&node.data_dir).map_err(|e| {
        Error::Config(format!(
            "{}: node \"{}\": field \"data_dir\": cannot create {}: {e}",
            config.path.display(),
            node.name,
            node.data_dir.display()
        ))
    })?;
    let probe = node.data_dir.join(".write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            Error::Config(format!(
                "{}: node \"{}\": field \"data_dir\": {} is not writable: {e}",
                config.path.display(),
                node.name,
                node.data_dir.display()
            ))
        })
}

/// Refuses a data directory that holds an unfinished `spare restore` (checked under the
/// directory's lock, which a restore holds while it works).
pub(crate) fn refuse_unfinished_restore(config: &ClusterConfig, node: &NodeConfig) -> Result<()> {
    if node
        .data_dir
        .join(crate::store::backup::RESTORING_MARK)
        .exists()
    {
        return Err(Error::Config(format!(
            "{}: node \"{}\": field \"data_dir\": {} holds an unfinished `spare restore` (a {} file): move its contents away and run the restore again",
            config.path.display(),
            node.name,
            node.data_dir.display(),
            crate::store::backup::RESTORING_MARK
        )));
    }
    Ok(())
}

/// Takes the data directory's lock (`LOCK`, an exclusive `flock`), held while the returned
/// file is open: a second process on the same directory would replay and cut the first
/// one's log under it.
pub(crate) fn lock_data_dir(config: &ClusterConfig, node: &NodeConfig) -> Result<std::fs::File> {
    crate::durable::try_lock_dir(&node.data_dir)?.ok_or_else(|| {
        Error::Config(format!(
            "{}: node \"{}\": field \"data_dir\": {} is in use by another running spare process (a node, or a `spare restore` filling it); stop it first (one process per data directory)",
            config.path.display(),
            node.name,
            node.data_dir.display()
        ))
    })
}

pub(crate) fn load_state(config: &ClusterConfig, node: &NodeConfig) -> Result<NodeState> {
    if let Some(state) = NodeState::load(&node.data_dir)? {
        return Ok(state);
    }
    // A first start: the file's roles are the initial ones, epoch 1. Only the first primary
    // names epoch 1's voters: a node added later cannot know them from its own, newer file
    // (it learns them from the primary's lease requests or a commit; `core::members`).
    let first_primary = config.primary().name == node.name;
    let state = NodeState {
        epoch: 1,
        promised_epoch: 1,
        primary: config.primary().name.clone(),
        role: config.node(&node.name)?.role,
        promised_to: config.primary().name.clone(),
        truncate_after: None,
        members: first_primary.then(|| config.members()),
        pending: Vec::new(),
        max_lease_ms: 0,
    };
    state.save(&node.data_dir)?;
    Ok(state)
}

/// Opens and recovers a data node's storage and starts it as `want` (primary, spare or
/// fenced). A node becoming primary first applies every record it holds (recovery), then
/// logs an epoch record for its epoch if its log ends in an older one. The stopper ends
/// every part of what it started.
pub fn start_data_node(
    slot: &NodeBase,
    node: NodeConfig,
    want: Incarnation,
) -> Result<(NodeAddr, Stopper)> {
    let (stopper, stop) = Stopper::new(format!("{} as {}", node.name, want.as_str()));
    start_role(slot, node, want, stop).map(|addr| (addr, stopper))
}

fn start_role(
    slot: &NodeBase,
    node: NodeConfig,
    want: Incarnation,
    stop: Stop,
) -> Result<NodeAddr> {
    let cell = slot.cell.clone();
    let config = cell.get();
    let state = slot.voter.state();
    let segment_bytes = crate::log::retention::segment_bytes_for(config.cluster.retention_bytes);
    if let (Incarnation::Primary, Some(until)) = (want, state.truncate_after) {
        crate::store::recovery::cut_history_after(&node.data_dir, until)?;
        slot.voter.clear_truncate()?;
    }
    let gate = match want {
        Incarnation::Spare => crate::core::apply_gate::Gate {
            paused: crate::actors::spare::load_paused(&node.data_dir),
            delay_ms: node.apply_delay.as_millis() as u64,
            stop_at: None,
            cap: None,
        },
        _ => crate::core::apply_gate::Gate::default(),
    };
    let (log, applier) =
        crate::store::recovery::recover_gated(&node.data_dir, segment_bytes, gate)?;
    if let (Incarnation::Primary, Some(until)) = (want, state.truncate_after) {
        if applier.applied().0 > until {
            return Err(Error::InvalidData(format!(
                "promoted up to LSN {until}, but the database already holds LSN {}; restore this node from a backup or promote another spare",
                applier.applied().0
            )));
        }
    }
    let (applied_tx, applied_rx) = watch::channel(applier.applied().0);
    let shared = Arc::new(DataShared {
        cell,
        readers: ReaderPool::new(
            &node.data_dir.join(store::DB_FILE),
            config.cluster.limits.max_concurrent_reads,
        ),
        node: node.clone(),
        identity: slot.identity.clone(),
        applied: applied_rx,
        epoch: AtomicU64::new(state.epoch),
        base: std::sync::Mutex::new(
            crate::log::base::load(&node.data_dir.join("log"))?.unwrap_or_default(),
        ),
        events: slot.events.clone(),
        _lock: slot.lock.clone(),
        voter: slot.voter.clone(),
        stop,
    });
    if want != Incarnation::Primary {
        let fenced = want == Incarnation::Fenced;
        let actor = SpareActor::new(shared.clone(), log, applier, Arc::new(applied_tx), fenced);
        let spare = actor.shared();
        return Ok(NodeAddr::Spare {
            actor: actor.start(),
            shared,
            spare,
        });
    }
    drop(applier);
    slot.voter.set_role(Role::Primary)?;
    crate::actors::spare::clear_paused(&node.data_dir)?;
    start_primary(shared, log, applied_tx, state.epoch)
}

/// Starts the write path, the lease, the feeders and the primary's actor on a recovered log.
fn start_primary(
    shared: Arc<DataShared>,
    mut log: LogWriter,
    applied_tx: watch::Sender<u64>,
    epoch: u64,
) -> Result<NodeAddr> {
    let node = shared.node.clone();
    let config = shared.config();
    if log.tail().lsn == 0 || log.tail().epoch < epoch {
        // The first record of this primary's history: spares learn the epoch change from
        // it, and a diverged spare's records of the old epoch no longer match.
        let rec = log.append(
            epoch,
            crate::clock::wall_ms(),
            RecordKind::Epoch,
            node.name.clone().into_bytes(),
        )?;
        log.sync()?;
        tracing::info!(
            epoch,
            lsn = rec.lsn,
            "leading a new epoch: logged its epoch record"
        );
    }
    let durable = log.durable();
    let executor = Executor::new(store::open(
        &node.data_dir.join(store::DB_FILE),
        ConnKind::Writer,
    )?)?;
    let committed = Arc::new(watch::Sender::new(durable));
    let (writes, jobs) = mpsc::channel(WRITE_QUEUE_CAPACITY);
    let primary = Arc::new(PrimaryShared::default());
    primary.set_commit_rule(&config.cluster.commit);
    // The lease counts the epoch's membership, not the configuration's: a reload's new
    // voters or lease take effect at the next promotion (`core::members`). A state without
    // one (an older file) takes the configuration's; the own voter records it.
    let state = shared.voter.state();
    let members = match state.members {
        Some(m) if state.epoch == epoch => m,
        _ => {
            let m = config.members();
            shared.voter.learn_members(epoch, &m)?;
            m
        }
    };
    // Before anything starts that would need stopping if this failed.
    let committer = Committer::new(executor, log, epoch, committed.clone())
        .with_checkpointer(&format!("{}-checkpoint", node.name))?;
    let guard = Arc::new(LeaseGuard::new(epoch, members, shared.stop.clone()));
    let _ = primary.lease.set(guard.clone());
    crate::actors::primary::lease::start(shared.clone(), guard.clone(), epoch);
    let write_path = shared.stop.enlist().ok_or_else(|| {
        Error::Unavailable(format!("{} is stopping; retry in a moment", node.name))
    })?;
    let committer = committer
        .with_retention(shared.clone(), primary.clone())
        .with_lease(guard);
    let thread = std::thread::Builder::new()
        .name(format!("{}-committer", node.name))
        .spawn(move || committer.run(jobs))
        .map_err(Error::io("start the write thread"))?;
    stop_writes_on_signal(shared.stop.clone(), writes.clone(), write_path, thread);
    spawn_applied_mirror(committed.subscribe(), applied_tx);
    let actor = PrimaryActor::new(
        shared.clone(),
        primary.clone(),
        committed.subscribe(),
        writes.clone(),
    )
    .start();
    Ok(NodeAddr::Primary {
        actor,
        writes,
        shared,
        primary,
    })
}

/// The committer blocks on its queue, so it learns of the stop through it: on the signal,
/// a `Stop` job. The part counts as running until the thread ended, having closed the log
/// and the database (joined, not trusted to answer: a thread that stopped on a log error
/// answers before it dropped them).
fn stop_writes_on_signal(
    stop: Stop,
    writes: mpsc::Sender<crate::actors::primary::committer::Job>,
    running: Running,
    thread: std::thread::JoinHandle<()>,
) {
    actix_rt::spawn(async move {
        stop.stopped().await;
        let (ack, _answer) = std::sync::mpsc::channel();
        // Refused when the thread already ended (a log error): the join below still waits.
        let _ = writes
            .send(crate::actors::primary::committer::Job::Stop(ack))
            .await;
        // Bounded by the committer's lease wait and one group.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        drop(running);
    });
}

/// On a primary, what is committed is applied: mirror the committed LSN into `applied`.
fn spawn_applied_mirror(mut committed: watch::Receiver<Position>, applied: watch::Sender<u64>) {
    actix_rt::spawn(async move {
        loop {
            let lsn = committed.borrow_and_update().lsn;
            applied.send_replace(lsn);
            if committed.changed().await.is_err() {
                return;
            }
        }
    });
}
