//! Parsing one `[cluster]` or `[[node]]` table, field by field, with messages that name the
//! file, the table and the field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::types::*;
use crate::error::Result;

pub(super) fn check_keys(ctx: &Ctx, t: &Table, allowed: &[&str]) -> Result<()> {
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

pub(super) fn get_str<'t>(ctx: &Ctx, t: &'t Table, key: &str) -> Result<Option<&'t str>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(ctx.err(key, format!("must be a string, found {}", other.type_str()))),
    }
}

pub(super) fn require_str<'t>(
    ctx: &Ctx,
    t: &'t Table,
    key: &str,
    example: &str,
) -> Result<&'t str> {
    get_str(ctx, t, key)?
        .ok_or_else(|| ctx.err(key, format!("missing (for example {key} = \"{example}\")")))
}

pub(super) fn get_duration(ctx: &Ctx, t: &Table, key: &str, default: Duration) -> Result<Duration> {
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

pub(super) fn get_size(ctx: &Ctx, t: &Table, key: &str) -> Result<Option<u64>> {
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
pub(super) fn check_host_port(ctx: &Ctx, key: &str, s: &str) -> Result<()> {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        return Err(ctx.err(key, format!("\"{s}\" is not host:port (for example \"10.0.0.5:7401\" or \"db.example.com:7401\")")));
    }
    Ok(())
}

pub(super) fn parse_cluster(ctx: &Ctx, t: &Table, base: &Path) -> Result<ClusterSection> {
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
    let api_token_file = get_str(ctx, t, "api_token_file")?.map(|f| base.join(f));
    let api_token_reads = match t.get("api_token_reads") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(ctx.err(
                "api_token_reads",
                format!("must be true or false, found {other}"),
            ))
        }
    };
    let http_tls = match t.get("http_tls") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(ctx.err("http_tls", format!("must be true or false, found {other}")))
        }
    };
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
        api_token_file,
        api_token_reads,
        http_tls,
        limits: parse_limits(ctx, t)?,
        verify_every: parse_verify_every(ctx, t)?,
    })
}

/// Shortest `verify_every`: a verify reads every row of every node's database.
const MIN_VERIFY_EVERY: Duration = Duration::from_secs(10);

fn parse_verify_every(ctx: &Ctx, t: &Table) -> Result<Option<Duration>> {
    if t.get("verify_every").is_none() {
        return Ok(None);
    }
    let d = get_duration(ctx, t, "verify_every", MIN_VERIFY_EVERY)?;
    if d < MIN_VERIFY_EVERY {
        return Err(ctx.err(
            "verify_every",
            format!(
                "must be at least {} (a verify reads every row of every node)",
                humantime::format_duration(MIN_VERIFY_EVERY)
            ),
        ));
    }
    Ok(Some(d))
}

/// The client limits of `[cluster]`, each checked against its own bounds.
fn parse_limits(ctx: &Ctx, t: &Table) -> Result<ClientLimits> {
    let positive = |key: &str, default: Duration| -> Result<Duration> {
        let d = get_duration(ctx, t, key, default)?;
        if d.is_zero() {
            return Err(ctx.err(key, "must be above zero"));
        }
        Ok(d)
    };
    let max_result_bytes =
        get_size(ctx, t, "max_result_bytes")?.unwrap_or(DEFAULT_MAX_RESULT_BYTES);
    if !(1024..=MAX_RESULT_BYTES_LIMIT).contains(&max_result_bytes) {
        return Err(ctx.err(
            "max_result_bytes",
            format!("{max_result_bytes} is out of range: between 1KiB and 1GiB"),
        ));
    }
    let max_concurrent_reads = match t.get("max_concurrent_reads") {
        None => DEFAULT_MAX_CONCURRENT_READS,
        Some(Value::Integer(n)) if (1..=MAX_CONCURRENT_READS_LIMIT as i64).contains(n) => {
            *n as usize
        }
        Some(other) => {
            return Err(ctx.err(
                "max_concurrent_reads",
                format!("must be an integer from 1 to {MAX_CONCURRENT_READS_LIMIT}, found {other}"),
            ))
        }
    };
    Ok(ClientLimits {
        read_time_limit: positive("read_time_limit", DEFAULT_READ_TIME_LIMIT)?,
        write_time_limit: positive("write_time_limit", DEFAULT_WRITE_TIME_LIMIT)?,
        schema_time_limit: positive("schema_time_limit", DEFAULT_SCHEMA_TIME_LIMIT)?,
        max_result_bytes,
        max_concurrent_reads,
        read_queue_wait: positive("read_queue_wait", DEFAULT_READ_QUEUE_WAIT)?,
    })
}

pub(super) fn parse_commit(ctx: &Ctx, v: Option<&Value>) -> Result<CommitRule> {
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

pub(super) fn check_name(ctx: &Ctx, key: &str, name: &str) -> Result<()> {
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

pub(super) fn parse_node(file: &Path, index: usize, t: &Table, base: &Path) -> Result<NodeConfig> {
    let label = match t.get("name") {
        Some(Value::String(s)) => format!("node \"{s}\""),
        _ => format!("node #{}", index + 1),
    };
    let ctx = Ctx { file, table: label };
    check_keys(&ctx, t, NODE_KEYS)?;
    let name = require_str(&ctx, t, "name", "lan-1")?.to_string();
    check_name(&ctx, "name", &name)?;
    let role = parse_role(&ctx, t)?;
    let peer = parse_bind(&ctx, t, "peer", "127.0.0.1:7401")?;
    let http = parse_bind(&ctx, t, "http", "127.0.0.1:7301")?;
    let peer_advertise = advertise(&ctx, t, "peer_advertise", peer)?;
    let http_advertise = advertise(&ctx, t, "http_advertise", http)?;
    let data_dir = base.join(
        get_str(&ctx, t, "data_dir")?
            .map(str::to_string)
            .unwrap_or_else(|| format!("data/{name}")),
    );
    let link = parse_link(&ctx, t)?;
    let apply_delay = get_duration(&ctx, t, "apply_delay", Duration::ZERO)?;
    let max_rate = get_size(&ctx, t, "max_rate")?;
    let window = parse_window(&ctx, t, link)?;
    let vote = parse_vote(&ctx, t)?;
    let lag_warn = t
        .contains_key("lag_warn")
        .then(|| get_duration(&ctx, t, "lag_warn", DEFAULT_LAG_WARN))
        .transpose()?;
    let allow_from = parse_allow_from(&ctx, t.get("allow_from"))?;
    let backup_dir = get_str(&ctx, t, "backup_dir")?.map(|d| base.join(d));
    let backup_every = parse_backup_every(&ctx, t)?;
    let backup_keep_daily = get_count(&ctx, t, "backup_keep_daily", DEFAULT_BACKUP_KEEP_DAILY)?;
    let backup_keep_monthly =
        get_count(&ctx, t, "backup_keep_monthly", DEFAULT_BACKUP_KEEP_MONTHLY)?;
    let log_archive_dir = get_str(&ctx, t, "log_archive_dir")?.map(|d| base.join(d));
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
        allow_from,
        backup_dir,
        backup_every,
        backup_keep_daily,
        backup_keep_monthly,
        log_archive_dir,
    })
}

/// A node's `role`, and the rule that spare-only keys appear on spares alone.
fn parse_role(ctx: &Ctx, t: &Table) -> Result<Role> {
    let role = match require_str(ctx, t, "role", "spare")? {
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
    Ok(role)
}

/// A node's `link`: "lan" (the default) or "wan".
fn parse_link(ctx: &Ctx, t: &Table) -> Result<Link> {
    match get_str(ctx, t, "link")? {
        None | Some("lan") => Ok(Link::Lan),
        Some("wan") => Ok(Link::Wan),
        Some(other) => Err(ctx.err(
            "link",
            format!("\"{other}\" is not a link: use \"lan\" or \"wan\""),
        )),
    }
}

/// A node's `window`: its default follows the link, and it may not go below the minimum.
fn parse_window(ctx: &Ctx, t: &Table, link: Link) -> Result<u64> {
    let default_window = if link == Link::Wan {
        DEFAULT_WAN_WINDOW_BYTES
    } else {
        DEFAULT_LAN_WINDOW_BYTES
    };
    let window = get_size(ctx, t, "window")?.unwrap_or(default_window);
    if window < MIN_WINDOW_BYTES {
        return Err(ctx.err(
            "window",
            format!("{window} bytes is below the minimum of {MIN_WINDOW_BYTES}"),
        ));
    }
    Ok(window)
}

/// A node's `vote`: whether it takes part in quorums (true by default).
fn parse_vote(ctx: &Ctx, t: &Table) -> Result<bool> {
    match t.get("vote") {
        None => Ok(true),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(other) => Err(ctx.err("vote", format!("must be true or false, found {other}"))),
    }
}

/// A node's `backup_every`: the period of scheduled backups, no shorter than the minimum.
fn parse_backup_every(ctx: &Ctx, t: &Table) -> Result<Duration> {
    let backup_every = get_duration(ctx, t, "backup_every", DEFAULT_BACKUP_EVERY)?;
    if backup_every < MIN_BACKUP_EVERY {
        return Err(ctx.err(
            "backup_every",
            format!(
                "must be at least {}",
                humantime::format_duration(MIN_BACKUP_EVERY)
            ),
        ));
    }
    Ok(backup_every)
}

/// A node's count of kept backups (`backup_keep_daily`, `backup_keep_monthly`): 0 or more.
fn get_count(ctx: &Ctx, t: &Table, key: &str, default: usize) -> Result<usize> {
    match t.get(key) {
        None => Ok(default),
        Some(Value::Integer(i)) if *i >= 0 => Ok(*i as usize),
        Some(other) => Err(ctx.err(key, format!("must be a count (0 or more), found {other}"))),
    }
}

/// `allow_from = ["10.0.0.0/24", "203.0.113.7"]`: networks, or single addresses.
fn parse_allow_from(ctx: &Ctx, v: Option<&Value>) -> Result<Vec<ipnet::IpNet>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(ctx.err(
            "allow_from",
            "must be a list such as [\"10.0.0.0/24\", \"203.0.113.7\"]",
        ));
    };
    items
        .iter()
        .map(|i| {
            let s = i.as_str().ok_or_else(|| ctx.err("allow_from", format!("{i} is not a string")))?;
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ctx.err("allow_from", format!("\"{s}\" is not a network (CIDR such as \"10.0.0.0/24\") nor an address")))
        })
        .collect()
}

pub(super) fn parse_bind(ctx: &Ctx, t: &Table, key: &str, example: &str) -> Result<SocketAddr> {
    let s = require_str(ctx, t, key, example)?;
    s.parse().map_err(|_| {
        ctx.err(
            key,
            format!("\"{s}\" is not an address to bind: write ip:port, for example \"{example}\""),
        )
    })
}

pub(super) fn advertise(ctx: &Ctx, t: &Table, key: &str, bind: SocketAddr) -> Result<String> {
    match get_str(ctx, t, key)? {
        None => Ok(bind.to_string()),
        Some(s) => {
            check_host_port(ctx, key, s)?;
            Ok(s.to_string())
        }
    }
}
