//! Where to resume streaming to a spare (DESIGN.md §4 "Positioning").

use crate::log::Position;

/// What the primary does with a spare that reported its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The spare's history is a prefix of ours: stream from this LSN.
    From(u64),
    /// The spare holds records we do not (it is ahead of our durable log) or a record that
    /// differs from ours at the same LSN: its history diverged. It must be re-seeded.
    Diverged(String),
}

/// Decides from the spare's durable position, our durable position, and our record at the
/// spare's last LSN (`ours_at_spare`: (epoch, chain), None if the spare is empty).
pub fn decide(spare: Position, primary: Position, ours_at_spare: Option<(u64, u64)>) -> Resume {
    if spare.lsn == 0 {
        return Resume::From(1);
    }
    if spare.lsn > primary.lsn {
        return Resume::Diverged(format!(
            "the spare's log reaches LSN {} but the primary's ends at {}",
            spare.lsn, primary.lsn
        ));
    }
    match ours_at_spare {
        Some((epoch, chain)) if epoch == spare.epoch && chain == spare.chain => {
            Resume::From(spare.lsn + 1)
        }
        _ => Resume::Diverged(format!(
            "the spare's record {} differs from the primary's (epoch or checksum chain)",
            spare.lsn
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lsn: u64, chain: u64) -> Position {
        Position {
            lsn,
            epoch: 1,
            chain,
            time_ms: 0,
        }
    }

    #[test]
    fn empty_spare_starts_at_the_first_record() {
        assert_eq!(decide(pos(0, 0), pos(10, 9), None), Resume::From(1));
    }

    #[test]
    fn spare_with_a_matching_prefix_resumes_after_it() {
        assert_eq!(
            decide(pos(4, 44), pos(10, 99), Some((1, 44))),
            Resume::From(5)
        );
        assert_eq!(
            decide(pos(10, 99), pos(10, 99), Some((1, 99))),
            Resume::From(11)
        );
    }

    #[test]
    fn spare_ahead_or_with_another_record_has_diverged() {
        assert!(matches!(
            decide(pos(11, 1), pos(10, 99), None),
            Resume::Diverged(_)
        ));
        assert!(matches!(
            decide(pos(4, 45), pos(10, 99), Some((1, 44))),
            Resume::Diverged(_)
        ));
        assert!(matches!(
            decide(pos(4, 44), pos(10, 99), Some((2, 44))),
            Resume::Diverged(_)
        ));
    }
}
