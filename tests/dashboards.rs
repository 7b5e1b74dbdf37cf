//! The Grafana dashboard and the Prometheus alerting rules in `deploy/` name only metrics
//! and labels that real nodes export: a metric renamed in the code breaks this test, not an
//! operator's pager. With `promtool` installed, the rules also pass `promtool check rules` and
//! their unit tests (`deploy/prometheus/spare-alerts.test.yml`, `promtool test rules`).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::Cluster;
use serde_json::{json, Value};

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `spare_*` name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("spare_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        // Not a word inside another (e.g. "spare_lag" inside "my_spare_lag").
        let before = rest[..i].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboard_and_the_alert_rules_name_only_what_nodes_export() {
    let mut c = Cluster::new(1, true);
    c.start_all();
    let lsn = c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)", json!([]));
    c.wait_applied("lan-1", lsn);
    // Every node's exposition, once the monitor has polled.
    let metrics_of = |node: &str| {
        ureq::get(&format!("http://{}/metrics", c.http(node)))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    };
    common::wait_until("the monitor to export the spare's lag", || {
        metrics_of("watch-1").contains("spare_lag_seconds{")
    });
    let exported: String = ["main", "lan-1", "watch-1"]
        .iter()
        .map(|n| metrics_of(n))
        .collect();
    let samples: Vec<&str> = exported.lines().filter(|l| !l.starts_with('#')).collect();
    let metrics: BTreeSet<String> = samples
        .iter()
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let rules = repo("deploy/prometheus/spare-alerts.yml");
    let dashboard: Value =
        serde_json::from_str(&repo("deploy/grafana/spare-dashboard.json")).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (file, text) in [
        ("alert rules", rules.clone()),
        ("dashboard", exprs.join("\n")),
    ] {
        let named = names_in(&text);
        assert!(!named.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = named.iter().filter(|n| !metrics.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no node exports: {unknown:?}\nexported: {metrics:?}"
        );
    }
    // The labels the rules match on are there too.
    for (metric, label) in [
        ("spare_up", "role=\"primary\""),
        ("spare_node_reachable", "target=\""),
        ("spare_lag_seconds", "spare=\""),
        ("spare_last_ack_age_seconds", "spare=\""),
        ("spare_link_up", "spare=\""),
        ("spare_commit_latency_seconds_bucket", "le=\""),
    ] {
        assert!(
            samples
                .iter()
                .any(|s| s.starts_with(&format!("{metric}{{")) && s.contains(label)),
            "no {metric} sample with {label}"
        );
    }
    promtool(&["check", "rules", "spare-alerts.yml"]);
    // The rules' unit tests: each alert fires on the series it is for, after its `for`, and
    // not before; the delayed spare's designed lag raises nothing.
    promtool(&["test", "rules", "spare-alerts.test.yml"]);
}

/// Runs `promtool ARGS` in deploy/prometheus and asserts it succeeds. Without promtool the
/// check is skipped, saying so, unless SPARE_REQUIRE_PROMTOOL=1 (CI installs it).
fn promtool(args: &[&str]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var("SPARE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                "promtool is required (SPARE_REQUIRE_PROMTOOL=1) but cannot run: {e}"
            );
            eprintln!(
                "promtool is not installed: `promtool {}` was not run",
                args.join(" ")
            );
        }
    }
}

#[test]
fn names_are_found_as_whole_words() {
    let found = names_in("rate(spare_commits_total[1m]) + my_spare_x + spare_up{role=\"primary\"}");
    let expected: BTreeSet<String> = ["spare_commits_total", "spare_up"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
}
