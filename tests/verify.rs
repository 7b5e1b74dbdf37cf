//! `spare verify` on real processes: every data node compared with the primary at one LSN
//! while writes go on; a copy changed behind its node's back (one row, same row count) is
//! found, by table and key; identical copies are reported identical; a paused spare not at
//! the compared LSN is skipped, saying why. The exit status is the verdict.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{wait_until, Cluster};
use serde_json::{json, Value};

fn verify(c: &Cluster) -> (Option<i32>, Value) {
    let out = c.cli(&["verify", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

fn node<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc}"))
}

#[test]
fn verify_finds_a_row_changed_behind_a_spares_back_under_load_and_passes_identical_copies() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    c.exec(
        "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        json!([]),
    );
    c.exec(
        "CREATE TABLE event (id INTEGER PRIMARY KEY, at INTEGER)",
        json!([]),
    );
    // A TEXT key: INSERT OR REPLACE gives the row a new rowid on the primary, an update in
    // place on the spares; the copies are the same all the same.
    c.exec(
        "CREATE TABLE item (code TEXT PRIMARY KEY NOT NULL, qty INTEGER)",
        json!([]),
    );
    c.exec("INSERT INTO item VALUES ('a', 1), ('b', 2)", json!([]));
    c.exec("INSERT OR REPLACE INTO item VALUES ('a', 5)", json!([]));
    let mut lsn = 0;
    for id in 1..=30 {
        lsn = c.exec(
            "INSERT INTO customer (id, name) VALUES (?, ?)",
            json!([id, format!("customer {id}")]),
        );
    }
    c.wait_applied("lan-2", lsn);
    // Writes go on during every verification (bounded: 5,000 rows at most).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, stop) = (c.http("main"), stop.clone());
        std::thread::spawn(move || {
            for id in 0..5_000u64 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let body = json!({ "sql": "INSERT INTO event (id, at) VALUES (?, ?)", "params": [id, id] });
                let _ = spare::client::post(&http, "/v1/execute", &body, common::TIMEOUT);
            }
        })
    };

    let (code, doc) = verify(&c);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["verdict"], "identical");
    for n in ["lan-1", "lan-2"] {
        assert_eq!(node(&doc, n)["status"], "identical", "{doc}");
        assert_eq!(
            node(&doc, n)["lsn"],
            doc["lsn"],
            "compared at the primary's LSN"
        );
    }

    // No hold is left behind: every spare applies what comes next.
    let next = c.exec("INSERT INTO item VALUES ('c', 3)", json!([]));
    c.wait_applied("lan-1", next);
    c.wait_applied("lan-2", next);

    // Behind lan-2's back: one value changed in place, the row count unchanged.
    let db = rusqlite::Connection::open(c.data_dir("lan-2").join("db.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute("UPDATE customer SET name = 'Mallory' WHERE id = 7", [])
        .unwrap();
    drop(db);
    let (code, doc) = verify(&c);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["verdict"], "differs");
    assert_eq!(node(&doc, "lan-1")["status"], "identical", "{doc}");
    let lan2 = node(&doc, "lan-2");
    assert_eq!(lan2["status"], "differs");
    let tables = lan2["tables"].as_array().unwrap();
    let customer = tables.iter().find(|t| t["table"] == "customer").unwrap();
    assert_eq!(customer["status"], "differs");
    assert_eq!(customer["rows_primary"], customer["rows_here"]);
    assert_eq!(customer["rows"], json!(["key [7]: values differ"]));
    assert!(
        tables
            .iter()
            .filter(|t| t["table"] != "customer")
            .all(|t| t["status"] == "identical"),
        "{lan2}"
    );
    let text = c.cli(&["verify"]);
    let said = String::from_utf8_lossy(&text.stdout);
    assert!(said.contains("key [7]: values differ"), "{said}");

    // A paused spare that is not at the compared LSN is skipped, saying why.
    let out = c.cli(&["pause", "lan-1"]);
    assert!(out.status.success());
    let paused_at = c.applied("lan-1");
    wait_until("the primary to move past lan-1's pause", || {
        c.status("main")["last_lsn"].as_u64().unwrap() > paused_at
    });
    let (_, doc) = verify(&c);
    let lan1 = node(&doc, "lan-1");
    assert_eq!(lan1["status"], "skipped", "{doc}");
    assert!(lan1["why"].as_str().unwrap().contains("paused"), "{lan1}");
    assert_eq!(
        c.applied("lan-1"),
        paused_at,
        "a verify never moves a paused spare"
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}

/// `verify_every`: a monitor runs the verification on its own (first when it starts) and a
/// difference becomes an event and a problem line of `spare status`.
#[test]
fn a_scheduled_verify_raises_an_event_and_a_problem_on_a_difference() {
    let mut c = Cluster::new(1, true);
    c.cluster_option("verify_every = \"10s\"");
    c.start("main");
    c.start("lan-1");
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", json!([]));
    let lsn = c.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')", json!([]));
    c.wait_applied("lan-1", lsn);
    let db = rusqlite::Connection::open(c.data_dir("lan-1").join("db.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute("UPDATE t SET v = 'z' WHERE id = 2", []).unwrap();
    drop(db);
    c.start("watch-1");
    wait_until("the monitor to report the difference", || {
        let doc = spare::client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
            .unwrap()
            .body;
        doc["problems"].to_string().contains("lan-1's copy differs")
    });
    let events = spare::client::get(&c.http("watch-1"), "/v1/events", common::TIMEOUT)
        .unwrap()
        .body;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "verify_difference"),
        "{events}"
    );
    assert_eq!(c.cli(&["status"]).status.code(), Some(1));
}
