//! Both ends of a peer connection's handshake (see `wire` for the flow). A peer that names
//! the wrong cluster, node or protocol version, or fails the secret challenge, is sent a
//! `Refuse` with the reason and dropped; the caller logs it as a WARN (an operator should
//! know someone knocked, but nothing broke).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::log::Position;
use crate::net::auth::{self, Direction};
use crate::wire::message::SeedResume;
use crate::wire::{read_frame, write_frame, Envelope, Message, PROTOCOL_VERSION};

/// A handshake not finished within this time is abandoned, so a silent peer cannot hold a
/// connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this node is on the peer network.
#[derive(Clone)]
pub struct Identity {
    pub cluster: String,
    pub name: String,
    pub secret: std::sync::Arc<Vec<u8>>,
}

impl Identity {
    pub fn envelope(&self, epoch: u64, message: Message) -> Envelope {
        Envelope {
            cluster: self.cluster.clone(),
            from: self.name.clone(),
            epoch,
            message,
        }
    }
}

/// Where a spare stands, as it reports in `Position`.
#[derive(Debug, Clone)]
pub struct SpareReport {
    pub durable: Position,
    pub applied_lsn: u64,
    pub seed: Option<SeedResume>,
    /// Why the spare cannot apply any more, if it cannot.
    pub broken: Option<String>,
}

/// What the spare learnt about the primary that connected.
#[derive(Debug, Clone)]
pub struct PeerPrimary {
    pub name: String,
    pub epoch: u64,
}

async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    epoch: u64,
    reason: String,
) -> Error {
    // Best effort: the peer may already be gone.
    let _ = write_frame(
        s,
        &me.envelope(
            epoch,
            Message::Refuse {
                reason: reason.clone(),
            },
        ),
    )
    .await;
    Error::InvalidInput(reason)
}

async fn expect<S: AsyncRead + Unpin>(s: &mut S, me: &Identity, peer: &str) -> Result<Envelope> {
    let env = read_frame(s).await?;
    if env.cluster != me.cluster {
        return Err(Error::InvalidInput(format!(
            "peer {} belongs to cluster \"{}\", not \"{}\"",
            env.from, env.cluster, me.cluster
        )));
    }
    if env.from != peer {
        return Err(Error::InvalidInput(format!(
            "expected node {peer}, but the peer says it is {}",
            env.from
        )));
    }
    if let Message::Refuse { reason } = &env.message {
        return Err(Error::InvalidInput(format!(
            "{peer} refused the connection: {reason}"
        )));
    }
    Ok(env)
}

/// Primary side, on a fresh connection to `spare`: authenticates both ways and returns the
/// spare's durable position and applied LSN.
pub async fn as_primary<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    spare: &str,
    epoch: u64,
) -> Result<SpareReport> {
    let run = async {
        let nonce = auth::new_nonce();
        write_frame(
            s,
            &me.envelope(
                epoch,
                Message::Hello {
                    protocol: PROTOCOL_VERSION,
                    to: spare.to_string(),
                    nonce: nonce.clone(),
                },
            ),
        )
        .await?;
        let env = expect(s, me, spare).await?;
        let Message::Challenge {
            nonce: spare_nonce,
            proof,
        } = env.message
        else {
            return Err(Error::InvalidInput(format!(
                "{spare} answered Hello with {}",
                env.message.name()
            )));
        };
        if !auth::verify(
            &me.secret,
            Direction::SpareToPrimary,
            &me.cluster,
            &me.name,
            spare,
            &nonce,
            &proof,
        ) {
            return Err(refuse(
                s,
                me,
                epoch,
                "authentication failed: the spare does not hold this cluster's secret".into(),
            )
            .await);
        }
        let proof = auth::prove(
            &me.secret,
            Direction::PrimaryToSpare,
            &me.cluster,
            &me.name,
            spare,
            &spare_nonce,
        );
        write_frame(s, &me.envelope(epoch, Message::Proof { proof })).await?;
        let env = expect(s, me, spare).await?;
        match env.message {
            Message::Position {
                durable,
                applied_lsn,
                seed,
                broken,
            } => Ok(SpareReport {
                durable,
                applied_lsn,
                seed,
                broken,
            }),
            other => Err(Error::InvalidInput(format!(
                "{spare} sent {} instead of its position",
                other.name()
            ))),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| Error::Unavailable(format!("handshake with {spare} timed out")))?
}

/// Spare side, on an accepted connection: checks the caller is `primary` of our cluster and
/// holds the secret. The caller then sends its `Position`.
pub async fn as_spare<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    primary: &str,
    my_epoch: u64,
) -> Result<PeerPrimary> {
    let run = async {
        let env = read_frame(s).await?;
        if env.cluster != me.cluster {
            let reason = format!(
                "this is cluster \"{}\", not \"{}\"",
                me.cluster, env.cluster
            );
            return Err(refuse(s, me, my_epoch, reason).await);
        }
        let Message::Hello {
            protocol,
            to,
            nonce,
        } = env.message
        else {
            return Err(refuse(
                s,
                me,
                my_epoch,
                format!("expected Hello, got {}", env.message.name()),
            )
            .await);
        };
        if protocol != PROTOCOL_VERSION {
            return Err(refuse(s, me, my_epoch, format!("protocol version {protocol} is not supported (this node speaks {PROTOCOL_VERSION})")).await);
        }
        if to != me.name || env.from != primary {
            let reason = format!(
                "this is {} following primary {primary}; a connection from {} for {to} is refused",
                me.name, env.from
            );
            return Err(refuse(s, me, my_epoch, reason).await);
        }
        if env.epoch < my_epoch {
            return Err(refuse(
                s,
                me,
                my_epoch,
                format!(
                    "epoch {} is older than this node's epoch {my_epoch}",
                    env.epoch
                ),
            )
            .await);
        }
        let my_nonce = auth::new_nonce();
        let proof = auth::prove(
            &me.secret,
            Direction::SpareToPrimary,
            &me.cluster,
            primary,
            &me.name,
            &nonce,
        );
        write_frame(
            s,
            &me.envelope(
                my_epoch,
                Message::Challenge {
                    nonce: my_nonce.clone(),
                    proof,
                },
            ),
        )
        .await?;
        let reply = expect(s, me, primary).await?;
        let Message::Proof { proof } = reply.message else {
            return Err(refuse(
                s,
                me,
                my_epoch,
                format!("expected Proof, got {}", reply.message.name()),
            )
            .await);
        };
        if !auth::verify(
            &me.secret,
            Direction::PrimaryToSpare,
            &me.cluster,
            primary,
            &me.name,
            &my_nonce,
            &proof,
        ) {
            return Err(refuse(
                s,
                me,
                my_epoch,
                "authentication failed: the primary does not hold this cluster's secret".into(),
            )
            .await);
        }
        Ok(PeerPrimary {
            name: env.from,
            epoch: env.epoch,
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| Error::Unavailable("handshake timed out".into()))?
}
