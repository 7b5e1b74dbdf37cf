//! Where to resume a spare (DESIGN.md §4 "Positioning", §5 "Seeding").

use crate::log::Position;

/// What the primary does with a spare that reported its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The spare's history is a prefix of ours and we still hold what follows: stream from
    /// this LSN.
    From(u64),
    /// The spare must be seeded from a snapshot: it is new and empty, or it is behind what
    /// we retain.
    Seed(String),
    /// The spare holds records we do not (ahead of our durable log) or a record that differs
    /// from ours at the same LSN: its history diverged. Its divergent records go to
    /// quarantine, then it is seeded.
    Diverged(String),
}

/// What the primary knows when it decides.
#[derive(Debug, Clone, Copy)]
pub struct PrimaryLog {
    /// End of our durable log.
    pub durable: Position,
    /// Oldest LSN we still hold.
    pub oldest: u64,
}

/// Decides from the spare's durable position, our log, and our (epoch, chain) at the spare's
/// last LSN: from the record, or from the log's base when the spare stops right before our
/// oldest record.
pub fn decide(
    spare: Position,
    primary: PrimaryLog,
    ours_at_spare: Option<(u64, u64)>,
    broken: Option<&str>,
) -> Resume {
    if let Some(why) = broken {
        // Its log may agree with ours, but its database does not: treat it as diverged, so
        // its database is kept in quarantine before it is replaced.
        return Resume::Diverged(format!("the spare cannot apply: {why}"));
    }
    if spare.lsn > primary.durable.lsn {
        return Resume::Diverged(format!(
            "the spare's log reaches LSN {} but the primary's ends at {}",
            spare.lsn, primary.durable.lsn
        ));
    }
    // A new, empty spare gets a snapshot, unless the primary has nothing but its first
    // record: a copy of the database is smaller than the log that built it.
    if spare.lsn == 0 && (primary.oldest > 1 || primary.durable.lsn > 1) {
        return Resume::Seed("new, empty spare".into());
    }
    if spare.lsn + 1 < primary.oldest {
        return Resume::Seed(format!(
            "the spare is at LSN {} but the primary only retains the log from {}",
            spare.lsn, primary.oldest
        ));
    }
    if spare.lsn == 0 {
        return Resume::From(1);
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

/// Replaying a byte of log on a spare takes about this many times as long as copying a
/// byte of the database to it (measured on the 2-core dev machine: 1 M rows of inserts
/// replayed at 35 MB/s of log; the 124 MB database they made seeded at 95–110 MB/s).
pub const REPLAY_SLOWER_THAN_COPY: u64 = 2;
/// Below this much log to replay, a spare always replays: a seed has fixed costs (a
/// snapshot, an install, a restart of applying) and replaces the spare's log.
pub const MIN_REPLAY_BYTES_FOR_SEED: u64 = 8 * 1024 * 1024;

/// What a spare that may stream ([`Resume::From`]) would cost either way.
#[derive(Debug, Clone, Copy)]
pub struct Catchup {
    /// Log bytes the spare lacks (an estimate from our segment sizes).
    pub replay_bytes: u64,
    /// Size of our database: about what a seed copies.
    pub db_bytes: u64,
    /// Something holds the spare's applying back (pause, delay, stop LSN, verify): it
    /// keeps its history and replays, whatever it costs.
    pub holding: bool,
}

/// A spare that may stream is seeded instead when replaying what it lacks would clearly
/// take longer than copying the database (a spare that was down while much was written,
/// or while the same rows were rewritten many times). Any other decision stands.
pub fn quicker(resume: Resume, cost: Catchup) -> Resume {
    let Resume::From(_) = resume else {
        return resume;
    };
    let replay_is_slower = cost.replay_bytes >= MIN_REPLAY_BYTES_FOR_SEED
        && cost.replay_bytes.saturating_mul(REPLAY_SLOWER_THAN_COPY) > cost.db_bytes;
    if cost.holding || !replay_is_slower {
        return resume;
    }
    Resume::Seed(format!(
        "replaying the {} MB of log the spare lacks would take longer than copying the {} MB database",
        cost.replay_bytes >> 20,
        cost.db_bytes >> 20
    ))
}

/// When the primary may weigh a seed against replaying at all (before reading any sizes).
#[derive(Debug, Clone, Copy)]
pub struct SpeedSeedGate {
    /// The spare's link is a LAN link. Over a WAN the bandwidth decides, and the log
    /// crosses it compressed while a snapshot does not: a WAN spare always replays.
    pub lan: bool,
    /// Snapshots being taken or sent to any spare: each is a copy of the database on the
    /// primary's disk, so one seed to save time at a time, and none beside a needed one.
    pub copies_underway: usize,
    /// The LSN this spare must flush before it may be seeded to save time again (set at
    /// its last seed: however fast the log grew meanwhile, it streams until it caught up
    /// once, so that a busy primary never seeds the same spare in a loop).
    pub seeded_until: Option<u64>,
    /// What the spare reported flushed.
    pub spare_flushed: u64,
    /// The spare can say that its applying is held back (protocol 3): one of the previous
    /// release cannot, and could not refuse a seed it must not take.
    pub says_holding: bool,
}

/// Whether a seed to save time may be considered for this spare now ([`SpeedSeedGate`]).
pub fn may_seed_to_save_time(gate: SpeedSeedGate) -> bool {
    gate.lan
        && gate.says_holding
        && gate.copies_underway == 0
        && gate
            .seeded_until
            .is_none_or(|lsn| gate.spare_flushed >= lsn)
}

/// Whether a spare that asks to resume a seed from snapshot `snapshot_lsn` may get that
/// snapshot again: our log must still continue from it (`oldest_lsn`, our oldest record),
/// and a seed the spare does not need (`not_before`: its durable LSN) may never move it
/// back behind what it already holds.
pub fn may_resume_snapshot(snapshot_lsn: u64, oldest_lsn: u64, not_before: Option<u64>) -> bool {
    snapshot_lsn + 1 >= oldest_lsn && not_before.is_none_or(|lsn| snapshot_lsn >= lsn)
}

/// LSNs at which a spare reports its chain when asked where its history forks: its tail,
/// then exponentially further back, down to its oldest record. Bounded to 64 points.
pub fn probe_points(tail: u64, oldest: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut step = 1;
    let mut lsn = tail;
    while lsn >= oldest.max(1) && out.len() < 64 {
        out.push(lsn);
        if lsn < step {
            break;
        }
        lsn -= step;
        step *= 2;
    }
    out
}

/// The highest probe at which the spare's chain equals ours: everything after it diverged.
/// `ours(lsn)` is our (epoch, chain) at `lsn`, None if we do not hold it. 0 if none match.
pub fn common_point(probes: &[(u64, u64, u64)], ours: impl Fn(u64) -> Option<(u64, u64)>) -> u64 {
    probes
        .iter()
        .filter(|&&(lsn, epoch, chain)| ours(lsn) == Some((epoch, chain)))
        .map(|p| p.0)
        .max()
        .unwrap_or(0)
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

    fn log(lsn: u64, oldest: u64) -> PrimaryLog {
        PrimaryLog {
            durable: pos(lsn, 99),
            oldest,
        }
    }

    #[test]
    fn empty_spare_of_an_empty_primary_streams_from_the_start() {
        assert_eq!(decide(pos(0, 0), log(1, 1), None, None), Resume::From(1));
    }

    #[test]
    fn empty_spare_is_seeded_once_the_primary_holds_data() {
        assert!(matches!(
            decide(pos(0, 0), log(10, 1), None, None),
            Resume::Seed(_)
        ));
        assert!(matches!(
            decide(pos(0, 0), log(10, 5), None, None),
            Resume::Seed(_)
        ));
    }

    #[test]
    fn spare_with_a_matching_prefix_resumes_after_it() {
        assert_eq!(
            decide(pos(4, 44), log(10, 1), Some((1, 44)), None),
            Resume::From(5)
        );
        assert_eq!(
            decide(pos(10, 99), log(10, 1), Some((1, 99)), None),
            Resume::From(11)
        );
        assert_eq!(
            decide(pos(4, 44), log(10, 5), Some((1, 44)), None),
            Resume::From(5),
            "our base is its last record"
        );
    }

    #[test]
    fn spare_that_cannot_apply_is_treated_as_diverged_whatever_its_log() {
        assert!(matches!(
            decide(pos(10, 99), log(10, 1), Some((1, 99)), Some("conflict")),
            Resume::Diverged(_)
        ));
    }

    #[test]
    fn spare_behind_the_retained_log_is_seeded() {
        assert!(matches!(
            decide(pos(3, 33), log(10, 5), None, None),
            Resume::Seed(_)
        ));
    }

    #[test]
    fn spare_ahead_or_with_another_record_has_diverged() {
        assert!(matches!(
            decide(pos(11, 1), log(10, 1), None, None),
            Resume::Diverged(_)
        ));
        assert!(matches!(
            decide(pos(4, 45), log(10, 1), Some((1, 44)), None),
            Resume::Diverged(_)
        ));
        assert!(matches!(
            decide(pos(4, 44), log(10, 1), Some((2, 44)), None),
            Resume::Diverged(_)
        ));
    }

    fn cost(replay_mb: u64, db_mb: u64, holding: bool) -> Catchup {
        Catchup {
            replay_bytes: replay_mb << 20,
            db_bytes: db_mb << 20,
            holding,
        }
    }

    #[test]
    fn a_spare_lacking_more_log_than_a_copy_costs_is_seeded_instead() {
        assert!(matches!(
            quicker(Resume::From(5), cost(130, 124, false)),
            Resume::Seed(_)
        ));
        assert!(matches!(
            quicker(Resume::From(5), cost(64, 100, false)),
            Resume::Seed(_)
        ));
    }

    #[test]
    fn a_spare_lacking_little_log_replays_it() {
        assert_eq!(
            quicker(Resume::From(5), cost(40, 100, false)),
            Resume::From(5)
        );
        // Below the minimum, even a tiny database is not worth a seed.
        assert_eq!(quicker(Resume::From(5), cost(7, 0, false)), Resume::From(5));
    }

    #[test]
    fn a_spare_held_back_replays_whatever_it_costs() {
        assert_eq!(
            quicker(Resume::From(5), cost(10_000, 1, true)),
            Resume::From(5)
        );
    }

    #[test]
    fn only_a_stream_is_turned_into_a_seed() {
        let diverged = Resume::Diverged("x".into());
        assert_eq!(quicker(diverged.clone(), cost(10_000, 1, false)), diverged);
        let seed = Resume::Seed("new".into());
        assert_eq!(quicker(seed.clone(), cost(0, 1, true)), seed);
    }

    fn gate(lan: bool, copies: usize, until: Option<u64>, flushed: u64) -> SpeedSeedGate {
        SpeedSeedGate {
            lan,
            copies_underway: copies,
            seeded_until: until,
            spare_flushed: flushed,
            says_holding: true,
        }
    }

    #[test]
    fn a_spare_of_the_previous_release_is_never_seeded_to_save_time() {
        let old = SpeedSeedGate {
            says_holding: false,
            ..gate(true, 0, None, 10)
        };
        assert!(!may_seed_to_save_time(old));
    }

    #[test]
    fn only_a_lan_spare_is_seeded_to_save_time() {
        assert!(may_seed_to_save_time(gate(true, 0, None, 10)));
        assert!(!may_seed_to_save_time(gate(false, 0, None, 10)));
    }

    #[test]
    fn no_seed_to_save_time_while_another_copy_is_underway() {
        assert!(!may_seed_to_save_time(gate(true, 1, None, 10)));
        assert!(!may_seed_to_save_time(gate(true, 3, None, 10)));
    }

    #[test]
    fn a_spare_seeded_to_save_time_streams_until_it_caught_up_once() {
        // Seeded when the primary was at 100: not again before it flushed 100.
        assert!(!may_seed_to_save_time(gate(true, 0, Some(100), 40)));
        assert!(!may_seed_to_save_time(gate(true, 0, Some(100), 99)));
        assert!(may_seed_to_save_time(gate(true, 0, Some(100), 100)));
        assert!(may_seed_to_save_time(gate(true, 0, Some(100), 5_000)));
    }

    #[test]
    fn a_resumed_snapshot_never_moves_a_spare_behind_its_log() {
        // Needed seed (diverged or too far behind): any snapshot our log continues from.
        assert!(may_resume_snapshot(50, 40, None));
        assert!(may_resume_snapshot(39, 40, None));
        assert!(!may_resume_snapshot(38, 40, None));
        // Seed to save time of a spare that holds up to 60: not a snapshot at 50.
        assert!(!may_resume_snapshot(50, 40, Some(60)));
        assert!(may_resume_snapshot(60, 40, Some(60)));
        assert!(may_resume_snapshot(70, 40, Some(60)));
        assert!(!may_resume_snapshot(70, 80, Some(60)));
    }

    #[test]
    fn probes_go_back_exponentially_and_find_the_fork() {
        assert_eq!(probe_points(20, 1), vec![20, 19, 17, 13, 5]);
        assert_eq!(probe_points(3, 3), vec![3]);
        assert!(probe_points(0, 1).is_empty());
        // Histories agree up to 14.
        let ours = |lsn: u64| Some((1, if lsn <= 14 { lsn } else { lsn + 1000 }));
        let probes: Vec<(u64, u64, u64)> =
            probe_points(20, 1).into_iter().map(|l| (l, 1, l)).collect();
        assert_eq!(common_point(&probes, ours), 13);
    }
}
