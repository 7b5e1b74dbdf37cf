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

/// Where the configuration is looked for when neither `--config` nor `$SPARE_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "cluster-config/cluster.toml";
/// How often keep-alives flow on idle links.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a primary's write lease lasts once granted.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(4);
/// Unacknowledged bytes a feeder keeps in flight to a LAN spare.
pub const DEFAULT_LAN_WINDOW_BYTES: u64 = 8 * 1024 * 1024;
/// Unacknowledged bytes in flight to a WAN spare: smaller, the link is slower.
pub const DEFAULT_WAN_WINDOW_BYTES: u64 = 2 * 1024 * 1024;
/// Log bytes the primary keeps for spares that are behind.
pub const DEFAULT_RETENTION_BYTES: u64 = 1024 * 1024 * 1024;
/// Age of log the primary keeps for spares that are behind.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A spare whose lag reaches this many seconds raises an alert, unless `lag_warn` says.
pub const DEFAULT_LAG_WARN: Duration = Duration::from_secs(60);
/// Smallest accepted cluster secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Smallest window: one window must hold at least one large batch.
pub const MIN_WINDOW_BYTES: u64 = 64 * 1024;

const CLUSTER_KEYS: &[&str] = &[
    "name",
    "lag_warn",
    "notify_command",
    "secret_file",
    "tls_dir",
    "lease",
    "heartbeat",
    "commit",
    "retention_bytes",
    "retention_age",
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
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The file this was read from, as given (for messages).
    pub path: PathBuf,
    pub cluster: ClusterSection,
    pub nodes: Vec<NodeConfig>,
}

/// Context for error messages: the file and the table being read.
struct Ctx<'a> {
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

    pub fn spares(&self) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(|n| n.role == Role::Spare)
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
                "cannot read {}: {e}; `spare up` creates it on a first local run, or create it with `head -c 32 /dev/urandom | base64 > {}` and copy the same file to every node",
                path.display(), path.display()
            ))
        })?;
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

fn check_keys(ctx: &Ctx, t: &Table, allowed: &[&str]) -> Result<()> {
    for key in t.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ctx.err(
                key,
                format!("unknown key (known keys: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn get_str<'t>(ctx: &Ctx, t: &'t Table, key: &str) -> Result<Option<&'t str>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(ctx.err(key, format!("must be a string, found {}", other.type_str()))),
    }
}

fn require_str<'t>(ctx: &Ctx, t: &'t Table, key: &str, example: &str) -> Result<&'t str> {
    get_str(ctx, t, key)?
        .ok_or_else(|| ctx.err(key, format!("missing (for example {key} = \"{example}\")")))
}

fn get_duration(ctx: &Ctx, t: &Table, key: &str, default: Duration) -> Result<Duration> {
    match get_str(ctx, t, key)? {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            ctx.err(
                key,
                format!("\"{s}\" is not a duration ({e}); write e.g. \"500ms\", \"4s\", \"30m\""),
            )
        }),
    }
}

fn get_size(ctx: &Ctx, t: &Table, key: &str) -> Result<Option<u64>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::Integer(i)) if *i > 0 => Ok(Some(*i as u64)),
        Some(Value::String(s)) => parse_size(s.trim_end_matches("/s")).map(Some).ok_or_else(|| ctx.err(key, format!("\"{s}\" is not a size; write bytes or e.g. \"64MiB\", \"4MiB/s\" for rates"))),
        Some(other) => Err(ctx.err(key, format!("must be a positive integer (bytes) or a string such as \"64MiB\", found {}", other))),
    }
}

/// Parses "64MiB", "1 GB", "4096".
pub fn parse_size(s: &str) -> Option<u64> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| b.as_u64())
        .filter(|&b| b > 0)
}

/// Checks "host:port" (a name or an address, as advertised to others).
fn check_host_port(ctx: &Ctx, key: &str, s: &str) -> Result<()> {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        return Err(ctx.err(key, format!("\"{s}\" is not host:port (for example \"10.0.0.5:7401\" or \"db.example.com:7401\")")));
    }
    Ok(())
}

fn parse_cluster(ctx: &Ctx, t: &Table, base: &Path) -> Result<ClusterSection> {
    check_keys(ctx, t, CLUSTER_KEYS)?;
    let name = require_str(ctx, t, "name", "office-db")?.to_string();
    check_name(ctx, "name", &name)?;
    let secret_file = base.join(require_str(ctx, t, "secret_file", "cluster.secret")?);
    let tls_dir = get_str(ctx, t, "tls_dir")?.map(|d| base.join(d));
    let lease = get_duration(ctx, t, "lease", DEFAULT_LEASE)?;
    let heartbeat = get_duration(ctx, t, "heartbeat", DEFAULT_HEARTBEAT)?;
    if heartbeat.is_zero() || heartbeat >= lease {
        return Err(ctx.err(
            "heartbeat",
            format!(
                "{} must be above zero and shorter than lease ({})",
                humantime::format_duration(heartbeat),
                humantime::format_duration(lease)
            ),
        ));
    }
    let commit = parse_commit(ctx, t.get("commit"))?;
    let retention_bytes = get_size(ctx, t, "retention_bytes")?.unwrap_or(DEFAULT_RETENTION_BYTES);
    let retention_age = get_duration(ctx, t, "retention_age", DEFAULT_RETENTION_AGE)?;
    let lag_warn = get_duration(ctx, t, "lag_warn", DEFAULT_LAG_WARN)?;
    let notify_command = get_str(ctx, t, "notify_command")?.map(str::to_string);
    Ok(ClusterSection {
        name,
        secret_file,
        tls_dir,
        lease,
        heartbeat,
        commit,
        retention_bytes,
        retention_age,
        lag_warn,
        notify_command,
    })
}

fn parse_commit(ctx: &Ctx, v: Option<&Value>) -> Result<CommitRule> {
    let t = match v {
        None => return Ok(CommitRule::Async),
        Some(Value::String(s)) if s == "async" => return Ok(CommitRule::Async),
        Some(Value::Table(t)) => t,
        Some(other) => return Err(ctx.err("commit", format!("{other} is not a commit rule: use \"async\" or {{ any = 1, of = [\"lan-1\"], deadline = \"2s\" }}"))),
    };
    let sub = Ctx {
        file: ctx.file,
        table: "[cluster] commit".into(),
    };
    check_keys(&sub, t, &["any", "of", "deadline"])?;
    let of: Vec<String> = match t.get("of") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| sub.err("of", "must list spare names as strings"))
            })
            .collect::<Result<_>>()?,
        _ => {
            return Err(sub.err(
                "of",
                "missing: list the spares of the rule, e.g. of = [\"lan-1\"]",
            ))
        }
    };
    let any = match t.get("any") {
        Some(Value::Integer(n)) if *n >= 1 && (*n as usize) <= of.len() => *n as usize,
        _ => {
            return Err(sub.err(
                "any",
                format!(
                    "must be a number from 1 to {} (the spares listed in `of`)",
                    of.len()
                ),
            ))
        }
    };
    let deadline = get_duration(&sub, t, "deadline", Duration::from_secs(2))?;
    Ok(CommitRule::Any { any, of, deadline })
}

fn check_name(ctx: &Ctx, key: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(ctx.err(
            key,
            format!("\"{name}\" is not a valid name: use 1 to 64 letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

fn parse_node(file: &Path, index: usize, t: &Table, base: &Path) -> Result<NodeConfig> {
    let label = match t.get("name") {
        Some(Value::String(s)) => format!("node \"{s}\""),
        _ => format!("node #{}", index + 1),
    };
    let ctx = Ctx { file, table: label };
    check_keys(&ctx, t, NODE_KEYS)?;
    let name = require_str(&ctx, t, "name", "lan-1")?.to_string();
    check_name(&ctx, "name", &name)?;
    let role = match require_str(&ctx, t, "role", "spare")? {
        "primary" => Role::Primary,
        "spare" => Role::Spare,
        "monitor" => Role::Monitor,
        other => {
            return Err(ctx.err(
                "role",
                format!("\"{other}\" is not a role: use \"primary\", \"spare\" or \"monitor\""),
            ))
        }
    };
    if role != Role::Spare {
        if let Some(key) = SPARE_ONLY_KEYS.iter().find(|k| t.contains_key(**k)) {
            return Err(ctx.err(
                key,
                format!(
                    "only applies to spares, and this node is a {}",
                    role.as_str()
                ),
            ));
        }
    }
    let peer = parse_bind(&ctx, t, "peer", "127.0.0.1:7401")?;
    let http = parse_bind(&ctx, t, "http", "127.0.0.1:7301")?;
    let peer_advertise = advertise(&ctx, t, "peer_advertise", peer)?;
    let http_advertise = advertise(&ctx, t, "http_advertise", http)?;
    let data_dir = base.join(
        get_str(&ctx, t, "data_dir")?
            .map(str::to_string)
            .unwrap_or_else(|| format!("data/{name}")),
    );
    let link = match get_str(&ctx, t, "link")? {
        None | Some("lan") => Link::Lan,
        Some("wan") => Link::Wan,
        Some(other) => {
            return Err(ctx.err(
                "link",
                format!("\"{other}\" is not a link: use \"lan\" or \"wan\""),
            ))
        }
    };
    let apply_delay = get_duration(&ctx, t, "apply_delay", Duration::ZERO)?;
    let max_rate = get_size(&ctx, t, "max_rate")?;
    let default_window = if link == Link::Wan {
        DEFAULT_WAN_WINDOW_BYTES
    } else {
        DEFAULT_LAN_WINDOW_BYTES
    };
    let window = get_size(&ctx, t, "window")?.unwrap_or(default_window);
    if window < MIN_WINDOW_BYTES {
        return Err(ctx.err(
            "window",
            format!("{window} bytes is below the minimum of {MIN_WINDOW_BYTES}"),
        ));
    }
    let vote = match t.get("vote") {
        None => true,
        Some(Value::Boolean(b)) => *b,
        Some(other) => return Err(ctx.err("vote", format!("must be true or false, found {other}"))),
    };
    let lag_warn = t
        .contains_key("lag_warn")
        .then(|| get_duration(&ctx, t, "lag_warn", DEFAULT_LAG_WARN))
        .transpose()?;
    Ok(NodeConfig {
        name,
        role,
        peer,
        http,
        peer_advertise,
        http_advertise,
        data_dir,
        link,
        apply_delay,
        max_rate,
        window,
        vote,
        lag_warn,
    })
}

fn parse_bind(ctx: &Ctx, t: &Table, key: &str, example: &str) -> Result<SocketAddr> {
    let s = require_str(ctx, t, key, example)?;
    s.parse().map_err(|_| {
        ctx.err(
            key,
            format!("\"{s}\" is not an address to bind: write ip:port, for example \"{example}\""),
        )
    })
}

fn advertise(ctx: &Ctx, t: &Table, key: &str, bind: SocketAddr) -> Result<String> {
    match get_str(ctx, t, key)? {
        None => Ok(bind.to_string()),
        Some(s) => {
            check_host_port(ctx, key, s)?;
            Ok(s.to_string())
        }
    }
}

/// The configuration a running process follows, replaced as a whole by a reload. Every node
/// of the process shares one (they read the same file).
#[derive(Debug)]
pub struct ConfigCell(std::sync::RwLock<std::sync::Arc<ClusterConfig>>);

impl ConfigCell {
    pub fn new(config: ClusterConfig) -> Self {
        ConfigCell(std::sync::RwLock::new(std::sync::Arc::new(config)))
    }

    /// The current configuration (a cheap snapshot: later reloads do not change it).
    pub fn get(&self) -> std::sync::Arc<ClusterConfig> {
        self.0.read().expect("config lock").clone()
    }

    pub fn set(&self, config: ClusterConfig) {
        *self.0.write().expect("config lock") = std::sync::Arc::new(config);
    }
}

#[cfg(test)]
mod tests;
