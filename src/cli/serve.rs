//! `spare up` and `spare run`: start nodes inside one actix system under a supervisor, and
//! wait for a signal (SIGINT/SIGTERM stop; SIGHUP reloads the configuration).

use std::path::Path;
use std::sync::Arc;

use actix::Actor;
use anyhow::{Context, Result};
use base64::Engine;
use spare::actors::messages::Reload;
use spare::actors::node::supervisor::{Mode, StartNodes, SupervisorActor};
use spare::config::{ClusterConfig, ConfigCell, Role};

/// How a node logs (`spare up`, `spare run`): to stderr, which journald keeps under systemd.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// What to log: a level (error, warn, info, debug, trace) or tracing directives such
    /// as "info,spare::actors::spare=debug". Default: $SPARE_LOG, else $RUST_LOG, else info.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Format of the log lines: text, or json (one object per line, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The log filter: `--log-level`, else `$SPARE_LOG`, else `$RUST_LOG`, else info; one that
/// does not parse is refused, naming where it came from.
fn log_filter(args: &LogArgs) -> Result<tracing_subscriber::EnvFilter> {
    let set = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let (source, text) = if let Some(l) = &args.log_level {
        ("--log-level", l.clone())
    } else if let Some(l) = set("SPARE_LOG") {
        ("$SPARE_LOG", l)
    } else if let Some(l) = set("RUST_LOG") {
        ("$RUST_LOG", l)
    } else {
        ("the default", "info".to_string())
    };
    let refused = || {
        anyhow::anyhow!("{source} {text:?} is not a log filter: give a level (error, warn, info, debug, trace, off) or directives such as \"info,spare=debug\"")
    };
    // tracing reads a bare word that is not a level as a target to trace ("warning" would
    // silence everything else): only levels, TARGET=LEVEL and module paths are taken.
    let directives: Vec<&str> = text.split(',').map(str::trim).collect();
    let bare_word = |d: &&str| {
        !d.contains(['=', '[', ':']) && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
    };
    if directives.iter().all(|d| d.is_empty())
        || directives.iter().filter(|d| !d.is_empty()).any(bare_word)
    {
        return Err(refused());
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|_| refused())
}

/// The levels a log filter may name alone.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

fn init_logging(args: &LogArgs) -> Result<()> {
    use std::io::IsTerminal;
    let filter = log_filter(args)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}

/// Creates the cluster secret if the file is missing (first local run of `spare up`).
fn ensure_secret(config_path: &Path) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let path = &config.cluster.secret_file;
    if path.exists() {
        return Ok(());
    }
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    spare::durable::create_new(path, format!("{secret}\n").as_bytes(), true)
        .with_context(|| format!("creating the cluster secret {}", path.display()))?;
    eprintln!(
        "created the cluster secret {} (every node of this cluster must use the same file)",
        path.display()
    );
    Ok(())
}

pub fn up(config_path: &Path, log: &LogArgs) -> Result<()> {
    ensure_secret(config_path)?;
    let config = ClusterConfig::load(config_path)?;
    config.read_secret()?;
    crate::cli::certs::ensure(&config)?;
    spare::client::set_token(config.read_api_token()?);
    if let (Some(dir), true) = (&config.cluster.tls_dir, config.cluster.http_tls) {
        spare::client::set_https(Some(spare::net::tls::https_client(dir)?));
    }
    init_logging(log)?;
    serve(config, Mode::All)
}

pub fn run(config_path: &Path, node: &str, log: &LogArgs) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    config.node(node)?;
    // Every node, monitors included, authenticates to its peers with the cluster secret.
    config.read_secret()?;
    init_logging(log)?;
    serve(config, Mode::One(node.to_string()))
}

fn serve(config: ClusterConfig, mode: Mode) -> Result<()> {
    let tour = matches!(mode, Mode::All);
    let cell = Arc::new(ConfigCell::new(config));
    let system = actix_rt::System::new();
    system.block_on(async move {
        // Before the nodes start (recovering a large log can take a while): a SIGHUP or
        // SIGTERM meanwhile waits for them instead of killing the process.
        let signals = Signals::install();
        let supervisor = SupervisorActor::new(cell.clone(), mode).start();
        let names = supervisor
            .send(StartNodes)
            .await
            .context("starting the supervisor")??;
        print_summary(&cell.get(), &names, tour);
        wait_for_signals(&supervisor, signals).await;
        tracing::info!("stopping");
        Ok::<(), anyhow::Error>(())
    })
}

fn print_summary(config: &ClusterConfig, running: &[String], tour: bool) {
    println!(
        "spare: cluster \"{}\" from {}",
        config.cluster.name,
        config.path.display()
    );
    for name in running {
        let c = config.node(name).expect("started nodes are configured");
        println!(
            "  {:<10} {:<8} http://{}  (peer {})",
            c.name,
            c.role.as_str(),
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
        if let Some(m) = config.nodes.iter().find(|n| n.role == Role::Monitor) {
            println!("dashboard: http://{}/", m.http_advertise);
        }
    }
    println!(
        "stop with Ctrl-C; after editing the configuration: spare reload (or kill -HUP {})",
        std::process::id()
    );
}

/// The signals a node answers: SIGTERM stops it, SIGHUP reloads the configuration.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("install SIGTERM handler"),
            hup: signal(SignalKind::hangup()).expect("install SIGHUP handler"),
        }
    }
}

/// Returns on SIGINT or SIGTERM; reloads on SIGHUP.
async fn wait_for_signals(supervisor: &actix::Addr<SupervisorActor>, signals: Signals) {
    let Signals { mut term, mut hup } = signals;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                // The supervisor logs the outcome either way.
                let _ = supervisor.send(Reload).await;
            }
        }
    }
}
