//! The events log: an append-only file of JSON lines (`data/<node>/events.jsonl`) recording
//! what an operator wants to know happened — connections, disconnections, seeding, lag
//! alerts, role changes — and, for each event, the configured `notify_command` run with the
//! event's fields in environment variables (`SPARE_EVENT_KIND`, `SPARE_EVENT_NODE`,
//! `SPARE_EVENT_SPARE`, `SPARE_EVENT_MESSAGE`, `SPARE_EVENT_TIME`, `SPARE_EVENT_JSON`).
//!
//! Bounds: a notify command is killed after [`NOTIFY_TIMEOUT`]; at most
//! [`MAX_RUNNING_NOTIFY`] run at once (an event beyond that is recorded but not notified,
//! with a WARN). A failing command is logged and never stops anything. The last
//! [`RECENT_EVENTS`] events are also kept in memory for the API and the dashboard.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A notify command running longer than this is killed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Notify commands running at once, at most.
pub const MAX_RUNNING_NOTIFY: usize = 4;
/// Events kept in memory.
pub const RECENT_EVENTS: usize = 200;
const NOTIFY_POLL: Duration = Duration::from_millis(20);

pub struct EventLog {
    node: String,
    path: Option<PathBuf>,
    notify: Mutex<Option<String>>,
    running: Arc<AtomicUsize>,
    recent: Mutex<VecDeque<Value>>,
}

impl EventLog {
    /// Events of `node`, appended to `path` (None: memory only, e.g. tests of the cores).
    pub fn new(node: &str, path: Option<PathBuf>, notify: Option<String>) -> Self {
        EventLog {
            node: node.to_string(),
            path,
            notify: Mutex::new(notify),
            running: Arc::new(AtomicUsize::new(0)),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Follows a configuration change.
    pub fn set_notify(&self, notify: Option<String>) {
        *self.notify.lock().expect("notify lock") = notify;
    }

    /// Records an event of `kind` about `spare` (if any) and notifies.
    pub fn record(&self, kind: &str, spare: Option<&str>, message: &str) {
        let time_ms = crate::clock::wall_ms();
        let event = json!({ "time_ms": time_ms, "node": self.node, "kind": kind, "spare": spare, "message": message });
        if let Some(path) = &self.path {
            let line = format!("{event}\n");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), cause = %e, "cannot append to the events log");
            }
        }
        {
            let mut recent = self.recent.lock().expect("recent lock");
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        if let Some(cmd) = self.notify.lock().expect("notify lock").clone() {
            self.notify(cmd, event);
        }
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> Vec<Value> {
        self.recent
            .lock()
            .expect("recent lock")
            .iter()
            .cloned()
            .collect()
    }

    fn notify(&self, cmd: String, event: Value) {
        if self.running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING_NOTIFY {
            self.running.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(kind = %event["kind"], "too many notify commands running; this event is only in the events log");
            return;
        }
        let running = self.running.clone();
        std::thread::spawn(move || {
            if let Err(why) = run_notify(&cmd, &event) {
                tracing::warn!(command = %cmd, kind = %event["kind"], %why, "the notify command failed");
            }
            running.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Runs `sh -c cmd` with the event in its environment; kills it after [`NOTIFY_TIMEOUT`].
fn run_notify(cmd: &str, event: &Value) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SPARE_EVENT_KIND", text(&event["kind"]))
        .env("SPARE_EVENT_NODE", text(&event["node"]))
        .env("SPARE_EVENT_SPARE", text(&event["spare"]))
        .env("SPARE_EVENT_MESSAGE", text(&event["message"]))
        .env("SPARE_EVENT_TIME", text(&event["time_ms"]))
        .env("SPARE_EVENT_JSON", event.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it exited with {status}")),
            Ok(None) if started.elapsed() > NOTIFY_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it ran longer than {NOTIFY_TIMEOUT:?} and was killed"
                ));
            }
            Ok(None) => std::thread::sleep(NOTIFY_POLL),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_as_json_lines_and_notified_with_their_fields() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("notified");
        let cmd = format!(
            "echo \"$SPARE_EVENT_KIND $SPARE_EVENT_SPARE $SPARE_EVENT_MESSAGE\" >> {}",
            out.display()
        );
        let log = EventLog::new("watch-1", Some(dir.path().join("events.jsonl")), Some(cmd));
        log.record("lag_alert", Some("lan-1"), "lag 12 s");
        let lines = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let event: Value = serde_json::from_str(lines.trim()).unwrap();
        assert_eq!(
            (event["kind"].as_str(), event["spare"].as_str()),
            (Some("lag_alert"), Some("lan-1"))
        );
        let start = Instant::now();
        while !out.exists() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "lag_alert lan-1 lag 12 s\n"
        );
        assert_eq!(log.recent().len(), 1);
    }

    #[test]
    fn a_failing_or_hanging_notify_command_is_reported_not_fatal() {
        let event = json!({ "kind": "x" });
        assert!(run_notify("exit 3", &event).unwrap_err().contains("exited"));
        assert!(run_notify("/nonexistent/command", &event).is_err());
    }
}
