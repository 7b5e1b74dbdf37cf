//! Helpers of the tests that drive the public API as a client would, with the API token:
//! raw requests, clear-error assertions, and the whole-database comparison of every node.

use serde_json::{json, Value};
use spare::client;

use super::{Cluster, TIMEOUT};

pub const TOKEN: &str = "hostile-token-0123456789abcdef";
pub const NODES: [&str; 3] = ["main", "lan-1", "lan-2"];

/// A primary and two spares with the API token and short limits, and the fixtures the
/// cases use: a parent whose 20 children cascade, a plain table, the canary.
pub fn cluster() -> Cluster {
    cluster_with(&[
        "write_time_limit = \"1s\"",
        "read_time_limit = \"1s\"",
        "max_result_bytes = \"1MiB\"",
    ])
}

/// The same cluster with `limits` (lines of `[cluster]`) instead of the short ones.
pub fn cluster_with(limits: &[&str]) -> Cluster {
    client::set_token(Some(TOKEN.into()));
    let mut c = Cluster::new(2, false);
    super::write_secret(&c.dir.path().join("api.token"), &format!("{TOKEN}\n"));
    c.cluster_option("api_token_file = \"api.token\"");
    for line in limits {
        c.cluster_option(line);
    }
    c.start_all();
    for sql in [
        "CREATE TABLE canary (n INTEGER PRIMARY KEY, what TEXT NOT NULL)",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) ON DELETE CASCADE)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO parent VALUES (1, 'one'), (2, 'two')",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) INSERT INTO child SELECT x, 1 + x % 2 FROM c",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    ] {
        c.exec(sql, json!([]));
    }
    c
}

/// POSTs raw bytes with the token; (status, JSON body).
pub fn send(c: &Cluster, node: &str, path: &str, body: &[u8]) -> (u16, Value) {
    send_with(&ureq::agent(), c, node, path, body)
}

/// Like [`send`], on a caller's agent (a load loop keeps its connections).
pub fn send_with(
    agent: &ureq::Agent,
    c: &Cluster,
    node: &str,
    path: &str,
    body: &[u8],
) -> (u16, Value) {
    let url = format!("http://{}{path}", c.http(node));
    let answer = agent
        .post(&url)
        .timeout(TIMEOUT)
        .set("content-type", "application/json")
        .set("authorization", &format!("Bearer {TOKEN}"))
        .send_bytes(body);
    let resp = match answer {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{node} {path}: no answer: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, body)
}

pub fn post(c: &Cluster, node: &str, path: &str, body: Value) -> (u16, Value) {
    send(c, node, path, body.to_string().as_bytes())
}

pub fn execute(c: &Cluster, sql: &str) -> (u16, Value) {
    post(c, "main", "/v1/execute", json!({ "sql": sql }))
}

pub fn query(c: &Cluster, node: &str, sql: &str) -> (u16, Value) {
    post(c, node, "/v1/query", json!({ "sql": sql }))
}

/// Asserts a JSON error with `status`, `code`, and a message containing `says`.
#[track_caller]
pub fn refused(answer: (u16, Value), status: u16, code: &str, says: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "message should say {says:?}: {body}"
    );
}

#[track_caller]
pub fn ok(answer: (u16, Value)) -> Value {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1
}

/// Every table of `node`, each read whole with `SELECT * ... ORDER BY` every column, plus
/// the schema itself.
pub fn dump(c: &Cluster, node: &str, min_lsn: u64) -> Vec<(String, Vec<Value>)> {
    let schema = "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE '\\_spare%' ESCAPE '\\' ORDER BY 1, 2";
    let mut out = vec![("sqlite_schema".to_string(), c.rows(node, schema, min_lsn))];
    let tables = c.rows(node, "SELECT name, (SELECT count(*) FROM pragma_table_info(name)) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_spare%' ESCAPE '\\' ORDER BY name", min_lsn);
    for t in tables {
        let name = t[0].as_str().unwrap().to_string();
        let order: Vec<String> = (1..=t[1].as_u64().unwrap().max(1))
            .map(|i| i.to_string())
            .collect();
        let sql = format!("SELECT * FROM \"{name}\" ORDER BY {}", order.join(", "));
        out.push((name, c.rows(node, &sql, min_lsn)));
    }
    out
}

/// The promise after every case: the primary takes a write, and all three copies are equal.
pub fn still_whole(c: &Cluster, case: &str) {
    let (status, body) = post(
        c,
        "main",
        "/v1/execute",
        json!({ "sql": "INSERT INTO canary (what) VALUES (?)", "params": [case] }),
    );
    assert_eq!(
        status, 200,
        "after {case}: the primary refuses writes: {body}"
    );
    let lsn = body["lsn"].as_u64().unwrap();
    let primary = dump(c, "main", lsn);
    for spare in &NODES[1..] {
        // Waits up to the harness's TIMEOUT, not the API's bounded `min_lsn` wait: a loaded
        // machine may take longer to apply a large record.
        c.wait_applied(spare, lsn);
        assert_eq!(
            dump(c, spare, lsn),
            primary,
            "after {case}: {spare} differs from the primary"
        );
    }
}

/// A named case: what it does to the cluster, and what it checks of the answers.
pub type Case = (&'static str, fn(&Cluster));

pub fn run_cases(c: &Cluster, cases: &[Case]) {
    assert!(!cases.is_empty());
    for (name, case) in cases {
        case(c);
        still_whole(c, name);
    }
}
