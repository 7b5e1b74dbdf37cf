//! A voter (DESIGN.md §7): every primary, spare and monitor with `vote = true` takes part in
//! quorums. It grants the primary of its epoch a write lease, and promises a higher epoch to
//! at most one candidate per epoch; once it promised, it grants no lease for an older epoch.
//!
//! Invariants (asserted): `promised_epoch >= epoch`; neither ever goes down.
//!
//! Time is the voter's own monotonic clock, in ms, passed in. A voter that restarts has
//! forgotten when its last grant ends, so it assumes one was just granted
//! ([`Voter::restarted`]): a promotion then waits out a full lease, which is what keeps an
//! old primary's lease from overlapping the new one.
//!
//! The caller persists the state (`node.state`) whenever a method says so, *before* sending
//! the answer.

use serde::{Deserialize, Serialize};

/// What a voter must remember across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterState {
    /// Epoch this voter follows, and its primary.
    pub epoch: u64,
    pub primary: String,
    /// Highest epoch promised, and to whom.
    pub promised_epoch: u64,
    pub promised_to: String,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// Granted for `epoch`, until the voter's `now + lease`.
    Granted { epoch: u64 },
    /// Refused: this voter follows or promised `epoch`, led by or promised to `primary`;
    /// `committed` when that epoch's promotion completed (not a mere promise).
    Refused {
        epoch: u64,
        primary: String,
        committed: bool,
    },
}

/// The answer to a prepare (promise request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareAnswer {
    /// Promised; `lease_remaining_ms` is how long a lease this voter granted may still run.
    Promised { epoch: u64, lease_remaining_ms: u64 },
    /// Refused: this voter already promised `epoch` (to `to`).
    Refused { epoch: u64, to: String },
}

#[derive(Debug, Clone)]
pub struct Voter {
    state: VoterState,
    lease_ms: u64,
    /// Until when (own clock) the lease this voter last granted runs.
    granted_until_ms: u64,
}

impl Voter {
    /// A voter starting with `state` at `now_ms`, with leases of `lease_ms`.
    pub fn restarted(state: VoterState, lease_ms: u64, now_ms: u64) -> Self {
        assert!(
            state.promised_epoch >= state.epoch,
            "a voter never promised less than it follows"
        );
        Voter {
            state,
            lease_ms,
            granted_until_ms: now_ms + lease_ms,
        }
    }

    pub fn state(&self) -> &VoterState {
        &self.state
    }

    /// `from` asks for a lease for `epoch`. Returns the answer and whether the state changed
    /// (persist first).
    pub fn on_lease_request(&mut self, from: &str, epoch: u64, now_ms: u64) -> (LeaseAnswer, bool) {
        let s = &self.state;
        let stale = epoch < s.promised_epoch
            || (epoch == s.promised_epoch && s.promised_to != from)
            || (epoch == s.epoch && s.primary != from);
        if stale {
            let (epoch, primary, committed) = if s.promised_epoch > s.epoch {
                (s.promised_epoch, s.promised_to.clone(), false)
            } else {
                (s.epoch, s.primary.clone(), true)
            };
            return (
                LeaseAnswer::Refused {
                    epoch,
                    primary,
                    committed,
                },
                false,
            );
        }
        let changed = epoch > self.state.epoch;
        if changed {
            // Only the committed primary of `epoch` asks for its lease: adopt it.
            self.state = VoterState {
                epoch,
                primary: from.to_string(),
                promised_epoch: epoch,
                promised_to: from.to_string(),
            };
        }
        self.granted_until_ms = self.granted_until_ms.max(now_ms + self.lease_ms);
        (LeaseAnswer::Granted { epoch }, changed)
    }

    /// A coordinator asks this voter to promise `epoch` to `candidate`. Returns the answer
    /// and whether the state changed (persist first).
    pub fn on_prepare(
        &mut self,
        candidate: &str,
        epoch: u64,
        now_ms: u64,
    ) -> (PrepareAnswer, bool) {
        if epoch <= self.state.promised_epoch {
            if epoch == self.state.promised_epoch
                && self.state.promised_to == candidate
                && epoch > self.state.epoch
            {
                // The same promise asked again (a retry): same answer.
                return (self.promised(epoch, now_ms), false);
            }
            return (
                PrepareAnswer::Refused {
                    epoch: self.state.promised_epoch,
                    to: self.state.promised_to.clone(),
                },
                false,
            );
        }
        self.state.promised_epoch = epoch;
        self.state.promised_to = candidate.to_string();
        (self.promised(epoch, now_ms), true)
    }

    fn promised(&self, epoch: u64, now_ms: u64) -> PrepareAnswer {
        PrepareAnswer::Promised {
            epoch,
            lease_remaining_ms: self.granted_until_ms.saturating_sub(now_ms),
        }
    }

    /// The primary of `epoch` stopped writing and gives its lease up (a switchover): the
    /// grant ends now. Anyone else is ignored. Returns whether it was released.
    pub fn on_release(&mut self, from: &str, epoch: u64, now_ms: u64) -> bool {
        if epoch != self.state.epoch || from != self.state.primary {
            return false;
        }
        self.granted_until_ms = self.granted_until_ms.min(now_ms);
        true
    }

    /// The promotion to `epoch` of `primary` completed. Returns whether the state changed.
    pub fn on_commit(&mut self, primary: &str, epoch: u64) -> bool {
        if epoch < self.state.epoch || (epoch == self.state.epoch && self.state.primary == primary)
        {
            return false;
        }
        assert!(epoch >= self.state.epoch, "epochs never go down");
        self.state.epoch = epoch;
        self.state.primary = primary.to_string();
        if epoch > self.state.promised_epoch {
            self.state.promised_epoch = epoch;
            self.state.promised_to = primary.to_string();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter() -> Voter {
        let s = VoterState {
            epoch: 1,
            primary: "main".into(),
            promised_epoch: 1,
            promised_to: "main".into(),
        };
        Voter::restarted(s, 4_000, 0)
    }

    #[test]
    fn grants_the_primary_of_its_epoch_and_refuses_others() {
        let mut v = voter();
        assert_eq!(
            v.on_lease_request("main", 1, 10).0,
            LeaseAnswer::Granted { epoch: 1 }
        );
        assert!(matches!(
            v.on_lease_request("lan-1", 1, 10).0,
            LeaseAnswer::Refused { .. }
        ));
        assert!(matches!(
            v.on_lease_request("main", 0, 10).0,
            LeaseAnswer::Refused { .. }
        ));
    }

    #[test]
    fn after_a_promise_the_old_primary_gets_no_lease() {
        let mut v = voter();
        v.on_lease_request("main", 1, 1_000);
        let (answer, persist) = v.on_prepare("lan-1", 2, 2_000);
        assert!(persist);
        assert_eq!(
            answer,
            PrepareAnswer::Promised {
                epoch: 2,
                lease_remaining_ms: 3_000
            }
        );
        assert_eq!(
            v.on_lease_request("main", 1, 2_100).0,
            LeaseAnswer::Refused {
                epoch: 2,
                primary: "lan-1".into(),
                committed: false
            }
        );
        // One promise per epoch.
        assert!(matches!(
            v.on_prepare("lan-2", 2, 2_200).0,
            PrepareAnswer::Refused { .. }
        ));
        // The committed new primary gets its lease.
        assert!(v.on_commit("lan-1", 2));
        assert_eq!(
            v.on_lease_request("lan-1", 2, 7_000).0,
            LeaseAnswer::Granted { epoch: 2 }
        );
    }

    #[test]
    fn only_the_primary_releases_its_grant_and_a_promise_then_waits_nothing() {
        let mut v = voter();
        v.on_lease_request("main", 1, 1_000);
        assert!(!v.on_release("lan-1", 1, 1_500), "not the primary");
        assert!(!v.on_release("main", 0, 1_500), "an older epoch");
        assert!(v.on_release("main", 1, 1_500));
        assert_eq!(
            v.on_prepare("lan-1", 2, 1_600).0,
            PrepareAnswer::Promised {
                epoch: 2,
                lease_remaining_ms: 0
            }
        );
    }

    #[test]
    fn a_restarted_voter_assumes_a_full_lease_is_running() {
        let v = voter();
        let mut v = Voter::restarted(v.state().clone(), 4_000, 50_000);
        assert_eq!(
            v.on_prepare("lan-1", 2, 50_500).0,
            PrepareAnswer::Promised {
                epoch: 2,
                lease_remaining_ms: 3_500
            }
        );
    }
}
