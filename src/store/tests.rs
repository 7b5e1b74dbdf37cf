//! In-process checks of capture and apply on real SQLite files: what the primary's executor
//! logs, applied by a spare's applier, gives an identical database.

use super::exec::{Executor, Request};
use super::*;
use crate::log::{Record, RecordKind};

pub(super) struct Pair {
    _dir: tempfile::TempDir,
    pub primary: Executor,
    pub spare: apply::Applier,
    pub lsn: u64,
    chain: u64,
}

/// A request of plain SQL statements.
pub(super) fn request(sqls: &[&str]) -> Request {
    Request {
        statements: sqls
            .iter()
            .map(|s| Statement {
                sql: s.to_string(),
                params: vec![],
            })
            .collect(),
    }
}

/// Commits a group the primary ran: with its log record (the next after `lsn`, continuing
/// `chain`, both advanced) when it changed something, which is returned.
pub(super) fn commit_logged(
    primary: &mut Executor,
    payload: Option<TxnPayload>,
    lsn: &mut u64,
    chain: &mut u64,
) -> Result<Option<Record>> {
    let Some(payload) = payload else {
        primary.commit(None, None)?;
        return Ok(None);
    };
    let rec = Record::new(*chain, *lsn + 1, 1, 1000, RecordKind::Txn, payload.encode());
    primary.commit(Some((rec.lsn, rec.time_ms)), Some(&payload))?;
    (*lsn, *chain) = (rec.lsn, rec.chain);
    Ok(Some(rec))
}

impl Pair {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let primary =
            Executor::new(open(&dir.path().join("p.sqlite"), ConnKind::Writer).unwrap()).unwrap();
        let spare =
            apply::Applier::new(open(&dir.path().join("s.sqlite"), ConnKind::Applier).unwrap())
                .unwrap();
        Pair {
            _dir: dir,
            primary,
            spare,
            lsn: 0,
            chain: 0,
        }
    }

    /// Runs one request on the primary and ships its record to the spare.
    pub fn exec(&mut self, sqls: &[&str]) -> Result<()> {
        let req = request(sqls);
        req.validate()?;
        let mut out = self.group(std::slice::from_ref(&req), &exec::WriteLimits::default())?;
        out.pop().unwrap().expect("a lone request runs").map(|_| ())
    }

    /// Runs `requests` as one group on the primary, commits it and ships its record to the
    /// spare; returns each request's outcome (None: not run in this group).
    pub fn group(
        &mut self,
        requests: &[Request],
        limits: &exec::WriteLimits,
    ) -> Result<Vec<Option<Result<Vec<exec::StatementResult>>>>> {
        let out = self.primary.run_group(requests, limits)?;
        let rec = commit_logged(
            &mut self.primary,
            out.payload,
            &mut self.lsn,
            &mut self.chain,
        )?;
        if let Some(rec) = rec {
            self.spare.apply(&[rec])?;
        }
        Ok(out.results)
    }

    pub fn dump(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<SqlValue>> {
        query::run(
            conn,
            &Statement {
                sql: sql.into(),
                params: vec![],
            },
            u64::MAX,
        )
        .unwrap()
        .rows
    }

    pub fn assert_same(&self, sql: &str) -> usize {
        let p = Self::dump(self.primary.connection(), sql);
        let s = Self::dump(self.spare.connection(), sql);
        assert_eq!(p, s, "{sql}");
        p.len()
    }
}

#[test]
fn rows_triggers_random_and_counters_arrive_identical() {
    let mut p = Pair::new();
    p.exec(&[
        "CREATE TABLE inv (id INTEGER PRIMARY KEY AUTOINCREMENT, total REAL, token BLOB, at TEXT)",
    ])
    .unwrap();
    p.exec(&["CREATE TABLE audit (n INTEGER PRIMARY KEY, what TEXT NOT NULL)"])
        .unwrap();
    p.exec(&["CREATE TRIGGER inv_audit AFTER INSERT ON inv BEGIN INSERT INTO audit (what) VALUES ('inv ' || new.id); END"]).unwrap();
    for _ in 0..3 {
        p.exec(&["INSERT INTO inv (total, token, at) VALUES (abs(random()) % 1000, randomblob(8), datetime('now', 'subsec'))"]).unwrap();
    }
    // Delete the newest invoice: the counter must stay at 3 on the spare too.
    p.exec(&["DELETE FROM inv WHERE id = 3"]).unwrap();
    assert_eq!(p.assert_same("SELECT * FROM inv ORDER BY id"), 2);
    assert_eq!(p.assert_same("SELECT * FROM audit ORDER BY n"), 3);
    assert_eq!(p.assert_same("SELECT name, seq FROM sqlite_sequence"), 1);
    let seq = Pair::dump(
        p.spare.connection(),
        "SELECT seq FROM sqlite_sequence WHERE name = 'inv'",
    );
    assert_eq!(seq, vec![vec![SqlValue::Integer(3)]]);
}

#[test]
fn rowid_tables_and_foreign_key_cascades_replicate() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE notes (body TEXT)"]).unwrap();
    p.exec(&["CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT)", "CREATE TABLE orders (id INTEGER PRIMARY KEY, cust INTEGER REFERENCES customer(id) ON DELETE CASCADE)"]).unwrap();
    p.exec(&["INSERT INTO notes VALUES ('a'), ('b')"]).unwrap();
    p.exec(&["UPDATE notes SET body = 'c' WHERE body = 'a'"])
        .unwrap();
    p.exec(&["INSERT INTO customer VALUES (1, 'x'), (2, 'y')"])
        .unwrap();
    p.exec(&["INSERT INTO orders VALUES (10, 1), (11, 1), (12, 2)"])
        .unwrap();
    p.exec(&["DELETE FROM customer WHERE id = 1"]).unwrap();
    assert_eq!(
        p.assert_same("SELECT rowid, body FROM notes ORDER BY rowid"),
        2
    );
    assert_eq!(p.assert_same("SELECT * FROM orders ORDER BY id"), 1);
}

#[test]
fn schema_changes_replay_including_drop_column() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)"])
        .unwrap();
    p.exec(&["INSERT INTO t VALUES (1, 'a', 'b')"]).unwrap();
    p.exec(&["ALTER TABLE t DROP COLUMN b"]).unwrap();
    p.exec(&["ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7"])
        .unwrap();
    p.exec(&["INSERT INTO t (id, a) VALUES (2, 'z')"]).unwrap();
    p.exec(&["CREATE INDEX t_a ON t(a)"]).unwrap();
    assert_eq!(p.assert_same("SELECT * FROM t ORDER BY id"), 2);
    assert_eq!(p.assert_same("SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE '\\_spare%' ESCAPE '\\' AND name NOT LIKE 'sqlite%' ORDER BY name"), 2);
}

#[test]
fn failing_statement_fails_its_request_alone() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY)"])
        .unwrap();
    let e = p
        .exec(&["INSERT INTO t VALUES (1)", "INSERT INTO nope VALUES (2)"])
        .unwrap_err();
    assert!(e.to_string().contains("no such table: nope"), "{e}");
    assert_eq!(p.assert_same("SELECT * FROM t"), 0);
    let lsn = p.lsn;
    // Nothing was logged for the failed batch.
    assert_eq!(lsn, 1);
}

#[test]
fn spare_missing_a_table_reports_divergence_instead_of_skipping() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY)"])
        .unwrap();
    p.spare.connection().execute_batch("DROP TABLE t").unwrap();
    let e = p.exec(&["INSERT INTO t VALUES (1)"]).unwrap_err();
    assert!(matches!(e, Error::Diverged(_)), "{e}");
}

#[test]
fn conflicting_row_on_the_spare_is_divergence() {
    let mut p = Pair::new();
    p.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"])
        .unwrap();
    p.exec(&["INSERT INTO t VALUES (1, 'a')"]).unwrap();
    p.spare
        .connection()
        .execute_batch("UPDATE t SET v = 'tampered'")
        .unwrap();
    let e = p.exec(&["UPDATE t SET v = 'b' WHERE id = 1"]).unwrap_err();
    assert!(matches!(e, Error::Diverged(_)), "{e}");
    // The failed apply left the spare's applied position where it was.
    assert_eq!(p.spare.applied().0, 2);
}

#[test]
fn statements_that_would_break_replication_are_refused() {
    let mut p = Pair::new();
    for (sql, needle) in [
        ("BEGIN", "transaction control"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA"),
        ("CREATE TABLE c AS SELECT random() AS r", "AS SELECT"),
        ("CREATE TABLE k (code TEXT PRIMARY KEY)", "NOT NULL"),
        (
            "CREATE TABLE u (id INTEGER PRIMARY KEY, code TEXT, UNIQUE(code) on conflict\n rollback)",
            "ON CONFLICT ROLLBACK",
        ),
    ] {
        let e = p.exec(&[sql]).unwrap_err().to_string();
        assert!(e.contains(needle), "{sql}: {e}");
    }
    let e = p
        .exec(&[
            "CREATE TABLE a (id INTEGER PRIMARY KEY)",
            "INSERT INTO a VALUES (1)",
        ])
        .unwrap_err()
        .to_string();
    assert!(e.contains("mixes schema changes"), "{e}");
    assert_eq!(p.lsn, 0);
}

#[test]
fn a_changeset_decodes_into_readable_row_changes() {
    use super::session::{decode_changes, Session};
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, name TEXT, score REAL, pic BLOB);
         INSERT INTO c VALUES (1, 'old', 1.5, x'00');
         INSERT INTO c VALUES (2, 'gone', NULL, NULL);",
    )
    .unwrap();
    let session = Session::attach_all(&conn).unwrap();
    conn.execute_batch(
        "INSERT INTO c VALUES (3, 'new', 2.5, x'0102');
         UPDATE c SET name = 'renamed' WHERE id = 1;
         DELETE FROM c WHERE id = 2;",
    )
    .unwrap();
    let changes = decode_changes(&session.changeset(&conn).unwrap(), 100).unwrap();
    let find = |op: &str| changes.iter().find(|c| c.op == op).unwrap().clone();
    let ins = find("insert");
    assert_eq!(ins.table, "c");
    assert_eq!(
        ins.new,
        vec![
            Some(SqlValue::Integer(3)),
            Some(SqlValue::Text("new".into())),
            Some(SqlValue::Real(2.5)),
            Some(SqlValue::Blob(vec![1, 2]))
        ]
    );
    let upd = find("update");
    assert_eq!(upd.old[1], Some(SqlValue::Text("old".into())));
    assert_eq!(upd.new[1], Some(SqlValue::Text("renamed".into())));
    let del = find("delete");
    assert_eq!(del.old[0], Some(SqlValue::Integer(2)));
    assert_eq!(del.old[2], Some(SqlValue::Null));
    assert_eq!(
        decode_changes(&session.changeset(&conn).unwrap(), 1)
            .unwrap()
            .len(),
        1,
        "bounded"
    );
}

#[test]
fn a_roll_forward_stops_at_the_asked_lsn_or_time_and_refuses_a_target_beyond_the_archive() {
    use crate::log::{Position, RecordKind};
    use crate::store::backup::{roll_forward, Target};
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let mut w = crate::log::open(&archive, 0).unwrap().writer;
    for t in [10, 20, 30, 40, 50] {
        w.append(1, t, RecordKind::Txn, vec![t as u8]).unwrap();
    }
    w.sync().unwrap();
    let from = Position::of(&crate::log::LogReader::new(&archive).record_at(1).unwrap());
    let restored = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(d.join("log")).unwrap();
        crate::log::base::save(&d.join("log"), &from).unwrap();
        d
    };
    let by_time = restored("t");
    // The progress bar (hidden here) counts the records rolled forward, of all it may take.
    let bar = indicatif::ProgressBar::hidden();
    assert_eq!(
        roll_forward(&by_time, &archive, from, Target::Time(35), &bar).unwrap(),
        3
    );
    assert_eq!((bar.position(), bar.length()), (2, Some(4)));
    assert_eq!(
        crate::log::open(&by_time.join("log"), 1)
            .unwrap()
            .writer
            .tail()
            .lsn,
        3
    );
    let by_lsn = restored("l");
    assert_eq!(
        roll_forward(&by_lsn, &archive, from, Target::Lsn(4), &bar).unwrap(),
        4
    );
    let too_far = restored("f");
    let e = roll_forward(&too_far, &archive, from, Target::Lsn(9), &bar)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ends at LSN 5"), "{e}");
}
