//! Which protocol versions this node speaks, and which one it announces to each peer, so
//! that a cluster is upgraded one node at a time: version N works with N-1
//! ([`MIN_PROTOCOL_VERSION`]).
//!
//! A dialer announces its newest version in `Hello`; an acceptor that speaks it lets the
//! connection speak it. A node of the previous release refuses a newer version, naming its
//! own ("protocol version 3 is not supported (this node speaks 2)", the wording of every
//! release): the dialer then announces that version to that peer, and tries its newest
//! again after [`DOWNGRADE_RECHECK`] (the peer may have been upgraded meanwhile).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::wire::message::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Makes this build speak one older version only, as the previous release did: the tests
/// of rolling upgrades run both releases from one build. Never set in production.
pub const EMULATE_ENV: &str = "SPARE_TEST_SPEAK_PROTOCOL";

/// How long a peer that named an older version is spoken to at that version before the
/// newest is announced again.
pub const DOWNGRADE_RECHECK: Duration = Duration::from_secs(60);

/// (oldest, newest) versions this node speaks.
pub fn spoken() -> (u32, u32) {
    static SPOKEN: OnceLock<(u32, u32)> = OnceLock::new();
    *SPOKEN.get_or_init(|| {
        let emulated = std::env::var(EMULATE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|v| (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(v));
        match emulated {
            // A release spoke its own version only.
            Some(v) => (v, v),
            None => (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION),
        }
    })
}

/// Whether this node speaks `version`.
pub fn speaks(version: u32) -> bool {
    let (oldest, newest) = spoken();
    (oldest..=newest).contains(&version)
}

/// Why an acceptor refuses a `Hello` of `asked`.
pub fn refusal(asked: u32) -> String {
    format!(
        "protocol version {asked} is not supported (this node speaks {})",
        spoken().1
    )
}

/// The version a refusal says the peer speaks, if this node speaks it too.
pub fn named_in_refusal(reason: &str) -> Option<u32> {
    let (_, rest) = reason.split_once("is not supported (this node speaks ")?;
    let version: u32 = rest.split(')').next()?.trim().parse().ok()?;
    speaks(version).then_some(version)
}

/// (this node, peer) → (the older version the peer named, since when).
type Older = HashMap<(String, String), (u32, Instant)>;

/// Peers that named an older version.
static OLDER: LazyLock<Mutex<Older>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The version node `me` announces to `peer` now.
pub fn to_announce(me: &str, peer: &str) -> u32 {
    let mut older = OLDER.lock().expect("versions lock");
    let key = (me.to_string(), peer.to_string());
    match older.get(&key) {
        Some(&(version, since)) if since.elapsed() < DOWNGRADE_RECHECK => version,
        Some(_) => {
            older.remove(&key);
            spoken().1
        }
        None => spoken().1,
    }
}

/// Records that `peer` refused `me`'s newest version and speaks `version`.
pub fn peer_speaks(me: &str, peer: &str, version: u32) {
    tracing::info!(
        peer,
        version,
        "the peer runs an older release; speaking its protocol version"
    );
    OLDER.lock().expect("versions lock").insert(
        (me.to_string(), peer.to_string()),
        (version, Instant::now()),
    );
}

/// Forgets that `peer` spoke an older version: the next dial announces the newest again
/// (the peer's link ended; it may come back upgraded).
pub fn forget(me: &str, peer: &str) {
    OLDER
        .lock()
        .expect("versions lock")
        .remove(&(me.to_string(), peer.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_version_to_speak_if_this_node_speaks_it() {
        let old = "protocol version 3 is not supported (this node speaks 2)";
        assert_eq!(named_in_refusal(old), Some(2));
        assert_eq!(
            named_in_refusal(&format!("main refused the connection: {old}")),
            Some(2)
        );
        // Too old, too new, or not a version refusal at all.
        assert_eq!(
            named_in_refusal("protocol version 3 is not supported (this node speaks 1)"),
            None
        );
        assert_eq!(
            named_in_refusal("protocol version 3 is not supported (this node speaks 9)"),
            None
        );
        assert_eq!(named_in_refusal("authentication failed"), None);
        assert_eq!(named_in_refusal(&refusal(1)), Some(PROTOCOL_VERSION));
    }

    #[test]
    fn a_peer_that_named_an_older_version_is_spoken_to_in_it_until_the_recheck() {
        assert_eq!(to_announce("a", "b"), PROTOCOL_VERSION);
        peer_speaks("a", "b", MIN_PROTOCOL_VERSION);
        assert_eq!(to_announce("a", "b"), MIN_PROTOCOL_VERSION);
        // Per pair: another node of the same process still announces its newest.
        assert_eq!(to_announce("c", "b"), PROTOCOL_VERSION);
        let key = ("a".to_string(), "b".to_string());
        let past = Instant::now() - DOWNGRADE_RECHECK - Duration::from_secs(1);
        OLDER
            .lock()
            .unwrap()
            .insert(key, (MIN_PROTOCOL_VERSION, past));
        assert_eq!(to_announce("a", "b"), PROTOCOL_VERSION);
        // A link that ended forgets at once.
        peer_speaks("a", "d", MIN_PROTOCOL_VERSION);
        forget("a", "d");
        assert_eq!(to_announce("a", "d"), PROTOCOL_VERSION);
    }
}
