//! The primary's per-request cost, end to end: a real `spare run` primary (this build's
//! binary, no spares) answering single-row INSERTs over loopback HTTP, each acknowledged
//! after its log record's fsync, from 1 and from 8 clients with keep-alive connections.
//! Criterion reports the time per request; the bench also prints the primary process's CPU
//! time per request (all threads, user and system, from /proc), the figure the speed goals
//! are set in. And the part of a request that is pure parsing: the JSON body into a checked
//! request (`http::body::write_request`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use spare::client;

/// Requests per measured iteration, split across the clients.
const REQUESTS_PER_ITER: usize = 256;

fn body() -> serde_json::Value {
    json!({"sql": "INSERT INTO t (v) VALUES (?)", "params": ["x".repeat(100)]})
}

fn parse(c: &mut Criterion) {
    let bytes = serde_json::to_vec(&body()).unwrap();
    let mut g = c.benchmark_group("primary_request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_body", |b| {
        b.iter(|| spare::http::body::write_request(&bytes).unwrap())
    });
    g.finish();
}

/// Sends `requests` INSERTs from `clients` threads, each on its own keep-alive agent.
fn run(http: &str, clients: usize, requests: usize, done: &AtomicU64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent = client::agent(Duration::from_secs(10));
                for _ in 0..requests / clients {
                    let r = client::post_with(&agent, http, "/v1/execute", &body()).unwrap();
                    assert_eq!(r.status, 200, "the primary refused a write: {:?}", r.body);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    start.elapsed()
}

fn http_insert(c: &mut Criterion) {
    let mut cluster = common::Cluster::new(0, false);
    cluster.start_all();
    cluster.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        json!([]),
    );
    let http = cluster.http("main");
    let pid = cluster.pid("main");
    let mut g = c.benchmark_group("primary_request");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(REQUESTS_PER_ITER as u64));
    for clients in [1usize, 8] {
        let done = AtomicU64::new(0);
        let cpu_before = spare::clock::process_cpu_seconds(pid).unwrap_or(0.0);
        g.bench_with_input(
            BenchmarkId::new("http_insert_clients", clients),
            &clients,
            |b, &n| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run(&http, n, REQUESTS_PER_ITER, &done))
                        .sum()
                })
            },
        );
        let cpu = spare::clock::process_cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
        let n = done.load(Ordering::Relaxed).max(1);
        eprintln!(
            "primary_request/http_insert_clients/{clients}: primary CPU {:.0} µs per request \
             ({n} requests)",
            cpu * 1e6 / n as f64
        );
    }
    g.finish();
}

criterion_group!(benches, parse, http_insert);
criterion_main!(benches);
