//! `GET /metrics` in the OpenMetrics text format, encoded by `prometheus-client`: every name
//! starts with `spare_`, carries its unit, and is labelled with the node (and the spare, for
//! per-spare series). Built from the node's status document at each scrape, so metrics and
//! status never disagree.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::status::{NodeStatus, SeedProgress, SpareLink};
use crate::view::{AnsweredNode, ClusterView, ViewLag};

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the commit-latency histogram's buckets.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Commit latency as clients see it (from request to answer), lock-free.
#[derive(Default)]
pub struct LatencyHistogram {
    /// Cumulative: a request counts in every bucket whose bound it is under.
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

/// Labels of one sample: the node's first, then the series' own.
type Labels = Vec<(String, String)>;
/// A family of gauges, one per label set.
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// A histogram read at scrape time, encoded as one (the registry's own histogram type
/// records observations itself; ours are counted lock-free on the write path).
#[derive(Debug)]
struct HistogramSnapshot {
    labels: Labels,
    sum: f64,
    count: u64,
    /// (upper bound, count in that bucket alone), the last bound `f64::MAX` (+Inf).
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        encoder
            .encode_family(&self.labels)?
            .encode_histogram::<Labels>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A label value as the text format needs it (prometheus-client writes values as given).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Accumulates a scrape's families in a registry, labelling every sample with the node.
struct Text {
    registry: Registry,
    node: String,
    /// The family being filled (families are written one after another).
    gauges: Option<(String, String, Gauges)>,
}

impl Text {
    fn new(node: &str) -> Self {
        Text {
            registry: Registry::default(),
            node: node.to_string(),
            gauges: None,
        }
    }

    fn labels(&self, labels: &[(&str, &str)]) -> Labels {
        std::iter::once(("node", self.node.as_str()))
            .chain(labels.iter().copied())
            .map(|(k, v)| (k.to_string(), escape(v)))
            .collect()
    }

    /// Starts a gauge family; its samples follow.
    fn family(&mut self, name: &str, help: &str) {
        self.flush();
        self.gauges = Some((name.to_string(), help.to_string(), Family::default()));
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels = self.labels(labels);
        let (_, _, family) = self.gauges.as_ref().expect("a family before its samples");
        family.get_or_create(&labels).set(value);
    }

    /// A counter of one sample (its name is written with `_total`).
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.flush();
        let family = Family::<Labels, Counter<u64, AtomicU64>>::default();
        family.get_or_create(&self.labels(&[])).inc_by(value);
        self.registry.register(name, help, family);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &LatencyHistogram) {
        self.flush();
        let mut below = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_S.len() + 1);
        for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
            let cumulative = h.buckets[i].load(Ordering::Relaxed);
            buckets.push((*le, cumulative.saturating_sub(below)));
            below = below.max(cumulative);
        }
        // Read after the buckets (a write counts in them before in `count`), and never
        // below them: `+Inf` and `_count` must be the same number.
        let count = h.count.load(Ordering::Relaxed).max(below);
        buckets.push((f64::MAX, count - below));
        let snapshot = HistogramSnapshot {
            labels: self.labels(&[]),
            sum: h.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            buckets,
        };
        self.registry.register(name, help, snapshot);
    }

    fn flush(&mut self) {
        if let Some((name, help, family)) = self.gauges.take() {
            self.registry.register(name, help, family);
        }
    }

    fn encode(mut self) -> String {
        self.flush();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
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
    let mut t = Text::new(node);
    t.family("spare_up", "1 while the node serves, with its role");
    t.sample(&[("role", role)], 1.0);
    match scrape {
        Scrape::Node(status) => render_node(&mut t, status, latency),
        Scrape::Monitor { view, .. } => {
            let rows: Vec<SpareRow> = view.spares().map(SpareRow::from).collect();
            render_spares(&mut t, &rows);
            render_reachable(&mut t, view);
        }
    }
    t.encode()
}

/// A data node's positions, commits and latency (a primary's), and its spares' links.
fn render_node(t: &mut Text, status: &NodeStatus, latency: Option<&LatencyHistogram>) {
    if let Some((_, last, applied)) = status.positions() {
        t.family("spare_last_lsn", "last LSN of the node's durable log");
        t.sample(&[], last as f64);
        t.family(
            "spare_applied_lsn",
            "last LSN applied to the node's database",
        );
        t.sample(&[], applied as f64);
    }
    let primary = status.primary();
    if let Some(p) = primary {
        t.counter(
            "spare_commits",
            "group commits (log records of client writes) since the node started; one group holds one or more client requests",
            p.commits_total,
        );
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
        "1 if the node answered the monitor's last poll",
    );
    for n in &view.nodes {
        t.sample(
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
    t.histogram(
        "spare_commit_latency_seconds",
        "time from a write's arrival to its answer",
        h,
    );
}

/// A per-spare gauge: name, help, and how to read it from the spare's row.
type Series = (&'static str, &'static str, fn(&SpareRow) -> Option<f64>);

/// The per-spare gauges, in the order they are written.
const SPARE_SERIES: [Series; 7] = [
    (
        "spare_lag_records",
        "transactions the spare has not applied",
        |s| s.lag?.records.map(|v| v as f64),
    ),
    (
        "spare_lag_bytes",
        "log bytes the spare has not applied",
        |s| s.lag?.bytes.map(|v| v as f64),
    ),
    (
        "spare_lag_seconds",
        "age of the oldest transaction the spare has not applied",
        |s| s.lag?.seconds,
    ),
    (
        "spare_last_ack_age_seconds",
        "time since the spare last answered",
        |s| s.lag?.last_ack_age_s,
    ),
    (
        "spare_link_up",
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
        "bytes sent to the spare and not yet acknowledged",
        |s| s.in_flight_bytes.map(|v| v as f64),
    ),
    (
        "spare_seed_progress_ratio",
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
    for (name, help, get) in SPARE_SERIES {
        t.family(name, help);
        for s in spares {
            if let Some(v) = get(s) {
                t.sample(&[("spare", s.name)], v);
            }
        }
    }
    render_link_state(t, spares);
}

/// One series per spare, 1 for its link's state (the state's first word only).
fn render_link_state(t: &mut Text, spares: &[SpareRow]) {
    t.family("spare_link_state", "1 for the link's current state");
    for s in spares {
        let state = s.state.split(' ').next().unwrap_or(s.state);
        t.sample(&[("spare", s.name), ("state", state)], 1.0);
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
            text.contains("spare_up{node=\"watch-1\",role=\"monitor\"} 1.0"),
            "{text}"
        );
        assert!(
            text.contains("spare_lag_records{node=\"watch-1\",spare=\"lan-1\"} 3.0"),
            "{text}"
        );
        assert!(
            !text.contains("spare_lag_bytes{"),
            "no bytes known, no sample: {text}"
        );
        assert!(
            text.contains("spare_node_reachable{node=\"watch-1\",target=\"main\"} 0.0"),
            "{text}"
        );
        assert!(
            text.contains("spare_node_reachable{node=\"watch-1\",target=\"lan-2\"} 1.0"),
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
        let mut t = Text::new("main");
        render_spares(&mut t, &rows);
        let out = t.encode();
        assert!(
            out.contains("spare_link_up{node=\"main\",spare=\"lan-1\"} 0.0"),
            "{out}"
        );
        assert!(
            out.contains("spare_seed_progress_ratio{node=\"main\",spare=\"lan-1\"} 1.0"),
            "{out}"
        );
        assert!(!out.contains("spare_lag_records{"), "{out}");
        assert!(out
            .contains("spare_link_state{node=\"main\",spare=\"lan-1\",state=\"connecting\"} 1.0"));
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn the_latency_histogram_is_cumulative_and_counters_end_in_total() {
        let h = LatencyHistogram::default();
        for s in [0.0003, 0.0015, 0.0015, 30.0] {
            h.record(s);
        }
        let mut t = Text::new("ma\"in");
        t.counter("spare_commits", "commits", 7);
        render_latency(&mut t, &h);
        let out = t.encode();
        let name = "spare_commit_latency_seconds";
        for line in [
            "spare_commits_total{node=\"ma\\\"in\"} 7".to_string(),
            format!("{name}_bucket{{le=\"0.0005\",node=\"ma\\\"in\"}} 1"),
            format!("{name}_bucket{{le=\"0.002\",node=\"ma\\\"in\"}} 3"),
            format!("{name}_bucket{{le=\"10.0\",node=\"ma\\\"in\"}} 3"),
            format!("{name}_bucket{{le=\"+Inf\",node=\"ma\\\"in\"}} 4"),
            format!("{name}_count{{node=\"ma\\\"in\"}} 4"),
        ] {
            assert!(out.lines().any(|l| l == line), "no {line} in:\n{out}");
        }
    }
}
