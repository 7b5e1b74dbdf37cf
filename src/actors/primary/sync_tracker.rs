//! Carries out the commit rule between the feeders (which learn what each spare flushed)
//! and the HTTP writes (which wait for the rule before answering). The decisions are
//! `core::commit_rule`'s; this adds the waiting, the deadline and the log lines.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::core::commit_rule::{CommitRule, Standing};

pub struct SyncTracker {
    rule: Mutex<CommitRule>,
    deadline: Mutex<Duration>,
    /// Woken at every flush report, so waiting writes re-check the rule.
    changed: Notify,
}

/// What a write learns about the rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleOutcome {
    pub rule: String,
    pub met: bool,
    /// Spares this write's deadline took out of the rule (for the events log).
    #[serde(skip)]
    pub demoted: Vec<String>,
}

impl SyncTracker {
    pub fn new(rule: CommitRule, deadline: Duration) -> Self {
        SyncTracker {
            rule: Mutex::new(rule),
            deadline: Mutex::new(deadline),
            changed: Notify::new(),
        }
    }

    pub fn reconfigure(&self, any: usize, of: &[String], deadline: Duration) {
        self.rule.lock().expect("rule lock").reconfigure(any, of);
        *self.deadline.lock().expect("deadline lock") = deadline;
        self.changed.notify_waiters();
    }

    /// A spare reported its flushed LSN; `tail` is the primary's committed LSN.
    /// Returns true if this brought the spare back into the rule.
    pub fn flushed(&self, spare: &str, flushed: u64, tail: u64) -> bool {
        let rejoined = self
            .rule
            .lock()
            .expect("rule lock")
            .on_flushed(spare, flushed, tail);
        if rejoined {
            tracing::info!(%spare, "spare caught up and rejoined the commit rule");
        }
        self.changed.notify_waiters();
        rejoined
    }

    pub fn state_of(&self, spare: &str) -> Option<&'static str> {
        self.rule.lock().expect("rule lock").state_of(spare)
    }

    pub fn describe(&self) -> String {
        self.rule.lock().expect("rule lock").describe()
    }

    /// Waits until the rule is met for `lsn`, or the deadline passes (then the late spares
    /// leave the rule, with a WARN). Returns whether the rule was met.
    pub async fn wait(&self, lsn: u64) -> RuleOutcome {
        let deadline = tokio::time::Instant::now() + *self.deadline.lock().expect("deadline lock");
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let standing = self.rule.lock().expect("rule lock").standing(lsn);
            match standing {
                Standing::Met => return self.outcome(true),
                Standing::Degraded => return self.outcome(false),
                Standing::Waiting => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let demoted = self.rule.lock().expect("rule lock").on_deadline(lsn);
                for spare in &demoted {
                    tracing::warn!(%spare, lsn, "spare missed the commit deadline and leaves the commit rule; commits go on without it");
                }
                let met = self.rule.lock().expect("rule lock").standing(lsn) == Standing::Met;
                return RuleOutcome {
                    demoted,
                    ..self.outcome(met)
                };
            }
        }
    }

    fn outcome(&self, met: bool) -> RuleOutcome {
        RuleOutcome {
            rule: self.describe(),
            met,
            demoted: Vec::new(),
        }
    }
}
