//! Promotion end to end (DESIGN.md §7), on real processes: `spare promote` after the primary
//! died, with a frozen primary, without a quorum, as a dry run, with a loss preview; the old
//! primary fenced on return and `spare rejoin`; `spare switchover` under write load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use spare::client;

fn create_table(c: &Cluster) -> u64 {
    c.exec(
        "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT NOT NULL)",
        json!([]),
    )
}

fn insert(c: &Cluster, node: &str, id: u64, customer: &str) -> client::Reply {
    c.execute_on(
        node,
        json!({ "sql": "INSERT INTO invoice (id, customer) VALUES (?, ?)", "params": [id, customer] }),
    )
}

fn count(c: &Cluster, node: &str, min_lsn: u64) -> u64 {
    c.rows(node, "SELECT count(*) FROM invoice", min_lsn)[0][0]
        .as_u64()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn signal(c: &Cluster, node: &str, sig: i32) {
    // SAFETY: kill(2) on a child process this test started.
    let rc = unsafe { libc::kill(c.pid(node) as i32, sig) };
    assert_eq!(rc, 0, "signal {sig} to {node}");
}

fn node_state(c: &Cluster, node: &str) -> Value {
    serde_json::from_str(&common::read_file(&c.data_dir(node).join("node.state"))).unwrap()
}

/// Waits until `node` answers its status with `role`.
fn wait_role(c: &Cluster, node: &str, role: &str) {
    wait_until(&format!("{node} to be {role}"), || {
        client::get(&c.http(node), "/v1/status", Duration::from_secs(2))
            .is_ok_and(|r| r.body["role"] == role)
    });
}

#[test]
fn promoting_a_spare_after_the_primary_died_keeps_every_acknowledged_write_and_the_other_spare_follows(
) {
    let mut c = Cluster::new(2, true);
    c.start_all();
    create_table(&c);
    let mut last = 0;
    for id in 1..=20 {
        let r = insert(&c, "main", id, "acme");
        assert_eq!(r.status, 200, "{}", r.body);
        last = r.body["lsn"].as_u64().unwrap();
    }
    c.wait_applied("lan-1", last);
    c.wait_applied("lan-2", last);
    c.kill("main");

    let out = c.cli(&["promote", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("lan-1 is the primary of epoch 2"),
        "{}",
        stdout(&out)
    );
    let st = c.status("lan-1");
    assert_eq!(
        (st["role"].clone(), st["epoch"].clone()),
        (json!("primary"), json!(2))
    );
    assert_eq!(
        count(&c, "lan-1", 0),
        20,
        "every acknowledged write is on the new primary"
    );

    // Clients that know several nodes find the new primary (main is down, lan-2 redirects).
    let out = c.cli(&[
        "sql",
        "INSERT INTO invoice (id, customer) VALUES (21, 'after')",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let r = insert(&c, "lan-2", 22, "redirected");
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(r.body["primary"]["name"], "lan-1", "{}", r.body);
    let lsn = insert(&c, "lan-1", 22, "direct").body["lsn"]
        .as_u64()
        .unwrap();
    assert_eq!(count(&c, "lan-2", lsn), 22, "lan-2 follows the new primary");
    assert_eq!(node_state(&c, "lan-2")["primary"], "lan-1");

    let audit = client::get(&c.http("watch-1"), "/v1/admin/promotions", common::TIMEOUT)
        .unwrap()
        .body;
    let entry = &audit["promotions"][0];
    assert_eq!(entry["outcome"], "committed", "{audit}");
    assert_eq!(entry["epoch"], 2);
    assert!(entry["asked_by"].as_str().unwrap().contains('@'));
    assert!(
        entry["promised_by"].as_array().unwrap().len() >= 3,
        "{entry}"
    );
    assert_eq!(entry["loss"]["transactions"], 0);
}

#[test]
fn the_old_primary_comes_back_fenced_and_rejoin_quarantines_its_unreplicated_tail() {
    // Voters main, lan-1, watch-1: main keeps its lease with watch-1 while lan-1 is cut off.
    let mut c = Cluster::new(1, true);
    let link = c.proxy("lan-1");
    c.start_all();
    let lsn = create_table(&c);
    c.wait_applied("lan-1", lsn);
    link.cut();
    for id in 1..=5 {
        let r = insert(&c, "main", id, &format!("lost-invoice-{id}"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    c.kill("main");
    link.pass();
    let out = c.cli(&["promote", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("not known here"),
        "the unknown tail is said: {}",
        stdout(&out)
    );
    let lsn = insert(&c, "lan-1", 100, "new-history").body["lsn"]
        .as_u64()
        .unwrap();

    c.start("main");
    wait_role(&c, "main", "fenced");
    let r = insert(&c, "main", 101, "refused");
    assert_eq!(r.status, 421, "a fenced node takes no write: {}", r.body);
    assert_eq!(r.body["primary"]["name"], "lan-1", "{}", r.body);
    assert_eq!(
        count(&c, "main", 0),
        5,
        "fenced, it still serves reads of its own copy"
    );

    let out = c.cli(&["rejoin", "--no-wait", "main"]);
    assert!(out.status.success(), "{}", stdout(&out));
    wait_role(&c, "main", "spare");
    // Its own history reached past `lsn` too: wait for the new history's rows themselves.
    wait_until("main to follow the new history", || {
        client::post(
            &c.http("main"),
            "/v1/query",
            &json!({ "sql": "SELECT id FROM invoice", "min_lsn": lsn }),
            Duration::from_secs(10),
        )
        .is_ok_and(|r| r.status == 200 && r.body["rows"] == json!([[100]]))
    });
    assert_eq!(c.status("main")["epoch"], 2);
    let quarantine = c.data_dir("main").join("quarantine");
    let kept: String = std::fs::read_dir(&quarantine)
        .expect("a quarantine folder")
        .flatten()
        .map(|d| common::read_file(&d.path().join("records.jsonl")))
        .collect();
    for id in 1..=5 {
        assert!(
            kept.contains(&format!("lost-invoice-{id}")),
            "quarantine keeps the unreplicated write {id}: {kept}"
        );
    }
}

#[test]
fn a_primary_frozen_during_the_promotion_acknowledges_nothing_when_it_resumes() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    let lsn = create_table(&c);
    c.wait_applied("lan-1", lsn);
    signal(&c, "main", libc::SIGSTOP);
    // kill(2) only queues the stop: a write sent before every thread halted could still be
    // committed and acknowledged by a primary that held its lease then.
    common::wait_stopped(c.pid("main"));
    // A client's write waits in the frozen primary's socket.
    let http = c.http("main");
    let pending = std::thread::spawn(move || {
        client::post(
            &http,
            "/v1/execute",
            &json!({ "sql": "INSERT INTO invoice (id, customer) VALUES (7, 'frozen')" }),
            Duration::from_secs(60),
        )
    });
    let out = c.cli(&["promote", "lan-1", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // The frozen voter's prepare was not waited for: a quorum of the others sufficed.
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["unanswered_at_quorum"], json!(["main"]), "{report}");
    signal(&c, "main", libc::SIGCONT);
    let answer = pending.join().unwrap().expect("main answers once resumed");
    assert_ne!(
        answer.status, 200,
        "a resumed old primary acknowledged: {}",
        answer.body
    );
    wait_role(&c, "main", "fenced");
    let r = insert(&c, "main", 8, "after");
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(
        count(&c, "lan-1", 0),
        0,
        "the frozen write is nowhere in the new history"
    );
}

#[test]
fn without_a_quorum_a_promotion_is_refused_and_a_dry_run_changes_nothing() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    let lsn = create_table(&c);
    c.wait_applied("lan-1", lsn);
    c.kill("main");
    let before = node_state(&c, "lan-1");

    let out = c.cli(&["promote", "lan-1", "--dry-run"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("dry run: nothing changed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        node_state(&c, "lan-1"),
        before,
        "a dry run promises nothing"
    );
    assert_eq!(c.status("lan-1")["role"], "spare");

    c.kill("lan-2");
    let out = c.cli(&["promote", "lan-1", "--dry-run"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("only 2 of the voters lan-1, lan-2, main, watch-1 answer"),
        "{}",
        stdout(&out)
    );

    let out = c.cli(&["promote", "lan-1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("promises"), "{}", stdout(&out));
    assert_eq!(
        c.status("lan-1")["role"],
        "spare",
        "refused: nothing committed"
    );
    assert_eq!(node_state(&c, "lan-1")["epoch"], 1);
}

#[test]
fn a_candidate_behind_another_spare_needs_accept_loss_and_the_other_spare_is_reseeded() {
    let mut c = Cluster::new(2, true);
    let link = c.proxy("lan-1");
    c.start_all();
    let lsn = create_table(&c);
    c.wait_applied("lan-1", lsn);
    link.cut();
    let mut last = 0;
    for id in 1..=3 {
        last = insert(&c, "main", id, "only-on-lan-2").body["lsn"]
            .as_u64()
            .unwrap();
    }
    c.wait_applied("lan-2", last);
    c.kill("main");
    link.pass();

    let out = c.cli(&["promote", "lan-1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("3 transaction(s)") && text.contains("lan-2"),
        "{text}"
    );
    assert!(text.contains("--accept-loss 3"), "{text}");
    assert_eq!(c.status("lan-1")["role"], "spare");

    let out = c.cli(&["promote", "lan-1", "--accept-loss", "3"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let lsn = insert(&c, "lan-1", 50, "new").body["lsn"].as_u64().unwrap();
    wait_until("lan-2 to be re-seeded from the new primary", || {
        client::post(
            &c.http("lan-2"),
            "/v1/query",
            &json!({ "sql": "SELECT id FROM invoice", "min_lsn": lsn }),
            Duration::from_secs(10),
        )
        .is_ok_and(|r| r.status == 200 && r.body["rows"] == json!([[50]]))
    });
    assert!(
        c.data_dir("lan-2").join("quarantine").exists(),
        "lan-2's lost transactions are kept"
    );
}

#[test]
fn a_switchover_under_write_load_loses_no_acknowledged_write() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    create_table(&c);
    let nodes: Vec<String> = ["main", "lan-1", "lan-2"]
        .iter()
        .map(|n| c.http(n))
        .collect();
    let load = common::WriteLoad::start(&nodes, 4, Duration::from_secs(60));
    let acked = load.acked.clone();
    wait_until("writes to flow", || acked.lock().unwrap().len() > 50);
    let out = c.cli(&["switchover", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let at_switch = acked.lock().unwrap().len();
    wait_until("writes to flow on the new primary", || {
        acked.lock().unwrap().len() > at_switch + 50
    });
    let acked = load.stop();
    let lsn = c.status("lan-1")["last_lsn"].as_u64().unwrap();
    let ids: std::collections::BTreeSet<u64> = c
        .rows("lan-1", "SELECT id FROM invoice", 0)
        .iter()
        .map(|r| r[0].as_u64().unwrap())
        .collect();
    let missing: Vec<&u64> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");
    wait_role(&c, "main", "spare");
    assert_eq!(
        count(&c, "main", lsn),
        ids.len() as u64,
        "the old primary follows"
    );
    assert!(
        !c.data_dir("main").join("quarantine").exists(),
        "a switchover quarantines nothing"
    );
}

#[test]
fn a_refused_switchover_leaves_the_primary_writing() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    create_table(&c);
    let out = c.cli(&["switchover", "main"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("not a running, seeded spare"),
        "{}",
        stdout(&out)
    );
    let out = c.cli(&["switchover", "watch-1"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("monitor"), "{}", stdout(&out));
    // What only a promotion may do is refused on the switchover route, not ignored.
    let asked = json!({ "candidate": "lan-1", "until": 2 });
    let r = client::post(
        &c.http("main"),
        "/v1/admin/switchover",
        &asked,
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("loses nothing"), "{}", r.body);
    let r = insert(&c, "main", 1, "still-writing");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.status("main")["epoch"], 1);
}

#[test]
fn promoting_over_a_live_primary_needs_force_and_the_old_primary_is_fenced() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    let lsn = create_table(&c);
    c.wait_applied("lan-1", lsn);
    c.wait_applied("lan-2", lsn);
    let out = c.cli(&["promote", "lan-1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("spare switchover"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        c.status("main")["role"],
        "primary",
        "refused: main keeps writing"
    );

    let out = c.cli(&["promote", "lan-1", "--force"]);
    assert!(out.status.success(), "{}", stdout(&out));
    wait_role(&c, "main", "fenced");
    let r = insert(&c, "main", 1, "refused");
    assert_eq!(r.status, 421, "{}", r.body);
    let lsn = insert(&c, "lan-1", 2, "accepted").body["lsn"]
        .as_u64()
        .unwrap();
    assert_eq!(count(&c, "lan-2", lsn), 1);

    // The roles live in node.state: a restart keeps them.
    c.kill("lan-1");
    c.start("lan-1");
    wait_until("lan-1 to serve writes again", || {
        insert(&c, "lan-1", 3, "after-restart").status == 200
    });
    let st = c.status("lan-1");
    assert_eq!(
        (st["role"].clone(), st["epoch"].clone()),
        (json!("primary"), json!(2))
    );
    c.kill("main");
    c.start("main");
    wait_role(&c, "main", "fenced");
}

/// A switchover that dies after stopping the primary's writes (its coordinator killed, say)
/// must not leave the primary refusing writes for ever: the stop carries a bound, after
/// which the primary takes writes again by itself.
#[test]
fn writes_stopped_by_a_switchover_that_never_finished_resume_on_their_own() {
    let mut c = Cluster::new(2, false);
    c.start_all();
    create_table(&c);
    // What a coordinator does first, then it is gone.
    let stop = json!({ "accept": false, "for_ms": 1500 });
    let r = client::post(&c.http("main"), "/v1/admin/writes", &stop, common::TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let refused = c.execute_on(
        "main",
        json!({ "sql": "INSERT INTO invoice (id, customer) VALUES (1, 'x')" }),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    wait_until("main to take writes again", || {
        c.execute_on(
            "main",
            json!({ "sql": "INSERT INTO invoice (id, customer) VALUES (2, 'y')" }),
        )
        .status
            == 200
    });
    assert!(c.log("main").contains("writes resume"), "{}", c.log("main"));
}

/// Something answering HTTP on `addr` with `body` as every reply (a node of another version,
/// or another program on a node's port), until dropped. Bounded: it stops after
/// `STAND_IN_MAX` even if the test forgets it.
struct StandIn {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const STAND_IN_MAX: Duration = Duration::from_secs(120);

impl StandIn {
    fn start(addr: &str, body: &'static str) -> StandIn {
        let listener = std::net::TcpListener::bind(addr).expect("bind the stand-in");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < STAND_IN_MAX {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                use std::io::{Read, Write};
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes());
            }
        });
        StandIn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A node that answers `/v1/status` with a document this version cannot read may hold what
/// the candidate lacks: the promotion refuses, naming it, and the cluster view shows it
/// `unavailable` (it runs), not `unreachable`.
#[test]
fn a_node_answering_an_unreadable_status_stops_a_promotion_and_shows_unavailable() {
    let mut c = Cluster::new(2, true);
    for node in ["main", "lan-1", "watch-1"] {
        c.start(node);
    }
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    let _stand_in = StandIn::start(&c.http("lan-2"), r#"{"role":"leader","name":"lan-2"}"#);
    wait_until("the monitor to show lan-2 unavailable", || {
        let out = c.cli(&["status", "--json"]);
        let view: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["name"] == "lan-2" && n["state"] == "unavailable")
    });
    c.kill("main");
    let out = c.cli(&["promote", "lan-1"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "the promotion went on: {text}");
    assert!(
        text.contains("lan-2 answered a status this version cannot read"),
        "{text}"
    );
    assert_eq!(c.status("lan-1")["role"], "spare", "lan-1 was not promoted");
}
