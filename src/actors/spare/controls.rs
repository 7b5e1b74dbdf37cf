//! The operator's controls of a spare's apply (`core::apply_gate::Gate`: pause, delay, stop
//! LSN, a verify's cap), changed only by the spare's actor: the admin routes and `spare
//! verify` send [`SetHold`], a reload sends `ConfigChanged` (the delay). The apply thread
//! reads the gate before every batch; nothing else writes it.
//!
//! Why a message and not a setter on the shared state: a pause is written to `apply.json`
//! before it takes effect, and two operators pausing and resuming at once must leave the
//! file and the gate saying the same thing. The actor handles one change at a time
//! ([`actix::AtomicResponse`]), the file's write included.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{ActorFutureExt, AtomicResponse, Context, Handler, Message, WrapFuture};

use crate::actors::spare::{ApplyFile, SpareActor, APPLY_STATE_FILE};
use crate::core::apply_gate::Gate;
use crate::error::{Error, Result};

/// Changes the operator's controls of applying.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Held>")]
pub enum SetHold {
    /// `spare pause` (true) / `spare resume` (false); kept in `apply.json` across restarts.
    Pause(bool),
    /// Apply exactly up to this LSN (a promotion `--until`); None lifts it.
    StopAt(Option<u64>),
    /// `spare verify`'s hold: apply nothing past `lsn`; lifted by itself after `expires`
    /// if nothing lifted it before (the verify that set it died). The answer's `cap`
    /// names this hold for [`SetHold::LiftCap`].
    Cap { lsn: u64, expires: Option<Duration> },
    /// Lifts the verify's hold named `Some(cap)` if it is still the one in force (a later
    /// verify may have set its own, even at the same LSN); `None` lifts whatever hold is in
    /// force (`POST /v1/admin/verify/release`).
    LiftCap(Option<u64>),
}

/// The gate after a change, and where the spare stood then.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub gate: Gate,
    pub applied: u64,
    pub flushed: u64,
    /// The verify's hold in force, by the number its `Cap` was answered with.
    pub cap: Option<u64>,
}

impl SpareActor {
    /// Changes the gate and wakes the apply thread to read it.
    /// Waits for a seed being installed only to save time (`SpareShared::install`).
    pub(crate) fn change_gate(&self, change: impl FnOnce(&mut Gate)) {
        let _install = self.shared.install.lock().expect("install lock");
        change(&mut self.shared.apply.gate.lock().expect("gate lock"));
        self.shared.wake_applier();
    }

    fn held(&self) -> Held {
        let apply = &self.shared.apply;
        Held {
            gate: apply.gate(),
            applied: apply.applied.load(Ordering::Acquire),
            flushed: apply.flushed.load(Ordering::Acquire),
            cap: self.cap.map(|(number, _)| number),
        }
    }

    /// Applies a change that needs no file.
    fn hold(&mut self, change: SetHold, ctx: &mut Context<Self>) -> Held {
        match change {
            SetHold::Pause(paused) => self.change_gate(|g| g.paused = paused),
            SetHold::StopAt(lsn) => self.change_gate(|g| g.stop_at = lsn),
            SetHold::Cap { lsn, expires } => {
                let number = self.next_cap;
                self.next_cap += 1;
                self.cap = Some((number, lsn));
                self.change_gate(|g| g.cap = Some(lsn));
                if let Some(after) = expires {
                    actix::AsyncContext::run_later(ctx, after, move |act, _| {
                        act.lift_cap(Some(number))
                    });
                }
            }
            SetHold::LiftCap(number) => self.lift_cap(number),
        }
        self.held()
    }

    fn lift_cap(&mut self, number: Option<u64>) {
        let Some((current, _)) = self.cap else {
            return;
        };
        if number.is_none_or(|n| n == current) {
            self.cap = None;
            self.change_gate(|g| g.cap = None);
        }
    }
}

impl Handler<SetHold> for SpareActor {
    type Result = AtomicResponse<Self, Result<Held>>;

    /// A pause is on disk before it takes effect; the other changes take effect at once.
    fn handle(&mut self, change: SetHold, _: &mut Context<Self>) -> Self::Result {
        let file = self.shared.data.node.data_dir.join(APPLY_STATE_FILE);
        let persist = async move {
            let SetHold::Pause(paused) = change else {
                return Ok(());
            };
            crate::actors::blocking("record the pause", move || {
                crate::durable::write_json(&file, &ApplyFile { paused })
            })
            .await?
        };
        AtomicResponse::new(Box::pin(persist.into_actor(self).map(
            move |written: Result<()>, act, ctx| {
                written.map_err(|e| {
                    let what = match change {
                        SetHold::Pause(false) => "resume",
                        _ => "pause",
                    };
                    Error::Unavailable(format!(
                        "cannot record the {what} in {APPLY_STATE_FILE} ({e}); applying goes on as before: fix the disk and run it again"
                    ))
                })?;
                Ok(act.hold(change, ctx))
            },
        )))
    }
}
