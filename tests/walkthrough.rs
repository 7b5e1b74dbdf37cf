//! The operator's path as the guide writes it: `docs/walkthrough.sh` runs the guide's
//! commands in order (short tour, backup to a bare file name, a TLS spare added by reload,
//! the operator's-mistake walkthrough back to the normal layout, `spare verify`) against a
//! copy of the example configuration on free ports, in a temporary directory.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the whole walkthrough may take (a promotion waits out a 4 s lease, a switchover,
/// seeds): it is killed past this.
const WALKTHROUGH_TIMEOUT: Duration = Duration::from_secs(300);

/// Kills the walkthrough's whole process group (bash and the `spare up` it started).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cluster-config/cluster.toml"
    ))
    .unwrap();
    // The example's fixed ports become free ones; its data goes into the temporary folder.
    let mut config = example.replace("\"../data/", "\"data/");
    for port in [
        "7301", "7302", "7303", "7304", "7401", "7402", "7403", "7404",
    ] {
        let free = common::free_port().to_string();
        config = config.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:{free}\""),
        );
    }
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/walkthrough.sh");
    let log = dir.path().join("walkthrough.log");
    let mut child = Command::new("bash")
        .arg(script)
        .current_dir(dir.path())
        .env("SPARE", common::bin())
        .env("SPARE_CONFIG", &path)
        .env("LAN2_PEER", format!("127.0.0.1:{}", common::free_port()))
        .env("LAN2_HTTP", format!("127.0.0.1:{}", common::free_port()))
        .env("LAN3_PEER", format!("127.0.0.1:{}", common::free_port()))
        .env("LAN3_HTTP", format!("127.0.0.1:{}", common::free_port()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .process_group(0)
        .spawn()
        .unwrap();
    let _group = Group(child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > WALKTHROUGH_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let up = std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    let up_tail: Vec<&str> = up.lines().rev().take(30).collect();
    assert!(
        status.is_some_and(|s| s.success()) && said.contains("every step passed"),
        "{status:?}\n{said}\n---- spare up (last lines) ----\n{}",
        up_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}
