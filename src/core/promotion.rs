//! The promotion coordinator (DESIGN.md §7), pure: prepare (promises for the next epoch from
//! a quorum of voters), fence (wait until every lease those voters granted has surely run
//! out), recheck (the shell measures the loss again with final positions), commit (the
//! candidate, which must confirm, then every other voter). The coordinator's shell
//! (`actors/coordinator.rs`) carries out what this returns and nothing else. Safety: an old primary's lease needs
//! grants from a quorum, every quorum meets the promise quorum, and a voter that promised
//! grants no more; so once the promisers' grants ran out, the old lease has too.
//!
//! Clocks: each voter reports how long its last grant may still run, on its own clock; the
//! coordinator waits that long on its own clock, stretched by [`CLOCK_RATE_MARGIN`] and
//! padded by [`FENCE_PAD_MS`] for clocks that run at slightly different rates.
//!
//! The checks that need data (candidate behind other spares, loss preview, old primary still
//! reachable) are [`refusals`]: the caller surveys the nodes, then asks it, before preparing
//! and again right before committing.

use std::collections::BTreeMap;

use serde::Serialize;

/// A data node as the coordinator's survey saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    /// Whether it answered.
    pub reachable: bool,
    /// `primary`, `spare`, `fenced` (empty when unreachable).
    pub role: String,
    /// Its state text (`streaming`, `seeding (40 %)`, ...).
    pub state: String,
    pub epoch: u64,
    /// Its last durable LSN.
    pub last_lsn: u64,
    /// On a primary: whether it holds a valid write lease.
    pub lease_valid: bool,
    /// Its applied LSN.
    pub applied_lsn: u64,
}

/// What promoting the candidate would lose: transactions a reachable node holds beyond it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Loss {
    /// Node holding the most the candidate lacks, if any.
    pub ahead: Option<String>,
    pub records: u64,
    pub transactions: u64,
    pub bytes: u64,
    /// Commit time of the newest transaction that would be lost (ms since the Unix epoch).
    pub newest_commit_ms: Option<u64>,
}

/// What the operator allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Promote although the old primary answers (its lease is still waited out).
    pub force: bool,
    /// Transactions the operator accepts to lose.
    pub accept_loss: u64,
    /// Keep the history only up to this LSN (`--until`).
    pub until: Option<u64>,
}

/// Why the promotion of `candidate` must not go ahead (empty: it may).
pub fn refusals(
    candidate: Option<&Seen>,
    old_primary: Option<&Seen>,
    loss: &Loss,
    allow: Allow,
) -> Vec<String> {
    let mut out = Vec::new();
    match candidate {
        None => out.push("the candidate is not a data node of the configuration".into()),
        Some(c) if !c.reachable => out.push(format!(
            "{} does not answer: a promotion needs the candidate running",
            c.name
        )),
        Some(c) if c.role == "primary" => out.push(format!("{} is already the primary", c.name)),
        Some(c) if c.role == "fenced" => out.push(format!(
            "{} is a fenced old primary: run `spare rejoin {}` first, let it catch up, then promote it",
            c.name, c.name
        )),
        Some(c) if c.state.starts_with("seeding") || c.state.starts_with("apply stopped") || c.state.starts_with("apply retrying") || c.state == "diverged" => {
            out.push(format!(
                "{} is {}: it holds no complete copy to promote",
                c.name, c.state
            ))
        }
        Some(c) => {
            if let Some(until) = allow.until {
                if c.last_lsn < until {
                    out.push(format!("{} holds the log only up to LSN {}, not up to {until}: wait until it received it, or choose a lower LSN", c.name, c.last_lsn));
                }
                if c.applied_lsn > until {
                    out.push(format!("{} already applied LSN {}, past {until}: promote up to a point needs a spare that has not applied it yet (a delayed or paused one)", c.name, c.applied_lsn));
                }
            }
        }
    }
    if let Some(p) = old_primary.filter(|p| p.reachable && p.role == "primary") {
        if !allow.force {
            out.push(format!(
                "the primary {} still answers{}: use `spare switchover` for a planned change, or --force if it must be replaced anyway (its lease is still waited out)",
                p.name,
                if p.lease_valid { " and holds its write lease" } else { "" }
            ));
        }
    }
    if loss.transactions > allow.accept_loss {
        let newest = loss.newest_commit_ms.map_or_else(String::new, |ms| {
            format!(
                ", the newest committed at {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
                )
            )
        });
        out.push(match allow.until {
            Some(until) => format!(
                "{} transaction(s) after LSN {until} ({} bytes{newest}) would be discarded (kept in quarantine/); pass --accept-loss {} to confirm",
                loss.transactions, loss.bytes, loss.transactions
            ),
            None => format!(
                "{} transaction(s) ({} bytes{newest}) held by {} would be lost; promote {} instead, or pass --accept-loss {} to accept",
                loss.transactions,
                loss.bytes,
                loss.ahead.as_deref().unwrap_or("another node"),
                loss.ahead.as_deref().unwrap_or("that node"),
                loss.transactions
            ),
        });
    }
    out
}

/// Relative clock-rate difference tolerated between any two nodes.
pub const CLOCK_RATE_MARGIN: f64 = 0.05;
/// Fixed extra wait at the end of the fence.
pub const FENCE_PAD_MS: u64 = 100;

/// How long after a promise the lease its voter granted has surely run out on the old
/// primary: the grant's remaining time on the voter's clock, stretched for a coordinator
/// clock up to [`CLOCK_RATE_MARGIN`] fast; plus what a primary clock up to that margin slow
/// adds to its whole lease, counted from its last granted request however long ago that was
/// (`lease × m / (1 − m)`); plus [`FENCE_PAD_MS`].
pub fn fence_wait_ms(lease_remaining_ms: u64, lease_ms: u64) -> u64 {
    let m = CLOCK_RATE_MARGIN;
    let remaining = lease_remaining_ms as f64 * (1.0 + m);
    let slow_primary = lease_ms as f64 * m / (1.0 - m);
    (remaining + slow_primary).ceil() as u64 + FENCE_PAD_MS
}

/// What the coordinator asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Ask `to` to promise `epoch` to the candidate; answer with `on_promise` or
    /// `on_refusal`.
    Prepare {
        to: String,
        epoch: u64,
        candidate: String,
    },
    /// The fence is over: check again, with the final positions, that the promotion may go
    /// ahead (the loss preview); answer with `on_recheck`.
    Recheck,
    /// Tell `to` that `candidate` is the primary of `epoch`. With `confirm`, the answer
    /// decides the promotion: report it with `on_commit_reply`; without, it is best effort
    /// (a node that misses it learns the epoch from the new primary).
    Commit {
        to: String,
        epoch: u64,
        candidate: String,
        confirm: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Preparing,
    /// Waiting until `until_ms` (own clock).
    Fencing {
        until_ms: u64,
    },
    /// The fence is over; waiting for the recheck.
    Checking,
    /// Waiting for the candidate to confirm the commit.
    Committing,
    Committed,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Promotion {
    pub candidate: String,
    pub epoch: u64,
    voters: Vec<String>,
    /// Nodes told of the commit besides the voters (non-voting nodes: an old primary that
    /// does not vote must learn it to rejoin).
    also_tell: Vec<String>,
    quorum: usize,
    /// How long a lease lasts (the configuration's `lease`).
    lease_ms: u64,
    /// Voter → when its promise must have run out (own clock): arrival + stretched remaining.
    promises: BTreeMap<String, u64>,
    refusals: BTreeMap<String, String>,
    /// Voters whose promise came after the quorum.
    late: Vec<String>,
    pub phase: Phase,
}

impl Promotion {
    /// Starts promoting `candidate` to `epoch` among `voters` (telling `also_tell` of the
    /// commit too), whose leases last `lease_ms`; returns the prepares to send.
    pub fn start(
        candidate: &str,
        epoch: u64,
        voters: &[String],
        also_tell: &[String],
        lease_ms: u64,
    ) -> (Self, Vec<Out>) {
        assert!(!voters.is_empty(), "a promotion needs voters");
        let quorum = voters.len() / 2 + 1;
        let p = Promotion {
            candidate: candidate.to_string(),
            epoch,
            voters: voters.to_vec(),
            also_tell: also_tell
                .iter()
                .filter(|n| !voters.contains(n))
                .cloned()
                .collect(),
            quorum,
            lease_ms,
            promises: BTreeMap::new(),
            refusals: BTreeMap::new(),
            late: Vec::new(),
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

    /// Every voter that promised, the fence's quorum first.
    pub fn promised_by(&self) -> Vec<String> {
        self.promises.keys().chain(&self.late).cloned().collect()
    }

    /// `voter` promised, with a lease of its own still running `lease_remaining_ms`. A
    /// promise arriving after the quorum is noted but does not move the fence: only the
    /// first quorum's grants matter (any lease quorum meets it).
    pub fn on_promise(&mut self, voter: &str, epoch: u64, lease_remaining_ms: u64, now_ms: u64) {
        if epoch != self.epoch || !self.voters.iter().any(|v| v == voter) {
            return;
        }
        if matches!(self.phase, Phase::Fencing { .. }) {
            self.late.push(voter.to_string());
            return;
        }
        if self.phase != Phase::Preparing {
            return;
        }
        self.promises.insert(
            voter.to_string(),
            now_ms + fence_wait_ms(lease_remaining_ms, self.lease_ms),
        );
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

    /// Advances the fence; once it is over, asks for the recheck.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Out> {
        let Phase::Fencing { until_ms } = self.phase else {
            return Vec::new();
        };
        if now_ms < until_ms {
            return Vec::new();
        }
        self.phase = Phase::Checking;
        vec![Out::Recheck]
    }

    /// The recheck's verdict: the candidate's commit (which it must confirm), or failure.
    pub fn on_recheck(&mut self, verdict: std::result::Result<(), String>) -> Vec<Out> {
        if self.phase != Phase::Checking {
            return Vec::new();
        }
        if let Err(why) = verdict {
            self.phase = Phase::Failed(why);
            return Vec::new();
        }
        self.phase = Phase::Committing;
        vec![self.commit_to(&self.candidate, true)]
    }

    /// `from` answered the commit: the candidate's confirmation commits the promotion and
    /// tells every other voter; without it the promotion fails (the promises hold, so the
    /// same promotion can be run again).
    pub fn on_commit_reply(&mut self, from: &str, confirmed: bool) -> Vec<Out> {
        if self.phase != Phase::Committing || from != self.candidate {
            return Vec::new();
        }
        if !confirmed {
            self.phase = Phase::Failed(format!(
                "{} did not confirm the commit of epoch {}; the promises hold: run the same promotion again",
                self.candidate, self.epoch
            ));
            return Vec::new();
        }
        self.phase = Phase::Committed;
        self.voters
            .iter()
            .chain(&self.also_tell)
            .filter(|v| **v != self.candidate)
            .map(|v| self.commit_to(v, false))
            .collect()
    }

    /// The candidate's confirmation did not come in time.
    pub fn on_commit_timeout(&mut self) {
        self.on_commit_reply(&self.candidate.clone(), false);
    }

    fn commit_to(&self, to: &str, confirm: bool) -> Out {
        Out::Commit {
            to: to.to_string(),
            epoch: self.epoch,
            candidate: self.candidate.clone(),
            confirm,
        }
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
        let (mut p, out) = Promotion::start("lan-1", 2, &voters(), &["office".to_string()], 2_000);
        assert_eq!(out.len(), 4, "prepares go to the voters only");
        assert_eq!(p.quorum(), 3);
        p.on_promise("lan-1", 2, 0, 100);
        p.on_promise("lan-2", 2, 2_000, 110);
        assert_eq!(p.tick(5_000), Vec::new(), "no quorum yet");
        p.on_promise("watch-1", 2, 500, 120);
        let until = 110 + fence_wait_ms(2_000, 2_000);
        assert_eq!(p.phase, Phase::Fencing { until_ms: until });
        assert!(p.tick(until - 1).is_empty());
        assert_eq!(p.tick(until), vec![Out::Recheck]);
        let first = p.on_recheck(Ok(()));
        assert_eq!(
            first,
            vec![Out::Commit {
                to: "lan-1".into(),
                epoch: 2,
                candidate: "lan-1".into(),
                confirm: true
            }],
            "the candidate alone first"
        );
        assert!(
            p.on_commit_reply("main", true).is_empty(),
            "only the candidate decides"
        );
        let rest = p.on_commit_reply("lan-1", true);
        assert_eq!(p.phase, Phase::Committed);
        assert_eq!(
            rest.len(),
            4,
            "the other voters and the non-voting office: {rest:?}"
        );
        assert!(rest
            .iter()
            .all(|o| matches!(o, Out::Commit { confirm: false, to, .. } if to != "lan-1")));
    }

    /// A primary whose clock runs `CLOCK_RATE_MARGIN` slow keeps its lease that much longer
    /// in real time, counted from its last granted request, however long before the
    /// prepare that was: the fence must cover it even when the promiser's grant is about to
    /// run out.
    #[test]
    fn the_fence_covers_a_slow_primary_clock_even_for_an_old_grant() {
        let lease_ms = 4_000;
        let (mut p, _) = Promotion::start("lan-1", 2, &voters(), &[], lease_ms);
        for v in ["lan-1", "lan-2", "watch-1"] {
            p.on_promise(v, 2, 0, 1_000);
        }
        let Phase::Fencing { until_ms } = p.phase else {
            panic!("a quorum promised")
        };
        let slow_primary_extra =
            (lease_ms as f64 * CLOCK_RATE_MARGIN / (1.0 - CLOCK_RATE_MARGIN)) as u64;
        assert!(
            until_ms >= 1_000 + slow_primary_extra,
            "the fence ends at {until_ms}, before a slow primary's lease ({} ms more)",
            slow_primary_extra
        );
    }

    #[test]
    fn a_failed_recheck_or_an_unconfirmed_commit_commits_nothing_more() {
        let fenced = || {
            let (mut p, _) = Promotion::start("lan-1", 2, &voters(), &[], 2_000);
            for v in ["lan-1", "lan-2", "watch-1"] {
                p.on_promise(v, 2, 0, 0);
            }
            assert_eq!(p.tick(1_000), vec![Out::Recheck]);
            p
        };
        let mut p = fenced();
        assert!(p
            .on_recheck(Err("3 transactions would be lost".into()))
            .is_empty());
        assert!(matches!(p.phase, Phase::Failed(ref w) if w.contains("would be lost")));
        let mut p = fenced();
        p.on_recheck(Ok(()));
        assert!(p.on_commit_reply("lan-1", false).is_empty());
        assert!(
            matches!(p.phase, Phase::Failed(ref w) if w.contains("run the same promotion again"))
        );
        let mut p = fenced();
        p.on_recheck(Ok(()));
        p.on_commit_timeout();
        assert!(matches!(p.phase, Phase::Failed(_)));
    }

    fn seen(name: &str, role: &str, lsn: u64) -> Seen {
        Seen {
            name: name.into(),
            reachable: true,
            role: role.into(),
            state: "streaming".into(),
            epoch: 1,
            last_lsn: lsn,
            lease_valid: true,
            applied_lsn: lsn,
        }
    }

    #[test]
    fn a_live_primary_or_a_loss_refuses_unless_allowed() {
        let cand = seen("lan-1", "spare", 10);
        let mut old = seen("main", "primary", 12);
        let loss = Loss {
            ahead: Some("lan-2".into()),
            records: 2,
            transactions: 2,
            bytes: 300,
            newest_commit_ms: Some(5),
        };
        let r = refusals(Some(&cand), Some(&old), &loss, Allow::default());
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("switchover") && r[1].contains("--accept-loss 2"));
        let allow = Allow {
            force: true,
            accept_loss: 2,
            until: None,
        };
        assert!(refusals(Some(&cand), Some(&old), &loss, allow).is_empty());
        old.reachable = false;
        let r = refusals(Some(&cand), Some(&old), &Loss::default(), Allow::default());
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn an_unfit_candidate_is_refused() {
        let mut c = seen("lan-1", "spare", 10);
        c.state = "seeding (40 %)".into();
        assert!(
            refusals(Some(&c), None, &Loss::default(), Allow::default())[0].contains("seeding")
        );
        c.role = "fenced".into();
        assert!(refusals(Some(&c), None, &Loss::default(), Allow::default())[0].contains("rejoin"));
        c.reachable = false;
        assert!(
            refusals(Some(&c), None, &Loss::default(), Allow::default())[0]
                .contains("does not answer")
        );
        assert!(!refusals(None, None, &Loss::default(), Allow::default()).is_empty());
    }

    #[test]
    fn fails_once_a_quorum_cannot_be_reached() {
        let (mut p, _) = Promotion::start("lan-1", 2, &voters(), &[], 2_000);
        p.on_refusal("main", "promised 2 to lan-2".into());
        assert_eq!(p.phase, Phase::Preparing);
        p.on_refusal("lan-2", "promised 2 to lan-2".into());
        assert!(matches!(p.phase, Phase::Failed(_)));
    }
}
