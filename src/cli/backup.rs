//! `spare backup --out FILE [--node NAME]` and `spare restore --from FILE --node NAME
//! [--archive DIR --until-lsn N | --until-time T]` (DESIGN.md §9).

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use spare::client::{self, Client};
use spare::config::ClusterConfig;
use spare::store::backup::{self, BackupInfo, Target};

use super::progress;

/// `spare backup`: a consistent online copy from any data node (default: the primary).
pub fn backup(config_path: &Path, out: &Path, node: Option<&str>) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let (name, http) = match node {
        Some(n) => (n.to_string(), config.node(n)?.http_advertise.clone()),
        None => (
            "the primary".to_string(),
            Client::from_config(&config).primary_http()?,
        ),
    };
    if out.exists() {
        bail!("{} exists: a backup never overwrites a file", out.display());
    }
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|d| !d.is_dir()) {
        bail!(
            "{} is not a directory: create it first (mkdir -p {})",
            dir.display(),
            dir.display()
        );
    }
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    eprintln!(
        "backing up {name} into {} (writes go on meanwhile)...",
        out.display()
    );
    let fetched = client::fetch(&http, "/v1/backup", "x-spare-backup")
        .map_err(|e| anyhow!("{e}"))
        .and_then(|(header, body)| {
            let info: BackupInfo =
                serde_json::from_str(&header).context("read the node's backup description")?;
            let bar = progress::bytes(info.size, "downloading");
            let saved = client::save(bar.wrap_read(body), &tmp);
            // Cleared on failure too: the error is the last thing on the screen.
            bar.finish_and_clear();
            saved?;
            if spare::store::snapshot::file_crc(&tmp)? != info.crc {
                bail!("the backup arrived damaged (checksum); nothing was kept; retry");
            }
            Ok(info)
        });
    let info = fetched.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    // The copy first, then its description: a description never names a missing file.
    std::fs::rename(&tmp, out).with_context(|| format!("rename to {}", out.display()))?;
    spare::durable::sync_dir(out.parent().unwrap_or(Path::new("")))?;
    spare::durable::write_json(&backup::info_path(out), &info).with_context(|| {
        format!(
            "{} is complete, but its description could not be written: `spare restore` needs it; free space and run the backup again",
            out.display()
        )
    })?;
    println!(
        "backup of {} at LSN {} (epoch {}, committed {}): {} ({} bytes) and {}",
        info.node,
        info.position.lsn,
        info.position.epoch,
        humantime::format_rfc3339_seconds(
            UNIX_EPOCH + Duration::from_millis(info.position.time_ms)
        ),
        out.display(),
        info.size,
        backup::info_path(out).display()
    );
    Ok(())
}

/// Options of `spare restore`.
pub struct RestoreArgs<'a> {
    pub from: &'a Path,
    pub node: &'a str,
    pub archive: Option<&'a Path>,
    pub until_lsn: Option<u64>,
    pub until_time: Option<&'a str>,
}

/// `spare restore`: the node (stopped, empty data directory) starts from the backup, then
/// rolls forward through an archived log if asked.
pub fn restore(config_path: &Path, a: &RestoreArgs) -> Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let node = config.node(a.node)?;
    if node.role == spare::config::Role::Monitor {
        bail!("{} is a monitor: it holds no database", a.node);
    }
    let target = match (a.until_lsn, a.until_time) {
        (Some(l), None) => Some(Target::Lsn(l)),
        (None, Some(t)) => {
            let t = humantime::parse_rfc3339_weak(t)
                .map_err(|e| anyhow!("--until-time {t}: {e} (write 2026-11-26T18:40:00Z)"))?;
            Some(Target::Time(
                t.duration_since(UNIX_EPOCH)?.as_millis() as u64
            ))
        }
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --until-lsn or --until-time, not both"),
    };
    if target.is_some() != a.archive.is_some() {
        bail!("a point-in-time restore needs both --archive DIR and --until-lsn / --until-time");
    }
    let info = backup::describe(a.from)?;
    if let (Some(dir), Some(target)) = (a.archive, target) {
        check_target(dir, &info, target)?;
    }
    let bar = progress::bytes(0, "restoring");
    let begun = backup::begin_restore(a.from, &node.data_dir, &bar);
    bar.finish_and_clear();
    let (restoring, info) = begun?;
    println!(
        "restored {} into {} at LSN {}",
        a.from.display(),
        node.data_dir.display(),
        info.position.lsn
    );
    if let (Some(dir), Some(target)) = (a.archive, target) {
        let bar = progress::records(0, "rolling forward");
        let rolled = restoring.roll_forward(dir, info.position, target, &bar);
        bar.finish_and_clear();
        let reached = rolled.map_err(|e| anyhow!("{e}"))?;
        println!("rolled forward through {} to LSN {reached}", dir.display());
        let end = spare::log::last_lsn_in(dir).ok().flatten();
        if matches!(target, Target::Time(_)) && Some(reached) == end {
            println!("the archive ends there: records committed later are in the primary's live log, not yet archived");
        }
    }
    restoring.finish()?;
    println!(
        "start it with `spare run --node {}`: it applies what it holds, then follows (or, as the primary of a new cluster, leads) from there",
        a.node
    );
    Ok(())
}

/// Refuses, before anything is copied, a point in time the backup and the archive cannot
/// reach: before the backup, or (by LSN) past the archive's end.
fn check_target(archive: &Path, info: &BackupInfo, target: Target) -> Result<()> {
    let at = info.position;
    match target {
        Target::Lsn(lsn) if lsn < at.lsn => bail!(
            "the backup is at LSN {}, after {lsn}: restore an older backup (nothing was restored)",
            at.lsn
        ),
        Target::Time(ms) if ms < at.time_ms => bail!(
            "the backup holds what was committed until {}, after the time asked: restore an older backup (nothing was restored)",
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at.time_ms))
        ),
        Target::Lsn(lsn) => {
            let end = spare::log::last_lsn_in(archive)?.unwrap_or(0);
            if lsn > end {
                bail!(
                    "the archive {} ends at LSN {end}, before {lsn}: nothing was restored (the newest records are in the primary's live log, not yet archived)",
                    archive.display()
                );
            }
            Ok(())
        }
        Target::Time(_) => Ok(()),
    }
}
