//! `spare verify` (DESIGN.md §9): compares every data node's database with the primary's at
//! one LSN, under live writes. Each spare first stops applying where it stands (spares are
//! never ahead of the primary); the primary opens a read snapshot at its current LSN; each
//! spare applies up to exactly that LSN, opens one there, and applies on (`http::verify`); then the per-table digests are compared, and for a table that differs,
//! the row hashes by key say which rows. Blocking (HTTP); used by the command line and by
//! monitors (`verify_every`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{self, Client};
use crate::config::{ClusterConfig, Role};
use crate::error::{Error, Result};
use crate::store::verify::{row_differences, RowHash, TableDigest};

/// Rounds tried when a spare passed the primary's LSN before it could stop there.
const ROUNDS: usize = 3;
/// Row differences listed per table.
const ROWS_LISTED: usize = 20;
/// Longest one node may take to open its snapshot, or to hash a whole table.
const NODE_TIMEOUT: Duration = Duration::from_secs(600);

/// What one table looks like on a node against the primary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableVerdict {
    pub table: String,
    /// `identical`, `differs`, `missing` (on this node), `extra` (only on this node).
    pub status: String,
    pub rows_primary: Option<u64>,
    pub rows_here: Option<u64>,
    /// For a table that differs: which rows (by key), the first few.
    pub rows: Vec<String>,
}

/// One node's verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeVerdict {
    pub node: String,
    /// `identical`, `differs`, `skipped`.
    pub status: String,
    pub lsn: Option<u64>,
    /// Why it was skipped.
    pub why: Option<String>,
    pub tables: Vec<TableVerdict>,
}

/// The whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub primary: String,
    pub lsn: u64,
    pub nodes: Vec<NodeVerdict>,
    /// `identical` (every node compared, all equal), `differs`, `incomplete` (no
    /// difference, but some node could not be compared).
    pub verdict: String,
}

impl Report {
    /// The exit status that says the verdict: 0 identical, 1 differs, 2 incomplete.
    pub fn exit_code(&self) -> i32 {
        match self.verdict.as_str() {
            "identical" => 0,
            "differs" => 1,
            _ => 2,
        }
    }
}

/// An open snapshot on a node.
struct Open {
    name: String,
    http: String,
    id: String,
    lsn: u64,
}

impl Open {
    fn close(&self) {
        let path = format!("/v1/admin/verify/close?id={}", self.id);
        let _ = client::post(&self.http, &path, &json!({}), client::REQUEST_TIMEOUT);
    }

    fn digests(&self) -> Result<Vec<TableDigest>> {
        let path = format!("/v1/admin/verify/digest?id={}", self.id);
        let body = ok(&self.name, client::get(&self.http, &path, NODE_TIMEOUT)?)?;
        serde_json::from_value(body["tables"].clone())
            .map_err(|e| Error::InvalidData(format!("{}'s digests: {e}", self.name)))
    }

    fn rows(&self, table: &str) -> Result<(Vec<RowHash>, bool)> {
        let path = format!(
            "/v1/admin/verify/rows?id={}&table={}",
            self.id,
            urlencode(table)
        );
        let body = ok(&self.name, client::get(&self.http, &path, NODE_TIMEOUT)?)?;
        let rows = serde_json::from_value(body["rows"].clone())
            .map_err(|e| Error::InvalidData(format!("{}'s rows: {e}", self.name)))?;
        Ok((rows, body["complete"] == true))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ok(name: &str, r: client::Reply) -> Result<Value> {
    if r.status == 200 {
        return Ok(r.body);
    }
    let msg = r.body["message"].as_str().unwrap_or("no message");
    Err(Error::Unavailable(format!("{name}: {msg}")))
}

fn open(name: &str, http: &str, lsn: Option<u64>) -> Result<Open> {
    let body = match lsn {
        Some(l) => json!({ "lsn": l }),
        None => json!({}),
    };
    let r = client::post(http, "/v1/admin/verify/open", &body, NODE_TIMEOUT)?;
    let b = ok(name, r)?;
    Ok(Open {
        name: name.to_string(),
        http: http.to_string(),
        id: b["id"].as_str().unwrap_or_default().to_string(),
        lsn: b["lsn"].as_u64().unwrap_or(0),
    })
}

/// Runs a verification of every data node of `config` against the primary.
pub fn run(config: &ClusterConfig) -> Result<Report> {
    let primary_http = Client::from_config(config).primary_http()?;
    let primary = config
        .nodes
        .iter()
        .find(|n| n.http_advertise == primary_http)
        .map_or_else(|| primary_http.clone(), |n| n.name.clone());
    let spares: Vec<(String, String)> = config
        .nodes
        .iter()
        .filter(|n| n.role != Role::Monitor && n.name != primary)
        .map(|n| (n.name.clone(), n.http_advertise.clone()))
        .collect();
    // Nodes that kept running past the compared LSN, round after round, are skipped.
    let mut moving: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let last = round + 1 == ROUNDS;
        for (name, http) in &spares {
            // One that cannot be held is found again (and skipped) when it is opened.
            if let Err(e) = client::post(http, "/v1/admin/verify/hold", &json!({}), NODE_TIMEOUT) {
                tracing::debug!(node = %name, cause = %e, "verify could not hold a spare");
            }
        }
        let p = open(&primary, &primary_http, None);
        let mut opened = Vec::new();
        let mut skipped = Vec::new();
        let mut retry = false;
        if let Ok(p) = &p {
            for (name, http) in &spares {
                match open(name, http, Some(p.lsn)) {
                    Ok(o) => opened.push(o),
                    Err(e) if e.to_string().contains(crate::store::verify::PAST) && !last => {
                        moving.insert(name.clone(), e.to_string());
                        retry = true;
                        break;
                    }
                    Err(e) => skipped.push(skip(name, e.to_string())),
                }
            }
        }
        release(&spares);
        let report = match (&p, retry) {
            (Ok(p), false) => Some(compare(p, &opened, skipped)),
            _ => None,
        };
        for o in opened.iter().chain(p.as_ref().ok()) {
            o.close();
        }
        match (p, report) {
            (Err(e), _) => return Err(e),
            (Ok(_), Some(r)) => return r,
            (Ok(_), None) => continue,
        }
    }
    Err(Error::Unavailable(format!(
        "no LSN could be held on every spare: {}",
        moving.into_values().collect::<Vec<_>>().join("; ")
    )))
}

/// Lifts every spare's hold (the end of a round, whatever happened in it).
fn release(spares: &[(String, String)]) {
    for (_, http) in spares {
        let _ = client::post(
            http,
            "/v1/admin/verify/release",
            &json!({}),
            client::REQUEST_TIMEOUT,
        );
    }
}

fn skip(node: &str, why: String) -> NodeVerdict {
    NodeVerdict {
        node: node.to_string(),
        status: "skipped".into(),
        lsn: None,
        why: Some(why),
        tables: Vec::new(),
    }
}

fn compare(p: &Open, opened: &[Open], mut nodes: Vec<NodeVerdict>) -> Result<Report> {
    let theirs: BTreeMap<String, TableDigest> = p
        .digests()?
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    let mut primary_rows: BTreeMap<String, (Vec<RowHash>, bool)> = BTreeMap::new();
    for o in opened {
        let mine: BTreeMap<String, TableDigest> = match o.digests() {
            Ok(d) => d.into_iter().map(|d| (d.name.clone(), d)).collect(),
            Err(e) => {
                nodes.push(skip(&o.name, e.to_string()));
                continue;
            }
        };
        let mut tables = Vec::new();
        let names: std::collections::BTreeSet<&String> = theirs.keys().chain(mine.keys()).collect();
        for name in names {
            let (a, b) = (theirs.get(name), mine.get(name));
            let status = match (a, b) {
                (Some(x), Some(y)) if x.digest == y.digest => "identical",
                (Some(_), Some(_)) => "differs",
                (Some(_), None) => "missing",
                (None, _) => "extra",
            };
            let mut rows = Vec::new();
            if status == "differs" && name != crate::store::verify::SCHEMA_TABLE {
                if !primary_rows.contains_key(name) {
                    primary_rows.insert(name.clone(), p.rows(name)?);
                }
                let (theirs_rows, theirs_complete) = &primary_rows[name];
                let (here, complete) = o.rows(name)?;
                if complete && *theirs_complete {
                    rows = row_differences(theirs_rows, &here, ROWS_LISTED);
                } else {
                    // Past the listed rows, a key may be missing from one list only because
                    // it was cut: name only the rows that differ in both lists.
                    rows = row_differences(theirs_rows, &here, usize::MAX)
                        .into_iter()
                        .filter(|r| r.ends_with("values differ"))
                        .take(ROWS_LISTED)
                        .collect();
                    rows.push(
                        "(more rows than can be listed: the rest compared only by digest)".into(),
                    );
                }
            }
            tables.push(TableVerdict {
                table: name.clone(),
                status: status.into(),
                rows_primary: a.map(|d| d.rows),
                rows_here: b.map(|d| d.rows),
                rows,
            });
        }
        let differs = tables.iter().any(|t| t.status != "identical");
        nodes.push(NodeVerdict {
            node: o.name.clone(),
            status: if differs { "differs" } else { "identical" }.into(),
            lsn: Some(o.lsn),
            why: None,
            tables,
        });
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let verdict = if nodes.iter().any(|n| n.status == "differs") {
        "differs"
    } else if nodes.iter().any(|n| n.status == "skipped") {
        "incomplete"
    } else {
        "identical"
    };
    Ok(Report {
        primary: p.name.clone(),
        lsn: p.lsn,
        nodes,
        verdict: verdict.into(),
    })
}
