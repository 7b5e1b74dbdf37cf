//! Many spares (DESIGN.md §4, §5): a stalled or cut spare never holds back commits or the
//! other spares and costs the primary bounded memory; a spare that was away past the
//! retention budget, or whose history diverged, comes back through re-seeding; an
//! interrupted seed resumes where it stopped.

mod common;

use std::time::Duration;

use common::{dump, wait_until, Cluster};
use serde_json::{json, Value};

/// Writes `txns` transactions of `rows` rows of `row_bytes` each; returns the last LSN.
fn write_volume(c: &Cluster, txns: usize, rows: usize, row_bytes: usize) -> u64 {
    let payload = "x".repeat(row_bytes);
    let mut lsn = 0;
    for _ in 0..txns {
        let batch: Vec<Value> = (0..rows).map(|_| json!({ "sql": "INSERT INTO blob_rows (body) VALUES (?)", "params": [payload] })).collect();
        let r = c.execute_on("main", json!({ "batch": batch }));
        assert_eq!(r.status, 200, "{}", r.body);
        lsn = r.body["lsn"].as_u64().unwrap();
    }
    lsn
}

fn create_table(c: &Cluster) -> u64 {
    c.exec(
        "CREATE TABLE blob_rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    )
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn stalled_spare_holds_back_neither_commits_nor_the_other_spare() {
    let mut c = Cluster::new(2, false);
    let proxy = c.proxy("lan-2");
    c.start_all();
    let start = create_table(&c);
    c.wait_applied("lan-2", start);
    proxy.stall();
    let last = write_volume(&c, 300, 10, 200);
    // lan-1 applied every commit while lan-2 is stalled.
    c.wait_applied("lan-1", last);
    assert!(
        c.applied("lan-2") < last,
        "the stalled spare cannot have everything"
    );
    let lag = c.spare_view("lan-2")["lag"].clone();
    assert!(lag["records"].as_u64().unwrap() > 0, "{lag}");
    // Its lag in seconds is the age of its oldest missing write, not zero.
    std::thread::sleep(Duration::from_millis(300));
    let lag = c.spare_view("lan-2")["lag"].clone();
    assert!(lag["seconds"].as_f64().unwrap() >= 0.3, "{lag}");
    proxy.pass();
    c.wait_applied("lan-2", last);
    assert_eq!(dump(&c, "lan-2", last), dump(&c, "main", last));
}

#[test]
fn primary_memory_stays_bounded_while_a_spare_is_stalled_through_a_long_load() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.node_option("lan-1", "window = \"1MiB\"");
    let proxy = c.proxy("lan-1");
    c.start_all();
    create_table(&c);
    write_volume(&c, 20, 10, 1000);
    proxy.stall();
    let before = rss(c.pid("main"));
    // About 60 MB of log while the spare takes nothing.
    let last = write_volume(&c, 600, 100, 1000);
    let after = rss(c.pid("main"));
    let growth = after.saturating_sub(before);
    eprintln!(
        "primary RSS before {} KiB, after {} KiB (growth {} KiB) while a spare was stalled",
        before >> 10,
        after >> 10,
        growth >> 10
    );
    assert!(
        growth < 48 * 1024 * 1024,
        "primary grew by {} MiB while a spare was stalled",
        growth >> 20
    );
    proxy.pass();
    c.wait_applied("lan-1", last);
}

#[test]
fn spare_cut_off_past_the_retention_budget_is_reseeded_and_converges() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.cluster_option("retention_bytes = \"256KiB\"");
    let proxy = c.proxy("lan-1");
    c.start_all();
    let lsn = create_table(&c);
    c.wait_applied("lan-1", lsn);
    proxy.cut();
    let last = write_volume(&c, 100, 10, 1000);
    let oldest = c.status("main")["oldest_lsn"].as_u64().unwrap();
    assert!(
        oldest > lsn + 1,
        "the primary kept its whole log ({oldest}) despite the budget"
    );
    let log_bytes: u64 = std::fs::read_dir(c.data_dir("main").join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        log_bytes < 1024 * 1024,
        "the primary's log holds {log_bytes} bytes, far above its 256 KiB budget"
    );
    proxy.pass();
    c.wait_applied("lan-1", last);
    assert_eq!(dump(&c, "lan-1", last), dump(&c, "main", last));
    assert!(
        c.log("main").contains("seeding spare from a snapshot"),
        "{}",
        c.log("main")
    );
    // And it follows new writes from the log again.
    let next = c.exec("INSERT INTO blob_rows (body) VALUES ('after')", json!([]));
    c.wait_applied("lan-1", next);
}

/// Rewrites one row `times` times with `bytes` of text: much log, a small database.
fn rewrite_one_row(c: &Cluster, times: usize, bytes: usize) -> u64 {
    let mut lsn = 0;
    for i in 0..times {
        let body = format!("{i:08}").repeat(bytes / 8);
        let r = c.execute_on(
            "main",
            json!({ "sql": "UPDATE blob_rows SET body = ? WHERE id = 1", "params": [body] }),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        lsn = r.body["lsn"].as_u64().unwrap();
    }
    lsn
}

/// The primary's log lines about seeding `spare` to save time.
fn seeded_to_save_time(c: &Cluster, spare: &str) -> bool {
    c.log("main").lines().any(|l| {
        l.contains("seeding spare from a snapshot")
            && l.contains(&format!("spare={spare}"))
            && l.contains("would take longer than copying")
    })
}

#[test]
fn spare_that_missed_more_log_than_a_copy_costs_is_seeded_and_a_paused_or_remote_one_replays() {
    let mut c = Cluster::new(3, false);
    c.non_voting("lan-1");
    c.non_voting("lan-2");
    c.non_voting("lan-3");
    // lan-3 is a remote spare: over a WAN the log crosses compressed, a copy does not.
    c.cluster_option("tls_dir = \"tls\"");
    c.node_option("lan-3", "link = \"wan\"");
    let out = c.cli(&["certs", "init"]);
    assert!(out.status.success(), "{out:?}");
    c.start_all();
    create_table(&c);
    let first = c.exec(
        "INSERT INTO blob_rows (id, body) VALUES (1, 'x')",
        json!([]),
    );
    for spare in ["lan-1", "lan-2", "lan-3"] {
        c.wait_applied(spare, first);
    }
    let out = c.cli(&["pause", "lan-2"]);
    assert!(out.status.success(), "{out:?}");
    for spare in ["lan-1", "lan-2", "lan-3"] {
        c.kill(spare);
    }
    // About 24 MB of log (old and new value of each update) for a database under 1 MB.
    let last = rewrite_one_row(&c, 60, 200 * 1024);
    c.start("lan-1");
    c.wait_applied("lan-1", last);
    assert!(seeded_to_save_time(&c, "lan-1"), "{}", c.log("main"));
    assert_eq!(dump(&c, "lan-1", last), dump(&c, "main", last));
    // Started after lan-1's seed ended, so no other copy holds it back: the link does.
    c.start("lan-3");
    c.wait_applied("lan-3", last);
    assert!(!seeded_to_save_time(&c, "lan-3"), "{}", c.log("main"));
    assert_eq!(dump(&c, "lan-3", last), dump(&c, "main", last));
    c.start("lan-2");
    // The paused spare keeps its history: it receives the log and applies nothing.
    let mut seen = Value::Null;
    let received = (0..300).any(|_| {
        seen = c.status("lan-2");
        std::thread::sleep(Duration::from_millis(100));
        seen["flushed_lsn"].as_u64().is_some_and(|f| f >= last)
    });
    assert!(
        received,
        "lan-2 never received up to {last}: {seen}\n{}\n{}",
        c.log("main"),
        c.log("lan-2")
    );
    let body = c.rows("lan-2", "SELECT body FROM blob_rows WHERE id = 1", 0);
    assert_eq!(
        body[0][0], "x",
        "a paused spare applies nothing of what it received"
    );
    assert!(!seeded_to_save_time(&c, "lan-2"), "{}", c.log("main"));
    let out = c.cli(&["resume", "lan-2"]);
    assert!(out.status.success(), "{out:?}");
    c.wait_applied("lan-2", last);
    assert_eq!(dump(&c, "lan-2", last), dump(&c, "main", last));
}

#[test]
fn interrupted_seed_resumes_where_it_stopped_and_converges() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.cluster_option("retention_bytes = \"256KiB\"");
    let proxy = c.proxy("lan-1");
    c.start("main");
    create_table(&c);
    let last = write_volume(&c, 60, 50, 1000);
    // About 3 MB to seed at 1 MB/s: cut it a third of the way.
    proxy.rate(1024 * 1024);
    c.start("lan-1");
    wait_until("the seed to pass 30 %", || {
        let s = c.status("lan-1");
        let (done, total) = (
            s["seed"]["bytes_done"].as_f64(),
            s["seed"]["bytes_total"].as_f64(),
        );
        matches!((done, total), (Some(d), Some(t)) if d > 0.3 * t)
    });
    proxy.cut();
    std::thread::sleep(Duration::from_millis(300));
    proxy.rate(0);
    proxy.pass();
    c.wait_applied("lan-1", last);
    assert!(
        c.log("main")
            .contains("resuming the seed where the spare stopped"),
        "{}",
        c.log("main")
    );
    assert_eq!(dump(&c, "lan-1", last), dump(&c, "main", last));
}

#[test]
fn diverged_spare_quarantines_its_own_records_and_is_reseeded() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.start_all();
    c.exec(
        "CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let old = c.exec(
        "INSERT INTO note (body) VALUES ('only on the old history')",
        json!([]),
    );
    c.wait_applied("lan-1", old);
    let old = c.exec(
        "INSERT INTO note (body) VALUES ('also only on the old history')",
        json!([]),
    );
    c.wait_applied("lan-1", old);
    // The operator re-creates the primary from scratch: a new history with other records.
    c.kill("main");
    c.kill("lan-1");
    std::fs::remove_dir_all(c.data_dir("main")).unwrap();
    c.start("main");
    c.exec(
        "CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    c.exec("INSERT INTO note (body) VALUES ('new history')", json!([]));
    let last = c.exec(
        "INSERT INTO note (body) VALUES ('new history, second')",
        json!([]),
    );
    c.start("lan-1");
    c.wait_applied("lan-1", last);
    wait_until("lan-1 to hold the new history", || {
        dump(&c, "lan-1", last) == dump(&c, "main", last)
    });
    let q = c.data_dir("lan-1").join("quarantine");
    let folder = std::fs::read_dir(&q)
        .expect("a quarantine folder")
        .next()
        .unwrap()
        .unwrap()
        .path();
    let records = std::fs::read_to_string(folder.join("records.jsonl")).unwrap();
    assert!(
        records.contains("\"note\""),
        "the quarantined records name the table they touched: {records}"
    );
    let kept = rusqlite::Connection::open(folder.join("db.sqlite")).unwrap();
    let bodies: Vec<String> = kept
        .prepare("SELECT body FROM note ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec!["only on the old history", "also only on the old history"]
    );
}

#[test]
fn spare_whose_copy_was_changed_behind_its_back_is_reseeded_and_its_copy_quarantined() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    c.exec(
        "CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let lsn = c.exec("INSERT INTO note VALUES (1, 'original')", json!([]));
    c.wait_applied("lan-1", lsn);
    // Someone edits the spare's database file directly.
    let tampered = rusqlite::Connection::open(c.data_dir("lan-1").join("db.sqlite")).unwrap();
    tampered.busy_timeout(Duration::from_secs(5)).unwrap();
    tampered
        .execute(
            "UPDATE note SET body = 'edited on the spare' WHERE id = 1",
            [],
        )
        .unwrap();
    drop(tampered);
    // The next change to that row conflicts on the spare: it must not be skipped.
    let last = c.exec(
        "UPDATE note SET body = 'changed on the primary' WHERE id = 1",
        json!([]),
    );
    wait_until("lan-1 to be re-seeded with the primary's row", || {
        c.status("lan-1")["applied_lsn"].as_u64().unwrap_or(0) >= last
            && c.rows("lan-1", "SELECT body FROM note", 0)
                == vec![json!(["changed on the primary"])]
    });
    let q = c.data_dir("lan-1").join("quarantine");
    let folder = std::fs::read_dir(&q)
        .expect("a quarantine folder")
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kept = rusqlite::Connection::open(folder.join("db.sqlite")).unwrap();
    let body: String = kept
        .query_row("SELECT body FROM note WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "edited on the spare");
    assert!(
        c.log("main").contains("the spare cannot apply"),
        "{}",
        c.log("main")
    );
}

#[test]
fn two_spares_seeded_at_the_same_time_both_converge() {
    let mut c = Cluster::new(2, false);
    c.non_voting("lan-1");
    c.non_voting("lan-2");
    let p1 = c.proxy("lan-1");
    let p2 = c.proxy("lan-2");
    c.start("main");
    create_table(&c);
    let last = write_volume(&c, 20, 50, 1000);
    // About 1 MB each, at different speeds: one seed ends (and tidies the snapshots) while
    // the other is still running.
    p1.rate(4 * 1024 * 1024);
    p2.rate(1024 * 1024);
    c.start("lan-1");
    c.start("lan-2");
    c.wait_applied("lan-1", last);
    c.wait_applied("lan-2", last);
    let primary = dump(&c, "main", last);
    assert_eq!(dump(&c, "lan-1", last), primary);
    assert_eq!(dump(&c, "lan-2", last), primary);
}

/// A fault that is not a divergence (here SQLITE_BUSY: another process holds the spare's
/// database for longer than the busy timeout) is retried, with an alert, and applying goes
/// on once it clears: no quarantine, no re-seed.
#[test]
fn a_transient_apply_error_is_retried_not_taken_for_a_divergence() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    let db = rusqlite::Connection::open(c.data_dir("lan-1").join("db.sqlite")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let lsn = c.exec("INSERT INTO t VALUES (1)", json!([]));
    // Longer than the spare's busy timeout (5 s): its apply fails at least once.
    wait_until("lan-1 to report the failed apply", || {
        c.log("lan-1").contains("applying failed")
    });
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    c.wait_applied("lan-1", lsn);
    let log = c.log("lan-1");
    assert!(!log.contains("must be re-seeded"), "{log}");
    assert!(!c.data_dir("lan-1").join("quarantine").exists());
    assert_eq!(c.rows("lan-1", "SELECT id FROM t", lsn), vec![json!([1])]);
    let events = spare::client::get(&c.http("lan-1"), "/v1/events", common::TIMEOUT).unwrap();
    assert!(
        events.body.to_string().contains("apply_error"),
        "{}",
        events.body
    );
}

#[test]
fn a_partial_seed_the_primary_no_longer_sends_is_deleted_once_the_spare_streams() {
    use spare::log::Position;
    use spare::store::snapshot::{PartialSeed, SnapshotInfo};
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.start_all();
    let first = create_table(&c);
    c.wait_applied("lan-1", first);
    c.kill("lan-1");
    // What an interrupted seed of a snapshot the primary has since deleted leaves behind.
    let seed = c.data_dir("lan-1").join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("partial.sqlite"), vec![7u8; 64 * 1024]).unwrap();
    let partial = PartialSeed {
        info: SnapshotInfo {
            id: "0123456789abcdef".into(),
            position: Position::default(),
            size: 1 << 20,
            crc: 1,
        },
        offset: 64 * 1024,
    };
    std::fs::write(
        seed.join("partial.json"),
        serde_json::to_vec(&partial).unwrap(),
    )
    .unwrap();
    c.start("lan-1");
    let lsn = c.exec(
        "INSERT INTO blob_rows (id, body) VALUES (1, 'x')",
        json!([]),
    );
    c.wait_applied("lan-1", lsn);
    wait_until("the stale partial seed to be deleted", || {
        !seed.join("partial.sqlite").exists() && !seed.join("partial.json").exists()
    });
    assert!(
        c.log("lan-1").contains("deleting the partial seed"),
        "{}",
        c.log("lan-1")
    );
    assert_eq!(dump(&c, "lan-1", lsn), dump(&c, "main", lsn));
}
