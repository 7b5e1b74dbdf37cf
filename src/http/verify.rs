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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actors::node::NodeAddr;
use crate::error::{Error, Result};
use crate::http::{respond, ApiState};
use crate::store::verify::Snapshot;

/// Snapshots one node holds open at once (each pins a WAL read position).
pub const MAX_SESSIONS: usize = 4;
/// A snapshot is dropped this long after it was opened, closed or not.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// How long a spare may take to reach the LSN asked.
pub const HOLD_WAIT: Duration = Duration::from_secs(30);
const HOLD_POLL: Duration = Duration::from_millis(10);
/// The start of the message of a spare already past the LSN asked.
pub const PAST: &str = "already applied past";
/// Longest a verify's hold stops a spare's apply if nothing lifts it (the caller died).
pub const HOLD_TTL: Duration = Duration::from_secs(60);

/// An open snapshot and when it was opened.
type Session = (Instant, Arc<Mutex<Snapshot>>);

/// The open snapshots of a node, and the stop LSN a verify set on its apply, if any.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    hold: Arc<Mutex<Option<u64>>>,
}

impl Sessions {
    fn insert(&self, snap: Snapshot) -> Result<String> {
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, (at, _)| at.elapsed() < SESSION_TTL);
        if open.len() >= MAX_SESSIONS {
            return Err(Error::Busy(format!(
                "{MAX_SESSIONS} verifications are running on this node; retry when one ended"
            )));
        }
        let id = format!("{:016x}", rand::random::<u64>());
        open.insert(id.clone(), (Instant::now(), Arc::new(Mutex::new(snap))));
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Arc<Mutex<Snapshot>>> {
        let open = self.open.lock().expect("sessions lock");
        open.get(id)
            .filter(|(at, _)| at.elapsed() < SESSION_TTL)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "no open verification {id} here (it ended, or ran past {SESSION_TTL:?}): run spare verify again"
                ))
            })
    }

    fn remove(&self, id: &str) {
        self.open.lock().expect("sessions lock").remove(id);
    }
}

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

/// `POST /v1/admin/verify/hold`: this spare stops applying where it stands (at most
/// [`HOLD_TTL`]); answers that LSN. A spare its operator holds answers where it stands.
pub async fn hold(state: web::Data<ApiState>) -> HttpResponse {
    let run = || -> Result<Value> {
        let NodeAddr::Spare { spare, .. } = state.slot.addr()? else {
            return Err(Error::InvalidInput(
                "only a spare is held for a verify".into(),
            ));
        };
        let applied = spare
            .apply
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        let ours = *state.verify.hold.lock().expect("hold lock");
        let gate = spare.apply.gate();
        if crate::actors::spare::held_text(&gate).is_some() && by_operator(&gate, ours) {
            // Paused, delayed or stopped by its operator: left exactly as it is.
            return Ok(json!({ "lsn": applied, "held_by_operator": true }));
        }
        *state.verify.hold.lock().expect("hold lock") = Some(applied);
        spare.set_stop_at(Some(applied));
        let (hold, spare) = (state.verify.hold.clone(), spare.clone());
        std::thread::spawn(move || {
            std::thread::sleep(HOLD_TTL);
            lift(&hold, &spare, applied);
        });
        Ok(json!({ "lsn": applied }))
    };
    respond(run())
}

/// Whether what holds the spare's apply is its operator's doing, not a verify's hold at
/// `ours`: a pause or a delay always is; a stop LSN is unless it is the verify's own.
fn by_operator(gate: &crate::core::apply_gate::Gate, ours: Option<u64>) -> bool {
    gate.paused || gate.delay_ms > 0 || (gate.stop_at.is_some() && gate.stop_at != ours)
}

/// Lifts the verify's hold at `at` if it is still the one in place.
fn lift(hold: &Mutex<Option<u64>>, spare: &crate::actors::spare::SpareShared, at: u64) {
    let mut h = hold.lock().expect("hold lock");
    if *h == Some(at) && spare.apply.gate().stop_at == Some(at) {
        spare.set_stop_at(None);
        *h = None;
    }
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
        (NodeAddr::Spare { spare, .. }, Some(lsn)) => {
            let spare = spare.clone();
            let name = state.slot.name.clone();
            let hold = state.verify.hold.clone();
            blocking(move || snapshot_at(&spare, &hold, &name, &db, lsn)).await?
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

/// Opens a snapshot of the spare at the primary's state at `lsn`: it applies up to `lsn`
/// (held there meanwhile), or, held past it by the verify's hold, stands at a state equal to
/// it (only records that change no row, heartbeats and epoch marks, lie between: the
/// primary's own snapshot counts them as applied); then it applies on.
fn snapshot_at(
    spare: &crate::actors::spare::SpareShared,
    hold: &Mutex<Option<u64>>,
    name: &str,
    db: &std::path::Path,
    lsn: u64,
) -> Result<Snapshot> {
    let applied = || {
        spare
            .apply
            .applied
            .load(std::sync::atomic::Ordering::Acquire)
    };
    let gate = spare.apply.gate();
    let ours = hold.lock().expect("hold lock").take();
    if let Some(held) = crate::actors::spare::held_text(&gate).filter(|_| by_operator(&gate, ours))
    {
        let at = applied();
        if !same_state(spare, lsn, at) {
            return Err(Error::InvalidInput(format!(
                "{name} is {held} at LSN {at}, not at the primary's {lsn}: it can only be compared once it applies again (spare resume {name}), or when it stands at the LSN compared"
            )));
        }
        return Snapshot::open(db);
    }
    let result = hold_and_open(spare, name, db, lsn);
    spare.set_stop_at(None);
    result
}

fn hold_and_open(
    spare: &crate::actors::spare::SpareShared,
    name: &str,
    db: &std::path::Path,
    lsn: u64,
) -> Result<Snapshot> {
    let applied = || {
        spare
            .apply
            .applied
            .load(std::sync::atomic::Ordering::Acquire)
    };
    let at = applied();
    if at > lsn {
        // Held (or standing) past it: comparable only if nothing between changed a row.
        spare.set_stop_at(Some(at));
        let at = applied();
        if !same_state(spare, lsn, at) {
            return Err(Error::InvalidInput(format!(
                "{name} {PAST} LSN {lsn} (at {at})"
            )));
        }
        return Snapshot::open(db);
    }
    spare.set_stop_at(Some(lsn));
    let started = Instant::now();
    while applied() < lsn {
        if started.elapsed() > HOLD_WAIT {
            return Err(Error::Unavailable(format!(
                "{name} did not reach LSN {lsn} within {HOLD_WAIT:?} (it is at {}): is it connected to the primary?",
                applied()
            )));
        }
        std::thread::sleep(HOLD_POLL);
    }
    Snapshot::open(db)
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
