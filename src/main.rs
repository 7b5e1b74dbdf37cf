//! The `spare` command line. Each command is a small module under `cli/`; this file parses
//! arguments (clap), sets up logging, and turns errors into one line and a non-zero exit.

mod cli;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Spare servers for a SQLite database: one primary streams every committed transaction to
/// its spares; monitors report each spare's lag.
///
/// The configuration is read from --config FILE, else $SPARE_CONFIG, else
/// cluster-config/cluster.toml.
#[derive(Parser)]
#[command(name = "spare", version, about, long_about)]
struct Args {
    /// Cluster configuration file (TOML).
    #[arg(long, global = true, env = "SPARE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every node of the configuration in this process (evaluation, demos, tests).
    ///
    /// On a first local run it creates what is missing (the cluster secret) and says so.
    /// Stop with Ctrl-C.
    Up {
        #[command(flatten)]
        log: cli::serve::LogArgs,
    },
    /// Run one node of the configuration (production: one node per machine).
    ///
    /// Never creates missing files: it stops and names the command that creates them.
    Run {
        /// Name of the node, as in a [[node]] table of the configuration.
        #[arg(long)]
        node: String,
        #[command(flatten)]
        log: cli::serve::LogArgs,
    },
    /// Run SQL: writes go to the primary, reads to --node (or the primary).
    ///
    /// Parameters bind to ?-placeholders in order. A parameter that parses as JSON is taken
    /// as that value (42, 4.5, null, "quoted text", {"base64": "..."}); anything else is text.
    ///
    /// Examples:
    ///   spare sql "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT, total REAL)"
    ///   spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" "ACME" 120.5
    ///   spare sql --node lan-1 "SELECT * FROM invoice"
    #[command(verbatim_doc_comment)]
    Sql {
        /// Node to read from (writes always go to the primary).
        #[arg(long)]
        node: Option<String>,
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// For reads: wait until the node has applied this LSN (read your own writes on a spare).
        #[arg(long, value_name = "LSN")]
        min_lsn: Option<u64>,
        /// The SQL statement.
        sql: String,
        /// Values for the statement's ? placeholders.
        params: Vec<String>,
    },
    /// Show every node: role, epoch, state, LSNs, and each spare's lag.
    ///
    /// Exit status: 0 when all is well, 1 when problems are listed (a node not answering,
    /// a spare lagging, paused or cut off from the primary), 2 when no primary answers.
    Status {
        /// Print the cluster document as JSON (the same as GET /v1/cluster on a monitor).
        #[arg(long)]
        json: bool,
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Make the running nodes re-read the configuration: add, change or remove spares
    /// without restarting the primary.
    ///
    /// The file is checked first: an invalid file changes nothing. Each running node is
    /// asked to reload (`spare up` also starts and stops its local nodes to match); then the
    /// command shows newly added spares being seeded until they stream (unless --no-wait).
    /// SIGHUP to a `spare up` or `spare run` process does the same for that process.
    Reload {
        /// Return once the nodes reloaded, without waiting for new spares to catch up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Promote a spare to primary, confirmed by a quorum of voters (manual failover).
    ///
    /// Steps: every voter promises the next epoch to NAME; the old primary's lease is waited
    /// out (it stops acknowledging writes by itself); NAME applies all it received, logs the
    /// new epoch and serves writes; the other spares follow it. Refused while the primary
    /// still answers (use `spare switchover`, or --force), and when another reachable node
    /// holds transactions NAME lacks (the preview shows how many, their size and the newest
    /// commit time; --accept-loss N proceeds). Every attempt goes to the coordinator's audit
    /// log (GET /v1/admin/promotions).
    ///
    /// Examples:
    ///   spare promote lan-1 --dry-run
    ///   spare promote lan-1
    ///   spare promote lan-1 --accept-loss 3
    ///   spare promote office --until 1233 --accept-loss 4
    #[command(verbatim_doc_comment)]
    Promote {
        /// The spare to promote.
        name: String,
        /// Report the checks and what would be lost; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Accept losing up to N transactions that another reachable node holds.
        #[arg(long, value_name = "N", default_value_t = 0)]
        accept_loss: u64,
        /// Promote although the primary still answers (its lease is still waited out), or
        /// although spares of a synchronous commit rule do not answer (acknowledged writes
        /// only they hold are lost).
        #[arg(long)]
        force: bool,
        /// Keep the history only up to this LSN: NAME (a paused or delayed spare that has not
        /// applied past it) applies exactly up to there; the records after it go to
        /// quarantine/ on every node that holds them. Find the LSN with `spare log`.
        #[arg(long, value_name = "LSN")]
        until: Option<u64>,
        /// Print the coordinator's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Planned, zero-loss change of primary: the primary stops taking writes, NAME catches
    /// up exactly, NAME is promoted, the old primary becomes its spare.
    ///
    /// Writes sent meanwhile are refused with a retryable error (HTTP 503) and none that was
    /// acknowledged is lost. Example: spare switchover lan-1
    Switchover {
        /// The spare that becomes the primary.
        name: String,
        /// Print the coordinator's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prove every data node's database equal to the primary's, under live writes.
    ///
    /// The primary opens a read snapshot at its current LSN; each spare stops applying at
    /// exactly that LSN for the moment it takes to open its own; every user table (and the
    /// schema) is hashed row by row on each, and a table that differs is compared row by row
    /// by key. A paused or delayed spare not standing at that LSN is skipped, saying why.
    /// Exit status: 0 identical, 1 a difference found, 2 some node could not be compared.
    ///
    /// Examples:
    ///   spare verify
    ///   spare verify --json
    #[command(verbatim_doc_comment)]
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a fenced old primary a spare of the current primary.
    ///
    /// Its records that the new history lacks are moved to its quarantine/ folder (database
    /// copy and readable records.jsonl), then it is re-seeded. Waits until it streams,
    /// showing the seeding's progress. Example: spare rejoin main
    Rejoin {
        /// The fenced node.
        name: String,
        /// Return once it rejoined, without waiting for it to be seeded and stream.
        #[arg(long)]
        no_wait: bool,
    },
    /// TLS material: the cluster CA and one certificate per node (mutual TLS on peer links).
    ///
    /// Files go to the configuration's tls_dir (or --out): ca.pem, ca.key, and <node>.pem,
    /// <node>.key for every node; keys are written with mode 0600 and existing files are never
    /// overwritten. Copy ca.pem and a node's own pair to each node; keep ca.key offline.
    ///
    /// Examples:
    ///   spare certs init
    ///   spare certs add lan-2
    #[command(verbatim_doc_comment, subcommand)]
    Certs(CertsCommand),
    /// Stop a spare's apply: it keeps receiving (its copy of the log stays current) and
    /// applies nothing until `spare resume`. Survives restarts. Example: spare pause office
    Pause {
        /// The spare.
        name: String,
    },
    /// Restart a paused spare's apply (subject to its apply_delay). Example: spare resume office
    Resume {
        /// The spare.
        name: String,
    },
    /// The transactions in a node's log, to find an operator's mistake.
    ///
    /// One line per transaction: LSN, epoch, commit time, tables touched with rows inserted,
    /// updated, deleted (heartbeats are left out). Without --from, the newest 5 000 records
    /// are looked at. --show LSN prints one transaction's rows, old and new values.
    ///
    /// Examples:
    ///   spare log --since 30m --table customer
    ///   spare log --node office --from 1200 --to 1300
    ///   spare log --show 1234
    #[command(verbatim_doc_comment)]
    Log {
        /// Node whose log to read (default: the primary).
        #[arg(long)]
        node: Option<String>,
        /// First LSN.
        #[arg(long, value_name = "LSN")]
        from: Option<u64>,
        /// Last LSN.
        #[arg(long, value_name = "LSN")]
        to: Option<u64>,
        /// Committed at or after: a time (2026-11-26T18:40:00Z) or a duration ago (10m).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only transactions touching this table.
        #[arg(long, value_name = "T")]
        table: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Show one transaction's row changes.
        #[arg(long, value_name = "LSN")]
        show: Option<u64>,
    },
    /// A consistent online backup of a data node's database (writes go on), with its LSN.
    ///
    /// Writes FILE (an ordinary SQLite database) and FILE.json (its LSN, epoch, checksum).
    /// From --node (default: the primary; a spare spares the primary the work). A file that
    /// exists is never overwritten. Example: spare backup --out /backups/shop-2026-11-26.sqlite --node lan-1
    Backup {
        /// Where to write the backup.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Node to copy (default: the primary).
        #[arg(long)]
        node: Option<String>,
    },
    /// Start a node (stopped, with an empty data directory) from a backup: as a spare of the
    /// running cluster, or as the primary of a new cluster.
    ///
    /// With --archive and --until-lsn or --until-time: a point-in-time restore, rolling the
    /// backup forward through an archived log (log_archive_dir) up to that point.
    ///
    /// Examples:
    ///   spare restore --from backup.sqlite --node lan-2
    ///   spare restore --from backup.sqlite --node main --archive /archive/main --until-lsn 1233
    #[command(verbatim_doc_comment)]
    Restore {
        /// The backup file (with its .json beside it).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The node to restore (its data_dir must be empty or absent).
        #[arg(long)]
        node: String,
        /// An archived log to roll forward through.
        #[arg(long, value_name = "DIR")]
        archive: Option<PathBuf>,
        /// Roll forward up to this LSN.
        #[arg(long, value_name = "LSN")]
        until_lsn: Option<u64>,
        /// Roll forward up to the last transaction committed at or before this time.
        #[arg(long, value_name = "TIME")]
        until_time: Option<String>,
    },
    /// Load generator: N clients of single-row INSERT transactions for a bounded time against
    /// a running cluster; prints commits/s, commit latency and per-spare lag as JSON.
    Bench(cli::bench::BenchArgs),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the cluster CA and a certificate for every node of the configuration.
    Init {
        /// Directory to write to (default: tls_dir of the configuration).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Issue the certificate of one node (added later), signed by ca.key.
    Add {
        /// The node's name.
        name: String,
        /// Directory holding ca.key, where the files go (default: tls_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Replace a node's certificate and key with new ones signed by ca.key (an expiring or
    /// compromised certificate). Copy both files to the node's tls_dir, then `spare reload`:
    /// new connections use them, open ones go on, no write fails.
    ///
    /// Example: spare certs renew spare-1
    Renew {
        /// The node's name.
        name: String,
        /// Directory holding ca.key and the node's files (default: tls_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() {
    let args = Args::parse();
    if !matches!(args.command, Command::Up { .. } | Command::Run { .. }) {
        // A command printing into a pipe closed early (`spare status --json | head`) ends
        // quietly, as other Unix tools do, instead of panicking on the write. The nodes keep
        // Rust's default (ignored: a write to a closed socket is an error to handle).
        // SAFETY: setting a signal's disposition to its default, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let config = spare::config::ClusterConfig::locate(args.config.as_deref());
    set_up_client(&config, &args.command);
    if let Err(e) = run(&config, args.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Every HTTP call of this process (command line or node) carries the API token, if any,
/// and uses HTTPS when the configuration asks for it; an unreadable token or TLS directory
/// ends the process with status 1.
fn set_up_client(config: &Path, command: &Command) {
    // (`spare up` creates missing TLS material first, then does the same itself.)
    let creates_tls = matches!(command, Command::Up { .. } | Command::Certs(_));
    if let Some(c) = spare::config::ClusterConfig::load(config)
        .ok()
        .filter(|_| !creates_tls)
    {
        let https = match (&c.cluster.tls_dir, c.cluster.http_tls) {
            (Some(dir), true) => spare::net::tls::https_client(dir).map(Some),
            _ => Ok(None),
        };
        match (c.read_api_token(), https) {
            (Ok(token), Ok(https)) => {
                spare::client::set_token(token);
                spare::client::set_https(https);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Runs the command; `main` prints its error as one line and exits with status 1.
fn run(config: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up { log } => cli::serve::up(config, &log),
        Command::Run { node, log } => cli::serve::run(config, &node, &log),
        Command::Sql {
            node,
            json,
            min_lsn,
            sql,
            params,
        } => cli::sql::run(config, node.as_deref(), json, min_lsn, &sql, &params),
        Command::Status { json, watch } => cli::status::run(config, json, watch),
        Command::Reload { no_wait } => cli::reload::run(config, no_wait),
        Command::Bench(b) => cli::bench::run(config, &b),
        c @ Command::Promote { .. }
        | c @ Command::Switchover { .. }
        | c @ Command::Rejoin { .. } => run_failover(config, c),
        Command::Verify { json } => cli::verify::run(config, json),
        c @ Command::Backup { .. }
        | c @ Command::Restore { .. }
        | c @ Command::Pause { .. }
        | c @ Command::Resume { .. }
        | c @ Command::Log { .. } => run_data(config, c),
        Command::Certs(CertsCommand::Init { out }) => cli::certs::init(config, out.as_deref()),
        Command::Certs(CertsCommand::Renew { name, out }) => {
            cli::certs::renew(config, &name, out.as_deref())
        }
        Command::Certs(CertsCommand::Add { name, out }) => {
            cli::certs::add(config, &name, out.as_deref())
        }
    }
}

/// The commands that change which node is the primary (`cli::promote`).
fn run_failover(config: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Promote {
            name,
            dry_run,
            accept_loss,
            force,
            until,
            json,
        } => cli::promote::promote(
            config,
            &cli::promote::PromoteArgs {
                candidate: &name,
                dry_run,
                accept_loss,
                force,
                until,
                json,
            },
        ),
        Command::Switchover { name, json } => cli::promote::switchover(config, &name, json),
        Command::Rejoin { name, no_wait } => cli::promote::rejoin(config, &name, no_wait),
        _ => unreachable!("run sends only promote, switchover and rejoin here"),
    }
}

/// The commands that copy, hold back or inspect a node's data (`cli::backup`, `cli::inspect`).
fn run_data(config: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Backup { out, node } => cli::backup::backup(config, &out, node.as_deref()),
        Command::Restore {
            from,
            node,
            archive,
            until_lsn,
            until_time,
        } => cli::backup::restore(
            config,
            &cli::backup::RestoreArgs {
                from: &from,
                node: &node,
                archive: archive.as_deref(),
                until_lsn,
                until_time: until_time.as_deref(),
            },
        ),
        Command::Pause { name } => cli::inspect::pause(config, &name, true),
        Command::Resume { name } => cli::inspect::pause(config, &name, false),
        Command::Log {
            node,
            from,
            to,
            since,
            table,
            json,
            show,
        } => cli::inspect::log(
            config,
            &cli::inspect::LogArgs {
                node: node.as_deref(),
                from,
                to,
                since: since.as_deref(),
                table: table.as_deref(),
                json,
                show,
            },
        ),
        _ => unreachable!("run sends only backup, restore, pause, resume and log here"),
    }
}
