//! Every node's voter (DESIGN.md §7): the pure `core::voter::Voter`, persisted in
//! `node.state` before any answer, and served over control connections on the node's peer
//! port (`Purpose::Control`): lease requests, prepares and commits, each answered in order.
//!
//! The cell belongs to the node's slot, not to one incarnation of it: a spare promoted in
//! place keeps the same voter (one writer of `node.state`). When the epoch or primary it
//! follows changes, it calls the slot's hook, which re-checks the node's role.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Role;
use crate::core::voter::{LeaseAnswer, PrepareAnswer, Voter};
use crate::error::{Error, Result};
use crate::net::handshake::Identity;
use crate::state::NodeState;
use crate::wire::{read_frame, write_frame, Message};

/// Called with the new (epoch, primary) after the voter persisted it.
pub type ChangeHook = Box<dyn Fn(u64, &str) + Send + Sync>;

/// A node's voter and where it persists.
pub struct VoterCell {
    voter: Mutex<Voter>,
    /// The node's full state (role included), rewritten with the voter's part on change.
    state: Mutex<NodeState>,
    data_dir: PathBuf,
    /// This node's name.
    me: String,
    on_change: OnceLock<ChangeHook>,
}

impl VoterCell {
    pub fn new(me: &str, state: NodeState, data_dir: PathBuf, lease_ms: u64) -> Self {
        // A restarted voter assumes the lease it may have granted runs a full lease from now.
        let voter = Voter::restarted(state.voter(), lease_ms, crate::clock::boot_ms());
        VoterCell {
            voter: Mutex::new(voter),
            state: Mutex::new(state),
            data_dir,
            me: me.to_string(),
            on_change: OnceLock::new(),
        }
    }

    /// Sets what to call when the followed epoch or primary changes (once).
    pub fn on_change(&self, hook: ChangeHook) {
        let _ = self.on_change.set(hook);
    }

    /// The voter's clock: the boot clock, as the primary's lease (see `clock`).
    fn now_ms(&self) -> u64 {
        crate::clock::boot_ms()
    }

    /// The voter's current state (epoch, primary, promise).
    pub fn state(&self) -> NodeState {
        self.state.lock().expect("state lock").clone()
    }

    /// Writes the voter's new state to `node.state` (before the answer goes out, and before
    /// the voter in memory takes it), then tells the hook if the epoch or primary changed.
    /// `truncate_after`: a promotion `--until` recorded with it.
    fn persist(&self, voter: &Voter, truncate_after: Option<u64>) -> Result<()> {
        let (before, next) = {
            let mut state = self.state.lock().expect("state lock");
            let mut next = state.with_voter(voter.state());
            if truncate_after.is_some() {
                next.truncate_after = truncate_after;
            }
            next.save(&self.data_dir)?;
            let before = std::mem::replace(&mut *state, next.clone());
            (before, next)
        };
        if (before.epoch, &before.primary) != (next.epoch, &next.primary) {
            if let Some(hook) = self.on_change.get() {
                hook(next.epoch, &next.primary);
            }
        }
        Ok(())
    }

    /// Follows `primary` as the leader of `epoch`, learned from an authenticated peer (a
    /// newer primary's stream, a voter that saw the commit), without its membership: the
    /// promises this voter made above its old epoch stay reported until a commit or a lease
    /// request names the membership. Blocking: may write `node.state`.
    pub fn adopt(&self, primary: &str, epoch: u64) -> Result<bool> {
        let mut voter = self.voter.lock().expect("voter lock");
        let mut next = voter.clone();
        let changed = next.on_commit(primary, epoch, None);
        if changed {
            self.persist(&next, None)?;
        }
        *voter = next;
        Ok(changed)
    }

    /// Records `members` as the membership of `epoch` if `node.state` has none for it (a
    /// primary started from an older file): written before the lease counts them.
    pub fn learn_members(&self, epoch: u64, members: &crate::core::members::Members) -> Result<()> {
        let mut voter = self.voter.lock().expect("voter lock");
        let mut next = voter.clone();
        if next.learn_members(epoch, members) {
            self.persist(&next, None)?;
        }
        *voter = next;
        Ok(())
    }

    /// Forgets the pending `--until` cut (done).
    pub fn clear_truncate(&self) -> Result<()> {
        let mut state = self.state.lock().expect("state lock");
        if state.truncate_after.is_some() {
            let mut next = state.clone();
            next.truncate_after = None;
            next.save(&self.data_dir)?;
            *state = next;
        }
        Ok(())
    }

    /// Records the node's role (`primary` once promoted, `spare` after a rejoin).
    pub fn set_role(&self, role: Role) -> Result<()> {
        let mut state = self.state.lock().expect("state lock");
        if state.role != role {
            let mut next = state.clone();
            next.role = role;
            next.save(&self.data_dir)?;
            *state = next;
        }
        Ok(())
    }

    /// Answers one control request (blocking: it may write `node.state`).
    ///
    /// Every answer follows its durable write: the request is applied to a copy of the
    /// voter, which replaces it only once `node.state` holds the copy's state (a failed save
    /// leaves the voter as it was, so a retry is decided and saved afresh).
    pub fn answer(&self, from: &str, request: Message) -> Result<Message> {
        check_members(from, &request)?;
        let now = self.now_ms();
        let mut current = self.voter.lock().expect("voter lock");
        let mut voter = current.clone();
        let mut truncate_after = None;
        let (reply, changed) = match request {
            Message::LeaseRequest {
                epoch,
                sent_ms,
                members,
            } => {
                let answer = voter.on_lease_request(from, epoch, &members, now);
                lease_reply(answer, from, epoch, sent_ms)
            }
            Message::Prepare {
                epoch,
                candidate,
                members,
            } => {
                let (answer, changed) = voter.on_prepare(&candidate, epoch, &members, now);
                (self.prepare_reply(answer, candidate), changed)
            }
            Message::Commit {
                epoch,
                primary,
                until,
                members,
            } => {
                if !voter.may_follow(&self.me, &primary, epoch) {
                    // This node promised a later epoch since: its own promotion to `epoch`
                    // must not complete (the later one counts on it). Not confirmed.
                    return Ok(commit_reply(&voter));
                }
                if until.is_some() && primary == self.me {
                    // Recorded before the answer, with the commit below (same file).
                    truncate_after = until;
                }
                let changed = voter.on_commit(&primary, epoch, members.as_ref()) || until.is_some();
                (commit_reply(&voter), changed)
            }
            Message::Release { epoch } => {
                let released = voter.on_release(from, epoch, now);
                (Message::ReleaseReply { epoch, released }, false)
            }
            other => {
                return Err(Error::InvalidData(format!(
                    "{} is not a control request",
                    other.name()
                )))
            }
        };
        if changed {
            self.persist(&voter, truncate_after)?;
        }
        *current = voter;
        Ok(reply)
    }

    /// The reply to a `Prepare`, with why it was refused in words an operator can act on.
    fn prepare_reply(&self, answer: PrepareAnswer, candidate: String) -> Message {
        match answer {
            PrepareAnswer::Promised {
                epoch,
                lease_remaining_ms,
                known,
            } => Message::PrepareReply {
                epoch,
                promised: true,
                promised_to: candidate,
                lease_remaining_ms,
                known,
                why: String::new(),
            },
            PrepareAnswer::Refused { epoch, to, known } => {
                let why = if to.is_empty() {
                    format!(
                        "{} holds promises for {} other voter sets that no promotion completed; complete one of them (promote with the voters of an earlier attempt)",
                        self.me,
                        crate::core::members::MAX_PENDING
                    )
                } else {
                    format!("{} already promised epoch {epoch} to {to}", self.me)
                };
                Message::PrepareReply {
                    epoch,
                    promised: false,
                    promised_to: to,
                    lease_remaining_ms: 0,
                    known,
                    why,
                }
            }
        }
    }
}

/// Refuses a request whose membership is malformed before the voter decides anything.
fn check_members(from: &str, request: &Message) -> Result<()> {
    let members = match request {
        Message::LeaseRequest { members, .. } | Message::Prepare { members, .. } => Some(members),
        Message::Commit { members, .. } => members.as_ref(),
        _ => None,
    };
    if let Some(Err(e)) = members.map(|m| m.check()) {
        return Err(Error::InvalidData(format!(
            "{from} sent a {} with a bad membership: {e}",
            request.name()
        )));
    }
    Ok(())
}

/// The reply to a lease request, from the voter's answer (and whether its state changed).
fn lease_reply(
    (answer, changed): (LeaseAnswer, bool),
    from: &str,
    epoch: u64,
    sent_ms: u64,
) -> (Message, bool) {
    let (granted, known_epoch, known_primary, known_committed) = match answer {
        LeaseAnswer::Granted { epoch } => (true, epoch, from.to_string(), true),
        LeaseAnswer::Refused {
            epoch,
            primary,
            committed,
        } => (false, epoch, primary, committed),
    };
    let reply = Message::LeaseReply {
        epoch,
        sent_ms,
        granted,
        known_epoch,
        known_primary,
        known_committed,
    };
    (reply, changed)
}

/// A `CommitReply`: the epoch and primary this voter follows now.
fn commit_reply(voter: &Voter) -> Message {
    let s = voter.state();
    Message::CommitReply {
        epoch: s.epoch,
        primary: s.primary.clone(),
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
        let reply = crate::actors::blocking("answer a control request", move || {
            v.answer(&from, env.message)
        })
        .await??;
        let epoch = voter.state().epoch;
        write_frame(&mut s, &me.envelope(epoch, reply)).await?;
    }
}

/// What a node that takes no stream (a primary, a fenced node, a monitor) needs to serve a
/// peer connection: control requests only; a stream is refused saying `why`.
pub struct ControlOnly {
    pub me: Identity,
    pub voter: Arc<VoterCell>,
    pub cell: Arc<crate::config::ConfigCell>,
    pub why: String,
}

/// Serves one accepted peer connection on a node that takes no stream; `turn` (a place
/// among the handshakes in progress) is given back once the peer is authenticated.
pub async fn serve_control_only(
    mut stream: crate::net::stream::PeerStream,
    from: std::net::SocketAddr,
    serving: ControlOnly,
    turn: crate::actors::node::places::HandshakeTurn,
) {
    let ControlOnly {
        me,
        voter,
        cell,
        why,
    } = serving;
    let members: Vec<String> = cell.get().nodes.iter().map(|n| n.name.clone()).collect();
    let epoch = voter.state().epoch;
    let admission = crate::net::handshake::Admission {
        streams: crate::net::handshake::Streams::Refused(why),
        members: &members,
    };
    let accepted = crate::net::handshake::accept(&mut stream, &me, epoch, admission)
        .await
        .and_then(|peer| stream.check_peer_name(&peer.name).map(|()| peer));
    drop(turn);
    match accepted {
        Ok(peer) => {
            if let Err(e) = serve_control(stream, voter, me, peer.name.clone()).await {
                tracing::debug!(%from, peer = %peer.name, cause = %e, "control connection ended");
            }
        }
        Err(e) => tracing::warn!(%from, cause = %e, "refused a peer connection"),
    }
}

/// A spare's first state in tests: following main in epoch 1, membership not yet known.
#[cfg(test)]
fn following_main() -> NodeState {
    NodeState {
        epoch: 1,
        promised_epoch: 1,
        primary: "main".into(),
        role: Role::Spare,
        promised_to: "main".into(),
        truncate_after: None,
        members: None,
        pending: Vec::new(),
        max_lease_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(dir: &std::path::Path) -> VoterCell {
        let state = following_main();
        state.save(dir).unwrap();
        VoterCell::new("lan-1", state, dir.to_path_buf(), 2_000)
    }

    fn prepare() -> Message {
        let voters: Vec<String> = ["main", "lan-1", "lan-2"].map(String::from).into();
        Message::Prepare {
            epoch: 2,
            candidate: "lan-2".into(),
            members: crate::core::members::Members::new(&voters, 2_000),
        }
    }

    /// A promise that could not be written is not a promise: asked again once the disk
    /// works, the voter writes it before answering.
    #[test]
    fn a_promise_whose_save_failed_is_saved_when_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let voter = cell(dir.path());
        // The temporary file `node.state` is written through cannot be created.
        let blocker = dir.path().join("node.tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(voter.answer("lan-2", prepare()).is_err(), "the save failed");
        assert_eq!(
            NodeState::load(dir.path()).unwrap().unwrap().promised_epoch,
            1
        );
        std::fs::remove_dir(&blocker).unwrap();
        let reply = voter.answer("lan-2", prepare()).unwrap();
        assert!(
            matches!(reply, Message::PrepareReply { promised: true, .. }),
            "{reply:?}"
        );
        let on_disk = NodeState::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (on_disk.promised_epoch, on_disk.promised_to.as_str()),
            (2, "lan-2")
        );
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    /// A voter's grant must run out by the same clock as the primary's lease: the boot
    /// clock (`clock::boot_ms`), which counts time the host slept.
    #[test]
    fn the_voter_measures_grants_on_the_boot_clock() {
        let dir = tempfile::tempdir().unwrap();
        let state = following_main();
        let cell = VoterCell::new("lan-1", state, dir.path().to_path_buf(), 2_000);
        let boot = crate::clock::boot_ms();
        assert!(
            cell.now_ms().abs_diff(boot) < 100,
            "{} vs {boot}",
            cell.now_ms()
        );
    }
}
