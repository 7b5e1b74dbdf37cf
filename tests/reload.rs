//! Live membership (DESIGN.md §10): editing the file and running `spare reload` (or sending
//! SIGHUP) adds, changes or removes spares without restarting the primary or disturbing the
//! other spares; an invalid file changes nothing and says why.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{dump, wait_until, Cluster};
use serde_json::json;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn spares_of(c: &Cluster) -> Vec<String> {
    c.status("main")["spares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn spare_added_by_reload_converges_while_writes_go_on() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        json!([]),
    );
    let stop = AtomicBool::new(false);
    let http = c.http("main");
    std::thread::scope(|s| {
        s.spawn(|| {
            let agent = spare::client::agent(Duration::from_secs(5));
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let r = spare::client::post_with(&agent, &http, "/v1/execute", &json!({ "sql": "INSERT INTO t (v) VALUES (?)", "params": [format!("row {i}")] })).unwrap();
                assert_eq!(r.status, 200, "a write failed during the reload: {}", r.body);
            }
        });
        c.add_spare("lan-2");
        c.start("lan-2");
        let out = c.cli(&["reload", "--no-wait"]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_until("main to feed lan-2", || {
            spares_of(&c).contains(&"lan-2".to_string())
        });
        stop.store(true, Ordering::Relaxed);
    });
    let last = c.status("main")["last_lsn"].as_u64().unwrap();
    c.wait_applied("lan-2", last);
    assert_eq!(dump(&c, "lan-2", last), dump(&c, "main", last));
    assert!(
        !c.log("main")
            .contains("link to spare lost; redialling spare=lan-1"),
        "lan-1's link was disturbed:\n{}",
        c.log("main")
    );
}

#[test]
fn reload_with_an_invalid_file_changes_nothing_and_says_why() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let good = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        good.replace("role = \"spare\"", "role = \"spare\"\nwindwo = \"1MiB\""),
    )
    .unwrap();
    let out = c.cli(&["reload"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("node \"lan-1\": field \"windwo\": unknown key"),
        "{}",
        stderr(&out)
    );
    // A change that needs a restart is refused by the node itself.
    let lan = c.node("lan-1").clone();
    let moved = good.replace(
        &format!("http = \"{}\"", lan.http),
        &format!("http = \"127.0.0.1:{}\"", common::free_port()),
    );
    std::fs::write(&c.config, moved).unwrap();
    let r = spare::client::post(
        &c.http("lan-1"),
        "/v1/admin/reload",
        &json!({}),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("needs a restart"),
        "{}",
        r.body
    );
    // Still serving, still feeding.
    std::fs::write(&c.config, &good).unwrap();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
}

#[test]
fn removed_spare_is_no_longer_fed_and_a_changed_one_is_refed() {
    let mut c = Cluster::new(2, false);
    // A voter of the running epoch cannot be deleted (tests/membership.rs): this one never
    // voted.
    c.non_voting("lan-2");
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-2", lsn);
    c.node_option("lan-1", "window = \"1MiB\"");
    c.remove_node("lan-2");
    let r = spare::client::post(
        &c.http("main"),
        "/v1/admin/reload",
        &json!({}),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["removed"], json!(["lan-2"]));
    assert_eq!(r.body["changed"], json!(["lan-1"]));
    wait_until("main to stop feeding lan-2", || {
        spares_of(&c) == vec!["lan-1".to_string()]
    });
    let next = c.exec("INSERT INTO t VALUES (1)", json!([]));
    c.wait_applied("lan-1", next);
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.applied("lan-2") < next, "a removed spare must not be fed");
}

#[test]
fn sighup_makes_spare_up_start_and_stop_its_local_nodes() {
    let mut c = Cluster::new(1, false);
    let up = Command::new(common::bin())
        .args(["up", "--config"])
        .arg(&c.config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.log_path("up")).unwrap())
        .spawn()
        .unwrap();
    let pid = up.id();
    let _guard = common::ChildGuard(up);
    wait_until("spare up to serve", || {
        spare::client::get(&c.http("lan-1"), "/v1/status", Duration::from_secs(1)).is_ok()
    });
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.add_spare("lan-2");
    let hup = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success())
    };
    hup(pid);
    c.wait_applied("lan-2", lsn);
    c.remove_node("lan-2");
    hup(pid);
    wait_until("lan-2 to stop", || {
        spare::client::get(&c.http("lan-2"), "/v1/status", Duration::from_secs(1)).is_err()
    });
    let next = c.exec("INSERT INTO t VALUES (1)", json!([]));
    c.wait_applied("lan-1", next);
}

/// Starts `spare up` on the cluster's configuration (every node in one process), once it
/// serves; killed when the guard drops.
fn spare_up(c: &Cluster) -> common::ChildGuard {
    let up = Command::new(common::bin())
        .args(["up", "--config"])
        .arg(&c.config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.log_path("up")).unwrap())
        .spawn()
        .unwrap();
    let guard = common::ChildGuard(up);
    wait_until("spare up to serve", || {
        spare::client::get(&c.http("lan-1"), "/v1/status", Duration::from_secs(1)).is_ok()
    });
    guard
}

/// A reload whose new node cannot start (a TLS spare without its certificate yet) is
/// refused whole under `spare up`: nobody feeds or watches the new node, and once the
/// certificate exists the same reload adds it.
#[test]
fn a_reload_whose_new_node_cannot_start_applies_nothing() {
    let mut c = Cluster::new(1, false);
    c.cluster_option("tls_dir = \"tls\"");
    let certs = c.cli(&["certs", "init"]);
    assert!(certs.status.success(), "{}", stderr(&certs));
    let _guard = spare_up(&c);
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.add_spare("lan-2");
    let out = c.cli(&["reload", "--no-wait"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("spare certs add"), "{said}");
    assert!(
        !spares_of(&c).contains(&"lan-2".to_string()),
        "the primary feeds a node of a refused reload"
    );
    let add = c.cli(&["certs", "add", "lan-2"]);
    assert!(add.status.success(), "{}", stderr(&add));
    let out = c.cli(&["reload", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_applied("lan-2", lsn);
}

/// A reload refused because the new node's HTTP port is taken (under `spare up`) leaves
/// nothing of that node behind: once the port is free, the same reload starts it.
#[test]
fn a_reload_refused_for_a_taken_port_succeeds_once_the_port_is_free() {
    let mut c = Cluster::new(1, false);
    let _guard = spare_up(&c);
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.add_spare("lan-2");
    let taken = std::net::TcpListener::bind(c.http("lan-2")).unwrap();
    for _ in 0..2 {
        let out = c.cli(&["reload", "--no-wait"]);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!out.status.success(), "{said}");
        assert!(said.contains("cannot listen on http"), "{said}");
        assert!(!said.contains("in use by another"), "{said}");
    }
    drop(taken);
    let out = c.cli(&["reload", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_applied("lan-2", lsn);
}

/// On a terminal, `spare reload` shows each new spare on a progress bar (seeding, catching
/// up, streaming) and returns once it streams; off one it writes lines (the walkthrough).
#[test]
fn reload_shows_a_new_spare_on_a_progress_bar_on_a_terminal() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.add_spare("lan-2");
    c.start("lan-2");
    let shown = c.cli_on_terminal("reload");
    assert!(
        shown.contains("lan-2 [") && shown.contains(" % "),
        "{shown}"
    );
    assert!(!shown.contains("lan-2: streaming"), "{shown}");
    c.wait_applied("lan-2", lsn);
}
