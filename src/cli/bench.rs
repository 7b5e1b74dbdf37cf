//! `spare bench`: a bounded load generator against a running cluster (`bench_load`), or
//! throw-away local clusters measured by `--suite` and `--failover`. Prints one JSON
//! document.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use spare::config::ClusterConfig;

use crate::cli::bench_load::measure_on;
pub use crate::cli::bench_load::BenchArgs;

/// Longest run accepted, so a mistyped duration cannot load a production primary for hours.
const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most clients accepted.
const MAX_CLIENTS: usize = 256;

pub fn run(config_path: &Path, args: &BenchArgs) -> Result<()> {
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be between 1 and {MAX_CLIENTS}");
    }
    if args.duration > MAX_DURATION {
        bail!(
            "--duration must be at most {}",
            humantime::format_duration(MAX_DURATION)
        );
    }
    let out = if args.failover {
        crate::cli::bench_failover::run(args)?
    } else if args.suite {
        crate::cli::bench_suite::run(args)?
    } else {
        let config = ClusterConfig::load(config_path)?;
        // The primary as it is now (it moves with promotions); every other data node is a spare.
        let primary = spare::client::Client::from_config(&config).primary_http()?;
        let spares: Vec<String> = config
            .nodes
            .iter()
            .filter(|n| n.role != spare::config::Role::Monitor && n.http_advertise != primary)
            .map(|s| s.name.clone())
            .collect();
        // Clients know every data node: a promotion during the run moves them along.
        let mut nodes = vec![primary.clone()];
        nodes.extend(
            config
                .nodes
                .iter()
                .filter(|n| n.role != spare::config::Role::Monitor && n.http_advertise != primary)
                .map(|n| n.http_advertise.clone()),
        );
        measure_on(&primary, &nodes, &spares, args)?
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
