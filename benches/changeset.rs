//! Changeset capture and apply: the cost of recording a one-row transaction with the session
//! extension on the primary, and of applying a batch of such records on a spare (one SQLite
//! transaction per batch, as the spare's apply thread does).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spare::log::{Record, RecordKind};
use spare::store::apply::Applier;
use spare::store::exec::{Executor, Request};
use spare::store::{self, ConnKind, SqlValue, Statement};

fn insert(i: i64) -> Request {
    Request {
        statements: vec![Statement {
            sql: "INSERT INTO t (id, v) VALUES (?, ?)".into(),
            params: vec![SqlValue::Integer(i), SqlValue::Text("x".repeat(100))],
        }],
    }
}

fn executor(dir: &std::path::Path) -> Executor {
    let conn = store::open(&dir.join("p.sqlite"), ConnKind::Writer).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
    Executor::new(conn).unwrap()
}

fn capture(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut ex = executor(dir.path());
    let mut i = 0;
    let mut g = c.benchmark_group("capture");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_row_txn", |b| {
        b.iter(|| {
            i += 1;
            let out = ex.run_group(&[insert(i)], &Default::default()).unwrap();
            ex.commit(None, out.payload.as_ref()).unwrap();
            out.payload.unwrap().changeset.len()
        })
    });
    g.finish();
}

/// The DDL record creating `t`, then `n` one-row records, as the primary would log them.
fn records(n: usize) -> Vec<Record> {
    let dir = tempfile::tempdir().unwrap();
    let mut ex =
        Executor::new(store::open(&dir.path().join("p.sqlite"), ConnKind::Writer).unwrap())
            .unwrap();
    let ddl = Request {
        statements: vec![Statement {
            sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)".into(),
            params: vec![],
        }],
    };
    let mut out: Vec<Record> = Vec::new();
    for (lsn, req) in std::iter::once(ddl)
        .chain((0..n as i64).map(insert))
        .enumerate()
    {
        let o = ex.run_group(&[req], &Default::default()).unwrap();
        ex.commit(None, o.payload.as_ref()).unwrap();
        let chain = out.last().map_or(0, |r| r.chain);
        out.push(Record::new(
            chain,
            lsn as u64 + 1,
            1,
            0,
            RecordKind::Txn,
            o.payload.unwrap().encode(),
        ));
    }
    out
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    // 1 and 2: a spare under a steady load (each fsynced batch holds one or two records);
    // 1000: catching up.
    for batch in [1usize, 2, 10, 1000] {
        let recs = records(5000);
        g.throughput(Throughput::Elements(5000));
        g.bench_with_input(
            BenchmarkId::new("records_per_txn", batch),
            &batch,
            |b, &batch| {
                b.iter_batched(
                    || {
                        let dir = tempfile::tempdir().unwrap();
                        let applier = Applier::new(
                            store::open(&dir.path().join("s.sqlite"), ConnKind::Applier).unwrap(),
                        )
                        .unwrap();
                        (dir, applier)
                    },
                    |(_dir, mut applier)| {
                        for chunk in recs.chunks(batch) {
                            applier.apply(chunk).unwrap();
                        }
                    },
                    criterion::BatchSize::PerIteration,
                )
            },
        );
    }
    g.finish();
}

criterion_group!(benches, capture, apply);
criterion_main!(benches);
