//! A monitor: polls every node's `/v1/status` once per heartbeat, builds the cluster
//! document (`GET /v1/cluster`), keeps each spare's lag over the last minutes for the
//! dashboard, and raises events: a spare over its lag threshold (`lag_warn`, WARN), back
//! under it, a node (above all the primary) that stopped answering, or answers again.
//! Polls run on the blocking pool with bounded timeouts; a poll still running when the next
//! tick comes is not doubled. The decisions are `core::alerts`'.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult, WrapFuture,
};
use serde_json::{json, Value};

use crate::actors::messages::ConfigChanged;
use crate::actors::messages::GetStatus;
use crate::actors::stop::{Running, Stop};
use crate::actors::MAILBOX_CAPACITY;
use crate::client;
use crate::clock::wall_ms as now_ms;
use crate::config::{ClusterConfig, ConfigCell, NodeConfig, Role};
use crate::core::alerts::{LagAlerts, Reachability, Transition};
use crate::events::{EventLog, RECENT_EVENTS};
use crate::status::{MonitorStatus, NodeStatus, Unread};
use crate::view::{cluster_document, AnsweredNode, ClusterView, NodeEntry};

/// Lag samples kept per spare for the dashboard (at one per heartbeat: 10 minutes at 500 ms).
pub const HISTORY_SAMPLES: usize = 1200;

/// Asks for the cluster document.
#[derive(Message)]
#[rtype(result = "ClusterView")]
pub struct GetCluster;

/// Asks for the recent events of the monitor and of the primary, oldest first.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetEvents;

/// Asks for each spare's recent lag samples: `{spare: [[time_ms, records, seconds], ...]}`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetHistory;

/// Polls every node now (a promotion this monitor coordinated changed the roles).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollNow;

type Statuses = Vec<(String, Result<NodeStatus, Unread>)>;

/// One point of a spare's lag chart: (time ms, records, seconds); null where unknown.
type LagSample = (u64, Option<u64>, Option<f64>);

pub struct MonitorActor {
    cell: Arc<ConfigCell>,
    node: NodeConfig,
    /// Latest status of every node, from the last completed poll.
    latest: Statuses,
    polling: bool,
    events: Arc<EventLog>,
    alerts: LagAlerts,
    reach: Reachability,
    history: BTreeMap<String, VecDeque<LagSample>>,
    /// The primary's recent events, from the last poll.
    primary_events: Vec<Value>,
    /// The incarnation's stop signal, and this actor's guard while it runs.
    stop: Stop,
    _running: Option<Running>,
    /// The scheduled `spare verify` (`verify_every`).
    verify: ScheduledVerify,
}

/// When the last scheduled verify started, whether one runs, and the differences the last
/// one found (a problem line until a verify finds the copies equal again).
#[derive(Default)]
struct ScheduledVerify {
    started: Option<std::time::Instant>,
    running: bool,
    differences: Vec<String>,
}

impl MonitorActor {
    pub fn new(cell: Arc<ConfigCell>, node: NodeConfig, events: Arc<EventLog>, stop: Stop) -> Self {
        MonitorActor {
            cell,
            node,
            latest: Vec::new(),
            polling: false,
            events,
            alerts: LagAlerts::default(),
            reach: Reachability::default(),
            history: BTreeMap::new(),
            primary_events: Vec::new(),
            verify: ScheduledVerify::default(),
            stop,
            _running: None,
        }
    }

    fn own_status(&self) -> NodeStatus {
        NodeStatus::Monitor(MonitorStatus {
            name: self.node.name.clone(),
            state: "watching".into(),
            cluster: self.cell.get().cluster.name.clone(),
            http: self.node.http_advertise.clone(),
        })
    }

    /// Starts the scheduled verify when `verify_every` says it is due (one at a time).
    fn maybe_verify(&mut self, ctx: &mut Context<Self>) {
        let config = self.cell.get();
        let Some(every) = config.cluster.verify_every else {
            return;
        };
        let due = self.verify.started.is_none_or(|t| t.elapsed() >= every);
        if self.verify.running || !due {
            return;
        }
        self.verify.running = true;
        self.verify.started = Some(std::time::Instant::now());
        let work = tokio::task::spawn_blocking(move || crate::verify::run(&config));
        ctx.spawn(work.into_actor(self).map(|res, act, _| {
            act.verify.running = false;
            match res {
                Ok(Ok(report)) => act.verified(&report),
                Ok(Err(e)) => tracing::warn!(cause = %e, "the scheduled verify could not run"),
                Err(e) => tracing::warn!(cause = %e, "the scheduled verify failed"),
            }
        }));
    }

    /// Records what a scheduled verify found: an event and an alert on a difference.
    fn verified(&mut self, report: &crate::verify::Report) {
        let differences: Vec<String> = report
            .nodes
            .iter()
            .filter(|n| n.status == "differs")
            .map(|n| {
                let tables: Vec<&str> = n
                    .tables
                    .iter()
                    .filter(|t| t.status != "identical")
                    .map(|t| t.table.as_str())
                    .collect();
                format!(
                    "{}'s copy differs from the primary's at LSN {} (tables {}): run `spare verify` for the rows",
                    n.node,
                    report.lsn,
                    tables.join(", ")
                )
            })
            .collect();
        for d in &differences {
            tracing::error!(difference = %d, "verify found a copy that differs");
            self.events.record("verify_difference", None, d);
        }
        if report.verdict == "identical" && !self.verify.differences.is_empty() {
            self.events.record(
                "verify_identical",
                None,
                &format!(
                    "every copy compared equal to the primary's at LSN {}",
                    report.lsn
                ),
            );
        }
        // An incomplete run (a node skipped) clears nothing it could not compare.
        if !differences.is_empty() || report.verdict == "identical" {
            self.verify.differences = differences;
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        self.maybe_verify(ctx);
        if self.polling {
            return;
        }
        self.polling = true;
        let config = self.cell.get();
        let targets: Vec<(String, String)> = config
            .nodes
            .iter()
            .filter(|n| n.role != Role::Monitor)
            .map(|n| (n.name.clone(), n.http_advertise.clone()))
            .collect();
        let timeout = config.cluster.heartbeat * 2;
        let primary_http = config.primary().http_advertise.clone();
        let work = tokio::task::spawn_blocking(move || {
            let statuses = targets
                .into_iter()
                .map(|(name, http)| (name, client::status_reply(&http, timeout)))
                .collect::<Statuses>();
            // The primary's events (links, seeding, commit rule) complete the monitor's own.
            let events = client::get(&primary_http, "/v1/events", timeout)
                .ok()
                .and_then(|r| r.body["events"].as_array().cloned());
            (statuses, events)
        });
        ctx.spawn(work.into_actor(self).map(|res, act, _| {
            act.polling = false;
            if let Ok((statuses, events)) = res {
                act.latest = statuses;
                if let Some(events) = events {
                    act.primary_events = events;
                }
                act.observe();
            }
        }));
    }

    /// The monitor's events and the primary's, oldest first, at most [`RECENT_EVENTS`].
    fn merged_events(&self) -> Vec<Value> {
        let mut all: Vec<Value> = self.events.recent();
        all.extend(self.primary_events.iter().cloned());
        all.sort_by_key(|e| e["time_ms"].as_u64().unwrap_or(0));
        let skip = all.len().saturating_sub(RECENT_EVENTS);
        all.split_off(skip)
    }

    /// Turns the latest poll into events and lag history.
    fn observe(&mut self) {
        // A primary of a newer epoch (a monitor that does not vote learns promotions here).
        if let Some((epoch, name)) = crate::view::newest_primary(&self.latest) {
            if self.cell.learn(epoch, &name) {
                self.events.record(
                    "primary_changed",
                    Some(&name),
                    &format!("{name} is the primary of epoch {epoch}"),
                );
            }
        }
        let now = now_ms();
        let config = self.cell.get();
        self.note_reachability(&config, now);
        let doc = cluster_document(&config, &self.latest);
        // Charts follow the spares as they are now: a removed node, or one promoted to
        // primary, has no lag to chart any more.
        let names: Vec<&str> = doc.spares().map(|n| n.name.as_str()).collect();
        self.history
            .retain(|name, _| names.contains(&name.as_str()));
        for n in doc.spares() {
            self.watch_lag(&config, n, now);
        }
    }

    /// Records a node that stopped answering, or answers again.
    fn note_reachability(&mut self, config: &ClusterConfig, now: u64) {
        for (name, status) in &self.latest {
            match (
                self.reach.check(
                    name,
                    status.as_ref().map_or_else(Unread::answered, |_| true),
                    now,
                ),
                config.node(name).map(|n| n.role),
            ) {
                (Some(Transition::Raised), Ok(Role::Primary)) => {
                    tracing::warn!(node = %name, "the primary stopped answering");
                    self.events.record(
                        "primary_unreachable",
                        None,
                        &format!("primary {name} is not answering"),
                    );
                }
                (Some(Transition::Raised), _) => self.events.record(
                    "node_unreachable",
                    Some(name),
                    &format!("{name} is not answering"),
                ),
                (Some(Transition::Cleared), _) => self.events.record(
                    "node_reachable",
                    Some(name),
                    &format!("{name} answers again"),
                ),
                _ => {}
            }
        }
    }

    /// Raises or clears a spare's lag alert and adds its lag to the chart's history.
    fn watch_lag(&mut self, config: &ClusterConfig, n: &AnsweredNode, now: u64) {
        let name = n.name.clone();
        // A delayed spare is behind by its delay: the alert is about lag beyond that. A
        // paused one raises it too (a forgotten pause leaves the copy ever older).
        let paused = n.state == "paused";
        let (records, seconds) = (n.lag.and_then(|l| l.records), n.lag.and_then(|l| l.seconds));
        let delay = config
            .node(&name)
            .map_or(0.0, |c| c.apply_delay.as_secs_f64());
        let threshold = config.lag_warn(&name).as_secs_f64() + delay;
        match self.alerts.check(&name, seconds, threshold) {
            Some(Transition::Raised) => {
                let msg = format!(
                    "{name} is {:.1} s behind (threshold {threshold} s), {} records{}",
                    seconds.unwrap_or(0.0),
                    records.map_or("null".to_string(), |r| r.to_string()),
                    if paused { ", paused" } else { "" }
                );
                tracing::warn!(spare = %name, %msg, "lag alert");
                self.events.record("lag_alert", Some(&name), &msg);
            }
            Some(Transition::Cleared) => self.events.record(
                "lag_recovered",
                Some(&name),
                &format!("{name} is back under {threshold} s of lag"),
            ),
            None => {}
        }
        let samples = self.history.entry(name).or_default();
        if samples.len() == HISTORY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((now, records, seconds));
    }

    /// What needs a human's eye, in words: nodes not answering, spares over their lag
    /// threshold, spares cut from the primary (a held one shows no growing lag), paused ones.
    fn problems(&self, doc: &ClusterView) -> Vec<String> {
        let now = now_ms();
        let config = self.cell.get();
        let mut out = self.verify.differences.clone();
        for n in &config.nodes {
            if let Some(since) = self.reach.down_since(&n.name) {
                let what = if n.role == Role::Primary {
                    "the primary"
                } else {
                    "node"
                };
                out.push(format!(
                    "{what} {} has not answered for {:.0} s",
                    n.name,
                    now.saturating_sub(since) as f64 / 1000.0
                ));
            }
            if self.alerts.is_raised(&n.name) {
                out.push(format!(
                    "spare {} is behind by more than its lag_warn ({:?})",
                    n.name,
                    config.lag_warn(&n.name)
                ));
            }
            if let Some(NodeEntry::Unreachable { state, error, .. }) =
                doc.nodes.iter().find(|e| e.name() == n.name)
            {
                if state == "unavailable" {
                    out.push(format!(
                        "{} answers, but not with its status: {error}",
                        n.name
                    ));
                }
            }
            let Some(e) = doc.spares().find(|e| e.name == n.name) else {
                continue;
            };
            if e.link.as_deref() == Some("disconnected") {
                out.push(format!(
                    "spare {} is not connected to the primary (state {:?}); it receives nothing",
                    n.name, e.state
                ));
            }
            if e.state == "paused" {
                out.push(format!(
                    "spare {} is paused: it applies nothing until `spare resume {}`",
                    n.name, n.name
                ));
            }
        }
        out
    }
}

impl Actor for MonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self._running = crate::actors::stop::bind(&self.stop, ctx);
        self.poll(ctx);
        // Poll half a heartbeat out of step with the primary's heartbeat timer (the same
        // period), so an idle cluster is not always sampled right after a heartbeat record,
        // before the spares acknowledged it.
        let period = self.cell.get().cluster.heartbeat;
        ctx.run_later(period / 2, move |act, ctx| {
            act.poll(ctx);
            ctx.run_interval(period, |act, ctx| act.poll(ctx));
        });
    }
}

impl Handler<GetStatus> for MonitorActor {
    type Result = MessageResult<GetStatus>;

    /// This monitor's own status.
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> MessageResult<GetStatus> {
        MessageResult(self.own_status())
    }
}

impl Handler<GetCluster> for MonitorActor {
    type Result = MessageResult<GetCluster>;

    /// The cluster document from the latest poll, with the problems seen.
    fn handle(&mut self, _: GetCluster, _: &mut Context<Self>) -> MessageResult<GetCluster> {
        let mut statuses = self.latest.clone();
        statuses.push((self.node.name.clone(), Ok(self.own_status())));
        let mut doc = cluster_document(&self.cell.get(), &statuses);
        doc.source = Some(format!("monitor {}", self.node.name));
        doc.problems = Some(self.problems(&doc));
        MessageResult(doc)
    }
}

impl Handler<GetHistory> for MonitorActor {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, _: GetHistory, _: &mut Context<Self>) -> MessageResult<GetHistory> {
        let doc: serde_json::Map<String, Value> = self
            .history
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    s.iter()
                        .map(|(t, r, sec)| json!([t, r, sec]))
                        .collect::<Vec<_>>()
                        .into(),
                )
            })
            .collect();
        MessageResult(Value::Object(doc))
    }
}

impl Handler<GetEvents> for MonitorActor {
    type Result = MessageResult<GetEvents>;

    fn handle(&mut self, _: GetEvents, _: &mut Context<Self>) -> MessageResult<GetEvents> {
        MessageResult(json!({ "events": self.merged_events() }))
    }
}

impl Handler<ConfigChanged> for MonitorActor {
    type Result = ();

    /// Every poll reads the current configuration; only the notify command is cached.
    fn handle(&mut self, _: ConfigChanged, _: &mut Context<Self>) {
        self.events
            .set_notify(self.cell.get().cluster.notify_command.clone());
    }
}

impl Handler<PollNow> for MonitorActor {
    type Result = ();

    fn handle(&mut self, _: PollNow, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster whose data nodes listen nowhere (low ports on loopback refuse at once).
    const CONFIG: &str = r#"
[cluster]
name = "shop"
secret_file = "cluster.secret"

[[node]]
name = "main"
role = "primary"
peer = "127.0.0.1:1"
http = "127.0.0.1:2"

[[node]]
name = "lan-1"
role = "spare"
peer = "127.0.0.1:3"
http = "127.0.0.1:4"

[[node]]
name = "watch-1"
role = "monitor"
peer = "127.0.0.1:5"
http = "127.0.0.1:6"
"#;

    fn monitor(stop: crate::actors::stop::Stop) -> MonitorActor {
        let config =
            ClusterConfig::parse(std::path::Path::new("conf/cluster.toml"), CONFIG).unwrap();
        let node = config.node("watch-1").unwrap().clone();
        let cell = Arc::new(ConfigCell::new(config));
        let events = Arc::new(EventLog::new("watch-1", None, None));
        MonitorActor::new(cell, node, events, stop)
    }

    #[test]
    fn the_monitor_answers_its_status_and_a_cluster_view_of_silent_nodes() {
        let system = actix_rt::System::new();
        system.block_on(async {
            let (stopper, stop) = crate::actors::stop::Stopper::new("watch-1");
            let addr = monitor(stop).start();
            let status = addr.send(GetStatus).await.unwrap();
            assert_eq!(
                (status.role().as_str(), status.name(), status.state()),
                ("monitor", "watch-1", "watching")
            );
            // Until a poll completes the data nodes are unknown; after it, unreachable.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let view = loop {
                let view = addr.send(GetCluster).await.unwrap();
                let main = view.nodes.iter().find(|n| n.name() == "main").unwrap();
                if main.state() == "unreachable" || std::time::Instant::now() > deadline {
                    break view;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            assert_eq!(view.source.as_deref(), Some("monitor watch-1"));
            let state = |n: &str| {
                view.nodes
                    .iter()
                    .find(|e| e.name() == n)
                    .unwrap()
                    .state()
                    .to_string()
            };
            assert_eq!(
                (state("main"), state("lan-1"), state("watch-1")),
                (
                    "unreachable".into(),
                    "unreachable".into(),
                    "watching".into()
                )
            );
            assert!(view.partial && view.primary.is_none());
            let problems = view.problems.unwrap_or_default();
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("the primary main has not answered")),
                "{problems:?}"
            );
            let events = addr.send(GetEvents).await.unwrap();
            let kinds: Vec<&str> = events["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["kind"].as_str())
                .collect();
            assert!(kinds.contains(&"primary_unreachable"), "{kinds:?}");
            assert_eq!(
                addr.send(GetHistory).await.unwrap(),
                serde_json::json!({}),
                "no spare answered: no lag to chart"
            );
            crate::actors::test_support::stop_within_bound(stopper).await;
            crate::actors::test_support::wait_disconnected(&addr).await;
        });
    }
}
