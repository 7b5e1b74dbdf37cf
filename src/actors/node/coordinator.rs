//! The promotion coordinator's I/O (DESIGN.md §7): any node can coordinate (the command line
//! asks a monitor first). It surveys the data nodes over HTTP, decides with
//! `core::promotion::refusals`, then drives `core::promotion::Promotion` over control
//! connections: prepare (promises for the next epoch), fence (wait out every lease those
//! voters granted), re-check, commit (the candidate first, then every node). Every attempt that
//! is not a dry run is appended to the coordinator's audit log (`promotions.jsonl`).
//!
//! A switchover first stops the primary's writes and waits until the candidate holds every
//! record; after the commit the old primary rejoins as a spare at once (its log is a prefix of
//! the new history, so nothing is quarantined).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::stream::PeerStream;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actors::blocking;
use crate::actors::node::survey::{self, loss, survey, survey_within, Survey};
use crate::config::{ClusterConfig, CommitRule, ConfigCell};
use crate::core::members::Members;
use crate::core::promotion::{self, Allow, Out, Phase, Promotion, Seen};
use crate::core::role::NodeRole;
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::net::handshake::Identity;
use crate::status::NodeStatus;
use crate::wire::message::Purpose;
use crate::wire::{read_frame, write_frame, Message};

/// How long promises may take to arrive (connect, handshake, fsync of `node.state`).
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the new primary may take to serve writes after the commit.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a switchover waits for the candidate to hold the primary's last record.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop of the primary's writes holds when its caller does not say: past it the
/// primary takes writes again by itself (a switchover that died half way must not stop it
/// for good). A switchover asks for [`switchover_stop`], renewed just before its prepares.
pub const SWITCHOVER_STOP_MAX: Duration = Duration::from_secs(60);
const _: () =
    assert!(SWITCHOVER_STOP_MAX.as_secs() > CATCH_UP_TIMEOUT.as_secs() + PREPARE_TIMEOUT.as_secs());

/// How long a switchover's stop must hold, from the moment it is renewed before the
/// prepares to the commit: the prepares, two surveys and their loss checks, the fence (up to
/// a lease and its margins), the commit, with room to spare.
pub fn switchover_stop(config: &ClusterConfig) -> Duration {
    let surveys = survey::SURVEY_TIMEOUT * 4;
    PREPARE_TIMEOUT * 2 + surveys + config.cluster.lease * 2 + Duration::from_secs(10)
}
/// The audit log, in the coordinator's data directory.
pub const AUDIT_FILE: &str = "promotions.jsonl";

/// `POST /v1/admin/promote` and `/v1/admin/switchover`.
#[derive(Debug, Clone, Deserialize)]
pub struct PromoteRequest {
    pub candidate: String,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub accept_loss: u64,
    #[serde(default)]
    pub force: bool,
    /// Keep the history only up to this LSN (`--until`).
    #[serde(default)]
    pub until: Option<u64>,
    /// Who asked (user@host, from the command line).
    #[serde(default)]
    pub asked_by: String,
}

/// What a promotion was asked and allowed, and which nodes answered its first survey.
struct Plan<'a> {
    req: &'a PromoteRequest,
    allow: Allow,
    answered: Vec<String>,
    /// The data nodes that did not answer the recheck's survey either (for the report).
    silent_at_recheck: std::sync::Mutex<Value>,
}

/// What the coordinating node lends.
pub struct Coordinator {
    pub cell: Arc<ConfigCell>,
    pub identity: Identity,
    pub data_dir: PathBuf,
    pub events: Arc<EventLog>,
    /// This node's own promise, to pick the next epoch.
    pub promised: (u64, String),
}

/// One control connection to `to` (handshake done).
async fn control(
    me: &Identity,
    config: &ClusterConfig,
    to: &str,
    epoch: u64,
) -> Result<PeerStream> {
    let addr = config.node(to)?.peer_advertise.clone();
    let timeout = crate::actors::CONNECT_TIMEOUT;
    let (s, _) = crate::net::stream::dial(me, to, &addr, timeout, epoch, Purpose::Control).await?;
    Ok(s)
}

/// Sends one control request and reads the answer.
async fn ask(s: &mut PeerStream, me: &Identity, epoch: u64, m: Message) -> Result<Message> {
    write_frame(s, &me.envelope(epoch, m)).await?;
    Ok(read_frame(s).await?.message)
}

/// A voter's answer to a prepare (with the connection, kept for the commit) and when it came.
type PrepareAnswer = (String, Result<(Message, PeerStream)>, Instant);

/// The prepares in flight, and the voter each task asks.
#[derive(Default)]
struct Asks {
    set: tokio::task::JoinSet<PrepareAnswer>,
    voters: std::collections::HashMap<tokio::task::Id, String>,
}

/// Asks `to` to promise `epoch` to `candidate`, whose epoch will have the membership
/// `members`; keeps the connection for the commit.
async fn prepare(
    me: Identity,
    config: Arc<ClusterConfig>,
    to: String,
    epoch: u64,
    candidate: String,
    members: Members,
) -> PrepareAnswer {
    let run = async {
        let mut s = control(&me, &config, &to, epoch).await?;
        let prepare = Message::Prepare {
            epoch,
            candidate,
            members,
        };
        let m = ask(&mut s, &me, epoch, prepare).await?;
        Ok((m, s))
    };
    let r = tokio::time::timeout(PREPARE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(Error::Unavailable(format!("{to} did not answer in time"))));
    (to, r, Instant::now())
}

/// Stops (or extends the stop of) the writes of the primary at `http` for `bound`; returns
/// the LSN of its last record.
async fn stop_writes(http: &str, name: &str, bound: Duration) -> Result<u64> {
    let stopped = survey::post_ok(
        http,
        "/v1/admin/writes",
        json!({ "accept": false, "for_ms": bound.as_millis() as u64 }),
    )
    .await?;
    stopped["lsn"]
        .as_u64()
        .ok_or_else(|| Error::Unavailable(format!("{name} did not stop its writes: {stopped}")))
}

/// What a commit tells a node: the new epoch, its primary and membership, and the
/// `--until` cut.
struct CommitOf {
    epoch: u64,
    candidate: String,
    members: Members,
    until: Option<u64>,
}

/// Sends `to` the commit `c` (on `link`, or a new connection) and says whether it
/// confirmed, within [`PREPARE_TIMEOUT`].
async fn commit_one(
    me: &Identity,
    config: &ClusterConfig,
    link: Option<PeerStream>,
    to: &str,
    c: CommitOf,
) -> bool {
    let CommitOf {
        epoch,
        candidate,
        members,
        until,
    } = c;
    let candidate = candidate.as_str();
    let commit = Message::Commit {
        until,
        epoch,
        primary: candidate.to_string(),
        members: Some(members),
    };
    let run = async {
        let mut s = match link {
            Some(s) => s,
            None => control(me, config, to, epoch).await?,
        };
        ask(&mut s, me, epoch, commit).await
    };
    let answer = tokio::time::timeout(PREPARE_TIMEOUT, run).await;
    matches!(&answer, Ok(Ok(Message::CommitReply { epoch: e, primary })) if *e == epoch && primary == candidate)
}

/// What a promotion saw before deciding: the survey, the old primary, a switchover's
/// stopped primary (its HTTP address and last LSN), and what the candidate lacks.
struct Looked {
    before: Survey,
    old: Option<Seen>,
    paused_primary: Option<String>,
    stopped_at: Option<u64>,
    lost: promotion::Loss,
}

/// Why the promotion may not go ahead (`core::promotion` decides; the commit rule's
/// refusal needs to know whether the old primary still answers).
fn refusals(config: &ClusterConfig, seen: &Looked, candidate: &str, allow: Allow) -> Vec<String> {
    let old = seen.old.as_ref();
    let mut refused = promotion::refusals(seen.before.seen.get(candidate), old, &seen.lost, allow);
    refused.extend(promotion::unreadable_refusals(seen.before.seen.values()));
    if let CommitRule::Any { any, of, .. } = &config.cluster.commit {
        let answers = old.is_some_and(|o| o.reachable && o.role == Some(NodeRole::Primary));
        refused.extend(promotion::rule_refusal(
            *any,
            of,
            &seen.before.seen,
            answers,
            allow.force,
        ));
    }
    refused
}

/// The report every promotion starts from (and a dry run answers).
fn first_report(
    req: &PromoteRequest,
    seen: &Looked,
    epoch: u64,
    next: &Members,
    refused: &[String],
    switchover: bool,
) -> Value {
    let old = seen.old.as_ref();
    let mut report = json!({
        "candidate": req.candidate,
        "epoch": epoch,
        "old_primary": old.map(|o| json!({ "name": o.name, "reachable": o.reachable && o.role == Some(NodeRole::Primary), "epoch": o.epoch, "last_lsn": o.last_lsn })),
        "voters": next.voters,
        "quorum": next.quorum(),
        "nodes": seen.before.seen.values().collect::<Vec<_>>(),
        "loss": seen.lost,
        "refusals": refused,
        "lease_ms": next.lease_ms,
        "dry_run": req.dry_run,
        "until": req.until,
        "switchover": switchover,
    });
    if old.is_some_and(|o| !o.reachable) {
        report["unknown"] = json!(format!(
            "what the old primary {} committed and no spare received is not known here; it is kept in its quarantine when it rejoins",
            old.map(|o| o.name.as_str()).unwrap_or("?")
        ));
    }
    report
}

impl Coordinator {
    /// Runs a promotion (or a switchover) and reports what happened.
    pub async fn promote(&self, req: PromoteRequest, switchover: bool) -> Result<Value> {
        let started = Instant::now();
        let config = self.cell.get();
        let allow = Allow {
            force: req.force || switchover,
            accept_loss: req.accept_loss,
            until: req.until,
        };
        let seen = self.look(&config, &req, switchover).await?;
        let epoch = self.next_epoch(&seen.before, &req.candidate);
        // The new epoch's membership: the configuration's voters and lease. A promotion
        // also needs a majority of the membership it replaces (`core::members`).
        let next = config.members();
        let refused = refusals(&config, &seen, &req.candidate, allow);
        let mut report = first_report(&req, &seen, epoch, &next, &refused, switchover);
        if req.dry_run {
            return Ok(self.dry_run(&config, &seen, &next, refused, report).await);
        }
        if !refused.is_empty() {
            report["outcome"] = json!("refused");
            if let Some(p) = &seen.paused_primary {
                let _ = survey::resume_writes(p).await;
            }
            self.audit(&req, &report, switchover);
            return Err(Error::InvalidInput(format!(
                "promotion of {} refused: {}",
                req.candidate,
                refused.join("; ")
            )));
        }
        let outcome = self
            .go_ahead(&config, &req, &seen, allow, (epoch, next), &mut report)
            .await;
        if let Err(e) = &outcome {
            if req.until.is_some() {
                let _ = self.lift_until(&config, &req.candidate).await;
            }
            report["outcome"] = json!("failed");
            report["error"] = json!(e.to_string());
            if let Some(p) = &seen.paused_primary {
                // The old primary keeps its role when no promise was made: let it write again.
                let _ = survey::resume_writes(p).await;
            }
            self.audit(&req, &report, switchover);
            return Err(Error::Unavailable(format!("{e}")));
        }
        if let (Some(p), Some(o)) = (&seen.paused_primary, &seen.old) {
            report["old_primary_rejoined"] =
                json!(survey::rejoin(p, &o.name, READY_TIMEOUT).await.is_ok());
        }
        report["outcome"] = json!("committed");
        report["took_ms"] = json!(started.elapsed().as_millis() as u64);
        self.audit(&req, &report, switchover);
        Ok(report)
    }

    /// Surveys the nodes and measures the loss. A switchover first stops the primary's
    /// writes and lets the candidate catch up, so that it measures what the candidate lacks
    /// then (nothing, unless it could not).
    async fn look(
        &self,
        config: &Arc<ClusterConfig>,
        req: &PromoteRequest,
        switchover: bool,
    ) -> Result<Looked> {
        let mut before = blocking("survey the nodes", {
            let config = config.clone();
            move || survey(&config)
        })
        .await?;
        let old = before.old_primary(config);
        if switchover {
            self.check_switchover(req, &before, old.as_ref())?;
        }
        let mut stopped_at = None;
        let paused_primary = match (switchover && !req.dry_run, &old) {
            (true, Some(o)) => {
                let (p, last) = self
                    .stop_writes_and_catch_up(config, o, &req.candidate)
                    .await?;
                stopped_at = Some(last);
                let c = config.clone();
                before = blocking("survey the nodes", move || survey(&c)).await?;
                Some(p)
            }
            _ => None,
        };
        let lost = blocking("measure the loss", {
            let (config, cand) = (config.clone(), req.candidate.clone());
            let b: Survey = before.clone();
            let until = req.until;
            move || loss(&config, &b, &cand, until)
        })
        .await?;
        Ok(Looked {
            before,
            old,
            paused_primary,
            stopped_at,
            lost,
        })
    }

    /// A dry run's answer: what would be refused, counting the voters that answer now in
    /// every membership the promotion needs a majority of.
    async fn dry_run(
        &self,
        config: &Arc<ClusterConfig>,
        seen: &Looked,
        next: &Members,
        mut refused: Vec<String>,
        mut report: Value,
    ) -> Value {
        // The memberships seen so far: the new one and the old primary's (its lease's).
        let mut sets = vec![next.clone()];
        if let Some(o) = seen.old.as_ref().filter(|o| !o.lease_voters.is_empty()) {
            let theirs = Members::new(&o.lease_voters, next.lease_ms);
            if theirs.voters != next.voters {
                sets.push(theirs);
            }
        }
        report["required"] = required_json(&sets);
        let all: Vec<String> = sets
            .iter()
            .flat_map(|m| m.voters.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let reachable = self.reachable_voters(config, &all).await;
        for m in &sets {
            if !m.has_majority(&reachable) {
                refused.push(format!(
                    "only {} of the voters {} answer; a promotion needs {} of them",
                    m.count(&reachable),
                    m.voters.join(", "),
                    m.quorum()
                ));
            }
        }
        report["refusals"] = json!(refused);
        report["voters_reachable"] = json!(reachable);
        report["outcome"] = json!(if refused.is_empty() {
            "would proceed"
        } else {
            "would be refused"
        });
        report
    }

    /// Past the refusals: applies up to `--until`, keeps a switchover's primary stopped,
    /// then runs the promotion's phases.
    async fn go_ahead(
        &self,
        config: &Arc<ClusterConfig>,
        req: &PromoteRequest,
        seen: &Looked,
        allow: Allow,
        (epoch, next): (u64, Members),
        report: &mut Value,
    ) -> Result<()> {
        if let Some(until) = req.until {
            self.apply_until(config, &req.candidate, until).await?;
        }
        if let (Some(p), Some(last), Some(o)) = (&seen.paused_primary, seen.stopped_at, &seen.old) {
            self.renew_stop(config, p, &o.name, last).await?;
        }
        let answered = seen
            .before
            .seen
            .values()
            .filter(|s| s.reachable)
            .map(|s| s.name.clone())
            .collect();
        let plan = Plan {
            req,
            allow,
            answered,
            silent_at_recheck: std::sync::Mutex::new(json!([])),
        };
        let ran = self.run(config, &plan, epoch, next, report).await;
        report["unknown_at_commit"] = plan.silent_at_recheck.lock().expect("lock").clone();
        ran
    }

    /// The epoch to prepare: one above any seen or promised, or the same again when this
    /// node already promised it to the same candidate (a retry).
    fn next_epoch(&self, survey: &Survey, candidate: &str) -> u64 {
        let (promised, to) = &self.promised;
        let known = survey.epoch.max(self.cell.leader().map_or(0, |(e, _)| e));
        if *promised > known && to == candidate {
            *promised
        } else {
            known.max(*promised) + 1
        }
    }

    fn check_switchover(
        &self,
        req: &PromoteRequest,
        survey: &Survey,
        old: Option<&Seen>,
    ) -> Result<()> {
        let Some(old) = old.filter(|o| o.reachable && o.role == Some(NodeRole::Primary)) else {
            return Err(Error::InvalidInput(
                "a switchover needs the primary running; it does not answer: use `spare promote` instead".into(),
            ));
        };
        if !old.lease_valid {
            return Err(Error::InvalidInput(format!(
                "the primary {} holds no write lease (its voters do not confirm it): fix that first, or use `spare promote --force`",
                old.name
            )));
        }
        match survey.seen.get(&req.candidate) {
            Some(c)
                if c.reachable
                    && c.role == Some(NodeRole::Spare)
                    && !c.state.starts_with("seeding") =>
            {
                Ok(())
            }
            _ => Err(Error::InvalidInput(format!(
                "{} is not a running, seeded spare; `spare status` shows each node's state",
                req.candidate
            ))),
        }
    }

    /// Renews a switchover's stop right before the prepares, for all the promotion needs;
    /// fails if the primary wrote meanwhile (its first stop ran out): nothing is promised yet.
    async fn renew_stop(
        &self,
        config: &ClusterConfig,
        http: &str,
        name: &str,
        last: u64,
    ) -> Result<()> {
        let now = stop_writes(http, name, switchover_stop(config)).await?;
        if now != last {
            return Err(Error::Unavailable(format!(
                "{name} took writes again during the switchover (its log went from LSN {last} to {now}): nothing was promised; run the switchover again"
            )));
        }
        Ok(())
    }

    /// Stops the primary's writes, then waits until the candidate holds its last record.
    async fn stop_writes_and_catch_up(
        &self,
        config: &ClusterConfig,
        old: &Seen,
        candidate: &str,
    ) -> Result<(String, u64)> {
        let http = config.node(&old.name)?.http_advertise.clone();
        // Long enough for the catch-up; renewed before the prepares.
        let bound = CATCH_UP_TIMEOUT + switchover_stop(config);
        let last = stop_writes(&http, &old.name, bound).await?;
        let cand_http = config.node(candidate)?.http_advertise.clone();
        let mut at = 0;
        let caught_up = survey::poll_status(&cand_http, CATCH_UP_TIMEOUT, |doc| {
            at = doc
                .and_then(NodeStatus::positions)
                .map_or(0, |(_, last, _)| last);
            Ok(at >= last)
        })
        .await?;
        if !caught_up {
            let _ = survey::resume_writes(&http).await;
            return Err(Error::Unavailable(format!(
                "{candidate} reached LSN {at}, not the primary's {last}, within {CATCH_UP_TIMEOUT:?}; writes resumed on {}, nothing changed",
                old.name
            )));
        }
        Ok((http, last))
    }

    /// Carries out `core::promotion::Promotion`: sends what it returns, feeds it the
    /// answers, and decides nothing itself. The prepares go to every voter at once; the
    /// promotion goes on as soon as a quorum promised (the others may answer later, or never:
    /// a frozen voter costs nothing). Then the fence, the recheck, the candidate's commit
    /// (confirmed), the other voters' commits (best effort, not waited for), and the wait for
    /// the new primary.
    async fn run(
        &self,
        config: &Arc<ClusterConfig>,
        plan: &Plan<'_>,
        epoch: u64,
        next: Members,
        report: &mut Value,
    ) -> Result<()> {
        let req = plan.req;
        let origin = Instant::now();
        let ms = move |t: Instant| t.duration_since(origin).as_millis() as u64;
        let everyone: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
        let (mut p, out) = Promotion::start(&req.candidate, epoch, next, &[], &everyone);
        let mut asks = Asks::default();
        self.send_prepares(config, &p, &mut asks, out);
        let (mut links, answered) = self
            .gather_promises(config, &mut p, &mut asks, origin)
            .await;
        // Late answers still land (a voter that promises grants no more), unwaited for.
        asks.set.detach_all();
        report["promised_by"] = json!(p.promised_by());
        report["required"] = required_json(p.required());
        let asked: std::collections::BTreeSet<&String> =
            p.required().iter().flat_map(|m| &m.voters).collect();
        report["unanswered_at_quorum"] = json!(asked
            .into_iter()
            .filter(|v| !answered.contains(*v))
            .collect::<Vec<_>>());
        let Phase::Fencing { until_ms } = p.phase.clone() else {
            let Phase::Failed(why) = &p.phase else {
                unreachable!("gathering ends in a fence or a failure")
            };
            return Err(Error::Unavailable(format!(
                "{why}; nothing was committed, the cluster is unchanged except for these promises"
            )));
        };
        report["fence_ms"] = json!(until_ms.saturating_sub(ms(Instant::now())));
        tokio::time::sleep_until((origin + Duration::from_millis(until_ms)).into()).await;
        let mut outs: std::collections::VecDeque<Out> = p.tick(ms(Instant::now())).into();
        assert!(!outs.is_empty(), "the fence is over: the recheck is due");
        while let Some(o) = outs.pop_front() {
            outs.extend(self.carry_out(config, plan, &mut p, &mut links, o).await);
        }
        match &p.phase {
            Phase::Committed => self.wait_ready(config, &req.candidate).await,
            Phase::Failed(why) => Err(Error::Unavailable(why.clone())),
            other => {
                unreachable!("a promotion past its fence ends committed or failed, not {other:?}")
            }
        }
    }

    /// Feeds the prepare answers to `p` as they come, until it leaves `Preparing` (a quorum
    /// of promises, or one out of reach) or [`PREPARE_TIMEOUT`] passes. Returns the control
    /// connections of the voters that promised (kept for the commit), and which voters
    /// answered by then.
    async fn gather_promises(
        &self,
        config: &Arc<ClusterConfig>,
        p: &mut Promotion,
        asks: &mut Asks,
        origin: Instant,
    ) -> (BTreeMap<String, PeerStream>, Vec<String>) {
        let ms = |t: Instant| t.duration_since(origin).as_millis() as u64;
        let deadline = tokio::time::Instant::from(origin + PREPARE_TIMEOUT);
        let mut links = BTreeMap::new();
        let mut answered = Vec::new();
        while p.phase == Phase::Preparing {
            let joined = tokio::select! {
                j = asks.set.join_next_with_id() => j,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let (voter, answer, at) = match joined {
                Some(Ok((_, answered))) => answered,
                // A prepare task that died is that voter's refusal, not the end of the wait.
                Some(Err(e)) => {
                    let voter = asks.voters.get(&e.id()).cloned().unwrap_or_default();
                    answered.push(voter.clone());
                    let more = p.on_refusal(&voter, format!("its prepare failed ({e})"), None);
                    self.send_prepares(config, p, asks, more);
                    continue;
                }
                None => {
                    p.on_timeout();
                    break;
                }
            };
            answered.push(voter.clone());
            // A report may reveal a membership whose voters were not asked yet.
            let more = match answer {
                Ok((
                    Message::PrepareReply {
                        epoch: e,
                        promised: true,
                        lease_remaining_ms,
                        known,
                        ..
                    },
                    s,
                )) => {
                    links.insert(voter.clone(), s);
                    p.on_promise(&voter, e, lease_remaining_ms, known.sanitized(), ms(at))
                }
                Ok((
                    Message::PrepareReply {
                        epoch: e,
                        promised_to,
                        known,
                        why,
                        ..
                    },
                    _,
                )) => {
                    let why = match why.is_empty() {
                        true => format!("already promised epoch {e} to {promised_to}"),
                        false => why,
                    };
                    p.on_refusal(&voter, why, Some(known.sanitized()))
                }
                Ok((other, _)) => p.on_refusal(&voter, format!("answered {}", other.name()), None),
                Err(e) => p.on_refusal(&voter, format!("unreachable ({e})"), None),
            };
            self.send_prepares(config, p, asks, more);
        }
        (links, answered)
    }

    /// Sends the prepares `out` holds, each in its own task.
    fn send_prepares(
        &self,
        config: &Arc<ClusterConfig>,
        p: &Promotion,
        asks: &mut Asks,
        out: Vec<Out>,
    ) {
        for o in out {
            let Out::Prepare {
                to,
                epoch,
                candidate,
            } = o
            else {
                unreachable!("while preparing, a promotion asks for prepares only")
            };
            let (me, config, members) = (self.identity.clone(), config.clone(), p.next().clone());
            let task = prepare(me, config, to.clone(), epoch, candidate, members);
            let id = asks.set.spawn(task).id();
            asks.voters.insert(id, to);
        }
    }

    /// Carries out one output of the promotion after its fence; returns what `p` asks next.
    async fn carry_out(
        &self,
        config: &Arc<ClusterConfig>,
        plan: &Plan<'_>,
        p: &mut Promotion,
        links: &mut BTreeMap<String, PeerStream>,
        out: Out,
    ) -> Vec<Out> {
        match out {
            Out::Recheck => {
                let verdict = self.recheck(config, plan).await;
                if let Ok(silent) = &verdict {
                    // What these hold was not known when the promotion committed.
                    plan.silent_at_recheck
                        .lock()
                        .expect("lock")
                        .clone_from(silent);
                }
                p.on_recheck(verdict.map(drop).map_err(|e| e.to_string()))
            }
            Out::Commit {
                to,
                epoch,
                candidate,
                confirm: true,
            } => {
                let link = links.remove(&to);
                let c = CommitOf {
                    epoch,
                    candidate,
                    members: p.next().clone(),
                    until: plan.req.until,
                };
                let confirmed = commit_one(&self.identity, config, link, &to, c).await;
                p.on_commit_reply(&to, confirmed)
            }
            Out::Commit {
                to,
                epoch,
                candidate,
                confirm: false,
            } => {
                let (me, config, link) = (self.identity.clone(), config.clone(), links.remove(&to));
                let c = CommitOf {
                    epoch,
                    candidate,
                    members: p.next().clone(),
                    until: None,
                };
                tokio::spawn(async move {
                    if !commit_one(&me, &config, link, &to, c).await {
                        tracing::info!(node = %to, "did not confirm the new epoch; it learns it from the new primary");
                    }
                });
                Vec::new()
            }
            Out::Prepare { .. } => unreachable!("prepares are sent before the fence only"),
        }
    }

    /// After the fence, positions are final: the loss may not exceed what was accepted.
    /// With every node surveyed again (those that did not answer the first time, briefly:
    /// [`survey::RESURVEY_SILENT_TIMEOUT`]), the promotion must still be allowed: the
    /// candidate fit, the loss within what was accepted (`promotion::refusals`; the old
    /// primary answering no longer matters: it can no longer write). Names the nodes still
    /// silent in `report`.
    async fn recheck(&self, config: &Arc<ClusterConfig>, plan: &Plan<'_>) -> Result<Value> {
        let (c, cand) = (config.clone(), plan.req.candidate.clone());
        let (answered, until) = (plan.answered.clone(), plan.allow.until);
        let (fresh, lost) = blocking("measure the loss", move || {
            let s = survey_within(&c, |n| match answered.iter().any(|a| a == n) {
                true => survey::SURVEY_TIMEOUT,
                false => survey::RESURVEY_SILENT_TIMEOUT,
            });
            let lost = loss(&c, &s, &cand, until);
            (s, lost)
        })
        .await?;
        let allow = Allow {
            force: true,
            ..plan.allow
        };
        let mut refused =
            promotion::refusals(fresh.seen.get(&plan.req.candidate), None, &lost, allow);
        refused.extend(promotion::unreadable_refusals(fresh.seen.values()));
        if !refused.is_empty() {
            return Err(Error::Unavailable(format!(
                "after the fence: {}; nothing was committed; the old primary can no longer write: run the promotion again (with --accept-loss {} if that loss is accepted), or promote {}",
                refused.join("; "),
                lost.transactions,
                lost.ahead.as_deref().unwrap_or("another node")
            )));
        }
        let silent: Vec<&String> = fresh
            .seen
            .values()
            .filter(|s| !s.reachable || s.role.is_none())
            .map(|s| &s.name)
            .collect();
        Ok(json!(silent))
    }

    /// Makes the candidate apply exactly up to `until` (pause and delay notwithstanding) and
    /// waits until it did.
    async fn apply_until(&self, config: &ClusterConfig, candidate: &str, until: u64) -> Result<()> {
        let http = config.node(candidate)?.http_advertise.clone();
        survey::post_ok(&http, "/v1/admin/apply-until", json!({ "lsn": until })).await?;
        let mut applied = 0;
        let stopped = survey::poll_status(&http, CATCH_UP_TIMEOUT, |doc| {
            applied = doc
                .and_then(NodeStatus::positions)
                .map_or(0, |(_, _, applied)| applied);
            if applied > until {
                return Err(Error::Unavailable(format!(
                    "{candidate} applied LSN {applied}, past {until}"
                )));
            }
            Ok(applied == until)
        })
        .await?;
        if !stopped {
            return Err(Error::Unavailable(format!(
                "{candidate} is at LSN {applied}, could not reach {until} within {CATCH_UP_TIMEOUT:?}"
            )));
        }
        Ok(())
    }

    /// Lifts an `apply_until` after a failed promotion.
    async fn lift_until(&self, config: &ClusterConfig, candidate: &str) -> Result<()> {
        let http = config.node(candidate)?.http_advertise.clone();
        survey::post_ok(&http, "/v1/admin/apply-until", json!({ "lsn": null }))
            .await
            .map(drop)
    }

    /// Waits until the candidate serves as primary with a valid lease.
    async fn wait_ready(&self, config: &ClusterConfig, candidate: &str) -> Result<()> {
        let http = config.node(candidate)?.http_advertise.clone();
        let ready = survey::poll_status(&http, READY_TIMEOUT, |doc| {
            let lease = doc
                .and_then(NodeStatus::primary)
                .and_then(|p| p.lease.as_ref());
            Ok(lease.is_some_and(|l| l.valid))
        })
        .await?;
        if !ready {
            return Err(Error::Unavailable(format!(
                "{candidate} was promoted but does not serve writes after {READY_TIMEOUT:?}; check its log and `spare status`"
            )));
        }
        Ok(())
    }

    /// Which voters accept a control connection (a dry run's reachability check).
    async fn reachable_voters(
        &self,
        config: &Arc<ClusterConfig>,
        voters: &[String],
    ) -> Vec<String> {
        let mut out = Vec::new();
        for v in voters {
            let probe =
                tokio::time::timeout(PREPARE_TIMEOUT, control(&self.identity, config, v, 0)).await;
            if matches!(probe, Ok(Ok(_))) {
                out.push(v.clone());
            }
        }
        out
    }

    /// Appends the attempt to the audit log and the events.
    fn audit(&self, req: &PromoteRequest, report: &Value, switchover: bool) {
        let entry = json!({
            "time_ms": crate::clock::wall_ms(),
            "kind": if switchover { "switchover" } else { "promote" },
            "asked_by": req.asked_by,
            "coordinator": self.identity.name,
            "candidate": req.candidate,
            "epoch": report["epoch"],
            "outcome": report["outcome"],
            "old_primary": report["old_primary"],
            "voters": report["voters"],
            "required": report["required"],
            "promised_by": report["promised_by"],
            "loss": report["loss"],
            "accept_loss": req.accept_loss,
            "force": req.force,
            "refusals": report["refusals"],
            "error": report["error"],
        });
        if let Err(e) = append_line(&self.data_dir.join(AUDIT_FILE), &entry) {
            tracing::error!(cause = %e, "cannot write the promotion audit log");
        }
        let what = format!(
            "{} of {} to epoch {}: {}",
            if switchover {
                "switchover"
            } else {
                "promotion"
            },
            req.candidate,
            report["epoch"],
            report["outcome"].as_str().unwrap_or("?")
        );
        tracing::warn!(asked_by = %req.asked_by, %what, "promotion audit");
        self.events.record("promotion", Some(&req.candidate), &what);
    }
}

/// The memberships a promotion needs a majority of, as the report shows them.
fn required_json(sets: &[Members]) -> Value {
    json!(sets
        .iter()
        .map(|m| json!({ "voters": m.voters, "quorum": m.quorum(), "lease_ms": m.lease_ms }))
        .collect::<Vec<_>>())
}

/// Appends one JSON line and syncs it.
fn append_line(path: &std::path::Path, v: &Value) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    writeln!(f, "{v}").map_err(Error::io(format!("append to {}", path.display())))?;
    f.sync_data()
        .map_err(Error::io(format!("sync {}", path.display())))
}

/// Reads the audit log (newest last).
pub fn read_audit(data_dir: &std::path::Path) -> Result<Vec<Value>> {
    let path = data_dir.join(AUDIT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", path.display()))(e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
