//! The HTTP API over HTTPS (`http_tls`), with the certificates of `spare certs init`. In a
//! test binary of its own: the HTTPS client setting is process-wide.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Cluster;
use serde_json::json;

#[test]
fn the_api_serves_https_with_the_node_certificates_and_the_cli_follows() {
    let mut c = Cluster::new(1, true);
    c.cluster_option("tls_dir = \"tls\"");
    c.cluster_option("http_tls = true");
    let out = c.cli(&["certs", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls = c.dir.path().join("tls");
    spare::client::set_https(Some(spare::net::tls::https_client(&tls).unwrap()));
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    let out = c.cli(&["sql", "INSERT INTO t (id) VALUES (7)"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The monitor polls every node over HTTPS too.
    common::wait_until("spare status to show lan-1 streaming", || {
        let out = c.cli(&["status"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("streaming")
    });

    // Plain HTTP gets no answer.
    let mut s = std::net::TcpStream::connect(c.http("main")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("\"role\""),
        "plain HTTP was served"
    );
}
