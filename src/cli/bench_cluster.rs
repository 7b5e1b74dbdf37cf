//! Throw-away local clusters for `spare bench --suite` and `--failover`: real `spare run`
//! processes on 127.0.0.1 in a temporary directory, killed and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use spare::client::{self, REQUEST_TIMEOUT};

/// Longest wait for a node to start or a spare to catch up.
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

/// A local cluster of child processes; killed (and its directory removed) on drop.
pub(crate) struct LocalCluster {
    pub(crate) dir: PathBuf,
    children: Vec<(String, Child)>,
    http: Vec<(String, String)>,
}

/// Ports for the throw-away nodes: below the kernel's ephemeral range, so no outgoing
/// connection takes one between the moment it is chosen and the moment the node binds it.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

fn free_addr() -> Result<String> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % span as u32) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = PORT_RANGE.start + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(format!("127.0.0.1:{port}"));
        }
    }
    bail!(
        "no free port on 127.0.0.1 between {} and {}",
        PORT_RANGE.start,
        PORT_RANGE.end
    )
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > WAIT {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

impl LocalCluster {
    pub(crate) fn start(root: &Path, name: &str, spares: usize) -> Result<Self> {
        Self::start_with(root, name, spares, false)
    }

    /// `voting`: spares vote (quorum of all data nodes), as a failover needs.
    pub(crate) fn start_with(root: &Path, name: &str, spares: usize, voting: bool) -> Result<Self> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("cluster.secret"),
            format!("{:032x}", rand::random::<u128>()),
        )?;
        let mut text =
            "[cluster]\nname = \"bench\"\nsecret_file = \"cluster.secret\"\n".to_string();
        let names: Vec<String> = std::iter::once("main".to_string())
            .chain((1..=spares).map(|i| format!("spare-{i}")))
            .collect();
        let mut http = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let (peer, h) = (free_addr()?, free_addr()?);
            // Spares do not vote: a stopped spare must not cost the primary its write lease
            // while the suite measures replication.
            let role = match (i, voting) {
                (0, _) => "primary\"",
                (_, true) => "spare\"",
                (_, false) => "spare\"\nvote = false",
            };
            text += &format!(
                "\n[[node]]\nname = \"{n}\"\nrole = \"{role}\npeer = \"{peer}\"\nhttp = \"{h}\"\n"
            );
            http.push((n.clone(), h));
        }
        std::fs::write(dir.join("cluster.toml"), text)?;
        let mut c = LocalCluster {
            dir,
            children: Vec::new(),
            http,
        };
        for n in names.iter().rev() {
            c.spawn(n)?;
        }
        c.wait_streaming()?;
        Ok(c)
    }

    pub(crate) fn spawn(&mut self, node: &str) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{node}.log")))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["run", "--node", node, "--config"])
            .arg(self.dir.join("cluster.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a bench node")?;
        self.children.push((node.to_string(), child));
        let http = self.http_of(node);
        wait_for(&format!("{node} to start"), || {
            client::get(&http, "/v1/status", Duration::from_secs(1)).is_ok()
        })
    }

    pub(crate) fn http_of(&self, node: &str) -> String {
        self.http
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, h)| h.clone())
            .expect("a node of this cluster")
    }

    pub(crate) fn primary(&self) -> String {
        self.http_of("main")
    }

    pub(crate) fn spares(&self) -> Vec<String> {
        self.http.iter().skip(1).map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn wait_streaming(&self) -> Result<()> {
        let primary = self.primary();
        wait_for("every spare to stream", || {
            client::status(&primary, REQUEST_TIMEOUT).is_ok_and(|s| {
                s.primary().is_some_and(|p| {
                    p.spares.iter().all(|s| {
                        s.state() == "streaming" && s.lag().is_some_and(|l| l.records == 0)
                    })
                })
            })
        })
    }

    pub(crate) fn signal(&self, node: &str, sig: i32) {
        if let Some((_, c)) = self.children.iter().find(|(n, _)| n == node) {
            // SAFETY: kill(2) on our own child's pid with a valid signal number.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Kills a node's process (SIGKILL) and waits for it.
    pub(crate) fn kill(&mut self, node: &str) {
        if let Some(at) = self.children.iter().position(|(n, _)| n == node) {
            let (_, mut child) = self.children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A node's data directory.
    pub(crate) fn data_dir(&self, node: &str) -> PathBuf {
        self.dir.join("data").join(node)
    }

    /// CPU seconds (user and system, every thread) each node's process used so far.
    pub(crate) fn cpu_seconds(&self) -> Vec<(String, f64)> {
        self.children
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    spare::clock::process_cpu_seconds(c.id()).unwrap_or(0.0),
                )
            })
            .collect()
    }

    pub(crate) fn log_bytes(&self) -> u64 {
        let dir = self.dir.join("data/main/log");
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            // SAFETY: as in `signal`; a stopped child must be continued to die cleanly.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the suite's directory even if a scenario fails.
pub(crate) struct TempRoot(pub(crate) PathBuf);
impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
