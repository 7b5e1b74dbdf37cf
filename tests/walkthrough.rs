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
    // The two spares the walkthrough adds get 7305 and 7306, as docs/walkthrough.sh says.
    let mut config = example.replace("\"../data/", "\"data/");
    let mut ports = Vec::new();
    for port in [
        "7301", "7302", "7303", "7304", "7305", "7306", "7401", "7402", "7403", "7404", "7405",
        "7406",
    ] {
        let free = format!("127.0.0.1:{}", common::free_port());
        config = config.replace(&format!("127.0.0.1:{port}\""), &format!("{free}\""));
        ports.push((format!("127.0.0.1:{port}"), free));
    }
    let free = |port: &str| {
        ports
            .iter()
            .find(|(p, _)| p.ends_with(port))
            .unwrap()
            .1
            .clone()
    };
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/walkthrough.sh");
    let work = dir.path().join("work");
    // One file for both streams, in the order they were written.
    let log = std::fs::File::create(dir.path().join("walkthrough.log")).unwrap();
    let mut child = Command::new("bash")
        .arg(script)
        .current_dir(dir.path())
        .env("SPARE", common::bin())
        .env("SPARE_CONFIG", &path)
        .env("WORK", &work)
        .env("MAIN_HTTP", free("7301"))
        .env("LAN1_HTTP", free("7302"))
        .env("WATCH_HTTP", free("7304"))
        .env("LAN2_HTTP", free("7305"))
        .env("LAN3_HTTP", free("7306"))
        .env("LAN2_PEER", free("7405"))
        .env("LAN3_PEER", free("7406"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
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
    let said = std::fs::read_to_string(dir.path().join("walkthrough.log")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()) && said.contains("every step passed"),
        "{status:?}\n{said}\n{}",
        node_logs(&work)
    );
    // The transcript with the example's ports, as the pages write them.
    let transcript = std::fs::read_to_string(work.join("transcript.txt")).unwrap();
    let transcript = ports
        .iter()
        .fold(transcript, |t, (example, free)| t.replace(free, example));
    let problems = guide::check(&guide::pages(), &guide::runs(&transcript));
    assert!(
        problems.is_empty(),
        "the guide and the walkthrough differ:\n{}",
        problems.join("\n")
    );
}

/// The last lines of every node's log the walkthrough kept (`spare up`'s, and part B's).
fn node_logs(work: &std::path::Path) -> String {
    let logs = [
        "up.log",
        "fresh/main.log",
        "fresh/lan-1.log",
        "fresh/office.log",
        "fresh/watch-1.log",
    ];
    logs.iter()
        .filter_map(|name| {
            let text = std::fs::read_to_string(work.join(name)).ok()?;
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Some(format!(
                "---- {name} (last lines) ----\n{}",
                tail.join("\n")
            ))
        })
        .collect::<Vec<_>>()
        .join("\n")
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
