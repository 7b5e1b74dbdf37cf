//! The load generator of `spare bench`: N clients each run single-row INSERT transactions
//! on the primary until the duration or the commit budget is spent; a sampler reads each
//! spare's lag from the primary every [`LAG_SAMPLE_INTERVAL`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use spare::client::{self, Client, REQUEST_TIMEOUT};
use spare::status::NodeStatus;

const LAG_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients, each running one INSERT transaction at a time.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long to run, e.g. 10s (at most 10m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many commits in total, whichever comes first.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_commits: u64,
    /// Bytes of text in each inserted row.
    #[arg(long, default_value_t = 100)]
    pub row_bytes: usize,
    /// Instead of loading a running cluster, start throw-away local clusters (real
    /// processes on 127.0.0.1, in a temporary directory) and measure: 0, 1, 2 and 4 spares;
    /// 2 spares with one stalled (SIGSTOP); and the catch-up rate of a spare that was
    /// stopped while --catchup-rows rows were written.
    #[arg(long)]
    pub suite: bool,
    /// Only the failover figures (also part of --suite): time from `spare promote` to the
    /// first acknowledged write after the primary was killed or frozen (median and worst of
    /// 10 each), and the write-unavailability window of a `spare switchover` under load.
    #[arg(long)]
    pub failover: bool,
    /// Rows written while the catch-up spare is stopped (--suite).
    #[arg(long, default_value_t = 100_000)]
    pub catchup_rows: u64,
    /// Size of the database a new spare is seeded from (--suite), in MiB; 0 skips it.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=16_384))]
    pub seed_mib: u64,
    /// Promotions measured for each way the primary fails (--failover, --suite).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub promote_rounds: u64,
}

struct Shared {
    http: String,
    /// Every data node the clients know.
    nodes: Vec<String>,
    stop: AtomicBool,
    commits: AtomicU64,
    errors: AtomicU64,
    max_commits: u64,
}

/// Creates the bench table on the primary at `http`.
pub fn create_table(http: &str) -> Result<()> {
    let create = json!({ "sql": "CREATE TABLE IF NOT EXISTS spare_bench (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, payload TEXT NOT NULL)" });
    let reply = client::post(http, "/v1/execute", &create, REQUEST_TIMEOUT)?;
    if reply.status != 200 {
        bail!(
            "creating the bench table on the primary failed: {}",
            reply.body
        );
    }
    Ok(())
}

/// Runs the load against the primary at `http` and samples the lag of `spares`.
pub fn measure(http: &str, spares: &[String], args: &BenchArgs) -> Result<Value> {
    measure_on(http, &[http.to_string()], spares, args)
}

/// Like [`measure`], with clients that know `nodes` (they follow the primary if it moves).
pub fn measure_on(
    http: &str,
    nodes: &[String],
    spares: &[String],
    args: &BenchArgs,
) -> Result<Value> {
    create_table(http)?;
    let shared = Shared {
        http: http.to_string(),
        nodes: nodes.to_vec(),
        stop: AtomicBool::new(false),
        commits: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        max_commits: args.max_commits,
    };
    let started = Instant::now();
    let (latency, lag) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..args.clients)
            .map(|c| {
                let shared = &shared;
                s.spawn(move || client_loop(shared, c, args.row_bytes))
            })
            .collect();
        let sampler = s.spawn(|| sample_lag(&shared, spares));
        while started.elapsed() < args.duration && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        shared.stop.store(true, Ordering::Relaxed);
        let mut latency = new_histogram();
        for c in clients {
            latency
                .add(c.join().expect("client thread"))
                .expect("same histogram bounds");
        }
        (latency, sampler.join().expect("sampler thread"))
    });
    let elapsed = started.elapsed().as_secs_f64();
    let commits = shared.commits.load(Ordering::Relaxed);
    Ok(json!({
        "clients": args.clients,
        "duration_s": elapsed,
        "commits": commits,
        "errors": shared.errors.load(Ordering::Relaxed),
        "commits_per_s": commits as f64 / elapsed,
        "commit_latency_ms": percentiles(&latency, 1000.0),
        "spares": lag,
    }))
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing, 3 significant digits, records 0 (a caught-up spare).
    Histogram::new(3).expect("valid histogram precision")
}

/// p50/p99/max of a histogram in `unit`s per recorded unit (µs → ms with 1000).
fn percentiles(h: &Histogram<u64>, divisor: f64) -> Value {
    if h.is_empty() {
        return json!({ "p50": null, "p99": null, "max": null, "samples": 0 });
    }
    json!({
        "p50": h.value_at_quantile(0.50) as f64 / divisor,
        "p99": h.value_at_quantile(0.99) as f64 / divisor,
        "max": h.max() as f64 / divisor,
        "samples": h.len(),
    })
}

/// One client: INSERTs until told to stop; returns its latencies in µs. It finds the
/// primary by itself (a switchover during a run moves it).
fn client_loop(shared: &Shared, client: usize, row_bytes: usize) -> Histogram<u64> {
    let cluster = Client::new(shared.nodes.clone());
    let mut h = new_histogram();
    let payload = "x".repeat(row_bytes);
    let body = json!({ "sql": "INSERT INTO spare_bench (client, payload) VALUES (?, ?)", "params": [client, payload] });
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.commits.load(Ordering::Relaxed) >= shared.max_commits {
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let t = Instant::now();
        match cluster.execute(&body) {
            Ok(_) => {
                let _ = h.record(t.elapsed().as_micros() as u64);
                shared.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    h
}

/// Samples each spare's lag (records, and seconds in ms) from the primary's status.
fn sample_lag(shared: &Shared, spares: &[String]) -> Value {
    let agent = client::agent(REQUEST_TIMEOUT);
    let mut records: Vec<Histogram<u64>> = spares.iter().map(|_| new_histogram()).collect();
    let mut millis: Vec<Histogram<u64>> = spares.iter().map(|_| new_histogram()).collect();
    while !shared.stop.load(Ordering::Relaxed) {
        let status = client::get_with(&agent, &shared.http, "/v1/status")
            .ok()
            .and_then(|r| client::read_status(&shared.http, r).ok());
        if let Some(NodeStatus::Primary(p)) = status {
            for (i, name) in spares.iter().enumerate() {
                let Some(lag) = p
                    .spares
                    .iter()
                    .find(|s| s.name() == name)
                    .and_then(|s| s.lag())
                else {
                    continue;
                };
                let _ = records[i].record(lag.records);
                let _ = millis[i].record((lag.seconds * 1000.0) as u64);
            }
        }
        std::thread::sleep(LAG_SAMPLE_INTERVAL);
    }
    let mut out = serde_json::Map::new();
    for (i, name) in spares.iter().enumerate() {
        out.insert(name.clone(), json!({ "lag_records": percentiles(&records[i], 1.0), "lag_seconds": percentiles(&millis[i], 1000.0) }));
    }
    Value::Object(out)
}
