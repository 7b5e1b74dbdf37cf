//! Admission of peer connections before they authenticate: a bounded number of handshakes
//! in progress, in all and per source address, so that one host flooding the peer port
//! leaves room for the cluster's nodes; and the rate-limited report of those turned away.

use std::sync::Arc;

/// The places of the handshakes in progress: at most
/// [`MAX_HANDSHAKES_IN_PROGRESS`](crate::net::handshake::MAX_HANDSHAKES_IN_PROGRESS) in all,
/// and [`MAX_HANDSHAKES_PER_SOURCE`](crate::net::handshake::MAX_HANDSHAKES_PER_SOURCE) per
/// source address, so that one host flooding the port leaves room for the cluster's nodes.
pub(crate) struct Places {
    all: Arc<tokio::sync::Semaphore>,
    by_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            all: Arc::new(tokio::sync::Semaphore::new(
                crate::net::handshake::MAX_HANDSHAKES_IN_PROGRESS,
            )),
            by_source: Arc::default(),
        }
    }
}

impl Places {
    /// A place for a connection from `ip`, if there is one.
    pub(crate) fn take(&self, ip: std::net::IpAddr) -> Option<HandshakeTurn> {
        let permit = self.all.clone().try_acquire_owned().ok()?;
        let mut by_source = self.by_source.lock().expect("places lock");
        let held = by_source.entry(ip).or_insert(0);
        if *held >= crate::net::handshake::MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        *held += 1;
        Some(HandshakeTurn {
            _permit: permit,
            by_source: self.by_source.clone(),
            ip,
        })
    }
}

/// A place among the handshakes in progress, held until the peer is authenticated (or
/// refused): dropping it gives it back.
pub struct HandshakeTurn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    by_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Drop for HandshakeTurn {
    fn drop(&mut self) {
        let mut by_source = self.by_source.lock().expect("places lock");
        if let Some(held) = by_source.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                by_source.remove(&self.ip);
            }
        }
    }
}

/// Connections closed because too many handshakes were in progress, reported at most every
/// [`CROWDED_REPORT_EVERY`] (a flood of them must not flood the log too).
#[derive(Default)]
pub(crate) struct Crowded {
    since_report: u64,
    last_report: Option<std::time::Instant>,
}

/// How often the count of connections closed for crowding is logged.
const CROWDED_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Crowded {
    pub(crate) fn dropped(&mut self, from: std::net::SocketAddr) {
        self.since_report += 1;
        if self
            .last_report
            .is_some_and(|t| t.elapsed() < CROWDED_REPORT_EVERY)
        {
            return;
        }
        tracing::warn!(%from, closed = self.since_report, "too many peer handshakes in progress: closed new connections at once (a node of the cluster redials; strangers may be flooding the peer port)");
        self.since_report = 0;
        self.last_report = Some(std::time::Instant::now());
    }
}
