//! Admin routes of promotion (DESIGN.md §7): promote and switchover (any node coordinates),
//! rejoin (on the old primary), stopping writes for a switchover (on the primary), the log
//! summary behind the loss preview (data nodes), and the audit log.

use std::sync::Arc;

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::actors::messages::RoleCheck;
use crate::actors::node::addr::NodeAddr;
use crate::actors::node::coordinator::{read_audit, Coordinator, PromoteRequest};
use crate::actors::primary::committer::Job;
use crate::actors::shared::primary_ref;
use crate::actors::spare::controls::{Held, SetHold};
use crate::actors::spare::{SpareActor, SpareShared};
use crate::config::Role;
use crate::error::{Error, Result};
use crate::http::state::{error_response, respond, ApiState};
use crate::state::Incarnation;

fn coordinator(state: &ApiState) -> Result<Coordinator> {
    let s = state.slot.voter.state();
    Ok(Coordinator {
        cell: state.cell.clone(),
        identity: state.slot.identity.clone(),
        data_dir: state.slot.node()?.data_dir,
        events: state.slot.events.clone(),
        promised: (s.promised_epoch, s.promised_to),
    })
}

async fn run_promotion(state: &ApiState, body: &web::Bytes, switchover: bool) -> Result<Value> {
    let req: PromoteRequest = serde_json::from_slice(body).map_err(|e| {
        Error::InvalidInput(format!(
            "expected {{\"candidate\": NAME, \"dry_run\"?, \"accept_loss\"?, \"force\"?}}: {e}"
        ))
    })?;
    // A switchover loses nothing: what only a promotion may do is refused, not ignored
    // (an `until` below the stop would discard writes the old primary acknowledged).
    if switchover && (req.until.is_some() || req.accept_loss > 0 || req.force || req.dry_run) {
        return Err(Error::InvalidInput(
            "a switchover takes only {\"candidate\", \"asked_by\"?}: it loses nothing; for until, accept_loss, force or dry_run use /v1/admin/promote (`spare promote`)".into(),
        ));
    }
    let Ok(_guard) = state.slot.promoting.try_lock() else {
        return Err(Error::Unavailable(
            "a promotion coordinated by this node is already running; wait for its answer".into(),
        ));
    };
    let report = coordinator(state)?.promote(req, switchover).await;
    // The roles changed: the cluster view should not wait for the next poll.
    if let Ok(NodeAddr::Monitor { actor, .. }) = state.slot.addr() {
        actor.do_send(crate::actors::monitor::PollNow);
    }
    report
}

/// `POST /v1/admin/promote`: `{"candidate", "dry_run"?, "accept_loss"?, "force"?, "asked_by"?}`.
pub async fn promote(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    respond(run_promotion(&state, &body, false).await)
}

/// `POST /v1/admin/switchover`: `{"candidate", "asked_by"?}`.
pub async fn switchover(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    respond(run_promotion(&state, &body, true).await)
}

/// `GET /v1/admin/promotions`: the promotions this node coordinated, oldest first.
pub async fn promotions(state: web::Data<ApiState>) -> HttpResponse {
    respond(
        state
            .slot
            .node()
            .and_then(|n| read_audit(&n.data_dir))
            .map(|entries| json!({ "promotions": entries })),
    )
}

/// `POST /v1/admin/rejoin`: a fenced old primary becomes a spare of the current primary (its
/// records the new history lacks go to `quarantine/` when the primary positions it).
pub async fn rejoin(state: web::Data<ApiState>) -> HttpResponse {
    respond(rejoin_inner(&state).await)
}

async fn rejoin_inner(state: &ApiState) -> Result<Value> {
    let slot = &state.slot;
    let s = slot.voter.state();
    match s.incarnation(&slot.name) {
        Incarnation::Monitor => Err(Error::InvalidInput(format!(
            "{} is a monitor: only data nodes rejoin",
            slot.name
        ))),
        Incarnation::Primary => Err(Error::InvalidInput(format!(
            "{} is the primary of epoch {} as far as it knows: a node rejoins once a newer primary was promoted (it is then `fenced`)",
            slot.name, s.epoch
        ))),
        Incarnation::Spare => Ok(json!({ "node": slot.name, "role": "spare", "following": s.primary, "epoch": s.epoch, "note": "already a spare" })),
        Incarnation::Fenced => {
            let voter = slot.voter.clone();
            web::block(move || voter.set_role(Role::Spare))
                .await
                .map_err(|e| Error::Unavailable(format!("rejoin task failed: {e}")))??;
            state.supervisor.role_check.do_send(RoleCheck {
                node: slot.name.clone(),
            });
            slot.events.record(
                "rejoined",
                None,
                &format!("{} rejoins as a spare of {} (epoch {})", slot.name, s.primary, s.epoch),
            );
            Ok(json!({ "node": slot.name, "role": "spare", "following": s.primary, "epoch": s.epoch }))
        }
    }
}

/// Shortest stop of the writes a caller may ask for (`for_ms`).
const MIN_STOP_MS: u64 = 1_000;

#[derive(Deserialize)]
struct WritesBody {
    accept: bool,
    /// How long a stop holds at most, in ms (default: [`crate::actors::node::coordinator::SWITCHOVER_STOP_MAX`]).
    for_ms: Option<u64>,
}

/// `POST /v1/admin/writes` `{"accept": false|true, "for_ms"?}` (primary): a switchover stops
/// the primary's writes and heartbeats (for `for_ms` at most), and answers the LSN of its
/// last record.
pub async fn writes(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    respond(writes_inner(&state, &body).await)
}

async fn writes_inner(state: &ApiState, body: &web::Bytes) -> Result<Value> {
    let b: WritesBody = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidInput(format!("expected {{\"accept\": true|false}}: {e}")))?;
    let NodeAddr::Primary {
        writes,
        shared,
        primary,
        ..
    } = state.slot.addr()?
    else {
        return Err(Error::NotPrimary {
            primary: Some(primary_ref(&state.cell.get())),
        });
    };
    if b.for_ms.is_some_and(|ms| ms < MIN_STOP_MS) {
        return Err(Error::InvalidInput(format!(
            "\"for_ms\" must be at least {MIN_STOP_MS}: a stop that ends before the lease is given up would leave it suspended"
        )));
    }
    let (ack, answer) = oneshot::channel();
    writes
        .send(Job::Writes {
            accept: b.accept,
            bound: b.for_ms.map_or(
                crate::actors::node::coordinator::SWITCHOVER_STOP_MAX,
                std::time::Duration::from_millis,
            ),
            ack,
        })
        .await
        .map_err(|_| Error::Unavailable("the write path has stopped".into()))?;
    let lsn = answer
        .await
        .map_err(|_| Error::Unavailable("the write path stopped before answering".into()))?;
    let Some(lease) = primary.lease.get().cloned() else {
        return Ok(json!({ "accept": b.accept, "lsn": lsn }));
    };
    if b.accept {
        lease.resume();
        return Ok(json!({ "accept": true, "lsn": lsn }));
    }
    // Nothing is written any more: give the lease up, so the promotion need not wait it out.
    let epoch = shared.epoch.load(std::sync::atomic::Ordering::Relaxed);
    let released = crate::actors::primary::lease::release(shared, lease, epoch, lsn).await;
    Ok(json!({ "accept": false, "lsn": lsn, "lease_released_by": released }))
}

#[derive(Deserialize)]
pub struct SummaryQuery {
    after: u64,
    to: u64,
}

/// `GET /v1/log/summary?after=A&to=B` (data nodes): what records A+1..=B of this node's log
/// hold (records, transactions, bytes, newest commit time).
pub async fn log_summary(state: web::Data<ApiState>, q: web::Query<SummaryQuery>) -> HttpResponse {
    let shared = match state.slot.addr() {
        Ok(NodeAddr::Primary { shared, .. } | NodeAddr::Spare { shared, .. }) => shared,
        Ok(NodeAddr::Monitor { .. }) => {
            return error_response(&Error::InvalidInput("a monitor holds no log".into()))
        }
        Err(e) => return error_response(&e),
    };
    let (after, to) = (q.after, q.to);
    let r = web::block(move || {
        crate::log::summary::summarise(&shared.log_dir(), shared.oldest_lsn(), after, to)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("summary task failed: {e}")))
    .and_then(|r| r)
    .and_then(|s| serde_json::to_value(s).map_err(|e| Error::InvalidData(e.to_string())));
    respond(r)
}

/// The spare behind this node, or why there is none.
/// The running spare's actor and what it shares.
fn spare_of(state: &ApiState) -> Result<(Addr<SpareActor>, Arc<SpareShared>)> {
    match state.slot.addr()? {
        NodeAddr::Spare { actor, spare, .. }
            if state.slot.running() == Some(Incarnation::Spare) =>
        {
            Ok((actor, spare))
        }
        _ => Err(Error::InvalidInput(format!(
            "{} is not a spare: only a spare's apply can be paused, resumed or stopped at an LSN",
            state.slot.name
        ))),
    }
}

/// Asks the spare's actor to change its apply gate (it alone writes it).
pub(crate) async fn set_hold(actor: &Addr<SpareActor>, change: SetHold) -> Result<Held> {
    actor
        .send(change)
        .await
        .map_err(|e| Error::Unavailable(format!("the spare is changing role ({e}); retry")))?
}

async fn set_paused(state: &ApiState, paused: bool) -> Result<Value> {
    let held = set_hold(&spare_of(state)?.0, SetHold::Pause(paused)).await?;
    let applied = held.applied;
    state.slot.events.record(
        if paused {
            "apply_paused"
        } else {
            "apply_resumed"
        },
        None,
        &format!(
            "{} {} at LSN {applied}",
            state.slot.name,
            if paused { "paused" } else { "resumed" }
        ),
    );
    Ok(
        json!({ "node": state.slot.name, "paused": paused, "applied_lsn": applied, "received_lsn": held.flushed }),
    )
}

/// `POST /v1/admin/pause` (spares): stop applying; receiving goes on. Survives restarts.
pub async fn pause(state: web::Data<ApiState>) -> HttpResponse {
    respond(set_paused(&state, true).await)
}

/// `POST /v1/admin/resume` (spares): apply again (what is due under `apply_delay`).
pub async fn resume(state: web::Data<ApiState>) -> HttpResponse {
    respond(set_paused(&state, false).await)
}

/// `{"lsn": N}` or `{"lsn": null}`: the key is required (a body without it, or with a
/// misspelt one, must not lift a stop LSN by accident).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UntilBody {
    #[serde(deserialize_with = "Option::deserialize")]
    lsn: Option<u64>,
}

/// `POST /v1/admin/apply-until` `{"lsn": N}` (spares): apply exactly up to N (a promotion
/// `--until`), pause and delay notwithstanding; `{"lsn": null}` lifts it.
pub async fn apply_until(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    respond(apply_until_inner(&state, &body).await)
}

async fn apply_until_inner(state: &ApiState, body: &[u8]) -> Result<Value> {
    let b: UntilBody = serde_json::from_slice(body).map_err(|e| {
        Error::InvalidInput(format!(
            "expected {{\"lsn\": N}} or {{\"lsn\": null}} (null lifts it): {e}"
        ))
    })?;
    let (actor, spare) = spare_of(state)?;
    let applied = spare
        .apply
        .applied
        .load(std::sync::atomic::Ordering::Acquire);
    if let Some(lsn) = b.lsn.filter(|&l| l < applied) {
        return Err(Error::InvalidInput(format!(
            "{} already applied LSN {applied}, past {lsn}: choose a spare that has not (a paused or delayed one)",
            state.slot.name
        )));
    }
    let before = spare.apply.gate().stop_at;
    let held = set_hold(&actor, SetHold::StopAt(b.lsn)).await?;
    // The apply thread may have gone past `lsn` between the check and the change.
    if let Some(lsn) = b.lsn.filter(|&l| l < held.applied) {
        set_hold(&actor, SetHold::StopAt(before)).await?;
        return Err(Error::InvalidInput(format!(
            "{} applied LSN {}, past {lsn}, while the stop was being set: choose a spare that has not (a paused or delayed one)",
            state.slot.name, held.applied
        )));
    }
    Ok(json!({ "node": state.slot.name, "stop_at": b.lsn, "applied_lsn": held.applied }))
}

/// The data node behind this slot and its log bounds (oldest, last durable LSN).
async fn log_bounds(
    state: &ApiState,
) -> Result<(std::sync::Arc<crate::actors::shared::DataShared>, u64, u64)> {
    let addr = state.slot.addr()?;
    let (shared, status) = match &addr {
        NodeAddr::Primary { shared, actor, .. } => (
            shared.clone(),
            actor.send(crate::actors::messages::GetStatus).await,
        ),
        NodeAddr::Spare { shared, actor, .. } => (
            shared.clone(),
            actor.send(crate::actors::messages::GetStatus).await,
        ),
        NodeAddr::Monitor { .. } => {
            return Err(Error::InvalidInput(
                "a monitor holds no log; ask a data node (--node)".into(),
            ))
        }
    };
    let status =
        status.map_err(|e| Error::Unavailable(format!("node actor did not answer: {e}")))?;
    let last = status.positions().map_or(0, |(_, last, _)| last);
    Ok((shared.clone(), shared.oldest_lsn(), last))
}

/// `GET /v1/log?from=&to=&since_ms=&table=&limit=` (data nodes): the transactions in this
/// node's log (`spare log`).
pub async fn log_list(
    state: web::Data<ApiState>,
    q: web::Query<crate::log::inspect::Filter>,
) -> HttpResponse {
    let run = async {
        let (shared, oldest, last) = log_bounds(&state).await?;
        let f = q.into_inner();
        web::block(move || crate::log::inspect::list(&shared.log_dir(), oldest, last, &f))
            .await
            .map_err(|e| Error::Unavailable(format!("log task failed: {e}")))?
    };
    respond(run.await)
}

#[derive(Deserialize)]
pub struct ShowQuery {
    lsn: u64,
}

/// `GET /v1/log/show?lsn=N` (data nodes): one transaction's row changes, with the column
/// names of the tables as this node has them now.
pub async fn log_show(state: web::Data<ApiState>, q: web::Query<ShowQuery>) -> HttpResponse {
    let run = async {
        let (shared, oldest, last) = log_bounds(&state).await?;
        let lsn = q.lsn;
        web::block(move || -> Result<Value> {
            let mut v = crate::log::inspect::show(&shared.log_dir(), oldest, last, lsn)?;
            let tables: std::collections::BTreeSet<String> = v["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["table"].as_str().map(str::to_string))
                .collect();
            let mut columns = serde_json::Map::new();
            for t in tables {
                let st = crate::store::value::Statement {
                    sql: "SELECT name FROM pragma_table_info(?) ORDER BY cid".into(),
                    params: vec![crate::store::value::SqlValue::Text(t.clone())],
                };
                if let Ok((r, _)) = shared.readers.query(&st, &shared.config().cluster.limits) {
                    let names: Vec<Value> = r.rows.iter().map(|row| row[0].to_json()).collect();
                    columns.insert(t, json!(names));
                }
            }
            v["columns"] = columns.into();
            Ok(v)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("log task failed: {e}")))?
    };
    respond(run.await)
}

/// `GET /v1/backup` (data nodes): a consistent copy of this node's database, streamed; its
/// description (LSN, epoch, chain, size, CRC) in the `x-spare-backup` header. Writes go on.
pub async fn backup(state: web::Data<ApiState>) -> HttpResponse {
    let run = async {
        let (shared, _, _) = log_bounds(&state).await?;
        let cluster = state.cell.get().cluster.name.clone();
        let dir = shared.node.data_dir.join("backup-tmp");
        let (file, info) = web::block(
            move || -> Result<(std::fs::File, crate::store::backup::BackupInfo)> {
                std::fs::create_dir_all(&dir)
                    .map_err(Error::io(format!("create {}", dir.display())))?;
                let tmp = dir.join(format!("{:016x}.sqlite", rand::random::<u64>()));
                let base = *shared.base.lock().expect("base lock");
                let taken = crate::store::backup::take(
                    &shared.node.data_dir.join(crate::store::DB_FILE),
                    &shared.log_dir(),
                    base,
                    &tmp,
                    &cluster,
                    &shared.node.name,
                );
                // Open, then unlink: the stream reads the open file, nothing is left behind.
                let file = std::fs::File::open(&tmp);
                let _ = std::fs::remove_file(&tmp);
                let info = taken?;
                Ok((file.map_err(Error::io("open the backup copy"))?, info))
            },
        )
        .await
        .map_err(|e| Error::Unavailable(format!("backup task failed: {e}")))??;
        Ok::<_, Error>((file, info))
    };
    match run.await {
        Ok((file, info)) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            HttpResponse::Ok()
                .content_type("application/vnd.sqlite3")
                .insert_header((
                    "x-spare-backup",
                    serde_json::to_string(&info).unwrap_or_default(),
                ))
                .streaming(stream)
        }
        Err(e) => error_response(&e),
    }
}
