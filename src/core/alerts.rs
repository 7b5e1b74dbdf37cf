//! Alert decisions of a monitor, pure: when a spare's lag crosses its threshold (raise once,
//! clear once), and when a node stops or starts answering.

use std::collections::{BTreeMap, BTreeSet};

/// A change worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Raised,
    Cleared,
}

/// Which spares are currently over their lag threshold.
#[derive(Debug, Default)]
pub struct LagAlerts {
    raised: BTreeSet<String>,
}

impl LagAlerts {
    /// `lag_s`: the spare's lag in seconds (None: unknown, no change).
    pub fn check(
        &mut self,
        spare: &str,
        lag_s: Option<f64>,
        threshold_s: f64,
    ) -> Option<Transition> {
        let over = lag_s? >= threshold_s;
        match (over, self.raised.contains(spare)) {
            (true, false) => {
                self.raised.insert(spare.to_string());
                Some(Transition::Raised)
            }
            (false, true) => {
                self.raised.remove(spare);
                Some(Transition::Cleared)
            }
            _ => None,
        }
    }

    pub fn is_raised(&self, spare: &str) -> bool {
        self.raised.contains(spare)
    }
}

/// Since when each node stopped answering.
#[derive(Debug, Default)]
pub struct Reachability {
    down_since_ms: BTreeMap<String, u64>,
}

impl Reachability {
    /// Records one poll of `node`; `Raised` when it stops answering, `Cleared` when it answers again.
    pub fn check(&mut self, node: &str, answered: bool, now_ms: u64) -> Option<Transition> {
        match (answered, self.down_since_ms.contains_key(node)) {
            (false, false) => {
                self.down_since_ms.insert(node.to_string(), now_ms);
                Some(Transition::Raised)
            }
            (true, true) => {
                self.down_since_ms.remove(node);
                Some(Transition::Cleared)
            }
            _ => None,
        }
    }

    /// When `node` stopped answering, if it did.
    pub fn down_since(&self, node: &str) -> Option<u64> {
        self.down_since_ms.get(node).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_alert_is_raised_once_and_cleared_once() {
        let mut a = LagAlerts::default();
        assert_eq!(a.check("lan-1", Some(1.0), 5.0), None);
        assert_eq!(a.check("lan-1", Some(6.0), 5.0), Some(Transition::Raised));
        assert_eq!(a.check("lan-1", Some(9.0), 5.0), None);
        assert_eq!(
            a.check("lan-1", None, 5.0),
            None,
            "unknown lag changes nothing"
        );
        assert_eq!(a.check("lan-1", Some(0.0), 5.0), Some(Transition::Cleared));
    }

    #[test]
    fn node_that_stops_answering_is_reported_with_its_time() {
        let mut r = Reachability::default();
        assert_eq!(r.check("main", true, 1), None);
        assert_eq!(r.check("main", false, 10), Some(Transition::Raised));
        assert_eq!(r.check("main", false, 20), None);
        assert_eq!(r.down_since("main"), Some(10));
        assert_eq!(r.check("main", true, 30), Some(Transition::Cleared));
    }
}
