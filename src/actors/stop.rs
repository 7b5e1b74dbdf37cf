//! How an incarnation stops (a node changing role, or leaving the configuration): one signal
//! for all its parts, and a wait until every part has ended. mini-redis's shutdown is the
//! model: a broadcast every part listens to, and a drop guard per part.
//!
//! - [`Stopper`] is the slot's: [`Stopper::stop`] raises the signal, then waits until every
//!   [`Running`] guard is dropped, so the next incarnation never opens the log or the
//!   database while a part of this one still uses them.
//! - [`Stop`] is what a part keeps: it says whether the signal is up (blocking threads poll
//!   it; async tasks and actors await [`Stop::stopped`]) and enlists new parts. Holding it
//!   does not keep the incarnation running, so shared state may hold it.
//! - [`Running`] is a part's guard: the incarnation has not stopped while one exists.
//!
//! Parts: the role's actor, its feeders, the lease renewal tasks, the committer (told through
//! its queue, which it blocks on), and every spare link that streams.

use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context};
use tokio::sync::{mpsc, watch};

/// While waiting for the parts, how often the wait says what it waits for.
const STOP_WAIT_REPORT: Duration = Duration::from_secs(5);

/// The slot's side: raise the signal, wait for the parts.
pub struct Stopper {
    signal: watch::Sender<bool>,
    /// Ends (`None`) once every `Running` guard is dropped.
    parts: mpsc::Receiver<()>,
    /// Kept until `stop`, so that parts can enlist before it.
    first: Option<mpsc::Sender<()>>,
    what: String,
}

/// A part's view of the signal; clone it freely (it keeps nothing running).
#[derive(Clone)]
pub struct Stop {
    signal: watch::Receiver<bool>,
    enlist: mpsc::WeakSender<()>,
}

/// A running part: the incarnation is not stopped while this guard lives.
#[derive(Clone)]
pub struct Running {
    _guard: mpsc::Sender<()>,
}

impl Stopper {
    /// A stopper for `what` (named in the logs while it waits).
    pub fn new(what: impl Into<String>) -> (Stopper, Stop) {
        let (signal, rx) = watch::channel(false);
        let (first, parts) = mpsc::channel(1);
        let stop = Stop {
            signal: rx,
            enlist: first.downgrade(),
        };
        let stopper = Stopper {
            signal,
            parts,
            first: Some(first),
            what: what.into(),
        };
        (stopper, stop)
    }

    /// Raises the signal and waits until every part ended. Not bounded: a part still
    /// writing the log must finish before anything else opens it; the wait says so every
    /// [`STOP_WAIT_REPORT`].
    pub async fn stop(mut self) {
        self.signal.send_replace(true);
        self.first = None;
        let started = std::time::Instant::now();
        loop {
            match tokio::time::timeout(STOP_WAIT_REPORT, self.parts.recv()).await {
                Ok(None) => return,
                Ok(Some(())) => unreachable!("parts never send"),
                Err(_) => tracing::warn!(
                    what = %self.what,
                    waited_s = started.elapsed().as_secs(),
                    "still waiting for a part of the stopping node to end"
                ),
            }
        }
    }
}

impl Drop for Stopper {
    /// A stopper dropped without `stop` (a start that failed half-way) still raises the
    /// signal: the parts it started must not go on, and `is_stopped` must agree with
    /// `stopped`.
    fn drop(&mut self) {
        self.signal.send_replace(true);
    }
}

impl Stop {
    /// Whether the signal is up.
    pub fn is_stopped(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves once the signal is up (at once if it is already).
    pub async fn stopped(&self) {
        let mut rx = self.signal.clone();
        // An error means the stopper is gone, and a dropped stopper raises the signal.
        let _ = rx.wait_for(|up| *up).await;
    }

    /// A guard for a new part; None once the incarnation stopped (the part must not start).
    pub fn enlist(&self) -> Option<Running> {
        if self.is_stopped() {
            return None;
        }
        self.enlist.upgrade().map(|g| Running { _guard: g })
    }
}

/// Binds an actor to the signal (call from `started`): the actor stops when it rises, and
/// keeps the returned guard as a field, so the incarnation counts it running until the actor
/// is dropped. None (and the actor stopping at once) if the signal is already up.
pub fn bind<A>(stop: &Stop, ctx: &mut Context<A>) -> Option<Running>
where
    A: Actor<Context = Context<A>>,
{
    let Some(running) = stop.enlist() else {
        ctx.stop();
        return None;
    };
    let stop = stop.clone();
    ctx.spawn(
        actix::fut::wrap_future::<_, A>(async move { stop.stopped().await })
            .map(|(), _, ctx: &mut Context<A>| ctx.stop()),
    );
    Some(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_raises_the_signal_and_returns_once_every_part_ended() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (stopper, stop) = Stopper::new("test");
            let part = stop.enlist().expect("parts enlist before the stop");
            let (ended_tx, mut ended) = mpsc::unbounded_channel();
            let listener = stop.clone();
            tokio::spawn(async move {
                listener.stopped().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                ended_tx.send(()).unwrap();
                drop(part);
            });
            assert!(!stop.is_stopped());
            tokio::time::timeout(Duration::from_secs(10), stopper.stop())
                .await
                .expect("the stop ends once the part ended");
            assert!(
                ended.try_recv().is_ok(),
                "the part ended before stop returned"
            );
            assert!(stop.is_stopped());
            assert!(stop.enlist().is_none(), "no part starts after the stop");
        });
    }

    #[test]
    fn a_stopper_dropped_without_stop_raises_the_signal() {
        let (stopper, stop) = Stopper::new("test");
        drop(stopper);
        assert!(stop.is_stopped());
        assert!(stop.enlist().is_none());
    }

    #[test]
    fn a_stop_with_no_part_returns_at_once_and_a_held_stop_keeps_nothing_running() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (stopper, stop) = Stopper::new("test");
            let _kept = stop.clone();
            tokio::time::timeout(Duration::from_secs(10), stopper.stop())
                .await
                .expect("nothing to wait for");
            tokio::time::timeout(Duration::from_secs(10), stop.stopped())
                .await
                .expect("the signal is up");
        });
    }
}
