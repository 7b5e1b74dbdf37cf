//! `spare bench --failover` (and part of `--suite`): on throw-away local clusters of real
//! processes (a primary and two voting spares, the default lease), measures
//! - the time from `spare promote` to the first write acknowledged by the new primary, the
//!   old primary just killed (SIGKILL: a crashed host) or just frozen (SIGSTOP: a hung VM,
//!   whose connections hang instead of failing), `--promote-rounds` times each (10), a fresh
//!   cluster each time: prepare, waiting out the old lease, restart in place; the median and
//!   the worst are the figures;
//! - the write-unavailability window of `spare switchover` under load: the longest gap
//!   between two acknowledged writes while clients that know every node keep writing, and
//!   that no acknowledged write was lost.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use spare::client::{self, Client, REQUEST_TIMEOUT};

use crate::cli::bench_cluster::{wait_for, LocalCluster, TempRoot};
use crate::cli::bench_load::BenchArgs;

/// Writers during the switchover.
const SWITCHOVER_WRITERS: u64 = 4;
/// Writing goes on this long after the switchover answered, to see writes resume.
const AFTER_SWITCH: Duration = Duration::from_secs(2);
/// Bound on the whole writing phase.
const MAX_WRITING: Duration = Duration::from_secs(120);

pub fn run(args: &BenchArgs) -> Result<Value> {
    let root =
        TempRoot(std::env::temp_dir().join(format!("spare-bench-fo-{}", std::process::id())));
    run_in(&root.0, args)
}

pub fn run_in(root: &Path, args: &BenchArgs) -> Result<Value> {
    let rounds = args.promote_rounds;
    let mut promote = serde_json::Map::new();
    for (name, signal) in [("dead", libc::SIGKILL), ("frozen", libc::SIGSTOP)] {
        let mut runs = Vec::new();
        for round in 0..rounds {
            eprintln!(
                "bench: promote over a {name} primary ({}/{rounds})",
                round + 1
            );
            runs.push(promote_after(root, &format!("{name}-{round}"), signal)?);
        }
        promote.insert(name.into(), summary(&runs));
    }
    eprintln!("bench: switchover under load");
    let switchover = switchover_under_load(root)?;
    Ok(json!({ "lease": "4s (default)", "promote": promote, "switchover": switchover }))
}

/// The median and the worst of the runs' seconds to the first write, and every run.
fn summary(runs: &[Value]) -> Value {
    let mut secs: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["seconds_to_first_write"].as_f64())
        .collect();
    secs.sort_by(f64::total_cmp);
    let median = secs.get(secs.len() / 2).copied();
    json!({
        "median_seconds_to_first_write": median,
        "worst_seconds_to_first_write": secs.last(),
        "runs": runs,
    })
}

/// Runs `spare <args>` against the cluster's configuration.
fn spare_cli(c: &LocalCluster, args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("SPARE_CONFIG", c.dir.join("cluster.toml"))
        .output()?)
}

fn insert(http: &str, id: u64) -> bool {
    let body = json!({ "sql": "INSERT INTO spare_bench (id, client, payload) VALUES (?, 0, 'x')", "params": [id] });
    client::post(http, "/v1/execute", &body, REQUEST_TIMEOUT).is_ok_and(|r| r.status == 200)
}

/// One promotion: the primary is sent `signal`, then at once `spare promote spare-1`; the
/// time runs until the new primary acknowledged a write.
fn promote_after(root: &Path, name: &str, signal: i32) -> Result<Value> {
    let c = LocalCluster::start_with(root, name, 2, true)?;
    let main = c.http_of("main");
    crate::cli::bench_load::create_table(&main)?;
    c.wait_streaming()?;
    c.signal("main", signal);
    let started = Instant::now();
    let out = spare_cli(&c, &["promote", "spare-1", "--json"])?;
    let command_s = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "spare promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let new = c.http_of("spare-1");
    wait_for("the first write on the new primary", || insert(&new, 1))?;
    Ok(json!({
        "seconds_to_first_write": started.elapsed().as_secs_f64(),
        "command_seconds": command_s,
        "fence_ms": report["fence_ms"],
    }))
}

fn switchover_under_load(root: &Path) -> Result<Value> {
    let c = LocalCluster::start_with(root, "switchover", 2, true)?;
    crate::cli::bench_load::create_table(&c.http_of("main"))?;
    c.wait_streaming()?;
    let nodes: Vec<String> = ["main", "spare-1", "spare-2"]
        .iter()
        .map(|n| c.http_of(n))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let writers: Vec<_> = (0..SWITCHOVER_WRITERS)
        .map(|w| {
            let (nodes, stop, acks) = (nodes.clone(), stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let client = Client::new(nodes);
                let started = Instant::now();
                let mut id = (w + 1) * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_WRITING {
                    id += 1;
                    let body = json!({ "sql": "INSERT INTO spare_bench (id, client, payload) VALUES (?, ?, 'x')", "params": [id, w] });
                    if client.execute(&body).is_ok() {
                        acks.lock().expect("acks").push((Instant::now(), id));
                    }
                }
            })
        })
        .collect();
    wait_for("writes to flow", || acks.lock().expect("acks").len() > 200)?;
    let started = Instant::now();
    let out = spare_cli(&c, &["switchover", "spare-1", "--json"])?;
    let command_s = started.elapsed().as_secs_f64();
    std::thread::sleep(AFTER_SWITCH);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    if !out.status.success() {
        bail!(
            "spare switchover failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut acks = acks.lock().expect("acks").clone();
    acks.sort();
    let window = acks
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .max()
        .unwrap_or_default();
    let lost = count_lost(&c.http_of("spare-1"), &acks)?;
    Ok(json!({
        "unavailable_seconds": window.as_secs_f64(),
        "command_seconds": command_s,
        "acknowledged_writes": acks.len(),
        "acknowledged_and_lost": lost,
    }))
}

/// How many acknowledged ids the new primary lacks (must be 0).
fn count_lost(http: &str, acks: &[(Instant, u64)]) -> Result<usize> {
    let r = client::post(
        http,
        "/v1/query",
        &json!({ "sql": "SELECT id FROM spare_bench" }),
        REQUEST_TIMEOUT,
    )?;
    let have: std::collections::HashSet<u64> = r.body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row[0].as_u64())
        .collect();
    Ok(acks.iter().filter(|(_, id)| !have.contains(id)).count())
}
