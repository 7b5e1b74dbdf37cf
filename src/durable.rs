//! Small files replaced atomically (`node.state`, `log/base`, seed progress): written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, so a crash
//! leaves either the old content or the new, never a mix. And files created once, never
//! overwritten (keys, certificates, the cluster secret), private to their owner when secret.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Replaces `path` with `value` as JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(Error::io(format!("write {}", path.display())))?;
    sync_dir(path.parent().expect("a file has a parent directory"))
}

/// Reads `path` as JSON; None if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::InvalidData(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()))(e)),
    }
}

/// Creates `path` with `bytes`, readable by its owner only when `secret` (0600, else 0644);
/// an existing file is never overwritten.
pub fn create_new(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| {
            Error::InvalidInput(format!(
                "cannot create {}: {e} (an existing file is never overwritten: move it away first)",
                path.display()
            ))
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("write {}", path.display())))
}

/// Whether users other than the owner may read `path` (a secret should not be).
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

/// fsyncs a directory so that a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // The parent of a bare file name ("shop-backup.sqlite") is "": the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("sync directory {}", dir.display())))
}

/// A data directory's lock file: a node holds it while it runs, `spare restore` while it
/// fills the directory.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the exclusive `flock` of `dir`'s [`LOCK_FILE`] (created if missing), held while the
/// returned file is open; None when another process holds it.
pub fn try_lock_dir(dir: &Path) -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    // SAFETY: flock(2) on a descriptor we own, with valid flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((rc == 0).then_some(file))
}
