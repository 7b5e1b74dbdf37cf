//! The actix side: one actor per role, thin shells around the pure cores in `core` and the
//! storage in `log`/`store`. [`node::start_data_node`] opens a node's storage (recovering it), then
//! starts its actor and its HTTP API inside the running actix system.

pub mod messages;
pub mod monitor;
pub mod node;
pub mod primary;
pub mod shared;
pub mod spare;
pub mod stop;
#[cfg(test)]
pub mod test_support;

use std::time::Duration;

/// Keep-alive period on an idle peer link when the configuration does not say.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// A peer link silent for this long is closed and redialled (or four heartbeats, if the
/// configured heartbeat is long): see [`silence_timeout`].
pub const PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer may stay silent, given the cluster's heartbeat: keep-alives flow every
/// heartbeat, so four missed ones, and never less than [`PEER_SILENCE_TIMEOUT`].
pub fn silence_timeout(heartbeat: Duration) -> Duration {
    PEER_SILENCE_TIMEOUT.max(heartbeat * 4)
}
const _: () = assert!(PEER_SILENCE_TIMEOUT.as_millis() >= 4 * KEEPALIVE_INTERVAL.as_millis());
/// First and largest pause before redialling a spare. A spare that comes back waits for
/// the next dial before it catches up: the largest pause is most of that wait (a refused
/// dial costs the primary next to nothing, so it can be short).
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Dialling a spare gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames a link buffers between its socket reader and its loop.
pub const LINK_FRAME_QUEUE: usize = 16;
/// Actor mailboxes: senders beyond this wait (`send`) or drop idempotent updates (`try_send`).
pub const MAILBOX_CAPACITY: usize = 256;

/// Runs blocking work (HTTP calls, files, fsync) on the blocking pool; `what` names it if the
/// task itself fails.
pub async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> crate::error::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::Error::Unavailable(format!("{what}: task failed: {e}")))
}
