//! Reads and writes together under load, on the primary and on spares: the freeze of the
//! issue (a few seconds of ordinary reads left nodes unable to answer anything) must not come
//! back, and no acknowledged write may be missing anywhere afterwards.

mod common;

use std::time::{Duration, Instant};

use common::api::*;
use common::Cluster;
use serde_json::json;
use spare::client;

/// The freeze of the issue: 8 readers per node (with and without `min_lsn`) while 4 writers
/// run, with the default limits; every node answers afterwards, and every acknowledged
/// write is on every node.
#[test]
fn reads_and_writes_under_load_leave_every_node_answering_and_identical() {
    const RUN: Duration = Duration::from_secs(30);
    const READERS_PER_NODE: usize = 8;
    const WRITERS: usize = 4;
    let c = cluster_with(&[]);
    let started = Instant::now();
    let (acked, reads) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let c = &c;
                s.spawn(move || write_loop(c, w, started, RUN))
            })
            .collect();
        let readers: Vec<_> = NODES
            .iter()
            .flat_map(|node| (0..READERS_PER_NODE).map(move |r| (*node, r)))
            .map(|(node, r)| {
                let c = &c;
                s.spawn(move || read_loop(c, node, r, started, RUN))
            })
            .collect();
        let acked: Vec<i64> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let reads: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (acked, reads)
    });
    assert!(!acked.is_empty(), "the writers were served");
    assert!(
        reads.iter().all(|&n| n > 0),
        "every reader was served: {reads:?}"
    );
    for node in NODES {
        let status = client::get(&c.http(node), "/v1/status", Duration::from_secs(5));
        assert!(
            status.is_ok_and(|s| s.status == 200),
            "{node} answers status after the load"
        );
    }
    still_whole(&c, "the load");
    let lsn = c.exec("INSERT INTO canary (what) VALUES ('count')", json!([]));
    for node in NODES {
        let mut held = 0;
        for ids in acked.chunks(1000) {
            let marks = vec!["?"; ids.len()].join(", ");
            let sql = format!("SELECT count(*) FROM t WHERE id IN ({marks})");
            let body = json!({ "sql": sql, "params": ids, "min_lsn": lsn });
            held += ok(post(&c, node, "/v1/query", body))["rows"][0][0]
                .as_u64()
                .unwrap();
        }
        assert_eq!(
            held,
            acked.len() as u64,
            "{node} holds every acknowledged write"
        );
    }
    eprintln!(
        "load: {} writes acknowledged, reads per reader {reads:?}",
        acked.len()
    );
}

/// One writer: inserts until `run` is over; returns the ids of its acknowledged rows.
fn write_loop(c: &Cluster, w: usize, started: Instant, run: Duration) -> Vec<i64> {
    let agent = ureq::agent();
    let mut acked = Vec::new();
    let mut i = 0;
    while started.elapsed() < run {
        i += 1;
        let body =
            json!({ "sql": "INSERT INTO t (v) VALUES (?)", "params": [format!("w{w}-{i}")] });
        let (status, answer) = send_with(
            &agent,
            c,
            "main",
            "/v1/execute",
            body.to_string().as_bytes(),
        );
        match status {
            200 => acked.push(answer["results"][0]["last_insert_rowid"].as_i64().unwrap()),
            // Not acknowledged (a lease renewal late on a loaded machine): not counted.
            503 => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("writer {w}: {status} {answer}"),
        }
    }
    acked
}

/// One reader: counts and `SELECT 1`, half of them waiting for the newest LSN it saw.
/// Returns the reads served; only "busy" is an acceptable refusal.
fn read_loop(c: &Cluster, node: &str, r: usize, started: Instant, run: Duration) -> u64 {
    let agent = ureq::agent();
    let mut served = 0;
    let mut seen = 0u64;
    while started.elapsed() < run {
        let (sql, min_lsn) = match served % 4 {
            0 => ("SELECT 1", 0),
            1 => ("SELECT count(*) FROM t", seen),
            2 => ("SELECT count(*) FROM child", 0),
            _ => ("SELECT max(id) FROM t", seen),
        };
        let body = json!({ "sql": sql, "min_lsn": min_lsn }).to_string();
        let (status, body) = send_with(&agent, c, node, "/v1/query", body.as_bytes());
        match status {
            200 => {
                served += 1;
                seen = seen.max(body["lsn"].as_u64().unwrap());
            }
            503 if body["error"] == "busy" => std::thread::sleep(Duration::from_millis(10)),
            _ => panic!("reader {r} on {node}: {status} {body}"),
        }
    }
    served
}
