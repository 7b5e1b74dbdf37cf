//! `log/base`: the position just before the oldest retained segment. Absent for a log that
//! starts at LSN 1. Written (atomically) before old segments are deleted, and by a spare
//! that installs a snapshot, so the chain can be checked from the first retained record.

use std::path::Path;

use crate::error::{Error, Result};
use crate::log::segment::sync_dir;
use crate::log::Position;

const BASE_FILE: &str = "base";

pub fn load(dir: &Path) -> Result<Option<Position>> {
    let p = dir.join(BASE_FILE);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidData(format!("{} is unreadable: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", p.display()))(e)),
    }
}

pub fn save(dir: &Path, base: &Position) -> Result<()> {
    let p = dir.join(BASE_FILE);
    let tmp = dir.join("base.tmp");
    let bytes = serde_json::to_vec(base).expect("a position serialises");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    };
    write().map_err(Error::io(format!("write {}", p.display())))?;
    sync_dir(dir)
}
