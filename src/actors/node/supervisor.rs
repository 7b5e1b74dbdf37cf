//! The process's supervisor: starts the nodes this process runs (`spare up`: every node of
//! the file; `spare run`: one) and carries out reloads (`spare reload`, `POST
//! /v1/admin/reload`, SIGHUP): re-read the file, refuse it whole if it is invalid or asks
//! for what only a restart can do, else publish it, start and stop local nodes to match,
//! and tell every remaining node (the primary adds, changes or removes feeders).
//!
//! It also carries out role changes (DESIGN.md §7): when a node's state calls for another
//! role (promoted, fenced, rejoined), it stops the node's incarnation and starts the new
//! one, one change at a time per node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult, WrapFuture,
};

use crate::actors::messages::{ConfigChanged, Reload, ReloadReport, RoleCheck, Supervisor};
use crate::actors::node::slot::NodeSlot;
use crate::config::{ClusterConfig, ConfigCell, NodeConfig, Role};
use crate::error::{Error, Result};
use crate::net::tls::{TlsHandle, TlsMaterial};

/// Which nodes of the file this process runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Every node (`spare up`).
    All,
    /// One node (`spare run --node NAME`).
    One(String),
}

/// Starts the nodes of the mode (once, at start).
#[derive(Message)]
#[rtype(result = "Result<Vec<String>>")]
pub struct StartNodes;

/// Asks for a node slot of this process (the HTTP API's admin routes).
#[derive(Message)]
#[rtype(result = "Option<Arc<NodeSlot>>")]
pub struct GetSlot {
    /// The node's name.
    pub node: String,
}

pub struct SupervisorActor {
    cell: Arc<ConfigCell>,
    mode: Mode,
    running: BTreeMap<String, Arc<NodeSlot>>,
    /// Nodes whose role is being changed.
    changing: BTreeSet<String>,
}

impl SupervisorActor {
    pub fn new(cell: Arc<ConfigCell>, mode: Mode) -> Self {
        SupervisorActor {
            cell,
            mode,
            running: BTreeMap::new(),
            changing: BTreeSet::new(),
        }
    }

    fn wanted(&self, config: &ClusterConfig) -> Vec<String> {
        match &self.mode {
            Mode::All => {
                // Spares first, so the primary finds them listening.
                let mut names: Vec<&NodeConfig> = config.nodes.iter().collect();
                names.sort_by_key(|n| match n.role {
                    Role::Spare => 0,
                    Role::Primary => 1,
                    Role::Monitor => 2,
                });
                names.into_iter().map(|n| n.name.clone()).collect()
            }
            Mode::One(name) => vec![name.clone()],
        }
    }

    fn start_node(&mut self, name: &str, ctx: &mut Context<Self>) -> Result<()> {
        let (cell, me) = (self.cell.clone(), ctx.address());
        let handle = Supervisor {
            reload: me.clone().recipient(),
            role_check: me.clone().recipient(),
        };
        let slot = NodeSlot::open(cell.clone(), name, me.recipient(), |slot| {
            let node = slot.node()?;
            crate::http::serve(cell, node, slot, handle)
        })?;
        self.running.insert(name.to_string(), slot);
        Ok(())
    }

    /// Refuses to delete a node that votes in the running epoch: the primary still counts it
    /// and any promotion needs a majority of those voters, but nobody could reach it any
    /// more (its address is gone). Taking it out of the vote first (`vote = false`), then a
    /// switchover, makes it removable.
    fn check_epoch_voters_kept(&self, new: &ClusterConfig) -> Result<()> {
        let known = self
            .running
            .values()
            .map(|s| s.voter.state())
            .filter_map(|s| s.members.map(|m| (s.epoch, m)))
            .max_by_key(|(e, _)| *e);
        let Some((epoch, members)) = known else {
            return Ok(());
        };
        let gone: Vec<&str> = members
            .voters
            .iter()
            .filter(|v| new.node(v).is_err())
            .map(String::as_str)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{}: {} vote(s) in the running epoch {epoch} (voters {}); deleting a voter leaves the primary and every promotion counting a node nobody can reach. Set vote = false on it and reload, run `spare switchover` so the new voters take effect, then delete it; nothing was changed",
            new.path.display(),
            gone.join(", "),
            members.voters.join(", ")
        )))
    }

    /// Starts `names`; if one cannot start, stops those it started and says why.
    fn start_nodes(&mut self, names: &[String], ctx: &mut Context<Self>) -> Result<()> {
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = self.start_node(name, ctx) {
                for started in &names[..i] {
                    if let Some(n) = self.running.remove(started) {
                        actix_rt::spawn(async move { n.shut_down().await });
                    }
                }
                return Err(Error::Config(format!(
                    "node {name} cannot start, so nothing of the new configuration was applied: {e}"
                )));
            }
        }
        Ok(())
    }

    fn reload(&mut self, ctx: &mut Context<Self>) -> Result<ReloadReport> {
        let old = self.cell.file();
        let new = ClusterConfig::load(&old.path)?;
        check_compatible(&old, &new, &self.mode, self.running.keys())?;
        self.check_epoch_voters_kept(&new)?;
        // Renewed certificates (or a CA added for an overlap) are read before anything
        // changes: a file that does not load refuses the whole reload.
        let tls = self.read_tls_again()?;
        let report = diff(&old, &new);
        let wanted = self.wanted(&new);
        // The new nodes start first (they read the new configuration), and only once they
        // all started does anything else learn of it: a node that cannot start (no TLS
        // certificate yet, a port taken) leaves the running configuration as it was.
        self.cell.set(new);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|n| !self.running.contains_key(*n))
            .cloned()
            .collect();
        if let Err(e) = self.start_nodes(&missing, ctx) {
            self.cell.set(ClusterConfig::clone(&old));
            return Err(e);
        }
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(n) = self.running.remove(&name) {
                tracing::info!(node = %name, "stopping: removed from the configuration");
                actix_rt::spawn(async move { n.shut_down().await });
            }
        }
        for (name, n) in &self.running {
            if missing.contains(name) {
                continue;
            }
            if let Ok(addr) = n.addr() {
                addr.notify(ConfigChanged);
            }
        }
        for (handle, material) in tls {
            handle.install(material);
        }
        tracing::info!(added = ?report.added, removed = ?report.removed, changed = ?report.changed, "configuration reloaded");
        Ok(report)
    }

    /// Every running node's TLS material, read again from `tls_dir` (not used yet).
    fn read_tls_again(&self) -> Result<Vec<(Arc<TlsHandle>, TlsMaterial)>> {
        let mut out = Vec::new();
        for slot in self.running.values() {
            if let Some(handle) = &slot.identity.tls {
                let material = handle.read_again().map_err(|e| {
                    Error::Config(format!(
                        "reading the TLS material again: {e}; nothing was changed"
                    ))
                })?;
                out.push((handle.clone(), material));
            }
        }
        Ok(out)
    }
}

/// Refuses changes that only a restart (or a promotion) can make.
fn check_compatible<'a>(
    old: &ClusterConfig,
    new: &ClusterConfig,
    mode: &Mode,
    running: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::Config(format!(
            "{}: {what}; nothing was changed",
            new.path.display()
        )))
    };
    if old.cluster.name != new.cluster.name
        || old.cluster.secret_file != new.cluster.secret_file
        || old.cluster.tls_dir != new.cluster.tls_dir
    {
        return refuse("the cluster's name, secret_file or tls_dir changed, which needs a restart of every node".into());
    }
    if old.primary().name != new.primary().name {
        return refuse(format!(
            "the initial primary changed from {} to {}: roles change by promotion (spare promote), not by a reload",
            old.primary().name,
            new.primary().name
        ));
    }
    if let Mode::One(name) = mode {
        if new.node(name).is_err() {
            return refuse(format!(
                "this node ({name}) is no longer in the configuration: stop it instead"
            ));
        }
    }
    for name in running {
        let (Ok(a), Ok(b)) = (old.node(name), new.node(name)) else {
            continue;
        };
        if a.role != b.role || a.peer != b.peer || a.http != b.http || a.data_dir != b.data_dir {
            return refuse(format!("node \"{name}\": role, peer, http or data_dir changed, which needs a restart of that node"));
        }
    }
    Ok(())
}

fn diff(old: &ClusterConfig, new: &ClusterConfig) -> ReloadReport {
    let names = |c: &ClusterConfig| c.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    let (before, after) = (names(old), names(new));
    ReloadReport {
        added: after
            .iter()
            .filter(|n| !before.contains(n))
            .cloned()
            .collect(),
        removed: before
            .iter()
            .filter(|n| !after.contains(n))
            .cloned()
            .collect(),
        changed: new
            .spares()
            .filter(|s| old.node(&s.name).is_ok_and(|o| o != *s))
            .map(|s| s.name.clone())
            .collect(),
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;
}

impl Handler<StartNodes> for SupervisorActor {
    type Result = MessageResult<StartNodes>;

    /// Starts the nodes of the mode; stops at the first that cannot start.
    fn handle(&mut self, _: StartNodes, ctx: &mut Context<Self>) -> MessageResult<StartNodes> {
        let wanted = self.wanted(&self.cell.get());
        let result = wanted
            .iter()
            .try_for_each(|name| {
                self.start_node(name, ctx)
                    .map_err(|e| Error::Config(format!("starting node {name}: {e}")))
            })
            .map(|()| wanted);
        MessageResult(result)
    }
}

impl Handler<Reload> for SupervisorActor {
    type Result = MessageResult<Reload>;

    /// Re-reads the file and applies it, or changes nothing and says why.
    fn handle(&mut self, _: Reload, ctx: &mut Context<Self>) -> MessageResult<Reload> {
        let result = self.reload(ctx);
        if let Err(e) = &result {
            tracing::warn!(cause = %e, "reload refused; the running configuration is unchanged");
        }
        MessageResult(result)
    }
}

impl Handler<RoleCheck> for SupervisorActor {
    type Result = ();

    /// Stops the node's incarnation and starts the one its state calls for; checks again
    /// afterwards (the state may have changed meanwhile).
    fn handle(&mut self, msg: RoleCheck, ctx: &mut Context<Self>) {
        let Some(slot) = self.running.get(&msg.node).cloned() else {
            return;
        };
        if self.changing.contains(&msg.node) || slot.running() == Some(slot.wanted()) {
            return;
        }
        let (from, to) = (slot.running(), slot.wanted());
        tracing::warn!(node = %msg.node, from = from.map_or("stopped", |r| r.as_str()), to = to.as_str(), "changing role");
        self.changing.insert(msg.node.clone());
        let stopping = slot.clone();
        ctx.spawn(
            async move { stopping.stop_incarnation().await }
                .into_actor(self)
                .map(move |(), act, ctx| {
                    act.changing.remove(&msg.node);
                    if slot.is_shut() {
                        tracing::info!(node = %msg.node, "not starting a new role: the node left the configuration");
                        return;
                    }
                    if let Err(e) = slot.start_incarnation() {
                        tracing::error!(node = %msg.node, cause = %e, "cannot start the node in its new role; restart the process");
                        return;
                    }
                    slot.events.record(
                        "role_changed",
                        None,
                        &format!("{} is now {}", msg.node, to.as_str()),
                    );
                    ctx.notify(RoleCheck { node: msg.node });
                }),
        );
    }
}

impl Handler<GetSlot> for SupervisorActor {
    type Result = Option<Arc<NodeSlot>>;

    fn handle(&mut self, msg: GetSlot, _: &mut Context<Self>) -> Option<Arc<NodeSlot>> {
        self.running.get(&msg.node).cloned()
    }
}

#[cfg(test)]
mod actor_tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A cluster file whose monitor listens on `ports`; `heartbeat` and the monitor's HTTP
    /// address vary between the reloads of the test.
    fn write_config(dir: &Path, heartbeat: &str, monitor_http: u16, monitor_peer: u16) {
        let text = format!(
            "[cluster]\nname = \"shop\"\nsecret_file = \"cluster.secret\"\nheartbeat = \"{heartbeat}\"\n\n[[node]]\nname = \"main\"\nrole = \"primary\"\npeer = \"127.0.0.1:7\"\nhttp = \"127.0.0.1:8\"\ndata_dir = \"data/main\"\n\n[[node]]\nname = \"lan-1\"\nrole = \"spare\"\npeer = \"127.0.0.1:9\"\nhttp = \"127.0.0.1:10\"\ndata_dir = \"data/lan-1\"\n\n[[node]]\nname = \"watch-1\"\nrole = \"monitor\"\npeer = \"127.0.0.1:{monitor_peer}\"\nhttp = \"127.0.0.1:{monitor_http}\"\n"
        );
        std::fs::write(dir.join("cluster.toml"), text).unwrap();
    }

    fn reload_error(result: Result<ReloadReport>) -> String {
        result.expect_err("the reload is refused").to_string()
    }

    #[test]
    fn the_supervisor_starts_its_node_takes_a_valid_reload_and_refuses_a_bad_one_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cluster.secret");
        std::fs::write(&secret, "a-secret-long-enough-for-the-cluster-0123456789").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (http, peer) = (free_port(), free_port());
        write_config(dir.path(), "200ms", http, peer);
        let path = dir.path().join("cluster.toml");
        let cell = Arc::new(ConfigCell::new(ClusterConfig::load(&path).unwrap()));
        let system = actix_rt::System::new();
        system.block_on(async {
            let mode = Mode::One("watch-1".into());
            let sup = SupervisorActor::new(cell.clone(), mode).start();
            assert_eq!(sup.send(StartNodes).await.unwrap().unwrap(), ["watch-1"]);
            let slot = sup
                .send(GetSlot {
                    node: "watch-1".into(),
                })
                .await
                .unwrap();
            let slot = slot.expect("the slot of the node it started");
            assert_eq!(slot.running().map(|r| r.as_str()), Some("monitor"));
            assert!(sup
                .send(GetSlot {
                    node: "main".into()
                })
                .await
                .unwrap()
                .is_none());

            write_config(dir.path(), "300ms", http, peer);
            let report = sup.send(Reload).await.unwrap().unwrap();
            assert!(report.added.is_empty() && report.removed.is_empty());
            assert_eq!(cell.get().cluster.heartbeat, Duration::from_millis(300));

            write_config(dir.path(), "400ms", free_port(), peer);
            let e = reload_error(sup.send(Reload).await.unwrap());
            assert!(e.contains("needs a restart of that node"), "{e}");
            std::fs::write(&path, "[cluster]\nname = ").unwrap();
            assert!(sup.send(Reload).await.unwrap().is_err(), "a broken file");
            assert_eq!(
                cell.get().cluster.heartbeat,
                Duration::from_millis(300),
                "a refused reload changes nothing"
            );
            sup.send(RoleCheck {
                node: "nobody".into(),
            })
            .await
            .unwrap();
            assert_eq!(slot.running().map(|r| r.as_str()), Some("monitor"));
            slot.shut_down().await;
        });
    }
}
