//! Which old log segments may go (DESIGN.md §5). A pure decision, tested without files.
//!
//! A segment is deleted once every spare applied past it, or once it falls outside the
//! retention budget (keeping it would retain more than `budget.bytes`, or its newest record is
//! older than `budget.age`): a spare that went away never fills the primary's disk; it will
//! be re-seeded when it comes back. Never deleted: the open segment, and any segment holding
//! a record above `floor` (what SQLite has not made durable yet, or what a seed in progress
//! still needs).

use std::time::Duration;

use crate::log::SegmentInfo;

/// Segments are sized from the budget so that retention can free space in steps of about an
/// eighth of it, within these bounds.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
pub const BUDGET_TO_SEGMENT_RATIO: u64 = 8;

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub bytes: u64,
    pub age: Duration,
}

/// Size of the segments a log with this budget should write.
pub fn segment_bytes_for(budget_bytes: u64) -> u64 {
    (budget_bytes / BUDGET_TO_SEGMENT_RATIO)
        .clamp(MIN_SEGMENT_BYTES, crate::log::segment::SEGMENT_TARGET_BYTES)
}

/// The highest LSN through which segments may be deleted (0: none).
pub fn deletable_through(
    segments: &[SegmentInfo],
    floor: u64,
    all_applied: u64,
    budget: Budget,
    now_ms: u64,
) -> u64 {
    let Some((_open, closed)) = segments.split_last() else {
        return 0;
    };
    let mut newer_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut through = 0;
    for seg in closed {
        // Everything from this segment on is what would be retained if it stays.
        let over_bytes = newer_bytes > budget.bytes;
        newer_bytes -= seg.bytes;
        let applied_by_all = seg.last.lsn <= all_applied;
        let too_old = now_ms.saturating_sub(seg.last.time_ms) > budget.age.as_millis() as u64;
        if seg.last.lsn > floor || !(applied_by_all || over_bytes || too_old) {
            break;
        }
        through = seg.last.lsn;
    }
    through
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Position;

    /// Segments of 100 bytes holding 10 records each, record time = lsn seconds.
    fn segs(n: u64) -> Vec<SegmentInfo> {
        (0..n)
            .map(|i| {
                let last = (i + 1) * 10;
                SegmentInfo {
                    first_lsn: i * 10 + 1,
                    last: Position {
                        lsn: last,
                        epoch: 1,
                        chain: 0,
                        time_ms: last * 1000,
                    },
                    bytes: 100,
                }
            })
            .collect()
    }

    const BIG: Budget = Budget {
        bytes: 1 << 40,
        age: Duration::from_secs(1 << 30),
    };

    #[test]
    fn segments_every_spare_applied_go_but_never_the_open_one() {
        assert_eq!(deletable_through(&segs(4), u64::MAX, 25, BIG, 0), 20);
        assert_eq!(
            deletable_through(&segs(4), u64::MAX, 1000, BIG, 0),
            30,
            "the open segment stays"
        );
    }

    #[test]
    fn a_spare_that_went_away_holds_the_log_only_within_the_budget() {
        let budget = Budget {
            bytes: 250,
            age: BIG.age,
        };
        // 400 bytes, spare at 0: delete until at most 250 bytes are retained.
        assert_eq!(deletable_through(&segs(4), u64::MAX, 0, budget, 0), 20);
        let by_age = Budget {
            bytes: BIG.bytes,
            age: Duration::from_secs(15),
        };
        assert_eq!(
            deletable_through(&segs(4), u64::MAX, 0, by_age, 40_000),
            20,
            "records older than 15 s at t=40 s"
        );
    }

    #[test]
    fn nothing_above_the_floor_is_deleted() {
        assert_eq!(deletable_through(&segs(4), 15, 1000, BIG, 0), 10);
        assert_eq!(deletable_through(&segs(4), 5, 1000, BIG, 0), 0);
    }

    #[test]
    fn segment_size_follows_the_budget_within_bounds() {
        assert_eq!(segment_bytes_for(1 << 30), 64 << 20);
        assert_eq!(segment_bytes_for(8 << 20), 1 << 20);
        assert_eq!(segment_bytes_for(1000), MIN_SEGMENT_BYTES);
    }
}
