//! The status document of one node (`GET /v1/status`), typed: built by the role actors,
//! read by the monitor, the cluster view, the metrics, the promotion's survey and the
//! command line. The JSON users see is this, serialized through a `serde_json::Value` (keys
//! sorted), and `tests/status_shape.rs` pins its keys and value kinds.
//!
//! The role is the document's tag (`"role": "primary"`), so each role's fields are a struct
//! of their own and a reader matches on the role instead of probing for keys.

use serde::{Deserialize, Serialize};

use crate::core::lag::Lag;
use crate::core::role::NodeRole;
use crate::error::PrimaryRef;

/// Why a node's status is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// It did not answer (not running, unreachable, timed out).
    Silent(String),
    /// It answered with an error (changing role, refused a token): it runs.
    Refused(String),
    /// It answered a document this version cannot read (a newer or older version): it runs,
    /// and what it holds is not known.
    Unreadable(String),
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Silent(e) | Unread::Refused(e) | Unread::Unreadable(e) => f.write_str(e),
        }
    }
}

impl Unread {
    /// Whether the node answered at all (it runs).
    pub fn answered(&self) -> bool {
        !matches!(self, Unread::Silent(_))
    }
}

/// `GET /v1/status`, by role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum NodeStatus {
    Primary(PrimaryStatus),
    Spare(SpareStatus),
    /// An old primary that learned of a newer epoch: it holds its data, follows nobody
    /// until `spare rejoin`.
    Fenced(SpareStatus),
    Monitor(MonitorStatus),
}

/// The primary: its positions, its lease, and every spare's link and lag as it sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimaryStatus {
    pub name: String,
    pub state: String,
    pub cluster: String,
    pub epoch: u64,
    pub http: String,
    pub last_lsn: u64,
    pub oldest_lsn: u64,
    pub commits_total: u64,
    pub lease: Option<LeaseStatus>,
    pub pending_membership: Option<PendingMembership>,
    pub commit_rule: String,
    pub applied_lsn: u64,
    pub last_commit_time_ms: u64,
    pub primary: PrimaryRef,
    pub spares: Vec<SpareLink>,
}

/// The write lease as the primary holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub valid: bool,
    pub remaining_ms: Option<u64>,
    pub voters: Vec<String>,
    pub lease_ms: u64,
    /// Why this primary learned it is fenced (a voter knows a newer epoch), if it did.
    pub fenced: Option<String>,
}

/// Voters and lease a reload asked for, waiting for the next promotion or switchover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingMembership {
    pub voters: Vec<String>,
    pub lease_ms: u64,
    pub takes_effect: String,
}

/// One spare as the primary sees it: linked (positions and lag), or not reached yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpareLink {
    Linked(LinkedSpare),
    Connecting(ConnectingSpare),
}

/// A spare whose feeder heard from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkedSpare {
    pub name: String,
    /// "streaming", "catching-up", "seeding (42 %)", or why it holds records back.
    pub state: String,
    pub received_lsn: u64,
    pub flushed_lsn: u64,
    pub applied_lsn: u64,
    pub in_flight_bytes: u64,
    pub seed: Option<SeedProgress>,
    pub lag: Lag,
    /// Its place in the commit rule (`in`, `late`...), None under `async`.
    pub sync: Option<String>,
    /// The protocol version its link speaks (2 to a node of the previous release, during a
    /// rolling upgrade). Absent from the status of a release that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
}

/// A spare the primary has not reached yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectingSpare {
    pub name: String,
    pub state: String,
    /// Always None (null): no lag is known.
    pub lag: Option<Lag>,
}

impl SpareLink {
    pub fn name(&self) -> &str {
        match self {
            SpareLink::Linked(s) => &s.name,
            SpareLink::Connecting(s) => &s.name,
        }
    }

    pub fn state(&self) -> &str {
        match self {
            SpareLink::Linked(s) => &s.state,
            SpareLink::Connecting(s) => &s.state,
        }
    }

    pub fn lag(&self) -> Option<&Lag> {
        match self {
            SpareLink::Linked(s) => Some(&s.lag),
            SpareLink::Connecting(s) => s.lag.as_ref(),
        }
    }

    pub fn sync(&self) -> Option<&str> {
        match self {
            SpareLink::Linked(s) => s.sync.as_deref(),
            SpareLink::Connecting(_) => None,
        }
    }

    pub fn linked(&self) -> Option<&LinkedSpare> {
        match self {
            SpareLink::Linked(s) => Some(s),
            SpareLink::Connecting(_) => None,
        }
    }
}

/// A seed in progress: bytes the spare holds of the snapshot's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A spare (or fenced node): its positions and lag as it sees them itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpareStatus {
    pub name: String,
    pub state: String,
    pub cluster: String,
    pub epoch: u64,
    pub http: String,
    pub last_lsn: u64,
    pub oldest_lsn: u64,
    pub received_lsn: u64,
    pub flushed_lsn: u64,
    pub applied_lsn: u64,
    pub applied_time_ms: u64,
    pub primary_last_lsn: u64,
    pub primary: PrimaryRef,
    pub seed: Option<SeedProgress>,
    pub lag: OwnLag,
    pub paused: bool,
    pub apply_delay_s: f64,
    pub pending_records: u64,
}

/// A spare's lag by its own count (no byte count: it does not see the primary's log).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OwnLag {
    pub records: u64,
    pub seconds: f64,
    pub last_heard_s: Option<f64>,
}

/// A monitor: it holds no data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorStatus {
    pub name: String,
    pub state: String,
    pub cluster: String,
    pub http: String,
}

impl NodeStatus {
    pub fn name(&self) -> &str {
        match self {
            NodeStatus::Primary(s) => &s.name,
            NodeStatus::Spare(s) | NodeStatus::Fenced(s) => &s.name,
            NodeStatus::Monitor(s) => &s.name,
        }
    }

    pub fn state(&self) -> &str {
        match self {
            NodeStatus::Primary(s) => &s.state,
            NodeStatus::Spare(s) | NodeStatus::Fenced(s) => &s.state,
            NodeStatus::Monitor(s) => &s.state,
        }
    }

    /// The role, the document's tag.
    pub fn role(&self) -> NodeRole {
        match self {
            NodeStatus::Primary(_) => NodeRole::Primary,
            NodeStatus::Spare(_) => NodeRole::Spare,
            NodeStatus::Fenced(_) => NodeRole::Fenced,
            NodeStatus::Monitor(_) => NodeRole::Monitor,
        }
    }

    pub fn http(&self) -> &str {
        match self {
            NodeStatus::Primary(s) => &s.http,
            NodeStatus::Spare(s) | NodeStatus::Fenced(s) => &s.http,
            NodeStatus::Monitor(s) => &s.http,
        }
    }

    /// (epoch, last LSN, applied LSN) of a data node; None for a monitor.
    pub fn positions(&self) -> Option<(u64, u64, u64)> {
        match self {
            NodeStatus::Primary(s) => Some((s.epoch, s.last_lsn, s.applied_lsn)),
            NodeStatus::Spare(s) | NodeStatus::Fenced(s) => {
                Some((s.epoch, s.last_lsn, s.applied_lsn))
            }
            NodeStatus::Monitor(_) => None,
        }
    }

    pub fn epoch(&self) -> Option<u64> {
        self.positions().map(|(e, _, _)| e)
    }

    pub fn primary(&self) -> Option<&PrimaryStatus> {
        match self {
            NodeStatus::Primary(p) => Some(p),
            _ => None,
        }
    }

    /// The document users see: a JSON object with its keys sorted.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a status document serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare() -> SpareStatus {
        SpareStatus {
            name: "lan-1".into(),
            state: "streaming".into(),
            cluster: "shop".into(),
            epoch: 2,
            http: "127.0.0.1:1".into(),
            last_lsn: 9,
            oldest_lsn: 1,
            received_lsn: 9,
            flushed_lsn: 9,
            applied_lsn: 8,
            applied_time_ms: 5,
            primary_last_lsn: 9,
            primary: PrimaryRef {
                name: "main".into(),
                http: "127.0.0.1:2".into(),
            },
            seed: None,
            lag: OwnLag {
                records: 1,
                seconds: 0.0,
                last_heard_s: Some(0.5),
            },
            paused: false,
            apply_delay_s: 0.0,
            pending_records: 1,
        }
    }

    #[test]
    fn the_role_is_the_tag_and_a_document_reads_back_as_it_was_written() {
        let doc = NodeStatus::Fenced(spare()).to_json();
        assert_eq!(doc["role"], "fenced");
        assert_eq!(doc["apply_delay_s"], serde_json::json!(0.0));
        assert!(doc["apply_delay_s"].is_f64(), "a float stays a float");
        let back: NodeStatus = serde_json::from_value(doc).unwrap();
        assert_eq!(back, NodeStatus::Fenced(spare()));
        assert_eq!(back.positions(), Some((2, 9, 8)));
    }

    #[test]
    fn a_spare_not_reached_yet_shows_three_keys_and_reads_back_as_connecting() {
        let link = SpareLink::Connecting(ConnectingSpare {
            name: "lan-2".into(),
            state: "connecting".into(),
            lag: None,
        });
        let doc = serde_json::to_value(&link).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({ "name": "lan-2", "state": "connecting", "lag": null })
        );
        let back: SpareLink = serde_json::from_value(doc).unwrap();
        assert_eq!(back, link);
        assert!(back.lag().is_none() && back.linked().is_none());
    }

    #[test]
    fn a_document_of_an_unknown_role_is_refused() {
        let mut doc = NodeStatus::Spare(spare()).to_json();
        assert!(serde_json::from_value::<NodeStatus>(doc.clone()).is_ok());
        doc["role"] = "leader".into();
        assert!(serde_json::from_value::<NodeStatus>(doc).is_err());
    }
}
