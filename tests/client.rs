//! `spare::Client` finds the primary by itself: it follows "not the primary" answers and
//! skips nodes that do not answer, with no DNS change.

mod common;

use common::Cluster;
use serde_json::json;
use spare::client::Client;
use spare::error::Error;

#[test]
fn client_finds_the_primary_through_a_spare_and_past_a_dead_address() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let client = Client::new(vec![
        "127.0.0.1:1".to_string(),
        c.http("lan-1"),
        c.http("main"),
    ]);
    let created = client
        .execute(&json!({ "sql": "CREATE TABLE t (id INTEGER PRIMARY KEY)" }))
        .unwrap();
    let inserted = client
        .execute(&json!({ "sql": "INSERT INTO t VALUES (?)", "params": [7] }))
        .unwrap();
    assert!(inserted["lsn"].as_u64() > created["lsn"].as_u64());
    let rows = client
        .query(
            &c.http("lan-1"),
            &json!({ "sql": "SELECT id FROM t", "min_lsn": inserted["lsn"] }),
        )
        .unwrap();
    assert_eq!(rows["rows"], json!([[7]]));
    let err = client
        .execute(&json!({ "sql": "INSERT INTO nowhere VALUES (1)" }))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Sql(m) if m.contains("no such table")),
        "{err:?}"
    );
    let nobody =
        Client::new(vec!["127.0.0.1:1".to_string()]).with_retry_for(std::time::Duration::ZERO);
    assert!(matches!(
        nobody.execute(&json!({ "sql": "SELECT 1" })),
        Err(Error::NotTaken(_))
    ));
}
