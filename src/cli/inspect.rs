//! `spare pause NAME`, `spare resume NAME` and `spare log` (DESIGN.md §9).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use spare::client::{self, Client, REQUEST_TIMEOUT};
use spare::config::ClusterConfig;

/// `spare pause NAME` / `spare resume NAME`.
pub fn pause(config_path: &Path, node: &str, paused: bool) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let http = &config.node(node)?.http_advertise;
    let route = if paused {
        "/v1/admin/pause"
    } else {
        "/v1/admin/resume"
    };
    let r = client::post(http, route, &json!({}), REQUEST_TIMEOUT).map_err(|e| anyhow!("{e}"))?;
    if r.status != 200 {
        bail!("{}", r.body["message"].as_str().unwrap_or("refused"));
    }
    let (applied, received) = (&r.body["applied_lsn"], &r.body["received_lsn"]);
    if paused {
        println!("{node} paused at LSN {applied}: it keeps receiving (at {received}) and applies nothing until `spare resume {node}`");
    } else {
        println!("{node} resumed at LSN {applied}; it applies what it received (up to {received}), subject to its apply_delay");
    }
    Ok(())
}

/// Options of `spare log`.
pub struct LogArgs<'a> {
    pub node: Option<&'a str>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub since: Option<&'a str>,
    pub table: Option<&'a str>,
    pub json: bool,
    pub show: Option<u64>,
}

/// `--since`: an RFC 3339 time, or a duration ago ("10m").
fn since_ms(s: &str) -> Result<u64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t.duration_since(UNIX_EPOCH)?.as_millis() as u64);
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        anyhow!("--since {s}: expected a time (2026-11-26T18:40:00Z) or a duration ago (10m, 2h)")
    })?;
    Ok((SystemTime::now() - ago)
        .duration_since(UNIX_EPOCH)?
        .as_millis() as u64)
}

use crate::cli::utc as time;

pub fn log(config_path: &Path, a: &LogArgs) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let http = match a.node {
        Some(n) => config.node(n)?.http_advertise.clone(),
        None => Client::from_config(&config).primary_http()?,
    };
    if let Some(lsn) = a.show {
        let r = client::get(&http, &format!("/v1/log/show?lsn={lsn}"), REQUEST_TIMEOUT)?;
        if r.status != 200 {
            bail!("{}", r.body["message"].as_str().unwrap_or("refused"));
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r.body)?);
        } else {
            print_show(&r.body);
        }
        return Ok(());
    }
    let mut query = Vec::new();
    if let Some(f) = a.from {
        query.push(format!("from={f}"));
    }
    if let Some(t) = a.to {
        query.push(format!("to={t}"));
    }
    if let Some(s) = a.since {
        query.push(format!("since_ms={}", since_ms(s)?));
    }
    if let Some(t) = a.table {
        query.push(format!(
            "table={}",
            t.replace(['&', '=', ' ', '#', '?'], "")
        ));
    }
    let r = client::get(
        &http,
        &format!("/v1/log?{}", query.join("&")),
        REQUEST_TIMEOUT,
    )?;
    if r.status != 200 {
        bail!("{}", r.body["message"].as_str().unwrap_or("refused"));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r.body)?);
        return Ok(());
    }
    println!(
        "{:>8}  {:>5}  {:<20}  CHANGES",
        "LSN", "EPOCH", "TIME (UTC)"
    );
    for rec in r.body["records"].as_array().into_iter().flatten() {
        println!(
            "{:>8}  {:>5}  {:<20}  {}",
            rec["lsn"].to_string(),
            rec["epoch"].to_string(),
            time(&rec["time_ms"]),
            changes(rec)
        );
    }
    if r.body["truncated"] == true {
        println!("(more records than shown: narrow with --from/--to/--since/--table)");
    }
    println!(
        "log of this node: LSN {}..={}; `spare log --show LSN` shows one transaction's rows",
        r.body["oldest_lsn"], r.body["last_lsn"]
    );
    Ok(())
}

/// "invoice: 1 inserted; customer: 120 deleted; DDL: CREATE TABLE ...".
fn changes(rec: &Value) -> String {
    if rec["kind"] == "Epoch" {
        return format!(
            "epoch {} begins, primary {}",
            rec["epoch"],
            rec["primary"].as_str().unwrap_or("?")
        );
    }
    let mut parts: Vec<String> = rec["ddl"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|d| format!("DDL: {d}"))
        .collect();
    for (t, c) in rec["tables"].as_object().into_iter().flatten() {
        let mut what = Vec::new();
        for (k, label) in [
            ("inserted", "inserted"),
            ("updated", "updated"),
            ("deleted", "deleted"),
        ] {
            if let Some(n) = c[k].as_u64().filter(|&n| n > 0) {
                what.push(format!("{n} {label}"));
            }
        }
        parts.push(format!("{t}: {}", what.join(", ")));
    }
    parts.join("; ")
}

fn value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

fn print_show(v: &Value) {
    println!(
        "LSN {}, epoch {}, committed {}",
        v["lsn"],
        v["epoch"],
        time(&v["time_ms"])
    );
    for d in v["ddl"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        println!("  {d}");
    }
    for c in v["changes"].as_array().into_iter().flatten() {
        let table = c["table"].as_str().unwrap_or("?");
        let names: Vec<String> = v["columns"][table]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| n.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let name = |i: usize| {
            names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column {}", i + 1))
        };
        let row = |vals: &Value| -> String {
            vals.as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(i, v)| format!("{}={}", name(i), value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match c["op"].as_str() {
            Some("insert") => println!("  insert into {table}: {}", row(&c["new"])),
            Some("delete") => println!("  delete from {table}: {}", row(&c["old"])),
            _ => println!(
                "  update {table}: {}  ->  {}",
                row(&c["old"]),
                row(&c["new"])
            ),
        }
    }
}
