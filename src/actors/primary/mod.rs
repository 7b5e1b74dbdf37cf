//! The primary's actor: starts one feeder per spare of the configuration, collects their
//! progress, and answers status. Writes do not go through it: they go straight to the
//! committer thread (see `committer`), so a busy status page never delays a commit.
//!
//! Restart: nothing here needs persisting; feeders re-learn each spare's position from its
//! handshake.

pub mod committer;
pub mod feeder;
pub mod feeder_seed;
pub mod feeder_stream;
pub mod lease;
pub mod lease_guard;
pub mod sync_tracker;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext, Context, Handler, MessageResult};
use tokio::sync::{mpsc, watch};

use crate::actors::messages::{ConfigChanged, GetStatus, LinkState, SpareProgress};
use crate::actors::primary::committer::Job;
use crate::actors::primary::feeder::{Feeder, StopFeeder};
use crate::actors::shared::{primary_ref, DataShared, PrimaryShared};
use crate::actors::MAILBOX_CAPACITY;
use crate::clock::wall_ms as now_ms;
use crate::config::NodeConfig;
use crate::core::lag;
use crate::log::Position;
use crate::status::{
    ConnectingSpare, LinkedSpare, NodeStatus, PendingMembership, PrimaryStatus, SeedProgress,
    SpareLink,
};

pub struct PrimaryActor {
    shared: Arc<DataShared>,
    primary: Arc<PrimaryShared>,
    committed: watch::Receiver<Position>,
    progress: BTreeMap<String, SpareProgress>,
    /// One feeder per spare, with the settings it was started with.
    feeders: BTreeMap<String, (NodeConfig, Addr<Feeder>)>,
    /// The write path, for heartbeat records.
    writes: mpsc::Sender<Job>,
    /// Held while the actor runs (`actors::stop`); feeders hold their own.
    _running: Option<crate::actors::stop::Running>,
}

impl PrimaryActor {
    pub fn new(
        shared: Arc<DataShared>,
        primary: Arc<PrimaryShared>,
        committed: watch::Receiver<Position>,
        writes: mpsc::Sender<Job>,
    ) -> Self {
        PrimaryActor {
            shared,
            primary,
            committed,
            progress: BTreeMap::new(),
            feeders: BTreeMap::new(),
            writes,
            _running: None,
        }
    }

    /// Asks for a heartbeat record when nothing was committed for a heartbeat period. If the
    /// write queue is full the primary is not idle: nothing to do.
    fn heartbeat(&mut self) {
        let idle_ms = now_ms().saturating_sub(self.committed.borrow().time_ms);
        if idle_ms >= self.shared.config().cluster.heartbeat.as_millis() as u64 {
            let _ = self.writes.try_send(Job::Heartbeat);
        }
    }

    fn start_feeder(&mut self, spare: &NodeConfig, me: Addr<PrimaryActor>) {
        let feeder = Feeder::new(
            spare.clone(),
            self.shared.clone(),
            self.primary.clone(),
            self.committed.clone(),
            me.recipient(),
        )
        .start();
        self.feeders
            .insert(spare.name.clone(), (spare.clone(), feeder));
    }

    /// This spare's lag as the primary sees it (DESIGN.md §6).
    pub fn spare_lag(&self, name: &str, tail: Position, now_ms: u64) -> Option<(String, lag::Lag)> {
        let p = self.progress.get(name)?;
        let ack_age = p.last_ack.map(|t| t.elapsed().as_secs_f64());
        let recent = self.primary.recent.lock().expect("recent lock");
        // The oldest record it misses, from memory, else from the feeder; at worst the newest
        // record's age, a lower bound.
        let oldest = recent
            .time_of(p.applied + 1)
            .or(p.oldest_unapplied_time_ms)
            .or(Some(tail.time_ms));
        let mut l = lag::compute(tail.lsn, p.applied, oldest, now_ms, ack_age);
        l.bytes = recent.bytes_after(p.applied, tail.lsn);
        let state = match p.state {
            LinkState::Streaming if p.held.is_some() => p.held.clone().unwrap_or_default(),
            LinkState::Streaming if l.seconds > lag::CATCHING_UP_AFTER_S => {
                "catching-up".to_string()
            }
            _ => p.state_text(),
        };
        Some((state, l))
    }

    fn spare_doc(&self, name: &str, tail: Position, now_ms: u64) -> SpareLink {
        let (Some(p), Some((state, lag))) =
            (self.progress.get(name), self.spare_lag(name, tail, now_ms))
        else {
            return SpareLink::Connecting(ConnectingSpare {
                name: name.to_string(),
                state: LinkState::Connecting.as_str().to_string(),
                lag: None,
            });
        };
        SpareLink::Linked(LinkedSpare {
            name: name.to_string(),
            state,
            received_lsn: p.received,
            flushed_lsn: p.flushed,
            applied_lsn: p.applied,
            in_flight_bytes: p.in_flight_bytes,
            seed: p.seed.map(|(bytes_done, bytes_total)| SeedProgress {
                bytes_done,
                bytes_total,
            }),
            lag,
            sync: self
                .primary
                .sync()
                .and_then(|t| t.state_of(name))
                .map(String::from),
            protocol: p.protocol,
        })
    }
}

impl Actor for PrimaryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self._running = crate::actors::stop::bind(&self.shared.stop, ctx);
        let me = ctx.address();
        let spares: Vec<NodeConfig> = self.shared.config().spares().cloned().collect();
        for spare in &spares {
            self.start_feeder(spare, me.clone());
        }
        let period = self.shared.config().cluster.heartbeat;
        ctx.run_interval(period, |act, _| act.heartbeat());
    }
}

impl Handler<SpareProgress> for PrimaryActor {
    type Result = ();

    /// Keeps the newest view of each spare for status.
    fn handle(&mut self, msg: SpareProgress, _: &mut Context<Self>) {
        self.progress.insert(msg.spare.clone(), msg);
    }
}

impl PrimaryActor {
    /// The configuration's voters and lease when they differ from the ones this epoch's
    /// lease counts: a reload changed them, and the change takes effect at the next
    /// promotion or switchover (`core::members`). Null when there is none.
    fn pending_membership(&self) -> Option<PendingMembership> {
        let lease = self.primary.lease.get()?;
        let wanted = self.shared.config().members();
        if &wanted == lease.members() {
            return None;
        }
        Some(PendingMembership {
            voters: wanted.voters,
            lease_ms: wanted.lease_ms,
            takes_effect: "at the next promotion or switchover; until then the voters and lease of this epoch decide everywhere".into(),
        })
    }
}

impl Handler<GetStatus> for PrimaryActor {
    type Result = MessageResult<GetStatus>;

    /// Builds `GET /v1/status` for the primary: its positions and every spare's lag.
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> MessageResult<GetStatus> {
        let tail = *self.committed.borrow();
        let now = now_ms();
        let spares: Vec<SpareLink> = self
            .shared
            .config()
            .spares()
            .map(|s| self.spare_doc(&s.name, tail, now))
            .collect();
        let node = &self.shared.node;
        let config = self.shared.config();
        MessageResult(NodeStatus::Primary(PrimaryStatus {
            name: node.name.clone(),
            state: "serving".into(),
            cluster: config.cluster.name.clone(),
            epoch: self.shared.epoch.load(Ordering::Relaxed),
            http: node.http_advertise.clone(),
            last_lsn: tail.lsn,
            oldest_lsn: self.shared.oldest_lsn(),
            commits_total: self.primary.commits.load(Ordering::Relaxed),
            lease: self.primary.lease.get().map(|l| l.describe()),
            pending_membership: self.pending_membership(),
            commit_rule: self
                .primary
                .sync()
                .map_or_else(|| "async".to_string(), |t| t.describe()),
            applied_lsn: tail.lsn,
            last_commit_time_ms: tail.time_ms,
            primary: primary_ref(&config),
            spares,
        }))
    }
}

impl Handler<ConfigChanged> for PrimaryActor {
    type Result = ();

    /// Adds, restarts (settings changed) or stops feeders to match the spares of the new
    /// configuration, and installs its commit rule. Untouched spares keep their links.
    fn handle(&mut self, _: ConfigChanged, ctx: &mut Context<Self>) {
        let config = self.shared.config();
        self.primary.set_commit_rule(&config.cluster.commit);
        let wanted: Vec<NodeConfig> = config.spares().cloned().collect();
        let stale: Vec<String> = self
            .feeders
            .iter()
            .filter(|(name, (cfg, _))| !wanted.iter().any(|w| w == cfg && &w.name == *name))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some((_, feeder)) = self.feeders.remove(&name) {
                feeder.do_send(StopFeeder);
            }
            if !wanted.iter().any(|w| w.name == name) {
                self.progress.remove(&name);
                self.primary.spare_applied.remove(&name);
                self.primary.pins.remove(&name);
                self.primary.seeding.remove(&name);
            }
        }
        let missing: Vec<NodeConfig> = wanted
            .iter()
            .filter(|w| !self.feeders.contains_key(&w.name))
            .cloned()
            .collect();
        for spare in &missing {
            tracing::info!(spare = %spare.name, "feeding spare (configuration reloaded)");
            self.start_feeder(spare, ctx.address());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::test_support::data_shared;
    use crate::config::{ClusterConfig, ConfigCell};

    /// A primary and its spares on low loopback ports, where nothing is expected to listen:
    /// the feeders keep redialling (or wait in a handshake), which this test does not need.
    fn config(spares: &[&str]) -> ClusterConfig {
        let mut text = String::from(
            "[cluster]\nname = \"shop\"\nsecret_file = \"cluster.secret\"\n\n[[node]]\nname = \"main\"\nrole = \"primary\"\npeer = \"127.0.0.1:7\"\nhttp = \"127.0.0.1:8\"\n",
        );
        for (i, s) in spares.iter().enumerate() {
            text += &format!(
                "\n[[node]]\nname = \"{s}\"\nrole = \"spare\"\npeer = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
                9 + 2 * i,
                10 + 2 * i
            );
        }
        ClusterConfig::parse(std::path::Path::new("conf/cluster.toml"), &text).unwrap()
    }

    fn spare_names(status: &NodeStatus) -> Vec<String> {
        let p = status.primary().expect("a primary's status");
        p.spares.iter().map(|s| s.name().to_string()).collect()
    }

    #[test]
    fn the_primary_reports_every_configured_spare_and_drops_one_a_reload_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cell = Arc::new(ConfigCell::new(config(&["lan-1", "lan-2"])));
        let (data, _applied, stopper) = data_shared(dir.path(), cell.clone(), "main");
        let (_committed_tx, committed) = watch::channel(Position::default());
        let (writes, _jobs) = mpsc::channel(16);
        let system = actix_rt::System::new();
        system.block_on(async {
            let primary = Arc::new(PrimaryShared::default());
            let addr = PrimaryActor::new(data, primary.clone(), committed, writes).start();
            let status = addr.send(GetStatus).await.unwrap();
            assert_eq!(status.role().as_str(), "primary");
            assert_eq!(spare_names(&status), ["lan-1", "lan-2"]);
            let p = status.primary().unwrap();
            assert_eq!((p.commit_rule.as_str(), p.lease.is_none()), ("async", true));
            for s in &p.spares {
                assert!(
                    ["connecting", "disconnected"].contains(&s.state()),
                    "a spare nobody reached: {}",
                    s.state()
                );
            }
            cell.set(config(&["lan-1"]));
            addr.send(ConfigChanged).await.unwrap();
            let status = addr.send(GetStatus).await.unwrap();
            assert_eq!(
                spare_names(&status),
                ["lan-1"],
                "lan-2 left the configuration"
            );
            crate::actors::test_support::stop_within_bound(stopper).await;
            crate::actors::test_support::wait_disconnected(&addr).await;
        });
    }
}
