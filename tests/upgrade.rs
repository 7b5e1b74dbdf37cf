//! A rolling upgrade, as docs/upgrade.md orders it: the spares first, one at
//! a time, then a switchover to an upgraded spare, then the old primary. The previous
//! release is this build speaking protocol 2 only (`SPARE_TEST_SPEAK_PROTOCOL`), as that
//! release did; writes go on all along, and none acknowledged is lost.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use common::{dump, wait_until, Cluster};
use serde_json::json;

const OLD_RELEASE: (&str, &str) = ("SPARE_TEST_SPEAK_PROTOCOL", "2");

/// Restarts `node` as the new release, and waits until it applied what `primary` had
/// logged by then (it replicates at the protocol its link speaks).
fn upgrade(c: &mut Cluster, node: &str, primary: &str) {
    c.kill(node);
    c.node_env(node, OLD_RELEASE.0, None);
    c.start(node);
    let lsn = c.status(primary)["last_lsn"].as_u64().unwrap();
    c.wait_applied(node, lsn);
}

/// Waits until `primary`'s status says its link to `spare` speaks protocol `version`.
fn link_speaks(c: &Cluster, primary: &str, spare: &str, version: u64) {
    wait_until(
        &format!("{primary}'s link to {spare} to speak {version}"),
        || {
            c.status(primary)["spares"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == spare && s["protocol"] == version)
        },
    );
}

/// Waits until `n` more writes than now were acknowledged.
fn writes_go_on(acked: &Mutex<Vec<u64>>, what: &str) {
    let now = acked.lock().unwrap().len();
    wait_until(&format!("writes to go on {what}"), || {
        acked.lock().unwrap().len() > now + 30
    });
}

#[test]
fn a_cluster_upgraded_one_node_at_a_time_keeps_taking_writes_and_loses_none() {
    let mut c = Cluster::new(2, false);
    for node in ["main", "lan-1", "lan-2"] {
        c.node_env(node, OLD_RELEASE.0, Some(OLD_RELEASE.1));
    }
    c.start_all();
    c.exec(
        "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT NOT NULL)",
        json!([]),
    );
    let nodes: Vec<String> = ["main", "lan-1", "lan-2"]
        .iter()
        .map(|n| c.http(n))
        .collect();
    let load = common::WriteLoad::start(&nodes, 2, Duration::from_secs(300));
    let acked = load.acked.clone();
    writes_go_on(&acked, "on the old release");
    // 1. The spares, one at a time: the old primary streams to them and asks them for its
    //    lease at protocol 2, which they still speak.
    upgrade(&mut c, "lan-1", "main");
    writes_go_on(&acked, "with lan-1 upgraded");
    link_speaks(&c, "main", "lan-1", 2);
    upgrade(&mut c, "lan-2", "main");
    writes_go_on(&acked, "with both spares upgraded");
    // 2. A switchover to an upgraded spare: the new primary dials the old one at protocol 3,
    //    is refused, and speaks 2 to it.
    let out = c.cli(&["switchover", "lan-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    writes_go_on(&acked, "on the upgraded primary");
    assert!(
        c.log("lan-1").contains("the peer runs an older release"),
        "{}",
        c.log("lan-1")
    );
    // The new primary's status shows which links speak the old protocol.
    link_speaks(&c, "lan-1", "lan-2", 3);
    // 3. The old primary, a spare now.
    wait_until("main to follow lan-1", || {
        c.status("main")["role"] == "spare"
    });
    link_speaks(&c, "lan-1", "main", 2);
    // The old release replicates from the new primary, at protocol 2.
    let lsn = c.status("lan-1")["last_lsn"].as_u64().unwrap();
    c.wait_applied("main", lsn);
    upgrade(&mut c, "main", "lan-1");
    writes_go_on(&acked, "with every node upgraded");
    // Its link ended when it restarted: the redial speaks the newest protocol at once, not
    // the older one it spoke a moment ago.
    link_speaks(&c, "lan-1", "main", 3);
    let acked = load.stop();
    let lsn = c.status("lan-1")["last_lsn"].as_u64().unwrap();
    let ids: BTreeSet<u64> = c
        .rows("lan-1", "SELECT id FROM invoice", lsn)
        .iter()
        .map(|r| r[0].as_u64().unwrap())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    for node in ["main", "lan-2"] {
        assert_eq!(
            dump(&c, node, lsn),
            dump(&c, "lan-1", lsn),
            "{node} differs"
        );
    }
}

#[test]
fn a_node_of_the_previous_release_refuses_the_new_protocol_and_says_which_it_speaks() {
    let mut c = Cluster::new(1, false);
    c.node_env("lan-1", OLD_RELEASE.0, Some(OLD_RELEASE.1));
    c.start_all();
    let lsn = c.exec(
        "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT NOT NULL)",
        json!([]),
    );
    // The new primary's first dial is refused; it streams at protocol 2 after.
    c.wait_applied("lan-1", lsn);
    let spare_log = c.log("lan-1");
    assert!(
        spare_log.contains("protocol version 3 is not supported (this node speaks 2)"),
        "{spare_log}"
    );
    assert!(
        c.log("main").contains("the peer runs an older release"),
        "{}",
        c.log("main")
    );
}
