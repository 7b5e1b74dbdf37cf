//! Backups (DESIGN.md §9) on real processes: an online backup under concurrent writes is
//! consistent (exactly the transactions up to its LSN) and restores as a new spare that
//! continues from there; a point-in-time restore lands on the asked LSN; scheduled backups
//! roll.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Cluster};
use serde_json::json;
use spare::client;

fn stdout(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Ids in table t of the SQLite file at `path`, and its applied LSN.
fn ids_in(path: &std::path::Path) -> (Vec<u64>, u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut st = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
    let ids = st
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() as u64)
        .collect();
    let lsn: i64 = conn
        .query_row(
            "SELECT value FROM _spare_meta WHERE key = 'applied_lsn'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (ids, lsn as u64)
}

/// Inserts rows one per transaction from 2 threads until `stop`; returns (id, lsn) acked.
fn writers(c: &Cluster, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<(u64, u64)>>> {
    (0..2u64)
        .map(|w| {
            let (http, stop) = (c.http("main"), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let started = Instant::now();
                let mut id = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    id += 1;
                    let body = json!({ "sql": "INSERT INTO t (id, body) VALUES (?, 'row')", "params": [id] });
                    if let Ok(r) = client::post(&http, "/v1/execute", &body, Duration::from_secs(10)) {
                        if r.status == 200 {
                            acked.push((id, r.body["lsn"].as_u64().unwrap()));
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

#[test]
fn an_online_backup_under_writes_holds_exactly_its_lsn_and_restores_as_a_spare_that_continues() {
    let mut c = Cluster::new(2, false);
    c.non_voting("lan-2");
    c.start("main");
    c.start("lan-1");
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let threads = writers(&c, stop.clone());
    wait_until("rows to flow", || {
        c.status("main")["last_lsn"].as_u64().unwrap_or(0) > 200
    });
    let file = c.dir.path().join("b1.sqlite");
    let out = c.cli(&["backup", "--out", file.to_str().unwrap(), "--node", "lan-1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    let info: serde_json::Value =
        serde_json::from_str(&common::read_file(&c.dir.path().join("b1.sqlite.json"))).unwrap();
    let b = info["position"]["lsn"].as_u64().unwrap();
    let (ids, lsn) = ids_in(&file);
    assert_eq!(lsn, b, "the file's own LSN is its description's");
    let mut expected: Vec<u64> = acked
        .iter()
        .filter(|(_, l)| *l <= b)
        .map(|(i, _)| *i)
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "exactly the transactions up to LSN {b}");
    assert!(
        acked.iter().any(|(_, l)| *l > b),
        "writes went on during the backup"
    );

    // Refused over a running node's data; accepted into an empty one, which then continues.
    let out = c.cli(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--node",
        "lan-1",
    ]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("in use by a running spare process"),
        "{}",
        stdout(&out)
    );
    let out = c.cli(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--node",
        "lan-2",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    c.start("lan-2");
    let last = c.status("main")["last_lsn"].as_u64().unwrap();
    c.wait_applied("lan-2", last);
    let n = |node: &str| {
        c.rows(node, "SELECT count(*) FROM t", last)[0][0]
            .as_u64()
            .unwrap()
    };
    assert_eq!(n("lan-2"), n("main"));
    assert!(
        !c.log("main")
            .contains("seeding spare from a snapshot spare=lan-2"),
        "it continued from the backup, no seed"
    );
}

#[test]
fn a_point_in_time_restore_lands_on_the_asked_lsn_or_time() {
    let mut c = Cluster::new(2, false);
    c.non_voting("lan-1");
    c.non_voting("lan-2");
    c.cluster_option("retention_bytes = \"512KiB\"");
    c.node_option("main", "log_archive_dir = \"archive\"");
    c.start("main");
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let file = c.dir.path().join("base.sqlite");
    let out = c.cli(&["backup", "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    // Enough rows to fill and archive several 64 KiB segments.
    let mut acked = Vec::new();
    for id in 1..=600u64 {
        let body = json!({ "sql": "INSERT INTO t (id, body) VALUES (?, ?)", "params": [id, "x".repeat(400)] });
        let r = c.execute_on("main", body);
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push((id, r.body["lsn"].as_u64().unwrap()));
    }
    let archive = c.dir.path().join("archive");
    let archived = spare::log::last_lsn_in(&archive)
        .unwrap()
        .expect("segments archived");
    let (target_id, target) = acked[acked.len() / 3];
    assert!(
        archived >= target,
        "the archive reaches {archived}, target {target}"
    );
    // `spare restore` of the backup into NODE's empty directory, rolled forward through
    // ARCHIVE to a target: whether it succeeded, and what it printed.
    let restore = |node: &str, archive: &std::path::Path, until: &str, to: &str| {
        let out = c.cli(&[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--node",
            node,
            "--archive",
            archive.to_str().unwrap(),
            until,
            to,
        ]);
        (out.status.success(), stdout(&out))
    };
    let (ok, said) = restore("lan-1", &archive, "--until-lsn", &target.to_string());
    assert!(ok && said.contains(&format!("to LSN {target}")), "{said}");
    // Refused before anything is copied: a point before the backup, by LSN or by time.
    for (until, to) in [
        ("--until-lsn", "1"),
        ("--until-time", "2000-01-01T00:00:00Z"),
    ] {
        let (ok, said) = restore("lan-2", &archive, until, to);
        assert!(!ok && said.contains("restore an older backup"), "{said}");
    }
    // An archive that lost its first segment: the roll forward fails half way and the
    // directory is emptied again (no node starts on a restore short of its target).
    let gappy = c.dir.path().join("gappy");
    std::fs::create_dir_all(&gappy).unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    for seg in segments.iter().skip(1) {
        std::fs::copy(seg, gappy.join(seg.file_name().unwrap())).unwrap();
    }
    let (ok, said) = restore("lan-2", &gappy, "--until-lsn", &target.to_string());
    assert!(!ok && said.contains("nothing was restored"), "{said}");
    let left: Vec<_> = std::fs::read_dir(c.data_dir("lan-2")).unwrap().collect();
    assert!(left.is_empty(), "a failed roll forward left {left:?}");
    // By time: a time after every archived commit rolls through the whole archive.
    let end = spare::log::last_lsn_in(&archive).unwrap().unwrap();
    let (ok, said) = restore("lan-2", &archive, "--until-time", "2100-01-01T00:00:00Z");
    assert!(ok && said.contains(&format!("to LSN {end}")), "{said}");
    assert!(said.contains("the archive ends there"), "{said}");
    // The node's own start-up recovery applies the rolled-forward records.
    let data = c.data_dir("lan-1");
    drop(spare::store::recovery::recover(&data, 64 * 1024).unwrap());
    let (ids, lsn) = ids_in(&data.join("db.sqlite"));
    assert_eq!(lsn, target);
    assert_eq!(ids, (1..=target_id).collect::<Vec<_>>());
}

#[test]
fn scheduled_backups_roll_keeping_the_newest_of_the_day() {
    let mut c = Cluster::new(0, false);
    c.node_option("main", "backup_dir = \"backups\"\nbackup_every = \"1s\"\nbackup_keep_daily = 2\nbackup_keep_monthly = 0");
    c.start("main");
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    let taken = |c: &Cluster| c.log("main").matches("scheduled backup taken").count();
    wait_until("three scheduled backups", || taken(&c) >= 3);
    let files: Vec<String> = std::fs::read_dir(c.dir.path().join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sqlite"))
        .collect();
    assert_eq!(files.len(), 1, "one per day, the newest: {files:?}");
    let (ids, at) = ids_in(&c.dir.path().join("backups").join(&files[0]));
    assert!(
        ids.is_empty() && at >= lsn,
        "the newest backup holds the table"
    );
}

#[test]
fn a_backup_starts_a_new_cluster_that_takes_writes_and_seeds_its_spare() {
    let mut old = Cluster::new(0, false);
    old.start("main");
    old.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    );
    for id in 1..=5 {
        old.exec("INSERT INTO t (id, body) VALUES (?, 'kept')", json!([id]));
    }
    let file = old.dir.path().join("export.sqlite");
    let out = old.cli(&["backup", "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let mut new = Cluster::new(1, false);
    let copy = new.dir.path().join("export.sqlite");
    std::fs::copy(&file, &copy).unwrap();
    std::fs::copy(
        spare::store::backup::info_path(&file),
        spare::store::backup::info_path(&copy),
    )
    .unwrap();
    drop(old);
    let out = new.cli(&[
        "restore",
        "--from",
        copy.to_str().unwrap(),
        "--node",
        "main",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    new.start_all();
    assert_eq!(
        new.rows("main", "SELECT count(*) FROM t", 0),
        vec![json!([5])]
    );
    let lsn = new.exec("INSERT INTO t (id, body) VALUES (6, 'new')", json!([]));
    assert_eq!(
        new.rows("lan-1", "SELECT count(*) FROM t", lsn),
        vec![json!([6])]
    );
}

/// The guide's own command (docs/backups.md), `spare backup --out shop-backup.sqlite --node lan-1`: a bare
/// file name lands in the current directory with its description; a missing directory is
/// refused before anything is downloaded, leaving nothing behind.
#[test]
fn a_backup_to_a_bare_file_name_lands_in_the_current_directory() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    let run = |out: &str| {
        std::process::Command::new(common::bin())
            .args(["backup", "--out", out, "--node", "lan-1"])
            .env("SPARE_CONFIG", &c.config)
            .current_dir(c.dir.path())
            .output()
            .unwrap()
    };
    let out = run("shop-backup.sqlite");
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(c.dir.path().join("shop-backup.sqlite").is_file());
    assert!(c.dir.path().join("shop-backup.sqlite.json").is_file());
    let (_, at) = ids_in(&c.dir.path().join("shop-backup.sqlite"));
    assert!(at >= lsn);

    let out = run("no-such-dir/b.sqlite");
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("mkdir -p no-such-dir"),
        "{}",
        stdout(&out)
    );
    assert!(!c.dir.path().join("no-such-dir").exists());
}

/// main and lan-1 running (lan-2 configured, stopped; none voting), with table t created:
/// the cluster and the table's LSN.
fn main_and_lan_1_with_a_table() -> (Cluster, u64) {
    let mut c = Cluster::new(2, false);
    c.non_voting("lan-1");
    c.non_voting("lan-2");
    c.start("main");
    c.start("lan-1");
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)",
        json!([]),
    );
    (c, lsn)
}

/// `spare backup` and `spare restore` draw a progress bar on a terminal, and none (no
/// carriage return, no escape code) into a file or a pipe.
#[test]
fn backup_and_restore_show_progress_on_a_terminal_only() {
    let (c, lsn) = main_and_lan_1_with_a_table();
    c.exec(
        "INSERT INTO t (body) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) SELECT printf('%.500c', 'x') FROM n",
        json!([]),
    );
    c.wait_applied("lan-1", lsn);
    let shown = c.cli_on_terminal("backup --out b.sqlite --node lan-1");
    assert!(shown.contains("downloading"), "{shown}");
    assert!(shown.contains("backup of lan-1 at LSN"), "{shown}");
    let shown = c.cli_on_terminal("restore --from b.sqlite --node lan-2");
    assert!(shown.contains("restoring"), "{shown}");
    assert!(shown.contains("restored b.sqlite"), "{shown}");

    // stdout a pipe (a script reading the result), stderr still the terminal: no bar.
    let shown = c.cli_on_terminal("backup --out d.sqlite --node lan-1 | cat");
    assert!(shown.contains("backup of lan-1 at LSN"), "{shown}");
    assert!(!shown.contains("downloading"), "{shown}");
    let out = std::process::Command::new(common::bin())
        .args(["backup", "--out", "c.sqlite", "--node", "lan-1"])
        .env("SPARE_CONFIG", &c.config)
        .current_dir(c.dir.path())
        .output()
        .unwrap();
    let said = stdout(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("downloading"), "{said}");
    assert!(!said.contains('\r') && !said.contains('\x1b'), "{said:?}");
}

/// A restore refused or failed half way leaves the data directory empty, and a directory
/// marked as an unfinished restore (a crash mid-copy) is refused at start: a database
/// without its log's base would start a wrong history.
#[test]
fn a_failed_restore_leaves_nothing_and_an_unfinished_one_cannot_start() {
    let (c, lsn) = main_and_lan_1_with_a_table();
    c.wait_applied("lan-1", lsn);
    let dir = c.dir.path();
    let out = c.cli(&[
        "backup",
        "--out",
        dir.join("b.sqlite").to_str().unwrap(),
        "--node",
        "lan-1",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    // A copy changed after its description was written: refused, nothing left.
    let mut bytes = std::fs::read(dir.join("b.sqlite")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(dir.join("bad.sqlite"), bytes).unwrap();
    std::fs::copy(dir.join("b.sqlite.json"), dir.join("bad.sqlite.json")).unwrap();
    let data = c.data_dir("lan-2");
    let empty = |what: &str| {
        let left: Vec<_> = std::fs::read_dir(&data)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{what} left {left:?} in {}",
            data.display()
        );
    };
    // `spare restore --from FILE --node lan-2 EXTRA...` is refused saying `says`, and leaves
    // lan-2's directory empty.
    let refused = |file: &str, extra: &[&str], says: &str| {
        let from = dir.join(file);
        let mut args = vec![
            "restore",
            "--from",
            from.to_str().unwrap(),
            "--node",
            "lan-2",
        ];
        args.extend_from_slice(extra);
        let out = c.cli(&args);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(stdout(&out).contains(says), "{}", stdout(&out));
        empty(says);
    };
    refused("bad.sqlite", &[], "does not match its description");
    // A stopped node's files are never overwritten, nor removed.
    std::fs::write(data.join("node.state"), b"{}").unwrap();
    let good = dir.join("b.sqlite");
    let out = c.cli(&[
        "restore",
        "--from",
        good.to_str().unwrap(),
        "--node",
        "lan-2",
    ]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("not empty"), "{}", stdout(&out));
    let left: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["node.state"],
        "the refused restore changed the directory"
    );
    std::fs::remove_file(data.join("node.state")).unwrap();
    // A target past the archive's end is refused before anything is copied.
    let archive = dir.join("empty-archive");
    std::fs::create_dir_all(&archive).unwrap();
    let past = [
        "--archive",
        archive.to_str().unwrap(),
        "--until-lsn",
        "999999",
    ];
    refused("b.sqlite", &past, "nothing was restored");
    // A crash mid-restore leaves the mark: the node refuses to start and says what to do.
    std::fs::write(data.join(spare::store::backup::RESTORING_MARK), b"").unwrap();
    let mut run = std::process::Command::new(common::bin())
        .args(["run", "--node", "lan-2"])
        .env("SPARE_CONFIG", &c.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while run.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = run.kill();
    let out = run.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the node started on an unfinished restore"
    );
    assert!(said.contains("unfinished `spare restore`"), "{said}");
}
