//! Messages of the peer protocol. Every field says what the receiver does with it.

use serde::{Deserialize, Serialize};

use crate::core::members::{Known, Members};
use crate::log::Position;
use crate::store::snapshot::SnapshotInfo;

/// A seed the spare was receiving when its link was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedResume {
    /// The snapshot's id.
    pub id: String,
    /// Bytes already durable on the spare.
    pub offset: u64,
}

/// Version of this message set. 2: memberships in lease requests, prepares, their answers
/// and commits; why a spare holds records back. 3: whether a spare's applying is held back,
/// in its `Position`, and seeds only to save time (`optional`).
pub const PROTOCOL_VERSION: u32 = 3;
/// The oldest version this build still speaks, so that a cluster can be upgraded one node at
/// a time (N works with N-1). A connection speaks the dialer's version when the acceptor
/// knows it; a dialer refused by an older node dials again at the version it names.
/// Version 2 messages are version 3's without the fields 3 added, which are sent only when
/// set (`skip_serializing_if`), and never set on a connection of version 2.
pub const MIN_PROTOCOL_VERSION: u32 = 2;

/// Whether a version-3 field may be left out (so a version-2 peer can read the message).
fn is_false(b: &bool) -> bool {
    !*b
}
/// Size of the random challenges exchanged during authentication.
pub const NONCE_BYTES: usize = 32;

/// What a connection is for, said in its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Purpose {
    /// The primary streams the log to a spare.
    #[default]
    Stream,
    /// Requests to a voter (leases, promises, commits), each answered in order.
    Control,
}

/// Every frame on a peer connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Cluster name; a frame from another cluster is refused (two clusters on one network
    /// must never mix their data).
    pub cluster: String,
    /// Sending node's name, checked against the configuration.
    pub from: String,
    /// Sender's current epoch; a spare never follows an epoch below the one it knows.
    pub epoch: u64,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Primary → spare, first frame. The spare checks `protocol` and that `to` is itself,
    /// then answers with a `Challenge` proving it holds the cluster secret.
    Hello {
        protocol: u32,
        to: String,
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// What the connection is for; streaming is accepted only from the primary.
        #[serde(default)]
        purpose: Purpose,
    },
    /// Spare → primary: `proof` is HMAC(secret, the primary's nonce and both names); the
    /// primary checks it, then proves itself on `nonce`.
    Challenge {
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// Primary → spare: HMAC(secret, the spare's nonce and both names). The spare accepts
    /// records only after checking it.
    Proof {
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// Spare → primary, once authenticated and after installing a seed: where the spare's
    /// durable log ends, what it applied, and the seed it was receiving, if any. The primary
    /// resumes after `durable` if its own log holds the same record, else seeds the spare
    /// (continuing `seed` if it still has that snapshot).
    ///
    /// `broken` says why the spare cannot apply any more (a conflict: its copy no longer
    /// matches); the primary then re-seeds it, keeping its database in quarantine.
    Position {
        durable: Position,
        applied_lsn: u64,
        seed: Option<SeedResume>,
        #[serde(default)]
        broken: Option<String>,
        /// Something holds the spare's applying back (pause, delay, stop LSN, verify): it
        /// keeps its history, and is not seeded merely because a seed would be faster.
        /// Version 3; false on a connection of version 2.
        #[serde(default, skip_serializing_if = "is_false")]
        holding: bool,
    },
    /// Primary → spare: your history differs from mine. The spare answers with `Probes`.
    Diverged { reason: String },
    /// Spare → primary: (LSN, epoch, chain) of some of its records, newest first, so the
    /// primary can find the last record both histories share.
    Probes { points: Vec<(u64, u64, u64)> },
    /// Primary → spare: a snapshot follows. The spare keeps what it already received of the
    /// same snapshot and answers `SeedAck` with the offset to continue from.
    SeedStart {
        snapshot: SnapshotInfo,
        reason: String,
        /// Only to save time (the spare could replay instead): a spare whose applying is
        /// held back refuses it and keeps its history. Version 3.
        #[serde(default, skip_serializing_if = "is_false")]
        optional: bool,
    },
    /// Primary → spare: `bytes` of the snapshot at `offset`, checked by `crc` (CRC32C). The
    /// spare writes, fsyncs, and acknowledges.
    SeedChunk {
        offset: u64,
        crc: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Spare → primary: the snapshot is durable up to `offset`.
    SeedAck { offset: u64 },
    /// Primary → spare: the whole snapshot was sent. The spare verifies it, moves its records
    /// after `quarantine_after` (if set: they diverged) to `quarantine/`, installs the
    /// snapshot, and sends its new `Position`.
    SeedEnd {
        quarantine_after: Option<u64>,
        /// As in `SeedStart`: a spare held back meanwhile refuses to install it. Version 3.
        #[serde(default, skip_serializing_if = "is_false")]
        optional: bool,
    },
    /// Primary → spare: `count` consecutive records, encoded exactly as in the primary's log.
    /// The spare checks each (CRC, LSN continuity, chain), appends them, fsyncs, applies.
    Records {
        count: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Primary → spare on a `wan` link: [`Message::Records`] whose `bytes` are lz4-compressed
    /// (a block of `raw_len` bytes once decompressed, at most `MAX_FRAME_BYTES`).
    RecordsLz4 {
        count: u32,
        raw_len: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Spare → primary: highest LSN received, flushed (fsynced) and applied, and the commit
    /// time of the last applied record. The primary frees its window up to `flushed`.
    /// `oldest_unapplied_ms`: commit time of the oldest record the spare holds and has not
    /// applied (0: none, or not known), so its lag in seconds survives a restart of either
    /// side; `held`: why it does not apply (`paused`, `delayed (30m)`, ...), empty otherwise.
    Ack {
        received: u64,
        flushed: u64,
        applied: u64,
        applied_time_ms: u64,
        #[serde(default)]
        oldest_unapplied_ms: u64,
        #[serde(default)]
        held: String,
    },
    /// Either way when idle, so a silent link is noticed. From the primary, `last_lsn` tells
    /// the spare how far the primary's durable log reaches (its own lag).
    KeepAlive { last_lsn: u64 },
    /// Control → voter: grant the sender a write lease for `epoch`, whose membership is
    /// `members` (the voter records it and grants at least `members.lease_ms`); `sent_ms` is
    /// the sender's own clock, echoed back so it knows from when the grant counts.
    LeaseRequest {
        epoch: u64,
        sent_ms: u64,
        members: Members,
    },
    /// Voter → control: granted or not; if not, the epoch and primary the voter follows.
    LeaseReply {
        epoch: u64,
        sent_ms: u64,
        granted: bool,
        known_epoch: u64,
        known_primary: String,
        /// Whether `known_epoch` is committed (else only promised to `known_primary`).
        known_committed: bool,
    },
    /// Coordinator → voter: promise `epoch` to `candidate`, whose epoch will have the
    /// membership `members` (persisted before the answer).
    Prepare {
        epoch: u64,
        candidate: String,
        members: Members,
    },
    /// Voter → coordinator: promised or not (then to whom the epoch went, or `why`), how
    /// long a lease it granted may still run, and what it knows of memberships.
    PrepareReply {
        epoch: u64,
        promised: bool,
        promised_to: String,
        lease_remaining_ms: u64,
        known: Known,
        why: String,
    },
    /// Coordinator → voter: `primary` leads `epoch` now, with the membership `members`.
    /// `until`: the new primary keeps its history only up to that LSN (`promote --until`).
    Commit {
        epoch: u64,
        primary: String,
        until: Option<u64>,
        members: Option<Members>,
    },
    /// Voter → coordinator: the epoch and primary it follows after the commit.
    CommitReply { epoch: u64, primary: String },
    /// Primary → voter: it stopped writing for a switchover and gives up the lease this voter
    /// granted it, so that the promotion need not wait it out.
    Release { epoch: u64 },
    /// Voter → primary: whether the grant was released (only the primary of its epoch may).
    ReleaseReply { epoch: u64, released: bool },
    /// Either way: the connection is refused or ended, for `reason`; the receiver logs it.
    Refuse { reason: String },
}

impl Message {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Challenge { .. } => "Challenge",
            Message::Proof { .. } => "Proof",
            Message::Position { .. } => "Position",
            Message::Diverged { .. } => "Diverged",
            Message::Probes { .. } => "Probes",
            Message::SeedStart { .. } => "SeedStart",
            Message::SeedChunk { .. } => "SeedChunk",
            Message::SeedAck { .. } => "SeedAck",
            Message::SeedEnd { .. } => "SeedEnd",
            Message::Records { .. } => "Records",
            Message::RecordsLz4 { .. } => "RecordsLz4",
            Message::Ack { .. } => "Ack",
            Message::KeepAlive { .. } => "KeepAlive",
            Message::Refuse { .. } => "Refuse",
            Message::LeaseRequest { .. } => "LeaseRequest",
            Message::LeaseReply { .. } => "LeaseReply",
            Message::Prepare { .. } => "Prepare",
            Message::PrepareReply { .. } => "PrepareReply",
            Message::Commit { .. } => "Commit",
            Message::CommitReply { .. } => "CommitReply",
            Message::Release { .. } => "Release",
            Message::ReleaseReply { .. } => "ReleaseReply",
        }
    }
}
