//! `spare status`: asks every node for its status (in parallel, bounded by the client's
//! timeouts) and prints the cluster document as a table or JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use spare::client;
use spare::config::ClusterConfig;
use spare::view::cluster_document;

use crate::cli::sql::print_table;

/// How long `spare status` waits for each node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Refresh period of `--watch`.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Fetches every node's status and builds the cluster document.
pub fn collect(config: &ClusterConfig) -> Value {
    let statuses: Vec<(String, Result<Value, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = config
            .nodes
            .iter()
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
    cluster_document(config, &statuses)
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
            return Ok(());
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
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

fn print_human(doc: &Value) {
    println!(
        "cluster {}  epoch {}  primary {}",
        text(&doc["cluster"]),
        text(&doc["epoch"]),
        text(&doc["primary"])
    );
    if doc["partial"] == true {
        println!("(partial view: some nodes did not answer)");
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
                        text(&n["sync"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(&columns, &rows);
}
