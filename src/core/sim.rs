//! Deterministic scenario tests of the lease, voter and promotion cores (DESIGN.md §7) over
//! a simulated network, modelled on what the real nodes do:
//! - six nodes, each with its own configuration (voters, lease length) that reloads change,
//!   on every node at once or on some only; a primary counts its epoch's membership, a
//!   promotion asks for its coordinator's configuration (`core::members`);
//! - message delays, losses and duplicates; connections to a node that restarts are lost;
//!   partitions one way or both; frozen processes (SIGSTOP); crashes and restarts; clocks that
//!   run at slightly different rates;
//! - saves of `node.state` that fail (the voter keeps its old state and sends no answer);
//! - writes acknowledged at the moment of the answer, after a random commit time, only with
//!   a valid lease then (a frozen primary checks when it resumes);
//! - successive promotions and switchovers, by random coordinators, some competing for the
//!   same epoch; a coordinator that crashes abandons its promotion.
//!
//! Invariants checked after every step:
//! - at no moment do two running nodes hold a valid write lease;
//! - acknowledgements never go back in epoch: once a write of epoch `e` was acknowledged, no
//!   primary of an older epoch acknowledges one (the client-side "no split brain"), and one
//!   epoch has one primary;
//! - epochs and promises never go back on disk; a promotion reaches its recheck only with a
//!   majority of every required membership.
//!
//! A failing seed is printed; `replay(seed)` runs it again. `cargo test` runs 300 seeds;
//! `cargo test --release -- --ignored simulator_long` runs 10,000.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::lease::LeaseHolder;
use crate::core::members::Members;
use crate::core::promotion::{Out, Phase, Promotion};
use crate::core::voter::{LeaseAnswer, PrepareAnswer, Voter, VoterState};

const LEASES_MS: [u64; 3] = [600, 1_000, 1_600];
const HEARTBEAT_MS: u64 = 200;
const STEP_MS: u64 = 5;
const PREPARE_TIMEOUT_MS: u64 = 3_000;
/// How long after its start a promotion may wait for the candidate's confirmation.
const COMMIT_DEADLINE_MS: u64 = 15_000;
const RUN_MS: u64 = 30_000;
const NODES: [&str; 6] = ["main", "lan-1", "lan-2", "lan-3", "lan-4", "watch-1"];
/// Nodes that can become primary (the monitor cannot).
const DATA: [&str; 5] = ["main", "lan-1", "lan-2", "lan-3", "lan-4"];

#[derive(Debug, Clone)]
enum Msg {
    LeaseReq {
        epoch: u64,
        sent: u64,
        members: Members,
    },
    LeaseResp {
        epoch: u64,
        sent: u64,
        answer: LeaseAnswer,
    },
    Prepare {
        pid: usize,
        epoch: u64,
        candidate: String,
        members: Members,
    },
    PrepareResp {
        pid: usize,
        answer: PrepareAnswer,
    },
    Commit {
        pid: usize,
        epoch: u64,
        candidate: String,
        members: Members,
    },
    /// The answer to a commit: whether the node now follows `candidate` in `epoch`.
    CommitResp {
        pid: usize,
        confirmed: bool,
    },
    /// A switchover: the primary gave its lease up and asks voters to end their grants.
    Release {
        epoch: u64,
    },
}

struct Node {
    name: String,
    /// Local clock = offset + true time × rate (monotonic, also across restarts).
    offset: u64,
    rate: f64,
    /// This node's configuration file, as last reloaded.
    config: Members,
    voter: Voter,
    /// What `node.state` holds on disk.
    persisted: VoterState,
    /// While it runs as the primary: its lease and the membership it counts.
    holder: Option<(LeaseHolder, Members)>,
    paused_until: u64,
    down_until: u64,
    next_tick: u64,
    /// A switchover stopped its writes: it neither renews nor takes grants.
    suspended: bool,
    /// Writes in progress: (answer due at, epoch).
    writes: Vec<(u64, u64)>,
}

impl Node {
    fn local(&self, t: u64) -> u64 {
        self.offset + (t as f64 * self.rate) as u64
    }

    fn running(&self, t: u64) -> bool {
        t >= self.paused_until && t >= self.down_until
    }

    /// Runs as primary when its voter follows itself (the real node re-checks its role
    /// whenever the followed epoch or primary changes); its lease counts the epoch's
    /// membership, or its configuration's when the state has none.
    fn sync_role(&mut self) {
        let s = self.voter.state();
        if s.primary != self.name {
            self.holder = None;
            self.writes.clear();
            return;
        }
        if self
            .holder
            .as_ref()
            .is_some_and(|(h, _)| h.epoch() == s.epoch)
        {
            return;
        }
        let members = s.members.clone().unwrap_or_else(|| self.config.clone());
        let holder = LeaseHolder::new(s.epoch, members.lease_ms, members.quorum());
        self.holder = Some((holder, members));
        self.writes.clear();
    }

    fn valid(&self, t: u64) -> bool {
        !self.suspended
            && self
                .holder
                .as_ref()
                .is_some_and(|(h, _)| h.is_valid(self.local(t)))
    }
}

/// A promotion in flight and who runs it.
struct Promo {
    coordinator: String,
    p: Promotion,
    started: u64,
    /// Its coordinator crashed: nobody carries it on.
    abandoned: bool,
}

struct World {
    rng: StdRng,
    t: u64,
    nodes: BTreeMap<String, Node>,
    /// (deliver at, from, to, message)
    wire: Vec<(u64, String, String, Msg)>,
    /// Directed links cut until the time given: (from, to, until).
    cut: Vec<(String, String, u64)>,
    drop_rate: f64,
    dup_rate: f64,
    save_fail_rate: f64,
    max_delay: u64,
    promotions: Vec<Promo>,
    /// (time, node, epoch) of every write acknowledged.
    acks: Vec<(u64, String, u64)>,
    /// The primary of each epoch that acknowledged a write.
    ack_primary: BTreeMap<u64, String>,
    /// Switchovers that failed: (when, old primary) it takes writes again.
    pending_resume: Vec<(u64, String)>,
    /// The oracle: the membership of every epoch whose candidate took the commit.
    committed: BTreeMap<u64, Members>,
    /// Print what happens (`SIM_TRACE=1`, with `replay_one`).
    trace: bool,
}

fn random_members(rng: &mut StdRng) -> Members {
    let mut voters: Vec<String> = NODES
        .iter()
        .filter(|_| rng.gen_bool(0.6))
        .map(|s| s.to_string())
        .collect();
    if voters.is_empty() {
        voters.push(NODES[rng.gen_range(0..NODES.len())].to_string());
    }
    Members::new(&voters, LEASES_MS[rng.gen_range(0..LEASES_MS.len())])
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let first = if seed.is_multiple_of(4) {
            let v: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
            Members::new(&v, 1_000)
        } else {
            random_members(&mut rng)
        };
        let mut nodes = BTreeMap::new();
        for name in NODES {
            // As `node::load_state`: only the first primary knows epoch 1's membership.
            let members = (name == "main").then(|| first.clone());
            let start = VoterState::first("main", 1, members);
            let offset = rng.gen_range(0..1_000_000);
            let rate = 1.0 + rng.gen_range(-0.01..0.01);
            let voter = Voter::restarted(start.clone(), first.lease_ms, offset);
            let mut n = Node {
                name: name.into(),
                offset,
                rate,
                config: first.clone(),
                voter,
                persisted: start,
                holder: None,
                paused_until: 0,
                down_until: 0,
                next_tick: rng.gen_range(0..HEARTBEAT_MS),
                suspended: false,
                writes: Vec::new(),
            };
            n.sync_role();
            nodes.insert(name.to_string(), n);
        }
        World {
            drop_rate: rng.gen_range(0.0..0.15),
            dup_rate: rng.gen_range(0.0..0.1),
            save_fail_rate: rng.gen_range(0.0..0.1),
            max_delay: rng.gen_range(1..80),
            rng,
            t: 0,
            nodes,
            wire: Vec::new(),
            cut: Vec::new(),
            promotions: Vec::new(),
            acks: Vec::new(),
            ack_primary: BTreeMap::new(),
            pending_resume: Vec::new(),
            committed: [(1, first)].into(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    fn send(&mut self, from: &str, to: &str, msg: Msg) {
        if from == to {
            self.wire.push((self.t, from.into(), to.into(), msg));
            return;
        }
        let copies = if self.rng.gen_bool(self.dup_rate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.gen_bool(self.drop_rate) {
                continue;
            }
            let delay = self.rng.gen_range(1..=self.max_delay);
            self.wire
                .push((self.t + delay, from.into(), to.into(), msg.clone()));
        }
    }

    fn is_cut(&self, from: &str, to: &str) -> bool {
        self.cut
            .iter()
            .any(|(x, y, until)| self.t < *until && x == from && y == to)
    }

    fn deliver_due(&mut self) {
        let t = self.t;
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wire)
            .into_iter()
            .partition(|(at, _, to, _)| *at <= t && self.nodes[to].running(t));
        self.wire = rest;
        for (_, from, to, msg) in due {
            if self.is_cut(&from, &to) {
                continue;
            }
            self.handle(&from, &to, msg);
        }
    }

    /// Applies a voter request to a copy of `to`'s voter; the copy replaces it only once
    /// "saved" (a failed save leaves it unchanged and sends nothing, like the real node).
    fn on_voter<A>(
        &mut self,
        to: &str,
        decide: impl FnOnce(&mut Voter, u64) -> (A, bool),
    ) -> Option<A> {
        let fail = self.rng.gen_bool(self.save_fail_rate);
        let t = self.t;
        let node = self.nodes.get_mut(to).expect("known node");
        let now = node.local(t);
        let mut next = node.voter.clone();
        let (answer, changed) = decide(&mut next, now);
        if changed {
            if fail {
                return None;
            }
            let (s, old) = (next.state(), &node.persisted);
            assert!(s.epoch >= old.epoch, "{to}: epoch went back");
            assert!(
                s.promised_epoch >= old.promised_epoch,
                "{to}: promise went back"
            );
            node.persisted = s.clone();
        }
        node.voter = next;
        node.sync_role();
        Some(answer)
    }

    fn handle(&mut self, from: &str, to: &str, msg: Msg) {
        match msg {
            Msg::LeaseReq {
                epoch,
                sent,
                members,
            } => {
                let answer =
                    self.on_voter(to, |v, now| v.on_lease_request(from, epoch, &members, now));
                if let Some(answer) = answer {
                    let resp = Msg::LeaseResp {
                        epoch,
                        sent,
                        answer,
                    };
                    self.send(to, from, resp);
                }
            }
            Msg::LeaseResp {
                epoch,
                sent,
                answer,
            } => self.on_lease_resp(from, to, epoch, sent, answer),
            Msg::Prepare {
                pid,
                epoch,
                candidate,
                members,
            } => {
                let answer =
                    self.on_voter(to, |v, now| v.on_prepare(&candidate, epoch, &members, now));
                if let Some(answer) = answer {
                    self.send(to, from, Msg::PrepareResp { pid, answer });
                }
            }
            Msg::PrepareResp { pid, answer } => self.on_prepare_resp(pid, from, to, answer),
            Msg::Commit {
                pid,
                epoch,
                candidate,
                members,
            } => {
                // As `actors::voter`: a candidate that promised a later epoch since does not
                // follow (nor confirm) its own promotion.
                if !self.nodes[to].voter.may_follow(to, &candidate, epoch) {
                    self.send(
                        to,
                        from,
                        Msg::CommitResp {
                            pid,
                            confirmed: false,
                        },
                    );
                    return;
                }
                let done = self.on_voter(to, |v, _| {
                    ((), v.on_commit(&candidate, epoch, Some(&members)))
                });
                if done.is_some() && to == candidate {
                    let s = self.nodes[to].voter.state();
                    if s.epoch == epoch && s.primary == candidate {
                        let had = self.committed.insert(epoch, members.clone());
                        assert!(
                            had.is_none_or(|m| m == members),
                            "epoch {epoch} committed with two memberships"
                        );
                    }
                }
                if done.is_some() {
                    let s = self.nodes[to].voter.state();
                    let confirmed = s.epoch == epoch && s.primary == candidate;
                    self.send(to, from, Msg::CommitResp { pid, confirmed });
                }
            }
            Msg::CommitResp { pid, confirmed } => {
                let promo = &mut self.promotions[pid];
                if promo.abandoned || promo.coordinator != to {
                    return;
                }
                let out = promo.p.on_commit_reply(from, confirmed);
                self.send_outs(pid, out);
            }
            Msg::Release { epoch } => {
                let t = self.t;
                let node = self.nodes.get_mut(to).expect("known node");
                let now = node.local(t);
                node.voter.on_release(from, epoch, now);
            }
        }
    }

    fn on_lease_resp(&mut self, from: &str, to: &str, epoch: u64, sent: u64, answer: LeaseAnswer) {
        let node = self.nodes.get_mut(to).expect("known node");
        match answer {
            LeaseAnswer::Granted { .. } if !node.suspended => {
                if let Some((h, m)) = node.holder.as_mut() {
                    if m.contains(from) {
                        h.on_grant(from, epoch, sent);
                    }
                }
            }
            LeaseAnswer::Granted { .. } => {}
            // A newer committed epoch: the node is fenced and follows it (`lease.rs`).
            LeaseAnswer::Refused {
                epoch: newer,
                primary,
                committed: true,
            } if newer > epoch => {
                node.holder = None;
                node.writes.clear();
                let _ = self.on_voter(to, |v, _| ((), v.on_commit(&primary, newer, None)));
            }
            LeaseAnswer::Refused { .. } => {}
        }
    }

    fn on_prepare_resp(&mut self, pid: usize, from: &str, to: &str, answer: PrepareAnswer) {
        let now = self.nodes[to].local(self.t);
        let promo = &mut self.promotions[pid];
        if promo.abandoned || promo.coordinator != to {
            return;
        }
        let out = match answer {
            PrepareAnswer::Promised {
                epoch,
                lease_remaining_ms,
                known,
            } => promo
                .p
                .on_promise(from, epoch, lease_remaining_ms, known, now),
            PrepareAnswer::Refused { epoch, to, known } => {
                promo
                    .p
                    .on_refusal(from, format!("promised {epoch} to {to}"), Some(known))
            }
        };
        self.send_outs(pid, out);
    }

    /// `coordinator` promotes `candidate` as the real coordinator does: the next epoch above
    /// what it and the candidate know, the membership of its own configuration.
    fn start_promotion(&mut self, coordinator: &str, candidate: &str) {
        let c = self.nodes[coordinator].voter.state();
        let k = self.nodes[candidate].voter.state();
        // As the real coordinator's `next_epoch`: its own promise to the same candidate is
        // retried at the same epoch; else one above what it and the candidate know.
        let epoch = if c.promised_to == candidate && c.promised_epoch > c.epoch {
            c.promised_epoch
        } else {
            c.promised_epoch.max(k.promised_epoch).max(k.epoch) + 1
        };
        let next = self.nodes[coordinator].config.clone();
        let everyone: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
        let (p, out) = Promotion::start(candidate, epoch, next, &[], &everyone);
        self.promotions.push(Promo {
            coordinator: coordinator.to_string(),
            p,
            started: self.t,
            abandoned: false,
        });
        self.send_outs(self.promotions.len() - 1, out);
    }

    fn send_outs(&mut self, pid: usize, out: Vec<Out>) {
        let coordinator = self.promotions[pid].coordinator.clone();
        let members = self.promotions[pid].p.next().clone();
        for o in out {
            match o {
                Out::Prepare {
                    to,
                    epoch,
                    candidate,
                } => {
                    let m = Msg::Prepare {
                        pid,
                        epoch,
                        candidate,
                        members: members.clone(),
                    };
                    self.send(&coordinator, &to, m)
                }
                Out::Commit {
                    to,
                    epoch,
                    candidate,
                    ..
                } => {
                    let m = Msg::Commit {
                        pid,
                        epoch,
                        candidate,
                        members: members.clone(),
                    };
                    self.send(&coordinator, &to, m)
                }
                // The simulation has no data to lose: the recheck passes at once.
                Out::Recheck => {
                    self.check_promises(pid);
                    let p = &mut self.promotions[pid].p;
                    let out = p.on_recheck(Ok(()));
                    self.send_outs(pid, out);
                }
            }
        }
    }

    fn tick_nodes(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in &names {
            self.answer_writes(name);
            let t = self.t;
            let node = self.nodes.get_mut(name).expect("known node");
            if !node.running(t) || t < node.next_tick {
                continue;
            }
            node.next_tick = t + HEARTBEAT_MS;
            let now = node.local(t);
            let Some((h, members)) = node.holder.as_ref() else {
                continue;
            };
            if node.suspended {
                continue;
            }
            let (epoch, members) = (h.epoch(), members.clone());
            // A write starts; its answer is due after the commit (fsync, commit rule).
            let due = t + self.rng.gen_range(1..300);
            self.nodes
                .get_mut(name)
                .expect("known")
                .writes
                .push((due, epoch));
            for to in &members.voters {
                let req = Msg::LeaseReq {
                    epoch,
                    sent: now,
                    members: members.clone(),
                };
                self.send(name, to, req);
            }
        }
        self.tick_promotions();
    }

    /// Answers the writes due on `name`, each only with a valid lease at that moment.
    fn answer_writes(&mut self, name: &str) {
        let t = self.t;
        let node = self.nodes.get_mut(name).expect("known node");
        if !node.running(t) {
            return;
        }
        let due: Vec<u64> = node
            .writes
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, e)| *e)
            .collect();
        node.writes.retain(|(at, _)| *at > t);
        let valid = node.valid(t);
        let epoch_now = node.holder.as_ref().map(|(h, _)| h.epoch());
        for epoch in due {
            if valid && epoch_now == Some(epoch) {
                self.acknowledge(name, epoch);
            }
        }
    }

    fn acknowledge(&mut self, name: &str, epoch: u64) {
        if self.trace && !self.ack_primary.contains_key(&epoch) {
            println!("t={} first ack of epoch {epoch} by {name}", self.t);
        }
        if let Some(&(at, ref by, newest)) = self.acks.last() {
            assert!(
                epoch >= newest,
                "{name} acknowledged a write of epoch {epoch} at t={} ms after {by} acknowledged one of epoch {newest} at t={at} ms",
                self.t
            );
        }
        let first = self
            .ack_primary
            .entry(epoch)
            .or_insert_with(|| name.to_string());
        assert_eq!(
            first, name,
            "two primaries acknowledged writes in epoch {epoch}"
        );
        self.acks.push((self.t, name.to_string(), epoch));
    }

    fn tick_promotions(&mut self) {
        for pid in 0..self.promotions.len() {
            let coordinator = self.promotions[pid].coordinator.clone();
            if self.promotions[pid].abandoned || !self.nodes[&coordinator].running(self.t) {
                continue;
            }
            let now = self.nodes[&coordinator].local(self.t);
            let t = self.t;
            let promo = &mut self.promotions[pid];
            if promo.p.phase == Phase::Preparing && t > promo.started + PREPARE_TIMEOUT_MS {
                promo.p.on_timeout();
            }
            if promo.p.phase == Phase::Committing && t > promo.started + COMMIT_DEADLINE_MS {
                promo.p.on_commit_timeout();
            }
            let before = promo.p.phase.clone();
            let out = promo.p.tick(now);
            if self.trace && before != promo.p.phase {
                println!(
                    "t={t} promotion {pid} to {} epoch {}: {:?} (required {:?}, promised {:?})",
                    promo.p.candidate,
                    promo.p.epoch,
                    promo.p.phase,
                    promo.p.required(),
                    promo.p.promised_by()
                );
            }
            self.send_outs(pid, out);
        }
    }

    /// The oracle: a promotion past its fence holds promises from a majority of the
    /// membership of the newest epoch committed below its own, by the simulation's own
    /// records (not by what the voters reported).
    fn check_promises(&self, pid: usize) {
        let p = &self.promotions[pid].p;
        let promised = p.promised_by();
        if let Some((e, m)) = self.committed.range(..p.epoch).next_back() {
            assert!(
                m.has_majority(&promised),
                "promotion to epoch {} passed its fence with promises {promised:?}, not a majority of epoch {e}'s voters {:?}",
                p.epoch,
                m.voters
            );
        }
    }

    /// At no moment may two running nodes be able to acknowledge writes.
    fn check(&self, seed: u64) {
        let holders: Vec<&str> = self
            .nodes
            .values()
            .filter(|n| n.running(self.t) && n.valid(self.t))
            .map(|n| n.name.as_str())
            .collect();
        assert!(
            holders.len() <= 1,
            "seed {seed}: at t={} ms, {holders:?} all hold a valid lease",
            self.t
        );
    }

    /// A switchover's first step on the primary `name`: stop writing, give the lease up,
    /// ask every voter of its membership to end its grant.
    fn suspend(&mut self, name: &str) {
        let t = self.t;
        let node = self.nodes.get_mut(name).expect("known node");
        if !node.running(t) {
            return;
        }
        let now = node.local(t);
        node.suspended = true;
        let Some((h, members)) = node.holder.as_mut() else {
            return;
        };
        h.release(now);
        let (epoch, voters) = (h.epoch(), members.voters.clone());
        for to in voters {
            self.send(name, &to, Msg::Release { epoch });
        }
    }

    /// `name` crashed at `t` and starts again at `until`: its connections are gone (answers
    /// to it are lost), its promotions abandoned, its writes unanswered.
    fn crash(&mut self, name: &str, until: u64) {
        let t = self.t;
        self.wire.retain(|(_, _, to, _)| to != name);
        for p in self.promotions.iter_mut().filter(|p| p.coordinator == name) {
            p.abandoned = true;
        }
        let node = self.nodes.get_mut(name).expect("known node");
        node.down_until = until;
        node.paused_until = 0;
        // It restarts at `until` (bounded: "never" is a long time), assuming a grant from then.
        let now = node.local(until.min(t + RUN_MS).max(t));
        node.voter = Voter::restarted(node.persisted.clone(), node.config.lease_ms, now);
        node.holder = None;
        node.suspended = false;
        node.writes.clear();
        node.sync_role();
    }

    /// A reload: `members` becomes the configuration of `on` (every node, or some only).
    fn reload(&mut self, members: &Members, on: &[String]) {
        for n in on {
            self.nodes.get_mut(n).expect("known node").config = members.clone();
        }
    }

    fn run_until(&mut self, end: u64, seed: u64, mut schedule: impl FnMut(&mut World)) {
        while self.t < end {
            schedule(self);
            self.deliver_due();
            self.tick_nodes();
            self.check(seed);
            self.t += STEP_MS;
        }
    }

    fn committed(&self) -> usize {
        self.promotions
            .iter()
            .filter(|p| p.p.phase == Phase::Committed)
            .count()
    }

    /// The node that currently believes it is primary of the highest epoch.
    fn primary(&self) -> String {
        self.nodes
            .values()
            .filter(|n| n.holder.is_some())
            .max_by_key(|n| n.holder.as_ref().map(|(h, _)| h.epoch()))
            .map_or_else(|| "main".to_string(), |n| n.name.clone())
    }
}

/// What a schedule does at one moment.
#[derive(Debug, Clone)]
enum Fault {
    Pause(String, u64),
    Crash(String, u64),
    /// Cut the directed links from the first group to the second for a time.
    Cut(Vec<String>, Vec<String>, u64),
    /// Reload a membership on every node, or on the given ones only.
    Reload(Members, Vec<String>),
    Promote {
        coordinator: String,
        candidate: String,
    },
    Switchover {
        coordinator: String,
        candidate: String,
        resume_after: Option<u64>,
    },
}

fn pick(rng: &mut StdRng, from: &[&str]) -> String {
    from[rng.gen_range(0..from.len())].to_string()
}

fn random_group(rng: &mut StdRng) -> (Vec<String>, Vec<String>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for n in NODES {
        if rng.gen_bool(0.5) {
            a.push(n.to_string());
        } else {
            b.push(n.to_string());
        }
    }
    (a, b)
}

fn random_fault(rng: &mut StdRng) -> Fault {
    let node = pick(rng, &NODES);
    let len = rng.gen_range(100..5_000);
    match rng.gen_range(0..10) {
        0 => Fault::Pause(node, len),
        1 => Fault::Crash(node, len),
        2 | 3 => {
            let (a, b) = random_group(rng);
            Fault::Cut(a, b, len)
        }
        4 => {
            let members = random_members(rng);
            let on = if rng.gen_bool(0.7) {
                NODES.iter().map(|s| s.to_string()).collect()
            } else {
                NODES
                    .iter()
                    .filter(|_| rng.gen_bool(0.5))
                    .map(|s| s.to_string())
                    .collect()
            };
            Fault::Reload(members, on)
        }
        5..=7 => Fault::Promote {
            coordinator: pick(rng, &NODES),
            candidate: pick(rng, &DATA),
        },
        _ => Fault::Switchover {
            coordinator: pick(rng, &NODES),
            candidate: pick(rng, &DATA),
            resume_after: rng.gen_bool(0.3).then(|| rng.gen_range(0..3_000)),
        },
    }
}

fn apply(w: &mut World, fault: Fault) {
    let t = w.t;
    if w.trace {
        println!("t={t} {fault:?} (primary {})", w.primary());
    }
    match fault {
        Fault::Pause(n, len) => w.nodes.get_mut(&n).expect("known").paused_until = t + len,
        Fault::Crash(n, len) => w.crash(&n, t + len),
        Fault::Cut(a, b, len) => {
            for x in &a {
                for y in &b {
                    w.cut.push((x.clone(), y.clone(), t + len));
                }
            }
        }
        Fault::Reload(m, on) => w.reload(&m, &on),
        Fault::Promote {
            coordinator,
            candidate,
        } => w.start_promotion(&coordinator, &candidate),
        Fault::Switchover {
            coordinator,
            candidate,
            resume_after,
        } => {
            let primary = w.primary();
            w.suspend(&primary);
            w.start_promotion(&coordinator, &candidate);
            // A switchover that failed lets the old primary write again.
            if let Some(after) = resume_after {
                w.pending_resume.push((t + after, primary));
            }
        }
    }
}

/// One random run: 4–14 faults drawn from `seed` over [`RUN_MS`], at least one promotion.
fn replay(seed: u64) -> World {
    let mut w = World::new(seed);
    let mut plan = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut events: Vec<(u64, Fault)> = (0..plan.gen_range(4..15))
        .map(|_| (plan.gen_range(0..RUN_MS - 8_000), random_fault(&mut plan)))
        .collect();
    let promote_at = plan.gen_range(500..RUN_MS / 2);
    events.push((
        promote_at,
        Fault::Promote {
            coordinator: pick(&mut plan, &NODES),
            candidate: pick(&mut plan, &DATA),
        },
    ));
    // Half the runs split the cluster just before that promotion, main on one side with
    // some others: its lease may still run, or even renew, while the others promote; only
    // the fence and the quorums keep the two leases apart. Half of those reload a new
    // membership first.
    if plan.gen_bool(0.5) {
        let (mut a, mut b) = random_group(&mut plan);
        a.retain(|n| n != "main");
        b.retain(|n| n != "main");
        a.push("main".to_string());
        let len = plan.gen_range(500..8_000);
        let at = promote_at.saturating_sub(plan.gen_range(0..500));
        events.push((at, Fault::Cut(a.clone(), b.clone(), len)));
        events.push((at, Fault::Cut(b, a, len)));
        if plan.gen_bool(0.5) {
            let members = random_members(&mut plan);
            let everyone = NODES.iter().map(|s| s.to_string()).collect();
            events.push((at.saturating_sub(100), Fault::Reload(members, everyone)));
        }
    }
    events.sort_by_key(|e| e.0);
    w.run_until(RUN_MS, seed, |w| {
        while events.first().is_some_and(|e| e.0 <= w.t) {
            let (_, fault) = events.remove(0);
            apply(w, fault);
        }
        let t = w.t;
        let due: Vec<String> = w
            .pending_resume
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, n)| n.clone())
            .collect();
        w.pending_resume.retain(|(at, _)| *at > t);
        for n in due {
            w.nodes.get_mut(&n).expect("known").suspended = false;
        }
    });
    w
}

fn run_seeds(seeds: std::ops::Range<u64>) -> (usize, usize) {
    let (mut runs, mut committed) = (0, 0);
    for seed in seeds {
        let w = std::panic::catch_unwind(|| replay(seed)).unwrap_or_else(|e| {
            panic!("seed {seed} failed (replay it with replay({seed})): {e:?}")
        });
        runs += 1;
        if w.committed() > 0 {
            committed += 1;
        }
    }
    (runs, committed)
}

#[test]
fn never_two_primaries_across_many_seeds_of_faults_and_promotions() {
    let (runs, committed) = run_seeds(0..300);
    assert!(
        committed > runs / 3,
        "most runs should promote ({committed} of {runs} did): the faults are not meant to block everything"
    );
}

/// Replays `SIM_SEED` with `SIM_TRACE=1` to see what happened.
#[test]
#[ignore]
fn replay_one() {
    let seed = std::env::var("SIM_SEED").map_or(0, |s| s.parse().expect("a seed"));
    let w = replay(seed);
    println!(
        "{:?}",
        w.promotions
            .iter()
            .map(|p| (&p.coordinator, &p.p.candidate, p.p.epoch, &p.p.phase))
            .collect::<Vec<_>>()
    );
}

/// The long mode: `cargo test --release -- --ignored simulator_long`.
#[test]
#[ignore]
fn simulator_long_never_two_primaries_over_ten_thousand_seeds() {
    let started = std::time::Instant::now();
    let (runs, committed) = run_seeds(1_000..11_000);
    println!(
        "simulator: {runs} seeds, {committed} with a committed promotion, {:?}",
        started.elapsed()
    );
}

fn all_members(lease_ms: u64) -> Members {
    let v: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
    Members::new(&v, lease_ms)
}

/// A quiet world: no losses, no duplicates, no failed saves.
fn quiet(seed: u64) -> World {
    let mut w = World::new(seed);
    w.drop_rate = 0.0;
    w.dup_rate = 0.0;
    w.save_fail_rate = 0.0;
    w.max_delay = 5;
    let all = all_members(1_000);
    for n in w.nodes.values_mut() {
        n.config = all.clone();
    }
    w
}

/// Starts `w` afresh with epoch 1's membership `voters` (lease 1 s) in every configuration.
fn first_membership(w: &mut World, voters: &[&str]) -> Members {
    let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
    let m = Members::new(&v, 1_000);
    for n in w.nodes.values_mut() {
        let known = (n.name == "main").then(|| m.clone());
        n.persisted = VoterState::first("main", 1, known);
        n.voter = Voter::restarted(n.persisted.clone(), m.lease_ms, n.local(0));
        n.config = m.clone();
        n.holder = None;
        n.sync_role();
    }
    m
}

fn committed_to(w: &World, candidate: &str) -> bool {
    w.promotions
        .iter()
        .any(|p| p.p.candidate == candidate && p.p.phase == Phase::Committed)
}

#[test]
fn primary_crash_then_promotion_moves_writes_to_the_candidate() {
    let mut w = quiet(4);
    w.run_until(2_000, 4, |_| {});
    assert!(
        w.acks.iter().any(|a| a.1 == "main"),
        "main acknowledges writes before the crash"
    );
    w.crash("main", u64::MAX);
    w.start_promotion("watch-1", "lan-1");
    w.run_until(8_000, 4, |_| {});
    assert!(committed_to(&w, "lan-1"));
    let first_new = w
        .acks
        .iter()
        .find(|a| a.1 == "lan-1")
        .expect("lan-1 acknowledges writes after the promotion");
    assert_eq!(first_new.2, 2);
}

#[test]
fn primary_frozen_during_the_promotion_acknowledges_nothing_when_it_resumes() {
    let mut w = quiet(8);
    w.run_until(2_000, 8, |_| {});
    w.nodes.get_mut("main").expect("main").paused_until = 8_000;
    w.start_promotion("watch-1", "lan-2");
    w.run_until(12_000, 8, |_| {});
    assert!(committed_to(&w, "lan-2"));
    assert!(
        !w.acks.iter().any(|a| a.1 == "main" && a.0 >= 8_000),
        "the frozen primary acknowledged a write after resuming"
    );
    assert!(
        w.nodes["main"].holder.is_none(),
        "the old primary is fenced"
    );
}

#[test]
fn cut_off_primary_keeps_its_lease_only_until_the_fence_ends() {
    let mut w = quiet(12);
    w.run_until(2_000, 12, |_| {});
    for other in &NODES[1..] {
        w.cut.push(("main".into(), other.to_string(), 10_000));
        w.cut.push((other.to_string(), "main".into(), 10_000));
    }
    w.start_promotion("watch-1", "lan-1");
    w.run_until(10_000, 12, |_| {});
    assert!(committed_to(&w, "lan-1"));
    let last_old = w.acks.iter().filter(|a| a.1 == "main").map(|a| a.0).max();
    let first_new = w.acks.iter().filter(|a| a.1 == "lan-1").map(|a| a.0).min();
    let (last_old, first_new) = (
        last_old.expect("main wrote"),
        first_new.expect("lan-1 writes"),
    );
    assert!(
        last_old < first_new,
        "main at {last_old} ms, lan-1 from {first_new} ms"
    );
    assert!(
        last_old > 2_000,
        "main kept acknowledging on its running lease while cut off"
    );
}

#[test]
fn promotion_without_a_quorum_is_refused() {
    let mut w = quiet(16);
    for other in ["main", "lan-1", "lan-2", "lan-3"] {
        w.cut.push(("watch-1".into(), other.into(), u64::MAX));
    }
    w.start_promotion("watch-1", "lan-1");
    w.run_until(6_000, 16, |_| {});
    assert!(matches!(w.promotions[0].p.phase, Phase::Failed(_)));
    assert!(w.acks.iter().all(|a| a.1 == "main"), "main keeps its lease");
}

/// The scenario: voters {main, lan-1, watch-1}; a reload adds lan-2 and lan-3;
/// {main, lan-1} are cut off from the rest. The promotion of lan-2 wins 3 of the 5 new
/// voters but not 2 of the old 3, so it fails, and main keeps writing alone.
#[test]
fn voters_added_by_a_reload_cannot_promote_behind_a_running_primary() {
    let mut w = quiet(20);
    first_membership(&mut w, &["main", "lan-1", "watch-1"]);
    w.run_until(2_000, 20, |_| {});
    let next: Vec<String> = ["main", "lan-1", "lan-2", "lan-3", "watch-1"]
        .map(String::from)
        .into();
    let everyone: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
    w.reload(&Members::new(&next, 1_000), &everyone);
    let (a, b) = (["main", "lan-1"], ["lan-2", "lan-3", "watch-1", "lan-4"]);
    for x in a {
        for y in b {
            w.cut.push((x.into(), y.into(), u64::MAX));
            w.cut.push((y.into(), x.into(), u64::MAX));
        }
    }
    w.start_promotion("watch-1", "lan-2");
    w.run_until(10_000, 20, |_| {});
    assert!(
        matches!(w.promotions[0].p.phase, Phase::Failed(_)),
        "{:?}",
        w.promotions[0].p.phase
    );
    assert!(w.acks.iter().all(|a| a.1 == "main"));
    assert!(
        w.acks.last().is_some_and(|a| a.0 > 9_000),
        "main still writes"
    );
}

/// A reload's new membership takes effect at the next promotion, which needs both; after
/// it the new primary counts the new voters.
#[test]
fn a_promotion_brings_the_reloaded_membership_into_effect() {
    let mut w = quiet(24);
    let old = first_membership(&mut w, &["main", "lan-1", "watch-1"]);
    w.run_until(2_000, 24, |_| {});
    let next: Vec<String> = ["lan-1", "lan-2", "lan-3"].map(String::from).into();
    let everyone: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
    let next = Members::new(&next, 1_600);
    w.reload(&next, &everyone);
    w.start_promotion("watch-1", "lan-1");
    w.run_until(10_000, 24, |_| {});
    assert!(committed_to(&w, "lan-1"));
    let required = w.promotions[0].p.required().to_vec();
    assert!(required.contains(&old) && required.iter().any(|m| m.voters == next.voters));
    let (_, counted) = w.nodes["lan-1"].holder.as_ref().expect("lan-1 leads");
    assert_eq!(counted, &next);
    assert!(w.acks.iter().any(|a| a.1 == "lan-1"));
}
