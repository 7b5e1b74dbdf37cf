//! The commit rule (DESIGN.md §4 "Commit rules"): `any N of [spares]` acknowledges a commit
//! once N of those spares flushed it. A spare that misses the deadline leaves the rule, so a
//! sick spare never hangs every commit; it rejoins once it has caught up with the primary.
//! With fewer than N spares left in the rule, commits are acknowledged at once and reported
//! as not meeting the rule.

use std::collections::BTreeMap;

/// Where a commit stands against the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// N spares of the rule flushed it.
    Met,
    /// Not yet: wait (until the deadline).
    Waiting,
    /// Fewer than N spares are in the rule: it cannot be met now.
    Degraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    in_rule: bool,
    flushed: u64,
}

#[derive(Debug, Clone)]
pub struct CommitRule {
    any: usize,
    members: BTreeMap<String, Member>,
}

impl CommitRule {
    pub fn new(any: usize, of: &[String]) -> Self {
        assert!(
            any >= 1 && any <= of.len(),
            "validated configuration: 1 <= any <= len(of)"
        );
        CommitRule {
            any,
            members: of
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        Member {
                            in_rule: true,
                            flushed: 0,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Keeps what is known of spares that stay in the rule when the configuration changes.
    pub fn reconfigure(&mut self, any: usize, of: &[String]) {
        let mut next = CommitRule::new(any, of);
        for (name, m) in next.members.iter_mut() {
            if let Some(old) = self.members.get(name) {
                *m = *old;
            }
        }
        *self = next;
    }

    pub fn standing(&self, lsn: u64) -> Standing {
        let in_rule = self.members.values().filter(|m| m.in_rule).count();
        if in_rule < self.any {
            return Standing::Degraded;
        }
        let flushed = self
            .members
            .values()
            .filter(|m| m.in_rule && m.flushed >= lsn)
            .count();
        if flushed >= self.any {
            Standing::Met
        } else {
            Standing::Waiting
        }
    }

    /// `spare` flushed up to `flushed`; `tail` is the primary's committed LSN. Returns true
    /// if this brings a demoted spare back into the rule.
    pub fn on_flushed(&mut self, spare: &str, flushed: u64, tail: u64) -> bool {
        let Some(m) = self.members.get_mut(spare) else {
            return false;
        };
        m.flushed = m.flushed.max(flushed);
        if !m.in_rule && m.flushed >= tail {
            m.in_rule = true;
            return true;
        }
        false
    }

    /// The deadline for `lsn` passed: every spare of the rule that has not flushed it leaves
    /// the rule. Returns their names.
    pub fn on_deadline(&mut self, lsn: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (name, m) in self.members.iter_mut() {
            if m.in_rule && m.flushed < lsn {
                m.in_rule = false;
                out.push(name.clone());
            }
        }
        out
    }

    /// "in-rule" or "demoted" for a spare of the rule; None for others.
    pub fn state_of(&self, spare: &str) -> Option<&'static str> {
        self.members
            .get(spare)
            .map(|m| if m.in_rule { "in-rule" } else { "demoted" })
    }

    pub fn describe(&self) -> String {
        format!(
            "any {} of [{}]",
            self.any,
            self.members.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> CommitRule {
        CommitRule::new(1, &["a".to_string(), "b".to_string()])
    }

    #[test]
    fn met_once_enough_spares_flushed() {
        let mut r = rule();
        assert_eq!(r.standing(5), Standing::Waiting);
        r.on_flushed("b", 5, 5);
        assert_eq!(r.standing(5), Standing::Met);
        assert_eq!(r.standing(6), Standing::Waiting);
    }

    #[test]
    fn late_spares_leave_the_rule_and_commits_go_on_degraded() {
        let mut r = rule();
        r.on_flushed("a", 3, 3);
        assert_eq!(r.on_deadline(4), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(r.standing(4), Standing::Degraded);
        assert_eq!(r.state_of("a"), Some("demoted"));
    }

    #[test]
    fn demoted_spare_rejoins_once_caught_up() {
        let mut r = rule();
        r.on_deadline(4);
        assert!(!r.on_flushed("a", 8, 10), "still behind the primary");
        assert!(r.on_flushed("a", 10, 10));
        assert_eq!(r.state_of("a"), Some("in-rule"));
        assert_eq!(r.standing(10), Standing::Met);
    }

    #[test]
    fn reconfiguring_keeps_known_positions() {
        let mut r = rule();
        r.on_flushed("a", 7, 7);
        r.reconfigure(1, &["a".to_string(), "c".to_string()]);
        assert_eq!(r.standing(7), Standing::Met);
        assert_eq!(r.state_of("b"), None);
    }
}
