//! A node of this process across its role changes (DESIGN.md §7). The slot owns what must
//! outlive a role: the data directory's lock, the voter (one writer of `node.state`), the
//! events log, and both listeners (peer and HTTP), so that a spare promoted in place, or an
//! old primary fenced, keeps its addresses while the incarnation behind them is swapped.
//!
//! The role comes from `node.state`, never from the file once the node has run: the node
//! named primary of the newest epoch it knows is the primary; an old primary that learned of
//! a newer epoch is `fenced` until `spare rejoin`; other data nodes are spares
//! ([`NodeState::incarnation`](crate::state::NodeState::incarnation)). When the voter's epoch or primary changes, the slot learns it
//! (the process's configuration follows) and asks the supervisor to re-check the role.

use std::sync::{Arc, RwLock};

use actix::Recipient;

use crate::actors::messages::RoleCheck;
use crate::actors::node::addr::NodeAddr;
use crate::actors::node::places::{Crowded, HandshakeTurn, Places};
use crate::actors::node::voter::{serve_control_only, ControlOnly, VoterCell};
use crate::actors::node::{self, NodeBase};
use crate::actors::stop::Stopper;
use crate::config::{ConfigCell, NodeConfig, Role};
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::net::handshake::Identity;
use crate::state::Incarnation;

/// Pause after a failed `accept` (out of file descriptors, say) before the next one, so the
/// loop does not spin.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Where the peer listener sends an accepted connection.
#[derive(Clone)]
enum PeerTarget {
    /// A spare's links (streams from its primary, control requests).
    Spare(Arc<crate::actors::spare::SpareShared>),
    /// Control requests only; streams refused for this reason.
    ControlOnly(String),
}

/// One node of this process.
pub struct NodeSlot {
    pub name: String,
    pub cell: Arc<ConfigCell>,
    pub identity: Identity,
    pub voter: Arc<VoterCell>,
    pub events: Arc<EventLog>,
    /// The data directory's lock (`LOCK`), held while the process runs the node.
    pub lock: Arc<std::fs::File>,
    current: RwLock<Option<(Incarnation, NodeAddr)>>,
    /// Ends the running incarnation's parts (see `actors::stop`).
    stopper: std::sync::Mutex<Option<Stopper>>,
    /// Held while an incarnation stops: a second stop (the node removed by a reload during
    /// a role change) waits for the first.
    stopping: tokio::sync::Mutex<()>,
    /// Set once the node left the configuration: no incarnation starts any more.
    shut: std::sync::atomic::AtomicBool,
    peer: RwLock<PeerTarget>,
    supervisor: Recipient<RoleCheck>,
    /// The listeners' tasks and the HTTP server, stopped when the node leaves the file.
    peer_task: RwLock<Option<tokio::task::JoinHandle<()>>>,
    http: RwLock<Option<actix_web::dev::ServerHandle>>,
    /// Held while a promotion coordinated by this node runs (one at a time).
    pub promoting: tokio::sync::Mutex<()>,
}

impl NodeSlot {
    /// Opens node `name`: its data directory (locked), its state, its listeners; then starts
    /// the incarnation its state calls for. Must run inside the actix system. `serve_http`
    /// starts its HTTP API (the HTTP layer sits above the actors and is not imported here).
    pub fn open(
        cell: Arc<ConfigCell>,
        name: &str,
        supervisor: Recipient<RoleCheck>,
        serve_http: impl FnOnce(Arc<NodeSlot>) -> Result<actix_web::dev::ServerHandle>,
    ) -> Result<Arc<NodeSlot>> {
        let config = cell.get();
        let node = config.node(name)?.clone();
        node::prepare_data_dir(&config, &node)?;
        let lock = Arc::new(node::lock_data_dir(&config, &node)?);
        node::refuse_unfinished_restore(&config, &node)?;
        let state = node::load_state(&cell.file(), &node)?;
        cell.learn(state.epoch, &state.primary);
        let identity = Identity {
            cluster: config.cluster.name.clone(),
            name: node.name.clone(),
            secret: Arc::new(config.read_secret()?),
            tls: match &config.cluster.tls_dir {
                Some(dir) => Some(Arc::new(crate::net::tls::TlsHandle::load(dir, &node.name)?)),
                None => None,
            },
        };
        let listener = std::net::TcpListener::bind(node.peer)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                Error::Config(format!(
                    "node \"{}\": cannot listen on peer {}: {e} (is another process using it?)",
                    node.name, node.peer
                ))
            })?;
        let slot = Arc::new(NodeSlot {
            name: node.name.clone(),
            cell: cell.clone(),
            identity,
            voter: Arc::new(VoterCell::new(
                &node.name,
                state,
                node.data_dir.clone(),
                config.cluster.lease.as_millis() as u64,
            )),
            events: node::node_events(&config, &node)?,
            lock,
            current: RwLock::new(None),
            stopper: std::sync::Mutex::new(None),
            stopping: tokio::sync::Mutex::new(()),
            shut: std::sync::atomic::AtomicBool::new(false),
            peer: RwLock::new(PeerTarget::ControlOnly("starting".into())),
            supervisor: supervisor.clone(),
            peer_task: RwLock::new(None),
            http: RwLock::new(None),
            promoting: tokio::sync::Mutex::new(()),
        });
        slot.watch_voter();
        if let Err(e) = slot.serve(listener, serve_http) {
            slot.abandon();
            return Err(e);
        }
        if node.backup_dir.is_some() && node.role != Role::Monitor {
            actix_rt::spawn(run_backups(slot.clone()));
        }
        tracing::info!(node = %node.name, role = slot.role_name(), http = %node.http, peer = %node.peer, "node started");
        Ok(slot)
    }

    /// Starts the listeners and the incarnation of a node just opened.
    fn serve(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        serve_http: impl FnOnce(Arc<NodeSlot>) -> Result<actix_web::dev::ServerHandle>,
    ) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(Error::io("register the peer listener"))?;
        let task = actix_rt::spawn(accept_peers(self.clone(), listener));
        *self.peer_task.write().expect("lock") = Some(task);
        let http = serve_http(self.clone())?;
        *self.http.write().expect("lock") = Some(http);
        self.start_incarnation()
    }

    /// Undoes a start that failed half way (its HTTP port taken, say): the tasks that hold
    /// the node end, so its data directory's lock and its peer port are released and a
    /// later reload can start it. Without this a `spare up` process kept them until it
    /// stopped, and every retry was refused ("in use by another running spare process").
    fn abandon(self: &Arc<Self>) {
        if let Some(task) = self.peer_task.write().expect("lock").take() {
            task.abort();
        }
        let slot = self.clone();
        actix_rt::spawn(async move { slot.shut_down().await });
    }

    /// The voter's changes reach the process's configuration and the supervisor.
    fn watch_voter(self: &Arc<Self>) {
        let (cell, supervisor, name) = (
            self.cell.clone(),
            self.supervisor.clone(),
            self.name.clone(),
        );
        self.voter.on_change(Box::new(move |epoch, primary| {
            cell.learn(epoch, primary);
            supervisor.do_send(RoleCheck { node: name.clone() });
        }));
    }

    /// This node's configuration as of now.
    pub fn node(&self) -> Result<NodeConfig> {
        Ok(self.cell.get().node(&self.name)?.clone())
    }

    /// The incarnation `node.state` calls for.
    pub fn wanted(&self) -> Incarnation {
        self.voter.state().incarnation(&self.name)
    }

    /// The running incarnation, if any.
    pub fn running(&self) -> Option<Incarnation> {
        self.current.read().expect("lock").as_ref().map(|(i, _)| *i)
    }

    fn role_name(&self) -> &'static str {
        self.running().map_or("stopped", Incarnation::as_str)
    }

    /// The running incarnation, as the HTTP API reaches it.
    pub fn addr(&self) -> Result<NodeAddr> {
        self.current
            .read()
            .expect("lock")
            .as_ref()
            .map(|(_, a)| a.clone())
            .ok_or_else(|| {
                Error::Unavailable(format!("{} is changing role; retry in a moment", self.name))
            })
    }

    /// Starts the incarnation `node.state` calls for (none may be running).
    pub fn start_incarnation(self: &Arc<Self>) -> Result<()> {
        if self.shut.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Unavailable(format!(
                "{} left the configuration; it starts no role",
                self.name
            )));
        }
        let want = self.wanted();
        let node = self.node()?;
        let (addr, stopper) = match want {
            Incarnation::Monitor => node::start_monitor(&self.base(), &node),
            Incarnation::Primary | Incarnation::Spare | Incarnation::Fenced => {
                node::start_data_node(&self.base(), node.clone(), want)?
            }
        };
        let target = match (&addr, want) {
            (NodeAddr::Spare { spare, .. }, Incarnation::Spare) => PeerTarget::Spare(spare.clone()),
            (_, Incarnation::Fenced) => PeerTarget::ControlOnly(format!(
                "{} is fenced (an old primary that has not rejoined; run `spare rejoin {}`)",
                self.name, self.name
            )),
            (_, Incarnation::Primary) => {
                PeerTarget::ControlOnly(format!("{} is a primary", self.name))
            }
            _ => PeerTarget::ControlOnly(format!("{} is a monitor", self.name)),
        };
        *self.peer.write().expect("lock") = target;
        *self.current.write().expect("lock") = Some((want, addr));
        *self.stopper.lock().expect("lock") = Some(stopper);
        self.events.record(
            "node_started",
            None,
            &format!("{} started as {}", self.name, want.as_str()),
        );
        Ok(())
    }

    /// Stops the running incarnation and waits until every part of it ended: it released
    /// the log and the database.
    pub async fn stop_incarnation(&self) {
        let _one_at_a_time = self.stopping.lock().await;
        *self.peer.write().expect("lock") =
            PeerTarget::ControlOnly(format!("{} is changing role; retry in a moment", self.name));
        self.current.write().expect("lock").take();
        let stopper = self.stopper.lock().expect("lock").take();
        if let Some(stopper) = stopper {
            stopper.stop().await;
        }
    }

    /// Whether the node left the configuration (it starts no role any more).
    pub fn is_shut(&self) -> bool {
        self.shut.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops the node for good (it left the configuration): incarnation and listeners.
    pub async fn shut_down(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::Release);
        self.stop_incarnation().await;
        if let Some(task) = self.peer_task.write().expect("lock").take() {
            task.abort();
        }
        let http = self.http.write().expect("lock").take();
        if let Some(http) = http {
            http.stop(true).await;
        }
    }

    /// Records the role this node takes from now on (`primary` once promoted, `spare` once
    /// rejoined) in `node.state`.
    /// What the roles it starts are given.
    fn base(&self) -> NodeBase {
        NodeBase {
            cell: self.cell.clone(),
            identity: self.identity.clone(),
            voter: self.voter.clone(),
            events: self.events.clone(),
            lock: self.lock.clone(),
        }
    }

    pub fn set_role(&self, role: Role) -> Result<()> {
        self.voter.set_role(role)
    }
}

/// Scheduled backups (`backup_dir`, `backup_every`) for the node's life: the task ends with
/// the process.
async fn run_backups(slot: Arc<NodeSlot>) {
    loop {
        let Ok(node) = slot.node() else { return };
        let (Some(dir), every) = (node.backup_dir.clone(), node.backup_every) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Ok(NodeAddr::Primary { shared, .. } | NodeAddr::Spare { shared, .. }) = slot.addr()
        else {
            continue;
        };
        let cluster = slot.cell.get().cluster.name.clone();
        let keep = (node.backup_keep_daily, node.backup_keep_monthly);
        let result = tokio::task::spawn_blocking(move || {
            crate::actors::node::backups::take_scheduled(&shared, &dir, &cluster, keep)
        })
        .await;
        crate::actors::node::backups::report(&slot.events, result);
    }
}

/// Accepts peer connections for the node's whole life and hands each to the incarnation
/// running when it arrives.
async fn accept_peers(slot: Arc<NodeSlot>, listener: tokio::net::TcpListener) {
    let places = Places::default();
    let mut crowded = Crowded::default();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(cause = %e, "accepting a peer connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // Strangers cannot hold more than a bounded number of unauthenticated connections
        // (each for at most the TLS and secret handshake timeouts), nor one host them all.
        let Some(turn) = places.take(from.ip()) else {
            crowded.dropped(from);
            continue;
        };
        let slot = slot.clone();
        actix_rt::spawn(serve_peer(slot, stream, from, turn));
    }
}

/// One accepted peer connection: TLS (when set), then the running incarnation's handshake
/// and service; `turn` is given back once the peer is authenticated.
async fn serve_peer(
    slot: Arc<NodeSlot>,
    stream: tokio::net::TcpStream,
    from: std::net::SocketAddr,
    turn: HandshakeTurn,
) {
    let allow = slot.node().map(|n| n.allow_from).unwrap_or_default();
    let stream = match crate::net::stream::accept(&slot.identity, stream, from, &allow).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%from, cause = %e, "refused a peer connection");
            return;
        }
    };
    let target = slot.peer.read().expect("lock").clone();
    let service = async {
        match target {
            PeerTarget::Spare(shared) => {
                crate::actors::spare::link::serve(shared, stream, from, turn).await
            }
            PeerTarget::ControlOnly(why) => {
                let serving = ControlOnly {
                    me: slot.identity.clone(),
                    voter: slot.voter.clone(),
                    cell: slot.cell.clone(),
                    why,
                };
                serve_control_only(stream, from, serving, turn).await
            }
        }
    };
    // A reload that takes the source out of `allow_from` cuts the link it already had.
    tokio::select! {
        () = service => {}
        () = disallowed(&slot, from) => {
            tracing::warn!(%from, "closed a peer connection: its source left this node's allow_from");
        }
    }
}

/// How often an open peer connection's source is checked against `allow_from`.
const ALLOW_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Returns once `from` is no longer allowed by this node's (reloaded) `allow_from`.
async fn disallowed(slot: &NodeSlot, from: std::net::SocketAddr) {
    loop {
        tokio::time::sleep(ALLOW_RECHECK).await;
        let allow = slot.node().map(|n| n.allow_from).unwrap_or_default();
        if !allow.is_empty() && !allow.iter().any(|n| n.contains(&from.ip())) {
            return;
        }
    }
}
