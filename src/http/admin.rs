//! Admin routes of promotion (DESIGN.md §7): promote and switchover (any node coordinates),
//! rejoin (on the old primary), stopping writes for a switchover (on the primary), the log
//! summary behind the loss preview (data nodes), and the audit log.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::actors::committer::Job;
use crate::actors::coordinator::{read_audit, Coordinator, PromoteRequest};
use crate::actors::node::{primary_ref, NodeAddr};
use crate::actors::supervisor::RoleCheck;
use crate::config::Role;
use crate::error::{Error, Result};
use crate::http::{error_response, ApiState};
use crate::state::Incarnation;

fn respond(r: Result<Value>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error_response(&e),
    }
}

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
    let Ok(_guard) = state.slot.promoting.try_lock() else {
        return Err(Error::Unavailable(
            "a promotion coordinated by this node is already running; wait for its answer".into(),
        ));
    };
    coordinator(state)?.promote(req, switchover).await
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
            state.supervisor.do_send(RoleCheck {
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

#[derive(Deserialize)]
struct WritesBody {
    accept: bool,
}

/// `POST /v1/admin/writes` `{"accept": false|true}` (primary): a switchover stops the
/// primary's writes and heartbeats, and answers the LSN of its last record.
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
    let (ack, answer) = oneshot::channel();
    writes
        .send(Job::Writes {
            accept: b.accept,
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
    let released = crate::actors::lease::release(shared, lease, epoch).await;
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
