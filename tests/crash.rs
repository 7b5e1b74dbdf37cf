//! Crashes on real processes (SIGKILL): no acknowledged write is lost, and restarted nodes
//! resume from their position with no gap and no duplicate.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{dump, wait_until, Cluster};
use serde_json::json;

/// Writes per client at most: the load stops by itself even if nothing kills anything.
const MAX_WRITES_PER_CLIENT: usize = 3000;
const CLIENTS: usize = 8;

/// Runs CLIENTS writers inserting unique ids until `stop` (or their budget); returns the ids
/// whose INSERT was acknowledged.
fn load(http: &str, stop: &AtomicBool, acked: &Mutex<Vec<i64>>, count: &AtomicUsize) {
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            s.spawn(move || {
                let agent = spare::client::agent(Duration::from_secs(5));
                for i in 0..MAX_WRITES_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = (client * 1_000_000 + i) as i64;
                    let body = json!({ "sql": "INSERT INTO ledger (id, amount) VALUES (?, abs(random()) % 1000)", "params": [id] });
                    match spare::client::post_with(&agent, http, "/v1/execute", &body) {
                        Ok(r) if r.status == 200 => {
                            acked.lock().unwrap().push(id);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // The primary is gone: this client stops (its unacknowledged write may or may not be there).
                        _ => return,
                    }
                }
            });
        }
    });
}

fn ids(c: &Cluster, node: &str, min_lsn: u64) -> Vec<i64> {
    c.rows(node, "SELECT id FROM ledger ORDER BY id", min_lsn)
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

/// Creates the ledger, runs the load against the primary, and calls `during` with the
/// cluster and the running count of acknowledged writes; stops the load when `during`
/// returns. Returns the acknowledged ids.
fn under_load(c: &mut Cluster, during: impl FnOnce(&mut Cluster, &AtomicUsize)) -> Vec<i64> {
    c.exec(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)",
        json!([]),
    );
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let http = c.http("main");
    std::thread::scope(|s| {
        s.spawn(|| load(&http, &stop, &acked, &count));
        during(c, &count);
        stop.store(true, Ordering::Relaxed);
    });
    acked.into_inner().unwrap()
}

/// Waits until at least `n` writes were acknowledged.
fn wait_acked(count: &AtomicUsize, n: usize) {
    wait_until(&format!("{n} acknowledged writes"), || {
        count.load(Ordering::Relaxed) >= n
    });
}

#[test]
fn kill_9_of_the_primary_under_concurrent_load_loses_no_acknowledged_write() {
    let mut c = Cluster::new(2, false);
    c.start_all();
    let acked = under_load(&mut c, |c, count| {
        wait_acked(count, 300);
        c.kill("main");
    });
    c.start("main");
    let last = c.status("main")["last_lsn"].as_u64().unwrap();
    let on_primary = ids(&c, "main", last);
    let missing: Vec<&i64> = acked
        .iter()
        .filter(|id| on_primary.binary_search(id).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost after kill -9, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // The spares follow the restarted primary and end identical: no gap, no duplicate.
    let primary = dump(&c, "main", last);
    for spare in ["lan-1", "lan-2"] {
        assert_eq!(
            dump(&c, spare, last),
            primary,
            "{spare} differs after the primary restarted"
        );
    }
}

#[test]
fn spare_killed_mid_stream_catches_up_after_restart() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.start_all();
    let acked = under_load(&mut c, |c, count| {
        wait_acked(count, 200);
        c.kill("lan-1");
        let at_kill = count.load(Ordering::Relaxed);
        wait_acked(count, at_kill + 400);
    });
    c.start("lan-1");
    let last = c.status("main")["last_lsn"].as_u64().unwrap();
    c.wait_applied("lan-1", last);
    assert_eq!(dump(&c, "lan-1", last), dump(&c, "main", last));
    assert_eq!(ids(&c, "lan-1", last).len(), acked.len());
    assert!(
        c.log("lan-1").contains("primary connected"),
        "the restarted spare was re-fed"
    );
}

/// The newest segment file of `node`'s log.
fn newest_segment(c: &Cluster, node: &str) -> std::path::PathBuf {
    let dir = c.data_dir(node).join("log");
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[test]
fn torn_write_at_the_end_of_the_primary_log_is_cut_with_a_warning() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    let lsn = c.exec("INSERT INTO t VALUES (1)", json!([]));
    c.kill("main");
    // A crash in the middle of a write leaves the start of a record and nothing more.
    let seg = newest_segment(&c, "main");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    c.start("main");
    assert!(
        c.log("main").contains("cut a torn record"),
        "{}",
        c.log("main")
    );
    let next = c.exec("INSERT INTO t VALUES (2)", json!([]));
    assert!(next > lsn);
    assert_eq!(
        c.rows("lan-1", "SELECT id FROM t ORDER BY id", next),
        vec![json!([1]), json!([2])]
    );
}

/// Offsets of the records in a segment file.
fn record_offsets(seg: &std::path::Path, bytes: &[u8]) -> Vec<usize> {
    let spans = spare::log::segment::record_spans(seg, bytes).unwrap();
    spans.into_iter().map(|(at, _)| at).collect()
}

#[test]
fn a_flipped_length_byte_in_the_newest_segment_stops_the_node_instead_of_cutting_acknowledged_records(
) {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.start_all();
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    let mut acked = Vec::new();
    for i in 1..=5 {
        acked.push(c.exec("INSERT INTO t VALUES (?)", json!([i])));
    }
    c.kill("main");
    let seg = newest_segment(&c, "main");
    let mut bytes = std::fs::read(&seg).unwrap();
    let offsets = record_offsets(&seg, &bytes);
    assert!(
        offsets.len() >= 5,
        "acknowledged records in the newest segment"
    );
    // One bit of the length of a record that acknowledged records follow.
    let at = offsets[offsets.len() - 4];
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let out = c.cli(&["run", "--node", "main"]);
    assert!(
        !out.status.success(),
        "a node with a damaged durable log must not start"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&seg.display().to_string()) && err.contains(&format!("offset {at}")),
        "{err}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

/// Peak resident memory of process `pid` so far (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc status");
    kib / 1024
}

/// A spare that received a large backlog it had not applied (here: held back by
/// `apply_delay`, then restarted without it) replays it at start in bounded batches: its
/// memory stays well below the backlog's size.
#[test]
fn a_spare_restarted_with_a_large_backlog_replays_it_in_bounded_memory() {
    const RECORDS: u64 = 150;
    const PEAK_BOUND_MIB: u64 = 100;
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.node_option("lan-1", "apply_delay = \"1h\"");
    c.start_all();
    c.exec(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)",
        json!([]),
    );
    let mut last = 0;
    for i in 0..RECORDS {
        // One MiB of changes per record: the backlog is about RECORDS MiB.
        last = c.exec("INSERT INTO big VALUES (?, zeroblob(1048576))", json!([i]));
    }
    wait_until("lan-1 to hold the backlog durably", || {
        c.spare_view("lan-1")["flushed_lsn"].as_u64() >= Some(last)
    });
    assert!(c.applied("lan-1") < last, "the backlog is not applied yet");
    c.kill("lan-1");
    c.clear_node_options("lan-1");
    c.non_voting("lan-1");
    c.start("lan-1");
    c.wait_applied("lan-1", last);
    let peak = peak_rss_mib(c.pid("lan-1"));
    eprintln!("replaying {RECORDS} MiB: peak resident memory {peak} MiB");
    assert!(
        peak < PEAK_BOUND_MIB,
        "replaying {RECORDS} MiB took {peak} MiB at its peak"
    );
    assert!(c
        .log("lan-1")
        .contains("replaying the log into the database"));
    let rows = c.rows("lan-1", "SELECT count(*), sum(length(b)) FROM big", last);
    assert_eq!(rows, vec![json!([RECORDS, RECORDS * 1048576])]);
}
