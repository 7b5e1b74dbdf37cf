//! Where a history ends: the last record's LSN, epoch, chain and commit time.

use crate::log::record::Record;

/// Position at the end of a history: enough to check a spare against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub lsn: u64,
    pub epoch: u64,
    pub chain: u64,
    /// Commit time of the record at `lsn` (ms since the Unix epoch), 0 for an empty log.
    pub time_ms: u64,
}

impl Position {
    pub fn of(record: &Record) -> Self {
        Position {
            lsn: record.lsn,
            epoch: record.epoch,
            chain: record.chain,
            time_ms: record.time_ms,
        }
    }
}
