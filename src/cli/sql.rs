//! `spare sql`: reads go to --node (or the primary); anything that writes is sent to the
//! primary's /v1/execute. Which is which is SQLite's own judgement: the node refuses a
//! writing statement on /v1/query with `not_read_only`, and the command then executes it.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use spare::client::{self, Reply, REQUEST_TIMEOUT};
use spare::config::ClusterConfig;

/// How many 421 redirects a write follows before giving up (a promotion in progress).
const MAX_REDIRECTS: usize = 3;

fn param(s: &str) -> Value {
    match serde_json::from_str::<Value>(s) {
        Ok(
            v @ (Value::Number(_)
            | Value::Null
            | Value::Bool(_)
            | Value::String(_)
            | Value::Object(_)),
        ) => v,
        _ => Value::String(s.to_string()),
    }
}

pub fn run(
    config_path: &Path,
    node: Option<&str>,
    as_json: bool,
    min_lsn: Option<u64>,
    sql: &str,
    params: &[String],
) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let params: Vec<Value> = params.iter().map(|p| param(p)).collect();
    let read_node = match node {
        Some(n) => config.node(n)?,
        None => config.primary(),
    };
    let mut body = json!({ "sql": sql, "params": params });
    if let Some(m) = min_lsn {
        body["min_lsn"] = json!(m);
    }
    let reply = client::post(
        &read_node.http_advertise,
        "/v1/query",
        &body,
        REQUEST_TIMEOUT,
    )?;
    if reply.status == 200 {
        return print_rows(&reply.body, as_json);
    }
    if reply.body["error"] != "not_read_only" {
        fail(&read_node.name, &reply)?;
    }
    let reply = execute(&config.primary().http_advertise, &body)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
        return Ok(());
    }
    let r = &reply.body["results"][0];
    println!(
        "OK: {} row(s) affected, last insert rowid {}, LSN {}",
        r["rows_affected"], r["last_insert_rowid"], reply.body["lsn"]
    );
    Ok(())
}

/// Sends a write to `http`, following "not the primary" answers to the node they name.
fn execute(http: &str, body: &Value) -> Result<Reply> {
    let mut target = http.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let reply = client::post(&target, "/v1/execute", body, REQUEST_TIMEOUT)?;
        if reply.status == 421 {
            if let Some(next) = reply.body["primary"]["http"]
                .as_str()
                .filter(|h| *h != target)
            {
                target = next.to_string();
                continue;
            }
        }
        if reply.status != 200 {
            fail(&target, &reply)?;
        }
        return Ok(reply);
    }
    bail!("the primary could not be found after {MAX_REDIRECTS} redirects; check `spare status`")
}

fn fail(node: &str, reply: &Reply) -> Result<()> {
    let msg = reply.body["message"].as_str().unwrap_or("no message");
    bail!(
        "{node}: {} ({})",
        msg,
        reply.body["error"].as_str().unwrap_or("error")
    )
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("base64") => {
            format!("<blob {}>", o["base64"].as_str().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

fn print_rows(body: &Value, as_json: bool) -> Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(body)?);
        return Ok(());
    }
    let columns: Vec<String> = body["columns"]
        .as_array()
        .map(|c| c.iter().map(cell).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = body["rows"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    r.as_array()
                        .map(|c| c.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(&columns, &rows);
    println!(
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Prints rows under their column names, each column as wide as its widest cell.
pub fn print_table(columns: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(columns));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in rows {
        println!("{}", line(row));
    }
}
