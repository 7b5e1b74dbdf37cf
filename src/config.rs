//! The cluster configuration (`cluster-config/cluster.toml`): types, defaults as named
//! constants, loading and validation.
//!
//! Every error names the file, the node (or `[cluster]`) and the field, and says what is
//! expected, because an administrator reads it at 3 a.m. with a primary down. Unknown keys
//! are refused rather than ignored: a misspelt `apply_dealy` must not silently mean "no delay".

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::error::{Error, Result};

mod parse;
mod types;

pub use parse::parse_size;
use parse::{parse_cluster, parse_node};
use types::Ctx;
pub use types::{
    ClientLimits, ClusterConfig, ClusterSection, CommitRule, Link, NodeConfig, Role,
    DEFAULT_BACKUP_EVERY, DEFAULT_BACKUP_KEEP_DAILY, DEFAULT_BACKUP_KEEP_MONTHLY,
    DEFAULT_CONFIG_PATH, DEFAULT_HEARTBEAT, DEFAULT_LAG_WARN, DEFAULT_LAN_WINDOW_BYTES,
    DEFAULT_LEASE, DEFAULT_MAX_CONCURRENT_READS, DEFAULT_MAX_RESULT_BYTES, DEFAULT_READ_QUEUE_WAIT,
    DEFAULT_READ_TIME_LIMIT, DEFAULT_RETENTION_AGE, DEFAULT_RETENTION_BYTES,
    DEFAULT_SCHEMA_TIME_LIMIT, DEFAULT_WAN_WINDOW_BYTES, DEFAULT_WRITE_TIME_LIMIT,
    MAX_CONCURRENT_READS_LIMIT, MAX_RESULT_BYTES_LIMIT, MIN_BACKUP_EVERY, MIN_SECRET_BYTES,
    MIN_WINDOW_BYTES,
};

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
        self.validate_unique()?;
        self.validate_primary()?;
        self.validate_voters()?;
        self.validate_tls()?;
        self.validate_commit()?;
        Ok(())
    }

    /// Node names, and the `peer` and `http` addresses of all nodes, are each used once.
    fn validate_unique(&self) -> Result<()> {
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
        Ok(())
    }

    /// Exactly one node has `role = "primary"`.
    fn validate_primary(&self) -> Result<()> {
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
            1 => Ok(()),
            0 => Err(ctx.err(
                "role",
                "no node has role = \"primary\": exactly one is needed",
            )),
            _ => Err(ctx.err(
                "role",
                format!(
                    "{} nodes have role = \"primary\" ({}): exactly one is allowed",
                    primaries.len(),
                    primaries.join(", ")
                ),
            )),
        }
    }

    /// At least one node votes (`vote`), or no write lease could ever be granted.
    fn validate_voters(&self) -> Result<()> {
        if !self.nodes.iter().any(|n| n.vote) {
            let ctx = Ctx {
                file: &self.path,
                table: "nodes".into(),
            };
            return Err(ctx.err(
                "vote",
                "no node votes: the primary's write lease needs a majority of the voters; set vote = true on at least one node (voting is the default)",
            ));
        }
        Ok(())
    }

    /// The `tls_dir` rules: certificate-valid node names; `http_tls` and WAN links need TLS.
    fn validate_tls(&self) -> Result<()> {
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
        Ok(())
    }

    /// The `commit` rule of `[cluster]` names only spares of this configuration.
    fn validate_commit(&self) -> Result<()> {
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
