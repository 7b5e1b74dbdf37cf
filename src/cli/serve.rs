//! `spare up` and `spare run`: start nodes inside one actix system and wait for a signal.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use spare::actors::node::{self, RunningNode};
use spare::config::{ClusterConfig, Role};

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SPARE_LOG").unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Creates the cluster secret if the file is missing (first local run of `spare up`).
fn ensure_secret(config_path: &Path) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let path = &config.cluster.secret_file;
    if path.exists() {
        return Ok(());
    }
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    std::fs::write(path, format!("{secret}\n"))
        .with_context(|| format!("creating the cluster secret {}", path.display()))?;
    eprintln!(
        "created the cluster secret {} (every node of this cluster must use the same file)",
        path.display()
    );
    Ok(())
}

pub fn up(config_path: &Path) -> Result<()> {
    ensure_secret(config_path)?;
    let config = Arc::new(ClusterConfig::load(config_path)?);
    config.read_secret()?;
    init_logging();
    let mut order: Vec<&str> = config
        .nodes
        .iter()
        .filter(|n| n.role == Role::Spare)
        .map(|n| n.name.as_str())
        .collect();
    order.push(config.primary().name.as_str());
    order.extend(
        config
            .nodes
            .iter()
            .filter(|n| n.role == Role::Monitor)
            .map(|n| n.name.as_str()),
    );
    let names: Vec<String> = order.iter().map(|s| s.to_string()).collect();
    serve(config, names, true)
}

pub fn run(config_path: &Path, node: &str) -> Result<()> {
    let config = Arc::new(ClusterConfig::load(config_path)?);
    config.node(node)?;
    if config.node(node)?.role != Role::Monitor {
        config.read_secret()?;
    }
    init_logging();
    serve(config, vec![node.to_string()], false)
}

fn serve(config: Arc<ClusterConfig>, names: Vec<String>, tour: bool) -> Result<()> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let mut running = Vec::new();
        for name in &names {
            running.push(
                node::start(config.clone(), name)
                    .await
                    .with_context(|| format!("starting node {name}"))?,
            );
        }
        print_summary(&config, &running, tour);
        wait_for_signal().await;
        tracing::info!("stopping");
        for n in &running {
            n.http.stop(false).await;
        }
        Ok::<(), anyhow::Error>(())
    })
}

fn print_summary(config: &ClusterConfig, running: &[RunningNode], tour: bool) {
    println!(
        "spare: cluster \"{}\" from {}",
        config.cluster.name,
        config.path.display()
    );
    for n in running {
        let c = config.node(&n.name).expect("started nodes are configured");
        println!(
            "  {:<10} {:<8} http://{}  (peer {})",
            n.name,
            n.role.as_str(),
            c.http_advertise,
            c.peer_advertise
        );
    }
    if tour {
        println!("try, in another terminal:");
        println!("  spare sql \"CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total REAL)\"");
        println!("  spare sql \"INSERT INTO invoice (customer, total) VALUES (?, ?)\" ACME 120.5");
        println!("  spare sql --node lan-1 \"SELECT * FROM invoice\"");
        println!("  spare status");
    }
    println!("stop with Ctrl-C");
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
