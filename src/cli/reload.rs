//! `spare reload`: every running node re-reads the configuration file. The file is checked
//! here first, so an invalid file changes nothing anywhere. Then, unless `--no-wait`, waits
//! for newly added spares to be seeded and streaming, with a progress bar.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use spare::client::{self, REQUEST_TIMEOUT};
use spare::config::{ClusterConfig, Role};
use spare::status::{NodeStatus, SpareLink, Unread};

use super::progress;

/// How often the progress bars refresh.
const POLL: Duration = Duration::from_millis(500);
/// The longest `spare reload` waits for new spares before telling the user to watch status.
const MAX_WAIT: Duration = Duration::from_secs(3600);

pub fn run(config_path: &Path, no_wait: bool) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let mut added = Vec::new();
    let mut failures = 0;
    for node in &config.nodes {
        match client::post(
            &node.http_advertise,
            "/v1/admin/reload",
            &json!({}),
            REQUEST_TIMEOUT,
        ) {
            Ok(r) if r.status == 200 => {
                println!("{:<10} reloaded", node.name);
                added.extend(
                    r.body["added"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string),
                );
            }
            Ok(r) => {
                failures += 1;
                println!(
                    "{:<10} refused: {}",
                    node.name,
                    r.body["message"].as_str().unwrap_or("no message")
                );
            }
            Err(_) => println!(
                "{:<10} not answering: a new node starts with `spare run --node {}` (under `spare up`, its process starts it; a refusal above says why it could not)",
                node.name, node.name
            ),
        }
    }
    if failures > 0 {
        bail!("{failures} node(s) refused the new configuration and kept the old one");
    }
    added.sort();
    added.dedup();
    let new_spares: Vec<&str> = added
        .iter()
        .map(String::as_str)
        .filter(|n| config.node(n).is_ok_and(|c| c.role == Role::Spare))
        .collect();
    tell_pending_membership(&config);
    if no_wait || new_spares.is_empty() {
        return Ok(());
    }
    wait_for_spares(&config, &new_spares)
}

/// Says when the new voters or lease take effect, if the reload changed them: at the next
/// promotion or switchover (`core::members`), not now.
fn tell_pending_membership(config: &ClusterConfig) {
    let Ok(primary) = spare::client::Client::from_config(config).primary_http() else {
        return;
    };
    let Ok(NodeStatus::Primary(status)) = client::status(&primary, REQUEST_TIMEOUT) else {
        return;
    };
    let Some(pending) = &status.pending_membership else {
        return;
    };
    let (now, lease_ms) = status
        .lease
        .as_ref()
        .map_or((String::new(), "null".to_string()), |l| {
            (l.voters.join(", "), l.lease_ms.to_string())
        });
    println!(
        "voters now: {now} (lease {lease_ms} ms); configured: {} (lease {} ms).\nThe new voters and lease take effect at the next switchover or promotion (`spare switchover NAME`), which needs a majority of both; until then the current ones decide.",
        pending.voters.join(", "),
        pending.lease_ms
    );
}

/// Shows each new spare's progress until all stream (or hold records back on purpose: a
/// paused or delayed spare): one bar per spare on a terminal (none unless stdout and stderr
/// are both terminals), one line per spare once it streams.
pub(crate) fn wait_for_spares(config: &ClusterConfig, spares: &[&str]) -> Result<()> {
    let mut primary = spare::client::Client::from_config(config).primary_http()?;
    let started = Instant::now();
    let bars = MultiProgress::with_draw_target(progress::target());
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos:>3} % {msg}")
        .expect("a valid template")
        .progress_chars("#>.");
    let rows: Vec<ProgressBar> = spares
        .iter()
        .map(|name| {
            let bar = ProgressBar::new(100)
                .with_style(style.clone())
                .with_prefix(name.to_string());
            bars.add(bar)
        })
        .collect();
    // Off a terminal the bars are not drawn: what they would say goes out as lines, once.
    let lines = !progress::drawn();
    let mut said_why = String::new();
    let mut settled = vec![false; spares.len()];
    // What the primary had logged when the wait began: a spare is not done before it holds
    // that much (a state alone can say `streaming` or `delayed` while a backlog is in flight).
    let mut goal: Option<u64> = None;
    loop {
        let (links, last_lsn, why) = spares_seen_by(config, &mut primary, spares)?;
        goal = goal.or(last_lsn);
        if lines && why != said_why {
            if !why.is_empty() {
                eprintln!("waiting: {why}");
            }
            said_why = why.clone();
        }
        for (i, (name, bar)) in spares.iter().zip(&rows).enumerate() {
            let s = links.iter().find(|s| s.name() == *name);
            let state = s.map_or("connecting", |s| s.state());
            let holds = s
                .and_then(flushed_lsn)
                .zip(goal)
                .is_some_and(|(f, g)| f >= g);
            bar.set_position(progress(state) as u64);
            bar.set_message(format!("{state} {why}"));
            if is_settled(state) && holds && !settled[i] {
                settled[i] = true;
                bar.finish();
                if lines {
                    eprintln!("{name}: {state}");
                }
            }
        }
        if settled.iter().all(|&s| s) {
            return Ok(());
        }
        if started.elapsed() > MAX_WAIT {
            for bar in &rows {
                bar.abandon();
            }
            bail!(
                "{} still catching up after {MAX_WAIT:?}; follow with `spare status --watch`",
                spares.join(", ")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The spares' links as the primary sees them, its last LSN, and why they are not known now
/// (the primary changing role). When the node asked is no longer the primary (a switchover or promotion
/// meanwhile), the primary is looked for again. One that does not answer, or answers what
/// this version cannot read, ends the wait with the reason.
fn spares_seen_by(
    config: &ClusterConfig,
    primary: &mut String,
    spares: &[&str],
) -> Result<(Vec<SpareLink>, Option<u64>, String)> {
    let (status, why) = match client::status_reply(primary, REQUEST_TIMEOUT) {
        Ok(s) => (Some(s), String::new()),
        Err(Unread::Refused(e)) => (None, e),
        Err(e) => bail!(
            "the change is applied; following {} failed: {e}",
            spares.join(", ")
        ),
    };
    match status.as_ref().and_then(NodeStatus::primary) {
        Some(p) => Ok((p.spares.clone(), Some(p.last_lsn), why)),
        None => {
            if let Ok(now) = spare::client::Client::from_config(config).primary_http() {
                *primary = now;
            }
            let why = if why.is_empty() {
                "looking for the primary".to_string()
            } else {
                why
            };
            Ok((Vec::new(), None, why))
        }
    }
}

/// What a linked spare holds durably.
fn flushed_lsn(link: &SpareLink) -> Option<u64> {
    match link {
        SpareLink::Linked(l) => Some(l.flushed_lsn),
        SpareLink::Connecting(_) => None,
    }
}

/// Whether a spare in `state` is where the wait ends (once it holds what the primary had
/// logged when the wait began): streaming, or holding records back on purpose (paused,
/// delayed), which it does until told.
fn is_settled(state: &str) -> bool {
    state == "streaming" || state == "paused" || state.starts_with("delayed")
}

/// 0..=100: seeding percent, then 100 once settled (see `is_settled`).
fn progress(state: &str) -> usize {
    if let Some(p) = state
        .strip_prefix("seeding (")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
    {
        return p.min(100);
    }
    if is_settled(state) {
        100
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::{is_settled, progress};

    #[test]
    fn a_wait_ends_on_streaming_or_holding_back_and_shows_the_seed_percent() {
        assert_eq!(progress("seeding (42 %)"), 42);
        assert_eq!(progress("catching-up"), 0);
        for settled in ["streaming", "paused", "delayed (30m)"] {
            assert!(is_settled(settled), "{settled}");
            assert_eq!(progress(settled), 100);
        }
        for not_yet in [
            "connecting",
            "catching-up",
            "seeding (99 %)",
            "disconnected",
        ] {
            assert!(!is_settled(not_yet), "{not_yet}");
        }
    }
}
