//! The nemesis (Jepsen's idea, on our own processes): a primary, three voting spares and a
//! monitor, every directed link through its own fault proxy (`Cluster::mesh`); clients
//! write unique keys to every data node directly and record each answer with its send and
//! receive times; a seeded schedule applies kill -9, SIGSTOP/SIGCONT, partitions (both ways
//! and one way), stalled links, reloads adding and removing voters, promotions,
//! switchovers and rejoins. At the end every fault is healed and the checks run:
//! - no split brain: once a primary's first acknowledgement was received, no write sent
//!   after that moment is acknowledged by a primary of an older epoch (client-side times on
//!   this one host: no false positives);
//! - under a synchronous commit rule, every write acknowledged with the rule met is on the
//!   final primary (promotions there pass neither `--accept-loss` nor `--force`); under
//!   async commit, acknowledged writes missing at the end are counted (only a primary that
//!   was replaced held them);
//! - epochs only grow on every node; every spare converges to the primary's rows.
//!
//! `cargo test` runs two short schedules. The long mode runs many:
//! `NEMESIS_SCHEDULES=50 NEMESIS_FAULTS=10 cargo test --release --test nemesis -- --ignored --nocapture`
//! (prints one line per schedule and a summary; `NEMESIS_SEED` sets the first seed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use spare::client;

const DATA: [&str; 4] = ["main", "lan-1", "lan-2", "lan-3"];
const ALL: [&str; 5] = ["main", "lan-1", "lan-2", "lan-3", "watch-1"];
const SPARES: [&str; 3] = ["lan-1", "lan-2", "lan-3"];
const CLIENTS: usize = 3;
/// How long a client waits for one answer: a slow answer is recorded as uncertain.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the writes of one client in one schedule.
const MAX_WRITES: u64 = 20_000;
/// Longest one CLI command may run (a promotion waits out a lease, a survey, a fence).
const CLI_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the end of a schedule waits for a primary and for the spares to converge.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// One write as the client saw it.
#[derive(Debug, Clone)]
struct Op {
    id: u64,
    node: &'static str,
    /// Milliseconds since the schedule's start, on this host's monotonic clock.
    sent_ms: u64,
    received_ms: u64,
    /// The epoch of the primary that acknowledged it (200), else None.
    acked_epoch: Option<u64>,
    /// Under a synchronous rule: whether the answer said the rule was met (a rule left
    /// without enough spares acknowledges at once and says so).
    met: bool,
}

/// What one schedule saw.
#[derive(Debug, Default)]
struct Outcome {
    faults: Vec<String>,
    acked: usize,
    sent: usize,
    promotions: usize,
    /// Acknowledged writes missing from the final primary (async commit only).
    lost_async: usize,
    violations: Vec<String>,
}

struct Nemesis {
    c: Cluster,
    rng: StdRng,
    origin: Instant,
    /// Nodes killed (restarted at their fault's end) and stopped (continued).
    stopped: BTreeSet<String>,
    /// The highest epoch each node reported so far.
    epochs: BTreeMap<String, u64>,
    voting: BTreeMap<&'static str, bool>,
    /// A synchronous commit rule: promotions never pass `--force` (which accepts losing
    /// what silent spares of the rule hold).
    sync: bool,
    outcome: Outcome,
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

fn status(http: &str) -> Option<Value> {
    client::get(http, "/v1/status", Duration::from_secs(1))
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
}

impl Nemesis {
    fn new(seed: u64, sync: bool) -> Self {
        let mut c = Cluster::new(3, true);
        if sync {
            c.cluster_option(
                "commit = { any = 1, of = [\"lan-1\", \"lan-2\", \"lan-3\"], deadline = \"2s\" }",
            );
        }
        c.mesh();
        c.start_all();
        c.exec(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, node TEXT NOT NULL)",
            json!([]),
        );
        Nemesis {
            c,
            rng: StdRng::seed_from_u64(seed),
            origin: Instant::now(),
            stopped: BTreeSet::new(),
            epochs: BTreeMap::new(),
            voting: SPARES.iter().map(|s| (*s, true)).collect(),
            sync,
            outcome: Outcome::default(),
        }
    }

    /// Runs the CLI, killed after [`CLI_TIMEOUT`]; returns (success, output).
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let mut child = std::process::Command::new(common::bin())
            .args(args)
            .env("SPARE_CONFIG", &self.c.config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run spare");
        let started = Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if started.elapsed() > CLI_TIMEOUT {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(POLL);
        }
        let out = child.wait_with_output().expect("output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Polls every running node's epoch; an epoch that went down is a violation.
    fn watch_epochs(&mut self) {
        for n in ALL {
            if self.stopped.contains(n) || !self.c.is_running(n) {
                continue;
            }
            let Some(s) = status(&self.c.http(n)) else {
                continue;
            };
            let Some(e) = s["epoch"].as_u64() else {
                continue;
            };
            let seen = self.epochs.entry(n.to_string()).or_insert(0);
            if e < *seen {
                self.outcome
                    .violations
                    .push(format!("{n}'s epoch went from {seen} to {e}"));
            }
            *seen = (*seen).max(e);
        }
    }

    /// Sleeps `d` while watching epochs.
    fn hold(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.watch_epochs();
            std::thread::sleep(POLL * 3);
        }
    }

    /// The node answering as primary of the newest epoch, if any.
    fn primary(&self) -> Option<String> {
        DATA.iter()
            .filter(|n| !self.stopped.contains(**n))
            .filter_map(|n| status(&self.c.http(n)).map(|s| (n, s)))
            .filter(|(_, s)| s["role"] == "primary")
            .max_by_key(|(_, s)| s["epoch"].as_u64())
            .map(|(n, _)| n.to_string())
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.gen_range(0..from.len())]
    }

    /// One fault (a disruption held for a while, sometimes with a promotion during it),
    /// healed before the next.
    fn fault(&mut self) {
        let hold = Duration::from_millis(self.rng.gen_range(1_000..4_000));
        let kind = self.rng.gen_range(0..9);
        let during_promotion = self.rng.gen_bool(0.4);
        let what = match kind {
            0 => {
                let n = self.pick(&ALL);
                self.c.kill(n);
                self.stopped.insert(n.to_string());
                self.maybe_promote(during_promotion);
                self.hold(hold);
                self.c.start(n);
                self.stopped.remove(n);
                format!("kill -9 {n}")
            }
            1 => {
                let n = self.pick(&ALL);
                let pid = self.c.pid(n);
                signal(pid, libc::SIGSTOP);
                self.stopped.insert(n.to_string());
                self.maybe_promote(during_promotion);
                self.hold(hold);
                signal(pid, libc::SIGCONT);
                self.stopped.remove(n);
                format!("SIGSTOP {n}")
            }
            2 | 3 => {
                let (a, b) = self.split();
                self.c.partition(&a, &b);
                self.maybe_promote(during_promotion);
                self.hold(hold);
                self.c.heal();
                format!("partition {a:?} | {b:?}")
            }
            4 => {
                let (a, b) = self.split();
                for x in &a {
                    for y in &b {
                        self.c.set_link(x, y, false);
                    }
                }
                self.maybe_promote(during_promotion);
                self.hold(hold);
                self.c.heal();
                format!("one way {a:?} -> {b:?} cut")
            }
            5 => {
                let (from, to) = (self.pick(&ALL), self.pick(&ALL));
                if from != to {
                    let link = &self.c.links[&(from.to_string(), to.to_string())];
                    link.peer.stall();
                    link.http.stall();
                }
                self.maybe_promote(during_promotion);
                self.hold(hold);
                self.c.heal();
                format!("stall {from} -> {to}")
            }
            6 => self.reload(),
            7 if self.rng.gen_bool(0.3) => self.competing_promotions(),
            7 => self.promote(false),
            _ => self.promote(true),
        };
        self.rejoin_fenced();
        self.outcome.faults.push(what);
    }

    /// Two groups of nodes, neither empty.
    fn split(&mut self) -> (Vec<&'static str>, Vec<&'static str>) {
        loop {
            let (a, b): (Vec<&str>, Vec<&str>) = ALL.iter().partition(|_| self.rng.gen_bool(0.5));
            if !a.is_empty() && !b.is_empty() {
                return (a, b);
            }
        }
    }

    fn maybe_promote(&mut self, yes: bool) {
        if yes {
            std::thread::sleep(Duration::from_millis(self.rng.gen_range(0..2_500)));
            let what = self.promote(false);
            self.outcome.faults.push(format!("during it: {what}"));
        }
    }

    /// Promotes (or switches over to) a random spare, as an operator would: without
    /// `--accept-loss`; refused for a loss, it promotes the node the refusal names instead.
    /// Half the promotions pass `--force` (the operator replaces a primary that still
    /// answers): the case where only the quorums and the fence keep two primaries apart.
    fn promote(&mut self, switchover: bool) -> String {
        let primary = self.primary();
        let spares: Vec<&str> = DATA
            .iter()
            .copied()
            .filter(|d| Some(d.to_string()) != primary)
            .collect();
        let cand = self.pick(&spares);
        let mut args = vec![if switchover { "switchover" } else { "promote" }, cand];
        if !switchover && !self.sync && self.rng.gen_bool(0.5) {
            args.push("--force");
        }
        let (ok, text) = self.cli(&args);
        if ok {
            self.outcome.promotions += 1;
            return format!("{} ok", args.join(" "));
        }
        let why = refusal(&text);
        if let Some(other) = text
            .split("promote ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .filter(|o| DATA.contains(o) && *o != cand)
        {
            let other = other.to_string();
            let force = if self.sync { None } else { Some("--force") };
            let retry: Vec<&str> = ["promote", &other].into_iter().chain(force).collect();
            if self.cli(&retry).0 {
                self.outcome.promotions += 1;
                return format!("{} refused ({why}), {} ok", args.join(" "), retry.join(" "));
            }
        }
        format!("{} refused ({why})", args.join(" "))
    }

    /// Flips one spare's vote and reloads every node, or (a third of the time) only some:
    /// the others keep the old configuration in memory until a later reload.
    fn reload(&mut self) -> String {
        let n = self.pick(&SPARES);
        let vote = !self.voting[n];
        self.voting.insert(n, vote);
        if vote {
            self.c.clear_node_options(n);
        } else {
            self.c.non_voting(n);
        }
        if self.rng.gen_bool(0.7) {
            let _ = self.cli(&["reload", "--no-wait"]);
            return format!("reload: {n} votes = {vote}");
        }
        let some: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|_| self.rng.gen_bool(0.5))
            .collect();
        for node in &some {
            let _ = client::post(
                &self.c.http(node),
                "/v1/admin/reload",
                &json!({}),
                Duration::from_secs(5),
            );
        }
        format!("reload on {some:?} only: {n} votes = {vote}")
    }

    /// Two promotions at once, by two coordinators (the monitor through the CLI, and a data
    /// node asked directly), for two candidates.
    fn competing_promotions(&mut self) -> String {
        let a = self.pick(&SPARES);
        let b = self.pick(&DATA);
        let coordinator = self.pick(&DATA);
        let http = self.c.http(coordinator);
        let forced = !self.sync;
        let other = std::thread::spawn(move || {
            client::post(
                &http,
                "/v1/admin/promote",
                &json!({ "candidate": b, "force": forced }),
                CLI_TIMEOUT,
            )
            .map(|r| r.status)
        });
        let force = if self.sync { None } else { Some("--force") };
        let args: Vec<&str> = ["promote", a].into_iter().chain(force).collect();
        let (ok, _) = self.cli(&args);
        let theirs = other.join().expect("promotion thread");
        let won = usize::from(ok) + usize::from(matches!(theirs, Ok(200)));
        self.outcome.promotions += won;
        format!(
            "competing: promote {a} (ok {ok}) and {b} coordinated by {coordinator} ({theirs:?})"
        )
    }

    fn rejoin_fenced(&mut self) {
        for n in DATA {
            if status(&self.c.http(n)).is_some_and(|s| s["role"] == "fenced") {
                let _ = self.cli(&["rejoin", "--no-wait", n]);
            }
        }
    }

    /// Heals everything and waits for one primary with a lease and every spare caught up;
    /// promotes the most advanced node if none holds a lease for 10 s (a promotion that
    /// failed after its promises leaves the cluster without one until an operator acts).
    fn settle(&mut self) -> Option<String> {
        self.c.heal();
        for n in ALL {
            if !self.c.is_running(n) {
                self.c.start(n);
            }
        }
        let started = Instant::now();
        let mut nudged = Instant::now();
        while started.elapsed() < SETTLE_TIMEOUT {
            self.rejoin_fenced();
            self.watch_epochs();
            let serving = self
                .primary()
                .filter(|p| status(&self.c.http(p)).is_some_and(|s| s["lease"]["valid"] == true));
            if let Some(p) = serving {
                if self.caught_up(&p) {
                    return Some(p);
                }
            } else if nudged.elapsed() > Duration::from_secs(10) {
                // No primary with a lease: a promotion that failed after some promises
                // leaves the old primary without one until an operator runs one again.
                nudged = Instant::now();
                // The spare furthest ahead (an old primary without a lease still feeds its
                // spares: they hold what it holds).
                let best = DATA
                    .iter()
                    .filter_map(|n| status(&self.c.http(n)).map(|s| (*n, s)))
                    .filter(|(_, s)| s["role"] == "spare")
                    .max_by_key(|(_, s)| s["last_lsn"].as_u64())
                    .map(|(n, _)| n);
                // Every node runs and every link passes here: forcing skips no loss check
                // that could see more (the old primary, if it answers, holds no lease).
                if let Some(b) = best {
                    let _ = self.cli(&["promote", b, "--force"]);
                }
            }
            std::thread::sleep(POLL * 5);
        }
        None
    }

    /// Whether every spare streams from the primary with nothing left to apply, as the
    /// primary sees it (a spare's own figures are not enough: one still on a diverged
    /// history, not yet re-seeded, may stand further than the primary).
    fn caught_up(&self, primary: &str) -> bool {
        let Some(p) = status(&self.c.http(primary)) else {
            return false;
        };
        let spares = p["spares"].as_array().cloned().unwrap_or_default();
        DATA.iter().filter(|n| **n != primary).all(|n| {
            let fed = spares
                .iter()
                .any(|s| s["name"] == *n && s["state"] == "streaming" && s["lag"]["records"] == 0);
            let own = status(&self.c.http(n))
                .is_some_and(|s| s["role"] == "spare" && s["epoch"] == p["epoch"]);
            fed && own
        })
    }

    /// The keys `node` holds once it applied `min_lsn` (a read on a spare answers the state
    /// it applied, which may be older: the primary's last LSN makes it the final state); an
    /// answer that is not rows says why.
    fn ids(&self, node: &str, min_lsn: u64) -> Result<BTreeSet<u64>, String> {
        let body = json!({ "sql": "SELECT id FROM t ORDER BY id", "min_lsn": min_lsn });
        let r = client::post(
            &self.c.http(node),
            "/v1/query",
            &body,
            Duration::from_secs(30),
        )
        .map_err(|e| format!("{node} could not be read: {e}"))?;
        if r.status != 200 {
            return Err(format!("{node} could not be read: {}", r.body));
        }
        Ok(r.body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r[0].as_u64())
            .collect())
    }
}

/// The first line of a refusal that says why, shortened.
fn refusal(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains("refused") || l.contains("error") || l.contains("failed"))
        .unwrap_or("no reason given");
    line.chars().take(160).collect()
}

/// Writes unique keys to every data node in turn until `stop`; records every answer.
fn client_loop(
    k: usize,
    nodes: Vec<(&'static str, String)>,
    origin: Instant,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
) {
    let ms = || origin.elapsed().as_millis() as u64;
    for seq in 0..MAX_WRITES {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (node, http) = &nodes[(seq as usize + k) % nodes.len()];
        let id = (k as u64 + 1) * 1_000_000 + seq;
        let body = json!({ "sql": "INSERT INTO t (id, node) VALUES (?, ?)", "params": [id, node] });
        let sent_ms = ms();
        let answer = client::post(http, "/v1/execute", &body, WRITE_TIMEOUT);
        let received_ms = ms();
        let acked_epoch = match &answer {
            Ok(r) if r.status == 200 => Some(r.body["epoch"].as_u64().expect("an epoch")),
            _ => None,
        };
        let met = answer
            .as_ref()
            .is_ok_and(|r| r.body["commit"]["met"] == true);
        ops.lock().unwrap().push(Op {
            id,
            node,
            sent_ms,
            received_ms,
            acked_epoch,
            met,
        });
        if acked_epoch.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// No write sent after a newer primary's first acknowledgement was received is
/// acknowledged by an older primary.
fn split_brain(ops: &[Op]) -> Vec<String> {
    let mut first: BTreeMap<u64, &Op> = BTreeMap::new();
    for op in ops {
        if let Some(e) = op.acked_epoch {
            let f = first.entry(e).or_insert(op);
            if op.received_ms < f.received_ms {
                *f = op;
            }
        }
    }
    let mut out = Vec::new();
    for op in ops {
        let Some(e) = op.acked_epoch else { continue };
        if let Some((newer, f)) = first
            .range(e + 1..)
            .find(|(_, f)| op.sent_ms > f.received_ms)
        {
            out.push(format!(
                "split brain: write {} sent at {} ms to {} was acknowledged in epoch {e}, after epoch {newer}'s first acknowledgement (write {} on {}) was received at {} ms",
                op.id, op.sent_ms, op.node, f.id, f.node, f.received_ms
            ));
        }
    }
    out
}

/// Where a schedule that found a violation leaves its nodes' logs, configurations and last
/// statuses (`NEMESIS_KEEP`, default /tmp/nemesis-failures/seed-N).
fn preserve(c: &Cluster, seed: u64) {
    let root = std::env::var("NEMESIS_KEEP").unwrap_or_else(|_| "/tmp/nemesis-failures".into());
    let dir = std::path::Path::new(&root).join(format!("seed-{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    for e in std::fs::read_dir(c.dir.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".toml") {
            let _ = std::fs::copy(e.path(), dir.join(&name));
        }
    }
    for node in ALL {
        if let Some(s) = status(&c.http(node)) {
            let _ = std::fs::write(dir.join(format!("{node}.status.json")), s.to_string());
        }
    }
    println!("  kept the logs in {}", dir.display());
}

fn run_schedule(seed: u64, faults: usize, sync: bool) -> Outcome {
    let mut n = Nemesis::new(seed, sync);
    let outcome = run_faults(&mut n, faults, sync);
    if !outcome.violations.is_empty() {
        preserve(&n.c, seed);
    }
    outcome
}

fn run_faults(n: &mut Nemesis, faults: usize, sync: bool) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let nodes: Vec<(&'static str, String)> = DATA.iter().map(|d| (*d, n.c.http(d))).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (nodes, stop, ops, origin) = (nodes.clone(), stop.clone(), ops.clone(), n.origin);
            std::thread::spawn(move || client_loop(k, nodes, origin, stop, ops))
        })
        .collect();
    for _ in 0..faults {
        n.fault();
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let ops = ops.lock().unwrap().clone();
    n.outcome.sent = ops.len();
    n.outcome.acked = ops.iter().filter(|o| o.acked_epoch.is_some()).count();
    n.outcome.violations.extend(split_brain(&ops));
    let Some(primary) = n.settle() else {
        n.outcome
            .violations
            .push("no primary served with every spare caught up after the faults".into());
        return std::mem::take(&mut n.outcome);
    };
    let last = status(&n.c.http(&primary)).map_or(0, |s| s["last_lsn"].as_u64().unwrap_or(0));
    let on_primary = match n.ids(&primary, 0) {
        Ok(ids) => ids,
        Err(e) => {
            n.outcome.violations.push(e);
            return std::mem::take(&mut n.outcome);
        }
    };
    let missing: Vec<u64> = ops
        .iter()
        .filter(|o| o.acked_epoch.is_some() && !on_primary.contains(&o.id))
        .filter(|o| !sync || o.met)
        .map(|o| o.id)
        .collect();
    if sync && !missing.is_empty() {
        n.outcome.violations.push(format!(
            "{} acknowledged writes missing from {primary} under a synchronous rule: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    n.outcome.lost_async = if sync { 0 } else { missing.len() };
    for s in DATA.iter().filter(|d| **d != primary) {
        let here = match n.ids(s, last) {
            Ok(ids) => ids,
            Err(e) => {
                n.outcome
                    .violations
                    .push(format!("a spare the primary sees streaming: {e}"));
                continue;
            }
        };
        if here != on_primary {
            let only_here: Vec<&u64> = here.difference(&on_primary).take(5).collect();
            let missing: Vec<&u64> = on_primary.difference(&here).take(5).collect();
            n.outcome.violations.push(format!(
                "{s} differs from the primary {primary}: {} rows against {}; only here {only_here:?}, missing here {missing:?}",
                here.len(),
                on_primary.len()
            ));
        }
    }
    std::mem::take(&mut n.outcome)
}

fn report(seed: u64, sync: bool, o: &Outcome, took: Duration) -> String {
    format!(
        "seed {seed} ({}): {} faults, {} promotions, {} of {} writes acknowledged, {} lost (async), {} violations, {:.0?} — {}",
        if sync { "sync" } else { "async" },
        o.faults.len(),
        o.promotions,
        o.acked,
        o.sent,
        o.lost_async,
        o.violations.len(),
        took,
        o.faults.join("; ")
    )
}

fn check(seed: u64, faults: usize, sync: bool) {
    let started = Instant::now();
    let o = run_schedule(seed, faults, sync);
    println!("{}", report(seed, sync, &o, started.elapsed()));
    assert!(o.violations.is_empty(), "seed {seed}: {:#?}", o.violations);
    assert!(o.acked > 0, "seed {seed}: no write was acknowledged at all");
}

#[test]
fn nemesis_async_schedule_keeps_one_primary_and_converges() {
    check(1, 5, false);
}

#[test]
fn nemesis_sync_schedule_loses_no_acknowledged_write() {
    check(2, 5, true);
}

/// The long mode (see the module doc).
#[test]
#[ignore]
fn nemesis_long() {
    let var = |k: &str, d: u64| std::env::var(k).map_or(d, |v| v.parse().expect("a number"));
    let (count, faults, first) = (
        var("NEMESIS_SCHEDULES", 50),
        var("NEMESIS_FAULTS", 10),
        var("NEMESIS_SEED", 100),
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    let (mut promotions, mut acked, mut lost) = (0, 0, 0);
    for seed in first..first + count {
        let sync = seed % 3 == 0;
        let t = Instant::now();
        let o = run_schedule(seed, faults as usize, sync);
        println!("{}", report(seed, sync, &o, t.elapsed()));
        for v in &o.violations {
            println!("  VIOLATION {v}");
        }
        promotions += o.promotions;
        acked += o.acked;
        lost += o.lost_async;
        if !o.violations.is_empty() {
            failed.push(seed);
        }
    }
    println!(
        "nemesis: {count} schedules of {faults} faults in {:.0?}: {promotions} promotions, {acked} writes acknowledged, {lost} lost under async commit, violations in seeds {failed:?}",
        started.elapsed()
    );
    assert!(failed.is_empty(), "violations in seeds {failed:?}");
}
