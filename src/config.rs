//! The cluster configuration (`cluster-config/cluster.toml`): types, defaults as named
//! constants, loading and validation.
//!
//! Every error names the file, the node (or `[cluster]`) and the field, and says what is
//! expected, because an administrator reads it at 3 a.m. with a primary down. Unknown keys
//! are refused rather than ignored: a misspelt `apply_dealy` must not silently mean "no delay".

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::error::{Error, Result};

mod parse;

pub use parse::parse_size;
use parse::{parse_cluster, parse_node};

/// Where the configuration is looked for when neither `--config` nor `$SPARE_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "cluster-config/cluster.toml";
/// How often keep-alives flow on idle links.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a primary's write lease lasts once granted.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(4);
/// Unacknowledged bytes a feeder keeps in flight to a LAN spare.
pub const DEFAULT_LAN_WINDOW_BYTES: u64 = 8 * 1024 * 1024;
/// Unacknowledged bytes in flight to a WAN spare: larger, since a long round trip needs more
/// bytes in flight to fill the link (bandwidth × round trip: 100 Mbit/s × 100 ms = 1.25 MB,
/// with room for bursts).
pub const DEFAULT_WAN_WINDOW_BYTES: u64 = 16 * 1024 * 1024;
/// Log bytes the primary keeps for spares that are behind.
pub const DEFAULT_RETENTION_BYTES: u64 = 1024 * 1024 * 1024;
/// Age of log the primary keeps for spares that are behind.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A spare whose lag reaches this many seconds raises an alert, unless `lag_warn` says.
pub const DEFAULT_LAG_WARN: Duration = Duration::from_secs(60);
/// Smallest accepted cluster secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Scheduled backups, when `backup_dir` is set without `backup_every`.
pub const DEFAULT_BACKUP_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Shortest period between scheduled backups.
pub const MIN_BACKUP_EVERY: Duration = Duration::from_secs(1);
/// Daily and monthly scheduled backups kept by default.
pub const DEFAULT_BACKUP_KEEP_DAILY: usize = 7;
pub const DEFAULT_BACKUP_KEEP_MONTHLY: usize = 12;
/// How long a client's query may run before it is stopped (`read_time_limit`).
pub const DEFAULT_READ_TIME_LIMIT: Duration = Duration::from_secs(10);
/// How long a client's write request may run (`write_time_limit`): short, since a request
/// holds the primary's only write thread while it runs.
pub const DEFAULT_WRITE_TIME_LIMIT: Duration = crate::store::exec::DEFAULT_WRITE_TIME_LIMIT;
/// How long a schema change (CREATE INDEX on a large table, ANALYZE) may run
/// (`schema_time_limit`): it holds the write thread too, but is rare and wanted whole.
pub const DEFAULT_SCHEMA_TIME_LIMIT: Duration = crate::store::exec::DEFAULT_SCHEMA_TIME_LIMIT;
/// Largest answer to one query, in bytes of values (`max_result_bytes`); also the largest
/// single value a query may build.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 16 * 1024 * 1024;
/// Queries a node runs at once (`max_concurrent_reads`); more wait their turn.
pub const DEFAULT_MAX_CONCURRENT_READS: usize = 8;
/// How long a query waits for its turn before the answer is 503 busy (`read_queue_wait`).
pub const DEFAULT_READ_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Bounds of the limits themselves: SQLite holds lengths in 31 bits, and a node runs its
/// queries on threads of its own.
pub const MAX_RESULT_BYTES_LIMIT: u64 = 1 << 30;
pub const MAX_CONCURRENT_READS_LIMIT: usize = 256;
/// Smallest window: one window must hold at least one large batch.
pub const MIN_WINDOW_BYTES: u64 = 64 * 1024;

const CLUSTER_KEYS: &[&str] = &[
    "name",
    "api_token_file",
    "api_token_reads",
    "http_tls",
    "lag_warn",
    "notify_command",
    "secret_file",
    "tls_dir",
    "lease",
    "heartbeat",
    "commit",
    "retention_bytes",
    "retention_age",
    "read_time_limit",
    "write_time_limit",
    "schema_time_limit",
    "max_result_bytes",
    "max_concurrent_reads",
    "read_queue_wait",
    "verify_every",
];
const NODE_KEYS: &[&str] = &[
    "lag_warn",
    "name",
    "role",
    "peer",
    "http",
    "peer_advertise",
    "http_advertise",
    "data_dir",
    "link",
    "apply_delay",
    "max_rate",
    "window",
    "vote",
    "allow_from",
    "backup_dir",
    "backup_every",
    "backup_keep_daily",
    "backup_keep_monthly",
    "log_archive_dir",
];
const SPARE_ONLY_KEYS: &[&str] = &["lag_warn", "link", "apply_delay", "max_rate", "window"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Spare,
    Monitor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Spare => "spare",
            Role::Monitor => "monitor",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Lan,
    Wan,
}

/// `commit` in `[cluster]`: when a write is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitRule {
    /// As soon as the primary's log is durable.
    Async,
    /// Once `any` of the spares in `of` flushed it, waiting at most `deadline`.
    Any {
        any: usize,
        of: Vec<String>,
        deadline: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSection {
    pub name: String,
    pub secret_file: PathBuf,
    pub tls_dir: Option<PathBuf>,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub commit: CommitRule,
    pub retention_bytes: u64,
    pub retention_age: Duration,
    /// Lag (in seconds behind) that raises an alert, for spares without their own.
    pub lag_warn: Duration,
    /// Shell command run for each event, with the event in its environment.
    pub notify_command: Option<String>,
    /// File holding the HTTP API token: writes and admin routes need it when set.
    pub api_token_file: Option<PathBuf>,
    /// Whether reads (queries, status, metrics, the dashboard) need the token too.
    pub api_token_reads: bool,
    /// Whether the HTTP API serves HTTPS with the nodes' certificates (needs `tls_dir`).
    pub http_tls: bool,
    /// What one client request may cost a node.
    pub limits: ClientLimits,
    /// How often monitors run `spare verify` (None: never).
    pub verify_every: Option<Duration>,
}

/// What one client request may cost a node (README: "What clients cannot do, and why").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientLimits {
    pub read_time_limit: Duration,
    pub write_time_limit: Duration,
    pub schema_time_limit: Duration,
    pub max_result_bytes: u64,
    pub max_concurrent_reads: usize,
    pub read_queue_wait: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            read_time_limit: DEFAULT_READ_TIME_LIMIT,
            write_time_limit: DEFAULT_WRITE_TIME_LIMIT,
            schema_time_limit: DEFAULT_SCHEMA_TIME_LIMIT,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            max_concurrent_reads: DEFAULT_MAX_CONCURRENT_READS,
            read_queue_wait: DEFAULT_READ_QUEUE_WAIT,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub name: String,
    pub role: Role,
    /// Where the node-to-node listener binds.
    pub peer: SocketAddr,
    /// Where the HTTP API binds.
    pub http: SocketAddr,
    /// How other nodes reach the peer listener (NAT, VPN, proxy); defaults to `peer`.
    pub peer_advertise: String,
    /// How clients reach the HTTP API; defaults to `http`.
    pub http_advertise: String,
    /// Absolute path of the node's data directory.
    pub data_dir: PathBuf,
    pub link: Link,
    pub apply_delay: Duration,
    pub max_rate: Option<u64>,
    pub window: u64,
    pub vote: bool,
    /// This spare's own alert threshold (else the cluster's).
    pub lag_warn: Option<Duration>,
    /// Source networks this node accepts peer connections from (empty: any).
    pub allow_from: Vec<ipnet::IpNet>,
    /// Scheduled backups: where, how often, how many daily and monthly ones to keep.
    pub backup_dir: Option<PathBuf>,
    pub backup_every: Duration,
    pub backup_keep_daily: usize,
    pub backup_keep_monthly: usize,
    /// Where the primary copies each completed log segment (point-in-time restore).
    pub log_archive_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The file this was read from, as given (for messages).
    pub path: PathBuf,
    pub cluster: ClusterSection,
    pub nodes: Vec<NodeConfig>,
}

/// Context for error messages: the file and the table being read.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    table: String,
}

impl Ctx<'_> {
    fn err(&self, field: &str, what: impl std::fmt::Display) -> Error {
        Error::Config(format!(
            "{}: {}: field \"{field}\": {what}",
            self.file.display(),
            self.table
        ))
    }
}

impl ClusterConfig {
    /// Picks the configuration file: `--config`, else `$SPARE_CONFIG`, else the default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SPARE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Reads and validates the configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read configuration file {}: {e} (pass --config FILE or set SPARE_CONFIG)",
                path.display()
            ))
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` names it in messages and anchors
    /// relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let root: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0);
            Error::Config(format!(
                "{}: not valid TOML at line {line}: {}",
                path.display(),
                e.message().replace('\n', "; ")
            ))
        })?;
        let file_ctx = Ctx {
            file: path,
            table: "top level".into(),
        };
        for key in root.keys() {
            if key != "cluster" && key != "node" {
                return Err(
                    file_ctx.err(key, "unknown key (expected [cluster] and [[node]] tables)")
                );
            }
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let cluster_table = match root.get("cluster") {
            Some(Value::Table(t)) => t.clone(),
            Some(_) => return Err(file_ctx.err("cluster", "must be a table: [cluster]")),
            None => {
                return Err(file_ctx.err(
                    "cluster",
                    "missing: add a [cluster] table with at least `name` and `secret_file`",
                ))
            }
        };
        let cluster = parse_cluster(
            &Ctx {
                file: path,
                table: "[cluster]".into(),
            },
            &cluster_table,
            &base,
        )?;
        let node_values = match root.get("node") {
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(file_ctx.err("node", "must be an array of tables: [[node]]")),
            None => return Err(file_ctx.err("node", "missing: add one [[node]] table per node")),
        };
        let mut nodes = Vec::new();
        for (i, v) in node_values.iter().enumerate() {
            let Value::Table(t) = v else {
                return Err(file_ctx.err("node", format!("entry {} must be a table", i + 1)));
            };
            nodes.push(parse_node(path, i, t, &base)?);
        }
        let config = ClusterConfig {
            path: path.to_path_buf(),
            cluster,
            nodes,
        };
        config.validate()?;
        Ok(config)
    }

    /// Cross-node checks: unique names and addresses, exactly one primary, commit rule.
    fn validate(&self) -> Result<()> {
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for n in &self.nodes {
            let ctx = Ctx {
                file: &self.path,
                table: format!("node \"{}\"", n.name),
            };
            if !names.insert(n.name.as_str()) {
                return Err(ctx.err(
                    "name",
                    "duplicate node name: each [[node]] needs its own name",
                ));
            }
            for (field, addr) in [("peer", n.peer), ("http", n.http)] {
                if !addrs.insert(addr) {
                    return Err(ctx.err(
                        field,
                        format!("address {addr} is already used by another node or field"),
                    ));
                }
            }
        }
        let primaries: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.role == Role::Primary)
            .map(|n| n.name.as_str())
            .collect();
        let ctx = Ctx {
            file: &self.path,
            table: "nodes".into(),
        };
        match primaries.len() {
            1 => {}
            0 => {
                return Err(ctx.err(
                    "role",
                    "no node has role = \"primary\": exactly one is needed",
                ))
            }
            _ => {
                return Err(ctx.err(
                    "role",
                    format!(
                        "{} nodes have role = \"primary\" ({}): exactly one is allowed",
                        primaries.len(),
                        primaries.join(", ")
                    ),
                ))
            }
        }
        if !self.nodes.iter().any(|n| n.vote) {
            return Err(ctx.err(
                "vote",
                "no node votes: the primary's write lease needs a majority of the voters; set vote = true on at least one node (voting is the default)",
            ));
        }
        if self.cluster.tls_dir.is_some() {
            if let Some(n) = self
                .nodes
                .iter()
                .find(|n| !crate::net::tls::valid_tls_name(&n.name))
            {
                return Err(Ctx {
                    file: &self.path,
                    table: format!("node \"{}\"", n.name),
                }
                .err("name", "with tls_dir, node names are certificate names: use lowercase letters, digits and '-' (at most 63)"));
            }
        }
        if self.cluster.tls_dir.is_none() && self.cluster.http_tls {
            return Err(Ctx {
                file: &self.path,
                table: "[cluster]".into(),
            }
            .err(
                "http_tls",
                "needs tls_dir (the nodes' certificates serve HTTPS too)",
            ));
        }
        if self.cluster.tls_dir.is_none() {
            if let Some(n) = self.nodes.iter().find(|n| n.link == Link::Wan) {
                return Err(Ctx {
                    file: &self.path,
                    table: format!("node \"{}\"", n.name),
                }
                .err("link", "\"wan\" needs TLS: set tls_dir in [cluster] (create the certificates with `spare certs init`), or use link = \"lan\" on a private network"));
            }
        }
        if let CommitRule::Any { of, .. } = &self.cluster.commit {
            let ctx = Ctx {
                file: &self.path,
                table: "[cluster]".into(),
            };
            for name in of {
                if !self
                    .nodes
                    .iter()
                    .any(|n| &n.name == name && n.role == Role::Spare)
                {
                    return Err(ctx.err(
                        "commit",
                        format!("\"{name}\" in `of` is not a spare of this configuration"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            Error::Config(format!(
                "{}: no node named \"{name}\" (nodes: {})",
                self.path.display(),
                known.join(", ")
            ))
        })
    }

    pub fn primary(&self) -> &NodeConfig {
        self.nodes
            .iter()
            .find(|n| n.role == Role::Primary)
            .expect("validate() checked there is one primary")
    }

    /// The lag alert threshold of `spare`.
    pub fn lag_warn(&self, spare: &str) -> Duration {
        self.node(spare)
            .ok()
            .and_then(|n| n.lag_warn)
            .unwrap_or(self.cluster.lag_warn)
    }

    /// The nodes that take part in quorums (`vote`, true by default).
    pub fn voters(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.vote)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The membership this configuration asks for: its voters and lease length. It becomes
    /// an epoch's at the next promotion (`core::members`).
    pub fn members(&self) -> crate::core::members::Members {
        crate::core::members::Members::new(&self.voters(), self.cluster.lease.as_millis() as u64)
    }

    pub fn spares(&self) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(|n| n.role == Role::Spare)
    }

    /// Reads the HTTP API token, if the configuration sets one.
    pub fn read_api_token(&self) -> Result<Option<String>> {
        let Some(path) = &self.cluster.api_token_file else {
            return Ok(None);
        };
        let ctx = Ctx {
            file: &self.path,
            table: "[cluster]".into(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ctx.err("api_token_file", format!(
                "cannot read {}: {e}; create it with `(umask 077; head -c 24 /dev/urandom | base64 > {})` and give it to the API's clients",
                path.display(), path.display()
            ))
        })?;
        warn_if_shared(path, "api_token_file");
        let token = text.trim().to_string();
        if token.len() < MIN_SECRET_BYTES {
            return Err(ctx.err(
                "api_token_file",
                format!(
                    "{} holds {} bytes; a token needs at least {MIN_SECRET_BYTES}",
                    path.display(),
                    token.len()
                ),
            ));
        }
        Ok(Some(token))
    }

    /// Reads the cluster secret; the message says how to create a missing one.
    pub fn read_secret(&self) -> Result<Vec<u8>> {
        let path = &self.cluster.secret_file;
        let ctx = Ctx {
            file: &self.path,
            table: "[cluster]".into(),
        };
        let bytes = std::fs::read(path).map_err(|e| {
            ctx.err("secret_file", format!(
                "cannot read {}: {e}; `spare up` creates it on a first local run, or create it with `(umask 077; head -c 32 /dev/urandom | base64 > {})` and copy the same file to every node",
                path.display(), path.display()
            ))
        })?;
        warn_if_shared(path, "secret_file");
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(ctx.err(
                "secret_file",
                format!(
                    "{} holds {} bytes; a secret needs at least {MIN_SECRET_BYTES}",
                    path.display(),
                    trimmed.len()
                ),
            ));
        }
        Ok(trimmed)
    }
}

/// Warns when a secret file can be read by other users of the machine.
fn warn_if_shared(path: &Path, field: &str) {
    if crate::durable::readable_by_others(path) {
        tracing::warn!(file = %path.display(), field, "this secret is readable by other users of this machine; restrict it with `chmod 600`");
    }
}

/// The configuration a running process follows, replaced as a whole by a reload. Every node
/// of the process shares one (they read the same file).
///
/// Roles in the file are *initial* roles: after a promotion the primary is whichever node the
/// newest epoch names. The cell learns that leader (from `node.state`, a committed
/// promotion, a newer peer) and hands out the file with roles re-assigned: the leader is the
/// `primary`, the file's primary a data node like the spares. Code that asks
/// `config.primary()` or `config.spares()` thus follows promotions without knowing of them.
#[derive(Debug)]
pub struct ConfigCell {
    inner: std::sync::RwLock<CellInner>,
}

#[derive(Debug)]
struct CellInner {
    /// As read from the file.
    file: std::sync::Arc<ClusterConfig>,
    /// The newest (epoch, primary) this process knows of.
    leader: Option<(u64, String)>,
    /// `file` with the leader as primary.
    effective: std::sync::Arc<ClusterConfig>,
}

impl ConfigCell {
    pub fn new(config: ClusterConfig) -> Self {
        let file = std::sync::Arc::new(config);
        ConfigCell {
            inner: std::sync::RwLock::new(CellInner {
                effective: file.clone(),
                file,
                leader: None,
            }),
        }
    }

    /// The current configuration, roles following the newest known epoch (a cheap
    /// snapshot: later reloads and promotions do not change it).
    pub fn get(&self) -> std::sync::Arc<ClusterConfig> {
        self.inner.read().expect("config lock").effective.clone()
    }

    /// The configuration as the file says it (initial roles).
    pub fn file(&self) -> std::sync::Arc<ClusterConfig> {
        self.inner.read().expect("config lock").file.clone()
    }

    /// The newest (epoch, primary) known, if any was learned.
    pub fn leader(&self) -> Option<(u64, String)> {
        self.inner.read().expect("config lock").leader.clone()
    }

    /// Replaces the file's configuration (a reload).
    pub fn set(&self, config: ClusterConfig) {
        let mut inner = self.inner.write().expect("config lock");
        inner.file = std::sync::Arc::new(config);
        inner.effective = std::sync::Arc::new(inner.file.led_by(inner.leader.as_ref()));
    }

    /// Learns that `primary` leads `epoch`; ignored unless newer than what is known. Returns
    /// whether it was news.
    pub fn learn(&self, epoch: u64, primary: &str) -> bool {
        let mut inner = self.inner.write().expect("config lock");
        if inner.leader.as_ref().is_some_and(|(e, _)| *e >= epoch) {
            return false;
        }
        if inner.file.node(primary).is_err() {
            tracing::warn!(%primary, epoch, "the primary of a newer epoch is not in this configuration file; keeping the file's roles");
            return false;
        }
        inner.leader = Some((epoch, primary.to_string()));
        inner.effective = std::sync::Arc::new(inner.file.led_by(inner.leader.as_ref()));
        true
    }
}

impl ClusterConfig {
    /// This configuration with `leader` as the primary (the file's primary becoming a data
    /// node like the spares); unchanged without a leader or if it names no data node.
    pub fn led_by(&self, leader: Option<&(u64, String)>) -> ClusterConfig {
        let mut c = self.clone();
        let Some((_, name)) = leader else { return c };
        if !c
            .nodes
            .iter()
            .any(|n| &n.name == name && n.role != Role::Monitor)
        {
            return c;
        }
        for n in &mut c.nodes {
            if n.role == Role::Monitor {
                continue;
            }
            n.role = if &n.name == name {
                Role::Primary
            } else {
                Role::Spare
            };
        }
        c
    }
}

#[cfg(test)]
mod tests;
