//! Who votes, and for how long a lease runs, in one epoch (DESIGN.md §7 "membership").
//!
//! An epoch's membership is fixed for the epoch's life: its primary counts lease grants from
//! a majority of it, and a promotion that replaces the epoch needs promises from a majority
//! of it. A reload that changes the voters (adding a spare is one: spares vote by default)
//! or the lease length changes nothing by itself; the change takes effect when the next
//! epoch starts (a promotion or a switchover), whose promotion needs a majority of the old
//! membership *and* a majority of the new one (joint consensus). Until then the old rules
//! hold everywhere.
//!
//! Why the coordinator can find the membership to replace (see [`required`]): every voter
//! reports the epoch it follows with its membership, and, for every promise it made above
//! that epoch, the membership that promise was made for. Let `H` be the highest followed
//! epoch reported with a known membership. Every epoch committed after `H` was prepared by a
//! quorum that includes a majority of `M(H)` or of a later epoch's membership, so a quorum of
//! `M(H)` meets one of its promisers, which still reports that promise (it drops promises
//! only when it learns a commit with its membership, which would raise `H`); following those
//! reports from one committed epoch to the next reaches the newest epoch that may hold a
//! lease. Requiring a majority of every membership reported above `H` (and of `M(H)`, and of
//! the new membership) therefore meets every lease that may still run.

use serde::{Deserialize, Serialize};

/// Most distinct memberships a voter remembers promises for above the epoch it follows.
/// Past it, it refuses new promises until a promotion commits: each is a different voter
/// set an operator tried without completing a promotion.
pub const MAX_PENDING: usize = 8;

/// Most voters a membership may name (a peer's frame naming more is refused).
pub const MAX_VOTERS: usize = 64;
/// Longest lease a membership may ask for: one hour (a lease is seconds in practice).
pub const MAX_LEASE_MS: u64 = 3_600_000;

/// The voters of an epoch and the length of the leases they grant its primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Sorted, without duplicates.
    pub voters: Vec<String>,
    pub lease_ms: u64,
}

impl Members {
    pub fn new(voters: &[String], lease_ms: u64) -> Self {
        let mut voters = voters.to_vec();
        voters.sort();
        voters.dedup();
        assert!(!voters.is_empty(), "an epoch has at least one voter");
        assert!(lease_ms > 0, "a lease lasts some time");
        Members { voters, lease_ms }
    }

    /// Checks a membership received from a peer (deserialized, so [`Members::new`]'s
    /// guarantees do not hold yet): voters sorted, distinct, at most [`MAX_VOTERS`]; a
    /// lease between 1 ms and [`MAX_LEASE_MS`].
    pub fn check(&self) -> Result<(), String> {
        if self.voters.is_empty() || self.voters.len() > MAX_VOTERS {
            return Err(format!(
                "a membership has 1 to {MAX_VOTERS} voters, not {}",
                self.voters.len()
            ));
        }
        if self.voters.windows(2).any(|w| w[0] >= w[1]) {
            return Err("a membership's voters are sorted and distinct".into());
        }
        if self.lease_ms == 0 || self.lease_ms > MAX_LEASE_MS {
            return Err(format!(
                "a lease lasts 1 ms to {MAX_LEASE_MS} ms, not {}",
                self.lease_ms
            ));
        }
        Ok(())
    }

    /// How many of the voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    pub fn contains(&self, name: &str) -> bool {
        self.voters.iter().any(|v| v == name)
    }

    /// How many of `names` vote here.
    pub fn count<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> usize {
        names.into_iter().filter(|n| self.contains(n)).count()
    }

    /// Whether `names` hold a majority of the voters.
    pub fn has_majority<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> bool {
        self.count(names) >= self.quorum()
    }
}

/// A promise a voter made above the epoch it follows, the membership it was made for, and
/// the candidate it was made to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub epoch: u64,
    pub members: Members,
    /// Empty in files of older versions.
    #[serde(default)]
    pub candidate: String,
}

/// What a voter reports to a coordinator: the epoch it follows with its membership (None
/// when it learned the epoch without it), the promises it made above that epoch, and the
/// longest lease it ever granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub epoch: u64,
    pub members: Option<Members>,
    pub pending: Vec<Pending>,
    pub max_lease_ms: u64,
}

impl Known {
    /// A report received from a peer, kept only as far as it is well formed: a membership
    /// that fails [`Members::check`] is dropped (the report then names none), as are pending
    /// entries past [`MAX_PENDING`] or malformed; the lease is capped.
    pub fn sanitized(mut self) -> Known {
        if self.members.as_ref().is_some_and(|m| m.check().is_err()) {
            self.members = None;
        }
        self.pending.retain(|p| p.members.check().is_ok());
        self.pending.truncate(MAX_PENDING);
        self.max_lease_ms = self.max_lease_ms.min(MAX_LEASE_MS);
        self
    }
}

/// Records a promise for `epoch` to `candidate` made for `members` in `pending`: one entry
/// per distinct voter set and candidate, with the highest epoch promised for it. Returns
/// false (nothing recorded) when [`MAX_PENDING`] such entries are already pending.
pub fn note_pending(
    pending: &mut Vec<Pending>,
    epoch: u64,
    members: &Members,
    candidate: &str,
) -> bool {
    if let Some(p) = pending
        .iter_mut()
        .find(|p| p.members.voters == members.voters && p.candidate == candidate)
    {
        p.epoch = p.epoch.max(epoch);
        p.members.lease_ms = p.members.lease_ms.max(members.lease_ms);
        return true;
    }
    if pending.len() >= MAX_PENDING {
        return false;
    }
    pending.push(Pending {
        epoch,
        members: members.clone(),
        candidate: candidate.to_string(),
    });
    true
}

/// The memberships a promotion to a new epoch needs a majority of each of: the new one
/// (`next`), the membership of the highest followed epoch reported with one, and every
/// membership reported promised above that epoch, except those `ruled_out` (an attempt
/// that can no longer commit). Deduplicated by voter set.
pub fn required<'a>(
    next: &Members,
    reports: impl IntoIterator<Item = &'a Known>,
    ruled_out: impl Fn(&Pending) -> bool,
) -> Vec<Members> {
    let reports: Vec<&Known> = reports.into_iter().collect();
    let floor = reports
        .iter()
        .filter(|k| k.members.is_some())
        .map(|k| k.epoch)
        .max()
        .unwrap_or(0);
    // Every membership reported for that epoch: one epoch has one, but a report that
    // disagrees must not be the one left out.
    let bases: Vec<&Members> = reports
        .iter()
        .filter(|k| k.epoch == floor)
        .filter_map(|k| k.members.as_ref())
        .collect();
    let mut out = vec![next.clone()];
    let mut add = |m: &Members| {
        if let Some(o) = out.iter_mut().find(|o| o.voters == m.voters) {
            o.lease_ms = o.lease_ms.max(m.lease_ms);
        } else {
            out.push(m.clone());
        }
    };
    for m in bases {
        add(m);
    }
    for k in &reports {
        for p in k
            .pending
            .iter()
            .filter(|p| p.epoch > floor && !ruled_out(p))
        {
            add(&p.members);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[&str]) -> Members {
        let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
        Members::new(&v, 1_000)
    }

    #[test]
    fn a_membership_is_sorted_and_counts_a_majority() {
        let a = m(&["watch-1", "main", "lan-1", "main"]);
        assert_eq!(a.voters, ["lan-1", "main", "watch-1"]);
        assert_eq!(a.quorum(), 2);
        let names = ["main".to_string(), "lan-9".to_string()];
        assert!(!a.has_majority(&names));
        let names = ["main".to_string(), "watch-1".to_string()];
        assert!(a.has_majority(&names));
    }

    /// The issue's split brain: voters {main, lan-1, watch-1}; a reload adds lan-2 and
    /// lan-3. A promotion seeing the old membership needs a majority of both.
    #[test]
    fn a_new_voter_set_needs_a_majority_of_the_old_one_too() {
        let old = m(&["main", "lan-1", "watch-1"]);
        let next = m(&["main", "lan-1", "watch-1", "lan-2", "lan-3"]);
        let watch = Known {
            epoch: 1,
            members: Some(old.clone()),
            ..Known::default()
        };
        let r = required(&next, [&watch], |_| false);
        assert_eq!(r, vec![next.clone(), old]);
        let promised: Vec<String> = ["watch-1", "lan-2", "lan-3"].map(String::from).into();
        assert!(r[0].has_majority(&promised));
        assert!(
            !r[1].has_majority(&promised),
            "3 of 5 new voters are not a majority of the old 3"
        );
    }

    #[test]
    fn promises_above_the_highest_known_epoch_are_required_and_older_ones_are_not() {
        let next = m(&["a", "b", "c"]);
        let old = m(&["a", "b", "x"]);
        let tried = m(&["a", "y", "z"]);
        let stale = m(&["q", "r", "s"]);
        let k = Known {
            epoch: 4,
            members: Some(old.clone()),
            pending: vec![
                Pending {
                    epoch: 3,
                    members: stale,
                    candidate: "c".into(),
                },
                Pending {
                    epoch: 5,
                    members: tried.clone(),
                    candidate: "c".into(),
                },
            ],
            max_lease_ms: 1_000,
        };
        let lagging = Known {
            epoch: 2,
            members: Some(m(&["a"])),
            ..Known::default()
        };
        assert_eq!(
            required(&next, [&k, &lagging], |_| false),
            vec![next, old, tried]
        );
    }

    #[test]
    fn an_epoch_learned_without_its_membership_does_not_lower_the_base() {
        let next = m(&["a", "b", "c"]);
        let old = m(&["a", "b", "x"]);
        let tried = m(&["x", "y", "z"]);
        let knows = Known {
            epoch: 2,
            members: Some(old.clone()),
            ..Known::default()
        };
        let adopted = Known {
            epoch: 3,
            members: None,
            pending: vec![Pending {
                epoch: 3,
                members: tried.clone(),
                candidate: "c".into(),
            }],
            max_lease_ms: 0,
        };
        assert_eq!(
            required(&next, [&knows, &adopted], |_| false),
            vec![next, old, tried]
        );
    }

    #[test]
    fn a_membership_from_a_peer_is_checked() {
        assert!(m(&["a", "b"]).check().is_ok());
        let bad = [
            Members {
                voters: vec![],
                lease_ms: 1_000,
            },
            Members {
                voters: vec!["b".into(), "a".into()],
                lease_ms: 1_000,
            },
            Members {
                voters: vec!["a".into(), "a".into()],
                lease_ms: 1_000,
            },
            Members {
                voters: vec!["a".into()],
                lease_ms: 0,
            },
            Members {
                voters: vec!["a".into()],
                lease_ms: MAX_LEASE_MS + 1,
            },
            Members {
                voters: (0..=MAX_VOTERS).map(|i| format!("n{i:03}")).collect(),
                lease_ms: 1_000,
            },
        ];
        for b in bad {
            assert!(b.check().is_err(), "{b:?}");
        }
    }

    #[test]
    fn pending_promises_are_bounded_by_distinct_voter_sets() {
        let mut pending = Vec::new();
        for e in 2..2 + MAX_PENDING as u64 {
            let set = m(&["a", &format!("n{e}")]);
            assert!(note_pending(&mut pending, e, &set, "c"));
        }
        assert!(
            note_pending(&mut pending, 20, &m(&["a", "n2"]), "c"),
            "a set already pending is raised"
        );
        assert_eq!(pending[0].epoch, 20);
        assert!(
            !note_pending(&mut pending, 21, &m(&["a", "other"]), "c"),
            "a new set past the bound is refused"
        );
        assert_eq!(pending.len(), MAX_PENDING);
    }
}
