//! The status and cluster documents users read (`GET /v1/status`, `GET /v1/cluster`,
//! `spare status --json`) keep their shape: the same keys, and each value of the same JSON
//! kind (integer, float, string, bool, null, object, array). Dashboards, scripts and the
//! Prometheus exporter of users read these; the typed documents behind them must not change
//! a key or turn an integer into a float.

mod common;

use common::{wait_until, Cluster};
use serde_json::{json, Value};

/// The JSON kind of a leaf value, as the expected shapes name it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks `actual` against `shape`: an object shape needs exactly its keys, each checked in
/// turn; a one-element array shape checks every element; a string shape lists the kinds a
/// leaf may have (`"int|null"`).
fn check(shape: &Value, actual: &Value, path: &str, errors: &mut Vec<String>) {
    match shape {
        Value::Object(fields) => {
            let Some(obj) = actual.as_object() else {
                errors.push(format!("{path}: expected an object, got {actual}"));
                return;
            };
            let want: Vec<&String> = fields.keys().collect();
            let have: Vec<&String> = obj.keys().collect();
            if want != have {
                errors.push(format!("{path}: keys {have:?}, expected {want:?}"));
            }
            for (k, s) in fields {
                if let Some(v) = obj.get(k) {
                    check(s, v, &format!("{path}.{k}"), errors);
                }
            }
        }
        Value::Array(elem) => match actual.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(&elem[0], item, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: expected an array, got {actual}")),
        },
        Value::String(kinds) => {
            if !kinds.split('|').any(|k| k == kind(actual)) {
                errors.push(format!(
                    "{path}: {} ({actual}), expected {kinds}",
                    kind(actual)
                ));
            }
        }
        other => panic!("bad shape at {path}: {other}"),
    }
}

fn assert_shape(what: &str, shape: Value, actual: &Value) {
    let mut errors = Vec::new();
    check(&shape, actual, what, &mut errors);
    assert!(
        errors.is_empty(),
        "{what} changed shape:\n{}\n\ndocument: {actual:#}",
        errors.join("\n")
    );
}

fn primary_status() -> Value {
    json!({
        "applied_lsn": "int", "cluster": "string", "commit_rule": "string", "commits_total": "int",
        "epoch": "int", "http": "string", "last_commit_time_ms": "int", "last_lsn": "int",
        "lease": { "fenced": "null", "lease_ms": "int", "remaining_ms": "int|null", "valid": "bool", "voters": ["string"] },
        "name": "string", "oldest_lsn": "int", "pending_membership": "null",
        "primary": { "http": "string", "name": "string" },
        "role": "string", "state": "string",
        "spares": [{
            "applied_lsn": "int", "flushed_lsn": "int", "in_flight_bytes": "int",
            "lag": { "bytes": "int|null", "last_ack_age_s": "float|null", "records": "int", "seconds": "float" },
            "name": "string", "protocol": "int", "received_lsn": "int", "seed": "null", "state": "string", "sync": "null"
        }]
    })
}

fn spare_status() -> Value {
    json!({
        "applied_lsn": "int", "applied_time_ms": "int", "apply_delay_s": "float", "cluster": "string",
        "epoch": "int", "flushed_lsn": "int", "http": "string",
        "lag": { "last_heard_s": "float|null", "records": "int", "seconds": "float" },
        "last_lsn": "int", "name": "string", "oldest_lsn": "int", "paused": "bool",
        "pending_records": "int", "primary": { "http": "string", "name": "string" },
        "primary_last_lsn": "int", "received_lsn": "int", "role": "string", "seed": "null",
        "state": "string"
    })
}

fn monitor_status() -> Value {
    json!({ "cluster": "string", "http": "string", "name": "string", "role": "string", "state": "string" })
}

/// A node entry of the cluster document, by role.
fn entry(role: &str) -> Value {
    let mut e = json!({
        "applied_lsn": "int", "epoch": "int", "http": "string", "last_lsn": "int",
        "name": "string", "role": "string", "state": "string"
    });
    match role {
        "spare" => {
            e["lag"] = json!({ "bytes": "int|null", "last_ack_age_s": "float|null", "records": "int", "seconds": "float" });
            e["pending_records"] = json!("int");
            e["link"] = json!("string");
            e["sync"] = json!("null");
        }
        "monitor" => {
            for k in ["applied_lsn", "epoch", "last_lsn"] {
                e[k] = json!("null");
            }
        }
        _ => {}
    }
    e
}

fn cluster_view(monitor: bool) -> Value {
    let mut v = json!({
        "cluster": "string", "epoch": "int", "lease_ms": "int", "nodes": ["object"],
        "partial": "bool", "pending_membership": "null", "primary": "string", "voters": ["string"]
    });
    if monitor {
        v["problems"] = json!(["string"]);
        v["source"] = json!("string");
    }
    v
}

fn check_nodes(what: &str, view: &Value) {
    for node in view["nodes"].as_array().expect("nodes") {
        let role = node["role"].as_str().expect("a role");
        assert_shape(&format!("{what} node {}", node["name"]), entry(role), node);
    }
}

#[test]
fn status_and_cluster_documents_keep_their_keys_and_value_kinds() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", json!([]));
    c.wait_applied("lan-1", lsn);
    // Steady state: the spare streams and has answered, so every field has its usual kind.
    wait_until("the primary to see lan-1 streaming", || {
        let s = c.status("main");
        s["spares"][0]["state"] == "streaming" && s["lease"]["valid"] == true
    });
    let http = c.http("watch-1");
    let cluster = || {
        spare::client::get(&http, "/v1/cluster", std::time::Duration::from_secs(5))
            .expect("GET /v1/cluster")
            .body
    };
    wait_until(
        "the monitor to see every node answer and lan-1's link",
        || {
            let v = cluster();
            v["partial"] == false
                && v["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|e| e["link"] == "streaming"))
        },
    );
    assert_shape("main /v1/status", primary_status(), &c.status("main"));
    assert_shape("lan-1 /v1/status", spare_status(), &c.status("lan-1"));
    assert_shape("watch-1 /v1/status", monitor_status(), &c.status("watch-1"));
    let view = cluster();
    assert_shape("/v1/cluster", cluster_view(true), &view);
    check_nodes("/v1/cluster", &view);
    let out = c.cli(&["status", "--json"]);
    assert!(out.status.code().is_some(), "spare status ran");
    let cli: Value = serde_json::from_slice(&out.stdout).expect("spare status --json prints JSON");
    assert_shape("spare status --json", cluster_view(true), &cli);
    check_nodes("spare status --json", &cli);
}

/// The checker itself: a float where an integer was, a key gone or added, all reported.
#[test]
fn the_shape_check_reports_a_changed_kind_and_a_changed_key_set() {
    let shape = json!({ "a": "int", "b": { "c": "float|null" }, "d": ["string"] });
    let mut errors = Vec::new();
    check(
        &shape,
        &json!({ "a": 1, "b": { "c": null }, "d": ["x"] }),
        "doc",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    check(
        &shape,
        &json!({ "a": 1.0, "b": { "c": 2 }, "d": [3] }),
        "doc",
        &mut errors,
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    errors.clear();
    check(
        &shape,
        &json!({ "a": 1, "b": { "c": 0.5, "e": 1 } }),
        "doc",
        &mut errors,
    );
    assert_eq!(
        errors.len(),
        2,
        "a key added below and one missing above: {errors:?}"
    );
}
