//! The configuration's types and defaults: what `cluster.toml` holds once parsed. Parsing is
//! in `parse.rs`, validation and loading in `config.rs`; both read these types, neither is read
//! by them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

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

pub(crate) const CLUSTER_KEYS: &[&str] = &[
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
pub(crate) const NODE_KEYS: &[&str] = &[
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
pub(crate) const SPARE_ONLY_KEYS: &[&str] =
    &["lag_warn", "link", "apply_delay", "max_rate", "window"];

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

/// What one client request may cost a node (docs/http-api.md: "What clients cannot do, and why").
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
    pub(crate) file: &'a Path,
    pub(crate) table: String,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, field: &str, what: impl std::fmt::Display) -> Error {
        Error::Config(format!(
            "{}: {}: field \"{field}\": {what}",
            self.file.display(),
            self.table
        ))
    }
}
