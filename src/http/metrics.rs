//! `GET /metrics` in the Prometheus text format (version 0.0.4): every name starts with
//! `spare_`, carries its unit, and is labelled with the node (and the spare, for per-spare
//! series). Built from the node's status document, so metrics and status never disagree.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::status::{NodeStatus, SeedProgress, SpareLink};
use crate::view::{AnsweredNode, ClusterView, ViewLag};

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

/// What a scrape renders: a data node's status, or a monitor's view of the whole cluster
/// (one scrape of a monitor covers every spare's lag and every node's reachability).
pub enum Scrape<'a> {
    Node(&'a NodeStatus),
    Monitor {
        name: &'a str,
        view: &'a ClusterView,
    },
}

/// The metrics of a node, from its status document (and, on a primary, its latency).
pub fn render(scrape: &Scrape, latency: Option<&LatencyHistogram>) -> String {
    let (node, role) = match scrape {
        Scrape::Node(s) => (s.name(), s.role().as_str()),
        Scrape::Monitor { name, .. } => (*name, "monitor"),
    };
    let mut t = Text {
        out: String::new(),
        node: node.to_string(),
    };
    t.family(
        "spare_up",
        "gauge",
        "1 while the node serves, with its role",
    );
    t.sample("spare_up", &[("role", role)], 1.0);
    match scrape {
        Scrape::Node(status) => render_node(&mut t, status, latency),
        Scrape::Monitor { view, .. } => {
            let rows: Vec<SpareRow> = view.spares().map(SpareRow::from).collect();
            render_spares(&mut t, &rows);
            render_reachable(&mut t, view);
        }
    }
    t.out
}

/// A data node's positions, commits and latency (a primary's), and its spares' links.
fn render_node(t: &mut Text, status: &NodeStatus, latency: Option<&LatencyHistogram>) {
    if let Some((_, last, applied)) = status.positions() {
        t.family(
            "spare_last_lsn",
            "gauge",
            "last LSN of the node's durable log",
        );
        t.sample("spare_last_lsn", &[], last as f64);
        t.family(
            "spare_applied_lsn",
            "gauge",
            "last LSN applied to the node's database",
        );
        t.sample("spare_applied_lsn", &[], applied as f64);
    }
    let primary = status.primary();
    if let Some(p) = primary {
        t.family(
            "spare_commits_total",
            "counter",
            "group commits (log records of client writes) since the node started; one group holds one or more client requests",
        );
        t.sample("spare_commits_total", &[], p.commits_total as f64);
    }
    if let Some(h) = latency {
        render_latency(t, h);
    }
    if let Some(p) = primary {
        let rows: Vec<SpareRow> = p.spares.iter().map(SpareRow::from).collect();
        render_spares(t, &rows);
    }
}

/// On a monitor: whether each node answered its last poll.
fn render_reachable(t: &mut Text, view: &ClusterView) {
    t.family(
        "spare_node_reachable",
        "gauge",
        "1 if the node answered the monitor's last poll",
    );
    for n in &view.nodes {
        t.sample(
            "spare_node_reachable",
            &[("target", n.name())],
            f64::from(u8::from(n.state() != "unreachable")),
        );
    }
}

/// One spare's gauges, from the primary's view of its link or a monitor's entry.
pub struct SpareRow<'a> {
    name: &'a str,
    state: &'a str,
    lag: Option<ViewLag>,
    in_flight_bytes: Option<u64>,
    seed: Option<SeedProgress>,
}

impl<'a> From<&'a SpareLink> for SpareRow<'a> {
    fn from(s: &'a SpareLink) -> Self {
        SpareRow {
            name: s.name(),
            state: s.state(),
            lag: s.lag().map(|l| ViewLag {
                records: Some(l.records),
                bytes: l.bytes,
                seconds: Some(l.seconds),
                last_ack_age_s: l.last_ack_age_s,
            }),
            in_flight_bytes: s.linked().map(|l| l.in_flight_bytes),
            seed: s.linked().and_then(|l| l.seed),
        }
    }
}

impl<'a> From<&'a AnsweredNode> for SpareRow<'a> {
    fn from(n: &'a AnsweredNode) -> Self {
        SpareRow {
            name: &n.name,
            state: &n.state,
            lag: n.lag,
            in_flight_bytes: None,
            seed: None,
        }
    }
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

/// A per-spare gauge: name, type, help, and how to read it from the spare's row.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SpareRow) -> Option<f64>,
);

/// The per-spare gauges, in the order they are written.
const SPARE_SERIES: [Series; 7] = [
    (
        "spare_lag_records",
        "gauge",
        "transactions the spare has not applied",
        |s| s.lag?.records.map(|v| v as f64),
    ),
    (
        "spare_lag_bytes",
        "gauge",
        "log bytes the spare has not applied",
        |s| s.lag?.bytes.map(|v| v as f64),
    ),
    (
        "spare_lag_seconds",
        "gauge",
        "age of the oldest transaction the spare has not applied",
        |s| s.lag?.seconds,
    ),
    (
        "spare_last_ack_age_seconds",
        "gauge",
        "time since the spare last answered",
        |s| s.lag?.last_ack_age_s,
    ),
    (
        "spare_link_up",
        "gauge",
        "1 while the link to the spare is established",
        |s| {
            Some(f64::from(u8::from(!matches!(
                s.state,
                "disconnected" | "connecting" | "diverged"
            ))))
        },
    ),
    (
        "spare_feeder_window_in_use_bytes",
        "gauge",
        "bytes sent to the spare and not yet acknowledged",
        |s| s.in_flight_bytes.map(|v| v as f64),
    ),
    (
        "spare_seed_progress_ratio",
        "gauge",
        "share of the snapshot the spare holds while seeding (1 otherwise)",
        |s| {
            Some(match s.seed {
                Some(p) if p.bytes_total > 0 => p.bytes_done as f64 / p.bytes_total as f64,
                _ => 1.0,
            })
        },
    ),
];

fn render_spares(t: &mut Text, spares: &[SpareRow]) {
    for (name, kind, help, get) in SPARE_SERIES {
        t.family(name, kind, help);
        for s in spares {
            if let Some(v) = get(s) {
                t.sample(name, &[("spare", s.name)], v);
            }
        }
    }
    render_link_state(t, spares);
}

/// One series per spare, 1 for its link's state (the state's first word only).
fn render_link_state(t: &mut Text, spares: &[SpareRow]) {
    t.family(
        "spare_link_state",
        "gauge",
        "1 for the link's current state",
    );
    for s in spares {
        let state = s.state.split(' ').next().unwrap_or(s.state);
        t.sample(
            "spare_link_state",
            &[("spare", s.name), ("state", state)],
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ConnectingSpare;
    use crate::view::NodeEntry;

    fn answered_spare(name: &str, records: Option<u64>) -> NodeEntry {
        NodeEntry::Answered(AnsweredNode {
            name: name.into(),
            role: crate::core::role::NodeRole::Spare,
            state: "streaming".into(),
            epoch: Some(1),
            last_lsn: Some(10),
            applied_lsn: Some(10),
            http: "127.0.0.1:1".into(),
            lag: Some(ViewLag {
                records,
                bytes: None,
                seconds: Some(0.0),
                last_ack_age_s: None,
            }),
            pending_records: Some(0),
            link: Some("streaming".into()),
            sync: Some(None),
        })
    }

    fn view(nodes: Vec<NodeEntry>) -> ClusterView {
        ClusterView {
            cluster: "shop".into(),
            epoch: Some(1),
            primary: Some("main".into()),
            partial: false,
            voters: None,
            lease_ms: None,
            pending_membership: None,
            nodes,
            source: None,
            problems: None,
        }
    }

    #[test]
    fn a_monitor_scrape_covers_every_spare_and_every_nodes_reachability() {
        let v = view(vec![
            answered_spare("lan-1", Some(3)),
            NodeEntry::Unreachable {
                name: "main".into(),
                role: crate::core::role::NodeRole::Primary,
                state: "unreachable".into(),
                error: "timed out".into(),
            },
            NodeEntry::Unreachable {
                name: "lan-2".into(),
                role: crate::core::role::NodeRole::Spare,
                state: "unavailable".into(),
                error: "503".into(),
            },
        ]);
        let text = render(
            &Scrape::Monitor {
                name: "watch-1",
                view: &v,
            },
            None,
        );
        assert!(
            text.contains("spare_up{node=\"watch-1\",role=\"monitor\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("spare_lag_records{node=\"watch-1\",spare=\"lan-1\"} 3"),
            "{text}"
        );
        assert!(
            !text.contains("spare_lag_bytes{"),
            "no bytes known, no sample: {text}"
        );
        assert!(
            text.contains("spare_node_reachable{node=\"watch-1\",target=\"main\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("spare_node_reachable{node=\"watch-1\",target=\"lan-2\"} 1"),
            "a node that answers without a status runs: {text}"
        );
        assert!(
            !text.contains("spare_last_lsn"),
            "a monitor holds no log: {text}"
        );
    }

    #[test]
    fn a_connecting_spare_shows_its_link_down_and_no_lag() {
        let link = SpareLink::Connecting(ConnectingSpare {
            name: "lan-1".into(),
            state: "connecting".into(),
            lag: None,
        });
        let rows = [SpareRow::from(&link)];
        let mut t = Text {
            out: String::new(),
            node: "main".into(),
        };
        render_spares(&mut t, &rows);
        assert!(
            t.out
                .contains("spare_link_up{node=\"main\",spare=\"lan-1\"} 0"),
            "{}",
            t.out
        );
        assert!(
            t.out
                .contains("spare_seed_progress_ratio{node=\"main\",spare=\"lan-1\"} 1"),
            "{}",
            t.out
        );
        assert!(!t.out.contains("spare_lag_records{"), "{}", t.out);
        assert!(t
            .out
            .contains("spare_link_state{node=\"main\",spare=\"lan-1\",state=\"connecting\"} 1"));
    }
}
