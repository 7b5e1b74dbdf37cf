//! Voters on real processes (DESIGN.md §7): every node, monitors included, answers control
//! requests on its peer port after the secret challenge; a promise is on disk before its
//! answer and survives a restart; once promised, the old primary gets no lease.

mod common;

use std::sync::Arc;

use common::{Cluster, SECRET};
use spare::net::handshake::{self, Identity};
use spare::wire::message::Purpose;
use spare::wire::{read_frame, write_frame, Message};
use tokio::net::TcpStream;

/// A control connection to `node`, authenticated as `me` with `secret`.
async fn control(
    c: &Cluster,
    node: &str,
    me: &str,
    secret: &str,
) -> spare::error::Result<(TcpStream, Identity)> {
    let id = Identity {
        cluster: "test".into(),
        name: me.into(),
        secret: Arc::new(secret.as_bytes().to_vec()),
        tls: None,
    };
    let mut s = TcpStream::connect(&c.node(node).peer).await.unwrap();
    handshake::dial(&mut s, &id, node, 1, Purpose::Control).await?;
    Ok((s, id))
}

async fn ask(s: &mut TcpStream, id: &Identity, m: Message) -> Message {
    write_frame(s, &id.envelope(1, m)).await.unwrap();
    read_frame(s).await.unwrap().message
}

/// Asks for a lease for epoch 1, stamped `sent_ms`.
async fn ask_lease(s: &mut TcpStream, id: &Identity, sent_ms: u64) -> Message {
    let members = members(&["main", "lan-1", "lan-2", "watch-1"]);
    let m = Message::LeaseRequest {
        epoch: 1,
        sent_ms,
        members,
    };
    ask(s, id, m).await
}

fn members(voters: &[&str]) -> spare::core::members::Members {
    let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
    spare::core::members::Members::new(&v, 2_000)
}

fn assert_refused_for_epoch_2(reply: &Message) {
    assert!(
        matches!(
            reply,
            Message::LeaseReply {
                granted: false,
                known_epoch: 2,
                ..
            }
        ),
        "{reply:?}"
    );
}

fn promised(c: &Cluster, node: &str) -> (u64, String) {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.data_dir(node).join("node.state")).unwrap())
            .unwrap();
    (
        state["promised_epoch"].as_u64().unwrap(),
        state["promised_to"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_keeps_its_promise_on_disk_and_refuses_the_old_primary_a_lease() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    let (mut s, id) = control(&c, "watch-1", "main", SECRET).await.unwrap();
    let lease = ask_lease(&mut s, &id, 5).await;
    assert!(
        matches!(
            lease,
            Message::LeaseReply {
                granted: true,
                sent_ms: 5,
                ..
            }
        ),
        "{lease:?}"
    );
    let reply = ask(
        &mut s,
        &id,
        Message::Prepare {
            epoch: 2,
            candidate: "lan-1".into(),
            members: members(&["main", "lan-1", "lan-2", "watch-1"]),
        },
    )
    .await;
    assert!(
        matches!(
            reply,
            Message::PrepareReply {
                epoch: 2,
                promised: true,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(
        promised(&c, "watch-1"),
        (2, "lan-1".to_string()),
        "the promise is on disk"
    );
    let lease = ask_lease(&mut s, &id, 6).await;
    assert_refused_for_epoch_2(&lease);
    let other = ask(
        &mut s,
        &id,
        Message::Prepare {
            epoch: 2,
            candidate: "main".into(),
            members: members(&["main", "lan-1", "lan-2", "watch-1"]),
        },
    )
    .await;
    assert!(
        matches!(&other, Message::PrepareReply { promised: false, promised_to, .. } if promised_to == "lan-1"),
        "{other:?}"
    );
    drop(s);
    // The promise survives a restart.
    c.kill("watch-1");
    c.start("watch-1");
    let (mut s, id) = control(&c, "watch-1", "main", SECRET).await.unwrap();
    let lease = ask_lease(&mut s, &id, 7).await;
    assert_refused_for_epoch_2(&lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_connections_need_the_secret_and_a_member_name() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    for node in ["main", "lan-1", "watch-1"] {
        assert!(
            control(&c, node, "main", "not-the-secret-at-all-000000")
                .await
                .is_err(),
            "{node} took a wrong secret"
        );
        assert!(
            control(&c, node, "intruder", SECRET).await.is_err(),
            "{node} took an unknown node"
        );
        let (mut s, id) = control(&c, node, "lan-1", SECRET)
            .await
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        let reply = ask_lease(&mut s, &id, 1).await;
        assert!(
            matches!(reply, Message::LeaseReply { granted: false, .. }),
            "{node} granted a lease to a spare: {reply:?}"
        );
    }
    assert_eq!(promised(&c, "lan-1"), (1, "main".to_string()));
    // Streaming still works next to control connections.
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        serde_json::json!([]),
    );
    c.wait_applied("lan-1", lsn);
}

/// A member of the cluster sending a malformed membership (none, unsorted, duplicated, a
/// lease of 0 or of days) is refused, and promises nothing: the voter keeps its state and
/// answers well-formed requests afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_membership_from_a_peer_is_refused_and_changes_nothing() {
    use spare::core::members::Members;
    let mut c = Cluster::new(1, true);
    c.start_all();
    let bad = [
        Members {
            voters: vec![],
            lease_ms: 2_000,
        },
        Members {
            voters: vec!["main".into(), "lan-1".into()],
            lease_ms: 2_000,
        },
        Members {
            voters: vec!["main".into(), "main".into()],
            lease_ms: 2_000,
        },
        Members {
            voters: vec!["main".into()],
            lease_ms: 0,
        },
        Members {
            voters: vec!["main".into()],
            lease_ms: 86_400_000,
        },
    ];
    for members in bad {
        let (mut s, id) = control(&c, "lan-1", "watch-1", SECRET).await.unwrap();
        let prepare = Message::Prepare {
            epoch: 9,
            candidate: "watch-1".into(),
            members: members.clone(),
        };
        write_frame(&mut s, &id.envelope(1, prepare)).await.unwrap();
        assert!(
            read_frame(&mut s).await.is_err(),
            "a prepare with {members:?} was answered"
        );
    }
    assert_eq!(
        promised(&c, "lan-1"),
        (1, "main".to_string()),
        "nothing was promised"
    );
    let state = common::read_file(&c.data_dir("lan-1").join("node.state"));
    assert!(!state.contains("pending"), "no pending promise: {state}");
    let (mut s, id) = control(&c, "lan-1", "main", SECRET).await.unwrap();
    let reply = ask_lease(&mut s, &id, 1).await;
    assert!(
        matches!(reply, Message::LeaseReply { granted: true, .. }),
        "{reply:?}"
    );
}

fn write(c: &Cluster, v: i64) -> spare::client::Reply {
    spare::client::post(
        &c.http("main"),
        "/v1/execute",
        &serde_json::json!({ "sql": "INSERT INTO t VALUES (?)", "params": [v] }),
        common::TIMEOUT,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_without_a_quorum_of_voters_refuses_writes_and_says_why() {
    let mut c = Cluster::new(2, false);
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        serde_json::json!([]),
    );
    assert_eq!(c.status("main")["lease"]["valid"], true);
    c.kill("lan-1");
    c.kill("lan-2");
    common::wait_until("the lease to run out", || {
        c.status("main")["lease"]["valid"] == false
    });
    let r = write(&c, 1);
    assert_eq!(r.status, 503, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.contains("no write lease") && msg.contains("lan-1"),
        "{msg}"
    );
    assert!(
        c.rows("main", "SELECT * FROM t", 0).is_empty(),
        "nothing was written"
    );
    // One voter back is a quorum again (2 of 3).
    c.start("lan-1");
    common::wait_until("writes to be taken again", || write(&c, 2).status == 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stops_acknowledging_once_a_quorum_promised_a_newer_epoch() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        serde_json::json!([]),
    );
    // A coordinator's prepare reaches three of the four voters: a quorum promised epoch 2.
    for voter in ["lan-1", "lan-2", "watch-1"] {
        let (mut s, id) = control(&c, voter, "watch-1", SECRET).await.unwrap();
        let reply = ask(
            &mut s,
            &id,
            Message::Prepare {
                epoch: 2,
                candidate: "lan-1".into(),
                members: members(&["main", "lan-1", "lan-2", "watch-1"]),
            },
        )
        .await;
        assert!(
            matches!(reply, Message::PrepareReply { promised: true, .. }),
            "{voter}: {reply:?}"
        );
    }
    // Promised, not committed: main only loses its lease (no node leads epoch 2 yet).
    common::wait_until("main's lease to run out", || {
        c.status("main")["lease"]["valid"] == false
    });
    let r = write(&c, 1);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("no write lease"),
        "{}",
        r.body
    );
    assert_eq!(
        c.status("main")["role"],
        "primary",
        "not fenced by a mere promise"
    );
}
