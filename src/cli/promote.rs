//! `spare promote`, `spare switchover`, `spare rejoin` (DESIGN.md §7). The command asks a
//! coordinator (the first monitor that answers, else another node) to run the promotion, and
//! prints its report: the voters, each data node's position, what would be lost, why it
//! would be refused. Exit status is non-zero when the promotion was refused or failed (and
//! when a dry run finds it would be refused).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use spare::client;
use spare::config::{ClusterConfig, Role};

/// A promotion waits out the old lease and the new primary's start: give it time.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of `spare promote`.
pub struct PromoteArgs<'a> {
    pub candidate: &'a str,
    pub dry_run: bool,
    pub accept_loss: u64,
    pub force: bool,
    pub until: Option<u64>,
    pub json: bool,
}

/// `user@host`, for the audit log.
fn asked_by() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid(2) cannot fail.
        .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

/// Coordinators to try, in order: monitors, then spares other than the candidate, then the
/// others.
fn coordinators<'a>(
    config: &'a ClusterConfig,
    candidate: &str,
) -> Vec<&'a spare::config::NodeConfig> {
    let mut nodes: Vec<_> = config.nodes.iter().collect();
    nodes.sort_by_key(|n| match (n.role, n.name == candidate) {
        (Role::Monitor, _) => 0,
        (Role::Spare, false) => 1,
        (_, true) => 2,
        _ => 3,
    });
    nodes
}

/// Sends the request to the first coordinator that answers; returns (coordinator, status, body).
fn coordinate(
    config: &ClusterConfig,
    candidate: &str,
    route: &str,
    body: &Value,
) -> Result<(String, u16, Value)> {
    let mut unreachable = Vec::new();
    for n in coordinators(config, candidate) {
        match client::post(&n.http_advertise, route, body, PROMOTE_TIMEOUT) {
            Ok(r) => return Ok((n.name.clone(), r.status, r.body)),
            Err(_) => unreachable.push(n.name.clone()),
        }
    }
    bail!(
        "no node answers to coordinate the promotion (tried {}); start a monitor or a spare",
        unreachable.join(", ")
    )
}

pub fn promote(config_path: &Path, a: &PromoteArgs) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    check_candidate(&config, a.candidate)?;
    let body = json!({
        "candidate": a.candidate,
        "dry_run": a.dry_run,
        "accept_loss": a.accept_loss,
        "force": a.force,
        "until": a.until,
        "asked_by": asked_by(),
    });
    if !a.dry_run && !a.json {
        println!(
            "promoting {}: collecting promises, then waiting out the old primary's lease (up to {:?})...",
            a.candidate, config.cluster.lease
        );
    }
    let (by, status, report) = coordinate(&config, a.candidate, "/v1/admin/promote", &body)?;
    finish(&by, status, &report, a.json, a.dry_run)
}

pub fn switchover(config_path: &Path, candidate: &str, json_out: bool) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    check_candidate(&config, candidate)?;
    let body = json!({ "candidate": candidate, "asked_by": asked_by() });
    if !json_out {
        println!("switchover to {candidate}: stopping writes on the primary, waiting for {candidate} to hold every record, then promoting it...");
    }
    let (by, status, report) = coordinate(&config, candidate, "/v1/admin/switchover", &body)?;
    finish(&by, status, &report, json_out, false)
}

pub fn rejoin(config_path: &Path, node: &str, no_wait: bool) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let n = config.node(node)?;
    let r = client::post(
        &n.http_advertise,
        "/v1/admin/rejoin",
        &json!({}),
        client::REQUEST_TIMEOUT,
    )
    .map_err(|e| anyhow!("{e}"))?;
    if r.status != 200 {
        bail!("{}", r.body["message"].as_str().unwrap_or("rejoin refused"));
    }
    match r.body["note"].as_str() {
        Some(note) => println!("{node}: {note} (follows {})", r.body["following"]),
        None => println!(
            "{node} rejoins as a spare of {} (epoch {}); records the new history lacks go to {}/quarantine/",
            r.body["following"].as_str().unwrap_or("?"),
            r.body["epoch"],
            n.data_dir.display()
        ),
    }
    if no_wait {
        println!("follow it with `spare status`");
        return Ok(());
    }
    crate::cli::reload::wait_for_spares(&config, &[node])
}

fn check_candidate(config: &ClusterConfig, candidate: &str) -> Result<()> {
    let n = config.node(candidate)?;
    if n.role == Role::Monitor {
        bail!("{candidate} is a monitor: only a data node (a spare) can be promoted");
    }
    Ok(())
}

fn finish(by: &str, status: u16, report: &Value, json_out: bool, dry_run: bool) -> Result<()> {
    if status != 200 {
        bail!(
            "{} (coordinator {by})",
            report["message"].as_str().unwrap_or("the promotion failed")
        );
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_report(by, report);
    }
    let refusals: Vec<&str> = report["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if dry_run && !refusals.is_empty() {
        bail!(
            "dry run: the promotion would be refused: {}",
            refusals.join("; ")
        );
    }
    Ok(())
}

fn print_report(by: &str, r: &Value) {
    let dry = r["dry_run"] == true;
    println!(
        "{} {} to epoch {} (coordinator {by}){}",
        if r["switchover"] == true {
            "switchover to"
        } else {
            "promotion of"
        },
        r["candidate"].as_str().unwrap_or("?"),
        r["epoch"],
        if dry {
            ", dry run: nothing changed"
        } else {
            ""
        }
    );
    print_voters(r, dry);
    if let Some(o) = r["old_primary"].as_object() {
        println!(
            "  old primary: {} ({})",
            o["name"].as_str().unwrap_or("?"),
            if o["reachable"] == true {
                "answering"
            } else {
                "not answering"
            }
        );
    }
    print_nodes(r);
    print_loss(r);
    if let Some(u) = r["unknown"].as_str() {
        println!("  note: {u}");
    }
    for why in r["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        println!("  refused: {why}");
    }
    print_outcome(r, dry);
}

/// The strings of a JSON array, joined by ", " (anything else gives "").
fn list(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The voters and their quorum(s), then who is reachable (dry run) or who promised.
fn print_voters(r: &Value, dry: bool) {
    println!("  voters: {} (quorum {})", list(&r["voters"]), r["quorum"]);
    let required = r["required"].as_array().map_or(&[][..], |a| a.as_slice());
    if required.len() > 1 {
        // A membership change: the epoch replaced had other voters (or another lease).
        for m in required {
            println!(
                "  needs {} of: {} (lease {} ms)",
                m["quorum"],
                list(&m["voters"]),
                m["lease_ms"]
            );
        }
    }
    if dry {
        println!("  voters reachable: {}", list(&r["voters_reachable"]));
    } else {
        println!("  promised by: {}", list(&r["promised_by"]));
    }
}

/// The table of data nodes: role, state and last LSN ("-" when not answering).
fn print_nodes(r: &Value) {
    println!(
        "  {:<10} {:<8} {:<28} {:>10}",
        "NODE", "ROLE", "STATE", "LAST LSN"
    );
    for n in r["nodes"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} {:<8} {:<28} {:>10}",
            n["name"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("-"),
            n["state"].as_str().unwrap_or("-"),
            if n["reachable"] == true {
                n["last_lsn"].to_string()
            } else {
                "-".into()
            }
        );
    }
}

/// What the promotion loses: transactions only another node holds, or those after --until.
fn print_loss(r: &Value) {
    if let Some(u) = r["until"].as_u64() {
        println!("  history kept up to LSN {u}; what follows is discarded (kept in quarantine/)");
    }
    let loss = &r["loss"];
    match loss["transactions"].as_u64() {
        Some(0) | None => {
            println!("  loss: none (no reachable node holds a transaction the candidate lacks)")
        }
        Some(t) if r["until"].is_u64() => println!(
            "  discarded: {t} transaction(s) after LSN {}, {} bytes, newest committed {}",
            r["until"],
            loss["bytes"],
            crate::cli::utc(&loss["newest_commit_ms"]),
        ),
        Some(t) => println!(
            "  loss: {t} transaction(s), {} bytes, newest committed {}, held by {}",
            loss["bytes"],
            crate::cli::utc(&loss["newest_commit_ms"]),
            loss["ahead"].as_str().unwrap_or("?")
        ),
    }
}

/// The closing lines: the new primary and what becomes of the old one, or a dry run's verdict.
fn print_outcome(r: &Value, dry: bool) {
    if r["outcome"] == "committed" {
        println!(
            "{} is the primary of epoch {}; it accepts writes (took {} ms, of which {} ms waiting out the old lease).",
            r["candidate"].as_str().unwrap_or("?"),
            r["epoch"],
            r["took_ms"],
            r["fence_ms"]
        );
        if r["switchover"] == true {
            println!(
                "the old primary rejoined as a spare: {}",
                r["old_primary_rejoined"]
            );
        } else if let Some(o) = r["old_primary"]["name"].as_str() {
            println!("when {o} comes back it is fenced (read-only); then run `spare rejoin {o}` to make it a spare.");
        }
    } else if dry {
        println!("outcome: {}", r["outcome"].as_str().unwrap_or("?"));
    }
}
