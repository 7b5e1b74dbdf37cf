//! The operator's guide as written: `docs/walkthrough.sh` runs the guide's commands in order
//! (the example under `spare up`, then a fresh copy of it one process per node, whose primary
//! is killed and a spare promoted) against a copy of the example configuration on free ports,
//! in a temporary directory. Then every command of the guide's pages must be in its
//! transcript, and every output a page shows must be what the command printed there.

mod common;
#[path = "walkthrough/guide.rs"]
mod guide;

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
    let mut http = std::collections::HashMap::new();
    for port in [
        "7301", "7302", "7303", "7304", "7401", "7402", "7403", "7404",
    ] {
        let free = format!("127.0.0.1:{}", common::free_port());
        config = config.replace(&format!("127.0.0.1:{port}\""), &format!("{free}\""));
        http.insert(port, free);
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
        .env("MAIN_HTTP", &http["7301"])
        .env("LAN1_HTTP", &http["7302"])
        .env("WATCH_HTTP", &http["7304"])
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
    let transcript = std::fs::read_to_string(dir.path().join("transcript.txt")).unwrap();
    let problems = guide::check(&guide::pages(), &guide::runs(&transcript));
    assert!(
        problems.is_empty(),
        "the guide and the walkthrough differ:\n{}",
        problems.join("\n")
    );
}

/// The guide against a transcript of a walkthrough run by hand (see docs/walkthrough.sh):
/// `SPARE_TRANSCRIPT=transcript.txt cargo test --test walkthrough -- --ignored`, to edit the
/// pages without running the whole walkthrough each time.
#[test]
#[ignore = "needs SPARE_TRANSCRIPT, a transcript of a walkthrough run by hand"]
fn the_guide_matches_a_transcript_made_by_hand() {
    let path = std::env::var("SPARE_TRANSCRIPT").expect("SPARE_TRANSCRIPT=FILE");
    let transcript = std::fs::read_to_string(&path).unwrap();
    let problems = guide::check(&guide::pages(), &guide::runs(&transcript));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
