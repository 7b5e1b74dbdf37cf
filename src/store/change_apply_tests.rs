//! Our changeset apply (`store::change_apply`) against SQLite's: the same records, applied
//! by an applier using ours and by one using `sqlite3changeset_apply` only, must give the
//! primary's database, and both must refuse the same diverged copies, leaving them as they
//! were.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::apply::Applier;
use super::exec::{Executor, WriteLimits};
use super::tests::request;
use super::*;
use crate::log::Record;

const SCHEMA: &[&str] = &[
    "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT, n REAL, b BLOB)",
    "CREATE TABLE c (k1 TEXT, k2 INTEGER, v, PRIMARY KEY (k1, k2)) WITHOUT ROWID",
    "CREATE TABLE r (x, y)",
    "CREATE TABLE u (id INTEGER PRIMARY KEY, code TEXT UNIQUE, g INTEGER GENERATED ALWAYS AS (id * 2) VIRTUAL)",
    "CREATE TABLE \"we\"\"ird\" (\"col \"\"q\"\"\" INTEGER PRIMARY KEY, \"sel ect\" TEXT)",
];

/// A primary and two spares: `ours` applies with our statements, `reference` with SQLite's.
struct Trio {
    _dir: tempfile::TempDir,
    primary: Executor,
    ours: Applier,
    reference: Applier,
    /// Records logged and not yet applied.
    pending: Vec<Record>,
    lsn: u64,
    chain: u64,
}

impl Trio {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let primary = Executor::new(open(&at("p.sqlite"), ConnKind::Writer).unwrap()).unwrap();
        let ours = Applier::new(open(&at("o.sqlite"), ConnKind::Applier).unwrap()).unwrap();
        let reference =
            Applier::reference(open(&at("r.sqlite"), ConnKind::Applier).unwrap()).unwrap();
        Trio {
            _dir: dir,
            primary,
            ours,
            reference,
            pending: Vec::new(),
            lsn: 0,
            chain: 0,
        }
    }

    /// Runs one request on the primary; logs its record if it changed something.
    fn exec(&mut self, sqls: &[&str]) -> Result<()> {
        let out = self
            .primary
            .run_group(&[request(sqls)], &WriteLimits::default())?;
        let outcome = out.results.into_iter().next().flatten().expect("ran alone");
        let rec = tests::commit_logged(
            &mut self.primary,
            out.payload,
            &mut self.lsn,
            &mut self.chain,
        )?;
        self.pending.extend(rec);
        outcome.map(|_| ())
    }

    /// Applies what is pending on both spares, `batch` records per transaction; both must
    /// agree on the outcome. Returns it (pending records stay pending on an error).
    fn ship(&mut self, batch: usize) -> std::result::Result<(), String> {
        let pending = std::mem::take(&mut self.pending);
        for chunk in pending.chunks(batch.max(1)) {
            let ours = self.ours.apply(chunk);
            let reference = self.reference.apply(chunk);
            let kind = |r: &Result<()>| r.as_ref().map_err(std::mem::discriminant).err();
            assert_eq!(
                kind(&ours),
                kind(&reference),
                "ours: {ours:?}, SQLite's: {reference:?}"
            );
            if let Err(e) = ours {
                self.pending = pending;
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    /// Every table's rows, sorted, on the primary, ours and the reference: all equal.
    fn assert_same(&self) {
        let p = dump_all(self.primary.connection());
        assert_eq!(
            dump_all(self.ours.connection()),
            p,
            "ours differs from the primary"
        );
        assert_eq!(
            dump_all(self.reference.connection()),
            p,
            "SQLite's differs from the primary"
        );
    }

    /// Runs `sql` on both spares directly: an edit behind the cluster's back.
    fn tamper(&self, sql: &str) {
        self.ours.connection().execute_batch(sql).unwrap();
        self.reference.connection().execute_batch(sql).unwrap();
    }
}

fn dump_all(conn: &rusqlite::Connection) -> Vec<(String, Vec<String>)> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_spare\\_%' ESCAPE '\\' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let sql = format!("SELECT * FROM \"{}\"", t.replace('"', "\"\""));
            let mut rows: Vec<String> = tests::Pair::dump(conn, &sql)
                .into_iter()
                .map(|r| format!("{r:?}"))
                .collect();
            rows.sort();
            (t, rows)
        })
        .collect()
}

/// A value for an untyped or loosely typed column: any of SQLite's types, NULL included.
fn literal(rng: &mut StdRng) -> String {
    match rng.gen_range(0..6) {
        0 => "NULL".into(),
        1 => rng.gen_range(-5..50).to_string(),
        2 => format!("{}.5", rng.gen_range(-3..9)),
        3 => format!("'t{}'", rng.gen_range(0..9)),
        4 => format!("x'{:04x}'", rng.gen_range(0..0xffff)),
        _ => "''".into(),
    }
}

/// One random statement on the test schema.
fn statement(rng: &mut StdRng) -> String {
    let (id, v) = (rng.gen_range(1..25), literal(rng));
    let (k1, k2) = (
        ["'x'", "'y'", "'z'"][rng.gen_range(0..3)],
        rng.gen_range(0..4),
    );
    match rng.gen_range(0..16) {
        0 | 1 => format!(
            "INSERT OR REPLACE INTO a VALUES ({id}, {v}, {}, {})",
            literal(rng),
            literal(rng)
        ),
        2 => format!("UPDATE a SET v = {v} WHERE id = {id}"),
        3 => format!(
            "UPDATE a SET n = {v}, b = {} WHERE id % 4 = {}",
            literal(rng),
            id % 4
        ),
        4 => format!("DELETE FROM a WHERE id = {id}"),
        5 | 6 => format!("INSERT OR REPLACE INTO c VALUES ({k1}, {k2}, {v})"),
        7 => format!("UPDATE c SET v = {v} WHERE k1 = {k1}"),
        8 => format!("DELETE FROM c WHERE k1 = {k1} AND k2 = {k2}"),
        9 => format!("INSERT INTO r VALUES ({}, {v})", id % 5),
        10 => format!("UPDATE r SET y = {v} WHERE x = {}", id % 5),
        11 => format!("DELETE FROM r WHERE x = {}", id % 5),
        12 => format!(
            "INSERT OR IGNORE INTO u (id, code) VALUES ({id}, 'c{}')",
            rng.gen_range(0..30)
        ),
        13 => format!(
            "UPDATE OR IGNORE u SET code = 'c{}' WHERE id = {id}",
            rng.gen_range(0..30)
        ),
        14 => format!("INSERT OR REPLACE INTO \"we\"\"ird\" VALUES ({id}, {v})"),
        _ => format!("DELETE FROM \"we\"\"ird\" WHERE \"col \"\"q\"\"\" = {id}"),
    }
}

#[test]
fn our_apply_gives_what_sqlites_gives_on_a_random_workload() {
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut t = Trio::new();
        for sql in SCHEMA {
            t.exec(&[sql]).unwrap();
        }
        for _ in 0..40 {
            for _ in 0..rng.gen_range(1..12) {
                let sqls: Vec<String> = (0..rng.gen_range(1..4))
                    .map(|_| statement(&mut rng))
                    .collect();
                let refs: Vec<&str> = sqls.iter().map(String::as_str).collect();
                // A request the primary refuses (a constraint) logs nothing: fine.
                let _ = t.exec(&refs);
            }
            let batch = rng.gen_range(1..8);
            t.ship(batch).unwrap();
        }
        t.assert_same();
        let paths = t.ours.paths();
        assert!(
            paths.ours > 100,
            "seed {seed}: our apply was hardly used: {paths:?}"
        );
        assert!(
            paths.by_sqlite > 0,
            "seed {seed}: the rowid table went through ours: {paths:?}"
        );
        assert_eq!(t.reference.paths().ours, 0, "the reference used ours");
    }
}

#[test]
fn a_unique_value_swapped_between_two_rows_applies_through_sqlites_retry() {
    let mut t = Trio::new();
    t.exec(&[SCHEMA[3]]).unwrap();
    t.exec(&["INSERT INTO u (id, code) VALUES (1, 'a'), (2, 'b'), (3, 'c')"])
        .unwrap();
    t.ship(1).unwrap();
    // Whichever row's change comes first takes the other's code while that one still has
    // it: a constraint error that SQLite's apply retries after the other changes.
    t.exec(&[
        "UPDATE u SET code = 'tmp' WHERE id = 1",
        "UPDATE u SET code = 'a' WHERE id = 2",
        "UPDATE u SET code = 'b' WHERE id = 1",
    ])
    .unwrap();
    t.exec(&["INSERT INTO u (id, code) VALUES (4, 'd')"])
        .unwrap();
    t.ship(2).unwrap();
    t.assert_same();
    assert_eq!(t.ours.paths().redone, 1, "{:?}", t.ours.paths());
    assert_eq!(t.ours.applied().0, t.lsn);
}

#[test]
fn a_diverged_copy_is_refused_by_both_alike_and_left_as_it_was() {
    let cases: &[(&str, &str)] = &[
        // An UPDATE whose old value differs here.
        (
            "UPDATE a SET v = 'edited' WHERE id = 1",
            "UPDATE a SET v = 'new' WHERE id = 1",
        ),
        // An UPDATE of a row missing here.
        (
            "DELETE FROM a WHERE id = 2",
            "UPDATE a SET n = 9 WHERE id = 2",
        ),
        // A DELETE of a row that differs here, and of one missing here.
        (
            "UPDATE a SET b = x'ff' WHERE id = 1",
            "DELETE FROM a WHERE id = 1",
        ),
        ("DELETE FROM a WHERE id = 2", "DELETE FROM a WHERE id = 2"),
        // An INSERT of a key taken here.
        (
            "INSERT INTO a VALUES (7, 'extra', 0, NULL)",
            "INSERT INTO a VALUES (7, 'p', 1, NULL)",
        ),
        // A composite key, a row missing here.
        ("DELETE FROM c", "UPDATE c SET v = 3 WHERE k1 = 'x'"),
    ];
    for (edit, write) in cases {
        let mut t = Trio::new();
        t.exec(&[SCHEMA[0]]).unwrap();
        t.exec(&[SCHEMA[1]]).unwrap();
        t.exec(&["INSERT INTO a VALUES (1, 'one', 1.0, x'01'), (2, 'two', 2.0, NULL)"])
            .unwrap();
        t.exec(&["INSERT INTO c VALUES ('x', 1, 'cx')"]).unwrap();
        t.ship(4).unwrap();
        t.tamper(edit);
        let before = dump_all(t.ours.connection());
        let applied = t.ours.applied();
        // A clean record first, in the same batch: it must be rolled back with the rest.
        t.exec(&["INSERT INTO a VALUES (20, 'clean', 0, NULL)"])
            .unwrap();
        t.exec(&[write]).unwrap();
        let err = t
            .ship(2)
            .expect_err(&format!("{edit} / {write} was applied"));
        assert!(
            err.starts_with("diverged from the primary"),
            "{edit}: {err}"
        );
        assert_eq!(
            dump_all(t.ours.connection()),
            before,
            "{edit}: ours changed the copy"
        );
        assert_eq!(
            dump_all(t.reference.connection()),
            before,
            "{edit}: SQLite's changed it"
        );
        assert_eq!(t.ours.applied(), applied, "{edit}");
        // Ours met the conflict and left it to SQLite's apply, which named it.
        assert_eq!(
            t.ours.paths().redone,
            0,
            "{edit}: a failed redo is not counted"
        );
        assert!(t.ours.paths().ours > 0, "{edit}: {:?}", t.ours.paths());
    }
}

#[test]
fn schema_changes_inside_a_batch_are_applied_with_fresh_statements() {
    let mut t = Trio::new();
    t.exec(&["CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT)"])
        .unwrap();
    t.exec(&["INSERT INTO w VALUES (1, 'a')"]).unwrap();
    t.ship(1).unwrap();
    // One batch: statements compiled for the old `w` must not be used on the new one.
    t.exec(&["INSERT INTO w VALUES (2, 'b')"]).unwrap();
    t.exec(&["DROP TABLE w"]).unwrap();
    t.exec(&["CREATE TABLE w (p INTEGER PRIMARY KEY, q TEXT)"])
        .unwrap();
    t.exec(&["INSERT INTO w VALUES (3, 'c')"]).unwrap();
    t.exec(&["ALTER TABLE w ADD COLUMN extra TEXT DEFAULT 'd'"])
        .unwrap();
    t.exec(&["INSERT INTO w VALUES (4, 'e', 'f')"]).unwrap();
    t.exec(&["UPDATE w SET extra = 'g' WHERE p = 3"]).unwrap();
    t.exec(&["DELETE FROM w WHERE p = 4"]).unwrap();
    t.ship(100).unwrap();
    t.assert_same();
    // Across batches too.
    t.exec(&["ALTER TABLE w RENAME COLUMN q TO q2"]).unwrap();
    t.ship(1).unwrap();
    t.exec(&["UPDATE w SET q2 = 'h' WHERE p = 3"]).unwrap();
    t.ship(1).unwrap();
    t.assert_same();
    let paths = t.ours.paths();
    assert_eq!(paths.redone, 0, "{paths:?}");
    assert_eq!(paths.by_sqlite, 0, "{paths:?}");
    // Seven changesets: the inserts, the update and the delete (DDL records are empty).
    assert_eq!(paths.ours, 7, "{paths:?}");
}

#[test]
fn a_schema_changed_between_batches_behind_the_appliers_back_is_divergence() {
    let mut t = Trio::new();
    t.exec(&["CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT)"])
        .unwrap();
    t.exec(&["INSERT INTO w VALUES (1, 'a')"]).unwrap();
    t.ship(1).unwrap();
    // Same shape, other names: statements compiled for the old table must not be used.
    t.tamper("DROP TABLE w; CREATE TABLE w (p INTEGER PRIMARY KEY, q TEXT)");
    t.exec(&["INSERT INTO w VALUES (2, 'b')"]).unwrap();
    let err = t.ship(1).unwrap_err();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_batch_redone_with_sqlites_apply_runs_its_schema_change_again() {
    let mut t = Trio::new();
    t.exec(&[SCHEMA[3]]).unwrap();
    t.exec(&["INSERT INTO u (id, code) VALUES (1, 'a'), (2, 'b')"])
        .unwrap();
    t.ship(1).unwrap();
    t.exec(&["CREATE TABLE later (id INTEGER PRIMARY KEY, v TEXT)"])
        .unwrap();
    t.exec(&["INSERT INTO later VALUES (1, 'x')"]).unwrap();
    t.exec(&[
        "UPDATE u SET code = 'tmp' WHERE id = 1",
        "UPDATE u SET code = 'a' WHERE id = 2",
        "UPDATE u SET code = 'b' WHERE id = 1",
    ])
    .unwrap();
    t.ship(10).unwrap();
    t.assert_same();
    assert_eq!(t.ours.paths().redone, 1, "{:?}", t.ours.paths());
}
