//! A node's part of `spare verify` (`crate::verify` runs it): read snapshots held open
//! between requests, their digests and row hashes.
//!
//! `POST /v1/admin/verify/hold` (spares) stops applying where the spare stands, for at
//! most [`HOLD_TTL`], so that it cannot run past the LSN the primary's snapshot will have.
//! `POST /v1/admin/verify/open` opens a snapshot: on the primary at its current LSN; on a
//! spare at exactly the LSN asked (`{"lsn": N}`): it applies up to N, opens the snapshot
//! there, and applies on. A spare held back by its operator (paused, delayed, stopped at an
//! LSN) is compared only if it stands at N already; one already past N says so (the caller
//! retries with a newer LSN).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actors::node::addr::NodeAddr;
use crate::actors::spare::controls::SetHold;
use crate::actors::spare::{SpareActor, SpareShared};
use crate::error::{Error, Result};
use crate::http::admin::set_hold;
use crate::http::state::{respond, ApiState};
use crate::store::verify::Snapshot;

/// How long a spare may take to reach the LSN asked.
pub const HOLD_WAIT: Duration = Duration::from_secs(30);
const HOLD_POLL: Duration = Duration::from_millis(10);
use crate::store::verify::PAST;
/// Longest a verify's hold stops a spare's apply if nothing lifts it (the caller died).
pub const HOLD_TTL: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct OpenBody {
    #[serde(default)]
    lsn: Option<u64>,
}

#[derive(Deserialize)]
pub struct SessionQuery {
    id: String,
    #[serde(default)]
    table: Option<String>,
}

/// `POST /v1/admin/verify/hold`: this spare applies nothing past where it stands, for at
/// most [`HOLD_TTL`] (a cap of the apply gate: a pause, a delay or a stop LSN still hold,
/// and a spare its operator holds is left exactly as it is); answers that LSN.
pub async fn hold(state: web::Data<ApiState>) -> HttpResponse {
    respond(hold_inner(&state).await)
}

async fn hold_inner(state: &ApiState) -> Result<Value> {
    let NodeAddr::Spare { actor, spare, .. } = state.slot.addr()? else {
        return Err(Error::InvalidInput(
            "only a spare is held for a verify".into(),
        ));
    };
    let applied = spare.apply.applied.load(Ordering::Acquire);
    if crate::actors::spare::held_text(&spare.apply.gate()).is_some() {
        return Ok(json!({ "lsn": applied, "held_by_operator": true }));
    }
    let cap = SetHold::Cap {
        lsn: applied,
        expires: Some(HOLD_TTL),
    };
    let held = set_hold(&actor, cap).await?;
    Ok(json!({ "lsn": held.applied }))
}

/// `POST /v1/admin/verify/release`: lifts the verify's hold, whatever it is.
pub async fn release(state: web::Data<ApiState>) -> HttpResponse {
    let run = async {
        if let NodeAddr::Spare { actor, .. } = state.slot.addr()? {
            set_hold(&actor, SetHold::LiftCap(None)).await?;
        }
        Ok(json!({ "released": true }))
    };
    respond(run.await)
}

/// `POST /v1/admin/verify/open`.
pub async fn open(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    respond(open_inner(state, body).await)
}

async fn open_inner(state: web::Data<ApiState>, body: web::Bytes) -> Result<Value> {
    let b: OpenBody = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidInput(format!("expected {{\"lsn\": N}} or {{}}: {e}")))?;
    let addr = state.slot.addr()?;
    let db = state.node.data_dir.join(crate::store::DB_FILE);
    let snap = match (&addr, b.lsn) {
        (NodeAddr::Primary { .. }, _) => blocking(move || Snapshot::open(&db)).await?,
        (NodeAddr::Spare { actor, spare, .. }, Some(lsn)) => {
            let at = SpareAt {
                actor: actor.clone(),
                spare: spare.clone(),
                name: state.slot.name.clone(),
            };
            at.snapshot(db, lsn).await?
        }
        (NodeAddr::Spare { .. }, None) => {
            return Err(Error::InvalidInput(
                "a spare is compared at the primary's LSN: {\"lsn\": N}".into(),
            ))
        }
        (NodeAddr::Monitor { .. }, _) => {
            return Err(Error::InvalidInput("a monitor holds no database".into()))
        }
    };
    // A spare's snapshot holds the primary's state at the LSN asked (its own may be a
    // heartbeat further: see `snapshot_at`).
    let lsn = b.lsn.unwrap_or(snap.lsn);
    let id = state.verify.insert(snap)?;
    Ok(json!({ "id": id, "lsn": lsn, "node": state.slot.name }))
}

/// A spare, as a verify reaches it: its actor (which alone changes its apply gate) and what
/// it shares.
struct SpareAt {
    actor: Addr<SpareActor>,
    spare: Arc<SpareShared>,
    name: String,
}

impl SpareAt {
    fn applied(&self) -> u64 {
        self.spare.apply.applied.load(Ordering::Acquire)
    }

    /// Opens a snapshot of the spare holding the primary's state at `lsn`: it applies up to
    /// `lsn` (capped there meanwhile), or stands past it with only records that change no
    /// row in between (heartbeats and epoch marks: the primary's own snapshot counts them
    /// as applied). The snapshot's own LSN is checked the same way: the apply thread may
    /// have gone on while it opened. A spare its operator holds is compared only where it
    /// stands. The cap expires by itself after [`HOLD_TTL`] if this request is dropped.
    async fn snapshot(self, db: PathBuf, lsn: u64) -> Result<Snapshot> {
        if let Some(held) = crate::actors::spare::held_text(&self.spare.apply.gate()) {
            let at = self.applied();
            return blocking(move || {
                if !same_state(&self.spare, lsn, at) {
                    return Err(Error::InvalidInput(format!(
                        "{} is {held} at LSN {at}, not at the primary's {lsn}: it can only be compared once it applies again (spare resume {}), or when it stands at the LSN compared",
                        self.name, self.name
                    )));
                }
                checked(&self.spare, &self.name, Snapshot::open(&db)?, lsn)
            })
            .await;
        }
        let mut cap = None;
        if self.applied() <= lsn {
            let hold = SetHold::Cap {
                lsn,
                expires: Some(HOLD_TTL),
            };
            cap = set_hold(&self.actor, hold).await?.cap;
            if let Err(e) = self.reach(lsn).await {
                set_hold(&self.actor, SetHold::LiftCap(cap)).await?;
                return Err(e);
            }
        }
        let snap = blocking(move || Snapshot::open(&db)).await;
        if cap.is_some() {
            set_hold(&self.actor, SetHold::LiftCap(cap)).await?;
        }
        blocking(move || checked(&self.spare, &self.name, snap?, lsn)).await
    }

    /// Waits until the spare applied `lsn`, at most [`HOLD_WAIT`].
    async fn reach(&self, lsn: u64) -> Result<()> {
        let started = Instant::now();
        while self.applied() < lsn {
            if started.elapsed() > HOLD_WAIT {
                return Err(Error::Unavailable(format!(
                    "{} did not reach LSN {lsn} within {HOLD_WAIT:?} (it is at {}): is it connected to the primary?",
                    self.name,
                    self.applied()
                )));
            }
            tokio::time::sleep(HOLD_POLL).await;
        }
        Ok(())
    }
}

/// The snapshot if it holds the state at `lsn`; else the "already past" answer (the caller
/// tries again with a newer LSN).
fn checked(
    spare: &crate::actors::spare::SpareShared,
    name: &str,
    snap: Snapshot,
    lsn: u64,
) -> Result<Snapshot> {
    if same_state(spare, lsn, snap.lsn) {
        return Ok(snap);
    }
    Err(Error::InvalidInput(format!(
        "{name} {PAST} LSN {lsn} (at {})",
        snap.lsn
    )))
}

/// Most records read to tell that two LSNs hold the same rows.
const MAX_SAME_STATE_RECORDS: u64 = 10_000;

/// Whether the database is the same at LSNs `a` and `b` of this spare's log: no record
/// between them changes a row (heartbeats and epoch marks only).
fn same_state(spare: &crate::actors::spare::SpareShared, a: u64, b: u64) -> bool {
    let (lo, hi) = (a.min(b), a.max(b));
    if lo == hi {
        return true;
    }
    if hi - lo > MAX_SAME_STATE_RECORDS {
        return false;
    }
    let mut reader = crate::log::LogReader::new(&spare.data.log_dir());
    let mut lsn = lo + 1;
    while lsn <= hi {
        let Ok(batch) = reader.read(lsn, hi, 1 << 20) else {
            return false;
        };
        if batch.is_empty() {
            return false;
        }
        if batch
            .iter()
            .any(|r| r.kind == crate::log::record::RecordKind::Txn)
        {
            return false;
        }
        lsn = batch.last().map_or(hi, |r| r.lsn) + 1;
    }
    true
}

/// `GET /v1/admin/verify/digest?id=`.
pub async fn digest(state: web::Data<ApiState>, q: web::Query<SessionQuery>) -> HttpResponse {
    let run = async {
        let snap = state.verify.get(&q.id)?;
        blocking(move || {
            let s = snap.lock().expect("snapshot lock");
            Ok(json!({ "lsn": s.lsn, "tables": s.digests()? }))
        })
        .await
    };
    respond(run.await)
}

/// `GET /v1/admin/verify/rows?id=&table=`.
pub async fn rows(state: web::Data<ApiState>, q: web::Query<SessionQuery>) -> HttpResponse {
    let run = async {
        let snap = state.verify.get(&q.id)?;
        let table = q
            .table
            .clone()
            .ok_or_else(|| Error::InvalidInput("which table? ?table=NAME".into()))?;
        blocking(move || {
            let s = snap.lock().expect("snapshot lock");
            let (rows, complete) = s.row_hashes(&table)?;
            Ok(json!({ "lsn": s.lsn, "rows": rows, "complete": complete }))
        })
        .await
    };
    respond(run.await)
}

/// `POST /v1/admin/verify/close?id=`.
pub async fn close(state: web::Data<ApiState>, q: web::Query<SessionQuery>) -> HttpResponse {
    state.verify.remove(&q.id);
    respond(Ok(json!({ "closed": q.id })))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    web::block(f)
        .await
        .map_err(|e| Error::Unavailable(format!("verify task failed: {e}")))?
}
