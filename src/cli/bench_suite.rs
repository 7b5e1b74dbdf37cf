//! `spare bench --suite`: starts throw-away local clusters (real `spare run` processes on
//! 127.0.0.1, in a temporary directory removed afterwards) and measures what the
//! replication costs the primary: commits/s and p99 latency with 0, 1, 2 and 4 spares, with
//! one of 2 spares stalled (SIGSTOP: its socket stops reading), and the catch-up rate of a
//! spare that was stopped while rows were written. Prints the figures and their ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use spare::client::{self, REQUEST_TIMEOUT};

use crate::cli::bench::{measure, BenchArgs};

/// Longest wait for a node to start or a spare to catch up.
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);
/// Rows per transaction while writing the catch-up volume.
const CATCHUP_BATCH_ROWS: u64 = 100;

/// A local cluster of child processes; killed (and its directory removed) on drop.
pub(crate) struct LocalCluster {
    pub(crate) dir: PathBuf,
    children: Vec<(String, Child)>,
    http: Vec<(String, String)>,
}

/// Ports for the throw-away nodes: below the kernel's ephemeral range, so no outgoing
/// connection takes one between the moment it is chosen and the moment the node binds it.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

fn free_addr() -> Result<String> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % span as u32) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = PORT_RANGE.start + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(format!("127.0.0.1:{port}"));
        }
    }
    bail!(
        "no free port on 127.0.0.1 between {} and {}",
        PORT_RANGE.start,
        PORT_RANGE.end
    )
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > WAIT {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

impl LocalCluster {
    fn start(root: &Path, name: &str, spares: usize) -> Result<Self> {
        Self::start_with(root, name, spares, false)
    }

    /// `voting`: spares vote (quorum of all data nodes), as a failover needs.
    pub(crate) fn start_with(root: &Path, name: &str, spares: usize, voting: bool) -> Result<Self> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("cluster.secret"),
            format!("{:032x}", rand::random::<u128>()),
        )?;
        let mut text =
            "[cluster]\nname = \"bench\"\nsecret_file = \"cluster.secret\"\n".to_string();
        let names: Vec<String> = std::iter::once("main".to_string())
            .chain((1..=spares).map(|i| format!("spare-{i}")))
            .collect();
        let mut http = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let (peer, h) = (free_addr()?, free_addr()?);
            // Spares do not vote: a stopped spare must not cost the primary its write lease
            // while the suite measures replication.
            let role = match (i, voting) {
                (0, _) => "primary\"",
                (_, true) => "spare\"",
                (_, false) => "spare\"\nvote = false",
            };
            text += &format!(
                "\n[[node]]\nname = \"{n}\"\nrole = \"{role}\npeer = \"{peer}\"\nhttp = \"{h}\"\n"
            );
            http.push((n.clone(), h));
        }
        std::fs::write(dir.join("cluster.toml"), text)?;
        let mut c = LocalCluster {
            dir,
            children: Vec::new(),
            http,
        };
        for n in names.iter().rev() {
            c.spawn(n)?;
        }
        c.wait_streaming()?;
        Ok(c)
    }

    fn spawn(&mut self, node: &str) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{node}.log")))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["run", "--node", node, "--config"])
            .arg(self.dir.join("cluster.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a bench node")?;
        self.children.push((node.to_string(), child));
        let http = self.http_of(node);
        wait_for(&format!("{node} to start"), || {
            client::get(&http, "/v1/status", Duration::from_secs(1)).is_ok()
        })
    }

    pub(crate) fn http_of(&self, node: &str) -> String {
        self.http
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, h)| h.clone())
            .expect("a node of this cluster")
    }

    fn primary(&self) -> String {
        self.http_of("main")
    }

    fn spares(&self) -> Vec<String> {
        self.http.iter().skip(1).map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn wait_streaming(&self) -> Result<()> {
        let primary = self.primary();
        wait_for("every spare to stream", || {
            client::get(&primary, "/v1/status", REQUEST_TIMEOUT).is_ok_and(|r| {
                r.body["spares"].as_array().is_some_and(|a| {
                    a.iter()
                        .all(|s| s["state"] == "streaming" && s["lag"]["records"] == 0)
                })
            })
        })
    }

    pub(crate) fn signal(&self, node: &str, sig: i32) {
        if let Some((_, c)) = self.children.iter().find(|(n, _)| n == node) {
            // SAFETY: kill(2) on our own child's pid with a valid signal number.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn log_bytes(&self) -> u64 {
        let dir = self.dir.join("data/main/log");
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            // SAFETY: as in `signal`; a stopped child must be continued to die cleanly.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the suite's directory even if a scenario fails.
pub(crate) struct TempRoot(pub(crate) PathBuf);
impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: &BenchArgs) -> Result<Value> {
    let root = TempRoot(std::env::temp_dir().join(format!("spare-bench-{}", std::process::id())));
    let mut healthy = serde_json::Map::new();
    for n in [0usize, 1, 2, 4] {
        eprintln!(
            "bench: {n} spare(s), {} clients, {:?}",
            args.clients, args.duration
        );
        let c = LocalCluster::start(&root.0, &format!("spares-{n}"), n)?;
        healthy.insert(n.to_string(), measure(&c.primary(), &c.spares(), args)?);
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
    let failover = crate::cli::bench_failover::run_in(&root.0, args)?;
    let cps = |v: &Value| v["commits_per_s"].as_f64().unwrap_or(0.0);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(json!({
        "healthy": healthy,
        "one_of_two_stalled": stalled,
        "catch_up": catchup,
        "failover": failover,
        "ratios": {
            "commits_4_spares_vs_none": ratio(cps(&healthy["4"]), cps(&healthy["0"])),
            "commits_stalled_vs_healthy_2_spares": ratio(cps(&stalled), cps(&healthy["2"])),
        },
    }))
}

/// Stops a spare, writes the volume, resumes it, and times its catch-up from the moment it
/// starts applying again (reconnection backoff excluded).
fn catch_up(root: &Path, args: &BenchArgs) -> Result<Value> {
    let c = LocalCluster::start(root, "catch-up", 1)?;
    let (primary, spare) = (c.primary(), c.http_of("spare-1"));
    crate::cli::bench::create_table(&primary)?;
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
        last = r.body["lsn"].as_u64().unwrap_or(last);
    }
    let log_bytes = c.log_bytes().saturating_sub(bytes_before);
    let applied = |h: &str| {
        client::get(h, "/v1/status", REQUEST_TIMEOUT)
            .ok()
            .and_then(|r| r.body["applied_lsn"].as_u64())
            .unwrap_or(0)
    };
    c.signal("spare-1", libc::SIGCONT);
    let initial = applied(&spare);
    wait_for("the spare to start applying", || applied(&spare) > initial)?;
    let started = Instant::now();
    wait_for("the spare to catch up", || applied(&spare) >= last)?;
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
