//! What the promotion coordinator asks the data nodes over their HTTP API (DESIGN.md §7): the
//! survey (every node's status, all at once), the loss (what the new history would lack,
//! from the furthest node's log summary), and the small calls and waits of a switchover and
//! a promotion `--until`. Every call is bounded by [`SURVEY_TIMEOUT`]; every wait by the
//! caller's timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::actors::blocking;
use crate::client;
use crate::config::{ClusterConfig, Role};
use crate::core::promotion::{Loss, Seen};
use crate::core::role::NodeRole;
use crate::error::{Error, Result};
use crate::status::{NodeStatus, Unread};

/// How long the survey waits for each node's status.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);
/// Poll period while waiting for a node.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// The survey: every data node's status.
#[derive(Clone)]
pub struct Survey {
    pub seen: BTreeMap<String, Seen>,
    /// Highest epoch any node reported.
    pub epoch: u64,
}

impl Survey {
    /// The primary of the highest epoch seen answering as primary, else the one the
    /// configuration names.
    pub fn old_primary(&self, config: &ClusterConfig) -> Option<Seen> {
        self.seen
            .values()
            .filter(|s| s.role == Some(NodeRole::Primary))
            .max_by_key(|s| s.epoch)
            .cloned()
            .or_else(|| self.seen.get(&config.primary().name).cloned())
    }
}

/// State of a node that answered a status this version cannot read: it runs and holds data
/// nobody here can measure, so a promotion refuses to go on
/// (`core::promotion::unreadable_refusals`: reachable, no role).
pub const UNREADABLE: &str = "unreadable status";

fn seen_of(name: &str, status: std::result::Result<NodeStatus, Unread>) -> Seen {
    match status {
        Ok(d) => {
            let (epoch, last_lsn, applied_lsn) = d.positions().unwrap_or_default();
            let lease = d.primary().and_then(|p| p.lease.as_ref());
            Seen {
                name: name.to_string(),
                reachable: true,
                role: Some(d.role()),
                state: d.state().to_string(),
                epoch,
                last_lsn,
                lease_valid: lease.is_some_and(|l| l.valid),
                applied_lsn,
                lease_voters: lease.map(|l| l.voters.clone()).unwrap_or_default(),
            }
        }
        Err(Unread::Unreadable(_)) => Seen {
            name: name.to_string(),
            reachable: true,
            role: None,
            state: UNREADABLE.into(),
            epoch: 0,
            last_lsn: 0,
            lease_valid: false,
            applied_lsn: 0,
            lease_voters: Vec::new(),
        },
        Err(_) => Seen {
            name: name.to_string(),
            reachable: false,
            role: None,
            state: "unreachable".into(),
            epoch: 0,
            last_lsn: 0,
            lease_valid: false,
            applied_lsn: 0,
            lease_voters: Vec::new(),
        },
    }
}

/// How long a recheck waits for a node that did not answer the first survey: a node that
/// was frozen or dead and still is should not cost a full survey timeout again; one that
/// came back answers in this time.
pub const RESURVEY_SILENT_TIMEOUT: Duration = Duration::from_millis(300);

/// Asks every data node for its status, all at once (blocking).
pub fn survey(config: &ClusterConfig) -> Survey {
    survey_within(config, |_| SURVEY_TIMEOUT)
}

/// Like [`survey`], waiting for each node the time `timeout` gives it (a recheck gives the
/// nodes that did not answer the first time [`RESURVEY_SILENT_TIMEOUT`]).
pub fn survey_within(config: &ClusterConfig, timeout: impl Fn(&str) -> Duration) -> Survey {
    let nodes: Vec<(String, String, Duration)> = config
        .nodes
        .iter()
        .filter(|n| n.role != Role::Monitor)
        .map(|n| (n.name.clone(), n.http_advertise.clone(), timeout(&n.name)))
        .collect();
    let seen: BTreeMap<String, Seen> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(name, http, timeout)| {
                scope.spawn(move || {
                    let status = client::status_reply(http, *timeout);
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
pub fn loss(config: &ClusterConfig, survey: &Survey, candidate: &str, until: Option<u64>) -> Loss {
    let Some(cand) = survey.seen.get(candidate).filter(|c| c.reachable) else {
        return Loss::default();
    };
    let keep = until.unwrap_or(cand.last_lsn);
    let mut worst = Loss::default();
    for s in survey.seen.values() {
        let others_only = until.is_none() && s.name == candidate;
        if others_only || !s.reachable || s.role == Some(NodeRole::Fenced) || s.last_lsn <= keep {
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

/// POSTs `body` to `path` on the node at `http` (off the actix thread).
pub async fn post(http: &str, path: &'static str, body: Value) -> Result<client::Reply> {
    let h = http.to_string();
    blocking("call a node", move || {
        client::post(&h, path, &body, SURVEY_TIMEOUT)
    })
    .await?
}

/// POSTs and expects 200; else the node's message as the error.
pub async fn post_ok(http: &str, path: &'static str, body: Value) -> Result<Value> {
    let r = post(http, path, body).await?;
    if r.status != 200 {
        return Err(Error::InvalidInput(
            r.body["message"].as_str().unwrap_or("refused").to_string(),
        ));
    }
    Ok(r.body)
}

/// Polls the status of the node at `http` until `done` says so (`Ok(true)`), gives up
/// (`Err`), or `timeout` passes (`Ok(false)`). `done` sees None while the node does not
/// answer with a status.
pub async fn poll_status(
    http: &str,
    timeout: Duration,
    mut done: impl FnMut(Option<&NodeStatus>) -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let h = http.to_string();
        let doc = blocking("poll a node", move || client::status(&h, SURVEY_TIMEOUT))
            .await?
            .ok();
        if done(doc.as_ref())? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Lets the primary at `http` take writes again (a switchover that did not happen).
pub async fn resume_writes(http: &str) -> Result<()> {
    post_ok(http, "/v1/admin/writes", json!({ "accept": true }))
        .await
        .map(drop)
}

/// Pause between two rejoin attempts (the old primary learns the new epoch meanwhile).
const REJOIN_RETRY: Duration = Duration::from_millis(100);

/// Asks the old primary (which got the commit) to become a spare of the new one, until it
/// agrees or `timeout` passes.
pub async fn rejoin(http: &str, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match post(http, "/v1/admin/rejoin", json!({})).await {
            Ok(r) if r.status == 200 => return Ok(()),
            other if Instant::now() > deadline => {
                tracing::warn!(node = %name, answer = ?other.map(|r| r.body), "the old primary did not rejoin; run `spare rejoin` on it");
                return Err(Error::Unavailable(format!("{name} did not rejoin")));
            }
            _ => tokio::time::sleep(REJOIN_RETRY).await,
        }
    }
}
