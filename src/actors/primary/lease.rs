//! The primary's write lease, kept alive (DESIGN.md §7): every heartbeat it asks every
//! voting node for a lease over a control connection (its own voter answers locally); the
//! decision is `core::lease::LeaseHolder`'s. The write path acknowledges nothing without a
//! valid lease. Time is the host's boot clock (`clock::boot_ms`): a primary frozen (SIGSTOP)
//! or its host suspended longer than the lease finds it expired when it resumes, before it
//! acknowledges anything.

use std::sync::Arc;
use std::time::Duration;

use crate::actors::primary::lease_guard::LeaseGuard;
use crate::actors::shared::DataShared;
use crate::error::{Error, Result};
use crate::wire::message::Purpose;
use crate::wire::{read_frame, write_frame, Message};

/// Starts renewing: one task per other voter, and the node's own voter every heartbeat.
/// Each task is a part of the incarnation (`actors::stop`) and ends on its stop signal.
pub fn start(data: Arc<DataShared>, guard: Arc<LeaseGuard>, epoch: u64) {
    let heartbeat = data.config().cluster.heartbeat;
    for voter in guard.voters.clone() {
        let (data, guard) = (data.clone(), guard.clone());
        let Some(running) = data.stop.enlist() else {
            return;
        };
        if voter == data.node.name {
            actix_rt::spawn(async move {
                let _running = running;
                let mut tick = tokio::time::interval(heartbeat);
                while let Some(sent_ms) = guard.next_request(&mut tick).await {
                    if let Ok(Message::LeaseReply { granted: true, .. }) = data
                        .voter
                        .answer(&data.node.name, guard.request(epoch, sent_ms))
                    {
                        guard.granted(&data.node.name, epoch, sent_ms);
                    }
                }
            });
        } else {
            actix_rt::spawn(async move {
                let _running = running;
                let stop = guard.stop_signal().clone();
                while !guard.stopped() {
                    tokio::select! {
                        renewed = renew_from(&data, &guard, &voter, epoch) => if let Err(e) = renewed {
                            tracing::debug!(%voter, cause = %e, "lease renewal link lost");
                        },
                        () = stop.stopped() => return,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(heartbeat) => {}
                        () = stop.stopped() => return,
                    }
                }
            });
        }
    }
}

/// One control connection to `voter`, asking for the lease every heartbeat.
async fn renew_from(data: &DataShared, guard: &LeaseGuard, voter: &str, epoch: u64) -> Result<()> {
    let config = data.config();
    let addr = config.node(voter)?.peer_advertise.clone();
    let heartbeat = config.cluster.heartbeat;
    let timeout = crate::actors::CONNECT_TIMEOUT;
    let (mut s, _) = crate::net::stream::dial(
        &data.identity,
        voter,
        &addr,
        timeout,
        epoch,
        Purpose::Control,
    )
    .await?;
    let mut tick = tokio::time::interval(heartbeat);
    while let Some(sent_ms) = guard.next_request(&mut tick).await {
        write_frame(
            &mut s,
            &data.identity.envelope(epoch, guard.request(epoch, sent_ms)),
        )
        .await?;
        let reply = tokio::time::timeout(
            crate::actors::silence_timeout(heartbeat),
            read_frame(&mut s),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("{voter} did not answer")))??;
        match reply.message {
            Message::LeaseReply {
                granted: true,
                epoch: e,
                sent_ms,
                ..
            } => guard.granted(voter, e, sent_ms),
            Message::LeaseReply {
                granted: false,
                known_epoch,
                known_primary,
                known_committed: true,
                ..
            } if known_epoch > epoch => {
                guard.fence(format!(
                    "{voter} follows epoch {known_epoch} led by {known_primary}"
                ));
                // Remember it (node.state): the node restarts as fenced, here and after a
                // restart, and sends clients to the new primary.
                let cell = data.voter.clone();
                let adopted =
                    tokio::task::spawn_blocking(move || cell.adopt(&known_primary, known_epoch))
                        .await;
                if !matches!(adopted, Ok(Ok(_))) {
                    tracing::error!(
                        "cannot record the newer epoch in node.state; writes stay refused"
                    );
                }
                return Ok(());
            }
            Message::LeaseReply { .. } => {}
            other => {
                return Err(Error::InvalidData(format!(
                    "{voter} answered a lease request with {}",
                    other.name()
                )))
            }
        }
    }
    Ok(())
}

/// A switchover stopped the writes: suspend the lease, then ask every voter to end the grant
/// it gave (bounded wait each). Returns the voters that released it.
/// `last_lsn`: the last record written before the writes stopped.
pub async fn release(
    data: Arc<DataShared>,
    guard: Arc<LeaseGuard>,
    epoch: u64,
    last_lsn: u64,
) -> Vec<String> {
    guard.suspend(last_lsn);
    let asks: Vec<_> = guard
        .voters
        .clone()
        .into_iter()
        .map(|voter| {
            let data = data.clone();
            tokio::spawn(async move {
                let ok = tokio::time::timeout(RELEASE_TIMEOUT, release_one(&data, &voter, epoch))
                    .await
                    .is_ok_and(|r| r.unwrap_or(false));
                (voter, ok)
            })
        })
        .collect();
    let mut released = Vec::new();
    for a in asks {
        if let Ok((voter, true)) = a.await {
            released.push(voter);
        }
    }
    released
}

/// How long a release waits for each voter (one it misses is simply waited out).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

async fn release_one(data: &DataShared, voter: &str, epoch: u64) -> Result<bool> {
    let me = data.node.name.clone();
    let reply = if voter == me {
        let v = data.voter.clone();
        crate::actors::blocking("ask the own voter", move || {
            v.answer(&me, Message::Release { epoch })
        })
        .await??
    } else {
        let addr = data.config().node(voter)?.peer_advertise.clone();
        let (mut s, _) = crate::net::stream::dial(
            &data.identity,
            voter,
            &addr,
            RELEASE_TIMEOUT,
            epoch,
            Purpose::Control,
        )
        .await?;
        write_frame(
            &mut s,
            &data.identity.envelope(epoch, Message::Release { epoch }),
        )
        .await?;
        read_frame(&mut s).await?.message
    };
    Ok(matches!(
        reply,
        Message::ReleaseReply { released: true, .. }
    ))
}
