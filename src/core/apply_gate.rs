//! How far a spare may apply now (DESIGN.md §9), pure: everything it flushed, unless it is
//! paused (nothing), delayed (only records at least `delay` old), or told to stop at an LSN
//! (a promotion `--until`: exactly up to there, pause and delay notwithstanding).

/// The operator's controls over a spare's apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gate {
    pub paused: bool,
    /// `apply_delay` in ms (0: none).
    pub delay_ms: u64,
    /// Apply exactly up to this LSN and no further.
    pub stop_at: Option<u64>,
    /// `spare verify`'s hold: apply nothing past this LSN. It only lowers the limit, never
    /// overrides a pause, a delay or a stop LSN (the operator's controls).
    pub cap: Option<u64>,
}

/// What the apply thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Apply records up to this LSN (inclusive).
    ApplyTo(u64),
    /// Nothing may be applied before `wait_ms` (the next record is too young).
    Wait { wait_ms: u64 },
    /// Nothing to do until something changes (caught up, paused, at the stop LSN).
    Idle,
}

impl Gate {
    /// Whether anything holds applying back (a pause, a delay, a stop LSN, a verify's cap):
    /// such a spare keeps its history and is never re-seeded to save time.
    pub fn holds(&self) -> bool {
        self.paused || self.delay_ms > 0 || self.stop_at.is_some() || self.cap.is_some()
    }

    /// `applied` and `flushed` LSNs; `next_time_ms`: commit time of record `applied + 1` (if
    /// flushed); `now_ms`; at most `batch` records at once.
    pub fn next(
        &self,
        applied: u64,
        flushed: u64,
        next_time_ms: Option<u64>,
        now_ms: u64,
        batch: u64,
    ) -> Next {
        let limit = match self.stop_at {
            Some(at) => flushed.min(at),
            None if self.paused => return Next::Idle,
            None => flushed,
        };
        let limit = self.cap.map_or(limit, |cap| limit.min(cap));
        if limit <= applied {
            return Next::Idle;
        }
        if self.stop_at.is_none() && self.delay_ms > 0 {
            let Some(t) = next_time_ms else {
                return Next::Idle;
            };
            let due = t.saturating_add(self.delay_ms);
            if due > now_ms {
                return Next::Wait {
                    wait_ms: due - now_ms,
                };
            }
        }
        Next::ApplyTo(limit.min(applied + batch))
    }

    /// Of `times` (commit times of the records to apply, in order), how many are old enough.
    pub fn due(&self, times: &[u64], now_ms: u64) -> usize {
        if self.stop_at.is_some() || self.delay_ms == 0 {
            return times.len();
        }
        times
            .iter()
            .take_while(|&&t| t.saturating_add(self.delay_ms) <= now_ms)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_cap_lowers_the_limit_and_never_lifts_a_pause_or_a_delay() {
        let capped = Gate {
            cap: Some(5),
            ..Gate::default()
        };
        assert_eq!(capped.next(2, 10, None, 0, 100), Next::ApplyTo(5));
        assert_eq!(capped.next(5, 10, None, 0, 100), Next::Idle);
        let paused = Gate {
            paused: true,
            cap: Some(8),
            ..Gate::default()
        };
        assert_eq!(paused.next(2, 10, None, 0, 100), Next::Idle);
        let delayed = Gate {
            delay_ms: 1_000,
            cap: Some(8),
            ..Gate::default()
        };
        assert_eq!(
            delayed.next(2, 10, Some(500), 1_000, 100),
            Next::Wait { wait_ms: 500 }
        );
        let until = Gate {
            stop_at: Some(4),
            cap: Some(8),
            ..Gate::default()
        };
        assert_eq!(until.next(2, 10, None, 0, 100), Next::ApplyTo(4));
    }

    #[test]
    fn a_paused_spare_applies_nothing_and_a_stop_lsn_overrides_the_pause() {
        let mut g = Gate {
            paused: true,
            ..Gate::default()
        };
        assert_eq!(g.next(5, 10, Some(0), 100, 1000), Next::Idle);
        g.stop_at = Some(8);
        assert_eq!(g.next(5, 10, Some(0), 100, 1000), Next::ApplyTo(8));
        assert_eq!(
            g.next(8, 10, Some(0), 100, 1000),
            Next::Idle,
            "exactly up to 8"
        );
    }

    #[test]
    fn a_delayed_spare_applies_only_records_old_enough() {
        let g = Gate {
            delay_ms: 1_000,
            ..Gate::default()
        };
        assert_eq!(
            g.next(5, 10, Some(500), 1_200, 1000),
            Next::Wait { wait_ms: 300 }
        );
        assert_eq!(g.next(5, 10, Some(500), 1_500, 1000), Next::ApplyTo(10));
        assert_eq!(g.due(&[100, 400, 600], 1_500), 2);
        let until = Gate {
            stop_at: Some(7),
            ..g
        };
        assert_eq!(
            until.next(5, 10, Some(1_400), 1_500, 1000),
            Next::ApplyTo(7),
            "a stop LSN ignores the delay"
        );
        assert_eq!(
            Gate::default().next(5, 10, None, 0, 2),
            Next::ApplyTo(7),
            "batches"
        );
    }
}
