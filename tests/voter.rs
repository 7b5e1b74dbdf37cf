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
    };
    let mut s = TcpStream::connect(&c.node(node).peer).await.unwrap();
    handshake::dial(&mut s, &id, node, 1, Purpose::Control).await?;
    Ok((s, id))
}

async fn ask(s: &mut TcpStream, id: &Identity, m: Message) -> Message {
    write_frame(s, &id.envelope(1, m)).await.unwrap();
    read_frame(s).await.unwrap().message
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
    let lease = ask(
        &mut s,
        &id,
        Message::LeaseRequest {
            epoch: 1,
            sent_ms: 5,
        },
    )
    .await;
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
    let lease = ask(
        &mut s,
        &id,
        Message::LeaseRequest {
            epoch: 1,
            sent_ms: 6,
        },
    )
    .await;
    assert!(
        matches!(
            lease,
            Message::LeaseReply {
                granted: false,
                known_epoch: 2,
                ..
            }
        ),
        "{lease:?}"
    );
    let other = ask(
        &mut s,
        &id,
        Message::Prepare {
            epoch: 2,
            candidate: "main".into(),
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
    let lease = ask(
        &mut s,
        &id,
        Message::LeaseRequest {
            epoch: 1,
            sent_ms: 7,
        },
    )
    .await;
    assert!(
        matches!(
            lease,
            Message::LeaseReply {
                granted: false,
                known_epoch: 2,
                ..
            }
        ),
        "{lease:?}"
    );
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
        let reply = ask(
            &mut s,
            &id,
            Message::LeaseRequest {
                epoch: 1,
                sent_ms: 1,
            },
        )
        .await;
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
