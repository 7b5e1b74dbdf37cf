//! When a peer was last heard from, counted in bytes arriving rather than in whole frames:
//! a large frame crawling through a slow link (a 40 MB record at 4 MiB/s takes ten seconds)
//! comes from a live peer, and a link loop busy writing must not mistake the frames that
//! queued meanwhile for silence. The socket's reader touches it; the link's loop reads it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

/// The last moment bytes arrived from a peer.
pub struct Heard {
    origin: Instant,
    /// Milliseconds since `origin` at the last arrival.
    last_ms: AtomicU64,
}

impl Heard {
    /// Heard now (the connection was just made).
    pub fn now() -> Arc<Heard> {
        Arc::new(Heard {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// When bytes last arrived.
    pub fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// How long nothing arrived.
    pub fn silent_for(&self) -> Duration {
        self.last().elapsed()
    }
}

/// A reader that notes every arrival in a [`Heard`].
pub struct Noting<R> {
    inner: R,
    heard: Arc<Heard>,
}

impl<R> Noting<R> {
    pub fn new(inner: R, heard: Arc<Heard>) -> Self {
        Noting { inner, heard }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Noting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.touch();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn every_arrival_counts_as_hearing_the_peer() {
        const QUIET: Duration = Duration::from_millis(300);
        let heard = Heard::now();
        tokio::time::sleep(QUIET).await;
        assert!(heard.silent_for() >= QUIET);
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut rd = Noting::new(rx, heard.clone());
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"abc")
            .await
            .unwrap();
        let mut one = [0u8; 1];
        rd.read_exact(&mut one).await.unwrap();
        assert!(heard.silent_for() < QUIET);
    }
}
