//! `spare status`: asks every node for its status (in parallel, bounded by the client's
//! timeouts) and prints the cluster document as a table or JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use serde_json::Value;
use spare::client;
use spare::config::{ClusterConfig, Role};
use spare::view::cluster_document;

use crate::cli::sql::print_table;

/// How long `spare status` waits for each node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Refresh period of `--watch`.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster document: from the first monitor that answers (the same as its
/// `GET /v1/cluster`), else built here from the data nodes and marked partial.
pub fn collect(config: &ClusterConfig) -> Value {
    for m in config.nodes.iter().filter(|n| n.role == Role::Monitor) {
        if let Ok(r) = client::get(&m.http_advertise, "/v1/cluster", STATUS_TIMEOUT) {
            if r.status == 200 {
                return r.body;
            }
        }
    }
    let statuses: Vec<(String, Result<Value, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = config
            .nodes
            .iter()
            .filter(|n| n.role != Role::Monitor)
            .map(|n| {
                s.spawn(move || {
                    (
                        n.name.clone(),
                        client::get(&n.http_advertise, "/v1/status", STATUS_TIMEOUT)
                            .map(|r| r.body)
                            .map_err(|e| e.to_string()),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("status thread"))
            .collect()
    });
    let mut statuses = statuses;
    for m in config.nodes.iter().filter(|n| n.role == Role::Monitor) {
        statuses.push((m.name.clone(), Err("did not answer".to_string())));
    }
    let mut doc = cluster_document(config, &statuses);
    let has_monitors = config.nodes.iter().any(|n| n.role == Role::Monitor);
    doc["source"] = json!("data nodes");
    if has_monitors {
        doc["partial"] = json!(true);
        doc["problems"] = json!(["no monitor answered: this view comes from the data nodes alone (no lag alerts, no history)"]);
    }
    doc
}

pub fn run(config_path: &Path, as_json: bool, watch: bool) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    loop {
        let doc = collect(&config);
        if watch {
            print!("\x1b[2J\x1b[H");
        }
        if as_json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print_human(&doc);
        }
        if !watch {
            let code = exit_code(&doc);
            if code != 0 {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(code);
            }
            return Ok(());
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// The verdict as an exit status, for scripts and checks: 0 all well, 1 problems listed
/// (a node not answering, a spare lagging, paused or cut off), 2 no primary answers.
pub fn exit_code(doc: &Value) -> i32 {
    if doc["primary"].is_null() {
        return 2;
    }
    let problems = doc["problems"].as_array().is_some_and(|p| !p.is_empty());
    i32::from(problems)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}s"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn names(list: &[Value]) -> String {
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    names.join(", ")
}

fn millis(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "?".into(),
        |ms| format!("{:?}", std::time::Duration::from_millis(ms)),
    )
}

fn print_human(doc: &Value) {
    println!(
        "cluster {}  epoch {}  primary {}",
        text(&doc["cluster"]),
        text(&doc["epoch"]),
        text(&doc["primary"])
    );
    if let Some(source) = doc["source"].as_str() {
        println!("(from {source})");
    }
    if doc["partial"] == true {
        println!("partial view: some nodes did not answer");
    }
    if let Some(voters) = doc["voters"].as_array() {
        println!(
            "voters {} (lease {})",
            names(voters),
            millis(&doc["lease_ms"])
        );
    }
    let pending = &doc["pending_membership"];
    if let Some(voters) = pending["voters"].as_array() {
        println!(
            "membership change pending: voters {} (lease {}) take effect {}",
            names(voters),
            millis(&pending["lease_ms"]),
            text(&pending["takes_effect"])
        );
    }
    for p in doc["problems"].as_array().into_iter().flatten() {
        println!("! {}", p.as_str().unwrap_or_default());
    }
    let columns: Vec<String> = [
        "NODE",
        "ROLE",
        "STATE",
        "EPOCH",
        "LAST LSN",
        "APPLIED",
        "LAG (records)",
        "LAG (s)",
        "LAST ACK",
        "LAG (bytes)",
        "SYNC",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = doc["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    let lag = &n["lag"];
                    vec![
                        text(&n["name"]),
                        text(&n["role"]),
                        text(&n["state"]),
                        text(&n["epoch"]),
                        text(&n["last_lsn"]),
                        text(&n["applied_lsn"]),
                        text(&lag["records"]),
                        text(&lag["seconds"]),
                        text(&lag["last_ack_age_s"]),
                        text(&lag["bytes"]),
                        text(&n["sync"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(&columns, &rows);
}
