//! This release and the previous one (protocol 2) read each other's messages: every message
//! of version 2 decodes here, and every message this release sends on a connection of
//! version 2 (no field of version 3 set) decodes there, into the same values.

#![allow(dead_code)]

#[path = "message_v2.rs"]
mod v2;

use serde::{de::DeserializeOwned, Serialize};

use super::message::{Message, SeedResume};
use crate::log::Position;
use crate::store::snapshot::SnapshotInfo;

fn pos(lsn: u64) -> Position {
    Position {
        lsn,
        epoch: 2,
        chain: 77,
        time_ms: 5,
    }
}

fn snapshot() -> SnapshotInfo {
    SnapshotInfo {
        id: "0123456789abcdef".into(),
        position: pos(9),
        size: 4096,
        crc: 3,
    }
}

/// Encodes `m` as the wire does and decodes it as `T`.
fn cross<T: DeserializeOwned>(
    m: &impl Serialize,
) -> std::result::Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(&rmp_serde::to_vec(m).unwrap())
}

/// Messages of this release as sent on a version-2 connection, with their version-2 twins.
fn pairs() -> Vec<(Message, v2::Message)> {
    vec![
        (
            Message::Position {
                durable: pos(3),
                applied_lsn: 2,
                seed: Some(SeedResume {
                    id: "a".into(),
                    offset: 7,
                }),
                broken: Some("why".into()),
                holding: false,
            },
            v2::Message::Position {
                durable: pos(3),
                applied_lsn: 2,
                seed: Some(v2::SeedResume {
                    id: "a".into(),
                    offset: 7,
                }),
                broken: Some("why".into()),
            },
        ),
        (
            Message::SeedStart {
                snapshot: snapshot(),
                reason: "new".into(),
                optional: false,
            },
            v2::Message::SeedStart {
                snapshot: snapshot(),
                reason: "new".into(),
            },
        ),
        (
            Message::SeedEnd {
                quarantine_after: Some(4),
                optional: false,
            },
            v2::Message::SeedEnd {
                quarantine_after: Some(4),
            },
        ),
        (
            Message::Hello {
                protocol: 2,
                to: "lan-1".into(),
                nonce: vec![1; 32],
                purpose: super::message::Purpose::Control,
            },
            v2::Message::Hello {
                protocol: 2,
                to: "lan-1".into(),
                nonce: vec![1; 32],
                purpose: v2::Purpose::Control,
            },
        ),
        (
            Message::Records {
                count: 2,
                bytes: vec![9; 40],
            },
            v2::Message::Records {
                count: 2,
                bytes: vec![9; 40],
            },
        ),
        (
            Message::KeepAlive { last_lsn: 12 },
            v2::Message::KeepAlive { last_lsn: 12 },
        ),
    ]
}

#[test]
fn each_release_reads_the_others_messages_on_a_version_2_connection() {
    for (ours, theirs) in pairs() {
        // Byte for byte what the previous release sends.
        assert_eq!(
            rmp_serde::to_vec(&ours).unwrap(),
            rmp_serde::to_vec(&theirs).unwrap(),
            "{ours:?}"
        );
        let read_there: v2::Message = cross(&ours).unwrap_or_else(|e| panic!("{ours:?}: {e}"));
        assert_eq!(format!("{read_there:?}"), format!("{theirs:?}"));
        let read_here: Message = cross(&theirs).unwrap_or_else(|e| panic!("{theirs:?}: {e}"));
        assert_eq!(read_here, ours);
    }
}

#[test]
fn a_field_of_version_3_is_what_a_version_2_node_could_not_read() {
    // Why a connection of version 2 never sets one: the previous release refuses it.
    let held = Message::Position {
        durable: pos(3),
        applied_lsn: 2,
        seed: None,
        broken: None,
        holding: true,
    };
    assert!(cross::<v2::Message>(&held).is_err());
    let optional = Message::SeedEnd {
        quarantine_after: None,
        optional: true,
    };
    assert!(cross::<v2::Message>(&optional).is_err());
    // And this release reads its own.
    assert_eq!(cross::<Message>(&held).unwrap(), held);
}
