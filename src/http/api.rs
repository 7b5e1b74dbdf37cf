//! Route handlers.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::actors::messages::GetStatus;
use crate::actors::messages::Reload;
use crate::actors::monitor::{GetCluster, GetEvents, GetHistory};
use crate::actors::node::addr::NodeAddr;
use crate::actors::primary::committer::{Job, WriteJob};
use crate::actors::shared::{primary_ref, DataShared};
use crate::error::{Error, Result};
use crate::http::metrics::{render, Scrape};
use crate::http::state::{error_response, respond, ApiState};

/// Longest a write waits for the write path (queueing and commit) before answering 503.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a query waits for `min_lsn` to be applied.
pub const MIN_LSN_WAIT: Duration = Duration::from_secs(5);

/// `POST /v1/execute`: writes, on the primary only.
pub async fn execute(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let started = std::time::Instant::now();
    let addr = match state.slot.addr() {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let answer = execute_inner(&state, &addr, &body).await;
    if let (Ok(_), NodeAddr::Primary { primary, .. }) = (&answer, &addr) {
        primary.latency.record(started.elapsed().as_secs_f64());
    }
    respond(answer)
}

async fn execute_inner(state: &ApiState, addr: &NodeAddr, body: &web::Bytes) -> Result<Value> {
    let NodeAddr::Primary {
        writes,
        primary,
        shared,
        ..
    } = addr
    else {
        return Err(Error::NotPrimary {
            primary: Some(primary_ref(&state.cell.get())),
        });
    };
    let request = crate::http::body::write_request(body)?;
    let (reply, rx) = oneshot::channel();
    let job = WriteJob { request, reply };
    let outcome = tokio::time::timeout(WRITE_TIMEOUT, async {
        writes.send(Job::Write(job)).await.map_err(|_| {
            Error::Unavailable("the write path has stopped; see the node's log".into())
        })?;
        rx.await.map_err(|_| {
            Error::Unavailable(
                "the write path stopped before answering; the write may or may not have committed"
                    .into(),
            )
        })?
    })
    .await
    .map_err(|_| {
        Error::Unavailable(format!(
            "the write did not complete within {WRITE_TIMEOUT:?}"
        ))
    })??;
    // The epoch tells a client which primary acknowledged (a client history can check that
    // no older primary acknowledges after a newer one did).
    let epoch = shared.epoch.load(std::sync::atomic::Ordering::Relaxed);
    let mut answer = json!({ "results": outcome.results, "lsn": outcome.lsn, "epoch": epoch });
    if let Some(sync) = primary.sync() {
        let rule = sync.wait(outcome.lsn).await;
        for spare in &rule.demoted {
            addr.events().record(
                "commit_rule_demoted",
                Some(spare),
                &format!(
                    "{spare} missed the commit deadline and left the rule {}",
                    rule.rule
                ),
            );
        }
        answer["commit"] = json!(rule);
    }
    // No acknowledgement without a valid lease at the moment of the answer: a rule's wait
    // (or a slow answer) may outlive it, and a new primary may take writes by then.
    if primary
        .lease
        .get()
        .is_some_and(|l| !l.acknowledges(outcome.lsn))
    {
        return Err(Error::Unavailable(format!("this primary's write lease ran out before the write (LSN {}) could be answered: it is durable here but not confirmed, and a newer primary may not have it; check `spare status` before retrying", outcome.lsn)));
    }
    Ok(answer)
}

/// `POST /v1/query`: reads, on any data node.
pub async fn query(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    respond(query_inner(&state, &body).await)
}

async fn query_inner(state: &ApiState, body: &web::Bytes) -> Result<Value> {
    let shared = match state.slot.addr()? {
        NodeAddr::Primary { shared, .. } | NodeAddr::Spare { shared, .. } => shared,
        NodeAddr::Monitor { .. } => {
            return Err(Error::InvalidInput(
                "a monitor holds no data; query a primary or a spare".into(),
            ))
        }
    };
    let crate::http::body::Query {
        statement: st,
        min_lsn,
    } = crate::http::body::query(body)?;
    wait_applied(&shared, min_lsn).await?;
    let limits = state.cell.get().cluster.limits;
    let turn = shared.readers.turn(&limits).await?;
    let (result, lsn) = web::block(move || {
        let _turn = turn;
        shared.readers.query(&st, &limits)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("query worker failed: {e}")))??;
    let rows: Vec<Vec<Value>> = result
        .rows
        .iter()
        .map(|r| r.iter().map(|v| v.to_json()).collect())
        .collect();
    Ok(json!({ "columns": result.columns, "rows": rows, "lsn": lsn }))
}

/// Waits (at most [`MIN_LSN_WAIT`]) until this node applied `min_lsn`.
async fn wait_applied(shared: &DataShared, min_lsn: u64) -> Result<()> {
    let mut applied = shared.applied.clone();
    // The `Ref` that `wait_for` returns holds the watch's read lock: it must be gone before
    // the watch is borrowed again, or a writer queued in between (the thread publishing the
    // applied LSN) deadlocks with this task, freezing the node.
    let reached = tokio::time::timeout(MIN_LSN_WAIT, async {
        applied.wait_for(|&lsn| lsn >= min_lsn).await.is_ok()
    })
    .await;
    if reached == Ok(true) {
        return Ok(());
    }
    let now = *shared.applied.borrow();
    Err(Error::Unavailable(format!("this node has applied LSN {now}, not yet {min_lsn}, after waiting {MIN_LSN_WAIT:?}; retry, or read from the primary")))
}

/// `GET /v1/status`: this node.
pub async fn status(state: web::Data<ApiState>) -> HttpResponse {
    let addr = match state.slot.addr() {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let doc = match &addr {
        NodeAddr::Primary { actor, .. } => actor.send(GetStatus).await,
        NodeAddr::Spare { actor, .. } => actor.send(GetStatus).await,
        NodeAddr::Monitor { actor, .. } => actor.send(GetStatus).await,
    };
    respond(
        doc.map(|d| d.to_json())
            .map_err(|e| Error::Unavailable(format!("node actor did not answer: {e}"))),
    )
}

/// `GET /v1/cluster`: the whole cluster, on monitors.
pub async fn cluster(state: web::Data<ApiState>) -> HttpResponse {
    let Ok(NodeAddr::Monitor { actor, .. }) = state.slot.addr() else {
        return error_response(&Error::InvalidInput(
            "/v1/cluster is served by monitors; ask a monitor, or use `spare status`".into(),
        ));
    };
    respond(
        actor
            .send(GetCluster)
            .await
            .map(|view| view.to_json())
            .map_err(|e| Error::Unavailable(format!("monitor actor did not answer: {e}"))),
    )
}

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found", "message": "no such route; see the routes in docs/http-api.md (POST /v1/execute, POST /v1/query, GET /v1/status, GET /v1/cluster)" }))
}

/// `POST /v1/admin/reload`: the process re-reads its configuration file and applies it, or
/// changes nothing and says why.
pub async fn reload(state: web::Data<ApiState>) -> HttpResponse {
    match state.supervisor.reload.send(Reload).await {
        Ok(Ok(report)) => HttpResponse::Ok().json(report),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&Error::Unavailable(format!(
            "the supervisor did not answer: {e}"
        ))),
    }
}

/// `GET /v1/events`: this node's most recent events, oldest first.
pub async fn events(state: web::Data<ApiState>) -> HttpResponse {
    if let Ok(NodeAddr::Monitor { actor, .. }) = state.slot.addr() {
        return respond(
            actor
                .send(GetEvents)
                .await
                .map_err(|e| Error::Unavailable(format!("monitor actor did not answer: {e}"))),
        );
    }
    HttpResponse::Ok().json(json!({ "events": state.slot.events.recent() }))
}

/// `GET /v1/history`: (monitors) each spare's lag over the last minutes.
pub async fn history(state: web::Data<ApiState>) -> HttpResponse {
    let Ok(NodeAddr::Monitor { actor, .. }) = state.slot.addr() else {
        return error_response(&Error::InvalidInput(
            "/v1/history is served by monitors".into(),
        ));
    };
    respond(
        actor
            .send(GetHistory)
            .await
            .map_err(|e| Error::Unavailable(format!("monitor actor did not answer: {e}"))),
    )
}

/// `GET /metrics`: OpenMetrics text (`http::metrics`).
pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    let addr = match state.slot.addr() {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let latency = match &addr {
        NodeAddr::Primary { primary, .. } => Some(&primary.latency),
        _ => None,
    };
    let text = match &addr {
        NodeAddr::Primary { actor, .. } => actor
            .send(GetStatus)
            .await
            .map(|s| render(&Scrape::Node(&s), latency)),
        NodeAddr::Spare { actor, .. } => actor
            .send(GetStatus)
            .await
            .map(|s| render(&Scrape::Node(&s), latency)),
        // A monitor exposes every spare's lag and every node's reachability, so that one
        // scrape of a monitor covers the cluster.
        NodeAddr::Monitor { actor, .. } => actor.send(GetCluster).await.map(|view| {
            render(
                &Scrape::Monitor {
                    name: &state.node.name,
                    view: &view,
                },
                None,
            )
        }),
    };
    let Ok(text) = text else {
        return error_response(&Error::Unavailable("node actor did not answer".into()));
    };
    HttpResponse::Ok()
        .content_type(crate::http::metrics::CONTENT_TYPE)
        .body(text)
}
