//! The promotion coordinator (DESIGN.md §7), pure: prepare (promises for the next epoch from
//! a quorum of voters), fence (wait until every lease those voters granted has surely run
//! out), commit (tell the candidate and every voter). Safety: an old primary's lease needs
//! grants from a quorum, every quorum meets the promise quorum, and a voter that promised
//! grants no more; so once the promisers' grants ran out, the old lease has too.
//!
//! Clocks: each voter reports how long its last grant may still run, on its own clock; the
//! coordinator waits that long on its own clock, stretched by [`CLOCK_RATE_MARGIN`] and
//! padded by [`FENCE_PAD_MS`] for clocks that run at slightly different rates.
//!
//! The checks that need data (candidate behind other spares, loss preview, old primary still
//! reachable) are the caller's: it decides before starting, with what the promises report.

use std::collections::BTreeMap;

/// Relative clock-rate difference tolerated between any two nodes.
pub const CLOCK_RATE_MARGIN: f64 = 0.05;
/// Fixed extra wait at the end of the fence.
pub const FENCE_PAD_MS: u64 = 100;

/// What the coordinator asks to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Ask `to` to promise `epoch` to the candidate.
    Prepare {
        to: String,
        epoch: u64,
        candidate: String,
    },
    /// Tell `to` that `candidate` is the primary of `epoch`.
    Commit {
        to: String,
        epoch: u64,
        candidate: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Preparing,
    /// Waiting until `until_ms` (own clock).
    Fencing {
        until_ms: u64,
    },
    Committed,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Promotion {
    pub candidate: String,
    pub epoch: u64,
    voters: Vec<String>,
    quorum: usize,
    /// Voter → when its promise must have run out (own clock): arrival + stretched remaining.
    promises: BTreeMap<String, u64>,
    refusals: BTreeMap<String, String>,
    pub phase: Phase,
}

impl Promotion {
    /// Starts promoting `candidate` to `epoch` among `voters`; returns the prepares to send.
    pub fn start(candidate: &str, epoch: u64, voters: &[String]) -> (Self, Vec<Out>) {
        assert!(!voters.is_empty(), "a promotion needs voters");
        let quorum = voters.len() / 2 + 1;
        let p = Promotion {
            candidate: candidate.to_string(),
            epoch,
            voters: voters.to_vec(),
            quorum,
            promises: BTreeMap::new(),
            refusals: BTreeMap::new(),
            phase: Phase::Preparing,
        };
        let out = voters
            .iter()
            .map(|v| Out::Prepare {
                to: v.clone(),
                epoch,
                candidate: candidate.to_string(),
            })
            .collect();
        (p, out)
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn promised_by(&self) -> Vec<String> {
        self.promises.keys().cloned().collect()
    }

    /// `voter` promised, with a lease of its own still running `lease_remaining_ms`.
    pub fn on_promise(&mut self, voter: &str, epoch: u64, lease_remaining_ms: u64, now_ms: u64) {
        if epoch != self.epoch
            || self.phase != Phase::Preparing
            || !self.voters.iter().any(|v| v == voter)
        {
            return;
        }
        let stretched = (lease_remaining_ms as f64 * (1.0 + CLOCK_RATE_MARGIN)).ceil() as u64;
        self.promises
            .insert(voter.to_string(), now_ms + stretched + FENCE_PAD_MS);
        if self.promises.len() >= self.quorum {
            let until_ms = self
                .promises
                .values()
                .copied()
                .max()
                .expect("a quorum is not empty");
            self.phase = Phase::Fencing { until_ms };
        }
    }

    /// `voter` refused (it promised `epoch` to someone else). Fails once a quorum is out of reach.
    pub fn on_refusal(&mut self, voter: &str, why: String) {
        if self.phase != Phase::Preparing {
            return;
        }
        self.refusals.insert(voter.to_string(), why);
        if self.voters.len() - self.refusals.len() < self.quorum {
            let reasons: Vec<String> = self
                .refusals
                .iter()
                .map(|(v, w)| format!("{v}: {w}"))
                .collect();
            self.phase = Phase::Failed(format!(
                "no quorum of promises ({} of {} voters needed): {}",
                self.quorum,
                self.voters.len(),
                reasons.join("; ")
            ));
        }
    }

    /// Gives up if no quorum came in time.
    pub fn on_timeout(&mut self) {
        if self.phase == Phase::Preparing {
            self.phase = Phase::Failed(format!(
                "only {} of the {} promises needed arrived in time",
                self.promises.len(),
                self.quorum
            ));
        }
    }

    /// Advances the fence; returns the commits to send once it is over.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Out> {
        let Phase::Fencing { until_ms } = self.phase else {
            return Vec::new();
        };
        if now_ms < until_ms {
            return Vec::new();
        }
        self.phase = Phase::Committed;
        let mut to: Vec<String> = vec![self.candidate.clone()];
        to.extend(
            self.voters
                .iter()
                .filter(|v| **v != self.candidate)
                .cloned(),
        );
        to.into_iter()
            .map(|v| Out::Commit {
                to: v,
                epoch: self.epoch,
                candidate: self.candidate.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters() -> Vec<String> {
        ["main", "lan-1", "lan-2", "watch-1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn commits_only_after_a_quorum_and_the_longest_lease_has_run_out() {
        let (mut p, out) = Promotion::start("lan-1", 2, &voters());
        assert_eq!(out.len(), 4);
        assert_eq!(p.quorum(), 3);
        p.on_promise("lan-1", 2, 0, 100);
        p.on_promise("lan-2", 2, 2_000, 110);
        assert_eq!(p.tick(5_000), Vec::new(), "no quorum yet");
        p.on_promise("watch-1", 2, 500, 120);
        let until = 110 + 2_100 + FENCE_PAD_MS;
        assert_eq!(p.phase, Phase::Fencing { until_ms: until });
        assert!(p.tick(until - 1).is_empty());
        let commits = p.tick(until);
        assert_eq!(commits.len(), 4);
        assert_eq!(
            commits[0],
            Out::Commit {
                to: "lan-1".into(),
                epoch: 2,
                candidate: "lan-1".into()
            }
        );
    }

    #[test]
    fn fails_once_a_quorum_cannot_be_reached() {
        let (mut p, _) = Promotion::start("lan-1", 2, &voters());
        p.on_refusal("main", "promised 2 to lan-2".into());
        assert_eq!(p.phase, Phase::Preparing);
        p.on_refusal("lan-2", "promised 2 to lan-2".into());
        assert!(matches!(p.phase, Phase::Failed(_)));
    }
}
