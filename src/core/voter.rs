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
//! Memberships (`core::members`): a voter records the membership of the epoch it follows
//! (from the commit, or the primary's lease requests), the membership each promise above
//! that epoch was made for, and the longest lease it ever granted; it reports all three
//! with every promise, which is how a coordinator finds the membership it must replace.
//! A grant runs the longer of the lease the primary asks for and the voter's own
//! configured one, so a lease made longer by a reload is never granted shorter.
//!
//! The caller persists the state (`node.state`) whenever a method says so, *before* sending
//! the answer.

use serde::{Deserialize, Serialize};

use crate::core::members::{note_pending, Known, Members, Pending};

/// What a voter must remember across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterState {
    /// Epoch this voter follows, and its primary.
    pub epoch: u64,
    pub primary: String,
    /// Highest epoch promised, and to whom.
    pub promised_epoch: u64,
    pub promised_to: String,
    /// The membership of `epoch` (None when learned without it, or from an older file).
    pub members: Option<Members>,
    /// The promises above `epoch` and the memberships they were made for.
    pub pending: Vec<Pending>,
    /// The longest lease this voter ever granted: after a restart it assumes one that long
    /// was just granted.
    pub max_lease_ms: u64,
}

impl VoterState {
    /// Following `primary` in `epoch` (a new cluster's first state).
    pub fn first(primary: &str, epoch: u64, members: Option<Members>) -> Self {
        VoterState {
            epoch,
            primary: primary.to_string(),
            promised_epoch: epoch,
            promised_to: primary.to_string(),
            max_lease_ms: members.as_ref().map_or(0, |m| m.lease_ms),
            members,
            pending: Vec::new(),
        }
    }
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
    /// Promised; `lease_remaining_ms` is how long a lease this voter granted may still run;
    /// `known` what it knows of memberships.
    Promised {
        epoch: u64,
        lease_remaining_ms: u64,
        known: Known,
    },
    /// Refused: this voter already promised `epoch` (to `to`), or (`to` empty) holds
    /// [`crate::core::members::MAX_PENDING`] promises for other voter sets.
    Refused {
        epoch: u64,
        to: String,
        known: Known,
    },
}

#[derive(Debug, Clone)]
pub struct Voter {
    state: VoterState,
    lease_ms: u64,
    /// Until when (own clock) the lease this voter last granted runs.
    granted_until_ms: u64,
}

impl Voter {
    /// A voter starting with `state` at `now_ms`, granting leases of at least `lease_ms`
    /// (its configuration's).
    pub fn restarted(state: VoterState, lease_ms: u64, now_ms: u64) -> Self {
        assert!(
            state.promised_epoch >= state.epoch,
            "a voter never promised less than it follows"
        );
        let longest = lease_ms.max(state.max_lease_ms);
        Voter {
            state,
            lease_ms,
            granted_until_ms: now_ms + longest,
        }
    }

    /// What this voter reports to a coordinator.
    pub fn known(&self) -> Known {
        Known {
            epoch: self.state.epoch,
            members: self.state.members.clone(),
            pending: self.state.pending.clone(),
            max_lease_ms: self.state.max_lease_ms,
        }
    }

    /// Follows `primary` in `epoch`, with its membership when known. A known membership
    /// settles every promise up to `epoch`; without one they stay reported.
    fn follow(&mut self, primary: &str, epoch: u64, members: Option<&Members>) {
        assert!(epoch >= self.state.epoch, "epochs never go down");
        let s = &mut self.state;
        s.epoch = epoch;
        s.primary = primary.to_string();
        if epoch > s.promised_epoch {
            s.promised_epoch = epoch;
            s.promised_to = primary.to_string();
        }
        s.members = members.cloned();
        if members.is_some() {
            s.pending.retain(|p| p.epoch > epoch);
        }
    }

    pub fn state(&self) -> &VoterState {
        &self.state
    }

    /// `from` asks for a lease for `epoch`, whose membership is `members`. Returns the
    /// answer and whether the state changed (persist first).
    pub fn on_lease_request(
        &mut self,
        from: &str,
        epoch: u64,
        members: &Members,
        now_ms: u64,
    ) -> (LeaseAnswer, bool) {
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
        let mut changed = false;
        if epoch > self.state.epoch {
            // Only the committed primary of `epoch` asks for its lease: adopt it.
            self.follow(from, epoch, Some(members));
            changed = true;
        } else if self.state.members.is_none() {
            self.state.members = Some(members.clone());
            changed = true;
        }
        let grant_ms = members.lease_ms.max(self.lease_ms);
        if grant_ms > self.state.max_lease_ms {
            self.state.max_lease_ms = grant_ms;
            changed = true;
        }
        self.granted_until_ms = self.granted_until_ms.max(now_ms + grant_ms);
        (LeaseAnswer::Granted { epoch }, changed)
    }

    /// A coordinator asks this voter to promise `epoch` to `candidate`, whose epoch would
    /// have the membership `members`. Returns the answer and whether the state changed
    /// (persist first).
    pub fn on_prepare(
        &mut self,
        candidate: &str,
        epoch: u64,
        members: &Members,
        now_ms: u64,
    ) -> (PrepareAnswer, bool) {
        // The same prepare again (a coordinator retrying): answered alike. With another
        // membership it is another promotion, refused: one epoch has one membership.
        let retry = epoch == self.state.promised_epoch
            && self.state.promised_to == candidate
            && epoch > self.state.epoch
            && self.state.pending.iter().any(|p| {
                p.epoch == epoch && p.members.voters == members.voters && p.candidate == candidate
            });
        if epoch <= self.state.promised_epoch && !retry {
            return (self.refused(self.state.promised_to.clone()), false);
        }
        let mut next = self.state.pending.clone();
        if !note_pending(&mut next, epoch, members, candidate) {
            return (self.refused(String::new()), false);
        }
        let changed = !retry || next != self.state.pending;
        self.state.pending = next;
        self.state.promised_epoch = epoch;
        self.state.promised_to = candidate.to_string();
        (self.promised(epoch, now_ms), changed)
    }

    fn promised(&self, epoch: u64, now_ms: u64) -> PrepareAnswer {
        PrepareAnswer::Promised {
            epoch,
            lease_remaining_ms: self.granted_until_ms.saturating_sub(now_ms),
            known: self.known(),
        }
    }

    fn refused(&self, to: String) -> PrepareAnswer {
        PrepareAnswer::Refused {
            epoch: self.state.promised_epoch,
            to,
            known: self.known(),
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

    /// Whether this voter, named `me`, may follow the commit of `epoch` to `primary`: a
    /// candidate never confirms its own promotion below the epoch it promised since (a
    /// coordinator counts on that to rule the attempt out: `Promotion`'s `ruled_out`).
    pub fn may_follow(&self, me: &str, primary: &str, epoch: u64) -> bool {
        primary != me || epoch >= self.state.promised_epoch
    }

    /// Records `members` as the membership of `epoch` if it is the epoch followed and its
    /// membership is not known yet (a primary started from an older file fixes its own).
    /// Returns whether the state changed.
    pub fn learn_members(&mut self, epoch: u64, members: &Members) -> bool {
        if epoch != self.state.epoch || self.state.members.is_some() {
            return false;
        }
        self.state.members = Some(members.clone());
        true
    }

    /// The promotion to `epoch` of `primary`, with `members` when the message carried them,
    /// completed. Returns whether the state changed.
    pub fn on_commit(&mut self, primary: &str, epoch: u64, members: Option<&Members>) -> bool {
        if epoch < self.state.epoch {
            return false;
        }
        if epoch == self.state.epoch && self.state.primary == primary {
            // Already followed: learn the membership if it was not known.
            if self.state.members.is_none() && members.is_some() {
                self.follow(primary, epoch, members);
                return true;
            }
            return false;
        }
        self.follow(primary, epoch, members);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(lease_ms: u64) -> Members {
        let v: Vec<String> = ["main", "lan-1", "lan-2", "watch-1"]
            .map(String::from)
            .into();
        Members::new(&v, lease_ms)
    }

    fn voter() -> Voter {
        let s = VoterState::first("main", 1, Some(members(4_000)));
        Voter::restarted(s, 4_000, 0)
    }

    fn lease(v: &mut Voter, from: &str, epoch: u64, now: u64) -> LeaseAnswer {
        v.on_lease_request(from, epoch, &members(4_000), now).0
    }

    fn prepare(v: &mut Voter, to: &str, epoch: u64, now: u64) -> (PrepareAnswer, bool) {
        v.on_prepare(to, epoch, &members(4_000), now)
    }

    fn remaining(a: &PrepareAnswer) -> u64 {
        match a {
            PrepareAnswer::Promised {
                lease_remaining_ms, ..
            } => *lease_remaining_ms,
            other => panic!("refused: {other:?}"),
        }
    }

    #[test]
    fn grants_the_primary_of_its_epoch_and_refuses_others() {
        let mut v = voter();
        assert_eq!(
            lease(&mut v, "main", 1, 10),
            LeaseAnswer::Granted { epoch: 1 }
        );
        assert!(matches!(
            lease(&mut v, "lan-1", 1, 10),
            LeaseAnswer::Refused { .. }
        ));
        assert!(matches!(
            lease(&mut v, "main", 0, 10),
            LeaseAnswer::Refused { .. }
        ));
    }

    #[test]
    fn after_a_promise_the_old_primary_gets_no_lease() {
        let mut v = voter();
        lease(&mut v, "main", 1, 1_000);
        let (answer, persist) = prepare(&mut v, "lan-1", 2, 2_000);
        assert!(persist);
        assert_eq!(remaining(&answer), 3_000);
        assert_eq!(
            lease(&mut v, "main", 1, 2_100),
            LeaseAnswer::Refused {
                epoch: 2,
                primary: "lan-1".into(),
                committed: false
            }
        );
        // One promise per epoch.
        assert!(matches!(
            prepare(&mut v, "lan-2", 2, 2_200).0,
            PrepareAnswer::Refused { .. }
        ));
        // The committed new primary gets its lease.
        assert!(v.on_commit("lan-1", 2, Some(&members(4_000))));
        assert_eq!(
            lease(&mut v, "lan-1", 2, 7_000),
            LeaseAnswer::Granted { epoch: 2 }
        );
    }

    #[test]
    fn only_the_primary_releases_its_grant_and_a_promise_then_waits_nothing() {
        let mut v = voter();
        lease(&mut v, "main", 1, 1_000);
        assert!(!v.on_release("lan-1", 1, 1_500), "not the primary");
        assert!(!v.on_release("main", 0, 1_500), "an older epoch");
        assert!(v.on_release("main", 1, 1_500));
        assert_eq!(remaining(&prepare(&mut v, "lan-1", 2, 1_600).0), 0);
    }

    #[test]
    fn a_restarted_voter_assumes_a_full_lease_is_running() {
        let v = voter();
        let mut v = Voter::restarted(v.state().clone(), 4_000, 50_000);
        assert_eq!(remaining(&prepare(&mut v, "lan-1", 2, 50_500).0), 3_500);
    }

    /// A reload made the primary's lease longer than this voter's configured one: the grant
    /// runs as long as the primary counts on, and after a restart the voter still assumes
    /// the longer one may run.
    #[test]
    fn a_longer_lease_asked_for_is_granted_in_full_and_remembered_across_a_restart() {
        let mut v = voter();
        let (answer, persist) = v.on_lease_request("main", 1, &members(10_000), 1_000);
        assert_eq!(answer, LeaseAnswer::Granted { epoch: 1 });
        assert!(
            persist,
            "the longer grant is recorded before it is answered"
        );
        assert_eq!(v.state().max_lease_ms, 10_000);
        assert_eq!(
            remaining(&v.clone().on_prepare("lan-1", 2, &members(4_000), 2_000).0),
            9_000
        );
        let mut restarted = Voter::restarted(v.state().clone(), 4_000, 50_000);
        assert_eq!(
            remaining(&prepare(&mut restarted, "lan-1", 2, 50_000).0),
            10_000
        );
        let (_, persist) = v.on_lease_request("main", 1, &members(10_000), 3_000);
        assert!(!persist, "nothing new to record");
    }

    #[test]
    fn promises_report_their_membership_until_a_commit_with_one_settles_them() {
        let mut v = voter();
        let three: Vec<String> = ["main", "lan-1", "watch-1"].map(String::from).into();
        let three = Members::new(&three, 4_000);
        let (answer, _) = v.on_prepare("lan-1", 2, &three, 100);
        let PrepareAnswer::Promised { known, .. } = answer else {
            panic!("promised")
        };
        assert_eq!(known.members, Some(members(4_000)), "the epoch it follows");
        assert_eq!(
            known.pending,
            vec![Pending {
                epoch: 2,
                members: three.clone(),
                candidate: "lan-1".into(),
            }]
        );
        // Learned without a membership (a stream's handshake): the promise stays reported.
        assert!(v.on_commit("lan-1", 2, None));
        assert_eq!(v.known().members, None);
        assert_eq!(v.known().pending.len(), 1);
        assert!(
            v.on_commit("lan-1", 2, Some(&three)),
            "the membership is learned"
        );
        assert_eq!(v.known().members, Some(three));
        assert!(v.known().pending.is_empty());
    }

    /// One epoch has one membership: a prepare for the epoch already promised to the same
    /// candidate but for other voters is another promotion, and is refused.
    #[test]
    fn a_prepare_for_a_promised_epoch_with_other_voters_is_refused() {
        let mut v = voter();
        let (a, _) = prepare(&mut v, "lan-1", 2, 0);
        assert!(matches!(a, PrepareAnswer::Promised { .. }));
        let other: Vec<String> = ["lan-1", "lan-2", "x", "y", "z"].map(String::from).into();
        let (b, changed) = v.on_prepare("lan-1", 2, &Members::new(&other, 4_000), 10);
        assert!(matches!(b, PrepareAnswer::Refused { .. }), "{b:?}");
        assert!(!changed);
    }

    #[test]
    fn a_candidate_never_follows_its_own_promotion_below_a_later_promise() {
        let mut v = voter();
        prepare(&mut v, "lan-2", 3, 0);
        assert!(
            !v.may_follow("lan-1", "lan-1", 2),
            "lan-1 promised 3 to lan-2"
        );
        assert!(v.may_follow("lan-1", "lan-2", 3));
        assert!(
            v.may_follow("watch-1", "lan-1", 2),
            "another node learns it"
        );
    }

    #[test]
    fn a_retried_prepare_is_answered_the_same_and_not_rewritten() {
        let mut v = voter();
        let (first, persist) = prepare(&mut v, "lan-1", 2, 100);
        assert!(persist);
        let (again, persist) = prepare(&mut v, "lan-1", 2, 100);
        assert_eq!(first, again);
        assert!(!persist);
    }
}
