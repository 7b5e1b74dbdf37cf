//! A peer connection, plain TCP or TLS (either side), behind one type, and the two ways to
//! get one: [`connect`] (dial, TLS when the cluster has it) and [`accept`] (the source address
//! checked against `allow_from`, TLS when the cluster has it).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::net::handshake::Identity;

/// How long a TLS handshake may take (within the protocol handshake's own bound).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub enum PeerStream {
    Plain(TcpStream),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl PeerStream {
    /// On a TLS acceptor: checks the dialer's certificate names `claimed` (the node its
    /// `Hello` named). Plain links rely on the secret's challenge alone.
    pub fn check_peer_name(&self, claimed: &str) -> Result<()> {
        match self {
            PeerStream::Server(s) => {
                let cert = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .ok_or_else(|| {
                        Error::InvalidData("the peer presented no certificate".into())
                    })?;
                crate::net::tls::check_client_name(cert, claimed)
            }
            _ => Ok(()),
        }
    }
}

/// Dials `addr` where node `to` listens; TLS (checking `to`'s certificate) when `me` has it.
pub async fn connect(me: &Identity, to: &str, addr: &str, timeout: Duration) -> Result<PeerStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Unavailable(format!("connecting to {to} at {addr} timed out")))?
        .map_err(Error::io(format!("connect to {to} at {addr}")))?;
    tcp.set_nodelay(true)
        .map_err(Error::io("set TCP_NODELAY"))?;
    let Some(tls) = &me.tls else {
        return Ok(PeerStream::Plain(tcp));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.current().client.clone());
    let name = crate::net::tls::server_name(to)?;
    let s = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| Error::Unavailable(format!("TLS handshake with {to} at {addr} timed out")))?
        .map_err(|e| {
            Error::Unavailable(format!("TLS handshake with {to} at {addr} failed: {e}"))
        })?;
    Ok(PeerStream::Client(Box::new(s)))
}

/// Dials node `to` at `addr` and runs the protocol handshake; returns the stream and its
/// protocol version. A node of the previous release refuses our newest version naming its
/// own: the dial is made again at once in that version, so one control request (a
/// promise, a commit, a release) never fails for it.
pub async fn dial(
    me: &Identity,
    to: &str,
    addr: &str,
    timeout: Duration,
    epoch: u64,
    purpose: crate::wire::message::Purpose,
) -> Result<(PeerStream, u32)> {
    let announced = crate::wire::version::to_announce(&me.name, to);
    let mut s = connect(me, to, addr, timeout).await?;
    let handshake =
        crate::net::handshake::dial_announcing(&mut s, me, to, epoch, purpose, announced).await;
    match handshake {
        Ok(version) => Ok((s, version)),
        Err(e) if crate::wire::version::to_announce(&me.name, to) < announced => {
            tracing::debug!(peer = to, cause = %e, "dialling again in the peer's protocol version");
            let mut s = connect(me, to, addr, timeout).await?;
            let version = crate::net::handshake::dial(&mut s, me, to, epoch, purpose).await?;
            Ok((s, version))
        }
        Err(e) => Err(e),
    }
}

/// Takes an accepted connection: refused unless its source is in `allow_from` (when set),
/// then TLS when `me` has it (the dialer must present a certificate of the cluster CA).
pub async fn accept(
    me: &Identity,
    tcp: TcpStream,
    from: SocketAddr,
    allow_from: &[ipnet::IpNet],
) -> Result<PeerStream> {
    if !allow_from.is_empty() && !allow_from.iter().any(|n| n.contains(&from.ip())) {
        return Err(Error::InvalidData(format!(
            "{} is not in this node's allow_from",
            from.ip()
        )));
    }
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &me.tls else {
        return Ok(PeerStream::Plain(tcp));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
    let s = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| Error::Unavailable("TLS handshake timed out".into()))?
        .map_err(|e| Error::InvalidData(format!("TLS handshake failed: {e}")))?;
    Ok(PeerStream::Server(Box::new(s)))
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            PeerStream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            PeerStream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            PeerStream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            PeerStream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
