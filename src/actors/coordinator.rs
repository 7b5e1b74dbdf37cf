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

use crate::client;
use crate::config::{ClusterConfig, ConfigCell, Role};
use crate::core::promotion::{self, Allow, Loss, Out, Phase, Promotion, Seen};
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::net::handshake::{self, Identity};
use crate::wire::message::Purpose;
use crate::wire::{read_frame, write_frame, Message};

/// How long the survey waits for each node's status.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long promises may take to arrive (connect, handshake, fsync of `node.state`).
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the new primary may take to serve writes after the commit.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a switchover waits for the candidate to hold the primary's last record.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period while waiting for a node.
const WAIT_POLL: Duration = Duration::from_millis(20);
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

/// What the coordinating node lends.
pub struct Coordinator {
    pub cell: Arc<ConfigCell>,
    pub identity: Identity,
    pub data_dir: PathBuf,
    pub events: Arc<EventLog>,
    /// This node's own promise, to pick the next epoch.
    pub promised: (u64, String),
}

/// The survey: every data node's status.
struct Survey {
    seen: BTreeMap<String, Seen>,
    /// Highest epoch any node reported.
    epoch: u64,
}

impl Survey {
    /// The primary of the highest epoch seen answering as primary, else the one the
    /// configuration names.
    fn old_primary(&self, config: &ClusterConfig) -> Option<Seen> {
        self.seen
            .values()
            .filter(|s| s.role == "primary")
            .max_by_key(|s| s.epoch)
            .cloned()
            .or_else(|| self.seen.get(&config.primary().name).cloned())
    }
}

fn seen_of(name: &str, status: std::result::Result<Value, String>) -> Seen {
    match status {
        Ok(d) => Seen {
            name: name.to_string(),
            reachable: true,
            role: d["role"].as_str().unwrap_or_default().to_string(),
            state: d["state"].as_str().unwrap_or_default().to_string(),
            epoch: d["epoch"].as_u64().unwrap_or(0),
            last_lsn: d["last_lsn"].as_u64().unwrap_or(0),
            lease_valid: d["lease"]["valid"] == true,
            applied_lsn: d["applied_lsn"].as_u64().unwrap_or(0),
        },
        Err(_) => Seen {
            name: name.to_string(),
            reachable: false,
            role: String::new(),
            state: "unreachable".into(),
            epoch: 0,
            last_lsn: 0,
            lease_valid: false,
            applied_lsn: 0,
        },
    }
}

/// Asks every data node for its status, all at once (blocking).
fn survey(config: &ClusterConfig) -> Survey {
    let nodes: Vec<(String, String)> = config
        .nodes
        .iter()
        .filter(|n| n.role != Role::Monitor)
        .map(|n| (n.name.clone(), n.http_advertise.clone()))
        .collect();
    let seen: BTreeMap<String, Seen> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(name, http)| {
                scope.spawn(move || {
                    let status = client::get(http, "/v1/status", SURVEY_TIMEOUT)
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            if r.status == 200 {
                                Ok(r.body)
                            } else {
                                Err(r.body["message"].to_string())
                            }
                        });
                    (name.clone(), seen_of(name, status))
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let epoch = seen.values().map(|s| s.epoch).max().unwrap_or(0);
    Survey { seen, epoch }
}

/// What the new history will lack that a reachable node (not a fenced one) holds: past the
/// candidate's end, or past `until` on any node, the candidate included (blocking).
fn loss(config: &ClusterConfig, survey: &Survey, candidate: &str, until: Option<u64>) -> Loss {
    let Some(cand) = survey.seen.get(candidate).filter(|c| c.reachable) else {
        return Loss::default();
    };
    let keep = until.unwrap_or(cand.last_lsn);
    let mut worst = Loss::default();
    for s in survey.seen.values() {
        let others_only = until.is_none() && s.name == candidate;
        if others_only || !s.reachable || s.role == "fenced" || s.last_lsn <= keep {
            continue;
        }
        let Ok(node) = config.node(&s.name) else {
            continue;
        };
        let path = format!("/v1/log/summary?after={keep}&to={}", s.last_lsn);
        let summary = client::get(&node.http_advertise, &path, SURVEY_TIMEOUT)
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body);
        // A node that cannot say what it holds counts every record as a transaction.
        let (records, transactions, bytes, newest) = match &summary {
            Some(b) => (
                b["records"].as_u64().unwrap_or(0),
                b["transactions"].as_u64().unwrap_or(0),
                b["bytes"].as_u64().unwrap_or(0),
                b["newest_commit_ms"].as_u64(),
            ),
            None => {
                let n = s.last_lsn - keep;
                (n, n, 0, None)
            }
        };
        if (transactions, records) > (worst.transactions, worst.records) {
            worst = Loss {
                ahead: Some(s.name.clone()),
                records,
                transactions,
                bytes,
                newest_commit_ms: newest,
            };
        }
    }
    worst
}

/// One control connection to `to` (handshake done).
async fn control(
    me: &Identity,
    config: &ClusterConfig,
    to: &str,
    epoch: u64,
) -> Result<PeerStream> {
    let addr = config.node(to)?.peer_advertise.clone();
    let mut s = crate::net::stream::connect(me, to, &addr, crate::actors::CONNECT_TIMEOUT).await?;
    handshake::dial(&mut s, me, to, epoch, Purpose::Control).await?;
    Ok(s)
}

/// Sends one control request and reads the answer.
async fn ask(s: &mut PeerStream, me: &Identity, epoch: u64, m: Message) -> Result<Message> {
    write_frame(s, &me.envelope(epoch, m)).await?;
    Ok(read_frame(s).await?.message)
}

/// Asks `to` to promise `epoch` to `candidate`; keeps the connection for the commit.
async fn prepare(
    me: Identity,
    config: Arc<ClusterConfig>,
    to: String,
    epoch: u64,
    candidate: String,
) -> (String, Result<(Message, PeerStream)>, Instant) {
    let run = async {
        let mut s = control(&me, &config, &to, epoch).await?;
        let m = ask(&mut s, &me, epoch, Message::Prepare { epoch, candidate }).await?;
        Ok((m, s))
    };
    let r = tokio::time::timeout(PREPARE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(Error::Unavailable(format!("{to} did not answer in time"))));
    (to, r, Instant::now())
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
        let mut before = blocking({
            let config = config.clone();
            move || survey(&config)
        })
        .await?;
        let old = before.old_primary(&config);
        if switchover {
            self.check_switchover(&req, &before, old.as_ref())?;
        }
        // A switchover measures what the candidate lacks once the primary stopped writing and
        // the candidate caught up (nothing, unless it could not).
        let paused_primary = match (switchover && !req.dry_run, &old) {
            (true, Some(o)) => {
                let p = self
                    .stop_writes_and_catch_up(&config, o, &req.candidate)
                    .await?;
                let c = config.clone();
                before = blocking(move || survey(&c)).await?;
                Some(p)
            }
            _ => None,
        };
        let lost = blocking({
            let (config, cand) = (config.clone(), req.candidate.clone());
            let b = Survey {
                seen: before.seen.clone(),
                epoch: before.epoch,
            };
            let until = req.until;
            move || loss(&config, &b, &cand, until)
        })
        .await?;
        let epoch = self.next_epoch(&before, &req.candidate);
        let voters = config.voters();
        let mut refused =
            promotion::refusals(before.seen.get(&req.candidate), old.as_ref(), &lost, allow);
        let mut report = json!({
            "candidate": req.candidate,
            "epoch": epoch,
            "old_primary": old.as_ref().map(|o| json!({ "name": o.name, "reachable": o.reachable && o.role == "primary", "epoch": o.epoch, "last_lsn": o.last_lsn })),
            "voters": voters,
            "quorum": voters.len() / 2 + 1,
            "nodes": before.seen.values().collect::<Vec<_>>(),
            "loss": lost,
            "refusals": refused,
            "lease_ms": config.cluster.lease.as_millis() as u64,
            "dry_run": req.dry_run,
            "until": req.until,
            "switchover": switchover,
        });
        if old.as_ref().is_some_and(|o| !o.reachable) {
            report["unknown"] = json!(format!(
                "what the old primary {} committed and no spare received is not known here; it is kept in its quarantine when it rejoins",
                old.as_ref().map(|o| o.name.as_str()).unwrap_or("?")
            ));
        }
        if req.dry_run {
            let reachable = self.reachable_voters(&config, &voters).await;
            if reachable.len() < voters.len() / 2 + 1 {
                refused.push(format!(
                    "only {} of the {} voters answer ({}); a promotion needs {}",
                    reachable.len(),
                    voters.len(),
                    reachable.join(", "),
                    voters.len() / 2 + 1
                ));
            }
            report["refusals"] = json!(refused);
            report["voters_reachable"] = json!(reachable);
            report["outcome"] = json!(if refused.is_empty() {
                "would proceed"
            } else {
                "would be refused"
            });
            return Ok(report);
        }
        if !refused.is_empty() {
            report["outcome"] = json!("refused");
            if let Some(p) = &paused_primary {
                let _ = resume_writes(p).await;
            }
            self.audit(&req, &report, switchover);
            return Err(Error::InvalidInput(format!(
                "promotion of {} refused: {}",
                req.candidate,
                refused.join("; ")
            )));
        }
        let outcome = match req.until {
            Some(until) => self.apply_until(&config, &req.candidate, until).await,
            None => Ok(()),
        };
        let outcome = match outcome {
            Ok(()) => {
                self.run(&config, &req, epoch, &voters, allow, &mut report)
                    .await
            }
            e => e,
        };
        if let Err(e) = &outcome {
            if req.until.is_some() {
                let _ = self.lift_until(&config, &req.candidate).await;
            }
            report["outcome"] = json!("failed");
            report["error"] = json!(e.to_string());
            if let Some(p) = &paused_primary {
                // The old primary keeps its role when no promise was made: let it write again.
                let _ = resume_writes(p).await;
            }
            self.audit(&req, &report, switchover);
            return Err(Error::Unavailable(format!("{e}")));
        }
        if let (Some(p), Some(o)) = (&paused_primary, &old) {
            report["old_primary_rejoined"] = json!(rejoin(p, &o.name).await.is_ok());
        }
        report["outcome"] = json!("committed");
        report["took_ms"] = json!(started.elapsed().as_millis() as u64);
        self.audit(&req, &report, switchover);
        Ok(report)
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
        let Some(old) = old.filter(|o| o.reachable && o.role == "primary") else {
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
            Some(c) if c.reachable && c.role == "spare" && !c.state.starts_with("seeding") => {
                Ok(())
            }
            _ => Err(Error::InvalidInput(format!(
                "{} is not a running, seeded spare; `spare status` shows each node's state",
                req.candidate
            ))),
        }
    }

    /// Stops the primary's writes, then waits until the candidate holds its last record.
    async fn stop_writes_and_catch_up(
        &self,
        config: &ClusterConfig,
        old: &Seen,
        candidate: &str,
    ) -> Result<String> {
        let http = config.node(&old.name)?.http_advertise.clone();
        let body = json!({ "accept": false });
        let h = http.clone();
        let reply =
            blocking(move || client::post(&h, "/v1/admin/writes", &body, SURVEY_TIMEOUT)).await??;
        let last = reply.body["lsn"].as_u64().ok_or_else(|| {
            Error::Unavailable(format!(
                "{} did not stop its writes: {}",
                old.name, reply.body
            ))
        })?;
        let cand_http = config.node(candidate)?.http_advertise.clone();
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let c = cand_http.clone();
            let at = blocking(move || client::get(&c, "/v1/status", SURVEY_TIMEOUT))
                .await?
                .ok()
                .and_then(|r| r.body["last_lsn"].as_u64())
                .unwrap_or(0);
            if at >= last {
                return Ok(http);
            }
            if Instant::now() > deadline {
                let _ = resume_writes(&http).await;
                return Err(Error::Unavailable(format!(
                    "{candidate} reached LSN {at}, not the primary's {last}, within {CATCH_UP_TIMEOUT:?}; writes resumed on {}, nothing changed",
                    old.name
                )));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Prepare, fence, re-check, commit, wait for the new primary.
    async fn run(
        &self,
        config: &Arc<ClusterConfig>,
        req: &PromoteRequest,
        epoch: u64,
        voters: &[String],
        allow: Allow,
        report: &mut Value,
    ) -> Result<()> {
        let origin = Instant::now();
        let ms = |t: Instant| t.duration_since(origin).as_millis() as u64;
        let (mut p, out) = Promotion::start(&req.candidate, epoch, voters);
        let asks: Vec<_> = out
            .into_iter()
            .filter_map(|o| match o {
                Out::Prepare {
                    to,
                    epoch,
                    candidate,
                } => Some(tokio::spawn(prepare(
                    self.identity.clone(),
                    config.clone(),
                    to,
                    epoch,
                    candidate,
                ))),
                Out::Commit { .. } => None,
            })
            .collect();
        let mut links: BTreeMap<String, PeerStream> = BTreeMap::new();
        for a in asks {
            let Ok((voter, answer, at)) = a.await else {
                continue;
            };
            match answer {
                Ok((
                    Message::PrepareReply {
                        epoch: e,
                        promised: true,
                        lease_remaining_ms,
                        ..
                    },
                    s,
                )) => {
                    p.on_promise(&voter, e, lease_remaining_ms, ms(at));
                    links.insert(voter, s);
                }
                Ok((
                    Message::PrepareReply {
                        epoch: e,
                        promised_to,
                        ..
                    },
                    _,
                )) => p.on_refusal(
                    &voter,
                    format!("already promised epoch {e} to {promised_to}"),
                ),
                Ok((other, _)) => p.on_refusal(&voter, format!("answered {}", other.name())),
                Err(e) => p.on_refusal(&voter, format!("unreachable ({e})")),
            }
        }
        p.on_timeout();
        report["promised_by"] = json!(p.promised_by());
        if let Phase::Failed(why) = &p.phase {
            return Err(Error::Unavailable(format!(
                "{why}; nothing was committed, the cluster is unchanged except for these promises"
            )));
        }
        let Phase::Fencing { until_ms } = p.phase else {
            unreachable!("a prepare phase that did not fail has a quorum")
        };
        report["fence_ms"] = json!(until_ms.saturating_sub(ms(Instant::now())));
        tokio::time::sleep_until((origin + Duration::from_millis(until_ms)).into()).await;
        self.recheck(config, req, allow).await?;
        let commits = p.tick(ms(Instant::now()));
        assert!(!commits.is_empty(), "the fence is over: commits are due");
        self.commit(config, &req.candidate, epoch, req.until, &mut links)
            .await?;
        self.wait_ready(config, &req.candidate).await
    }

    /// After the fence, positions are final: the loss may not exceed what was accepted.
    async fn recheck(
        &self,
        config: &Arc<ClusterConfig>,
        req: &PromoteRequest,
        allow: Allow,
    ) -> Result<()> {
        let (c, cand) = (config.clone(), req.candidate.clone());
        let until = allow.until;
        let lost = blocking(move || {
            let s = survey(&c);
            loss(&c, &s, &cand, until)
        })
        .await?;
        if lost.transactions > allow.accept_loss {
            return Err(Error::Unavailable(format!(
                "after the fence, {} transaction(s) held by {} would be lost (accepted: {}); nothing was committed; the old primary can no longer write: run the promotion again with --accept-loss {}, or promote {}",
                lost.transactions,
                lost.ahead.as_deref().unwrap_or("another node"),
                allow.accept_loss,
                lost.transactions,
                lost.ahead.as_deref().unwrap_or("that node")
            )));
        }
        Ok(())
    }

    /// Tells the candidate first (it must confirm), then every other node (best effort).
    async fn commit(
        &self,
        config: &Arc<ClusterConfig>,
        candidate: &str,
        epoch: u64,
        until: Option<u64>,
        links: &mut BTreeMap<String, PeerStream>,
    ) -> Result<()> {
        let mut order: Vec<String> = vec![candidate.to_string()];
        order.extend(
            config
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .filter(|n| n != candidate),
        );
        for to in order {
            let commit = Message::Commit {
                until: until.filter(|_| to == candidate),
                epoch,
                primary: candidate.to_string(),
            };
            let run = async {
                let mut s = match links.remove(&to) {
                    Some(s) => s,
                    None => control(&self.identity, config, &to, epoch).await?,
                };
                ask(&mut s, &self.identity, epoch, commit).await
            };
            let answer = tokio::time::timeout(PREPARE_TIMEOUT, run).await;
            let confirmed = matches!(&answer, Ok(Ok(Message::CommitReply { epoch: e, primary })) if *e == epoch && primary == candidate);
            if to == candidate && !confirmed {
                return Err(Error::Unavailable(format!(
                    "{candidate} did not confirm the commit of epoch {epoch} ({answer:?}); the promises hold: run the same promotion again"
                )));
            }
            if !confirmed {
                tracing::info!(node = %to, "did not confirm the new epoch; it learns it from the new primary");
            }
        }
        Ok(())
    }

    /// Makes the candidate apply exactly up to `until` (pause and delay notwithstanding) and
    /// waits until it did.
    async fn apply_until(&self, config: &ClusterConfig, candidate: &str, until: u64) -> Result<()> {
        let http = config.node(candidate)?.http_advertise.clone();
        let h = http.clone();
        let r = blocking(move || {
            client::post(
                &h,
                "/v1/admin/apply-until",
                &json!({ "lsn": until }),
                SURVEY_TIMEOUT,
            )
        })
        .await??;
        if r.status != 200 {
            return Err(Error::InvalidInput(
                r.body["message"]
                    .as_str()
                    .unwrap_or("apply-until refused")
                    .to_string(),
            ));
        }
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let h = http.clone();
            let applied = blocking(move || client::get(&h, "/v1/status", SURVEY_TIMEOUT))
                .await?
                .ok()
                .and_then(|r| r.body["applied_lsn"].as_u64())
                .unwrap_or(0);
            if applied == until {
                return Ok(());
            }
            if applied > until || Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "{candidate} is at LSN {applied}, could not stop at {until}"
                )));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Lifts an `apply_until` after a failed promotion.
    async fn lift_until(&self, config: &ClusterConfig, candidate: &str) -> Result<()> {
        let h = config.node(candidate)?.http_advertise.clone();
        blocking(move || {
            client::post(
                &h,
                "/v1/admin/apply-until",
                &json!({ "lsn": null }),
                SURVEY_TIMEOUT,
            )
        })
        .await??;
        Ok(())
    }

    /// Waits until the candidate serves as primary with a valid lease.
    async fn wait_ready(&self, config: &ClusterConfig, candidate: &str) -> Result<()> {
        let http = config.node(candidate)?.http_advertise.clone();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let h = http.clone();
            let doc = blocking(move || client::get(&h, "/v1/status", SURVEY_TIMEOUT)).await?;
            if let Ok(r) = doc {
                if r.body["role"] == "primary" && r.body["lease"]["valid"] == true {
                    return Ok(());
                }
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
        Err(Error::Unavailable(format!(
            "{candidate} was promoted but does not serve writes after {READY_TIMEOUT:?}; check its log and `spare status`"
        )))
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
            "time_ms": crate::actors::committer::now_ms(),
            "kind": if switchover { "switchover" } else { "promote" },
            "asked_by": req.asked_by,
            "coordinator": self.identity.name,
            "candidate": req.candidate,
            "epoch": report["epoch"],
            "outcome": report["outcome"],
            "old_primary": report["old_primary"],
            "voters": report["voters"],
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

async fn resume_writes(http: &str) -> Result<()> {
    let h = http.to_string();
    blocking(move || {
        client::post(
            &h,
            "/v1/admin/writes",
            &json!({ "accept": true }),
            SURVEY_TIMEOUT,
        )
    })
    .await??;
    Ok(())
}

/// Asks the old primary (which got the commit) to become a spare of the new one.
async fn rejoin(http: &str, name: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let h = http.to_string();
        let r = blocking(move || client::post(&h, "/v1/admin/rejoin", &json!({}), SURVEY_TIMEOUT))
            .await?;
        match r {
            Ok(r) if r.status == 200 => return Ok(()),
            other if Instant::now() > deadline => {
                tracing::warn!(node = %name, answer = ?other.map(|r| r.body), "the old primary did not rejoin; run `spare rejoin` on it");
                return Err(Error::Unavailable(format!("{name} did not rejoin")));
            }
            _ => tokio::time::sleep(WAIT_POLL * 5).await,
        }
    }
}

/// Runs blocking work (HTTP calls, files) off the actix thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("coordinator task failed: {e}")))
}
