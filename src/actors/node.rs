//! Starting one incarnation of a node (the slot, `slot.rs`, owns what outlives it): open and
//! recover its storage, start its actor.
//!
//! Recovery (data nodes): the log is opened and checked (a torn tail is cut with a WARN), then
//! every record past the LSN that SQLite says it applied is applied again. Only then does the
//! node serve anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::{Actor, Addr};
use tokio::sync::{mpsc, watch};

use crate::actors::committer::{Committer, Job, WRITE_QUEUE_CAPACITY};
use crate::actors::messages::ConfigChanged;
use crate::actors::monitor::MonitorActor;
use crate::actors::primary::PrimaryActor;
use crate::actors::slot::NodeSlot;
use crate::actors::spare::SpareActor;
use crate::actors::sync_tracker::SyncTracker;
use crate::actors::voter::VoterCell;
use crate::config::{ClusterConfig, ConfigCell, NodeConfig, Role};
use crate::error::{Error, PrimaryRef, Result};
use crate::events::EventLog;
use crate::log::{self, LogWriter, Position, RecordKind};
use crate::net::handshake::Identity;
use crate::state::{Incarnation, NodeState};
use crate::store::apply::Applier;
use crate::store::exec::Executor;
use crate::store::query::ReaderPool;
use crate::store::{self, ConnKind};

/// Records replayed per SQLite transaction during recovery.
pub const REPLAY_BATCH_RECORDS: u64 = 1000;
/// Bytes of records read per replayed batch (at least one record): what recovery holds in
/// memory, whatever the backlog.
pub const REPLAY_BATCH_BYTES: usize = 8 * 1024 * 1024;

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
    pub lease: std::sync::OnceLock<Arc<crate::actors::lease::LeaseGuard>>,
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
        spare: Arc<crate::actors::spare::SpareShared>,
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

/// Where clients reach `node`'s HTTP API.
pub fn primary_ref(config: &ClusterConfig) -> PrimaryRef {
    let p = config.primary();
    PrimaryRef {
        name: p.name.clone(),
        http: p.http_advertise.clone(),
    }
}

/// Starts a monitor's actor (its voter and listeners are the slot's).
pub fn start_monitor(slot: &NodeSlot, node: &NodeConfig) -> NodeAddr {
    NodeAddr::Monitor {
        actor: MonitorActor::new(slot.cell.clone(), node.clone(), slot.events.clone()).start(),
        events: slot.events.clone(),
    }
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

/// Takes the data directory's lock (`LOCK`, an exclusive `flock`), held while the returned
/// file is open: a second process on the same directory would replay and cut the first
/// one's log under it.
pub(crate) fn lock_data_dir(config: &ClusterConfig, node: &NodeConfig) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = node.data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    // SAFETY: flock(2) on a descriptor we own, with valid flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::Config(format!(
            "{}: node \"{}\": field \"data_dir\": {} is in use by another running spare process; stop it first (one process per data directory)",
            config.path.display(),
            node.name,
            node.data_dir.display()
        )));
    }
    Ok(file)
}

/// Opens the log and the database and replays the log past SQLite's applied LSN. A seed
/// whose installation a crash cut short is finished first.
pub fn recover(data_dir: &Path, segment_bytes: u64) -> Result<(LogWriter, Applier)> {
    recover_gated(
        data_dir,
        segment_bytes,
        crate::core::apply_gate::Gate::default(),
    )
}

/// Like [`recover`], replaying only what `gate` lets a spare apply now (paused: nothing;
/// delayed: what is due), so a restart does not apply what the operator held back.
pub fn recover_gated(
    data_dir: &Path,
    segment_bytes: u64,
    gate: crate::core::apply_gate::Gate,
) -> Result<(LogWriter, Applier)> {
    let seed = crate::store::snapshot::SeedDir::new(data_dir);
    if let Some(info) = seed.marker()? {
        tracing::warn!(
            lsn = info.position.lsn,
            "finishing the installation of a seed that a crash interrupted"
        );
        finish_install(data_dir, &info)?;
    }
    let mut applier = Applier::new(store::open(
        &data_dir.join(store::DB_FILE),
        ConnKind::Applier,
    )?)?;
    let now = crate::clock::wall_ms();
    let opened = log::open_with(&data_dir.join("log"), applier.applied().0, |r| {
        !gate.paused && gate.due(&[r.time_ms], now) == 1
    })?;
    if let Some(torn) = &opened.torn {
        tracing::warn!(%torn, "cut a torn record at the end of the log (a write cut short by a crash; it was never acknowledged)");
    }
    replay(&data_dir.join("log"), &opened, &mut applier)?;
    let mut writer = opened.writer;
    writer.set_segment_target_bytes(segment_bytes);
    Ok((writer, applier))
}

/// Applies the records recovery named, read from the log in bounded batches: a spare
/// restarted with a large backlog holds one batch in memory, not the backlog.
fn replay(log_dir: &Path, opened: &log::Opened, applier: &mut Applier) -> Result<()> {
    if opened.replay_count() == 0 {
        return Ok(());
    }
    tracing::info!(
        records = opened.replay_count(),
        from = opened.replay_after + 1,
        "replaying the log into the database"
    );
    let mut reader = log::LogReader::new(log_dir);
    let mut next = opened.replay_after + 1;
    while next <= opened.replay_to {
        let to = opened.replay_to.min(next + REPLAY_BATCH_RECORDS - 1);
        let batch = reader.read(next, to, REPLAY_BATCH_BYTES)?;
        applier.apply(&batch)?;
        next = batch.last().expect("a read returns a record at least").lsn + 1;
    }
    Ok(())
}

/// Puts a verified seed in place: the snapshot becomes the database, and the log restarts
/// right after the snapshot's last record. Every step can be redone after a crash.
pub fn finish_install(data_dir: &Path, info: &crate::store::snapshot::SnapshotInfo) -> Result<()> {
    let seed = crate::store::snapshot::SeedDir::new(data_dir);
    seed.replace_db(&data_dir.join(store::DB_FILE))?;
    let log_dir = data_dir.join("log");
    match std::fs::remove_dir_all(&log_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("remove {}", log_dir.display()))(e))
        }
        _ => {}
    }
    std::fs::create_dir_all(&log_dir)
        .map_err(Error::io(format!("create {}", log_dir.display())))?;
    crate::log::base::save(&log_dir, &info.position)?;
    seed.clear_marker()
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
/// logs an epoch record for its epoch if its log ends in an older one.
pub fn start_data_node(slot: &NodeSlot, node: NodeConfig, want: Incarnation) -> Result<NodeAddr> {
    let cell = slot.cell.clone();
    let config = cell.get();
    let state = slot.voter.state();
    let segment_bytes = crate::log::retention::segment_bytes_for(config.cluster.retention_bytes);
    if let (Incarnation::Primary, Some(until)) = (want, state.truncate_after) {
        cut_history_after(&node, until)?;
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
    let (log, applier) = recover_gated(&node.data_dir, segment_bytes, gate)?;
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
    slot.set_role(Role::Primary)?;
    crate::actors::spare::clear_paused(&node.data_dir)?;
    start_primary(shared, log, applied_tx, state.epoch)
}

/// A promotion `--until`: keeps the records after `until` in quarantine (readable), then
/// cuts the log there, before this node starts its history as the primary.
fn cut_history_after(node: &NodeConfig, until: u64) -> Result<()> {
    let log_dir = node.data_dir.join("log");
    let tail = log::open_with(&log_dir, until, |_| false)?
        .writer
        .tail()
        .lsn;
    if tail <= until {
        return Ok(());
    }
    let dir = crate::store::quarantine::save(
        &log_dir,
        until,
        tail,
        &node.data_dir.join("quarantine"),
        &format!(
            "promoted up to LSN {until}: the records after it are not part of the new history"
        ),
        None,
    )?;
    crate::log::truncate_after(&log_dir, until)?;
    tracing::warn!(until, discarded_to = tail, folder = %dir.display(), "cut the log after the chosen LSN; the rest is kept in quarantine");
    Ok(())
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
    let guard = Arc::new(crate::actors::lease::LeaseGuard::new(epoch, members));
    let _ = primary.lease.set(guard.clone());
    crate::actors::lease::start(shared.clone(), guard.clone(), epoch);
    let committer = Committer::new(executor, log, epoch, committed.clone())
        .with_retention(shared.clone(), primary.clone())
        .with_lease(guard);
    std::thread::Builder::new()
        .name(format!("{}-committer", node.name))
        .spawn(move || committer.run(jobs))
        .map_err(Error::io("start the write thread"))?;
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
