//! In-process checks of what client SQL cannot do to the primary's write connection, and of
//! the write bounds (time, changeset size): refused or stopped with a clear error, the group's
//! other requests unharmed, the spare identical.

use std::time::Duration;

use super::exec::{StatementResult, WriteLimits};
use super::tests::{request, Pair};
use super::*;

type Outcome = Option<Result<Vec<StatementResult>>>;

fn refused(p: &mut Pair, sql: &str) -> Error {
    let lsn = p.lsn;
    let e = p.exec(&[sql]).expect_err(sql);
    assert_eq!(p.lsn, lsn, "{sql}: a refused request logs nothing");
    e
}

#[test]
fn the_nodes_own_table_temp_objects_and_catalogues_are_out_of_reach() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v)"])
        .unwrap();
    for sql in [
        "DROP TABLE _spare_meta",
        "DELETE FROM _spare_meta",
        "UPDATE _spare_meta SET value = 0",
        "CREATE TRIGGER x AFTER INSERT ON _spare_meta BEGIN SELECT 1; END",
        "CREATE TABLE _spare_x (id INTEGER PRIMARY KEY)",
        "CREATE INDEX _spare_i ON t(v)",
        "INSERT INTO t (v) SELECT value FROM _spare_meta",
        // The text the node itself uses to record its position.
        "INSERT INTO _spare_meta (key, value) VALUES ('applied_lsn', 0) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    ] {
        let e = refused(&mut p, sql);
        assert!(
            matches!(e, Error::NotAllowed(ref m) if m.contains("_spare_")),
            "{sql}: {e}"
        );
    }
    for (sql, needle) in [
        ("CREATE TEMP TABLE tt (x)", "temporary"),
        ("CREATE TABLE temp.tt (x)", "temporary"),
        (
            "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
            "temporary",
        ),
        ("CREATE TEMP VIEW tv AS SELECT 1", "temporary"),
        ("DELETE FROM sqlite_sequence", "SQLite's own tables"),
        ("UPDATE sqlite_sequence SET seq = 0", "SQLite's own tables"),
        ("ATTACH 'other.db' AS o", "ATTACH"),
        ("COMMIT", "transaction control"),
        ("SAVEPOINT a", "transaction control"),
        ("PRAGMA foreign_keys = OFF", "PRAGMA"),
        ("VACUUM", "VACUUM"),
        (
            "CREATE VIRTUAL TABLE v USING fts4(body)",
            "virtual tables of module",
        ),
    ] {
        let e = refused(&mut p, sql);
        assert!(
            matches!(e, Error::NotAllowed(ref m) if m.contains(needle)),
            "{sql}: {e}"
        );
    }
    // A trigger whose body writes the node's table is refused when it would fire.
    p.exec(&["CREATE TRIGGER sneaky AFTER INSERT ON t BEGIN DELETE FROM _spare_meta; END"])
        .unwrap();
    let e = refused(&mut p, "INSERT INTO t (v) VALUES (1)");
    assert!(matches!(e, Error::NotAllowed(_)), "{e}");
    p.exec(&["DROP TRIGGER sneaky"]).unwrap();
    p.exec(&["INSERT INTO t (v) VALUES (1)"]).unwrap();
    assert!(p.primary.connection().is_autocommit());
    assert_eq!(p.assert_same("SELECT * FROM t ORDER BY id"), 1);
    assert_eq!(p.assert_same("SELECT * FROM sqlite_sequence"), 1);
}

#[test]
fn schema_changes_are_refused_outside_a_schema_request_whatever_their_spelling() {
    let mut p = Pair::new();
    // Not a schema request by its first keyword, yet SQLite compiles a schema change.
    let e = p
        .exec(&["EXPLAIN CREATE TABLE x (id INTEGER PRIMARY KEY)"])
        .unwrap_err();
    assert!(
        matches!(e, Error::NotAllowed(ref m) if m.contains("request of their own")),
        "{e}"
    );
    assert_eq!(p.lsn, 0);
}

#[test]
fn the_authorizer_refuses_on_the_writer_what_the_text_checks_would() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY)"])
        .unwrap();
    // Straight to the executor, past the text checks of `Request::validate`.
    for (sql, needle) in [
        ("ATTACH 'other.db' AS o", "ATTACH"),
        ("COMMIT", "transaction control"),
        ("SAVEPOINT s", "transaction control"),
        ("PRAGMA foreign_keys = OFF", "PRAGMA"),
        ("PRAGMA page_size = 1024", "PRAGMA"),
    ] {
        let out = p
            .group(&[request(&[sql])], &WriteLimits::default())
            .unwrap();
        assert!(
            matches!(&out[0], Some(Err(Error::NotAllowed(m))) if m.contains(needle)),
            "{sql}: {out:?}"
        );
    }
    p.exec(&["INSERT INTO t VALUES (1)"]).unwrap();
    assert_eq!(p.assert_same("SELECT * FROM t"), 1);
}

#[test]
fn create_table_as_select_is_refused_however_it_is_spelled() {
    let mut p = Pair::new();
    for sql in [
        "CREATE TABLE r/**/AS SELECT random() AS x",
        "CREATE TABLE \"r\"AS SELECT datetime('now') AS x",
    ] {
        let out = p
            .group(&[request(&[sql])], &WriteLimits::default())
            .unwrap();
        assert!(
            matches!(&out[0], Some(Err(Error::InvalidInput(m))) if m.contains("AS SELECT")),
            "{sql}: {out:?}"
        );
    }
    // Refused even when the primary's draw gives no row: a spare's draw may give one.
    let sql = "CREATE TABLE r/**/AS SELECT 1 AS x WHERE random() > 0 AND 0";
    let out = p
        .group(&[request(&[sql])], &WriteLimits::default())
        .unwrap();
    assert!(
        matches!(&out[0], Some(Err(Error::InvalidInput(_)))),
        "{out:?}"
    );
    // An existing table named again with IF NOT EXISTS, in any case, is no copy; nor is
    // a virtual table, whose shadow tables fill as it is created, nor what follows it.
    p.exec(&["CREATE TABLE k (id INTEGER PRIMARY KEY)"])
        .unwrap();
    p.exec(&["INSERT INTO k VALUES (1)"]).unwrap();
    p.exec(&["CREATE TABLE IF NOT EXISTS K (id INTEGER PRIMARY KEY)"])
        .unwrap();
    p.exec(&["CREATE VIRTUAL TABLE f USING fts5(body)"])
        .unwrap();
    p.exec(&["CREATE TABLE after_fts (id INTEGER PRIMARY KEY)"])
        .unwrap();
    assert_eq!(
        p.assert_same(
            "SELECT name FROM sqlite_schema WHERE name IN ('r', 'k', 'f', 'after_fts') ORDER BY 1"
        ),
        3
    );
}

#[test]
fn a_drop_table_whose_foreign_keys_would_change_other_rows_is_refused_until_they_are_gone() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE parent (id INTEGER PRIMARY KEY)"])
        .unwrap();
    p.exec(&["CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) ON DELETE CASCADE)"]).unwrap();
    p.exec(&["CREATE TABLE other (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) ON DELETE SET NULL)"]).unwrap();
    p.exec(&["INSERT INTO parent VALUES (1), (2)"]).unwrap();
    p.exec(&["INSERT INTO child VALUES (10, 1), (11, 2)"])
        .unwrap();
    p.exec(&["INSERT INTO other VALUES (20, 2)"]).unwrap();
    p.exec(&["CREATE TABLE loose (p INTEGER REFERENCES parent(id) ON DELETE CASCADE)"])
        .unwrap();
    p.exec(&["INSERT INTO loose VALUES (1)"]).unwrap();
    // Refused every time: a retry does not find a compiled statement that skips the check.
    for _ in 0..3 {
        let e = refused(&mut p, "DROP TABLE parent");
        assert!(
            matches!(e, Error::NotAllowed(ref m) if m.contains("2 of child") && m.contains("delete or update the rows of child")),
            "{e}"
        );
    }
    assert_eq!(p.assert_same("SELECT * FROM child ORDER BY id"), 2);
    // A child without a PRIMARY KEY is watched by rowid.
    p.exec(&["DELETE FROM child"]).unwrap();
    p.exec(&["UPDATE other SET p = NULL"]).unwrap();
    let e = refused(&mut p, "DROP TABLE parent");
    assert!(
        matches!(e, Error::NotAllowed(ref m) if m.contains("loose")),
        "{e}"
    );
    assert_eq!(p.assert_same("SELECT * FROM loose"), 1);
    p.exec(&["DELETE FROM loose"]).unwrap();
    p.exec(&["DROP TABLE parent"]).unwrap();
    assert_eq!(p.assert_same("SELECT * FROM other ORDER BY id"), 1);
    assert_eq!(p.assert_same("SELECT name FROM sqlite_schema WHERE name IN ('parent', 'child', 'other', 'loose') ORDER BY name"), 3);
}

#[test]
fn a_drop_table_cascading_over_a_large_table_is_stopped_early_and_refused() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE parent (id INTEGER PRIMARY KEY)"])
        .unwrap();
    p.exec(&["CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) ON DELETE CASCADE, note BLOB)"]).unwrap();
    p.exec(&["INSERT INTO parent VALUES (1)"]).unwrap();
    p.exec(&["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000) INSERT INTO child SELECT x, 1, randomblob(100) FROM c"]).unwrap();
    let e = refused(&mut p, "DROP TABLE parent");
    assert!(
        matches!(e, Error::NotAllowed(ref m) if m.contains("more than 1024 KiB of rows of child")),
        "{e}"
    );
    assert_eq!(p.assert_same("SELECT count(*) FROM child"), 1);
    let n = Pair::dump(p.primary.connection(), "SELECT count(*) FROM child");
    assert_eq!(n, vec![vec![SqlValue::Integer(30000)]]);
}

#[test]
fn fts5_rtree_and_analyze_replicate_identically() {
    let mut p = Pair::new();
    p.exec(&["CREATE VIRTUAL TABLE docs USING fts5(body)"])
        .unwrap();
    p.exec(&["CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1, y0, y1)"])
        .unwrap();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])
        .unwrap();
    p.exec(&["CREATE INDEX t_v ON t(v)"]).unwrap();
    for i in 0..20 {
        p.exec(&[
            &format!("INSERT INTO docs (rowid, body) VALUES ({i}, 'invoice number {i} paid')"),
            &format!("INSERT INTO boxes VALUES ({i}, {i}, {i}.5, 0, 1)"),
            &format!("INSERT INTO t VALUES ({i}, 'v{}')", i % 3),
        ])
        .unwrap();
    }
    p.exec(&["DELETE FROM docs WHERE rowid = 3"]).unwrap();
    p.exec(&["INSERT INTO docs (docs) VALUES ('optimize')"])
        .unwrap();
    p.exec(&["ANALYZE"]).unwrap();
    assert_eq!(
        p.assert_same("SELECT rowid FROM docs WHERE docs MATCH 'paid' ORDER BY rowid"),
        19
    );
    assert_eq!(
        p.assert_same("SELECT id FROM boxes WHERE x0 >= 5 AND x1 <= 9 ORDER BY id"),
        4
    );
    assert!(p.assert_same("SELECT * FROM sqlite_stat1 ORDER BY 1, 2") > 0);
    let shadow = "SELECT name FROM sqlite_schema WHERE name LIKE 'docs%' OR name LIKE 'boxes%' ORDER BY name";
    for row in Pair::dump(p.primary.connection(), shadow) {
        let SqlValue::Text(name) = &row[0] else {
            panic!("table name")
        };
        p.assert_same(&format!("SELECT * FROM \"{name}\" ORDER BY 1"));
    }
    p.exec(&["DROP TABLE docs"]).unwrap();
    assert_eq!(p.assert_same(shadow), 4);
}

#[test]
fn a_runaway_write_is_stopped_and_the_groups_other_requests_still_commit() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, v)"])
        .unwrap();
    let limits = WriteLimits {
        time: Duration::from_millis(300),
        ..WriteLimits::default()
    };
    let runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) INSERT INTO t SELECT x, x FROM c";
    let group = [
        request(&["INSERT INTO t VALUES (-1, 'kept')"]),
        request(&[runaway]),
        request(&["INSERT INTO t VALUES (-2, 'next')"]),
    ];
    let out = p.group(&group, &limits).unwrap();
    // The stopped statement took the transaction with it; the first request ran again.
    assert!(matches!(out[0], Some(Ok(_))), "{out:?}");
    assert!(
        matches!(&out[1], Some(Err(Error::TimeLimit(m))) if m.contains("write_time_limit")),
        "{out:?}"
    );
    assert!(out[2].is_none(), "the rest goes to the next group: {out:?}");
    assert_eq!(p.assert_same("SELECT * FROM t ORDER BY id"), 1);
}

#[test]
fn a_group_too_large_is_split_and_only_a_request_too_large_alone_is_refused() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"])
        .unwrap();
    let limits = WriteLimits {
        max_changeset_bytes: 1 << 20,
        ..WriteLimits::default()
    };
    let blob = |id: u32, kib: u32| {
        request(&[&format!(
            "INSERT INTO t VALUES ({id}, zeroblob({kib} * 1024))"
        )])
    };
    let out: Vec<Outcome> = p.group(&[blob(1, 600), blob(2, 600)], &limits).unwrap();
    assert!(matches!(out[0], Some(Ok(_))), "{out:?}");
    assert!(
        out[1].is_none(),
        "the second goes to the next group: {out:?}"
    );
    let out = p.group(&[blob(2, 600)], &limits).unwrap();
    assert!(matches!(out[0], Some(Ok(_))), "{out:?}");
    // Too large alone, in one value and grown row by row in one statement.
    let grow = request(&["WITH RECURSIVE c(x) AS (SELECT 10 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) INSERT INTO t SELECT x, randomblob(100) FROM c"]);
    for req in [blob(3, 2048), grow] {
        let out = p.group(std::slice::from_ref(&req), &limits).unwrap();
        assert!(
            matches!(&out[0], Some(Err(Error::TooLarge(m))) if m.contains("split it")),
            "{out:?}"
        );
    }
    p.exec(&["INSERT INTO t VALUES (4, 'small')"]).unwrap();
    assert_eq!(p.assert_same("SELECT id, length(b) FROM t ORDER BY id"), 3);
}

#[test]
fn a_statement_stopped_for_size_after_others_lets_them_commit_and_is_refused_alone_later() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"])
        .unwrap();
    let limits = WriteLimits {
        max_changeset_bytes: 1 << 20,
        ..WriteLimits::default()
    };
    // Grows row by row inside one statement: stopped mid-way, which takes the whole
    // transaction with it.
    let grow = request(&["WITH RECURSIVE c(x) AS (SELECT 10 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) INSERT INTO t SELECT x, randomblob(100) FROM c"]);
    let small = request(&["INSERT INTO t VALUES (1, 'small')"]);
    let later = request(&["INSERT INTO t VALUES (2, 'later')"]);
    let out = p
        .group(&[small.clone(), grow.clone(), later], &limits)
        .unwrap();
    assert!(matches!(out[0], Some(Ok(_))), "the first commits: {out:?}");
    assert!(out[1].is_none() && out[2].is_none(), "{out:?}");
    assert_eq!(p.assert_same("SELECT id FROM t"), 1);
    let out = p.group(&[grow, small], &limits).unwrap();
    assert!(matches!(&out[0], Some(Err(Error::TooLarge(_)))), "{out:?}");
    assert!(out[1].is_none(), "a fresh group for the rest: {out:?}");
}

#[test]
fn a_deferred_foreign_key_left_unsatisfied_fails_its_request_alone() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE parent (id INTEGER PRIMARY KEY)"])
        .unwrap();
    p.exec(&["CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"]).unwrap();
    let group = [
        request(&["INSERT INTO parent VALUES (1)"]),
        request(&["INSERT INTO child VALUES (1, 99)"]),
        request(&["INSERT INTO child VALUES (2, 1)"]),
    ];
    let out = p.group(&group, &WriteLimits::default()).unwrap();
    assert!(matches!(out[0], Some(Ok(_))), "{out:?}");
    assert!(
        matches!(&out[1], Some(Err(e)) if e.to_string().contains("FOREIGN KEY")),
        "{out:?}"
    );
    assert!(matches!(out[2], Some(Ok(_))), "{out:?}");
    assert_eq!(p.assert_same("SELECT * FROM child ORDER BY id"), 1);
}
