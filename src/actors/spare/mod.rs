//! The spare's actor: owns the peer listener, the local log writer and the apply thread, and
//! answers status. Each accepted connection runs `spare_link::serve`; only the newest
//! authenticated primary connection streams (an older one is told to stop), so two links
//! never append to the log at once.
//!
//! Restart: everything is on disk (log, applied LSN in SQLite, node.state, a seed in
//! progress); the primary re-learns the position from the handshake.

pub mod applier;
pub mod controls;
pub mod link;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::{Actor, Context, Handler, MessageResult};

use tokio::sync::watch;

use crate::actors::messages::ConfigChanged;
use crate::actors::messages::GetStatus;
use crate::actors::shared::{primary_ref, DataShared};
use crate::actors::spare::applier::{ApplierHandle, ApplyState};
use crate::actors::MAILBOX_CAPACITY;
use crate::clock::wall_ms as now_ms;
use crate::core::lag;
use crate::error::{Error, Result};
use crate::log::{self, LogWriter, Position};
use crate::status::{NodeStatus, OwnLag, SeedProgress, SpareStatus};
use crate::store::apply::Applier;
use crate::store::recovery::finish_install;
use crate::store::snapshot::SeedDir;
use crate::store::{self as sqlite, ConnKind};

/// What the spare's links, apply thread and status share.
pub struct SpareShared {
    pub data: Arc<DataShared>,
    pub log: Mutex<LogWriter>,
    pub apply: Arc<ApplyState>,
    /// The running apply thread (replaced when a seed is installed).
    pub applier: Mutex<Option<ApplierHandle>>,
    /// Held by a seed installed only to save time, from its hold check to the end of the
    /// install; every change of the apply gate takes it too (`SpareActor::change_gate`): a
    /// pause, a stop LSN or a verify's cap lands before the check (the seed is refused) or
    /// after the install, never in between. Lock order: log, then this, then the gate.
    pub install: Mutex<()>,
    pub applied_tx: Arc<watch::Sender<u64>>,
    pub seed: SeedDir,
    /// While a seed arrives: (bytes durable, snapshot size).
    pub seeding: Mutex<Option<(u64, u64)>>,
    /// Highest LSN received (may run ahead of flushed while a batch is being synced).
    pub received: AtomicU64,
    /// The primary's durable LSN, from its keep-alives and batches.
    pub primary_last: AtomicU64,
    /// The applied LSN the last acknowledgement carried: an applied LSN that moved while a
    /// batch was being made durable rides on that batch's acknowledgement, not one more.
    pub acked_applied: AtomicU64,
    pub connected: AtomicBool,
    /// When the primary was last heard from (ms since the Unix epoch).
    pub last_heard_ms: AtomicU64,
    /// Bumped by each authenticated connection; a link whose number is no longer current stops.
    pub generation: watch::Sender<u64>,
    /// Why the last link was refused for divergence, if it was.
    pub diverged: Mutex<Option<String>>,
}

impl SpareShared {
    /// The log, for appending: refused once this incarnation's stop signal is up, so that a
    /// link still running cannot write under the node's next role.
    pub fn open_log(&self) -> Result<std::sync::MutexGuard<'_, LogWriter>> {
        let log = self.log.lock().expect("log lock");
        if self.data.stop.is_stopped() {
            return Err(Error::Unavailable(
                "this spare is stopping (changing role)".into(),
            ));
        }
        Ok(log)
    }

    /// Ends this incarnation's use of the log and the database (blocking; once the stop
    /// signal is up): an append in progress finishes (none starts after it: [`open_log`]),
    /// then the apply thread is stopped and joined.
    ///
    /// [`open_log`]: SpareShared::open_log
    fn close(&self) {
        debug_assert!(self.data.stop.is_stopped(), "closed after the stop signal");
        // Under the log lock: a seed install restarts the apply thread under it too, so
        // the thread stopped here is the last one.
        let _log = self.log.lock().expect("log lock");
        self.stop_applier();
    }

    /// Stops the apply thread and waits for it, without holding the lock meanwhile (the
    /// link may want to wake it).
    fn stop_applier(&self) {
        let handle = self.applier.lock().expect("applier lock").take();
        if let Some(h) = handle {
            h.stop();
        }
    }

    pub fn wake_applier(&self) {
        if let Some(h) = self.applier.lock().expect("applier lock").as_ref() {
            h.wake();
        }
    }

    fn start_applier(&self, applier: Applier) -> Result<()> {
        let data = &self.data;
        let handle = applier::spawn(
            &data.node.name,
            applier,
            data.log_dir(),
            self.apply.clone(),
            self.applied_tx.clone(),
            data.events.clone(),
        )
        .map_err(Error::io("start the apply thread"))?;
        *self.applier.lock().expect("applier lock") = Some(handle);
        Ok(())
    }

    /// Verifies the received snapshot and installs it (blocking): quarantines this node's
    /// records after `quarantine_after` if its history diverged, stops applying, swaps the
    /// database and restarts the log right after the snapshot, then applies again.
    /// `optional` (a seed only to save time) is refused, nothing changed, if applying is held
    /// back by then: checked under the log lock, as late as possible.
    pub fn install_seed(&self, quarantine_after: Option<u64>, optional: bool) -> Result<Position> {
        let refuse = |s: &Self| -> Result<Position> {
            // Nothing of it will be installed: its copy need not stay on this disk.
            s.seed.discard()?;
            Err(held_back())
        };
        if optional && self.apply.gate().holds() {
            return refuse(self);
        }
        let info = self.seed.verify()?;
        let data_dir = &self.data.node.data_dir;
        let mut log = self.open_log()?;
        let _install = optional.then(|| self.install.lock().expect("install lock"));
        if optional && self.apply.gate().holds() {
            return refuse(self);
        }
        self.stop_applier();
        if let Some(after) = quarantine_after {
            let reason = format!(
                "diverged from primary {}; replaced by its snapshot at LSN {}",
                self.data.voter.state().primary,
                info.position.lsn
            );
            let from = after.max(self.data.oldest_lsn() - 1);
            let db = data_dir.join(sqlite::DB_FILE);
            let dir = crate::store::quarantine::save(
                &self.data.log_dir(),
                from,
                log.durable().lsn,
                &data_dir.join("quarantine"),
                &reason,
                Some(&db),
            )?;
            tracing::warn!(folder = %dir.display(), "kept this node's divergent database and records in quarantine");
        }
        self.seed.write_marker(&info)?;
        self.data.readers.reset();
        finish_install(data_dir, &info)?;
        // Again once the new file is in place: a reader opened during the swap (the old
        // file, its WAL already removed) must not stay pooled, answering the old state
        // for good (the nemesis met a spare answering "no such table" after a re-seed).
        self.data.readers.reset();
        let opened = log::open(&self.data.log_dir(), info.position.lsn)?;
        *log = opened.writer;
        log.set_segment_target_bytes(crate::log::retention::segment_bytes_for(
            self.data.config().cluster.retention_bytes,
        ));
        *self.data.base.lock().expect("base lock") = info.position;
        self.apply
            .flushed
            .store(info.position.lsn, Ordering::Release);
        self.received.store(info.position.lsn, Ordering::Release);
        // Still under the log lock: `close` stops the apply thread under it, so it never
        // misses the one started here.
        self.start_applier(Applier::new(sqlite::open(
            &data_dir.join(sqlite::DB_FILE),
            ConnKind::Applier,
        )?)?)?;
        drop(log);
        *self.diverged.lock().expect("lock") = None;
        Ok(info.position)
    }

    /// Drops log segments outside the retention budget, never what SQLite has not made
    /// durable in its own file (blocking; call with the log lock held by `log`).
    pub fn maintain_log(&self, log: &mut LogWriter) -> Result<()> {
        let floor = self.apply.durable_floor.load(Ordering::Acquire);
        let through = log::retention::deletable_through(
            log.segments(),
            floor,
            0,
            self.data.retention_budget(),
            now_ms(),
        );
        if log.delete_through(through)? > 0 {
            *self.data.base.lock().expect("base lock") =
                log::base::load(&self.data.log_dir())?.unwrap_or_default();
        }
        Ok(())
    }
}

/// Why a spare held back (paused, delayed, stopped at an LSN, under verify) refuses a seed
/// offered only to save time: installing it would apply past the hold and drop the log.
pub(crate) fn held_back() -> Error {
    Error::Unavailable(
        "this spare's applying is held back (pause, apply_delay, a stop LSN or a verify): it keeps its history and replays the log instead of being seeded".into(),
    )
}

/// `data/<node>/apply.json`: whether the operator paused this spare's apply (kept across
/// restarts).
pub const APPLY_STATE_FILE: &str = "apply.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct ApplyFile {
    paused: bool,
}

pub(crate) fn load_paused(data_dir: &std::path::Path) -> bool {
    match crate::durable::read_json::<ApplyFile>(&data_dir.join(APPLY_STATE_FILE)) {
        Ok(f) => f.is_some_and(|f| f.paused),
        Err(e) => {
            // Safer to stay paused than to apply what the operator meant to hold back.
            tracing::error!(cause = %e, "cannot read apply.json; staying paused");
            true
        }
    }
}

/// Forgets a pause (a node that becomes the primary: it applies everything, and must not
/// come back paused when it is a spare again after a switch back). Says so when it did.
pub(crate) fn clear_paused(data_dir: &std::path::Path) -> Result<()> {
    if !load_paused(data_dir) {
        return Ok(());
    }
    crate::durable::write_json(
        &data_dir.join(APPLY_STATE_FILE),
        &ApplyFile { paused: false },
    )?;
    tracing::warn!("this node was paused and is now the primary: the pause is lifted (pause it again once it is a spare, if that is still wanted)");
    Ok(())
}

pub struct SpareActor {
    shared: Arc<SpareShared>,
    /// An old primary that must not write nor follow until `spare rejoin` (DESIGN.md §7):
    /// it serves reads and refuses streams.
    fenced: bool,
    /// Taken by `started` to start the apply thread.
    pending: Option<Applier>,
    /// Held while the actor runs (`actors::stop`).
    _running: Option<crate::actors::stop::Running>,
    /// The verify's hold in force: (its number, its LSN); see `controls.rs`.
    cap: Option<(u64, u64)>,
    /// The number the next verify's hold gets: never reused, so a late lift of an older
    /// hold cannot lift a newer one.
    next_cap: u64,
}

impl SpareActor {
    pub fn new(
        data: Arc<DataShared>,
        log: LogWriter,
        applier: Applier,
        applied_tx: Arc<watch::Sender<u64>>,
        fenced: bool,
    ) -> Self {
        let apply = Arc::new(ApplyState::default());
        {
            let mut gate = apply.gate.lock().expect("gate lock");
            gate.delay_ms = data.node.apply_delay.as_millis() as u64;
            gate.paused = load_paused(&data.node.data_dir);
        }
        apply.flushed.store(log.durable().lsn, Ordering::Release);
        let received = AtomicU64::new(log.durable().lsn);
        let seed = SeedDir::new(&data.node.data_dir);
        let shared = Arc::new(SpareShared {
            data,
            log: Mutex::new(log),
            apply,
            applier: Mutex::new(None),
            install: Mutex::new(()),
            applied_tx,
            seed,
            seeding: Mutex::new(None),
            received,
            primary_last: AtomicU64::new(0),
            acked_applied: AtomicU64::new(u64::MAX),
            connected: AtomicBool::new(false),
            last_heard_ms: AtomicU64::new(0),
            generation: watch::Sender::new(0),
            diverged: Mutex::new(None),
        });
        SpareActor {
            shared,
            fenced,
            pending: Some(applier),
            _running: None,
            cap: None,
            next_cap: 1,
        }
    }

    /// What the slot's peer listener hands accepted connections to.
    pub fn shared(&self) -> Arc<SpareShared> {
        self.shared.clone()
    }

    fn state_name(&self) -> String {
        let s = &self.shared;
        if self.fenced {
            return format!(
                "fenced: run `spare rejoin {}` to make it a spare",
                s.data.node.name
            );
        }
        if let Some((done, size)) = *s.seeding.lock().expect("lock") {
            return format!("seeding ({} %)", crate::core::lag::seed_percent(done, size));
        }
        if let Some(why) = s.apply.failure.lock().expect("lock").as_ref() {
            return format!("apply stopped: {why}");
        }
        if let Some(why) = s.apply.retrying.lock().expect("lock").as_ref() {
            return format!("apply retrying: {why}");
        }
        if s.diverged.lock().expect("lock").is_some() {
            return "diverged".into();
        }
        if let Some(held) = held_text(&s.apply.gate()) {
            return held;
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

/// Why a spare holds records back on purpose, as its state says it: `applying up to LSN n`,
/// `paused`, `delayed (30m)`; None when it applies as they come.
pub fn held_text(gate: &crate::core::apply_gate::Gate) -> Option<String> {
    if let Some(at) = gate.stop_at {
        return Some(format!("applying up to LSN {at}"));
    }
    if gate.paused {
        return Some("paused".into());
    }
    (gate.delay_ms > 0).then(|| {
        format!(
            "delayed ({})",
            humantime::format_duration(std::time::Duration::from_secs(gate.delay_ms / 1000))
        )
    })
}

impl Actor for SpareActor {
    type Context = Context<Self>;

    /// Starts the apply thread; on the incarnation's stop signal the actor stops, and a
    /// part of its own closes the log and joins the apply thread.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let stop = self.shared.data.stop.clone();
        self._running = crate::actors::stop::bind(&stop, ctx);
        // The closing part first: an incarnation already stopping starts no apply thread.
        let Some(closing) = stop.enlist() else {
            return;
        };
        let shared = self.shared.clone();
        actix_rt::spawn(async move {
            stop.stopped().await;
            let _ = tokio::task::spawn_blocking(move || shared.close()).await;
            drop(closing);
        });
        let applier = self.pending.take().expect("started once");
        if let Err(e) = self.shared.start_applier(applier) {
            tracing::error!(cause = %e, "cannot start the apply thread; stopping");
            actix::System::current().stop();
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
        let held_since = s.apply.held_since_ms.load(Ordering::Acquire);
        let flushed = s.apply.flushed.load(Ordering::Acquire);
        // Before the primary told it where its log ends (after a restart), its own log is
        // the best bound: records it holds and has not applied are lag too.
        let lag = lag::compute(
            primary_last.max(flushed),
            applied,
            (held_since > 0).then_some(held_since),
            now,
            ack_age,
        );
        let node = &s.data.node;
        let config = s.data.config();
        let gate = s.apply.gate();
        let status = SpareStatus {
            name: node.name.clone(),
            state: self.state_name(),
            cluster: config.cluster.name.clone(),
            epoch: s.data.epoch.load(Ordering::Relaxed),
            http: node.http_advertise.clone(),
            last_lsn: flushed,
            oldest_lsn: s.data.oldest_lsn(),
            received_lsn: s.received.load(Ordering::Acquire),
            flushed_lsn: flushed,
            applied_lsn: applied,
            applied_time_ms: s.apply.applied_time_ms.load(Ordering::Acquire),
            primary_last_lsn: primary_last,
            primary: primary_ref(&config),
            seed: s
                .seeding
                .lock()
                .expect("lock")
                .map(|(bytes_done, bytes_total)| SeedProgress {
                    bytes_done,
                    bytes_total,
                }),
            lag: OwnLag {
                records: lag.records,
                seconds: lag.seconds,
                last_heard_s: lag.last_ack_age_s,
            },
            paused: gate.paused,
            apply_delay_s: gate.delay_ms as f64 / 1000.0,
            pending_records: flushed.saturating_sub(applied),
        };
        MessageResult(if self.fenced {
            NodeStatus::Fenced(status)
        } else {
            NodeStatus::Spare(status)
        })
    }
}

impl Handler<ConfigChanged> for SpareActor {
    type Result = ();

    /// Takes the new `apply_delay`; the rest is read where it is used.
    fn handle(&mut self, _: ConfigChanged, _: &mut Context<Self>) {
        if let Ok(n) = self.shared.data.config().node(&self.shared.data.node.name) {
            let delay_ms = n.apply_delay.as_millis() as u64;
            self.change_gate(|gate| gate.delay_ms = delay_ms);
        }
    }
}

#[cfg(test)]
mod actor_tests {
    use super::*;
    use crate::actors::test_support::data_shared;
    use crate::config::{ClusterConfig, ConfigCell};
    use crate::status::NodeStatus;

    fn config(data_dir: &std::path::Path, delay: &str) -> ClusterConfig {
        let text = format!(
            "[cluster]\nname = \"shop\"\nsecret_file = \"cluster.secret\"\n\n[[node]]\nname = \"main\"\nrole = \"primary\"\npeer = \"127.0.0.1:7\"\nhttp = \"127.0.0.1:8\"\n\n[[node]]\nname = \"lan-1\"\nrole = \"spare\"\npeer = \"127.0.0.1:9\"\nhttp = \"127.0.0.1:10\"\ndata_dir = \"{}\"\napply_delay = \"{delay}\"\n",
            data_dir.display()
        );
        ClusterConfig::parse(std::path::Path::new("/conf/cluster.toml"), &text).unwrap()
    }

    fn spare_status(status: NodeStatus) -> crate::status::SpareStatus {
        match status {
            NodeStatus::Spare(s) => s,
            other => panic!("a spare's status, not {}", other.role().as_str()),
        }
    }

    /// lan-1's actor on a recovered empty data directory, and its incarnation's stopper.
    fn spare_actor(
        dir: &std::path::Path,
        cell: &Arc<ConfigCell>,
    ) -> (SpareActor, crate::actors::stop::Stopper) {
        let (data, applied_tx, stopper) = data_shared(dir, cell.clone(), "lan-1");
        let (log, applier) = crate::store::recovery::recover(dir, 1 << 20).unwrap();
        let actor = SpareActor::new(data, log, applier, Arc::new(applied_tx), false);
        (actor, stopper)
    }

    /// A seed offered only to save time never lands on a spare held back: refused, its
    /// partial copy discarded, the spare's own state untouched; a required one is not
    /// refused for the hold (here it fails for lack of a received snapshot instead).
    #[test]
    fn a_held_spare_refuses_to_install_a_seed_offered_only_to_save_time() {
        let dir = tempfile::tempdir().unwrap();
        let cell = Arc::new(ConfigCell::new(config(dir.path(), "30s")));
        let (actor, _stopper) = spare_actor(dir.path(), &cell);
        let shared = actor.shared();
        assert!(shared.apply.gate().holds(), "an apply_delay holds back");
        std::fs::create_dir_all(dir.path().join("seed")).unwrap();
        std::fs::write(dir.path().join("seed/partial.sqlite"), b"half a copy").unwrap();
        let e = shared.install_seed(None, true).unwrap_err().to_string();
        assert!(e.contains("held back"), "{e}");
        assert!(
            !dir.path().join("seed/partial.sqlite").exists(),
            "the refused copy is discarded"
        );
        let required = shared.install_seed(None, false).unwrap_err().to_string();
        assert!(!required.contains("held back"), "{required}");
    }

    #[test]
    fn the_spare_reports_its_positions_and_takes_a_new_apply_delay_from_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let cell = Arc::new(ConfigCell::new(config(dir.path(), "0s")));
        let (actor, stopper) = spare_actor(dir.path(), &cell);
        let system = actix_rt::System::new();
        system.block_on(async {
            let shared = actor.shared();
            let addr = actor.start();
            let s = spare_status(addr.send(GetStatus).await.unwrap());
            assert_eq!(
                (s.name.as_str(), s.applied_lsn, s.pending_records),
                ("lan-1", 0, 0)
            );
            assert_eq!((s.apply_delay_s, s.paused), (0.0, false));
            assert_eq!(s.primary.name, "main");
            cell.set(config(dir.path(), "30s"));
            addr.send(ConfigChanged).await.unwrap();
            let s = spare_status(addr.send(GetStatus).await.unwrap());
            assert_eq!(s.apply_delay_s, 30.0, "the reload's delay is in force");
            crate::actors::test_support::stop_within_bound(stopper).await;
            crate::actors::test_support::wait_disconnected(&addr).await;
            assert!(
                shared.applier.lock().unwrap().is_none(),
                "the apply thread stopped with the incarnation"
            );
        });
    }

    #[test]
    fn only_the_spare_actor_changes_the_apply_gate_and_a_pause_is_on_disk_first() {
        use crate::actors::spare::controls::SetHold;
        let dir = tempfile::tempdir().unwrap();
        let cell = Arc::new(ConfigCell::new(config(dir.path(), "0s")));
        let (actor, stopper) = spare_actor(dir.path(), &cell);
        let system = actix_rt::System::new();
        system.block_on(async {
            let addr = actor.start();
            let held = addr.send(SetHold::Pause(true)).await.unwrap().unwrap();
            assert!(held.gate.paused);
            assert!(load_paused(dir.path()), "apply.json says paused");
            let s = spare_status(addr.send(GetStatus).await.unwrap());
            assert_eq!((s.paused, s.state.as_str()), (true, "paused"));
            let held = addr.send(SetHold::StopAt(Some(5))).await.unwrap().unwrap();
            assert_eq!(held.gate.stop_at, Some(5));
            let s = spare_status(addr.send(GetStatus).await.unwrap());
            assert_eq!(
                s.state, "applying up to LSN 5",
                "a stop LSN overrides the pause"
            );
            addr.send(SetHold::StopAt(None)).await.unwrap().unwrap();
            addr.send(SetHold::Pause(false)).await.unwrap().unwrap();
            assert!(!load_paused(dir.path()), "apply.json says resumed");
            // A verify's cap: lifted only by its own number (a later verify's at the same
            // LSN stays), and by itself once it expires.
            let cap = SetHold::Cap {
                lsn: 3,
                expires: None,
            };
            let first = addr.send(cap).await.unwrap().unwrap();
            assert_eq!(first.gate.cap, Some(3));
            let second = addr.send(cap).await.unwrap().unwrap();
            assert_ne!(first.cap, second.cap);
            let other = addr
                .send(SetHold::LiftCap(first.cap))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(other.gate.cap, Some(3), "an older verify's lift leaves it");
            let lifted = addr
                .send(SetHold::LiftCap(second.cap))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(lifted.gate.cap, None);
            let third = addr.send(cap).await.unwrap().unwrap();
            assert!(
                third.cap != first.cap && third.cap != second.cap,
                "numbers are never reused"
            );
            let late = addr
                .send(SetHold::LiftCap(first.cap))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                late.gate.cap,
                Some(3),
                "a late lift of an old hold leaves the new one"
            );
            addr.send(SetHold::LiftCap(None)).await.unwrap().unwrap();
            let expiring = SetHold::Cap {
                lsn: 7,
                expires: Some(std::time::Duration::from_millis(50)),
            };
            addr.send(expiring).await.unwrap().unwrap();
            let started = std::time::Instant::now();
            while addr
                .send(SetHold::LiftCap(Some(0)))
                .await
                .unwrap()
                .unwrap()
                .gate
                .cap
                .is_some()
            {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(10),
                    "the cap expires"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            crate::actors::test_support::stop_within_bound(stopper).await;
            crate::actors::test_support::wait_disconnected(&addr).await;
        });
    }

    #[test]
    fn a_pause_that_cannot_be_recorded_is_refused_and_changes_nothing() {
        use crate::actors::spare::controls::SetHold;
        let dir = tempfile::tempdir().unwrap();
        let cell = Arc::new(ConfigCell::new(config(dir.path(), "0s")));
        let (actor, stopper) = spare_actor(dir.path(), &cell);
        // A directory where the write's temporary file goes: the write fails.
        std::fs::create_dir(dir.path().join(APPLY_STATE_FILE).with_extension("tmp")).unwrap();
        let system = actix_rt::System::new();
        system.block_on(async {
            let addr = actor.start();
            let e = addr.send(SetHold::Pause(true)).await.unwrap().unwrap_err();
            let e = e.to_string();
            assert!(e.contains("cannot record the pause in apply.json"), "{e}");
            let s = spare_status(addr.send(GetStatus).await.unwrap());
            assert!(!s.paused, "the gate did not change");
            assert!(!load_paused(dir.path()), "nor the file");
            crate::actors::test_support::stop_within_bound(stopper).await;
            crate::actors::test_support::wait_disconnected(&addr).await;
        });
    }
}
