//! `spare certs init [--out DIR]`, `spare certs add NAME [--out DIR]` and `spare certs renew
//! NAME [--out DIR]`: the cluster CA and
//! one certificate per node (DESIGN.md §8, §10), in the configuration's `tls_dir` unless
//! `--out` says. Existing files are never overwritten, except by `renew`, which replaces a
//! node's pair by atomic renames. Keys are written with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use spare::config::ClusterConfig;
use spare::net::tls;

fn out_dir(config: &ClusterConfig, out: Option<&Path>) -> Result<PathBuf> {
    match (out, &config.cluster.tls_dir) {
        (Some(o), _) => Ok(o.to_path_buf()),
        (None, Some(d)) => Ok(d.clone()),
        (None, None) => bail!(
            "{}: no tls_dir in [cluster]: set it (e.g. tls_dir = \"tls\") or pass --out DIR",
            config.path.display()
        ),
    }
}

/// The hosts of a node's advertised addresses (for HTTPS clients to check).
fn hosts(n: &spare::config::NodeConfig) -> Vec<String> {
    let mut out: Vec<String> = [&n.http_advertise, &n.peer_advertise]
        .iter()
        .filter_map(|a| {
            a.rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        })
        .collect();
    out.dedup();
    out
}

/// Creates the CA and a certificate for every node of the configuration.
pub fn init(config_path: &Path, out: Option<&Path>) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let dir = out_dir(&config, out)?;
    let mut written = tls::init_ca(&dir, &config.cluster.name)?;
    for n in &config.nodes {
        written.extend(tls::issue(&dir, &config.cluster.name, &n.name, &hosts(n))?);
    }
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!(
        "copy ca.pem, <node>.pem and <node>.key to each node's tls_dir; keep ca.key offline (it signs new nodes: `spare certs add NAME`)"
    );
    Ok(())
}

/// Issues the certificate of a node added later (needs `ca.key`).
pub fn add(config_path: &Path, name: &str, out: Option<&Path>) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let dir = out_dir(&config, out)?;
    let hosts = config.node(name).map(hosts).unwrap_or_default();
    for p in tls::issue(&dir, &config.cluster.name, name, &hosts)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Replaces a node's certificate and key (needs `ca.key`).
pub fn renew(config_path: &Path, name: &str, out: Option<&Path>) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let dir = out_dir(&config, out)?;
    let node = config.node(name)?;
    for p in tls::renew(&dir, &config.cluster.name, name, &hosts(node))? {
        println!("wrote {}", p.display());
    }
    println!("copy {name}.pem and {name}.key to {name}'s tls_dir, then run `spare reload`: new connections use them");
    Ok(())
}

/// For `spare up` on a first local run: creates what is missing, says so.
pub fn ensure(config: &ClusterConfig) -> Result<()> {
    let Some(dir) = &config.cluster.tls_dir else {
        return Ok(());
    };
    if !dir.join("ca.key").exists() && !dir.join("ca.pem").exists() {
        tls::init_ca(dir, &config.cluster.name)?;
        println!("created the cluster CA in {}", dir.display());
    }
    for n in &config.nodes {
        if !dir.join(format!("{}.pem", n.name)).exists() {
            tls::issue(dir, &config.cluster.name, &n.name, &hosts(n))?;
            println!(
                "created the TLS certificate of {} in {}",
                n.name,
                dir.display()
            );
        }
    }
    Ok(())
}
