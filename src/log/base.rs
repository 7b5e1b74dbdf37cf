//! `log/base`: the position just before the oldest retained segment. Absent for a log that
//! starts at LSN 1. Written (atomically) before old segments are deleted, and by a spare
//! that installs a snapshot, so the chain can be checked from the first retained record.

use std::path::Path;

use crate::error::Result;
use crate::log::position::Position;

const BASE_FILE: &str = "base";

pub fn load(dir: &Path) -> Result<Option<Position>> {
    crate::durable::read_json(&dir.join(BASE_FILE))
}

pub fn save(dir: &Path, base: &Position) -> Result<()> {
    crate::durable::write_json(&dir.join(BASE_FILE), base)
}
