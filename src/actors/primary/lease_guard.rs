//! The write lease's state, as the write path, status and the renewal tasks (`lease.rs`) see
//! it: the decision is `core::lease::LeaseHolder`'s, kept behind a mutex because the committer
//! thread checks it before every acknowledgement while the renewal tasks update it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::actors::stop::Stop;
use crate::core::lease::LeaseHolder;
use crate::core::members::Members;
use crate::error::{Error, Result};
use crate::wire::Message;

/// How long the write path waits for a lease it does not hold (at start, after a blip)
/// before refusing a write.
pub const LEASE_WAIT: Duration = Duration::from_secs(2);
/// How often the write path re-checks a lease it is waiting for.
const LEASE_POLL: Duration = Duration::from_millis(10);

/// The lease, as the write path and status see it.
pub struct LeaseGuard {
    holder: Mutex<LeaseHolder>,
    /// The epoch's membership: whom to ask, how many grants make a quorum, how long.
    members: Members,
    pub(crate) voters: Vec<String>,
    /// Set when a voter answered with a newer epoch: this node is no longer the primary.
    fenced: Mutex<Option<String>>,
    /// The incarnation's stop signal: once up, renewals end and nothing is valid any more.
    stop: Stop,
    /// Set while a switchover stopped the writes: no renewal, no grant taken, not valid.
    suspended: std::sync::atomic::AtomicBool,
    /// The LSN of the last record before the switchover stopped the writes: the
    /// switchover's new primary holds every record up to it.
    suspended_at: std::sync::atomic::AtomicU64,
}

impl LeaseGuard {
    pub fn new(epoch: u64, members: Members, stop: Stop) -> Self {
        LeaseGuard {
            holder: Mutex::new(LeaseHolder::new(epoch, members.lease_ms, members.quorum())),
            voters: members.voters.clone(),
            members,
            fenced: Mutex::new(None),
            stop,
            suspended: std::sync::atomic::AtomicBool::new(false),
            suspended_at: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A switchover stopped the writes: give the lease up (until [`LeaseGuard::resume`]).
    /// The grants held so far are forgotten: the voters are about to end them, so after a
    /// resume only grants to new requests count.
    /// `last_lsn`: the last record written before the writes stopped.
    pub fn suspend(&self, last_lsn: u64) {
        self.suspended_at
            .store(last_lsn, std::sync::atomic::Ordering::Release);
        self.suspended
            .store(true, std::sync::atomic::Ordering::Release);
        let now = self.now_ms();
        self.holder.lock().expect("lease lock").release(now);
    }

    /// The switchover failed: renew again (valid after the next grants from a quorum).
    pub fn resume(&self) {
        self.suspended
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Waits for the next heartbeat at which a lease request is due (none while a switchover
    /// suspended the lease); returns its send time, or None once the lease stopped for good.
    pub(crate) async fn next_request(&self, tick: &mut tokio::time::Interval) -> Option<u64> {
        while !self.stopped() {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.stopped() => return None,
            }
            if !self.suspended() {
                return Some(self.now_ms());
            }
        }
        None
    }

    fn suspended(&self) -> bool {
        self.suspended.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the incarnation stopped (the node changes role): the lease ended for good.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// The incarnation's stop signal, for the renewal tasks.
    pub(crate) fn stop_signal(&self) -> &Stop {
        &self.stop
    }

    /// The lease's clock: the boot clock (see `clock`), which counts time the host slept.
    pub fn now_ms(&self) -> u64 {
        crate::clock::boot_ms()
    }

    /// Whether the write of record `lsn`, durable here, may be acknowledged now: while the
    /// lease is valid; or once a switchover stopped the writes after it (its answer raced
    /// the stop): the switchover's new primary catches up to the stop's LSN before it
    /// takes writes, so it holds this record too. The record was logged while the lease was
    /// valid (the write path checks it before every group).
    pub fn acknowledges(&self, lsn: u64) -> bool {
        self.is_valid()
            || (self.suspended()
                && lsn <= self.suspended_at.load(std::sync::atomic::Ordering::Acquire))
    }

    pub fn is_valid(&self) -> bool {
        !self.stopped()
            && !self.suspended()
            && self.fenced.lock().expect("fenced lock").is_none()
            && self
                .holder
                .lock()
                .expect("lease lock")
                .is_valid(self.now_ms())
    }

    pub(crate) fn granted(&self, voter: &str, epoch: u64, sent_ms: u64) {
        if self.suspended() {
            return;
        }
        self.holder
            .lock()
            .expect("lease lock")
            .on_grant(voter, epoch, sent_ms);
    }

    pub(crate) fn fence(&self, why: String) {
        let mut fenced = self.fenced.lock().expect("fenced lock");
        // A stopped lease belongs to an incarnation already replaced (a switchover).
        if fenced.is_none() && !self.stopped() {
            tracing::error!(%why, "a newer epoch exists: this node stops acknowledging writes");
            *fenced = Some(why);
        }
    }

    /// Waits (blocking, at most [`LEASE_WAIT`]) for a valid lease; else says why there is none.
    pub fn wait_valid(&self) -> Result<()> {
        let started = Instant::now();
        while !self.is_valid() {
            if self.stopped() {
                return Err(Error::NotTaken(
                    "this node is changing role; retry (clients that know several nodes find the new primary)".into(),
                ));
            }
            if let Some(why) = self.fenced.lock().expect("fenced lock").clone() {
                return Err(Error::NotTaken(format!("this node is no longer the primary ({why}); send writes to the current primary")));
            }
            if started.elapsed() > LEASE_WAIT {
                let quorum = self.voters.len() / 2 + 1;
                return Err(Error::NotTaken(format!(
                    "this primary has no write lease: fewer than {quorum} of its {} voters ({}) confirmed it recently, so it cannot be sure no other node was promoted; check that the voters run and are reachable, then retry",
                    self.voters.len(),
                    self.voters.join(", ")
                )));
            }
            std::thread::sleep(LEASE_POLL);
        }
        Ok(())
    }

    /// A lease request for `epoch`, sent at `sent_ms`, naming the epoch's membership.
    pub(crate) fn request(&self, epoch: u64, sent_ms: u64) -> Message {
        Message::LeaseRequest {
            epoch,
            sent_ms,
            members: self.members.clone(),
        }
    }

    /// The epoch's membership this lease counts.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// For status: whether the lease is valid and for how long.
    pub fn describe(&self) -> crate::status::LeaseStatus {
        let now = self.now_ms();
        let until = self.holder.lock().expect("lease lock").valid_until();
        crate::status::LeaseStatus {
            valid: self.is_valid(),
            remaining_ms: until.map(|u| u.saturating_sub(now)),
            voters: self.voters.clone(),
            lease_ms: self.members.lease_ms,
            fenced: self.fenced.lock().expect("fenced lock").clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A primary's host suspended for longer than the lease must find its lease expired on
    /// waking: the lease is measured on the boot clock (`clock::boot_ms`, CLOCK_BOOTTIME),
    /// which counts suspended time, not on a clock of this process.
    #[test]
    fn the_lease_is_measured_on_the_boot_clock() {
        let (_stopper, stop) = crate::actors::stop::Stopper::new("main");
        let guard = LeaseGuard::new(1, Members::new(&["main".into()], 2_000), stop);
        let (ours, boot) = (guard.now_ms(), crate::clock::boot_ms());
        assert!(
            ours.abs_diff(boot) < 100,
            "lease clock {ours} ms, boot clock {boot} ms"
        );
    }

    /// A write whose answer raced a switchover's stop is acknowledged (the new primary
    /// catches up to the stop's LSN); nothing after the stop is, and nothing without a lease.
    #[test]
    fn a_switchover_stop_covers_the_writes_up_to_its_lsn_only() {
        let (_stopper, stop) = crate::actors::stop::Stopper::new("main");
        let guard = LeaseGuard::new(
            1,
            Members::new(&["main".into(), "a".into(), "b".into()], 2_000),
            stop,
        );
        assert!(!guard.acknowledges(5), "no grant yet: no lease");
        guard.suspend(10);
        assert!(!guard.is_valid());
        assert!(guard.acknowledges(10));
        assert!(guard.acknowledges(3));
        assert!(
            !guard.acknowledges(11),
            "written after the stop: not covered"
        );
        guard.resume();
        assert!(
            !guard.acknowledges(10),
            "resumed: only a renewed lease counts"
        );
    }
}
