//! `data/<node>/quarantine/`: records this node holds that the cluster's history does not
//! (a diverged spare's tail), kept readable for the operator instead of being discarded.
//! Each quarantine is a folder named after its time and the last common LSN, holding
//! `reason.txt`, `db.sqlite` (the node's database as it was, openable with any SQLite tool)
//! and `records.jsonl`: one JSON object per divergent record still in the log, with its LSN,
//! epoch, commit time, schema statements, per-table change counts, and the raw changeset
//! (base64).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::json;

use crate::error::{Error, Result};
use crate::log::{LogReader, Record, RecordKind};
use crate::store::session::{count_changes, decode_changes};
use crate::store::TxnPayload;

/// Records read per step while copying (bounds memory).
const COPY_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Row changes written out readable per record (the exact changeset follows in base64).
const MAX_DESCRIBED_CHANGES: usize = 10_000;

/// Creates a quarantine folder under `root` holding the records (`from`, `to`] of the log
/// in `log_dir` and, if given, a consistent copy of the database `db` as it was. Returns
/// the folder.
pub fn save(
    log_dir: &Path,
    from: u64,
    to: u64,
    root: &Path,
    reason: &str,
    db: Option<&Path>,
) -> Result<PathBuf> {
    let now = crate::clock::wall_ms();
    let dir = root.join(format!("{now}-after-{from}"));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let span = if to > from {
        format!("records {}..={to} of this node's log", from + 1)
    } else {
        "no log records".to_string()
    };
    std::fs::write(
        dir.join("reason.txt"),
        format!("{reason}\n{span}; db.sqlite: this node's database as it was\n"),
    )
    .map_err(Error::io("write reason.txt"))?;
    if let Some(db) = db {
        let conn = crate::store::open(db, crate::store::ConnKind::Snapshot)?;
        conn.execute("VACUUM INTO ?1", [dir.join("db.sqlite").to_string_lossy()])?;
    }
    let path = dir.join("records.jsonl");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path).map_err(Error::io(format!("create {}", path.display())))?,
    );
    let mut reader = LogReader::new(log_dir);
    let mut next = from + 1;
    while next <= to {
        for r in reader.read(next, to, COPY_BATCH_BYTES)? {
            writeln!(out, "{}", describe(&r)).map_err(Error::io("write records.jsonl"))?;
            next = r.lsn + 1;
        }
    }
    out.into_inner()
        .map_err(|e| Error::io("flush records.jsonl")(e.into_error()))?
        .sync_all()
        .map_err(Error::io("fsync records.jsonl"))?;
    crate::durable::sync_dir(&dir)?;
    Ok(dir)
}

/// One record as JSON: LSN, epoch, time, kind; for a transaction its schema statements,
/// per-table counts, each row change (values by column position) and the raw changeset.
pub fn describe(r: &Record) -> serde_json::Value {
    let mut v = json!({ "lsn": r.lsn, "epoch": r.epoch, "time_ms": r.time_ms, "kind": format!("{:?}", r.kind) });
    if r.kind == RecordKind::Txn {
        if let Ok(p) = TxnPayload::decode(&r.payload) {
            let counts = count_changes(&p.changeset).unwrap_or_default();
            v["ddl"] = json!(p.ddl.iter().map(|s| s.sql.clone()).collect::<Vec<_>>());
            v["tables"] = counts.iter().map(|(t, c)| (t.clone(), json!({ "inserted": c.inserts, "updated": c.updates, "deleted": c.deletes }))).collect::<serde_json::Map<_, _>>().into();
            // Readable rows (values by column position), then the exact bytes.
            v["changes"] = decode_changes(&p.changeset, MAX_DESCRIBED_CHANGES)
                .map(|changes| {
                    changes
                        .iter()
                        .map(|c| {
                            let vals = |vs: &[Option<crate::store::value::SqlValue>]| {
                                vs.iter()
                                    .map(|v| v.as_ref().map_or(serde_json::Value::Null, |v| v.to_json()))
                                    .collect::<Vec<_>>()
                            };
                            json!({ "table": c.table, "op": c.op, "old": vals(&c.old), "new": vals(&c.new) })
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .into();
            v["changeset_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&p.changeset));
        }
    }
    v
}
