//! Voter and lease changes go through the epoch protocol (`core::members`), on real
//! processes whose every directed link runs through its own fault proxy: a reload's new
//! voters and lease take effect at the next promotion or switchover, which needs a majority
//! of the old voters and of the new ones; until then the old rules hold, and status says so.

mod common;

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use spare::client;

fn output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn insert(c: &Cluster, node: &str, id: u64) -> client::Reply {
    c.execute_on(
        node,
        json!({ "sql": "INSERT INTO t (id) VALUES (?)", "params": [id] }),
    )
}

/// The split brain, refused: voters {main, lan-1, watch-1}; a reload makes lan-2
/// and lan-3 vote and lengthens the lease; {main, lan-1} are cut off from the rest. The
/// promotion of lan-2 reaches 3 of the 5 new voters but only 1 of the 3 old ones, so it
/// is refused, and main goes on writing. Once the links heal, a switchover brings the new
/// voters and lease into effect.
#[test]
fn voters_added_by_a_reload_cannot_promote_behind_the_running_primary() {
    let mut c = Cluster::new(3, true);
    c.non_voting("lan-2");
    c.non_voting("lan-3");
    c.mesh();
    c.start_all();
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    let old = ["lan-1", "main", "watch-1"];
    let five = ["lan-1", "lan-2", "lan-3", "main", "watch-1"];
    assert_eq!(names(&c.status("main")["lease"]["voters"]), old);
    assert!(c.status("main")["pending_membership"].is_null());

    c.clear_node_options("lan-2");
    c.clear_node_options("lan-3");
    c.cluster_option("lease = \"3s\"");
    let reload = c.cli(&["reload", "--no-wait"]);
    assert!(reload.status.success(), "{}", output(&reload));
    wait_until("main to show the pending membership", || {
        names(&c.status("main")["pending_membership"]["voters"]) == five
    });
    let status = c.status("main");
    assert_eq!(
        names(&status["lease"]["voters"]),
        old,
        "the running epoch keeps its voters"
    );
    assert_eq!(status["lease"]["lease_ms"], 2_000);
    assert_eq!(status["pending_membership"]["lease_ms"], 3_000);
    // The monitor's view (what `spare status` prints) follows within its poll.
    wait_until("spare status to show the pending membership", || {
        output(&c.cli(&["status"]))
            .contains("membership change pending: voters lan-1, lan-2, lan-3, main, watch-1")
    });

    // watch-1 learns epoch 1's voters from main's lease requests (within a heartbeat or
    // two of starting); the promotion below relies on its report of them.
    wait_until("watch-1 to know epoch 1's voters", || {
        std::fs::read_to_string(c.data_dir("watch-1").join("node.state"))
            .is_ok_and(|s| s.contains("\"members\""))
    });
    c.partition(&["main", "lan-1"], &["lan-2", "lan-3", "watch-1"]);
    let promote = c.cli(&["promote", "lan-2"]);
    let said = output(&promote);
    assert!(!promote.status.success(), "{said}");
    assert!(
        said.contains("voters lan-1, main, watch-1 (2 needed)"),
        "the refusal names the old voters: {said}"
    );
    for id in 1..=5 {
        let r = insert(&c, "main", id);
        assert_eq!(r.status, 200, "main still writes: {:?}", r.body);
    }
    assert_eq!(c.status("lan-2")["role"], "spare");
    assert_eq!(c.status("main")["lease"]["valid"], true);

    c.heal();
    let switch = c.cli(&["switchover", "lan-2"]);
    assert!(switch.status.success(), "{}", output(&switch));
    wait_until("lan-2 to lead with the new membership", || {
        let s = c.status("lan-2");
        s["role"] == "primary" && s["lease"]["valid"] == true
    });
    let status = c.status("lan-2");
    assert_eq!(names(&status["lease"]["voters"]), five);
    assert_eq!(status["lease"]["lease_ms"], 3_000);
    assert!(status["pending_membership"].is_null(), "{status}");
    let r = insert(&c, "lan-2", 6);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rows = c.rows("lan-2", "SELECT count(*) FROM t", 0);
    assert_eq!(rows[0][0], 6, "nothing acknowledged was lost");

    // Removing a voter is a change too: pending until the next promotion.
    c.non_voting("lan-3");
    let reload = c.cli(&["reload", "--no-wait"]);
    assert!(reload.status.success(), "{}", output(&reload));
    wait_until("lan-2 to show the removal as pending", || {
        names(&c.status("lan-2")["pending_membership"]["voters"])
            == ["lan-1", "lan-2", "main", "watch-1"]
    });
    assert_eq!(names(&c.status("lan-2")["lease"]["voters"]), five);

    // Deleting it now would leave the epoch counting a node nobody can reach: refused,
    // saying how. After a switchover (the new epoch's voters leave it out), it goes.
    c.remove_node("lan-3");
    let reload = c.cli(&["reload", "--no-wait"]);
    let said = output(&reload);
    assert!(!reload.status.success(), "{said}");
    assert!(
        said.contains("lan-3 vote(s) in the running epoch"),
        "{said}"
    );
    assert!(said.contains("spare switchover"), "{said}");
    c.restore_node("lan-3");
    let switch = c.cli(&["switchover", "lan-1"]);
    assert!(switch.status.success(), "{}", output(&switch));
    wait_until("lan-1 to lead without lan-3", || {
        let s = c.status("lan-1");
        s["lease"]["valid"] == true
            && names(&s["lease"]["voters"]) == ["lan-1", "lan-2", "main", "watch-1"]
    });
    c.remove_node("lan-3");
    let reload = c.cli(&["reload", "--no-wait"]);
    assert!(reload.status.success(), "{}", output(&reload));
}
