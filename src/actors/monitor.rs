//! A monitor: polls every node's `/v1/status` once per heartbeat and serves the cluster
//! document (`GET /v1/cluster`). Polls run on the blocking pool with bounded timeouts; a poll
//! still running when the next tick comes is not doubled.

use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult,
    WrapFuture,
};
use serde_json::{json, Value};

use crate::actors::primary::GetStatus;
use crate::actors::supervisor::{ConfigChanged, StopNode};
use crate::actors::MAILBOX_CAPACITY;
use crate::client;
use crate::config::{ConfigCell, NodeConfig, Role};
use crate::view::cluster_document;

/// Asks for the cluster document.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetCluster;

type Statuses = Vec<(String, Result<Value, String>)>;

pub struct MonitorActor {
    cell: Arc<ConfigCell>,
    node: NodeConfig,
    /// Latest status of every node, from the last completed poll.
    latest: Statuses,
    polling: bool,
}

impl MonitorActor {
    pub fn new(cell: Arc<ConfigCell>, node: NodeConfig) -> Self {
        MonitorActor {
            cell,
            node,
            latest: Vec::new(),
            polling: false,
        }
    }

    fn own_status(&self) -> Value {
        json!({ "name": self.node.name, "role": "monitor", "state": "watching", "cluster": self.cell.get().cluster.name, "http": self.node.http_advertise })
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let targets: Vec<(String, String)> = self
            .cell
            .get()
            .nodes
            .iter()
            .filter(|n| n.role != Role::Monitor)
            .map(|n| (n.name.clone(), n.http_advertise.clone()))
            .collect();
        let timeout = self.cell.get().cluster.heartbeat * 2;
        let work = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(name, http)| {
                    (
                        name,
                        client::get(&http, "/v1/status", timeout)
                            .map(|r| r.body)
                            .map_err(|e| e.to_string()),
                    )
                })
                .collect::<Statuses>()
        });
        ctx.spawn(work.into_actor(self).map(|res, act, _| {
            act.polling = false;
            if let Ok(statuses) = res {
                act.latest = statuses;
            }
        }));
    }
}

impl Actor for MonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.poll(ctx);
        ctx.run_interval(self.cell.get().cluster.heartbeat, |act, ctx| act.poll(ctx));
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

    /// The cluster document from the latest poll.
    fn handle(&mut self, _: GetCluster, _: &mut Context<Self>) -> MessageResult<GetCluster> {
        let mut statuses = self.latest.clone();
        statuses.push((self.node.name.clone(), Ok(self.own_status())));
        MessageResult(cluster_document(&self.cell.get(), &statuses))
    }
}

impl Handler<ConfigChanged> for MonitorActor {
    type Result = ();

    /// Nothing to do: every poll reads the current configuration.
    fn handle(&mut self, _: ConfigChanged, _: &mut Context<Self>) {}
}

impl Handler<StopNode> for MonitorActor {
    type Result = ();

    fn handle(&mut self, _: StopNode, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
