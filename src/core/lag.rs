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
