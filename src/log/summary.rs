//! What a stretch of the log holds, for the loss preview of a promotion (DESIGN.md §7):
//! records, transactions (heartbeat and epoch records are not data), bytes, and the newest
//! transaction's commit time. Reads at most [`MAX_SUMMARY_RECORDS`] records.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::log::{LogReader, RecordKind};

/// Largest stretch summarised in one call (a spare far ahead of the candidate is summarised
/// up to here and said to be partial).
pub const MAX_SUMMARY_RECORDS: u64 = 1_000_000;
/// Records read per batch.
const SUMMARY_BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Records in (after, to].
    pub records: u64,
    /// Of which transactions.
    pub transactions: u64,
    /// Their encoded size in the log.
    pub bytes: u64,
    /// Commit time of the newest transaction, ms since the Unix epoch.
    pub newest_commit_ms: Option<u64>,
    /// False when the log no longer holds the start of the stretch, or it was too long.
    pub complete: bool,
}

/// Summarises records `after + 1 ..= to` of the log in `dir`, whose oldest record is
/// `oldest`; `to` must be durable.
pub fn summarise(dir: &Path, oldest: u64, after: u64, to: u64) -> Result<Summary> {
    let from = (after + 1).max(oldest);
    let end = to.min(from.saturating_add(MAX_SUMMARY_RECORDS - 1));
    let mut s = Summary {
        complete: from == after + 1 && end == to,
        ..Summary::default()
    };
    let mut reader = LogReader::new(dir);
    let mut lsn = from;
    while lsn <= end {
        let batch = reader.read(lsn, end, SUMMARY_BATCH_BYTES)?;
        for r in &batch {
            s.records += 1;
            s.bytes += r.encoded_len() as u64;
            if r.kind == RecordKind::Txn {
                s.transactions += 1;
                s.newest_commit_ms = Some(r.time_ms);
            }
        }
        lsn += batch.len() as u64;
    }
    Ok(s)
}
