//! Lag of a spare as the primary sees it (DESIGN.md §6). Bytes and per-state detail come
//! with the monitors; this computes what every status shows.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Lag {
    /// Records the primary has durably logged that the spare has not applied.
    pub records: u64,
    /// Age of the oldest record the spare has not applied (0 when caught up).
    pub seconds: f64,
    /// Seconds since the spare last answered; None if it never did.
    pub last_ack_age_s: Option<f64>,
    /// Log bytes between the spare's applied record and the primary's last one; None when
    /// the spare is further behind than [`RECENT_RECORDS_CAPACITY`] records.
    pub bytes: Option<u64>,
}

/// `oldest_unapplied_time_ms`: commit time of the record after `applied`, if known.
pub fn compute(
    primary_last: u64,
    applied: u64,
    oldest_unapplied_time_ms: Option<u64>,
    now_ms: u64,
    last_ack_age_s: Option<f64>,
) -> Lag {
    let records = primary_last.saturating_sub(applied);
    let seconds = match (records, oldest_unapplied_time_ms) {
        (0, _) | (_, None) => 0.0,
        (_, Some(t)) => now_ms.saturating_sub(t) as f64 / 1000.0,
    };
    Lag {
        records,
        seconds,
        last_ack_age_s,
        bytes: None,
    }
}

/// A connected spare whose oldest missing record is older than this is `catching-up`
/// rather than `streaming`.
pub const CATCHING_UP_AFTER_S: f64 = 2.0;

/// Records the primary remembers (start offset in the log, commit time) for lag in bytes
/// and seconds: 16 bytes each, so 4 MiB at most.
pub const RECENT_RECORDS_CAPACITY: usize = 262_144;

/// The most recent records' log offsets and commit times, consecutive by LSN. Offsets count
/// bytes appended since the primary process started (only differences are meaningful).
#[derive(Debug, Default)]
pub struct RecentRecords {
    /// LSN of `entries[0]`.
    first_lsn: u64,
    /// (start offset, commit time ms) per record.
    entries: std::collections::VecDeque<(u64, u64)>,
    /// Offset just past the newest record.
    end_offset: u64,
}

impl RecentRecords {
    /// Remembers record `lsn` spanning [start, end) of the log, committed at `time_ms`.
    pub fn push(&mut self, lsn: u64, start: u64, end: u64, time_ms: u64) {
        if self.entries.is_empty() || lsn != self.first_lsn + self.entries.len() as u64 {
            self.entries.clear();
            self.first_lsn = lsn;
        }
        if self.entries.len() == RECENT_RECORDS_CAPACITY {
            self.entries.pop_front();
            self.first_lsn += 1;
        }
        self.entries.push_back((start, time_ms));
        self.end_offset = end;
    }

    fn get(&self, lsn: u64) -> Option<(u64, u64)> {
        lsn.checked_sub(self.first_lsn)
            .and_then(|i| self.entries.get(i as usize))
            .copied()
    }

    /// Log bytes after `applied` (None if that is older than what is remembered).
    pub fn bytes_after(&self, applied: u64, tail: u64) -> Option<u64> {
        if applied >= tail {
            return Some(0);
        }
        self.get(applied + 1)
            .map(|(start, _)| self.end_offset.saturating_sub(start))
    }

    /// Commit time of record `lsn`, if remembered.
    pub fn time_of(&self, lsn: u64) -> Option<u64> {
        self.get(lsn).map(|(_, t)| t)
    }
}

/// How far a seed got, in percent (an empty snapshot is done).
pub fn seed_percent(done: u64, size: u64) -> u64 {
    (done * 100).checked_div(size).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_records_give_bytes_and_times_behind_the_tail() {
        let mut r = RecentRecords::default();
        r.push(5, 0, 100, 1_000);
        r.push(6, 100, 150, 2_000);
        r.push(7, 150, 400, 3_000);
        assert_eq!(r.bytes_after(7, 7), Some(0));
        assert_eq!(r.bytes_after(5, 7), Some(300));
        assert_eq!(r.bytes_after(4, 7), Some(400));
        assert_eq!(r.bytes_after(2, 7), None, "older than what is remembered");
        assert_eq!(r.time_of(6), Some(2_000));
        // A gap (the log was replaced) starts over.
        r.push(20, 1000, 1010, 9_000);
        assert_eq!(r.time_of(6), None);
        assert_eq!(r.bytes_after(19, 20), Some(10));
    }

    #[test]
    fn caught_up_spare_has_zero_lag() {
        let l = compute(10, 10, Some(1_000), 9_000, Some(0.1));
        assert_eq!((l.records, l.seconds), (0, 0.0));
    }

    #[test]
    fn behind_spare_lags_by_records_and_the_age_of_its_oldest_missing_record() {
        let l = compute(10, 7, Some(1_000), 4_500, None);
        assert_eq!(l.records, 3);
        assert!((l.seconds - 3.5).abs() < 1e-9);
    }
}
