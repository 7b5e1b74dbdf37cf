//! `GET /metrics` in the Prometheus text format (version 0.0.4): every name starts with
//! `spare_`, carries its unit, and is labelled with the node (and the spare, for per-spare
//! series). Built from the node's status document, so metrics and status never disagree.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// Upper bounds (seconds) of the commit-latency histogram's buckets.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Commit latency as clients see it (from request to answer), lock-free.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, seconds: f64) {
        for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Accumulates the text, with each family's HELP and TYPE written once.
struct Text {
    out: String,
    node: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut l = format!("node=\"{}\"", escape(&self.node));
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "{name}{{{l}}} {value}");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The metrics of a node, from its status document (and, on a primary, its latency).
pub fn render(status: &Value, latency: Option<&LatencyHistogram>) -> String {
    let mut t = Text {
        out: String::new(),
        node: status["name"].as_str().unwrap_or("?").to_string(),
    };
    let role = status["role"].as_str().unwrap_or("?").to_string();
    t.family(
        "spare_up",
        "gauge",
        "1 while the node serves, with its role",
    );
    t.sample("spare_up", &[("role", &role)], 1.0);
    for (name, key, help) in [
        (
            "spare_last_lsn",
            "last_lsn",
            "last LSN of the node's durable log",
        ),
        (
            "spare_applied_lsn",
            "applied_lsn",
            "last LSN applied to the node's database",
        ),
    ] {
        if let Some(v) = num(&status[key]) {
            t.family(name, "gauge", help);
            t.sample(name, &[], v);
        }
    }
    if let Some(v) = num(&status["commits_total"]) {
        t.family(
            "spare_commits_total",
            "counter",
            "group commits (log records of client writes) since the node started; one group holds one or more client requests",
        );
        t.sample("spare_commits_total", &[], v);
    }
    if let Some(h) = latency {
        render_latency(&mut t, h);
    }
    if let Some(spares) = status["spares"].as_array() {
        render_spares(&mut t, spares);
    }
    if let Some(nodes) = status["nodes"].as_array() {
        t.family(
            "spare_node_reachable",
            "gauge",
            "1 if the node answered the monitor's last poll",
        );
        for n in nodes {
            if let Some(name) = n["name"].as_str() {
                t.sample(
                    "spare_node_reachable",
                    &[("target", name)],
                    f64::from(u8::from(n["state"] != "unreachable")),
                );
            }
        }
    }
    t.out
}

fn render_latency(t: &mut Text, h: &LatencyHistogram) {
    let name = "spare_commit_latency_seconds";
    t.family(
        name,
        "histogram",
        "time from a write's arrival to its answer",
    );
    for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
        t.sample(
            &format!("{name}_bucket"),
            &[("le", &le.to_string())],
            h.buckets[i].load(Ordering::Relaxed) as f64,
        );
    }
    let count = h.count.load(Ordering::Relaxed) as f64;
    t.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count);
    t.sample(
        &format!("{name}_sum"),
        &[],
        h.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
    t.sample(&format!("{name}_count"), &[], count);
}

/// A per-spare gauge: name, type, help, and how to read it from the spare's status.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Value) -> Option<f64>,
);

/// The per-spare gauges, in the order they are written.
const SPARE_SERIES: [Series; 7] = [
    (
        "spare_lag_records",
        "gauge",
        "transactions the spare has not applied",
        |s| num(&s["lag"]["records"]),
    ),
    (
        "spare_lag_bytes",
        "gauge",
        "log bytes the spare has not applied",
        |s| num(&s["lag"]["bytes"]),
    ),
    (
        "spare_lag_seconds",
        "gauge",
        "age of the oldest transaction the spare has not applied",
        |s| num(&s["lag"]["seconds"]),
    ),
    (
        "spare_last_ack_age_seconds",
        "gauge",
        "time since the spare last answered",
        |s| num(&s["lag"]["last_ack_age_s"]),
    ),
    (
        "spare_link_up",
        "gauge",
        "1 while the link to the spare is established",
        |s| {
            Some(f64::from(u8::from(!matches!(
                s["state"].as_str(),
                Some("disconnected" | "connecting" | "diverged")
            ))))
        },
    ),
    (
        "spare_feeder_window_in_use_bytes",
        "gauge",
        "bytes sent to the spare and not yet acknowledged",
        |s| num(&s["in_flight_bytes"]),
    ),
    (
        "spare_seed_progress_ratio",
        "gauge",
        "share of the snapshot the spare holds while seeding (1 otherwise)",
        |s| {
            Some(
                match (
                    num(&s["seed"]["bytes_done"]),
                    num(&s["seed"]["bytes_total"]),
                ) {
                    (Some(d), Some(t)) if t > 0.0 => d / t,
                    _ => 1.0,
                },
            )
        },
    ),
];

fn render_spares(t: &mut Text, spares: &[Value]) {
    for (name, kind, help, get) in SPARE_SERIES {
        t.family(name, kind, help);
        for s in spares {
            if let (Some(spare), Some(v)) = (s["name"].as_str(), get(s)) {
                t.sample(name, &[("spare", spare)], v);
            }
        }
    }
    render_link_state(t, spares);
}

/// One series per spare, 1 for its link's state (the state's first word only).
fn render_link_state(t: &mut Text, spares: &[Value]) {
    t.family(
        "spare_link_state",
        "gauge",
        "1 for the link's current state",
    );
    for s in spares {
        if let (Some(spare), Some(state)) = (s["name"].as_str(), s["state"].as_str()) {
            let state = state.split(' ').next().unwrap_or(state);
            t.sample(
                "spare_link_state",
                &[("spare", spare), ("state", state)],
                1.0,
            );
        }
    }
}
