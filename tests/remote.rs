//! Remote spares (DESIGN.md §8), on real processes: mutual TLS through a slow link with no
//! row data in clear, refused peers (no certificate, another CA, a wrong identity, garbage,
//! an oversized frame) while replication goes on, lz4 compression, the `max_rate` cap,
//! `allow_from`. (The HTTP API token: `tests/api_token.rs`.)

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Cluster, SECRET};
use serde_json::json;
use spare::client;
use spare::net::handshake::{self, Identity};
use spare::wire::message::Purpose;

/// A cluster (main, lan-1 as a `wan` spare behind a proxy, watch-1) with TLS material made
/// by `spare certs init`, not started.
fn tls_cluster(extra_lan_1: &[&str]) -> (Cluster, common::proxy::Proxy) {
    let mut c = Cluster::new(1, true);
    c.cluster_option("tls_dir = \"tls\"");
    c.node_option("lan-1", "link = \"wan\"");
    for line in extra_lan_1 {
        c.node_option("lan-1", line);
    }
    let out = c.cli(&["certs", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = c.proxy("lan-1");
    (c, link)
}

fn insert_rows(c: &Cluster, n: u64, text: &str) -> u64 {
    let batch: Vec<_> = (0..n)
        .map(|i| json!({ "sql": "INSERT INTO t (body) VALUES (?)", "params": [format!("{text}-{i}")] }))
        .collect();
    let r = c.execute_on("main", json!({ "batch": batch }));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["lsn"].as_u64().unwrap()
}

/// Starts the cluster with a table of blobs, replicated.
fn blob_table(c: &mut Cluster) {
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
        json!([]),
    );
    c.wait_applied("lan-1", c.status("main")["last_lsn"].as_u64().unwrap());
}

/// Commits `n` records of about 1 MB of random bytes (incompressible); the last one's LSN.
fn random_megabytes(c: &Cluster, n: usize) -> u64 {
    let batch: Vec<_> = (0..1000)
        .map(|_| json!({ "sql": "INSERT INTO t (body) VALUES (randomblob(1000))" }))
        .collect();
    let mut lsn = 0;
    for _ in 0..n {
        let r = c.execute_on("main", json!({ "batch": batch }));
        assert_eq!(r.status, 200, "{}", r.body);
        lsn = r.body["lsn"].as_u64().unwrap();
    }
    lsn
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn certs_init_writes_a_ca_and_one_certificate_per_node_with_private_keys() {
    use std::os::unix::fs::PermissionsExt;
    let (c, _link) = tls_cluster(&[]);
    let dir = c.dir.path().join("tls");
    for f in [
        "ca.pem",
        "ca.key",
        "main.pem",
        "main.key",
        "lan-1.pem",
        "watch-1.key",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let mode = std::fs::metadata(dir.join("main.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "keys are private");
    let again = c.cli(&["certs", "init"]);
    assert!(
        !again.status.success(),
        "existing files are never overwritten"
    );
    let add = c.cli(&["certs", "add", "lan-9"]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    assert!(dir.join("lan-9.pem").exists());
}

#[test]
fn replication_over_mutual_tls_through_a_slow_link_carries_no_row_in_clear() {
    let (mut c, link) = tls_cluster(&[]);
    link.delay(Duration::from_millis(50));
    link.rate(2 * 1024 * 1024);
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let lsn = insert_rows(&c, 200, "SECRET-CUSTOMER-4242");
    assert_eq!(
        c.rows(
            "lan-1",
            "SELECT count(*) FROM t WHERE body LIKE 'SECRET-CUSTOMER-4242%'",
            lsn
        ),
        vec![json!([200])]
    );
    let seen = link.captured();
    assert!(
        seen.len() > 10_000,
        "the proxy carried the link: {} bytes",
        seen.len()
    );
    assert!(
        !contains(&seen, b"SECRET-CUSTOMER"),
        "row data crossed the link in clear"
    );
    assert!(
        !contains(&seen, b"CREATE TABLE"),
        "schema crossed the link in clear"
    );
}

/// Sends `bytes` raw to `addr`; true if the node closed the connection (a connection still
/// open after 10 s was not refused).
fn refused_raw(addr: &str, bytes: &[u8]) -> bool {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    // A TLS alert or nothing, then the close.
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_right_certificate_or_identity_are_refused_while_replication_goes_on() {
    let (mut c, _link) = tls_cluster(&[]);
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let peer = c.node("lan-1").peer.clone();

    // Plaintext (no certificate at all), and garbage.
    let hello = b"\x00\x00\x00\x10plaintext-hello!";
    assert!(refused_raw(&peer, hello));
    assert!(refused_raw(&peer, &[0xde; 300]));

    // A certificate from another CA.
    let other = c.dir.path().join("other-ca");
    let out = c.cli(&["certs", "init", "--out", other.to_str().unwrap()]);
    assert!(out.status.success());
    let stranger = Identity {
        cluster: "test".into(),
        name: "main".into(),
        secret: Arc::new(SECRET.as_bytes().to_vec()),
        tls: Some(Arc::new(
            spare::net::tls::TlsHandle::load(&other, "main").unwrap(),
        )),
    };
    let r = spare::net::stream::connect(&stranger, "lan-1", &peer, Duration::from_secs(5)).await;
    let refused = match r {
        Err(_) => true,
        Ok(mut s) => handshake::dial(&mut s, &stranger, "lan-1", 1, Purpose::Control)
            .await
            .is_err(),
    };
    assert!(refused, "a certificate of another CA was accepted");

    // The cluster's CA, but watch-1's certificate claiming to be main (the primary).
    let tls = c.dir.path().join("tls");
    let impostor = Identity {
        cluster: "test".into(),
        name: "main".into(),
        secret: Arc::new(SECRET.as_bytes().to_vec()),
        tls: Some(Arc::new(
            spare::net::tls::TlsHandle::load(&tls, "watch-1").unwrap(),
        )),
    };
    let mut s = spare::net::stream::connect(&impostor, "lan-1", &peer, Duration::from_secs(5))
        .await
        .expect("TLS itself succeeds: the certificate is the cluster's");
    let r = handshake::as_primary(&mut s, &impostor, "lan-1", 1).await;
    assert!(r.is_err(), "watch-1's certificate passed as main's");

    // An oversized frame from a node with a valid identity.
    let watch = Identity {
        name: "watch-1".into(),
        ..impostor.clone()
    };
    let mut s = spare::net::stream::connect(&watch, "lan-1", &peer, Duration::from_secs(5))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    s.write_all(&[0u8; 64]).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "an oversized frame did not close the connection");

    let log = c.log("lan-1");
    assert!(log.contains("refused a peer connection"), "{log}");
    assert!(log.contains("127.0.0.1"), "the refusal names the address");
    let lsn = insert_rows(&c, 3, "still-flowing");
    assert_eq!(
        c.rows("lan-1", "SELECT count(*) FROM t", lsn),
        vec![json!([3])]
    );
}

#[test]
fn compression_shrinks_what_a_wan_link_carries() {
    let (mut c, link) = tls_cluster(&[]);
    c.start_all();
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let log_dir = c.data_dir("main").join("log");
    let log_bytes = || -> u64 {
        std::fs::read_dir(&log_dir)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    c.wait_applied("lan-1", c.status("main")["last_lsn"].as_u64().unwrap());
    let (log_before, link_before) = (log_bytes(), link.forwarded());
    let filler = "invoice line, quantity 1, unit price 10.00, VAT 20 % ".repeat(20);
    let mut lsn = 0;
    for _ in 0..10 {
        lsn = insert_rows(&c, 200, &filler);
    }
    c.wait_applied("lan-1", lsn);
    let logged = log_bytes() - log_before;
    let carried = link.forwarded() - link_before;
    assert!(logged > 2_000_000, "{logged}");
    assert!(
        carried * 3 < logged,
        "the link carried {carried} bytes for {logged} bytes of log"
    );
}

#[test]
fn the_rate_cap_holds_on_a_wan_link() {
    const RATE: f64 = 1024.0 * 1024.0;
    let (mut c, link) = tls_cluster(&["max_rate = \"1MiB/s\""]);
    blob_table(&mut c);
    // Random bytes do not compress: what crosses is what the cap counts. Four records of
    // about 1 MB: unthrottled, they would cross in a fraction of a second.
    let before = link.forwarded();
    let started = Instant::now();
    let lsn = random_megabytes(&c, 4);
    wait_until("lan-1 to receive the 4 MB", || {
        client::get(&c.http("lan-1"), "/v1/status", Duration::from_secs(2))
            .is_ok_and(|r| r.body["applied_lsn"].as_u64().unwrap_or(0) >= lsn)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let carried = (link.forwarded() - before) as f64;
    assert!(carried > 4_000_000.0, "{carried}");
    // At most rate × time, plus the burst (a quarter second) and one record in flight.
    let allowed = RATE * elapsed + RATE / 4.0 + 1_100_000.0;
    assert!(
        carried <= allowed,
        "{carried} bytes in {elapsed:.2} s: over the cap"
    );
}

/// A slow cap and large records: one record of 1 MB waits about 7 s for its turn at 150
/// KiB/s, longer than either side's silence timeout. The primary keeps the link alive
/// meanwhile (keep-alives while it paces, the spare's answers read between batches): the
/// backlog crosses on one link, never given up and redialled.
#[test]
fn a_slow_rate_cap_keeps_the_link_while_large_records_wait_their_turn() {
    let (mut c, _link) = tls_cluster(&["max_rate = \"150KiB/s\""]);
    blob_table(&mut c);
    let lsn = random_megabytes(&c, 2);
    c.wait_applied("lan-1", lsn);
    for (node, gave_up) in [("main", "link to spare lost"), ("lan-1", "silent for")] {
        assert!(
            !c.log(node).contains(gave_up),
            "{node} gave the link up:\n{}",
            c.log(node)
        );
    }
}

#[test]
fn allow_from_refuses_other_sources_and_a_reload_opens_it() {
    let mut c = Cluster::new(1, true);
    c.node_option("lan-1", "allow_from = [\"10.9.9.0/24\"]");
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    wait_until("lan-1 to refuse main", || {
        c.log("lan-1").contains("not in this node's allow_from")
    });
    assert_eq!(c.applied("lan-1"), 0, "nothing reached lan-1");
    let text = common::read_file(&c.config)
        .replace("[\"10.9.9.0/24\"]", "[\"10.9.9.0/24\", \"127.0.0.0/8\"]");
    std::fs::write(&c.config, text).unwrap();
    let out = c.cli(&["reload", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_applied("lan-1", lsn);

    // Closing it again cuts the link already open: nothing more reaches lan-1.
    let text = common::read_file(&c.config).replace(", \"127.0.0.0/8\"", "");
    std::fs::write(&c.config, text).unwrap();
    let out = c.cli(&["reload", "--no-wait"]);
    assert!(out.status.success());
    wait_until("lan-1 to close the open link", || {
        c.log("lan-1")
            .contains("its source left this node's allow_from")
            && c.spare_view("lan-1")["state"] != "streaming"
    });
    let later = c.exec("INSERT INTO t VALUES (1)", json!([]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        c.applied("lan-1") < later,
        "a closed source still feeds lan-1"
    );
}
