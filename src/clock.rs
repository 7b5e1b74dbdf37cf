//! Clocks. Wall time (`wall_ms`) dates records and events; the boot clock (`boot_ms`)
//! measures leases and grants.
//!
//! Why the boot clock: a lease is a promise about elapsed time. `CLOCK_MONOTONIC` stops while
//! the host is suspended (a laptop lid, a VM paused by its hypervisor), so a primary waking
//! from a suspension longer than its lease would still count its lease as running while a
//! new primary takes writes. `CLOCK_BOOTTIME` is monotonic too and counts suspended time.
//! (A process stopped by SIGSTOP is not suspended: both clocks run.)

/// Milliseconds of the boot clock (`CLOCK_BOOTTIME`): monotonic, counting suspended time;
/// only differences between two readings on one host mean anything.
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_BOOTTIME exists on every
    // Linux this runs on (2.6.39+).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_BOOTTIME is readable");
    ts.tv_sec as u64 * 1_000 + ts.tv_nsec as u64 / 1_000_000
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// CPU seconds (user + system, all threads) of process `pid`, from `/proc/<pid>/stat`
/// (Linux; None elsewhere or once the process is gone).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its ')'):
    // utime and stime are the 14th and 15th fields, the 12th and 13th after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_boot_clock_never_goes_back() {
        let a = super::boot_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(super::boot_ms() >= a + 5);
    }
}
