//! Hostile or confused peers: garbage, oversized frames, another cluster, a wrong secret, a
//! rogue primary process. Each is refused without a crash and without applying anything.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{config_text, wait_until, Cluster, NodeSpec};
use serde_json::json;
use spare::log::{Record, RecordKind};
use spare::wire::codec::encode;
use spare::wire::{Envelope, Message, PROTOCOL_VERSION};

fn connect(c: &Cluster, node: &str) -> TcpStream {
    let s = TcpStream::connect(&c.node(node).peer).expect("connect to the spare's peer port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn send(s: &mut TcpStream, env: &Envelope) {
    s.write_all(&encode(env).unwrap()).unwrap();
}

/// Reads one frame; None when the peer closed the connection.
fn recv(s: &mut TcpStream) -> Option<Envelope> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(rmp_serde::from_slice(&body).expect("the node sends valid frames"))
}

/// Whether the peer closed the connection (reads end of stream or a reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

fn env(cluster: &str, from: &str, message: Message) -> Envelope {
    Envelope {
        cluster: cluster.into(),
        from: from.into(),
        epoch: 1,
        message,
    }
}

fn hello(to: &str) -> Message {
    Message::Hello {
        protocol: PROTOCOL_VERSION,
        to: to.into(),
        nonce: vec![7; 32],
        purpose: spare::wire::message::Purpose::Stream,
    }
}

/// A running primary and spare with a table holding one row; returns the spare's applied LSN.
fn cluster() -> (Cluster, u64) {
    let mut c = Cluster::new(1, false);
    c.start_all();
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    let lsn = c.exec("INSERT INTO t VALUES (1)", json!([]));
    c.wait_applied("lan-1", lsn);
    (c, lsn)
}

fn assert_unharmed(c: &mut Cluster, _lsn: u64) {
    assert!(
        c.is_running("lan-1"),
        "the spare crashed:\n{}",
        c.log("lan-1")
    );
    let state = c.status("lan-1")["state"].as_str().unwrap().to_string();
    assert!(
        !state.starts_with("apply stopped") && state != "diverged",
        "the spare took something: {state}"
    );
    assert_eq!(c.rows("lan-1", "SELECT id FROM t", 0), vec![json!([1])]);
    // And it still follows the real primary.
    let next = c.exec("INSERT INTO t VALUES (2)", json!([]));
    c.wait_applied("lan-1", next);
    assert_eq!(
        c.rows("lan-1", "SELECT id FROM t ORDER BY id", next),
        vec![json!([1]), json!([2])]
    );
}

#[test]
fn garbage_and_oversized_frames_are_refused_without_a_crash() {
    let (mut c, lsn) = cluster();
    let mut s = connect(&c, "lan-1");
    s.write_all(&[0, 0, 0, 12, 0xc1, 0xc1, 0xc1, 0xc1, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    assert!(closed(&mut s), "garbage must close the connection");
    let mut s = connect(&c, "lan-1");
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 1024]).unwrap();
    assert!(
        closed(&mut s),
        "an oversized frame must close the connection"
    );
    let mut s = connect(&c, "lan-1");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(&mut s));
    wait_until("the refusals to be logged", || {
        c.log("lan-1").matches("refused a peer connection").count() >= 3
    });
    assert_unharmed(&mut c, lsn);
}

#[test]
fn peer_of_another_cluster_is_refused() {
    let (mut c, lsn) = cluster();
    let mut s = connect(&c, "lan-1");
    send(&mut s, &env("other-cluster", "main", hello("lan-1")));
    let reply = recv(&mut s).expect("a refusal");
    let Message::Refuse { reason } = reply.message else {
        panic!("expected Refuse, got {:?}", reply.message)
    };
    assert!(reason.contains("other-cluster"), "{reason}");
    assert!(closed(&mut s));
    assert_unharmed(&mut c, lsn);
}

#[test]
fn peer_with_a_wrong_secret_is_refused_and_its_records_never_applied() {
    let (mut c, lsn) = cluster();
    let mut s = connect(&c, "lan-1");
    send(&mut s, &env("test", "main", hello("lan-1")));
    let challenge = recv(&mut s).expect("a challenge");
    assert!(
        matches!(challenge.message, Message::Challenge { .. }),
        "{:?}",
        challenge.message
    );
    send(
        &mut s,
        &env("test", "main", Message::Proof { proof: vec![0; 32] }),
    );
    // Records pushed right behind the bad proof must not be taken.
    let rec = Record::new(0, lsn + 1, 1, 0, RecordKind::Txn, b"evil".to_vec());
    send(
        &mut s,
        &env(
            "test",
            "main",
            Message::Records {
                count: 1,
                bytes: rec.encode(),
            },
        ),
    );
    let reply = recv(&mut s).expect("a refusal");
    let Message::Refuse { reason } = reply.message else {
        panic!("expected Refuse, got {:?}", reply.message)
    };
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(closed(&mut s));
    assert_unharmed(&mut c, lsn);
}

#[test]
fn rogue_primary_process_with_another_secret_cannot_feed_the_spare() {
    let (mut c, lsn) = cluster();
    // A second "main" with the same names and the spare's real address, but its own secret.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.secret"),
        "a-completely-different-secret-value",
    )
    .unwrap();
    let rogue_main = NodeSpec {
        name: "main".into(),
        role: "primary",
        http: format!("127.0.0.1:{}", common::free_port()),
        peer: format!("127.0.0.1:{}", common::free_port()),
    };
    let nodes = vec![rogue_main.clone(), c.node("lan-1").clone()];
    // lan-1 refuses the rogue (another secret), so it must not count in the rogue's quorum
    // for the rogue to take writes at all.
    let rogue_config = config_text("test", &nodes).replacen(
        "role = \"spare\"",
        "role = \"spare\"\nvote = false",
        1,
    );
    std::fs::write(dir.path().join("cluster.toml"), rogue_config).unwrap();
    let log = std::fs::File::create(dir.path().join("rogue.log")).unwrap();
    let rogue = Command::new(common::bin())
        .args(["run", "--node", "main", "--config"])
        .arg(dir.path().join("cluster.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _guard = common::ChildGuard(rogue);
    wait_until("the rogue primary to serve", || {
        spare::client::get(&rogue_main.http, "/v1/status", Duration::from_secs(1)).is_ok()
    });
    let r = spare::client::post(
        &rogue_main.http,
        "/v1/execute",
        &json!({ "sql": "CREATE TABLE rogue (id INTEGER PRIMARY KEY)" }),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    wait_until("the spare to refuse the rogue primary", || {
        c.log("lan-1").contains("authentication failed")
    });
    assert_unharmed(&mut c, lsn);
    let tables = c.rows(
        "lan-1",
        "SELECT name FROM sqlite_schema WHERE name = 'rogue'",
        0,
    );
    assert!(
        tables.is_empty(),
        "the rogue primary's table reached the spare"
    );
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A connection to `to` from the local address `from` (another loopback address: another
/// host, as far as the node can tell).
fn connect_from(rt: &tokio::runtime::Runtime, from: &str, to: &str) -> std::io::Result<TcpStream> {
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(from.parse().expect("an address"))?;
        let s = sock.connect(to.parse().expect("an address")).await?;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        Ok(s)
    })
}

/// Strangers may open connections to the peer ports by the thousand, silent or talking
/// nonsense (a Hello announcing a 60 MiB frame among them): each node holds a bounded number
/// of them in its handshake, a few per source, for a bounded time, allocates nothing large
/// before the peer is authenticated; replication goes on meanwhile, and a node of the
/// cluster (another address) still completes a new handshake during the flood.
#[test]
fn a_thousand_idle_and_a_thousand_garbage_connections_do_not_stop_replication() {
    const EACH: usize = 1000;
    const RSS_BOUND_KIB: u64 = 200 * 1024;
    const STRANGER: &str = "127.0.0.2:0";
    let (mut c, _) = cluster();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let writer = {
        let http = c.http("main");
        std::thread::spawn(move || {
            let mut last = 0;
            for i in 0..300 {
                let body = json!({ "sql": "INSERT INTO t VALUES (?)", "params": [100 + i] });
                let r = spare::client::post(&http, "/v1/execute", &body, common::TIMEOUT)
                    .expect("the primary answers");
                assert_eq!(r.status, 200, "{}", r.body);
                last = r.body["lsn"].as_u64().unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            last
        })
    };
    let mut idle = Vec::new();
    for node in ["lan-1", "main"] {
        let addr = c.node(node).peer.clone();
        for i in 0..EACH {
            // Refused at once when the node is crowded: that is the bound working.
            if let Ok(s) = connect_from(&rt, STRANGER, &addr) {
                idle.push(s);
            }
            if let Ok(mut s) = connect_from(&rt, STRANGER, &addr) {
                let garbage: Vec<u8> = match i % 3 {
                    0 => 60_000_000u32.to_be_bytes().to_vec(),
                    1 => vec![0xff; 512],
                    _ => b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                };
                let _ = s.write_all(&garbage);
            }
        }
    }
    // While the strangers hold their places: the spare restarts, and the primary must
    // complete a new handshake with it to go on feeding it.
    c.kill("lan-1");
    c.start("lan-1");
    let last = writer.join().expect("the writer ran");
    c.wait_applied("lan-1", last);
    for node in ["main", "lan-1"] {
        assert!(c.is_running(node), "{node} crashed:\n{}", c.log(node));
        let rss = rss_kib(c.pid(node));
        assert!(rss < RSS_BOUND_KIB, "{node} holds {rss} KiB");
    }
    // The idle ones were closed by the nodes once their handshake time ran out.
    wait_until("the nodes to close the idle connections", || {
        idle.iter_mut().all(peer_closed)
    });
    let log = c.log("main");
    assert!(
        log.contains("too many peer handshakes in progress"),
        "{log}"
    );
    assert!(
        log.contains("above the 65536 allowed"),
        "a 60 MB frame was refused unread"
    );
}

/// Whether the other end closed `s` (end of stream or reset), without waiting long.
fn peer_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
