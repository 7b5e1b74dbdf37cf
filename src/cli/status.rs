//! `spare status`: asks every node for its status (in parallel, bounded by the client's
//! timeouts) and prints the cluster document as a table or JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use spare::client;
use spare::config::{ClusterConfig, Role};
use spare::status::{NodeStatus, Unread};
use spare::view::{cluster_document, ClusterView};

use crate::cli::sql::print_table;

/// How long `spare status` waits for each node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Refresh period of `--watch`.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster document: from the first monitor that answers (the same as its
/// `GET /v1/cluster`), else built here from the data nodes and marked partial.
pub fn collect(config: &ClusterConfig) -> ClusterView {
    let mut unread = Vec::new();
    for m in config.nodes.iter().filter(|n| n.role == Role::Monitor) {
        if let Ok(r) = client::get(&m.http_advertise, "/v1/cluster", STATUS_TIMEOUT) {
            if r.status == 200 {
                match serde_json::from_value(r.body) {
                    Ok(view) => return view,
                    Err(e) => unread.push(format!("monitor {} answered a cluster document this version cannot read ({e}): this view comes from the data nodes alone", m.name)),
                }
            }
        }
    }
    let mut statuses: Vec<(String, std::result::Result<NodeStatus, Unread>)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = config
                .nodes
                .iter()
                .filter(|n| n.role != Role::Monitor)
                .map(|n| {
                    s.spawn(move || {
                        let status = client::status_reply(&n.http_advertise, STATUS_TIMEOUT);
                        (n.name.clone(), status)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("status thread"))
                .collect()
        });
    for m in config.nodes.iter().filter(|n| n.role == Role::Monitor) {
        statuses.push((m.name.clone(), Err(Unread::Silent("did not answer".into()))));
    }
    let mut doc = cluster_document(config, &statuses);
    let has_monitors = config.nodes.iter().any(|n| n.role == Role::Monitor);
    doc.source = Some("data nodes".into());
    if has_monitors {
        doc.partial = true;
        if unread.is_empty() {
            unread.push("no monitor answered: this view comes from the data nodes alone (no lag alerts, no history)".into());
        }
        doc.problems = Some(unread);
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
            println!("{}", serde_json::to_string_pretty(&doc.to_json())?);
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
pub fn exit_code(doc: &ClusterView) -> i32 {
    if doc.primary.is_none() {
        return 2;
    }
    i32::from(doc.problems.as_ref().is_some_and(|p| !p.is_empty()))
}

/// A cell of the table: "-" when unknown.
fn text<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Seconds, as the table shows them.
fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |f| format!("{f:.1}s"))
}

fn millis(v: Option<u64>) -> String {
    v.map_or_else(
        || "?".into(),
        |ms| format!("{:?}", std::time::Duration::from_millis(ms)),
    )
}

fn print_human(doc: &ClusterView) {
    println!(
        "cluster {}  epoch {}  primary {}",
        doc.cluster,
        text(doc.epoch),
        text(doc.primary.as_deref())
    );
    if let Some(source) = &doc.source {
        println!("(from {source})");
    }
    if doc.partial {
        println!("partial view: some nodes did not answer");
    }
    if let Some(voters) = &doc.voters {
        println!(
            "voters {} (lease {})",
            voters.join(", "),
            millis(doc.lease_ms)
        );
    }
    if let Some(pending) = &doc.pending_membership {
        println!(
            "membership change pending: voters {} (lease {}) take effect {}",
            pending.voters.join(", "),
            millis(Some(pending.lease_ms)),
            pending.takes_effect
        );
    }
    for p in doc.problems.iter().flatten() {
        println!("! {p}");
    }
    print_nodes(doc);
}

/// The table of nodes.
fn print_nodes(doc: &ClusterView) {
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
    let rows: Vec<Vec<String>> = doc
        .nodes
        .iter()
        .map(|n| {
            let a = n.answered();
            let lag = a.and_then(|a| a.lag);
            vec![
                n.name().to_string(),
                n.role().as_str().to_string(),
                n.state().to_string(),
                text(a.and_then(|a| a.epoch)),
                text(a.and_then(|a| a.last_lsn)),
                text(a.and_then(|a| a.applied_lsn)),
                text(lag.and_then(|l| l.records)),
                secs(lag.and_then(|l| l.seconds)),
                secs(lag.and_then(|l| l.last_ack_age_s)),
                text(lag.and_then(|l| l.bytes)),
                text(a.and_then(|a| a.sync.clone().flatten())),
            ]
        })
        .collect();
    print_table(&columns, &rows);
}
