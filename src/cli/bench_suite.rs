//! `spare bench --suite`: starts throw-away local clusters (real `spare run` processes on
//! 127.0.0.1, in a temporary directory removed afterwards) and measures what the
//! replication costs the primary: commits/s and p99 latency with 0, 1, 2 and 4 spares, with
//! one of 2 spares stalled (SIGSTOP: its socket stops reading), and the catch-up rate of a
//! spare that was stopped while rows were written. Prints the figures and their ratios.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use spare::client::{self, REQUEST_TIMEOUT};

use crate::cli::bench_cluster::{wait_for, LocalCluster, TempRoot};
use crate::cli::bench_load::{measure, BenchArgs};

/// Rows per transaction while writing the catch-up volume.
const CATCHUP_BATCH_ROWS: u64 = 100;

pub fn run(args: &BenchArgs) -> Result<Value> {
    let root = TempRoot(std::env::temp_dir().join(format!("spare-bench-{}", std::process::id())));
    let mut healthy = serde_json::Map::new();
    for n in [0usize, 1, 2, 4] {
        eprintln!(
            "bench: {n} spare(s), {} clients, {:?}",
            args.clients, args.duration
        );
        let c = LocalCluster::start(&root.0, &format!("spares-{n}"), n)?;
        let before = c.cpu_seconds();
        let mut figures = measure(&c.primary(), &c.spares(), args)?;
        let cpu = cpu_per_commit(&before, &c.cpu_seconds(), &figures);
        if let Value::Object(m) = &mut figures {
            m.insert("cpu_us_per_commit".into(), cpu);
        }
        healthy.insert(n.to_string(), figures);
    }
    eprintln!("bench: 2 spares, one stalled");
    let c = LocalCluster::start(&root.0, "stalled", 2)?;
    c.signal("spare-2", libc::SIGSTOP);
    let stalled = measure(&c.primary(), &c.spares(), args)?;
    drop(c);
    eprintln!(
        "bench: catch-up of a spare stopped during {} rows",
        args.catchup_rows
    );
    let catchup = catch_up(&root.0, args)?;
    let seeding = match args.seed_mib {
        0 => Value::Null,
        mib => {
            eprintln!("bench: seeding a new spare from a {mib} MiB database");
            seed_new_spare(&root.0, mib)?
        }
    };
    let failover = crate::cli::bench_failover::run_in(&root.0, args)?;
    let cps = |v: &Value| v["commits_per_s"].as_f64().unwrap_or(0.0);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(json!({
        "healthy": healthy,
        "one_of_two_stalled": stalled,
        "catch_up": catchup,
        "seeding": seeding,
        "failover": failover,
        "ratios": {
            "commits_4_spares_vs_none": ratio(cps(&healthy["4"]), cps(&healthy["0"])),
            "commits_stalled_vs_healthy_2_spares": ratio(cps(&stalled), cps(&healthy["2"])),
        },
    }))
}

/// CPU time each role's process spent per acknowledged commit during a run (µs; all
/// threads, user and system): the primary's, and each spare's with their mean.
fn cpu_per_commit(before: &[(String, f64)], after: &[(String, f64)], figures: &Value) -> Value {
    #[derive(serde::Deserialize)]
    struct Counted {
        commits: u64,
    }
    let commits = serde_json::from_value::<Counted>(figures.clone())
        .map_or(0, |c| c.commits)
        .max(1) as f64;
    let used = |name: &str| {
        let at = |v: &[(String, f64)]| v.iter().find(|(n, _)| n == name).map_or(0.0, |x| x.1);
        (at(after) - at(before)).max(0.0) * 1e6 / commits
    };
    let spares: Vec<(String, f64)> = after
        .iter()
        .filter(|(n, _)| n != "main")
        .map(|(n, _)| (n.clone(), used(n)))
        .collect();
    let mean = match spares.len() {
        0 => Value::Null,
        k => json!(spares.iter().map(|x| x.1).sum::<f64>() / k as f64),
    };
    json!({
        "primary": used("main"),
        "spare_mean": mean,
        "spares": spares.into_iter().map(|(n, v)| (n, json!(v))).collect::<serde_json::Map<String, Value>>(),
    })
}

/// The LSN a write's answer names (`or` if none).
fn answered_lsn(r: &client::Reply, or: u64) -> u64 {
    r.body["lsn"].as_u64().unwrap_or(or)
}

/// The LSN the node at `http` applied (0 while it does not answer).
fn applied_lsn(http: &str) -> u64 {
    client::get(http, "/v1/status", REQUEST_TIMEOUT)
        .ok()
        .and_then(|r| r.body["applied_lsn"].as_u64())
        .unwrap_or(0)
}

/// Bytes of text in each row written to fill the database a spare is seeded from.
const SEED_ROW_BYTES: usize = 64 * 1024;
/// Rows per request while filling it (1 MiB).
const SEED_BATCH_ROWS: u64 = 16;

/// Fills a primary's database with about `mib` MiB, starts a new, empty spare and times it
/// from its start to having applied everything (snapshot, transfer, install); compares the
/// rate with this disk's sequential write speed, measured on the same bytes just after.
fn seed_new_spare(root: &Path, mib: u64) -> Result<Value> {
    let mut c = LocalCluster::start(root, "seeding", 1)?;
    c.kill("spare-1");
    std::fs::remove_dir_all(c.data_dir("spare-1"))?;
    let primary = c.primary();
    crate::cli::bench_load::create_table(&primary)?;
    let agent = client::agent(REQUEST_TIMEOUT);
    let payload = "s".repeat(SEED_ROW_BYTES);
    let mut last = 0;
    for _ in 0..mib {
        let batch: Vec<Value> = (0..SEED_BATCH_ROWS).map(|i| json!({ "sql": "INSERT INTO spare_bench (client, payload) VALUES (?, ?)", "params": [i, payload] })).collect();
        let r = client::post_with(&agent, &primary, "/v1/execute", &json!({ "batch": batch }))?;
        if r.status != 200 {
            bail!("filling the database to seed from failed: {}", r.body);
        }
        last = answered_lsn(&r, last);
    }
    let db_bytes = std::fs::metadata(c.data_dir("main").join("db.sqlite"))?.len();
    let started = Instant::now();
    c.spawn("spare-1")?;
    let spare = c.http_of("spare-1");
    wait_for("the new spare to be seeded", || applied_lsn(&spare) >= last)?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    drop(c);
    let disk = disk_write_mb_per_s(root, db_bytes)?;
    let rate = db_bytes as f64 / 1e6 / secs;
    Ok(json!({
        "db_bytes": db_bytes,
        "seconds": secs,
        "mb_per_s": rate,
        "disk_sequential_write_mb_per_s": disk,
        "vs_disk": if disk > 0.0 { rate / disk } else { 0.0 },
    }))
}

/// This disk's sequential write speed: `bytes` written in 1 MiB blocks to a file in `dir`,
/// then fsynced, in MB/s; the file is removed.
fn disk_write_mb_per_s(dir: &Path, bytes: u64) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("disk-speed.tmp");
    let block = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..bytes.div_ceil(block.len() as u64) {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(bytes.div_ceil(block.len() as u64) as f64 * block.len() as f64 / 1e6 / secs)
}

/// Stops a spare, writes the volume, resumes it, and times its catch-up from the moment it
/// starts applying again (reconnection backoff excluded).
fn catch_up(root: &Path, args: &BenchArgs) -> Result<Value> {
    let c = LocalCluster::start(root, "catch-up", 1)?;
    let (primary, spare) = (c.primary(), c.http_of("spare-1"));
    crate::cli::bench_load::create_table(&primary)?;
    c.wait_streaming()?;
    c.signal("spare-1", libc::SIGSTOP);
    let bytes_before = c.log_bytes();
    let agent = client::agent(REQUEST_TIMEOUT);
    let payload = "x".repeat(args.row_bytes);
    let mut last = 0;
    for _ in 0..args.catchup_rows.div_ceil(CATCHUP_BATCH_ROWS) {
        let batch: Vec<Value> = (0..CATCHUP_BATCH_ROWS).map(|i| json!({ "sql": "INSERT INTO spare_bench (client, payload) VALUES (?, ?)", "params": [i, payload] })).collect();
        let r = client::post_with(&agent, &primary, "/v1/execute", &json!({ "batch": batch }))?;
        if r.status != 200 {
            bail!("writing the catch-up volume failed: {}", r.body);
        }
        last = answered_lsn(&r, last);
    }
    let log_bytes = c.log_bytes().saturating_sub(bytes_before);
    c.signal("spare-1", libc::SIGCONT);
    let initial = applied_lsn(&spare);
    wait_for("the spare to start applying", || {
        applied_lsn(&spare) > initial
    })?;
    let started = Instant::now();
    wait_for("the spare to catch up", || applied_lsn(&spare) >= last)?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rows = args.catchup_rows.div_ceil(CATCHUP_BATCH_ROWS) * CATCHUP_BATCH_ROWS;
    Ok(json!({
        "rows": rows,
        "log_bytes": log_bytes,
        "seconds": secs,
        "rows_per_s": rows as f64 / secs,
        "log_mb_per_s": log_bytes as f64 / 1e6 / secs,
    }))
}
