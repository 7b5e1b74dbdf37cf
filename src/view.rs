//! The cluster document (`GET /v1/cluster` on a monitor, `spare status --json`): every node
//! with its role, state and positions, and every spare's lag, built from the nodes' own
//! `/v1/status` documents. Both the monitor and the command line build it here, so they agree.

use serde_json::{json, Value};

use crate::config::{ClusterConfig, Role};

/// The status of the node answering as primary of the newest epoch (an old primary cut off
/// from the voters may still say "primary": the newest epoch wins).
fn primary_doc(statuses: &[(String, Result<Value, String>)]) -> Option<&Value> {
    statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok().filter(|d| d["role"] == "primary"))
        .max_by_key(|d| d["epoch"].as_u64().unwrap_or(0))
}

/// (epoch, name) of the primary of the newest epoch among `statuses`, if one answered.
pub fn newest_primary(statuses: &[(String, Result<Value, String>)]) -> Option<(u64, String)> {
    let d = primary_doc(statuses)?;
    Some((d["epoch"].as_u64()?, d["name"].as_str()?.to_string()))
}

/// `statuses[i]` is node i's status document, or the error met fetching it.
pub fn cluster_document(
    config: &ClusterConfig,
    statuses: &[(String, Result<Value, String>)],
) -> Value {
    let primary_doc = primary_doc(statuses);
    let nodes: Vec<Value> = config
        .nodes
        .iter()
        .map(|n| node_entry(n.name.as_str(), n.role, statuses, primary_doc))
        .collect();
    let reachable = statuses.iter().filter(|(_, s)| s.is_ok()).count();
    let epoch = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok()?.get("epoch")?.as_u64())
        .max();
    json!({
        "cluster": config.cluster.name,
        "epoch": epoch,
        "primary": primary_doc.map(|d| d["name"].clone()).unwrap_or(Value::Null),
        "partial": reachable < config.nodes.len(),
        "voters": primary_doc.map(|d| d["lease"]["voters"].clone()).unwrap_or(Value::Null),
        "lease_ms": primary_doc.map(|d| d["lease"]["lease_ms"].clone()).unwrap_or(Value::Null),
        "pending_membership": primary_doc.map(|d| d["pending_membership"].clone()).unwrap_or(Value::Null),
        "nodes": nodes,
    })
}

fn node_entry(
    name: &str,
    role: Role,
    statuses: &[(String, Result<Value, String>)],
    primary: Option<&Value>,
) -> Value {
    let status = statuses.iter().find(|(n, _)| n == name).map(|(_, s)| s);
    let doc = match status {
        Some(Ok(doc)) => doc,
        Some(Err(e)) => {
            return json!({ "name": name, "role": role.as_str(), "state": "unreachable", "error": e })
        }
        None => return json!({ "name": name, "role": role.as_str(), "state": "unknown" }),
    };
    let mut entry = json!({
        "name": name,
        "role": doc["role"],
        "state": doc["state"],
        "epoch": doc["epoch"],
        "last_lsn": doc["last_lsn"],
        "applied_lsn": doc["applied_lsn"],
        "http": doc["http"],
    });
    if doc["role"] == "spare" {
        entry["lag"] = spare_lag(name, doc, primary);
        let seen = primary.and_then(|p| p["spares"].as_array()?.iter().find(|s| s["name"] == name));
        // The primary's view of the link: "seeding (n %)", commit-rule membership; but a
        // spare held back on purpose says so itself (paused, delayed, applying up to an LSN).
        let held = doc["state"].as_str().is_some_and(|st| {
            st == "paused" || st.starts_with("delayed") || st.starts_with("applying up to")
        });
        entry["pending_records"] = doc["pending_records"].clone();
        if let Some(s) = seen {
            if !held {
                entry["state"] = s["state"].clone();
            }
            entry["link"] = s["state"].clone();
            entry["sync"] = s["sync"].clone();
        }
    }
    entry
}

/// The primary's view of a spare's lag when the primary answered; else the spare's own.
fn spare_lag(name: &str, spare_doc: &Value, primary: Option<&Value>) -> Value {
    let from_primary = primary
        .and_then(|p| p["spares"].as_array()?.iter().find(|s| s["name"] == name))
        .and_then(|s| s.get("lag"));
    match from_primary {
        Some(lag) => {
            json!({ "records": lag["records"], "bytes": lag["bytes"], "seconds": lag["seconds"], "last_ack_age_s": lag["last_ack_age_s"] })
        }
        None => {
            json!({ "records": spare_doc["lag"]["records"], "bytes": null, "seconds": null, "last_ack_age_s": spare_doc["lag"]["last_heard_s"] })
        }
    }
}
