//! The commit rule (DESIGN.md §4): with `any = 1, of = ["lan-1"]`, an acknowledged write is
//! on lan-1's disk; a stalled lan-1 leaves the rule after the deadline instead of hanging
//! every commit, and rejoins once caught up.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{wait_until, Cluster};
use serde_json::json;

fn sync_cluster(deadline: &str) -> Cluster {
    let mut c = Cluster::new(2, false);
    c.cluster_option(&format!(
        "commit = {{ any = 1, of = [\"lan-1\"], deadline = \"{deadline}\" }}"
    ));
    c
}

fn spare_sync(c: &Cluster, spare: &str) -> String {
    c.spare_view(spare)["sync"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn stalled_sync_spare_leaves_the_rule_after_the_deadline_and_rejoins_when_caught_up() {
    let mut c = sync_cluster("1s");
    let proxy = c.proxy("lan-1");
    c.start_all();
    let r = c.execute_on(
        "main",
        json!({ "sql": "CREATE TABLE t (id INTEGER PRIMARY KEY)" }),
    );
    assert_eq!(
        r.body["commit"],
        json!({ "rule": "any 1 of [lan-1]", "met": true }),
        "{}",
        r.body
    );
    assert_eq!(c.status("main")["commit_rule"], "any 1 of [lan-1]");
    proxy.stall();
    let started = Instant::now();
    let r = c.execute_on("main", json!({ "sql": "INSERT INTO t VALUES (1)" }));
    assert_eq!(r.status, 200);
    assert_eq!(r.body["commit"]["met"], false, "{}", r.body);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the write waited for the deadline"
    );
    assert_eq!(spare_sync(&c, "lan-1"), "demoted");
    assert!(c.log("main").contains("leaves the commit rule"));
    // Commits go on without waiting for it.
    let r = c.execute_on("main", json!({ "sql": "INSERT INTO t VALUES (2)" }));
    assert_eq!(r.body["commit"]["met"], false);
    proxy.pass();
    wait_until("lan-1 to rejoin the rule", || {
        spare_sync(&c, "lan-1") == "in-rule"
    });
    let r = c.execute_on("main", json!({ "sql": "INSERT INTO t VALUES (3)" }));
    assert_eq!(r.body["commit"]["met"], true, "{}", r.body);
}

#[test]
fn with_a_healthy_sync_spare_kill_9_of_the_primary_loses_nothing_that_spare_does_not_hold() {
    let mut c = sync_cluster("5s");
    c.start_all();
    c.exec("CREATE TABLE ledger (id INTEGER PRIMARY KEY)", json!([]));
    let acked = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let http = c.http("main");
    std::thread::scope(|s| {
        for client in 0..4i64 {
            let (acked, count, stop, http) = (&acked, &count, &stop, &http);
            s.spawn(move || {
                let agent = spare::client::agent(Duration::from_secs(10));
                for i in 0..2000i64 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = client * 1_000_000 + i;
                    let body = json!({ "sql": "INSERT INTO ledger VALUES (?)", "params": [id] });
                    match spare::client::post_with(&agent, http, "/v1/execute", &body) {
                        Ok(r) if r.status == 200 && r.body["commit"]["met"] == true => {
                            acked.lock().unwrap().push(id);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            });
        }
        wait_until("200 writes acknowledged under the rule", || {
            count.load(Ordering::Relaxed) >= 200
        });
        c.kill("main");
        stop.store(true, Ordering::Relaxed);
    });
    wait_until("lan-1 to apply all it flushed", || {
        let s = c.status("lan-1");
        s["applied_lsn"] == s["flushed_lsn"]
    });
    let held: Vec<i64> = c
        .rows("lan-1", "SELECT id FROM ledger ORDER BY id", 0)
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    let acked = acked.into_inner().unwrap();
    let missing: Vec<&i64> = acked
        .iter()
        .filter(|id| held.binary_search(id).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} writes acknowledged under the rule are not on lan-1: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

fn signal(c: &Cluster, node: &str, sig: i32) {
    // SAFETY: kill(2) on a child process this test started.
    assert_eq!(unsafe { libc::kill(c.pid(node) as i32, sig) }, 0);
}

/// A write waiting for its commit rule may outlive the primary's lease (both spares frozen:
/// no voter renews it; lease 2 s, deadline 5 s). By the time it could answer, a new primary
/// may be taking writes: it is answered "durable here but not confirmed", never 200.
#[test]
fn a_write_whose_lease_ran_out_while_it_waited_for_its_rule_is_not_acknowledged() {
    let mut c = sync_cluster("5s");
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    c.wait_applied("lan-2", lsn);
    signal(&c, "lan-1", libc::SIGSTOP);
    signal(&c, "lan-2", libc::SIGSTOP);
    // kill(2) only queues the stop: a spare still running could meet the rule.
    common::wait_stopped(c.pid("lan-1"));
    common::wait_stopped(c.pid("lan-2"));
    let r = c.execute_on("main", json!({ "sql": "INSERT INTO t VALUES (1)" }));
    assert_eq!(r.status, 503, "acknowledged without a lease: {}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not confirmed"),
        "{}",
        r.body
    );
    signal(&c, "lan-1", libc::SIGCONT);
    signal(&c, "lan-2", libc::SIGCONT);
}
