//! The primary's write lease (DESIGN.md §7): it may acknowledge writes only while a quorum of
//! voters granted it a lease. Each request carries the primary's own send time; a grant to a
//! request sent at `t` is good until `t + lease` on the primary's clock (the voter's own grant
//! runs at least as long, from a later moment). The lease is valid until the quorum-th
//! latest of those times. Time is the primary's monotonic clock in ms: a process frozen
//! (SIGSTOP) finds its lease expired when it resumes.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct LeaseHolder {
    epoch: u64,
    lease_ms: u64,
    quorum: usize,
    /// Latest request send time granted by each voter.
    grants: BTreeMap<String, u64>,
    /// Grants to requests sent before this were given up ([`LeaseHolder::release`]).
    floor_ms: u64,
}

impl LeaseHolder {
    pub fn new(epoch: u64, lease_ms: u64, quorum: usize) -> Self {
        assert!(quorum >= 1, "a quorum is at least one voter");
        LeaseHolder {
            epoch,
            lease_ms,
            quorum,
            grants: BTreeMap::new(),
            floor_ms: 0,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// `voter` granted the request sent at `sent_ms` for `epoch`.
    pub fn on_grant(&mut self, voter: &str, epoch: u64, sent_ms: u64) {
        if epoch != self.epoch || sent_ms < self.floor_ms {
            return;
        }
        let t = self.grants.entry(voter.to_string()).or_insert(0);
        *t = (*t).max(sent_ms);
    }

    /// Gives the lease up at `now_ms` (a switchover; the voters are told to end their
    /// grants): every grant so far is forgotten, and a late answer to a request sent before
    /// now never counts, since the voter may already have ended that grant.
    pub fn release(&mut self, now_ms: u64) {
        self.grants.clear();
        self.floor_ms = self.floor_ms.max(now_ms);
    }

    /// Until when (own clock) writes may be acknowledged; None without a quorum of grants.
    pub fn valid_until(&self) -> Option<u64> {
        let mut times: Vec<u64> = self.grants.values().copied().collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(self.quorum - 1).map(|t| t + self.lease_ms)
    }

    pub fn is_valid(&self, now_ms: u64) -> bool {
        self.valid_until().is_some_and(|until| now_ms < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_needs_a_quorum_and_runs_from_the_oldest_grant_of_that_quorum() {
        let mut l = LeaseHolder::new(1, 1_000, 2);
        l.on_grant("a", 1, 100);
        assert!(!l.is_valid(150), "one grant is not a quorum");
        l.on_grant("b", 1, 300);
        assert_eq!(l.valid_until(), Some(1_100));
        l.on_grant("a", 1, 500);
        assert_eq!(l.valid_until(), Some(1_300));
        assert!(l.is_valid(1_299));
        assert!(!l.is_valid(1_300), "expired without renewal");
        l.on_grant("c", 2, 900);
        assert_eq!(
            l.valid_until(),
            Some(1_300),
            "grants for another epoch do not count"
        );
    }

    #[test]
    fn a_released_lease_needs_grants_to_requests_sent_afterwards() {
        let mut l = LeaseHolder::new(1, 1_000, 2);
        l.on_grant("a", 1, 100);
        l.on_grant("b", 1, 100);
        assert!(l.is_valid(500));
        l.release(600);
        assert!(!l.is_valid(601));
        l.on_grant("a", 1, 550);
        l.on_grant("b", 1, 590);
        assert!(
            !l.is_valid(700),
            "late answers to requests sent before the release"
        );
        l.on_grant("a", 1, 800);
        l.on_grant("b", 1, 810);
        assert!(l.is_valid(900));
    }
}
