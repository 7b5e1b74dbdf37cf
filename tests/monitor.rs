//! Monitors (DESIGN.md §6): honest lag in records, bytes and seconds; status from a monitor
//! or, without one, from the data nodes; Prometheus metrics; lag alerts with the events log
//! and the notify command; the dashboard in a real headless browser.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, Cluster};
use serde_json::{json, Value};

fn spare_lag(c: &Cluster, spare: &str) -> Value {
    c.spare_view(spare)["lag"].clone()
}

fn caught_up(lag: &Value) -> bool {
    lag["records"] == 0 && lag["bytes"] == 0 && lag["seconds"].as_f64() == Some(0.0)
}

/// The table every test here writes to; returns its LSN.
fn create_t(c: &Cluster) -> u64 {
    c.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        json!([]),
    )
}

fn write_some(c: &Cluster, n: usize) -> u64 {
    let mut lsn = 0;
    for i in 0..n {
        lsn = c.exec(
            "INSERT INTO t (v) VALUES (?)",
            json!([format!("row {i} {}", "x".repeat(200))]),
        );
    }
    lsn
}

#[test]
fn idle_cluster_reads_zero_lag_in_every_unit() {
    let mut c = Cluster::new(2, true);
    c.start_all();
    create_t(&c);
    write_some(&c, 20);
    // Idle now: heartbeat records flow, and every spare applies them.
    wait_until("both spares to read zero lag", || {
        caught_up(&spare_lag(&c, "lan-1")) && caught_up(&spare_lag(&c, "lan-2"))
    });
    // Staying idle, it keeps reading zero: every heartbeat record is applied as it comes,
    // so the lag never builds up (at most the one heartbeat in flight, for an instant).
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        for spare in ["lan-1", "lan-2"] {
            let lag = spare_lag(&c, spare);
            assert!(
                lag["records"].as_u64().unwrap() <= 2,
                "an idle spare stays caught up: {lag}"
            );
            assert!(lag["seconds"].as_f64().unwrap() < 1.0, "{lag}");
        }
    }
    wait_until("both spares to read zero again", || {
        caught_up(&spare_lag(&c, "lan-1")) && caught_up(&spare_lag(&c, "lan-2"))
    });
    let status = c.cli(&["status", "--json"]);
    let doc: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["source"], "monitor watch-1");
    assert!(
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "spare")
            .all(|n| n["state"] == "streaming"),
        "{doc}"
    );
}

#[test]
fn lag_grows_in_every_unit_while_a_spare_is_cut_off_and_returns_to_zero() {
    let mut c = Cluster::new(1, false);
    c.non_voting("lan-1");
    let proxy = c.proxy("lan-1");
    c.start_all();
    let lsn = create_t(&c);
    c.wait_applied("lan-1", lsn);
    proxy.cut();
    write_some(&c, 50);
    let first = spare_lag(&c, "lan-1");
    assert!(first["records"].as_u64().unwrap() >= 50, "{first}");
    assert!(first["bytes"].as_u64().unwrap() >= 50 * 200, "{first}");
    // Nobody writes now, yet the lag keeps growing: heartbeats.
    std::thread::sleep(Duration::from_millis(1500));
    let later = spare_lag(&c, "lan-1");
    assert!(
        later["records"].as_u64() > first["records"].as_u64(),
        "{first} then {later}"
    );
    assert!(
        later["bytes"].as_u64() > first["bytes"].as_u64(),
        "{first} then {later}"
    );
    assert!(
        later["seconds"].as_f64().unwrap() >= first["seconds"].as_f64().unwrap() + 1.0,
        "{first} then {later}"
    );
    proxy.pass();
    wait_until("lan-1 back to zero lag", || {
        caught_up(&spare_lag(&c, "lan-1"))
    });
}

#[test]
fn status_json_agrees_with_the_monitor_and_falls_back_to_the_data_nodes() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    let lsn = create_t(&c);
    c.wait_applied("lan-1", lsn);
    let shape = |d: &Value| {
        d["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].clone(), n["role"].clone()))
            .collect::<Vec<_>>()
    };
    let from_cli: Value = serde_json::from_slice(&c.cli(&["status", "--json"]).stdout).unwrap();
    let from_monitor = spare::client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
        .unwrap()
        .body;
    assert_eq!(shape(&from_cli), shape(&from_monitor));
    assert_eq!(from_cli["source"], from_monitor["source"]);
    assert_eq!(from_cli["primary"], "main");
    c.kill("watch-1");
    let out = c.cli(&["status", "--json"]);
    // A problem is listed (no monitor answered): exit 1, the document printed all the same.
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"], "data nodes");
    assert_eq!(doc["partial"], true);
    assert_eq!(doc["primary"], "main");
    let table = String::from_utf8_lossy(&c.cli(&["status"]).stdout).into_owned();
    assert!(
        table.contains("partial view") && table.contains("no monitor answered"),
        "{table}"
    );
}

#[test]
fn metrics_parse_as_prometheus_text_on_every_node() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    let lsn = create_t(&c);
    c.wait_applied("lan-1", write_some(&c, 5).max(lsn));
    wait_until("lan-1 to be streaming", || {
        spare_lag(&c, "lan-1")["records"].as_u64().is_some()
    });
    wait_until("the monitor to see lan-1's lag", || {
        let doc = spare::client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
            .unwrap()
            .body;
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "lan-1" && n["lag"]["seconds"].is_number())
    });
    for node in ["main", "lan-1", "watch-1"] {
        let text = ureq::get(&format!("http://{}/metrics", c.http(node)))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("{node}: {e}\n{text}"));
        assert!(
            scrape
                .samples
                .iter()
                .all(|s| s.metric.starts_with("spare_")),
            "{node}: {text}"
        );
        assert!(
            scrape.samples.iter().any(|s| s.metric == "spare_up"),
            "{node}: {text}"
        );
        if node == "watch-1" {
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "spare_lag_seconds"
                        && s.labels.get("spare") == Some("lan-1")),
                "{text}"
            );
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "spare_node_reachable"
                        && s.labels.get("target") == Some("main")),
                "{text}"
            );
        }
        if node == "main" {
            for name in [
                "spare_lag_records",
                "spare_lag_bytes",
                "spare_lag_seconds",
                "spare_link_up",
                "spare_feeder_window_in_use_bytes",
                "spare_seed_progress_ratio",
            ] {
                assert!(
                    scrape
                        .samples
                        .iter()
                        .any(|s| s.metric == name && s.labels.get("spare") == Some("lan-1")),
                    "{name} missing: {text}"
                );
            }
            let commits = scrape
                .samples
                .iter()
                .find(|s| s.metric == "spare_commits_total")
                .unwrap();
            // OpenMetrics declares the counter's family without `_total`, which this
            // (Prometheus text) parser reads as an untyped sample: the value is what counts.
            let value = match commits.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("spare_commits_total is not a number: {text}"),
            };
            assert!(value >= 6.0, "{text}");
            assert!(text.contains("# TYPE spare_commits counter"), "{text}");
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "spare_commit_latency_seconds"),
                "{text}"
            );
        }
    }
}

#[test]
fn notify_command_receives_a_lag_alert_and_its_recovery() {
    let mut c = Cluster::new(1, true);
    let out = c.dir.path().join("notified.txt");
    c.cluster_option("lag_warn = \"1s\"");
    c.cluster_option(&format!(
        "notify_command = 'echo \"$SPARE_EVENT_KIND $SPARE_EVENT_SPARE\" >> {}'",
        out.display()
    ));
    let proxy = c.proxy("lan-1");
    c.start_all();
    let lsn = create_t(&c);
    c.wait_applied("lan-1", lsn);
    proxy.cut();
    write_some(&c, 5);
    wait_until("the notify command to receive a lag alert", || {
        common::read_file(&out).contains("lag_alert lan-1")
    });
    let events = std::fs::read_to_string(c.data_dir("watch-1").join("events.jsonl")).unwrap();
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"kind\":\"lag_alert\"") && l.contains("lan-1")),
        "{events}"
    );
    assert!(
        c.log("watch-1").contains("lag alert"),
        "the alert is a WARN in the monitor's log"
    );
    let problems = spare::client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
        .unwrap()
        .body["problems"]
        .clone();
    assert!(problems.to_string().contains("lan-1"), "{problems}");
    proxy.pass();
    wait_until("the notify command to receive the recovery", || {
        common::read_file(&out).contains("lag_recovered lan-1")
    });
}

#[test]
fn monitor_says_when_the_primary_stops_answering() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    c.kill("main");
    wait_until("the monitor to report the primary", || {
        let doc = spare::client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
            .unwrap()
            .body;
        doc["problems"]
            .to_string()
            .contains("the primary main has not answered")
    });
    let events = spare::client::get(&c.http("watch-1"), "/v1/events", common::TIMEOUT)
        .unwrap()
        .body;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "primary_unreachable"),
        "{events}"
    );
}

/// Debian's Chromium, if installed (CI installs it; `SPARE_REQUIRE_BROWSER=1` makes its
/// absence a failure instead of a skip).
fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("SPARE_REQUIRE_BROWSER").is_none(),
            "chromium is required (SPARE_REQUIRE_BROWSER is set): apt-get install chromium"
        );
        eprintln!("SKIPPED: the dashboard browser test needs Debian's chromium (apt-get install chromium); .ci/run installs it");
    }
    found
}

#[test]
fn dashboard_shows_every_spare_and_its_lag_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let mut c = Cluster::new(2, true);
    c.start_all();
    create_t(&c);
    let lsn = write_some(&c, 3);
    c.wait_applied("lan-1", lsn);
    c.wait_applied("lan-2", lsn);
    wait_until("the monitor to see both spares streaming", || {
        let doc = spare::client::get(&c.http("watch-1"), "/v1/cluster", common::TIMEOUT)
            .unwrap()
            .body;
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "spare")
            .all(|n| n["state"] == "streaming" && n["lag"]["records"].is_number())
    });
    let profile = c.dir.path().join("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/", c.http("watch-1")))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    for spare in ["lan-1", "lan-2"] {
        let row = dom
            .split(&format!("id=\"node-{spare}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no row for {spare} in the page:\n{dom}"));
        let row = &row[..row.find("</tr>").unwrap()];
        // The lag (a number of records, and seconds) is on the spare's row.
        let records = row
            .split("data-lag-records=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        assert!(
            records.parse::<u64>().is_ok(),
            "{spare}'s lag is not shown: {row}"
        );
        assert!(
            row.contains("streaming"),
            "{spare}'s state is not shown: {row}"
        );
        assert!(row.contains("class=\"lag-seconds\""), "{row}");
        assert!(
            dom.contains(&format!("id=\"chart-{spare}\"")),
            "no lag chart for {spare}"
        );
    }
    assert!(dom.contains("node_started"), "recent events are shown");
    assert!(
        dom.contains("spare_connected"),
        "the primary's events are shown too"
    );
}

/// The monitor's lag history (the dashboard's charts) follows the spares as they are: a
/// spare removed by a reload, and a spare that became the primary, leave it.
#[test]
fn lag_history_drops_removed_spares_and_a_promoted_one() {
    let mut c = Cluster::new(2, true);
    c.non_voting("lan-2");
    c.start_all();
    let history = |c: &Cluster| -> serde_json::Value {
        spare::client::get(&c.http("watch-1"), "/v1/history", common::TIMEOUT)
            .unwrap()
            .body
    };
    wait_until("both spares charted", || {
        let h = history(&c);
        h.get("lan-1").is_some() && h.get("lan-2").is_some()
    });
    c.remove_node("lan-2");
    let out = c.cli(&["reload", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the removed spare to leave the charts", || {
        history(&c).get("lan-2").is_none()
    });
    let out = c.cli(&["switchover", "lan-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "the new primary to leave the charts and the old one to join",
        || {
            let h = history(&c);
            h.get("lan-1").is_none() && h.get("main").is_some()
        },
    );
}
