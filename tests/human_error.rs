//! Protection against operator error (DESIGN.md §9), on real processes: a delayed spare, pause
//! and resume across restarts, `spare log`, and the whole story: a table emptied by mistake,
//! found in the log, undone by promoting the delayed spare up to just before it.

mod common;

use std::time::Duration;

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use spare::client;

fn stdout(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn count(c: &Cluster, node: &str) -> u64 {
    c.rows(node, "SELECT count(*) FROM customer", 0)[0][0]
        .as_u64()
        .unwrap()
}

fn create_customers(c: &Cluster, n: u64) -> u64 {
    c.exec(
        "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        json!([]),
    );
    let batch: Vec<Value> = (1..=n)
        .map(|i| json!({ "sql": "INSERT INTO customer (id, name) VALUES (?, ?)", "params": [i, format!("customer-{i}")] }))
        .collect();
    let r = c.execute_on("main", json!({ "batch": batch }));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["lsn"].as_u64().unwrap()
}

#[test]
fn a_delayed_spare_receives_at_once_and_applies_only_when_due() {
    let mut c = Cluster::new(1, false);
    c.node_option("lan-1", "apply_delay = \"5s\"");
    c.start_all();
    let lsn = create_customers(&c, 3);
    wait_until("lan-1 to hold the records", || {
        c.status("lan-1")["flushed_lsn"].as_u64().unwrap_or(0) >= lsn
    });
    let st = c.status("lan-1");
    assert!(
        st["applied_lsn"].as_u64().unwrap() < lsn,
        "applied before its delay: {st}"
    );
    assert_eq!(st["state"], "delayed (5s)");
    assert!(st["pending_records"].as_u64().unwrap() > 0, "{st}");
    c.wait_applied("lan-1", lsn);
    assert_eq!(count(&c, "lan-1"), 3);
}

#[test]
fn a_paused_spare_keeps_receiving_stays_paused_across_a_restart_and_resumes() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let lsn = create_customers(&c, 3);
    c.wait_applied("lan-1", lsn);
    let out = c.cli(&["pause", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let lsn = c.exec("DELETE FROM customer", json!([]));
    wait_until("lan-1 to receive the delete", || {
        c.status("lan-1")["flushed_lsn"].as_u64().unwrap_or(0) >= lsn
    });
    assert_eq!(count(&c, "lan-1"), 3, "paused: nothing applied");
    c.kill("lan-1");
    c.start("lan-1");
    wait_until("lan-1 to report paused", || {
        c.status("lan-1")["state"] == "paused"
    });
    assert_eq!(count(&c, "lan-1"), 3, "still paused after a restart");
    let out = c.cli(&["resume", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    c.wait_applied("lan-1", lsn);
    assert_eq!(count(&c, "lan-1"), 0);
    let out = c.cli(&["pause", "main"]);
    assert!(
        !out.status.success(),
        "only a spare pauses: {}",
        stdout(&out)
    );
}

#[test]
fn an_emptied_table_is_found_in_the_log_and_undone_by_promoting_the_delayed_spare_until_before_it()
{
    let mut c = Cluster::new(2, true);
    c.node_option("lan-2", "apply_delay = \"1h\"");
    c.start_all();
    let before = create_customers(&c, 10);
    c.wait_applied("lan-1", before);

    // The mistake: the LAN spare copies it at once, the delayed spare holds it unapplied.
    let bad = c.exec("DELETE FROM customer", json!([]));
    c.wait_applied("lan-1", bad);
    assert_eq!(count(&c, "lan-1"), 0);
    wait_until("lan-2 to hold the mistake, unapplied", || {
        c.status("lan-2")["flushed_lsn"].as_u64().unwrap_or(0) >= bad
    });
    assert!(
        c.applied("lan-2") < before,
        "the delayed spare applied nothing yet"
    );
    let out = c.cli(&["pause", "lan-2"]);
    assert!(out.status.success(), "{}", stdout(&out));

    // Find it.
    let out = c.cli(&["log", "--table", "customer"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let listing = stdout(&out);
    let line = listing
        .lines()
        .find(|l| l.contains("customer: 10 deleted"))
        .unwrap_or_else(|| panic!("the delete is listed: {listing}"));
    assert!(line.trim_start().starts_with(&bad.to_string()), "{line}");
    // Narrowed by LSN range (as JSON) and by time.
    let range = bad.to_string();
    let out = c.cli(&["log", "--from", &range, "--to", &range, "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let lsns: Vec<u64> = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(lsns, vec![bad], "{listed}");
    assert!(
        stdout(&c.cli(&["log", "--since", "1h", "--table", "customer"]))
            .contains("customer: 10 deleted")
    );
    let future = c.cli(&["log", "--since", "2999-01-01T00:00:00Z"]);
    assert!(
        !stdout(&future).contains("customer:"),
        "nothing after the given time"
    );
    let out = c.cli(&["log", "--show", &bad.to_string()]);
    let shown = stdout(&out);
    assert!(
        shown.contains("delete from customer: id=1, name='customer-1'"),
        "{shown}"
    );

    // Undo: promote the delayed spare up to just before it (main still runs: --force).
    let until = (bad - 1).to_string();
    let out = c.cli(&["promote", "lan-2", "--until", &until, "--force"]);
    assert!(
        !out.status.success(),
        "the discarded delete must be accepted: {}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("--accept-loss 1"), "{}", stdout(&out));
    let out = c.cli(&[
        "promote",
        "lan-2",
        "--until",
        &until,
        "--force",
        "--accept-loss",
        "1",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(count(&c, "lan-2"), 10, "the rows are back");
    let st = c.status("lan-2");
    assert_eq!(
        (st["role"].clone(), st["epoch"].clone()),
        (json!("primary"), json!(2))
    );

    // Writes go on; the LAN spare follows the new history (its copy of the delete kept).
    let r = c.execute_on(
        "lan-2",
        json!({ "sql": "INSERT INTO customer (id, name) VALUES (11, 'new')" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("lan-1 to follow the new history", || {
        client::post(
            &c.http("lan-1"),
            "/v1/query",
            &json!({ "sql": "SELECT count(*) FROM customer" }),
            Duration::from_secs(5),
        )
        .is_ok_and(|r| r.body["rows"] == json!([[11]]))
    });
    let kept = |node: &str| -> String {
        std::fs::read_dir(c.data_dir(node).join("quarantine"))
            .map(|d| {
                d.flatten()
                    .map(|e| common::read_file(&e.path().join("records.jsonl")))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        kept("lan-2").contains("\"op\":\"delete\""),
        "the cut delete is kept on lan-2"
    );
    assert!(kept("lan-1").contains("\"op\":\"delete\""), "and on lan-1");

    // The old primary is fenced; it rejoins.
    wait_until("main to be fenced", || c.status("main")["role"] == "fenced");
    let out = c.cli(&["rejoin", "--no-wait", "main"]);
    assert!(out.status.success(), "{}", stdout(&out));
    wait_until("main to follow the new history", || {
        client::post(
            &c.http("main"),
            "/v1/query",
            &json!({ "sql": "SELECT count(*) FROM customer" }),
            Duration::from_secs(5),
        )
        .is_ok_and(|r| r.body["rows"] == json!([[11]]))
    });

    // Back to the normal layout: main the primary again, lan-2 the delayed spare again, and
    // not paused any more (its pause ended when it became the primary).
    let out = c.cli(&["switchover", "main"]);
    assert!(out.status.success(), "{}", stdout(&out));
    wait_until("lan-2 to be a spare again", || {
        c.status("lan-2")["role"] == "spare"
    });
    let st = c.status("lan-2");
    assert_eq!(st["paused"], false, "{st}");
    assert_eq!(st["state"], "delayed (1h)", "{st}");
    assert_eq!(c.status("main")["role"], "primary");
}

fn cluster_doc(c: &Cluster) -> Value {
    client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
        .unwrap()
        .body
}

fn primary_view(c: &Cluster, spare: &str) -> Value {
    c.status("main")["spares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == spare)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A paused spare's lag is the age of the oldest record it holds unapplied, whoever
/// restarts: before, a restarted primary only knew the records it sent since, and showed a
/// few seconds. The primary says `paused` (not `catching-up`), the monitor raises the lag
/// alert and names the pause, and a cut link is a problem line although no lag grows.
#[test]
fn a_held_spare_keeps_its_true_lag_across_restarts_and_is_named_in_the_problems() {
    let mut c = Cluster::new(1, true);
    c.cluster_option("lag_warn = \"2s\"");
    c.non_voting("lan-1");
    let link = c.proxy("lan-1");
    c.start_all();
    let lsn = create_customers(&c, 2);
    c.wait_applied("lan-1", lsn);
    let out = c.cli(&["pause", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let held = c.exec("DELETE FROM customer", json!([]));
    wait_until("the held record to be 4 s old", || {
        primary_view(&c, "lan-1")["lag"]["seconds"]
            .as_f64()
            .is_some_and(|s| s >= 4.0)
    });
    assert_eq!(primary_view(&c, "lan-1")["state"], "paused");
    c.kill("main");
    c.start("main");
    wait_until("the restarted primary to hear lan-1", || {
        primary_view(&c, "lan-1")["lag"]["last_ack_age_s"].is_number()
    });
    let after = primary_view(&c, "lan-1");
    assert!(
        after["lag"]["seconds"].as_f64().unwrap() >= 4.0,
        "a restart forgot the held record's age: {after}"
    );
    assert_eq!(after["state"], "paused", "{after}");
    c.kill("lan-1");
    c.start("lan-1");
    let own = c.status("lan-1");
    assert!(own["lag"]["seconds"].as_f64().unwrap() >= 4.0, "{own}");
    wait_until("the monitor to name the pause and raise the alert", || {
        let problems = cluster_doc(&c)["problems"].to_string();
        problems.contains("lan-1 is paused") && problems.contains("lag_warn")
    });
    link.cut();
    wait_until("the monitor to name the cut link", || {
        cluster_doc(&c)["problems"]
            .to_string()
            .contains("lan-1 is not connected to the primary")
    });
    link.pass();
    let out = c.cli(&["resume", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    c.wait_applied("lan-1", held);
}
