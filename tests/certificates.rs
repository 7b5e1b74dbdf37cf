//! Certificates renewed on a running cluster: `spare certs renew` and `spare reload` put a
//! node's new certificate to use without a write failing; a CA added to `ca.pem` beside the
//! old one lets nodes move to certificates of the new CA one at a time; a damaged file
//! refuses the reload and changes nothing.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Cluster};
use serde_json::json;
use spare::client;

/// A cluster with mutual TLS on peer links and HTTPS on the API, started.
fn tls_cluster(spares: usize) -> Cluster {
    let mut c = Cluster::new(spares, false);
    c.cluster_option("tls_dir = \"tls\"");
    c.cluster_option("http_tls = true");
    let out = c.cli(&["certs", "init"]);
    assert!(out.status.success(), "{out:?}");
    client::set_https(Some(
        spare::net::tls::https_client(&c.dir.path().join("tls")).unwrap(),
    ));
    c.start_all();
    c
}

/// The DER of the first certificate in `pem`.
fn der_of(pem: &Path) -> Vec<u8> {
    let text = std::fs::read(pem).unwrap();
    let first = rustls_pemfile::certs(&mut text.as_slice())
        .next()
        .unwrap()
        .unwrap();
    first.as_ref().to_vec()
}

/// The certificate `http` (an HTTPS API) presents to a new connection.
fn presented(c: &Cluster, http: &str) -> Vec<u8> {
    let config = spare::net::tls::https_client(&c.dir.path().join("tls")).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(http).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// Writers inserting rows until stopped: (stop, acknowledged, failed, threads).
type Load = (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<std::thread::JoinHandle<()>>,
);

fn load(c: &Cluster) -> Load {
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", json!([]));
    let stop: Arc<AtomicBool> = Arc::default();
    let (acked, failed): (Arc<AtomicU64>, Arc<AtomicU64>) = (Arc::default(), Arc::default());
    let http = c.http("main");
    let threads = (0..2)
        .map(|_| {
            let (stop, acked, failed, http) = (
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&failed),
                http.clone(),
            );
            std::thread::spawn(move || {
                let agent = client::agent(Duration::from_secs(10));
                let body = json!({"sql": "INSERT INTO t (v) VALUES ('x')"});
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A new connection each time: each one meets the current certificate.
                    let fresh = client::agent(Duration::from_secs(10));
                    let a = if acked.load(Ordering::Relaxed) % 2 == 0 {
                        &agent
                    } else {
                        &fresh
                    };
                    match client::post_with(a, &http, "/v1/execute", &body) {
                        Ok(r) if r.status == 200 => acked.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    (stop, acked, failed, threads)
}

fn writes_go_on(acked: &AtomicU64) {
    let now = acked.load(Ordering::Relaxed);
    wait_until("writes to go on", || {
        acked.load(Ordering::Relaxed) > now + 50
    });
}

/// One cluster for both (the HTTPS client of this process is set once per CA).
#[test]
fn certificates_are_renewed_and_the_ca_replaced_on_a_running_cluster() {
    let mut c = tls_cluster(1);
    a_renewed_certificate_is_used_after_a_reload_and_no_write_fails(&c);
    nodes_move_to_a_new_ca_one_at_a_time_while_ca_pem_holds_both(&mut c);
}

fn a_renewed_certificate_is_used_after_a_reload_and_no_write_fails(c: &Cluster) {
    let (stop, acked, failed, threads) = load(c);
    let tls = c.dir.path().join("tls");
    let http = c.http("main");
    writes_go_on(&acked);
    let old = der_of(&tls.join("main.pem"));
    assert_eq!(presented(c, &http), old);
    let out = c.cli(&["certs", "renew", "main"]);
    assert!(out.status.success(), "{out:?}");
    let new = der_of(&tls.join("main.pem"));
    assert_ne!(new, old, "renew wrote a new certificate");
    // Until the reload, the node goes on presenting the certificate it read at start.
    assert_eq!(presented(c, &http), old);
    let out = c.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("main to present its new certificate", || {
        presented(c, &http) == new
    });
    writes_go_on(&acked);
    // A damaged certificate file refuses the reload, naming it, and changes nothing.
    let pem = std::fs::read(tls.join("main.pem")).unwrap();
    std::fs::write(tls.join("main.pem"), b"not a certificate").unwrap();
    let out = c.cli(&["reload"]);
    assert!(!out.status.success(), "a damaged certificate was reloaded");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("main.pem"), "{said}");
    assert_eq!(presented(c, &http), new);
    std::fs::write(tls.join("main.pem"), pem).unwrap();
    writes_go_on(&acked);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "writes failed during the renewal"
    );
    let lsn = c.status("main")["last_lsn"].as_u64().unwrap();
    c.wait_applied("lan-1", lsn);
}

fn nodes_move_to_a_new_ca_one_at_a_time_while_ca_pem_holds_both(c: &mut Cluster) {
    let tls = c.dir.path().join("tls");
    // A new CA, with certificates for every node.
    let next = c.dir.path().join("next-ca");
    let out = c.cli(&["certs", "init", "--out", next.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // 1. Every node trusts both CAs (one ca.pem, both certificates), then reloads.
    let both = [
        std::fs::read(tls.join("ca.pem")).unwrap(),
        std::fs::read(next.join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(tls.join("ca.pem"), both).unwrap();
    client::set_https(Some(spare::net::tls::https_client(&tls).unwrap()));
    let out = c.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    // 2. lan-1 moves to a certificate of the new CA: the primary, on the old one, accepts it.
    for f in ["lan-1.pem", "lan-1.key"] {
        std::fs::copy(next.join(f), tls.join(f)).unwrap();
    }
    let out = c.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let http = c.http("lan-1");
    wait_until("lan-1 to present its certificate of the new CA", || {
        presented(c, &http) == der_of(&next.join("lan-1.pem"))
    });
    // A new link from the primary (the old one goes on with what it started with).
    c.kill("lan-1");
    c.start("lan-1");
    let lsn = c.exec("INSERT INTO t (v) VALUES ('after')", json!([]));
    c.wait_applied("lan-1", lsn);
    let rows = c.rows("lan-1", "SELECT v FROM t WHERE v = 'after'", lsn);
    assert_eq!(rows, vec![json!(["after"])]);
}
