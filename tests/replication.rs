//! End-to-end replication on real processes: what the primary commits arrives identical on
//! every spare, failures commit nothing, and spares refuse writes.

mod common;

use common::{dump, Cluster};
use serde_json::json;

#[test]
fn rows_schema_triggers_nondeterministic_values_and_counters_arrive_identical_on_two_spares() {
    let mut c = Cluster::new(2, false);
    c.start_all();
    c.exec("CREATE TABLE customer (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, token BLOB, created TEXT DEFAULT (datetime('now', 'subsec')))", json!([]));
    c.exec(
        "CREATE TABLE audit (n INTEGER PRIMARY KEY, what TEXT NOT NULL)",
        json!([]),
    );
    c.exec("CREATE TRIGGER customer_audit AFTER INSERT ON customer BEGIN INSERT INTO audit (what) VALUES ('new ' || new.name || ' ' || random()); END", json!([]));
    c.exec("CREATE TABLE note (body TEXT)", json!([]));
    for i in 0..20 {
        c.exec(
            "INSERT INTO customer (name, token) VALUES (?, randomblob(16))",
            json!([format!("c{i}")]),
        );
    }
    c.exec(
        "INSERT INTO note VALUES (?), (?)",
        json!(["rowid table", { "base64": "AAEC" }]),
    );
    c.exec(
        "UPDATE customer SET name = name || '!' WHERE id % 3 = 0",
        json!([]),
    );
    c.exec(
        "ALTER TABLE customer ADD COLUMN score REAL DEFAULT 1.5",
        json!([]),
    );
    // Deleting the newest rows must not let a spare hand out their ids again later.
    let last = c.exec("DELETE FROM customer WHERE id > 17", json!([]));
    let primary = dump(&c, "main", last);
    assert!(
        primary
            .iter()
            .any(|(t, rows)| t == "customer" && rows.len() == 17),
        "{primary:?}"
    );
    for spare in ["lan-1", "lan-2"] {
        assert_eq!(
            dump(&c, spare, last),
            primary,
            "{spare} differs from the primary"
        );
        let seq = c.rows(
            spare,
            "SELECT seq FROM sqlite_sequence WHERE name = 'customer'",
            last,
        );
        assert_eq!(seq, vec![json!([20])], "{spare}'s AUTOINCREMENT counter");
    }
}

#[test]
fn failing_statement_in_a_batch_commits_nothing_and_answers_the_sqlite_error() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        json!([]),
    );
    let commits = c.status("main")["commits_total"].clone();
    let r = c.execute_on(
        "main",
        json!({ "batch": [
            { "sql": "INSERT INTO t VALUES (1, 'a')" },
            { "sql": "INSERT INTO t VALUES (2, NULL)" },
        ]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"], "sql_error");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("NOT NULL constraint failed: t.v"),
        "{}",
        r.body
    );
    assert_eq!(
        c.status("main")["commits_total"],
        commits,
        "nothing was logged"
    );
    assert!(c.rows("main", "SELECT * FROM t", 0).is_empty());
    // The next write goes through and is the next LSN: nothing was half-written.
    let next = c.exec("INSERT INTO t VALUES (3, 'c')", json!([]));
    assert!(next > lsn);
    assert_eq!(
        c.status("main")["commits_total"].as_u64().unwrap(),
        commits.as_u64().unwrap() + 1
    );
    assert_eq!(c.rows("lan-1", "SELECT id FROM t", next), vec![json!([3])]);
}

#[test]
fn bad_sql_answers_the_sqlite_error_and_logs_nothing() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let before = c.status("main")["commits_total"].as_u64().unwrap();
    for (sql, needle) in [
        ("INSERT INTO missing VALUES (1)", "no such table: missing"),
        ("SELEKT 1", "syntax error"),
        ("CREATE TABLE k (code TEXT PRIMARY KEY)", "NOT NULL"),
    ] {
        let r = c.execute_on("main", json!({ "sql": sql }));
        assert_eq!(r.status, 400, "{sql}: {}", r.body);
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{sql}: {}",
            r.body
        );
    }
    assert_eq!(c.status("main")["commits_total"].as_u64().unwrap(), before);
    let r = c.execute_on(
        "main",
        json!({ "sql": "INSERT INTO t VALUES (?)", "params": [[1, 2]] }),
    );
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_request")),
        "{}",
        r.body
    );
    let r = client_raw(&c.http("main"), "{not json");
    assert_eq!(r.0, 400, "{}", r.1);
    assert_eq!(c.status("main")["commits_total"].as_u64().unwrap(), before);
}

fn client_raw(http: &str, body: &str) -> (u16, String) {
    match ureq::post(&format!("http://{http}/v1/execute"))
        .set("content-type", "application/json")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn writes_sent_to_a_spare_are_refused_naming_the_primary() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    let r = c.execute_on("lan-1", json!({ "sql": "INSERT INTO t VALUES (1)" }));
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(r.body["error"], "not_primary");
    assert_eq!(r.body["primary"]["name"], "main");
    assert_eq!(r.body["primary"]["http"], c.http("main"));
    // A query that writes is refused on /v1/query too, and nothing changed on the spare.
    let q = spare::client::post(
        &c.http("lan-1"),
        "/v1/query",
        &json!({ "sql": "DELETE FROM t", "min_lsn": lsn }),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        (q.status, q.body["error"].as_str()),
        (400, Some("not_read_only")),
        "{}",
        q.body
    );
    assert!(c.rows("lan-1", "SELECT * FROM t", lsn).is_empty());
}

#[test]
fn query_with_min_lsn_waits_boundedly_for_the_spare() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    let lsn = lsn.max(c.exec("INSERT INTO t VALUES (1)", json!([])));
    assert_eq!(c.rows("lan-1", "SELECT id FROM t", lsn), vec![json!([1])]);
    let r = spare::client::post(
        &c.http("lan-1"),
        "/v1/query",
        &json!({ "sql": "SELECT 1", "min_lsn": lsn + 1000 }),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("not yet {}", lsn + 1000)),
        "{}",
        r.body
    );
}

#[test]
fn api_errors_are_json_with_a_fitting_status() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let http = c.http("main");
    let big = format!("{{\"sql\": \"{}\"}}", "x".repeat(17 * 1024 * 1024));
    let answer = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => (r.status(), r.into_json::<serde_json::Value>().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json::<serde_json::Value>().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let (status, body) = answer(ureq::post(&format!("http://{http}/v1/execute")).send_string(&big));
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    let (status, body) = answer(ureq::get(&format!("http://{http}/v1/execute")).call());
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    let (status, body) = answer(ureq::get(&format!("http://{http}/v1/nothing")).call());
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(c.is_running("main"));
}
