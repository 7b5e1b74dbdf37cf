//! Both ends of a peer connection's handshake (see `wire` for the flow). The dialer says
//! what the connection is for (`Purpose`): streaming the log (accepted only from the
//! primary this node follows) or control requests to a voter (accepted from any node of
//! the configuration). A peer that names the wrong cluster, node or protocol version, or
//! fails the secret challenge, is sent a `Refuse` with the reason and dropped; the caller
//! logs it as a WARN (an operator should know someone knocked, but nothing broke).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::log::Position;
use crate::net::auth::{self, Direction};
use crate::wire::message::{Purpose, SeedResume};
use crate::wire::{read_frame_within, version, write_frame, Envelope, Message};

/// A handshake not finished within this time is abandoned, so a silent peer cannot hold a
/// connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame read before the peer is authenticated: a Hello, Challenge, Proof or
/// Position fits in a few hundred bytes, so a stranger cannot make a node allocate more.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 64 * 1024;
/// Peer connections in the middle of their TLS and secret handshakes at once; past this, a
/// new connection is closed at once (the nodes of the cluster redial). Each holds at most a
/// frame of [`MAX_HANDSHAKE_FRAME_BYTES`]: 16 MiB in all at worst.
pub const MAX_HANDSHAKES_IN_PROGRESS: usize = 256;
/// Of those, from one source address: a host flooding the peer port cannot take the places
/// of the cluster's nodes (which dial from their own addresses).
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 8;
const _: () = assert!(MAX_HANDSHAKES_PER_SOURCE < MAX_HANDSHAKES_IN_PROGRESS);

/// Who this node is on the peer network.
#[derive(Clone)]
pub struct Identity {
    pub cluster: String,
    pub name: String,
    pub secret: std::sync::Arc<Vec<u8>>,
    /// The node's TLS material when the cluster uses TLS (`tls_dir`).
    pub tls: Option<std::sync::Arc<crate::net::tls::TlsHandle>>,
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
    /// Something holds its applying back (pause, delay, stop LSN, verify).
    pub holding: bool,
    /// The connection's protocol version.
    pub protocol: u32,
}

/// Who connected, once authenticated.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub epoch: u64,
    pub purpose: Purpose,
    /// The connection's protocol version (the dialer's, which this node speaks).
    pub protocol: u32,
}

/// Who may stream to an acceptor.
pub enum Streams<'a> {
    /// Nobody, for this reason (a primary, a fenced node, a monitor).
    Refused(String),
    /// The primary of `epoch`, or the primary of any newer epoch (a promotion happened
    /// while this node was away: the newer epoch is proof enough, since only a committed
    /// primary streams).
    Follow { epoch: u64, primary: &'a str },
}

impl Streams<'_> {
    fn admits(&self, from: &str, epoch: u64) -> bool {
        match self {
            Streams::Refused(_) => false,
            Streams::Follow {
                epoch: mine,
                primary,
            } => epoch > *mine || (epoch == *mine && from == *primary),
        }
    }
}

/// Which dialers an acceptor lets in.
pub struct Admission<'a> {
    pub streams: Streams<'a>,
    /// Nodes that may send control requests (the configuration's nodes).
    pub members: &'a [String],
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

/// The next frame from `peer`, of at most `max_bytes`, checked to come from it.
async fn expect<S: AsyncRead + Unpin>(
    s: &mut S,
    me: &Identity,
    peer: &str,
    max_bytes: usize,
) -> Result<Envelope> {
    let env = read_frame_within(s, max_bytes).await?;
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

/// Dialer side, on a fresh connection to `peer`: authenticates both ways; returns the
/// connection's protocol version. A peer of the previous release refuses our newest version
/// naming its own: the error says so, and the next dial (the callers' retry) speaks it.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    peer: &str,
    epoch: u64,
    purpose: Purpose,
) -> Result<u32> {
    let protocol = version::to_announce(&me.name, peer);
    dial_announcing(s, me, peer, epoch, purpose, protocol).await
}

/// [`dial`], announcing `protocol` (the version the caller read once, so that what it
/// compares a refusal with is what was sent).
pub async fn dial_announcing<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    peer: &str,
    epoch: u64,
    purpose: Purpose,
    protocol: u32,
) -> Result<u32> {
    let run = async {
        let nonce = auth::new_nonce();
        let hello = Message::Hello {
            protocol,
            to: peer.to_string(),
            nonce: nonce.clone(),
            purpose,
        };
        write_frame(s, &me.envelope(epoch, hello)).await?;
        let env = match expect(s, me, peer, MAX_HANDSHAKE_FRAME_BYTES).await {
            Err(e) => {
                // Only a `Refuse` from the peer itself names a version (not a frame that
                // merely echoes text we would parse).
                let text = e.to_string();
                let refusal = text.strip_prefix(&format!("{peer} refused the connection: "));
                if let Some(older) = refusal.and_then(version::named_in_refusal) {
                    version::peer_speaks(&me.name, peer, older);
                }
                return Err(e);
            }
            Ok(env) => env,
        };
        let Message::Challenge {
            nonce: peer_nonce,
            proof,
        } = env.message
        else {
            return Err(Error::InvalidInput(format!(
                "{peer} answered Hello with {}",
                env.message.name()
            )));
        };
        if !auth::verify(
            &me.secret,
            Direction::SpareToPrimary,
            &me.cluster,
            &me.name,
            peer,
            &nonce,
            &proof,
        ) {
            return Err(refuse(
                s,
                me,
                epoch,
                format!("authentication failed: {peer} does not hold this cluster's secret"),
            )
            .await);
        }
        let proof = auth::prove(
            &me.secret,
            Direction::PrimaryToSpare,
            &me.cluster,
            &me.name,
            peer,
            &peer_nonce,
        );
        write_frame(s, &me.envelope(epoch, Message::Proof { proof })).await?;
        Ok(protocol)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| Error::Unavailable(format!("handshake with {peer} timed out")))?
}

/// Primary side, on a fresh connection to `spare`: authenticates both ways for streaming and
/// returns the spare's position.
pub async fn as_primary<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    spare: &str,
    epoch: u64,
) -> Result<SpareReport> {
    let protocol = dial(s, me, spare, epoch, Purpose::Stream).await?;
    // The spare proved the secret already: its position (which may carry a long reason
    // why it cannot apply) is an authenticated frame.
    let position = expect(s, me, spare, crate::wire::MAX_FRAME_BYTES);
    let env = tokio::time::timeout(HANDSHAKE_TIMEOUT, position)
        .await
        .map_err(|_| Error::Unavailable(format!("{spare} did not send its position")))??;
    match env.message {
        Message::Position {
            durable,
            applied_lsn,
            seed,
            broken,
            holding,
        } => Ok(SpareReport {
            durable,
            applied_lsn,
            seed,
            broken,
            holding,
            protocol,
        }),
        other => Err(Error::InvalidInput(format!(
            "{spare} sent {} instead of its position",
            other.name()
        ))),
    }
}

/// A `Hello` this node lets go on to the secret's proof.
#[derive(Debug)]
pub struct Hello {
    /// The dialer's name and epoch, from the envelope.
    pub from: String,
    pub epoch: u64,
    pub nonce: Vec<u8>,
    pub purpose: Purpose,
    /// The version the dialer speaks, which this node speaks too.
    pub protocol: u32,
}

/// The acceptor's checks of the first frame, before any secret is used: same cluster, a
/// `Hello` of our protocol addressed to us, from a dialer `admission` lets in for its
/// purpose, and for a stream no epoch older than ours. `Err` holds the reason sent back.
pub fn check_hello(
    env: Envelope,
    cluster: &str,
    me: &str,
    my_epoch: u64,
    admission: &Admission<'_>,
) -> std::result::Result<Hello, String> {
    if env.cluster != cluster {
        return Err(format!(
            "this is cluster \"{cluster}\", not \"{}\"",
            env.cluster
        ));
    }
    let Message::Hello {
        protocol,
        to,
        nonce,
        purpose,
    } = env.message
    else {
        return Err(format!("expected Hello, got {}", env.message.name()));
    };
    if !version::speaks(protocol) {
        return Err(version::refusal(protocol));
    }
    let admitted = match purpose {
        Purpose::Stream => admission.streams.admits(&env.from, env.epoch),
        Purpose::Control => admission.members.contains(&env.from),
    };
    if to != me || !admitted {
        return Err(match (purpose, &admission.streams) {
            (Purpose::Stream, Streams::Follow { epoch, primary }) => format!(
                "this is {me} following primary {primary} of epoch {epoch}; a stream from {} (epoch {}) for {to} is refused",
                env.from, env.epoch
            ),
            (Purpose::Stream, Streams::Refused(why)) => {
                format!("{why}: a stream from {} for {to} is refused", env.from)
            }
            (Purpose::Control, _) => format!(
                "{} is not a node of this cluster's configuration (or this is not {to})",
                env.from
            ),
        });
    }
    if purpose == Purpose::Stream && env.epoch < my_epoch {
        return Err(format!(
            "epoch {} is older than this node's epoch {my_epoch}",
            env.epoch
        ));
    }
    Ok(Hello {
        from: env.from,
        epoch: env.epoch,
        nonce,
        purpose,
        protocol,
    })
}

/// Acceptor side: checks the caller belongs to our cluster, may open a connection of its
/// purpose, and holds the secret.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    my_epoch: u64,
    admission: Admission<'_>,
) -> Result<Peer> {
    let run = async {
        let env = read_frame_within(s, MAX_HANDSHAKE_FRAME_BYTES).await?;
        let hello = match check_hello(env, &me.cluster, &me.name, my_epoch, &admission) {
            Ok(hello) => hello,
            Err(reason) => return Err(refuse(s, me, my_epoch, reason).await),
        };
        let Hello {
            from,
            epoch,
            nonce,
            purpose,
            protocol,
        } = hello;
        let my_nonce = auth::new_nonce();
        let proof = auth::prove(
            &me.secret,
            Direction::SpareToPrimary,
            &me.cluster,
            &from,
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
        let reply = expect(s, me, &from, MAX_HANDSHAKE_FRAME_BYTES).await?;
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
            &from,
            &me.name,
            &my_nonce,
            &proof,
        ) {
            return Err(refuse(
                s,
                me,
                my_epoch,
                format!(
                    "authentication failed: {} does not hold this cluster's secret",
                    from
                ),
            )
            .await);
        }
        Ok(Peer {
            name: from,
            epoch,
            purpose,
            protocol,
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| Error::Unavailable("handshake timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, from: &str, epoch: u64, to: &str, purpose: Purpose) -> Envelope {
        Envelope {
            cluster: cluster.into(),
            from: from.into(),
            epoch,
            message: Message::Hello {
                protocol: crate::wire::PROTOCOL_VERSION,
                to: to.into(),
                nonce: vec![7; 16],
                purpose,
            },
        }
    }

    fn spare_of(members: &[String]) -> Admission<'_> {
        Admission {
            streams: Streams::Follow {
                epoch: 2,
                primary: "main",
            },
            members,
        }
    }

    #[test]
    fn a_hello_from_the_followed_primary_goes_on_to_the_proof() {
        let members = vec!["main".to_string(), "lan-1".to_string()];
        let h = check_hello(
            hello("shop", "main", 2, "lan-1", Purpose::Stream),
            "shop",
            "lan-1",
            2,
            &spare_of(&members),
        )
        .unwrap();
        assert_eq!(
            (h.from.as_str(), h.epoch, h.purpose, h.nonce.len()),
            ("main", 2, Purpose::Stream, 16)
        );
    }

    #[test]
    fn a_hello_from_another_cluster_is_refused_naming_both() {
        let members = vec!["main".to_string()];
        let why = check_hello(
            hello("other", "main", 2, "lan-1", Purpose::Stream),
            "shop",
            "lan-1",
            2,
            &spare_of(&members),
        )
        .unwrap_err();
        assert_eq!(why, "this is cluster \"shop\", not \"other\"");
    }

    #[test]
    fn a_first_frame_that_is_not_a_hello_or_of_another_protocol_is_refused() {
        let members = vec!["main".to_string()];
        let mut env = hello("shop", "main", 2, "lan-1", Purpose::Stream);
        env.message = Message::KeepAlive { last_lsn: 1 };
        let why = check_hello(env, "shop", "lan-1", 2, &spare_of(&members)).unwrap_err();
        assert_eq!(why, "expected Hello, got KeepAlive");
        use crate::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
        for refused in [MIN_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            let mut env = hello("shop", "main", 2, "lan-1", Purpose::Stream);
            if let Message::Hello { protocol, .. } = &mut env.message {
                *protocol = refused;
            }
            let why = check_hello(env, "shop", "lan-1", 2, &spare_of(&members)).unwrap_err();
            assert_eq!(
                why,
                format!("protocol version {refused} is not supported (this node speaks {PROTOCOL_VERSION})")
            );
        }
    }

    #[test]
    fn a_hello_of_the_previous_release_is_accepted_and_speaks_its_version() {
        let members = vec!["main".to_string()];
        let mut env = hello("shop", "main", 2, "lan-1", Purpose::Stream);
        if let Message::Hello { protocol, .. } = &mut env.message {
            *protocol = crate::wire::MIN_PROTOCOL_VERSION;
        }
        let hello = check_hello(env, "shop", "lan-1", 2, &spare_of(&members)).unwrap();
        assert_eq!(hello.protocol, crate::wire::MIN_PROTOCOL_VERSION);
    }

    #[test]
    fn a_stream_from_a_node_that_is_not_the_primary_or_for_another_node_is_refused() {
        let members = vec!["main".to_string(), "lan-2".to_string()];
        let why = check_hello(
            hello("shop", "lan-2", 2, "lan-1", Purpose::Stream),
            "shop",
            "lan-1",
            2,
            &spare_of(&members),
        )
        .unwrap_err();
        assert!(
            why.contains("following primary main of epoch 2; a stream from lan-2 (epoch 2)"),
            "{why}"
        );
        let why = check_hello(
            hello("shop", "main", 2, "lan-9", Purpose::Stream),
            "shop",
            "lan-1",
            2,
            &spare_of(&members),
        )
        .unwrap_err();
        assert!(why.contains("for lan-9 is refused"), "{why}");
        let fenced = Admission {
            streams: Streams::Refused("fenced".into()),
            members: &members,
        };
        let why = check_hello(
            hello("shop", "main", 2, "lan-1", Purpose::Stream),
            "shop",
            "lan-1",
            2,
            &fenced,
        )
        .unwrap_err();
        assert_eq!(why, "fenced: a stream from main for lan-1 is refused");
    }

    #[test]
    fn a_control_request_only_from_a_member_of_the_configuration() {
        let members = vec!["main".to_string()];
        assert!(check_hello(
            hello("shop", "main", 1, "lan-1", Purpose::Control),
            "shop",
            "lan-1",
            2,
            &spare_of(&members)
        )
        .is_ok());
        let why = check_hello(
            hello("shop", "stranger", 1, "lan-1", Purpose::Control),
            "shop",
            "lan-1",
            2,
            &spare_of(&members),
        )
        .unwrap_err();
        assert!(
            why.starts_with("stranger is not a node of this cluster's configuration"),
            "{why}"
        );
    }

    #[test]
    fn a_stream_of_an_epoch_older_than_ours_is_refused() {
        let members = vec!["main".to_string()];
        let anyone = Admission {
            streams: Streams::Follow {
                epoch: 1,
                primary: "main",
            },
            members: &members,
        };
        let why = check_hello(
            hello("shop", "main", 1, "lan-1", Purpose::Stream),
            "shop",
            "lan-1",
            3,
            &anyone,
        )
        .unwrap_err();
        assert_eq!(why, "epoch 1 is older than this node's epoch 3");
    }

    #[test]
    fn a_spare_admits_its_primary_or_any_newer_epoch_and_nothing_older() {
        let follow = Streams::Follow {
            epoch: 2,
            primary: "lan-1",
        };
        assert!(follow.admits("lan-1", 2));
        assert!(!follow.admits("main", 2), "another node of the same epoch");
        assert!(!follow.admits("lan-1", 1), "an older epoch");
        assert!(follow.admits("lan-2", 3), "a promotion it missed");
        assert!(!Streams::Refused("fenced".into()).admits("lan-1", 9));
    }
}
