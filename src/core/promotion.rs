//! The promotion coordinator (DESIGN.md §7), pure: prepare (promises for the next epoch from
//! a quorum of voters), fence (wait until every lease those voters granted has surely run
//! out), recheck (the shell measures the loss again with final positions), commit (the
//! candidate, which must confirm, then every other voter). The coordinator's shell
//! (`actors/node/coordinator.rs`) carries out what this returns and nothing else. Safety: an old primary's lease needs
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

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::core::members::{self, Known, Members};
use crate::core::role::NodeRole;

/// A data node as the coordinator's survey saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    /// Whether it answered.
    pub reachable: bool,
    /// The role it answered with; None when it did not answer (written "" in reports).
    #[serde(serialize_with = "role_or_empty")]
    pub role: Option<NodeRole>,
    /// Its state text (`streaming`, `seeding (40 %)`, ...).
    pub state: String,
    pub epoch: u64,
    /// Its last durable LSN.
    pub last_lsn: u64,
    /// On a primary: whether it holds a valid write lease.
    pub lease_valid: bool,
    /// Its applied LSN.
    pub applied_lsn: u64,
    /// On a primary: the voters its lease counts (its epoch's membership).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lease_voters: Vec<String>,
}

/// A role as its name, or "" for none (the promotion report's `nodes` keep that shape).
fn role_or_empty<S: serde::Serializer>(role: &Option<NodeRole>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.map_or("", NodeRole::as_str))
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
/// Nodes that answer but whose status could not be read (another version): they run and may
/// hold what the candidate lacks, so a promotion refuses, forced or not, until they are
/// upgraded (or stopped: then they are silent, and counted as such).
pub fn unreadable_refusals<'a>(seen: impl IntoIterator<Item = &'a Seen>) -> Vec<String> {
    seen.into_iter()
        .filter(|s| s.reachable && s.role.is_none())
        .map(|s| format!("{} answered a status this version cannot read (another version?); upgrade or stop it, then promote", s.name))
        .collect()
}

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
        Some(c) if c.role == Some(NodeRole::Primary) => out.push(format!("{} is already the primary", c.name)),
        Some(c) if c.role == Some(NodeRole::Fenced) => out.push(format!(
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
    if let Some(p) = old_primary.filter(|p| p.reachable && p.role == Some(NodeRole::Primary)) {
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

/// With a synchronous commit rule (`any` of `of`) and the old primary not answering: a write
/// acknowledged under the rule is on `any` of those spares, so the loss preview sees every
/// such write only if no `any` of them are silent. Otherwise an acknowledged write may be
/// on silent spares alone, and the promotion is refused unless forced.
pub fn rule_refusal(
    any: usize,
    of: &[String],
    seen: &BTreeMap<String, Seen>,
    old_primary_answers: bool,
    force: bool,
) -> Option<String> {
    if old_primary_answers || force {
        return None;
    }
    let silent: Vec<&String> = of
        .iter()
        .filter(|n| !seen.get(*n).is_some_and(|s| s.reachable))
        .collect();
    if silent.len() < any {
        return None;
    }
    let names: Vec<&str> = silent.iter().map(|s| s.as_str()).collect();
    Some(format!(
        "the commit rule acknowledges a write once {any} of {} flushed it, and {} do not answer: writes acknowledged to clients may be on them alone, so the loss cannot be measured; start them (or reconnect them) and retry, or pass --force to promote anyway and lose what only they hold",
        of.join(", "),
        names.join(", ")
    ))
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
    ((remaining + slow_primary).ceil() as u64).saturating_add(FENCE_PAD_MS)
}

/// Why a promotion fails when no answer named an epoch's voters.
const NO_MEMBERSHIP: &str = "no node that answered knows the voters of the epoch it follows, so the promotion cannot tell whose lease it replaces; start the primary or the voters of the current epoch (they learn it from the primary's lease requests), then retry";

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
    /// The membership the new epoch will have (the coordinator's configuration).
    next: Members,
    /// Nodes told of the commit besides the voters (non-voting nodes: an old primary that
    /// does not vote must learn it to rejoin).
    also_tell: Vec<String>,
    /// Every voter a prepare went to.
    asked: BTreeSet<String>,
    /// What each voter that answered reported of memberships.
    reports: BTreeMap<String, Known>,
    /// Voter → (when its promise arrived, own clock; how long its grant may still run).
    promises: BTreeMap<String, (u64, u64)>,
    refusals: BTreeMap<String, String>,
    /// Voters whose promise came after the quorum.
    late: Vec<String>,
    /// The memberships a majority of each of which must promise (`members::required`).
    required: Vec<Members>,
    /// What the coordinator knew of memberships before asking.
    seen: Vec<Known>,
    pub phase: Phase,
}

impl Promotion {
    /// Starts promoting `candidate` to `epoch`, whose membership will be `next`; `seen` is
    /// what the coordinator already knows of memberships (its own voter's report); tells
    /// `also_tell` of the commit too. Returns the prepares to send: to every voter of every
    /// membership required so far (more follow as answers report others).
    pub fn start(
        candidate: &str,
        epoch: u64,
        next: Members,
        seen: &[Known],
        also_tell: &[String],
    ) -> (Self, Vec<Out>) {
        let mut p = Promotion {
            candidate: candidate.to_string(),
            epoch,
            next,
            also_tell: also_tell.to_vec(),
            asked: BTreeSet::new(),
            reports: BTreeMap::new(),
            promises: BTreeMap::new(),
            refusals: BTreeMap::new(),
            late: Vec::new(),
            required: Vec::new(),
            seen: Vec::new(),
            phase: Phase::Preparing,
        };
        p.seen = seen.to_vec();
        p.required = members::required(&p.next, seen, |_| false);
        // Every node is asked, voter or not: the voters of the epoch being replaced are not
        // known until someone who knows them answers.
        let mut out = p.ask_missing();
        for n in &p.also_tell.clone() {
            if p.asked.insert(n.clone()) {
                out.push(p.prepare_to(n));
            }
        }
        (p, out)
    }

    fn prepare_to(&self, to: &str) -> Out {
        Out::Prepare {
            to: to.to_string(),
            epoch: self.epoch,
            candidate: self.candidate.clone(),
        }
    }

    /// Whether an answer (or what the coordinator knew) named the membership of an epoch:
    /// without one, nothing ties this promotion to the epoch it replaces (`core::members`).
    fn knows_a_membership(&self) -> bool {
        self.seen
            .iter()
            .chain(self.reports.values())
            .any(|k| k.members.is_some())
    }

    /// The membership the new epoch will have.
    pub fn next(&self) -> &Members {
        &self.next
    }

    /// The memberships a majority of each of which must promise, as known so far.
    pub fn required(&self) -> &[Members] {
        &self.required
    }

    /// Every voter that promised, the fence's quorum first.
    pub fn promised_by(&self) -> Vec<String> {
        self.promises.keys().chain(&self.late).cloned().collect()
    }

    /// Whether the promises so far hold a majority of every required membership, the
    /// membership of a replaced epoch among them.
    pub fn has_quorum(&self) -> bool {
        self.knows_a_membership()
            && self
                .required
                .iter()
                .all(|m| m.has_majority(self.promises.keys()))
    }

    /// Prepares for the voters of the required memberships not asked yet.
    fn ask_missing(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        let voters: Vec<String> = self
            .required
            .iter()
            .flat_map(|m| m.voters.clone())
            .collect();
        for v in voters {
            if self.asked.insert(v.clone()) {
                out.push(self.prepare_to(&v));
            }
        }
        out
    }

    /// `voter` promised, with a lease of its own still running `lease_remaining_ms`, and
    /// reported `known`. A promise arriving after the quorum is noted but does not move the
    /// fence: only the quorum's grants matter (any lease quorum meets it). Returns prepares
    /// for voters of memberships the report revealed.
    pub fn on_promise(
        &mut self,
        voter: &str,
        epoch: u64,
        lease_remaining_ms: u64,
        known: Known,
        now_ms: u64,
    ) -> Vec<Out> {
        if epoch != self.epoch || !self.asked.contains(voter) {
            return Vec::new();
        }
        if matches!(self.phase, Phase::Fencing { .. }) {
            if !self.promises.contains_key(voter) && !self.late.iter().any(|l| l == voter) {
                self.late.push(voter.to_string());
            }
            return Vec::new();
        }
        if self.phase != Phase::Preparing {
            return Vec::new();
        }
        self.refusals.remove(voter);
        // A peer's figure, bounded: no lease runs longer than a membership may ask.
        let remaining = lease_remaining_ms.min(members::MAX_LEASE_MS);
        self.promises.insert(voter.to_string(), (now_ms, remaining));
        self.reports.insert(voter.to_string(), known);
        self.advance()
    }

    /// `voter` refused (it promised the epoch to someone else, or cannot be reached), and
    /// reported `known` if it answered. Fails once a quorum is out of reach.
    pub fn on_refusal(&mut self, voter: &str, why: String, known: Option<Known>) -> Vec<Out> {
        if self.phase != Phase::Preparing || self.promises.contains_key(voter) {
            return Vec::new();
        }
        self.refusals.insert(voter.to_string(), why);
        if let Some(k) = known {
            self.reports.insert(voter.to_string(), k);
        }
        self.advance()
    }

    /// Recomputes the required memberships from the reports; asks the voters newly needed;
    /// starts the fence once a majority of each promised, fails once one cannot.
    fn advance(&mut self) -> Vec<Out> {
        // An earlier attempt whose candidate promised this epoch can no longer commit: a
        // candidate never confirms a commit below the epoch it promised (`actors::voter`).
        let promised = &self.promises;
        let epoch = self.epoch;
        let ruled_out =
            |p: &members::Pending| p.epoch < epoch && promised.contains_key(&p.candidate);
        self.required = members::required(
            &self.next,
            self.seen.iter().chain(self.reports.values()),
            ruled_out,
        );
        let out = self.ask_missing();
        if self.has_quorum() {
            let longest = self.longest_lease_ms();
            let until_ms = self
                .promises
                .values()
                .map(|(at, remaining)| at.saturating_add(fence_wait_ms(*remaining, longest)))
                .max()
                .expect("a quorum is not empty");
            self.phase = Phase::Fencing { until_ms };
            return Vec::new();
        }
        let all_answered = self.asked.len() == self.promises.len() + self.refusals.len();
        if all_answered && !self.knows_a_membership() {
            self.phase = Phase::Failed(NO_MEMBERSHIP.to_string());
            return out;
        }
        if let Some(m) = self
            .required
            .iter()
            .find(|m| m.voters.len() - m.count(self.refusals.keys()) < m.quorum())
        {
            let reasons: Vec<String> = self
                .refusals
                .iter()
                .filter(|(v, _)| m.contains(v))
                .map(|(v, w)| format!("{v}: {w}"))
                .collect();
            self.phase = Phase::Failed(format!(
                "no majority of promises from the voters {} ({} needed): {}",
                m.voters.join(", "),
                m.quorum(),
                reasons.join("; ")
            ));
        }
        out
    }

    /// The longest lease any primary of the epochs replaced may hold: the fence waits out
    /// what a slow clock adds to it.
    fn longest_lease_ms(&self) -> u64 {
        let reported = self.reports.values().flat_map(|k| {
            k.members
                .iter()
                .map(|m| m.lease_ms)
                .chain(k.pending.iter().map(|p| p.members.lease_ms))
                .chain([k.max_lease_ms])
        });
        self.required
            .iter()
            .map(|m| m.lease_ms)
            .chain(reported)
            .max()
            .unwrap_or(self.next.lease_ms)
    }

    /// Gives up if no quorum came in time.
    pub fn on_timeout(&mut self) {
        if self.phase == Phase::Preparing {
            let missing: Vec<String> = self
                .required
                .iter()
                .filter(|m| !m.has_majority(self.promises.keys()))
                .map(|m| {
                    format!(
                        "{} of {} from {}",
                        m.count(self.promises.keys()),
                        m.quorum(),
                        m.voters.join(", ")
                    )
                })
                .collect();
            self.phase = Phase::Failed(match self.knows_a_membership() {
                true => format!(
                    "not enough promises arrived in time (promised / needed: {})",
                    missing.join("; ")
                ),
                false => NO_MEMBERSHIP.to_string(),
            });
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
        let everyone: BTreeSet<&String> = self.asked.iter().chain(&self.also_tell).collect();
        everyone
            .into_iter()
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

    fn members(lease_ms: u64) -> Members {
        Members::new(&voters(), lease_ms)
    }

    /// What a voter of epoch 1, led by main with `members(lease_ms)`, reports.
    fn known(lease_ms: u64) -> Known {
        Known {
            epoch: 1,
            members: Some(members(lease_ms)),
            pending: Vec::new(),
            max_lease_ms: lease_ms,
        }
    }

    fn start(lease_ms: u64, also: &[String]) -> Promotion {
        let (p, out) = Promotion::start("lan-1", 2, members(lease_ms), &[], also);
        assert_eq!(out.len(), 4 + also.len(), "prepares go to every node");
        p
    }

    fn promise(p: &mut Promotion, v: &str, remaining: u64, at: u64) -> Vec<Out> {
        let lease = p.next().lease_ms;
        p.on_promise(v, 2, remaining, known(lease), at)
    }

    #[test]
    fn commits_only_after_a_quorum_and_the_longest_lease_has_run_out() {
        let mut p = start(2_000, &["office".to_string()]);
        assert_eq!(p.required(), &[members(2_000)]);
        promise(&mut p, "lan-1", 0, 100);
        promise(&mut p, "lan-2", 2_000, 110);
        assert_eq!(p.tick(5_000), Vec::new(), "no quorum yet");
        promise(&mut p, "watch-1", 500, 120);
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
        let mut p = start(lease_ms, &[]);
        for v in ["lan-1", "lan-2", "watch-1"] {
            promise(&mut p, v, 0, 1_000);
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
            let mut p = start(2_000, &[]);
            for v in ["lan-1", "lan-2", "watch-1"] {
                promise(&mut p, v, 0, 0);
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

    #[test]
    fn a_node_answering_an_unreadable_status_refuses_a_promotion_and_a_silent_one_does_not() {
        let mut unreadable = seen("lan-2", "", 0);
        unreadable.reachable = true;
        let mut silent = seen("lan-3", "", 0);
        silent.reachable = false;
        let all = [seen("lan-1", "spare", 10), unreadable, silent];
        let refused = unreadable_refusals(&all);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("lan-2 answered a status this version cannot read"));
    }

    fn seen_node(name: &str, role: &str, lsn: u64) -> Seen {
        seen(name, role, lsn)
    }

    fn seen(name: &str, role: &str, lsn: u64) -> Seen {
        Seen {
            name: name.into(),
            reachable: true,
            role: (!role.is_empty())
                .then(|| serde_json::from_value(serde_json::json!(role)).expect("a role name")),
            state: "streaming".into(),
            epoch: 1,
            last_lsn: lsn,
            lease_valid: true,
            applied_lsn: lsn,
            lease_voters: Vec::new(),
        }
    }

    #[test]
    fn a_synchronous_rule_with_silent_spares_refuses_unless_forced() {
        let of: Vec<String> = ["lan-1", "lan-2", "lan-3"].map(String::from).into();
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        seen.insert("lan-1".into(), seen_node("lan-1", "spare", 5));
        let mut down = seen_node("lan-2", "spare", 0);
        down.reachable = false;
        seen.insert("lan-2".into(), down);
        // lan-3 was not seen at all; lan-2 does not answer: 2 of 3 silent.
        let why = rule_refusal(1, &of, &seen, false, false).expect("refused");
        assert!(why.contains("lan-2, lan-3 do not answer"), "{why}");
        assert!(rule_refusal(1, &of, &seen, false, true).is_none(), "forced");
        assert!(
            rule_refusal(1, &of, &seen, true, false).is_none(),
            "the old primary answers: the loss preview measures against it"
        );
        assert!(
            rule_refusal(3, &of, &seen, false, false).is_none(),
            "every write is on all three: lan-1 has it"
        );
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
        c.role = Some(NodeRole::Fenced);
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
        let mut p = start(2_000, &[]);
        p.on_refusal("main", "promised 2 to lan-2".into(), None);
        assert_eq!(p.phase, Phase::Preparing);
        p.on_refusal("lan-2", "promised 2 to lan-2".into(), None);
        assert!(matches!(p.phase, Phase::Failed(_)));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The split brain: the old epoch's voters are {main, lan-1, watch-1}; a reload
    /// on the coordinator added lan-2 and lan-3. With {main, lan-1} cut off, the three
    /// others are a majority of the new five but not of the old three: refused.
    #[test]
    fn voters_added_by_a_reload_cannot_outvote_the_old_membership() {
        let old = Members::new(&names(&["main", "lan-1", "watch-1"]), 2_000);
        let next = Members::new(
            &names(&["main", "lan-1", "watch-1", "lan-2", "lan-3"]),
            2_000,
        );
        let (mut p, out) = Promotion::start("lan-2", 2, next.clone(), &[], &[]);
        assert_eq!(out.len(), 5);
        let report = Known {
            epoch: 1,
            members: Some(old.clone()),
            pending: Vec::new(),
            max_lease_ms: 2_000,
        };
        for v in ["watch-1", "lan-2", "lan-3"] {
            let more = p.on_promise(v, 2, 0, report.clone(), 10);
            assert!(more.is_empty(), "every old voter was asked already");
        }
        assert_eq!(p.required(), &[next, old]);
        assert_eq!(p.phase, Phase::Preparing, "3 of 5 new, 1 of 3 old");
        for v in ["main", "lan-1"] {
            p.on_refusal(v, "unreachable".into(), None);
        }
        assert!(
            matches!(&p.phase, Phase::Failed(w) if w.contains("lan-1, main, watch-1")),
            "{:?}",
            p.phase
        );
    }

    /// A voter reports an old membership with members the coordinator's configuration no
    /// longer lists: they are asked too, and the promotion waits for a majority of them.
    #[test]
    fn voters_removed_by_a_reload_are_still_asked_until_the_old_epoch_is_replaced() {
        let old = Members::new(&names(&["main", "lan-1", "lan-2"]), 2_000);
        let next = Members::new(&names(&["main", "lan-1", "lan-3"]), 2_000);
        let (mut p, out) = Promotion::start("lan-1", 2, next, &[], &[]);
        assert_eq!(out.len(), 3);
        let report = Known {
            epoch: 1,
            members: Some(old),
            pending: Vec::new(),
            max_lease_ms: 2_000,
        };
        let more = p.on_promise("lan-3", 2, 0, report.clone(), 10);
        assert_eq!(
            more,
            vec![Out::Prepare {
                to: "lan-2".into(),
                epoch: 2,
                candidate: "lan-1".into()
            }]
        );
        p.on_promise("lan-1", 2, 0, report.clone(), 10);
        assert_eq!(p.phase, Phase::Preparing, "1 of the old 3 is no majority");
        p.on_promise("lan-2", 2, 0, report, 20);
        assert!(matches!(p.phase, Phase::Fencing { .. }));
        let commits = {
            let mut q = p.clone();
            q.tick(u64::MAX);
            q.on_recheck(Ok(()));
            q.on_commit_reply("lan-1", true)
        };
        assert!(
            commits
                .iter()
                .any(|o| matches!(o, Out::Commit { to, .. } if to == "lan-2")),
            "the removed voter learns the commit too"
        );
    }

    /// A reload made the lease longer: the fence waits out what a slow clock adds to the
    /// longest lease any voter reports granting, not the coordinator's configured one.
    #[test]
    fn the_fence_uses_the_longest_lease_reported() {
        let mut p = start(1_000, &[]);
        let mut long = known(1_000);
        long.max_lease_ms = 20_000;
        for v in ["lan-1", "lan-2"] {
            promise(&mut p, v, 0, 0);
        }
        p.on_promise("watch-1", 2, 0, long, 0);
        assert_eq!(
            p.phase,
            Phase::Fencing {
                until_ms: fence_wait_ms(0, 20_000)
            }
        );
    }
}
