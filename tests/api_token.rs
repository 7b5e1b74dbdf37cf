//! The HTTP API token (`api_token_file`, `api_token_reads`): JSON 401/403, constant-time
//! check on the nodes, carried by the command line and by the nodes' own calls. The tests of
//! this file take turns: the token this process sends is process-wide.

mod common;

use std::sync::Mutex;

use common::Cluster;
use serde_json::json;
use spare::client;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn the_api_token_guards_writes_and_admin_routes_with_json_errors() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    client::set_token(None);
    let mut c = Cluster::new(1, false);
    std::fs::write(c.dir.path().join("api.token"), "token-0123456789abcdef\n").unwrap();
    c.cluster_option("api_token_file = \"api.token\"");
    c.start_all();
    let body = json!({ "sql": "CREATE TABLE t (id INTEGER PRIMARY KEY)" });
    // This test process sends no token until it sets one.
    let r = client::post(&c.http("main"), "/v1/execute", &body, common::TIMEOUT).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "unauthorized");
    client::set_token(Some("wrong-token-0000000000".into()));
    let r = client::post(
        &c.http("main"),
        "/v1/admin/reload",
        &json!({}),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    client::set_token(None);
    let r = client::post(
        &c.http("main"),
        "/v1/query",
        &json!({ "sql": "SELECT 1" }),
        common::TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        r.status, 200,
        "reads are open unless api_token_reads: {}",
        r.body
    );
    // The command line reads the token from the configuration.
    let out = c.cli(&["sql", "CREATE TABLE t (id INTEGER PRIMARY KEY)"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reading on a spare without --min-lsn sees what it applied: wait for the table first
    // (a run once read before lan-1 applied it: the test is about the token, not the lag).
    c.wait_applied("lan-1", c.applied("main"));
    let out = c.cli(&["sql", "--node", "lan-1", "SELECT count(*) FROM t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_api_token_reads_even_queries_need_the_token() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::new(1, true);
    std::fs::write(c.dir.path().join("api.token"), "token-0123456789abcdef\n").unwrap();
    c.cluster_option("api_token_file = \"api.token\"");
    c.cluster_option("api_token_reads = true");
    // The harness waits for the nodes through this process's client: it needs the token.
    client::set_token(Some("token-0123456789abcdef".into()));
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    let raw = ureq::get(&format!("http://{}/v1/status", c.http("lan-1"))).call();
    assert!(
        matches!(raw, Err(ureq::Error::Status(401, _))),
        "a read without the token"
    );
    // The monitor polls with the token from the configuration: the cluster view is complete
    // (exit 0: no problem listed, once its next poll saw lan-1 streaming).
    common::wait_until("a clean status", || c.cli(&["status"]).status.success());
    let out = c.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("unreachable"));
}
