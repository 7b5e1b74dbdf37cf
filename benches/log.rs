//! Log append with group commit: W concurrent writers each commit single-row INSERTs
//! through the real write path (SQLite transaction + session capture + log append + one
//! fsync per group), for W = 1, 8, 64. Criterion reports time per commit; the ratio between
//! W = 1 and W = 64 is what group commit buys. Also the bare log: one record per fsync.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spare::actors::primary::committer::{Committer, Job, WriteJob};
use spare::log::{self, Position, RecordKind};
use spare::store::exec::{Executor, Request};
use spare::store::{self, ConnKind, SqlValue, Statement};
use tokio::sync::{mpsc, oneshot, watch};

/// Commits per measured iteration, split across the writers.
const COMMITS_PER_ITER: usize = 512;

struct WritePath {
    _dir: tempfile::TempDir,
    jobs: mpsc::Sender<Job>,
}

fn write_path() -> WritePath {
    let dir = tempfile::tempdir().unwrap();
    let conn = store::open(&dir.path().join("db.sqlite"), ConnKind::Writer).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
    let executor = Executor::new(conn).unwrap();
    let opened = log::open(&dir.path().join("log"), 0).unwrap();
    let committed = Arc::new(watch::Sender::new(Position::default()));
    let (jobs, rx) = mpsc::channel(4096);
    let committer = Committer::new(executor, opened.writer, 1, committed);
    std::thread::spawn(move || committer.run(rx));
    WritePath { _dir: dir, jobs }
}

fn insert() -> Request {
    Request {
        statements: vec![Statement {
            sql: "INSERT INTO t (v) VALUES (?)".into(),
            params: vec![SqlValue::Text("x".repeat(100))],
        }],
    }
}

/// Runs `commits` INSERTs from `writers` threads; returns the elapsed time.
fn run(path: &WritePath, writers: usize, commits: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..writers {
            let jobs = path.jobs.clone();
            s.spawn(move || {
                for _ in 0..commits / writers {
                    let (reply, rx) = oneshot::channel();
                    jobs.blocking_send(Job::Write(WriteJob {
                        request: insert(),
                        reply,
                    }))
                    .unwrap();
                    rx.blocking_recv().unwrap().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_path_group_commit");
    g.sample_size(10);
    g.throughput(Throughput::Elements(COMMITS_PER_ITER as u64));
    for writers in [1usize, 8, 64] {
        let path = write_path();
        g.bench_with_input(BenchmarkId::new("writers", writers), &writers, |b, &w| {
            b.iter_custom(|iters| (0..iters).map(|_| run(&path, w, COMMITS_PER_ITER)).sum());
        });
    }
    g.finish();
}

fn bare_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_append");
    g.sample_size(10);
    for per_sync in [1usize, 64] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = log::open(dir.path(), 0).unwrap().writer;
        g.throughput(Throughput::Elements(per_sync as u64));
        g.bench_with_input(
            BenchmarkId::new("records_per_fsync", per_sync),
            &per_sync,
            |b, &n| {
                b.iter(|| {
                    for _ in 0..n {
                        w.append(1, 0, RecordKind::Txn, vec![7u8; 200]).unwrap();
                    }
                    w.sync().unwrap();
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, group_commit, bare_log);
criterion_main!(benches);
