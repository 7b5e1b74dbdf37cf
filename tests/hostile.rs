//! Hostile and careless SQL and HTTP bodies through the public API of a healthy cluster (a
//! primary and two spares, API token set, short time limits). After every case: the answer
//! was a clear error or a correct result, the primary still takes writes, and every table of
//! the primary and both spares, read whole and ordered, is identical.

mod common;

use common::api::*;
use serde_json::{json, Value};

#[test]
fn hostile_writes_are_refused_and_leave_the_primary_writing_and_the_spares_identical() {
    let c = cluster();
    let cases: &[Case] = &[
        ("drop the meta table", |c| {
            refused(
                execute(c, "DROP TABLE _spare_meta"),
                400,
                "not_allowed",
                "_spare_",
            )
        }),
        ("empty the meta table", |c| {
            refused(
                execute(c, "DELETE FROM _spare_meta"),
                400,
                "not_allowed",
                "_spare_",
            )
        }),
        ("trigger on the meta table", |c| {
            let sql = "CREATE TRIGGER m AFTER UPDATE ON _spare_meta BEGIN SELECT 1; END";
            refused(execute(c, sql), 400, "not_allowed", "_spare_")
        }),
        ("a table in the node's namespace", |c| {
            let sql = "CREATE TABLE _spare_x (id INTEGER PRIMARY KEY)";
            refused(execute(c, sql), 400, "not_allowed", "_spare_")
        }),
        ("a trigger that writes the meta table when it fires", |c| {
            ok(execute(
                c,
                "CREATE TRIGGER sneaky AFTER INSERT ON t BEGIN DELETE FROM _spare_meta; END",
            ));
            refused(
                execute(c, "INSERT INTO t VALUES (3, 'c')"),
                400,
                "not_allowed",
                "_spare_",
            );
            ok(execute(c, "DROP TRIGGER sneaky"));
        }),
        ("drop a parent whose children cascade, twice", |c| {
            for _ in 0..2 {
                refused(
                    execute(c, "DROP TABLE parent"),
                    400,
                    "not_allowed",
                    "20 of child",
                );
            }
            let rows = c.rows("lan-1", "SELECT count(*) FROM child", 0);
            assert_eq!(rows[0][0], 20);
        }),
        ("drop a parent whose children without a key cascade", |c| {
            ok(execute(c, "CREATE TABLE notes (p INTEGER REFERENCES parent(id) ON DELETE SET NULL, body TEXT)"));
            ok(execute(c, "INSERT INTO notes VALUES (1, 'call back')"));
            refused(
                execute(c, "DROP TABLE parent"),
                400,
                "not_allowed",
                "1 of notes",
            );
        }),
        ("a runaway INSERT ... SELECT", |c| {
            let sql = "WITH RECURSIVE c(x) AS (SELECT 100 UNION ALL SELECT x + 1 FROM c) INSERT INTO t SELECT x, 'y' FROM c";
            refused(execute(c, sql), 400, "time_limit", "write_time_limit");
        }),
        ("ATTACH on the write path", |c| {
            refused(
                execute(c, "ATTACH '/etc/passwd' AS p"),
                400,
                "not_allowed",
                "ATTACH",
            )
        }),
        ("ATTACH hidden after a comment", |c| {
            let sql = "/* x */ -- y\n  attach database 'x.db' as x";
            refused(execute(c, sql), 400, "not_allowed", "ATTACH")
        }),
        ("a temporary table", |c| {
            refused(
                execute(c, "CREATE TEMP TABLE tt (x)"),
                400,
                "not_allowed",
                "temporary",
            )
        }),
        ("a temporary table named by its schema", |c| {
            refused(
                execute(c, "CREATE TABLE temp.tt (x)"),
                400,
                "not_allowed",
                "temporary",
            )
        }),
        ("a temporary trigger rewriting others' writes", |c| {
            let sql =
                "CREATE TEMP TRIGGER tt AFTER INSERT ON t BEGIN UPDATE t SET v = 'pwned'; END";
            refused(execute(c, sql), 400, "not_allowed", "temporary")
        }),
        ("COMMIT", |c| {
            refused(
                execute(c, "COMMIT"),
                400,
                "not_allowed",
                "transaction control",
            )
        }),
        ("SAVEPOINT in a batch", |c| {
            let body = json!({ "batch": [{ "sql": "INSERT INTO t VALUES (9, 'x')" }, { "sql": "SAVEPOINT a" }] });
            refused(
                post(c, "main", "/v1/execute", body),
                400,
                "not_allowed",
                "transaction control",
            );
        }),
        ("PRAGMA writable_schema", |c| {
            refused(
                execute(c, "PRAGMA writable_schema = 1"),
                400,
                "not_allowed",
                "PRAGMA",
            )
        }),
        ("a write to sqlite_master", |c| {
            refused(
                execute(c, "UPDATE sqlite_master SET sql = 'x' WHERE name = 't'"),
                400,
                "sql_error",
                "may not be modified",
            )
        }),
        ("a write to sqlite_sequence", |c| {
            ok(execute(
                c,
                "CREATE TABLE inv (id INTEGER PRIMARY KEY AUTOINCREMENT, total INTEGER)",
            ));
            ok(execute(c, "INSERT INTO inv (total) VALUES (1), (2)"));
            refused(
                execute(c, "DELETE FROM sqlite_sequence"),
                400,
                "not_allowed",
                "SQLite's own tables",
            );
        }),
        ("CREATE TABLE AS SELECT, also without spaces", |c| {
            for sql in [
                "CREATE TABLE r AS SELECT random() AS x",
                "CREATE TABLE r/**/AS SELECT random() AS x",
                "CREATE TABLE \"r\"AS SELECT datetime('now') AS x",
            ] {
                refused(execute(c, sql), 400, "invalid_request", "INSERT ... SELECT");
            }
        }),
        ("a non-constant default added to a table", |c| {
            refused(
                execute(c, "ALTER TABLE t ADD COLUMN r DEFAULT (random())"),
                400,
                "sql_error",
                "non-constant default",
            )
        }),
        ("randomblob as a column default", |c| {
            ok(execute(c, "CREATE TABLE tok (id INTEGER PRIMARY KEY, k BLOB DEFAULT (randomblob(16)), at TEXT DEFAULT (strftime('%f', 'now')))"));
            ok(execute(c, "INSERT INTO tok (id) VALUES (1), (2), (3)"));
        }),
        ("a recursive trigger", |c| {
            ok(execute(c, "CREATE TABLE chain (n INTEGER PRIMARY KEY)"));
            ok(execute(c, "CREATE TRIGGER grow AFTER INSERT ON chain WHEN new.n < 50 BEGIN INSERT INTO chain VALUES (new.n + 1); END"));
            ok(execute(c, "INSERT INTO chain VALUES (1)"));
        }),
        ("an FTS5 table", |c| {
            ok(execute(c, "CREATE VIRTUAL TABLE docs USING fts5(body)"));
            let added = ok(execute(
                c,
                "INSERT INTO docs (body) VALUES ('invoice 12 paid'), ('invoice 13 due')",
            ));
            let sql = "SELECT body FROM docs WHERE docs MATCH 'paid'";
            let rows = c.rows("lan-2", sql, added["lsn"].as_u64().unwrap());
            assert_eq!(rows, vec![json!(["invoice 12 paid"])]);
        }),
        ("an R*Tree table", |c| {
            ok(execute(
                c,
                "CREATE VIRTUAL TABLE zones USING rtree(id, x0, x1)",
            ));
            ok(execute(
                c,
                "INSERT INTO zones VALUES (1, 0, 10), (2, 5, 15)",
            ));
        }),
        ("a virtual table module that does not replicate", |c| {
            refused(
                execute(c, "CREATE VIRTUAL TABLE f4 USING fts4(body)"),
                400,
                "not_allowed",
                "fts5",
            )
        }),
        ("ANALYZE", |c| {
            ok(execute(c, "CREATE INDEX t_v ON t(v)"));
            ok(execute(c, "ANALYZE"));
        }),
        ("a deferred foreign key left unsatisfied", |c| {
            ok(execute(c, "CREATE TABLE lines (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"));
            refused(
                execute(c, "INSERT INTO lines VALUES (1, 999)"),
                400,
                "sql_error",
                "FOREIGN KEY",
            );
        }),
        ("several statements in one sql", |c| {
            refused(
                execute(c, "INSERT INTO t VALUES (5, 'e'); DROP TABLE t"),
                400,
                "invalid_request",
                "several statements",
            )
        }),
        ("VACUUM INTO a file", |c| {
            refused(
                execute(c, "VACUUM INTO '/tmp/stolen.db'"),
                400,
                "not_allowed",
                "VACUUM",
            )
        }),
        ("load_extension", |c| {
            let (status, body) = execute(c, "SELECT load_extension('/lib/x.so')");
            assert_eq!(status, 400, "{body}");
        }),
        ("INSERT ... RETURNING", |c| {
            let body = ok(execute(c, "INSERT INTO t VALUES (6, 'f') RETURNING id"));
            assert_eq!(body["results"][0]["rows_affected"], 1);
        }),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());
    run_cases(&c, cases);
}

#[test]
fn hostile_reads_are_refused_or_bounded_on_the_primary_and_on_spares() {
    let c = cluster();
    let cases: &[Case] = &[
        ("an endless recursive CTE", |c| {
            let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
            for node in NODES {
                refused(query(c, node, sql), 400, "time_limit", "read_time_limit");
            }
        }),
        ("BEGIN on a pooled reader", |c| {
            for node in NODES {
                refused(
                    query(c, node, "BEGIN"),
                    400,
                    "not_allowed",
                    "transaction control",
                );
                refused(
                    query(c, node, "SAVEPOINT s"),
                    400,
                    "not_allowed",
                    "transaction control",
                );
            }
            // A reader serves the newest state afterwards, not a pinned snapshot.
            let lsn = c.exec("INSERT INTO t VALUES (40, 'fresh')", json!([]));
            for node in NODES {
                for _ in 0..10 {
                    let rows = c.rows(node, "SELECT v FROM t WHERE id = 40", lsn);
                    assert_eq!(rows, vec![json!(["fresh"])], "{node}");
                }
            }
        }),
        ("ATTACH on the read path", |c| {
            for node in NODES {
                refused(
                    query(c, node, "ATTACH '/etc/passwd' AS p"),
                    400,
                    "not_allowed",
                    "ATTACH",
                );
            }
        }),
        ("a temporary table on a reader", |c| {
            refused(
                query(c, "lan-1", "CREATE TEMP TABLE x (y)"),
                400,
                "not_allowed",
                "temporary",
            )
        }),
        ("the node's own table", |c| {
            for node in NODES {
                refused(
                    query(c, node, "SELECT * FROM _spare_meta"),
                    400,
                    "not_allowed",
                    "_spare_",
                );
            }
        }),
        ("a gigabyte blob", |c| {
            for node in NODES {
                refused(
                    query(c, node, "SELECT zeroblob(999999999)"),
                    413,
                    "too_large",
                    "too big",
                );
            }
        }),
        ("an answer over max_result_bytes", |c| {
            let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT x, randomblob(1000) FROM c";
            refused(query(c, "lan-2", sql), 413, "too_large", "max_result_bytes");
        }),
        ("a read-only PRAGMA, also through a CTE", |c| {
            let rows = ok(query(c, "lan-1", "PRAGMA table_info(t)"));
            assert_eq!(rows["rows"].as_array().unwrap().len(), 2);
            let sql = "WITH p AS (SELECT name FROM pragma_table_info('t')) SELECT group_concat(name) FROM p";
            assert_eq!(ok(query(c, "lan-2", sql))["rows"], json!([["id,v"]]));
        }),
        ("a PRAGMA that changes the reader", |c| {
            refused(
                query(c, "main", "PRAGMA query_only = 0"),
                400,
                "not_allowed",
                "PRAGMA",
            )
        }),
        ("VACUUM INTO on the read path", |c| {
            refused(
                query(c, "lan-1", "VACUUM INTO '/tmp/stolen.db'"),
                400,
                "not_allowed",
                "VACUUM",
            )
        }),
        ("a write sent as a query", |c| {
            refused(
                query(c, "lan-1", "DELETE FROM t"),
                400,
                "not_read_only",
                "/v1/execute",
            )
        }),
    ];
    run_cases(&c, cases);
}

#[test]
fn malformed_requests_get_clear_errors_and_change_nothing() {
    let c = cluster();
    let cases: &[Case] = &[
        ("invalid UTF-8", |c| {
            let (status, body) = send(
                c,
                "main",
                "/v1/execute",
                b"{\"sql\": \"INSERT INTO t VALUES (7, '\xff\xfe')\"}",
            );
            assert_eq!(
                (status, body["error"].clone()),
                (400, json!("invalid_request")),
                "{body}"
            );
        }),
        ("deeply nested JSON", |c| {
            let deep = format!(
                "{{\"sql\": \"SELECT 1\", \"params\": [{}1{}]}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            refused(
                send(c, "main", "/v1/query", deep.as_bytes()),
                400,
                "invalid_request",
                "not valid JSON",
            );
        }),
        ("a NUL inside the SQL", |c| {
            refused(
                execute(c, "INSERT INTO t VALUES (8, 'h')\u{0}; DROP TABLE t"),
                400,
                "invalid_request",
                "NUL",
            );
        }),
        ("10,001 statements in a batch", |c| {
            let batch: Vec<Value> = (0..10_001)
                .map(|i| json!({ "sql": "INSERT INTO t VALUES (?, 'x')", "params": [1000 + i] }))
                .collect();
            refused(
                post(c, "main", "/v1/execute", json!({ "batch": batch })),
                400,
                "invalid_request",
                "at most 10000",
            );
        }),
        ("40,000 parameters", |c| {
            let params: Vec<i64> = (0..40_000).collect();
            let body = json!({ "sql": "INSERT INTO t VALUES (?, ?)", "params": params });
            refused(
                post(c, "main", "/v1/execute", body),
                400,
                "invalid_request",
                "parameter",
            );
        }),
        ("a 12 MB text parameter", |c| {
            let big = "x".repeat(12 << 20);
            let body = json!({ "sql": "INSERT INTO t VALUES (?, ?)", "params": [12, big] });
            ok(post(c, "main", "/v1/execute", body));
            ok(execute(c, "DELETE FROM t WHERE id = 12"));
        }),
        ("an empty statement", |c| {
            refused(
                execute(c, "  -- nothing\n"),
                400,
                "invalid_request",
                "statement keyword",
            );
        }),
        ("sql that is not a string", |c| {
            refused(
                post(c, "main", "/v1/execute", json!({ "sql": 42 })),
                400,
                "invalid_request",
                "\"sql\"",
            );
        }),
        ("a parameter that is not a SQL value", |c| {
            let body = json!({ "sql": "INSERT INTO t VALUES (?, ?)", "params": [13, { "a": 1 }] });
            refused(
                post(c, "main", "/v1/execute", body),
                400,
                "invalid_request",
                "not a SQL value",
            );
        }),
        ("a blob parameter that is not base64", |c| {
            let body = json!({ "sql": "INSERT INTO t VALUES (?, ?)", "params": [14, { "base64": "***" }] });
            refused(
                post(c, "main", "/v1/execute", body),
                400,
                "invalid_request",
                "base64",
            );
        }),
        ("two 40 MB writes at once", |c| {
            ok(execute(
                c,
                "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)",
            ));
            let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
                let runs: Vec<_> = [1, 2]
                    .map(|id| {
                        s.spawn(move || {
                            execute(
                                c,
                                &format!(
                                    "INSERT INTO big VALUES ({id}, zeroblob(40 * 1024 * 1024))"
                                ),
                            )
                        })
                    })
                    .into_iter()
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap()).collect()
            });
            for a in answers {
                ok(a);
            }
            let lsn = c.exec("INSERT INTO canary (what) VALUES ('big')", json!([]));
            for node in NODES {
                c.wait_applied(node, lsn);
                let rows = c.rows(node, "SELECT id, length(b) FROM big ORDER BY id", lsn);
                assert_eq!(
                    rows,
                    vec![json!([1, 41943040]), json!([2, 41943040])],
                    "{node}"
                );
            }
            // Too large by itself: refused, whatever else waits.
            refused(
                execute(c, "INSERT INTO big VALUES (3, zeroblob(70 * 1024 * 1024))"),
                413,
                "too_large",
                "",
            );
            ok(execute(c, "DROP TABLE big"));
        }),
    ];
    run_cases(&c, cases);
}

/// A statement holds the only write thread for up to `write_time_limit`, longer than the
/// lease: the lease renews meanwhile (its renewals do not go through the write thread), so
/// the next write is served at once.
#[test]
fn the_write_lease_keeps_renewing_while_a_long_statement_holds_the_write_thread() {
    let c = cluster_with(&["write_time_limit = \"4s\""]);
    let runaway = "WITH RECURSIVE c(x) AS (SELECT 100 UNION ALL SELECT x + 1 FROM c) INSERT INTO t SELECT x, 'y' FROM c";
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let stopped = s.spawn(|| execute(&c, runaway));
        // Past the lease (2 s) a lease that did not renew would read invalid: look every
        // 200 ms while the statement is known to run.
        let mut looked = 0;
        while started.elapsed() < std::time::Duration::from_millis(3800) {
            let lease = c.status("main")["lease"].clone();
            let running = !stopped.is_finished();
            if running && started.elapsed() > std::time::Duration::from_millis(2500) {
                assert_eq!(lease["valid"], true, "while the statement runs: {lease}");
                looked += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(looked > 0, "the statement ran past the lease");
        refused(
            stopped.join().unwrap(),
            400,
            "time_limit",
            "write_time_limit",
        );
    });
    ok(execute(&c, "INSERT INTO t VALUES (50, 'after')"));
    still_whole(&c, "a long statement");
}
