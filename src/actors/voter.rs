//! Every voting node's voter (DESIGN.md §7): the pure `core::voter::Voter`, persisted in
//! `node.state` before any answer, and served over control connections on the node's peer
//! port (`Purpose::Control`): lease requests, prepares and commits, each answered in order.
//!
//! Until promotion is wired (issue 5), nothing in the cluster sends these requests; the
//! voter already keeps its promises on disk, so that what it answers survives restarts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::core::voter::{LeaseAnswer, PrepareAnswer, Voter};
use crate::error::{Error, Result};
use crate::net::handshake::Identity;
use crate::state::NodeState;
use crate::wire::{read_frame, write_frame, Message};

/// A node's voter and where it persists.
pub struct VoterCell {
    voter: Mutex<Voter>,
    /// The node's full state (role included), rewritten with the voter's part on change.
    state: Mutex<NodeState>,
    data_dir: PathBuf,
    /// The voter's clock: a monotonic origin for this process.
    origin: Instant,
}

impl VoterCell {
    pub fn new(state: NodeState, data_dir: PathBuf, lease_ms: u64) -> Self {
        let voter = Voter::restarted(state.voter(), lease_ms, 0);
        VoterCell {
            voter: Mutex::new(voter),
            state: Mutex::new(state),
            data_dir,
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The voter's current state (epoch, primary, promise).
    pub fn state(&self) -> NodeState {
        self.state.lock().expect("state lock").clone()
    }

    /// Writes the voter's new state to `node.state` (before the answer goes out).
    fn persist(&self, voter: &Voter) -> Result<()> {
        let mut state = self.state.lock().expect("state lock");
        let next = state.with_voter(voter.state());
        next.save(&self.data_dir)?;
        *state = next;
        Ok(())
    }

    /// Answers one control request (blocking: it may write `node.state`).
    pub fn answer(&self, from: &str, request: Message) -> Result<Message> {
        let now = self.now_ms();
        let mut voter = self.voter.lock().expect("voter lock");
        let (reply, changed) = match request {
            Message::LeaseRequest { epoch, sent_ms } => {
                let (answer, changed) = voter.on_lease_request(from, epoch, now);
                let (granted, known_epoch, known_primary) = match answer {
                    LeaseAnswer::Granted { epoch } => (true, epoch, from.to_string()),
                    LeaseAnswer::Refused { epoch, primary } => (false, epoch, primary),
                };
                (
                    Message::LeaseReply {
                        epoch,
                        sent_ms,
                        granted,
                        known_epoch,
                        known_primary,
                    },
                    changed,
                )
            }
            Message::Prepare { epoch, candidate } => {
                let (answer, changed) = voter.on_prepare(&candidate, epoch, now);
                let reply = match answer {
                    PrepareAnswer::Promised {
                        epoch,
                        lease_remaining_ms,
                    } => Message::PrepareReply {
                        epoch,
                        promised: true,
                        promised_to: candidate,
                        lease_remaining_ms,
                    },
                    PrepareAnswer::Refused { epoch, to } => Message::PrepareReply {
                        epoch,
                        promised: false,
                        promised_to: to,
                        lease_remaining_ms: 0,
                    },
                };
                (reply, changed)
            }
            Message::Commit { epoch, primary } => {
                let changed = voter.on_commit(&primary, epoch);
                let s = voter.state();
                (
                    Message::CommitReply {
                        epoch: s.epoch,
                        primary: s.primary.clone(),
                    },
                    changed,
                )
            }
            other => {
                return Err(Error::InvalidData(format!(
                    "{} is not a control request",
                    other.name()
                )))
            }
        };
        if changed {
            self.persist(&voter)?;
        }
        Ok(reply)
    }
}

/// Serves control requests from `peer` until the connection ends.
pub async fn serve_control<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    voter: Arc<VoterCell>,
    me: Identity,
    peer: String,
) -> Result<()> {
    loop {
        let env = read_frame(&mut s).await?;
        if env.from != peer || env.cluster != me.cluster {
            return Err(Error::InvalidData(format!(
                "a control frame claims to come from {} of {}",
                env.from, env.cluster
            )));
        }
        let v = voter.clone();
        let from = peer.clone();
        let reply = tokio::task::spawn_blocking(move || v.answer(&from, env.message))
            .await
            .map_err(|e| Error::Unavailable(format!("voter task failed: {e}")))??;
        let epoch = voter.state().epoch;
        write_frame(&mut s, &me.envelope(epoch, reply)).await?;
    }
}

/// Accepts control connections on `addr` (nodes that take no stream: primaries, monitors).
/// A bind failure stops the process: the node could not take part in quorums.
pub async fn control_listener(
    addr: std::net::SocketAddr,
    me: Identity,
    voter: Arc<VoterCell>,
    cell: Arc<crate::config::ConfigCell>,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, cause = %e, "cannot listen on the peer address; is another process using it? stopping");
            actix::System::current().stop();
            return;
        }
    };
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(cause = %e, "accepting a peer connection failed");
                continue;
            }
        };
        let (me, voter, cell) = (me.clone(), voter.clone(), cell.clone());
        actix_rt::spawn(async move {
            let members: Vec<String> = cell.get().nodes.iter().map(|n| n.name.clone()).collect();
            let epoch = voter.state().epoch;
            let admission = crate::net::handshake::Admission {
                streamer: None,
                members: &members,
            };
            match crate::net::handshake::accept(&mut stream, &me, epoch, admission).await {
                Ok(peer) => {
                    if let Err(e) = serve_control(stream, voter, me, peer.name.clone()).await {
                        tracing::debug!(%from, peer = %peer.name, cause = %e, "control connection ended");
                    }
                }
                Err(e) => tracing::warn!(%from, cause = %e, "refused a peer connection"),
            }
        });
    }
}
