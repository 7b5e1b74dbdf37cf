//! `spare sql`: reads go to --node (or the primary); anything that writes is sent to the
//! primary's /v1/execute. Which is which is SQLite's own judgement: the node refuses a
//! writing statement on /v1/query with `not_read_only`, and the command then executes it
//! through [`spare::client::Client`], which finds the primary by itself.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};
use spare::client::Client;
use spare::config::ClusterConfig;
use spare::error::Error;

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
    let mut body = json!({ "sql": sql, "params": params });
    if let Some(m) = min_lsn {
        body["min_lsn"] = json!(m);
    }
    let client = Client::from_config(&config);
    // Reads go to --node, else to the primary as it is now (it moves with promotions).
    let (read_name, read_http) = match node {
        Some(n) => (n.to_string(), config.node(n)?.http_advertise.clone()),
        None => ("the primary".to_string(), client.primary_http()?),
    };
    match client.query(&read_http, &body) {
        Ok(rows) => return print_rows(&rows, as_json),
        Err(Error::NotReadOnly) => {}
        Err(e) => return Err(anyhow::anyhow!("{read_name}: {e}")),
    }
    let reply = client.execute(&body)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let r = &reply["results"][0];
    println!(
        "OK: {} row(s) affected, last insert rowid {}, LSN {}",
        r["rows_affected"], r["last_insert_rowid"], reply["lsn"]
    );
    Ok(())
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
