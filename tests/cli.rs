//! The command line as a user drives it: `spare up` on a fresh configuration, `spare sql`,
//! `spare status`, `--help`, and precise refusals of bad configuration files.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{wait_until, Cluster};
use serde_json::Value;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `spare run --node main` on `text` written as a configuration; returns its failure.
fn run_refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("cluster.secret"), common::SECRET).unwrap();
    let out = Command::new(common::bin())
        .args(["run", "--node", "main", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a bad configuration was accepted:\n{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&path.display().to_string()),
        "the message names the file: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn bad_configuration_files_are_refused_naming_file_node_and_field() {
    let c = Cluster::new(1, false);
    let good = std::fs::read_to_string(&c.config).unwrap();
    let lan = c.node("lan-1").clone();
    let e =
        run_refused(&good.replace("role = \"spare\"", "role = \"spare\"\napply_dealy = \"5m\""));
    assert!(
        e.contains("node \"lan-1\": field \"apply_dealy\": unknown key"),
        "{e}"
    );
    let e = run_refused(&good.replace(
        &format!("http = \"{}\"", lan.http),
        "http = \"127.0.0.1:70000\"",
    ));
    assert!(
        e.contains("node \"lan-1\": field \"http\"") && e.contains("not an address"),
        "{e}"
    );
    let e = run_refused(&good.replace("role = \"spare\"", "role = \"primary\""));
    assert!(e.contains("2 nodes have role = \"primary\""), "{e}");
    let e = run_refused(&good.replace("name = \"lan-1\"", "name = \"main\""));
    assert!(e.contains("duplicate node name"), "{e}");
    let e = run_refused(&good.replace("lease = \"2s\"", "lease = \"soon\""));
    assert!(e.contains("[cluster]: field \"lease\""), "{e}");
    let e = run_refused("[cluster]\nname = \"x\"\n[[node]\n");
    assert!(e.contains("not valid TOML"), "{e}");
    let e = run_refused(&good.replace(
        "data_dir = \"data/main\"",
        "data_dir = \"/proc/forbidden/main\"",
    ));
    assert!(e.contains("node \"main\": field \"data_dir\""), "{e}");
}

#[test]
fn run_without_the_secret_stops_and_names_the_command_that_creates_it() {
    let c = Cluster::new(1, false);
    std::fs::remove_file(c.dir.path().join("cluster.secret")).unwrap();
    let out = c.cli(&["run", "--node", "main"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("field \"secret_file\"") && e.contains("spare up"),
        "{e}"
    );
    assert!(
        !c.dir.path().join("cluster.secret").exists(),
        "`spare run` must not create the secret"
    );
    let out = Command::new(common::bin())
        .args(["status", "--config", "/nonexistent/cluster.toml"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("cannot read configuration file /nonexistent/cluster.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn spare_up_on_a_fresh_configuration_creates_the_secret_and_rows_reach_both_spares() {
    let c = Cluster::new(2, true);
    std::fs::remove_file(c.dir.path().join("cluster.secret")).unwrap();
    let err_path = c.dir.path().join("up.err");
    let up = Command::new(common::bin())
        .args(["up", "--config"])
        .arg(&c.config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let _up = common::ChildGuard(up);
    wait_until("spare up to serve every node", || {
        c.nodes
            .iter()
            .all(|n| spare::client::get(&n.http, "/v1/status", Duration::from_secs(1)).is_ok())
    });
    assert!(common::read_file(&err_path).contains("created the cluster secret"));
    let out = c.cli(&[
        "sql",
        "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total REAL)",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.cli(&[
        "sql",
        "INSERT INTO invoice (customer, total) VALUES (?, ?)",
        "ACME",
        "120.5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 row(s) affected"),
        "{}",
        stdout(&out)
    );
    for spare in ["lan-1", "lan-2"] {
        wait_until(&format!("the row on {spare}"), || {
            let out = c.cli(&[
                "sql",
                "--node",
                spare,
                "SELECT customer, total FROM invoice",
            ]);
            stdout(&out).contains("ACME      120.5")
        });
    }
    wait_until("status to show both spares caught up", || {
        let out = c.cli(&["status", "--json"]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "spare")
            .all(|n| n["lag"]["records"] == 0 && n["state"] == "streaming")
    });
    let table = stdout(&c.cli(&["status"]));
    for needle in [
        "main",
        "primary",
        "lan-1",
        "lan-2",
        "watch-1",
        "monitor",
        "streaming",
    ] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }
    // The monitor's /v1/cluster is the same document as `spare status --json`.
    let cli: Value = serde_json::from_slice(&c.cli(&["status", "--json"]).stdout).unwrap();
    wait_until("the monitor to see the caught-up cluster", || {
        let mon = spare::client::get(&c.http("watch-1"), "/v1/cluster", Duration::from_secs(2))
            .unwrap()
            .body;
        let names = |d: &Value| {
            d["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| (n["name"].clone(), n["role"].clone(), n["last_lsn"].clone()))
                .collect::<Vec<_>>()
        };
        names(&mon) == names(&cli) && mon["primary"] == "main"
    });
}

#[test]
fn sql_prints_tables_json_and_one_line_errors() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    assert!(c
        .cli(&[
            "sql",
            "CREATE TABLE item (id INTEGER PRIMARY KEY, code TEXT NOT NULL, qty INTEGER)"
        ])
        .status
        .success());
    let out = c.cli(&[
        "sql",
        "INSERT INTO item (code, qty) VALUES (?, ?)",
        "007",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.cli(&[
        "sql",
        "--json",
        "SELECT code, qty, typeof(code), typeof(qty) FROM item",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    // "5" is JSON, so a number; "007" is not JSON, so text.
    assert_eq!(
        doc["rows"][0],
        serde_json::json!(["007", 5, "text", "integer"])
    );
    let out = c.cli(&[
        "sql",
        "INSERT INTO item (code, qty) VALUES (?, NULL)",
        "\"007\"",
    ]);
    assert!(out.status.success());
    let out = c.cli(&["sql", "SELECT code FROM item WHERE qty IS NULL"]);
    assert_eq!(stdout(&out), "code\n----\n007\n(1 row)\n");
    let out = c.cli(&["sql", "INSERT INTO nowhere VALUES (1)"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim().lines().count(), 1);
    assert!(
        stderr(&out).contains("no such table: nowhere"),
        "{}",
        stderr(&out)
    );
    for control in ["COMMIT", "SAVEPOINT a", "BEGIN", "ROLLBACK", "RELEASE a"] {
        let out = c.cli(&["sql", control]);
        assert_eq!(out.status.code(), Some(1), "{control}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("transaction control"),
            "{control}: {}",
            stderr(&out)
        );
    }
}

/// `spare status` says the verdict in its exit status (0 well, 1 problems, 2 no primary),
/// and a reader that closes the pipe early ends it quietly, not with a panic.
#[test]
fn status_exit_code_says_the_verdict_and_a_closed_pipe_is_no_panic() {
    let mut c = Cluster::new(1, true);
    c.non_voting("lan-1");
    c.start_all();
    wait_until("a clean status", || {
        c.cli(&["status"]).status.code() == Some(0)
    });
    let mut child = Command::new(common::bin())
        .args(["status", "--json"])
        .env("SPARE_CONFIG", &c.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    c.kill("lan-1");
    wait_until("status to list the problem", || {
        c.cli(&["status"]).status.code() == Some(1)
    });
    c.kill("main");
    wait_until("status to say no primary answers", || {
        c.cli(&["status"]).status.code() == Some(2)
    });
}

#[test]
fn help_documents_every_command() {
    let out = Command::new(common::bin()).arg("--help").output().unwrap();
    let help = stdout(&out);
    for cmd in ["up", "run", "sql", "status", "bench"] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "{cmd} missing from --help:\n{help}"
        );
    }
    let sql = stdout(
        &Command::new(common::bin())
            .args(["sql", "--help"])
            .output()
            .unwrap(),
    );
    assert!(sql.contains("Examples:") && sql.contains("--node"), "{sql}");
}

#[test]
fn advertised_addresses_are_what_other_nodes_and_clients_use() {
    // The spare binds one address but is reached through another (as behind NAT): a small
    // forwarder stands in for the NAT, and the primary must dial the advertised address.
    let mut c = Cluster::new(1, false);
    let lan = c.node("lan-1").clone();
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_addr = front.local_addr().unwrap().to_string();
    let target = lan.peer.clone();
    std::thread::spawn(move || {
        for conn in front.incoming().flatten() {
            let Ok(back) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut a, mut b) = (conn.try_clone().unwrap(), back.try_clone().unwrap());
            let (mut c2, mut d) = (conn, back);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d, &mut c2);
            });
        }
    });
    let text = std::fs::read_to_string(&c.config).unwrap();
    let text = text.replace(
        &format!("peer = \"{}\"", lan.peer),
        &format!(
            "peer = \"{}\"\npeer_advertise = \"{front_addr}\"\nhttp_advertise = \"localhost:{}\"",
            lan.peer,
            lan.http.rsplit(':').next().unwrap()
        ),
    );
    std::fs::write(&c.config, text).unwrap();
    c.start_all();
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        serde_json::json!([]),
    );
    c.wait_applied("lan-1", lsn);
    let status = c.status("lan-1");
    assert_eq!(
        status["http"],
        format!("localhost:{}", lan.http.rsplit(':').next().unwrap())
    );
}

#[test]
fn bench_suite_measures_every_scenario_on_throwaway_clusters() {
    let child = Command::new(common::bin())
        .args([
            "bench",
            "--suite",
            "--duration",
            "1s",
            "--clients",
            "2",
            "--catchup-rows",
            "1000",
            "--promote-rounds",
            "1",
            "--seed-mib",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    for n in ["0", "1", "2", "4"] {
        assert!(doc["healthy"][n]["commits"].as_u64().unwrap() > 0, "{doc}");
    }
    assert_eq!(doc["healthy"]["4"]["spares"].as_object().unwrap().len(), 4);
    assert!(
        doc["one_of_two_stalled"]["spares"]["spare-2"]["lag_records"]["max"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{doc}"
    );
    assert!(
        doc["catch_up"]["rows_per_s"].as_f64().unwrap() > 0.0,
        "{doc}"
    );
    assert!(doc["ratios"]["commits_4_spares_vs_none"].as_f64().unwrap() > 0.0);
    // CPU per commit per role, and a new spare seeded from a 4 MiB database.
    for role in ["primary", "spare_mean"] {
        let us = doc["healthy"]["2"]["cpu_us_per_commit"][role].as_f64();
        assert!(us.is_some_and(|us| us > 0.0), "{role}: {doc}");
    }
    assert!(doc["seeding"]["db_bytes"].as_u64().unwrap() > 0, "{doc}");
    assert!(doc["seeding"]["vs_disk"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(
        !std::env::temp_dir()
            .join(format!("spare-bench-{pid}"))
            .exists(),
        "the suite left its temporary clusters behind"
    );
}

#[test]
fn a_second_process_on_the_same_data_directory_is_refused_before_touching_it() {
    let mut c = Cluster::new(1, false);
    c.start_all();
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        serde_json::json!([]),
    );
    c.wait_applied("lan-1", lsn);
    let out = c.cli(&["run", "--node", "lan-1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("in use by another running spare process"),
        "{err}"
    );
    let next = c.exec("INSERT INTO t VALUES (1)", serde_json::json!([]));
    c.wait_applied("lan-1", next);
    assert!(c.is_running("lan-1"));
}

/// The guide (docs/commands.md) says clients find the new primary: `spare sql` writing through a switchover
/// waits it out (the old primary refuses before running the write, so sending it again is
/// safe) instead of failing with 503; every write lands once.
#[test]
fn sql_writes_through_a_switchover_without_failing() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    let lsn = c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        serde_json::json!([]),
    );
    c.wait_applied("lan-1", lsn);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (config, stop) = (c.config.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut written = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && written < 500 {
                written += 1;
                let out = Command::new(common::bin())
                    .args(["sql", "INSERT INTO t (id) VALUES (?)", &written.to_string()])
                    .env("SPARE_CONFIG", &config)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.push(stderr(&out));
                }
            }
            (written, failures)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let out = c.cli(&["switchover", "lan-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (written, failures) = writer.join().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let rows = c.rows("lan-1", "SELECT count(*) FROM t", 0);
    assert_eq!(rows[0][0], written, "every write once");
}

#[test]
fn a_node_logs_json_lines_when_asked_and_refuses_a_log_filter_it_cannot_read() {
    let c = Cluster::new(0, false);
    let config = c.config_of("main");
    // A filter that does not parse stops the node at once, naming where it came from.
    for (args, env, source) in [
        (vec!["--log-level", "spare=loud"], None, "--log-level"),
        (vec![], Some("spare=loud"), "$SPARE_LOG"),
        // Not a level: tracing would take it for a target and log nothing else.
        (vec!["--log-level", "warning"], None, "--log-level"),
        (vec!["--log-level", ""], None, "--log-level"),
    ] {
        let mut cmd = Command::new(common::bin());
        cmd.args(["run", "--node", "main", "--config"])
            .arg(&config)
            .args(&args);
        cmd.env_remove("SPARE_LOG").env_remove("RUST_LOG");
        if let Some(e) = env {
            cmd.env("SPARE_LOG", e);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{source}: a bad filter was accepted");
        let err = stderr(&out);
        let given = args.get(1).copied().or(env).unwrap();
        assert!(
            err.contains(source) && err.contains(&format!("{given:?}")),
            "{err}"
        );
        assert!(err.contains("not a log filter"), "{err}");
    }
    // --log-format json: one JSON object per line on stderr.
    let log = c.dir.path().join("json.log");
    let child = Command::new(common::bin())
        .args([
            "run",
            "--node",
            "main",
            "--log-format",
            "json",
            "--log-level",
            "info",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _guard = common::ChildGuard(child);
    wait_until("a JSON log line saying the node serves", || {
        common::read_file(&log).contains("\"level\":\"INFO\"")
    });
    for line in common::read_file(&log)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["fields"].is_object() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}
