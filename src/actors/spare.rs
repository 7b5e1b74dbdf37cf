//! The spare's actor: owns the peer listener, the local log writer and the apply thread, and
//! answers status. Each accepted connection runs `spare_link::serve`; only the newest
//! authenticated primary connection streams (an older one is told to stop), so two links
//! never append to the log at once.
//!
//! Restart: everything is on disk (log, applied LSN in SQLite, node.state); the primary
//! re-learns the position from the handshake.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use actix::{Actor, AsyncContext, Context, Handler, MessageResult, WrapFuture};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::actors::applier::{self, ApplyState};
use crate::actors::committer::now_ms;
use crate::actors::node::{primary_ref, DataShared};
use crate::actors::primary::GetStatus;
use crate::actors::spare_link;
use crate::actors::MAILBOX_CAPACITY;
use crate::core::lag;
use crate::log::LogWriter;
use crate::state::NodeState;
use crate::store::apply::Applier;

/// What the spare's links, apply thread and status share.
pub struct SpareShared {
    pub data: Arc<DataShared>,
    pub log: Mutex<LogWriter>,
    pub apply: Arc<ApplyState>,
    /// Wakes the apply thread after a flush (capacity 1: one pending wake-up is enough).
    pub wake: std_mpsc::SyncSender<()>,
    /// Highest LSN received (may run ahead of flushed while a batch is being synced).
    pub received: AtomicU64,
    /// The primary's durable LSN, from its keep-alives and batches.
    pub primary_last: AtomicU64,
    pub connected: AtomicBool,
    /// When the primary was last heard from (ms since the Unix epoch).
    pub last_heard_ms: AtomicU64,
    /// Bumped by each authenticated connection; a link whose number is no longer current stops.
    pub generation: watch::Sender<u64>,
    /// The primary this node follows.
    pub primary: String,
    /// Why the last link was refused for divergence, if it was.
    pub diverged: Mutex<Option<String>>,
}

pub struct SpareActor {
    shared: Arc<SpareShared>,
    /// Taken by `started` to start the apply thread.
    pending: Option<(Applier, std_mpsc::Receiver<()>, watch::Sender<u64>)>,
}

impl SpareActor {
    pub fn new(
        data: Arc<DataShared>,
        log: LogWriter,
        applier: Applier,
        applied_tx: watch::Sender<u64>,
        state: NodeState,
    ) -> Self {
        let (wake, wake_rx) = std_mpsc::sync_channel(1);
        let apply = Arc::new(ApplyState::default());
        apply.flushed.store(log.durable().lsn, Ordering::Release);
        let received = AtomicU64::new(log.durable().lsn);
        let shared = Arc::new(SpareShared {
            data,
            log: Mutex::new(log),
            apply,
            wake,
            received,
            primary_last: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            last_heard_ms: AtomicU64::new(0),
            generation: watch::Sender::new(0),
            primary: state.primary,
            diverged: Mutex::new(None),
        });
        SpareActor {
            shared,
            pending: Some((applier, wake_rx, applied_tx)),
        }
    }

    fn state_name(&self) -> String {
        let s = &self.shared;
        if let Some(why) = s.apply.failure.lock().expect("lock").as_ref() {
            return format!("apply stopped: {why}");
        }
        if s.diverged.lock().expect("lock").is_some() {
            return "diverged".into();
        }
        let applied = s.apply.applied.load(Ordering::Acquire);
        match (
            s.connected.load(Ordering::Acquire),
            applied >= s.primary_last.load(Ordering::Acquire),
        ) {
            (false, _) => "disconnected".into(),
            (true, true) => "streaming".into(),
            (true, false) => "catching-up".into(),
        }
    }
}

impl Actor for SpareActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let (applier, wake_rx, applied_tx) = self.pending.take().expect("started once");
        let data = &self.shared.data;
        if let Err(e) = applier::spawn(
            &data.node.name,
            applier,
            data.log_dir(),
            self.shared.apply.clone(),
            wake_rx,
            applied_tx,
        ) {
            tracing::error!(cause = %e, "cannot start the apply thread; stopping");
            actix::System::current().stop();
            return;
        }
        let shared = self.shared.clone();
        ctx.spawn(accept_loop(shared).into_actor(self));
    }
}

async fn accept_loop(shared: Arc<SpareShared>) {
    let addr = shared.data.node.peer;
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, cause = %e, "cannot listen for the primary; is another process using this address? stopping");
            actix::System::current().stop();
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let shared = shared.clone();
                actix_rt::spawn(async move { spare_link::serve(shared, stream, from).await });
            }
            Err(e) => tracing::warn!(cause = %e, "accepting a peer connection failed"),
        }
    }
}

impl Handler<GetStatus> for SpareActor {
    type Result = MessageResult<GetStatus>;

    /// Builds `GET /v1/status` for a spare: its positions and its own view of its lag.
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> MessageResult<GetStatus> {
        let s = &self.shared;
        let applied = s.apply.applied.load(Ordering::Acquire);
        let primary_last = s.primary_last.load(Ordering::Acquire);
        let heard = s.last_heard_ms.load(Ordering::Acquire);
        let now = now_ms();
        let ack_age = (heard > 0).then(|| now.saturating_sub(heard) as f64 / 1000.0);
        let lag = lag::compute(primary_last, applied, None, now, ack_age);
        let node = &s.data.node;
        MessageResult(json!({
            "name": node.name,
            "role": "spare",
            "state": self.state_name(),
            "cluster": s.data.config.cluster.name,
            "epoch": s.data.epoch.load(Ordering::Relaxed),
            "http": node.http_advertise,
            "last_lsn": s.apply.flushed.load(Ordering::Acquire),
            "received_lsn": s.received.load(Ordering::Acquire),
            "flushed_lsn": s.apply.flushed.load(Ordering::Acquire),
            "applied_lsn": applied,
            "applied_time_ms": s.apply.applied_time_ms.load(Ordering::Acquire),
            "primary_last_lsn": primary_last,
            "primary": primary_ref(&s.data.config),
            "lag": { "records": lag.records, "last_heard_s": lag.last_ack_age_s },
        }))
    }
}
