//! The cluster document (`GET /v1/cluster` on a monitor, `spare status --json`): every node
//! with its role, state and positions, and every spare's lag, built from the nodes' own
//! status documents. Both the monitor and the command line build it here, so they agree.
//! Typed (`ClusterView`); the JSON users see is it serialized with its keys sorted, and
//! `tests/status_shape.rs` pins its keys and value kinds.

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{ClusterConfig, Role};
use crate::core::role::NodeRole;
use crate::status::{NodeStatus, PendingMembership, PrimaryStatus, SpareLink, Unread};

/// Each node's name and its status, or why it is not known.
pub type Statuses = [(String, Result<NodeStatus, Unread>)];

/// The whole cluster as one reader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster: String,
    /// The newest epoch any node reported.
    pub epoch: Option<u64>,
    /// The primary of the newest epoch that answered.
    pub primary: Option<String>,
    /// Some node did not answer (or no monitor did, from the command line).
    pub partial: bool,
    /// The running epoch's voters and lease, from the primary's lease.
    pub voters: Option<Vec<String>>,
    pub lease_ms: Option<u64>,
    pub pending_membership: Option<PendingMembership>,
    pub nodes: Vec<NodeEntry>,
    /// Who built it: "monitor NAME", or "data nodes" (the command line without a monitor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What needs a human's eye, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// One node of the cluster document: answered, unreachable, or not asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeEntry {
    Answered(AnsweredNode),
    /// Not answering ("unreachable"), or answering without a status ("unavailable").
    Unreachable {
        name: String,
        role: NodeRole,
        state: String,
        error: String,
    },
    Unknown {
        name: String,
        role: NodeRole,
        state: String,
    },
}

/// A node that answered: its positions (null for a monitor) and, for a spare, its lag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnsweredNode {
    pub name: String,
    pub role: NodeRole,
    pub state: String,
    pub epoch: Option<u64>,
    pub last_lsn: Option<u64>,
    pub applied_lsn: Option<u64>,
    pub http: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<ViewLag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_records: Option<u64>,
    /// The primary's view of the link, when the primary answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Its place in the commit rule (null under `async`), when the primary answered.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub sync: Option<Option<String>>,
}

/// A spare's lag in the cluster document: the primary's view, else the spare's own (which
/// knows neither bytes nor seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ViewLag {
    pub records: Option<u64>,
    pub bytes: Option<u64>,
    pub seconds: Option<f64>,
    pub last_ack_age_s: Option<f64>,
}

/// A field that is present, null or not: `Some(None)` for null (serde's default would read
/// null as absent, and the document would lose the key on its way through).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl NodeEntry {
    pub fn name(&self) -> &str {
        match self {
            NodeEntry::Answered(a) => &a.name,
            NodeEntry::Unreachable { name, .. } | NodeEntry::Unknown { name, .. } => name,
        }
    }

    pub fn role(&self) -> NodeRole {
        match self {
            NodeEntry::Answered(a) => a.role,
            NodeEntry::Unreachable { role, .. } | NodeEntry::Unknown { role, .. } => *role,
        }
    }

    pub fn state(&self) -> &str {
        match self {
            NodeEntry::Answered(a) => &a.state,
            NodeEntry::Unreachable { state, .. } | NodeEntry::Unknown { state, .. } => state,
        }
    }

    pub fn answered(&self) -> Option<&AnsweredNode> {
        match self {
            NodeEntry::Answered(a) => Some(a),
            _ => None,
        }
    }
}

impl ClusterView {
    /// The entries of the nodes that answer as spares.
    pub fn spares(&self) -> impl Iterator<Item = &AnsweredNode> {
        self.nodes
            .iter()
            .filter_map(NodeEntry::answered)
            .filter(|a| a.role == NodeRole::Spare)
    }

    /// The document users see: a JSON object with its keys sorted.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a cluster document serializes")
    }
}

/// The status of the node answering as primary of the newest epoch (an old primary cut off
/// from the voters may still say "primary": the newest epoch wins).
fn primary_doc(statuses: &Statuses) -> Option<&PrimaryStatus> {
    statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok()?.primary())
        .max_by_key(|p| p.epoch)
}

/// (epoch, name) of the primary of the newest epoch among `statuses`, if one answered.
pub fn newest_primary(statuses: &Statuses) -> Option<(u64, String)> {
    primary_doc(statuses).map(|p| (p.epoch, p.name.clone()))
}

/// The cluster document of `config`'s nodes from their statuses.
pub fn cluster_document(config: &ClusterConfig, statuses: &Statuses) -> ClusterView {
    let primary = primary_doc(statuses);
    let nodes = config
        .nodes
        .iter()
        .map(|n| node_entry(n.name.as_str(), n.role, statuses, primary))
        .collect();
    // Partial whenever a node's status is not known, whether it is silent or answered
    // without one.
    let reachable = statuses.iter().filter(|(_, s)| s.is_ok()).count();
    let epoch = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok()?.epoch())
        .max();
    let lease = primary.and_then(|p| p.lease.as_ref());
    ClusterView {
        cluster: config.cluster.name.clone(),
        epoch,
        primary: primary.map(|p| p.name.clone()),
        partial: reachable < config.nodes.len(),
        voters: lease.map(|l| l.voters.clone()),
        lease_ms: lease.map(|l| l.lease_ms),
        pending_membership: primary.and_then(|p| p.pending_membership.clone()),
        nodes,
        source: None,
        problems: None,
    }
}

fn node_entry(
    name: &str,
    role: Role,
    statuses: &Statuses,
    primary: Option<&PrimaryStatus>,
) -> NodeEntry {
    // Not answering, a node is shown in the role the configuration gives it.
    let role_name = match role {
        Role::Primary => NodeRole::Primary,
        Role::Spare => NodeRole::Spare,
        Role::Monitor => NodeRole::Monitor,
    };
    let name = name.to_string();
    let doc = match statuses.iter().find(|(n, _)| *n == name).map(|(_, s)| s) {
        Some(Ok(doc)) => doc,
        Some(Err(e)) => {
            // A node that answers without a status (changing role, another version) runs:
            // "unavailable", not "unreachable".
            let state = if e.answered() {
                "unavailable"
            } else {
                "unreachable"
            };
            return NodeEntry::Unreachable {
                name,
                role: role_name,
                state: state.into(),
                error: e.to_string(),
            };
        }
        None => {
            return NodeEntry::Unknown {
                name,
                role: role_name,
                state: "unknown".into(),
            }
        }
    };
    let positions = doc.positions();
    let mut entry = AnsweredNode {
        name,
        role: doc.role(),
        state: doc.state().to_string(),
        epoch: positions.map(|p| p.0),
        last_lsn: positions.map(|p| p.1),
        applied_lsn: positions.map(|p| p.2),
        http: doc.http().to_string(),
        lag: None,
        pending_records: None,
        link: None,
        sync: None,
    };
    if let NodeStatus::Spare(own) = doc {
        spare_fields(&mut entry, own, primary);
    }
    NodeEntry::Answered(entry)
}

/// A spare's lag, pending records, and the primary's view of its link.
fn spare_fields(
    entry: &mut AnsweredNode,
    own: &crate::status::SpareStatus,
    primary: Option<&PrimaryStatus>,
) {
    let seen = primary.and_then(|p| p.spares.iter().find(|s| s.name() == entry.name));
    entry.lag = Some(spare_lag(own, seen));
    entry.pending_records = Some(own.pending_records);
    // The primary's view of the link: "seeding (n %)", commit-rule membership; but a spare
    // held back on purpose says so itself (paused, delayed, applying up to an LSN).
    let st = own.state.as_str();
    let held = st == "paused" || st.starts_with("delayed") || st.starts_with("applying up to");
    if let Some(s) = seen {
        if !held {
            entry.state = s.state().to_string();
        }
        entry.link = Some(s.state().to_string());
        entry.sync = Some(s.sync().map(String::from));
    }
}

/// The primary's view of a spare's lag when the primary answered; else the spare's own.
fn spare_lag(own: &crate::status::SpareStatus, seen: Option<&SpareLink>) -> ViewLag {
    match seen {
        Some(link) => {
            let lag = link.lag();
            ViewLag {
                records: lag.map(|l| l.records),
                bytes: lag.and_then(|l| l.bytes),
                seconds: lag.map(|l| l.seconds),
                last_ack_age_s: lag.and_then(|l| l.last_ack_age_s),
            }
        }
        None => ViewLag {
            records: Some(own.lag.records),
            bytes: None,
            seconds: None,
            last_ack_age_s: own.lag.last_heard_s,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lag::Lag;
    use crate::error::PrimaryRef;
    use crate::status::{LeaseStatus, LinkedSpare, MonitorStatus, OwnLag, SpareStatus};

    const CONFIG: &str = r#"
[cluster]
name = "shop"
secret_file = "cluster.secret"

[[node]]
name = "main"
role = "primary"
peer = "127.0.0.1:7401"
http = "127.0.0.1:7301"

[[node]]
name = "lan-1"
role = "spare"
peer = "127.0.0.1:7402"
http = "127.0.0.1:7302"

[[node]]
name = "lan-2"
role = "spare"
peer = "127.0.0.1:7403"
http = "127.0.0.1:7303"

[[node]]
name = "watch-1"
role = "monitor"
peer = "127.0.0.1:7404"
http = "127.0.0.1:7304"
"#;

    fn config() -> ClusterConfig {
        ClusterConfig::parse(std::path::Path::new("conf/cluster.toml"), CONFIG).unwrap()
    }

    fn primary(name: &str, epoch: u64, spares: Vec<SpareLink>) -> NodeStatus {
        NodeStatus::Primary(PrimaryStatus {
            name: name.into(),
            state: "serving".into(),
            cluster: "shop".into(),
            epoch,
            http: "127.0.0.1:7301".into(),
            last_lsn: 100,
            oldest_lsn: 1,
            commits_total: 7,
            lease: Some(LeaseStatus {
                valid: true,
                remaining_ms: Some(3000),
                voters: vec!["main".into(), "lan-1".into()],
                lease_ms: 4000,
                fenced: None,
            }),
            pending_membership: None,
            commit_rule: "async".into(),
            applied_lsn: 100,
            last_commit_time_ms: 1,
            primary: PrimaryRef {
                name: name.into(),
                http: "127.0.0.1:7301".into(),
            },
            spares,
        })
    }

    fn spare(name: &str, state: &str) -> NodeStatus {
        NodeStatus::Spare(SpareStatus {
            name: name.into(),
            state: state.into(),
            cluster: "shop".into(),
            epoch: 1,
            http: "127.0.0.1:7302".into(),
            last_lsn: 100,
            oldest_lsn: 1,
            received_lsn: 100,
            flushed_lsn: 100,
            applied_lsn: 90,
            applied_time_ms: 1,
            primary_last_lsn: 100,
            primary: PrimaryRef {
                name: "main".into(),
                http: "127.0.0.1:7301".into(),
            },
            seed: None,
            lag: OwnLag {
                records: 10,
                seconds: 0.0,
                last_heard_s: Some(0.2),
            },
            paused: state == "paused",
            apply_delay_s: 0.0,
            pending_records: 10,
        })
    }

    fn linked(name: &str, state: &str, records: u64) -> SpareLink {
        SpareLink::Linked(LinkedSpare {
            name: name.into(),
            state: state.into(),
            received_lsn: 100,
            flushed_lsn: 100,
            applied_lsn: 100 - records,
            in_flight_bytes: 0,
            seed: None,
            lag: Lag {
                records,
                seconds: 1.5,
                last_ack_age_s: Some(0.1),
                bytes: Some(512),
            },
            sync: None,
            protocol: Some(3),
        })
    }

    fn answered<'a>(view: &'a ClusterView, name: &str) -> &'a AnsweredNode {
        view.nodes
            .iter()
            .find(|n| n.name() == name)
            .and_then(NodeEntry::answered)
            .unwrap_or_else(|| panic!("{name} answered"))
    }

    #[test]
    fn a_spares_lag_and_link_come_from_the_primary_when_it_answers() {
        let statuses = vec![
            (
                "main".to_string(),
                Ok(primary("main", 1, vec![linked("lan-1", "catching-up", 10)])),
            ),
            ("lan-1".to_string(), Ok(spare("lan-1", "streaming"))),
        ];
        let view = cluster_document(&config(), &statuses);
        let e = answered(&view, "lan-1");
        assert_eq!(
            e.state, "catching-up",
            "the primary's view of the link wins"
        );
        assert_eq!(e.link.as_deref(), Some("catching-up"));
        assert_eq!(e.sync, Some(None), "present, null under async");
        let lag = e.lag.unwrap();
        assert_eq!(
            (lag.records, lag.bytes, lag.seconds),
            (Some(10), Some(512), Some(1.5))
        );
        assert_eq!(view.primary.as_deref(), Some("main"));
        assert_eq!(
            view.voters.as_deref(),
            Some(&["main".to_string(), "lan-1".to_string()][..])
        );
    }

    #[test]
    fn without_the_primary_a_spare_shows_its_own_lag_and_no_link() {
        let statuses = vec![("lan-1".to_string(), Ok(spare("lan-1", "streaming")))];
        let view = cluster_document(&config(), &statuses);
        let e = answered(&view, "lan-1");
        let lag = e.lag.unwrap();
        assert_eq!(
            (lag.records, lag.bytes, lag.seconds),
            (Some(10), None, None)
        );
        assert_eq!(lag.last_ack_age_s, Some(0.2));
        assert!(e.link.is_none() && e.sync.is_none(), "absent, not null");
        assert!(view.partial && view.primary.is_none());
    }

    #[test]
    fn a_spare_held_back_on_purpose_keeps_its_own_state() {
        let statuses = vec![
            (
                "main".to_string(),
                Ok(primary("main", 1, vec![linked("lan-1", "streaming", 3)])),
            ),
            ("lan-1".to_string(), Ok(spare("lan-1", "paused"))),
        ];
        let e_view = cluster_document(&config(), &statuses);
        let e = answered(&e_view, "lan-1");
        assert_eq!(
            (e.state.as_str(), e.link.as_deref()),
            ("paused", Some("streaming"))
        );
    }

    #[test]
    fn silent_refusing_and_unasked_nodes_are_told_apart() {
        let statuses = vec![
            (
                "main".to_string(),
                Err(Unread::Silent("connection refused".into())),
            ),
            (
                "lan-1".to_string(),
                Err(Unread::Refused("503: changing role".into())),
            ),
            (
                "watch-1".to_string(),
                Ok(NodeStatus::Monitor(MonitorStatus {
                    name: "watch-1".into(),
                    state: "watching".into(),
                    cluster: "shop".into(),
                    http: "127.0.0.1:7304".into(),
                })),
            ),
        ];
        let view = cluster_document(&config(), &statuses);
        let state = |n: &str| {
            view.nodes
                .iter()
                .find(|e| e.name() == n)
                .unwrap()
                .state()
                .to_string()
        };
        assert_eq!(state("main"), "unreachable");
        assert_eq!(state("lan-1"), "unavailable");
        assert_eq!(state("lan-2"), "unknown");
        let m = answered(&view, "watch-1");
        assert_eq!((m.epoch, m.last_lsn, m.applied_lsn), (None, None, None));
        assert!(view.partial, "lan-2 was not asked");
        let mut all = statuses.clone();
        all.retain(|(n, _)| n != "main");
        all.push(("main".to_string(), Ok(primary("main", 1, vec![]))));
        all.push(("lan-2".to_string(), Ok(spare("lan-2", "streaming"))));
        let view = cluster_document(&config(), &all);
        assert!(view.partial, "lan-1 answered without its status: not known");
        all.retain(|(n, _)| n != "lan-1");
        all.push(("lan-1".to_string(), Ok(spare("lan-1", "streaming"))));
        assert!(
            !cluster_document(&config(), &all).partial,
            "every status known"
        );
    }

    #[test]
    fn the_primary_of_the_newest_epoch_wins_over_an_old_one_still_saying_primary() {
        let statuses = vec![
            ("main".to_string(), Ok(primary("main", 1, vec![]))),
            ("lan-1".to_string(), Ok(primary("lan-1", 2, vec![]))),
        ];
        assert_eq!(newest_primary(&statuses), Some((2, "lan-1".to_string())));
        let view = cluster_document(&config(), &statuses);
        assert_eq!(
            (view.primary.as_deref(), view.epoch),
            (Some("lan-1"), Some(2))
        );
    }

    #[test]
    fn a_cluster_document_reads_back_as_it_was_written() {
        let statuses = vec![
            (
                "main".to_string(),
                Ok(primary("main", 1, vec![linked("lan-1", "streaming", 0)])),
            ),
            ("lan-1".to_string(), Ok(spare("lan-1", "streaming"))),
            ("lan-2".to_string(), Err(Unread::Silent("timed out".into()))),
        ];
        let mut view = cluster_document(&config(), &statuses);
        view.source = Some("monitor watch-1".into());
        view.problems = Some(vec![]);
        let json = view.to_json();
        let back: ClusterView = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, view);
        assert_eq!(
            back.to_json(),
            json,
            "what `spare status --json` prints of a monitor's view"
        );
    }
}
