//! Which scheduled backups to keep (DESIGN.md §9), pure: the newest backup of each of the
//! last `daily` days that have one, and of each of the last `monthly` months (UTC), and
//! always the newest of all. The rest may be deleted.

use std::collections::BTreeSet;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// The (year, month) of a time in ms since the Unix epoch, in UTC.
fn month(ms: u64) -> (i64, u32) {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = (ms / DAY_MS) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Indexes of `taken_ms` (any order) to keep.
pub fn keep(taken_ms: &[u64], daily: usize, monthly: usize) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..taken_ms.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(taken_ms[i]));
    let mut out = BTreeSet::new();
    if let Some(&newest) = order.first() {
        out.insert(newest);
    }
    let (mut days, mut months) = (BTreeSet::new(), BTreeSet::new());
    for &i in &order {
        let day = taken_ms[i] / DAY_MS;
        if days.len() < daily && days.insert(day) {
            out.insert(i);
        }
        let m = month(taken_ms[i]);
        if months.len() < monthly && months.insert(m) {
            out.insert(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600 * 1000;

    #[test]
    fn months_are_computed_in_utc() {
        assert_eq!(month(0), (1970, 1));
        // 2026-11-26T19:00:00Z
        assert_eq!(month(1_795_719_600_000), (2026, 11));
        assert_eq!(month(951_782_400_000), (2000, 2), "2000-02-29");
    }

    #[test]
    fn rolling_retention_keeps_the_newest_per_day_and_per_month() {
        // Every 6 hours for 100 days from 2026-01-01.
        let start = 1_767_225_600_000u64;
        let taken: Vec<u64> = (0..400).map(|i| start + i * 6 * H).collect();
        let kept = keep(&taken, 7, 3);
        let days: BTreeSet<u64> = kept.iter().map(|&i| taken[i] / DAY_MS).collect();
        assert_eq!(kept.len(), days.len(), "one per day at most");
        assert!(kept.contains(&399), "the newest");
        // 7 daily (the last 7 days) + the newest of the 2 months before (the 3rd month is
        // the current one, already kept by the daily ones).
        assert_eq!(kept.len(), 9, "{kept:?}");
        for i in 393..400 {
            assert!(kept.contains(&i) || taken[i] / DAY_MS == taken[i + 1] / DAY_MS);
        }
        assert!(keep(&[], 7, 12).is_empty());
        assert_eq!(keep(&[5], 0, 0).len(), 1, "the newest is always kept");
    }
}
