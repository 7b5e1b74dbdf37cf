//! The end-to-end test harness: a cluster of real `spare` processes on loopback, each test
//! with its own temporary directory and free ports. Every process is killed when the
//! [`Cluster`] is dropped, pass or fail.

#![allow(dead_code)]

pub mod api;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spare::client;

/// Longest a test waits for a condition (a node to start, a spare to catch up).
pub const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// Ports handed to nodes come from below the kernel's ephemeral range (32768 and up), so
/// that no outgoing connection can take a port between the moment it is chosen and the
/// moment the node binds it; a counter keeps tests of one binary from sharing one. Test
/// binaries run one at a time.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    // Start where the previous binary probably did not (its ports may linger in TIME_WAIT).
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % span as u32) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = PORT_RANGE.start + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `spare` binary: this build's, or `SPARE_BIN` (a long run from a copy, so that
/// rebuilding meanwhile does not swap the binary under it).
pub fn bin() -> String {
    std::env::var("SPARE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_spare").to_string())
}

/// Waits until `cond` holds, or panics naming `what` after [`TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub role: &'static str,
    pub http: String,
    pub peer: String,
}

/// Kills a process started outside a [`Cluster`] when the test ends, pass or fail.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub nodes: Vec<NodeSpec>,
    procs: BTreeMap<String, Child>,
    /// Extra lines for `[cluster]`, and per node.
    cluster_extra: Vec<String>,
    node_extra: BTreeMap<String, Vec<String>>,
    /// Nodes taken out of the configuration (still reachable by name in tests).
    removed: Vec<NodeSpec>,
    /// With [`Cluster::mesh`]: the fault proxy of every directed link (from, to), peer and
    /// HTTP; each node then reads its own configuration file, naming those proxies.
    pub links: BTreeMap<(String, String), Link>,
    /// Environment variables a node is started with (beyond the harness's own).
    node_env: BTreeMap<String, Vec<(String, String)>>,
}

/// The proxies of one directed link: the connections `from` opens to `to`.
pub struct Link {
    pub peer: proxy::Proxy,
    pub http: proxy::Proxy,
}

impl Cluster {
    /// A primary `main`, spares `lan-1`.. and optionally monitor `watch-1`, not started.
    pub fn new(spares: usize, monitor: bool) -> Self {
        let mut nodes = vec![spec("main", "primary")];
        for i in 1..=spares {
            nodes.push(spec(&format!("lan-{i}"), "spare"));
        }
        if monitor {
            nodes.push(spec("watch-1", "monitor"));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        write_secret(&dir.path().join("cluster.secret"), SECRET);
        let config = dir.path().join("cluster.toml");
        let c = Cluster {
            dir,
            config,
            nodes,
            procs: BTreeMap::new(),
            cluster_extra: Vec::new(),
            node_extra: BTreeMap::new(),
            removed: Vec::new(),
            links: BTreeMap::new(),
            node_env: BTreeMap::new(),
        };
        c.write_config();
        c
    }

    /// Routes every node's connections to every other node (peer and HTTP) through a fault
    /// proxy of its own, one per directed link, so asymmetric partitions can be built. Call
    /// again after adding nodes. Clients of the test (and the CLI) still talk to each node
    /// directly.
    pub fn mesh(&mut self) {
        let names: Vec<NodeSpec> = self.nodes.clone();
        for from in &names {
            for to in names.iter().filter(|t| t.name != from.name) {
                let key = (from.name.clone(), to.name.clone());
                self.links.entry(key).or_insert_with(|| Link {
                    peer: proxy::Proxy::start_quiet(&to.peer),
                    http: proxy::Proxy::start_quiet(&to.http),
                });
            }
        }
        self.write_config();
    }

    /// Cuts (or, with `pass`, restores) the connections `from` opens to `to`.
    pub fn set_link(&self, from: &str, to: &str, pass: bool) {
        let link = &self.links[&(from.to_string(), to.to_string())];
        for p in [&link.peer, &link.http] {
            if pass {
                p.pass()
            } else {
                p.cut()
            }
        }
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                self.set_link(x, y, false);
                self.set_link(y, x, false);
            }
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.peer.pass();
            link.http.pass();
        }
    }

    /// The configuration file `name` runs with: its own with [`Cluster::mesh`].
    pub fn config_of(&self, name: &str) -> PathBuf {
        if self.links.keys().any(|(from, _)| from == name) {
            self.dir.path().join(format!("node-{name}.toml"))
        } else {
            self.config.clone()
        }
    }

    /// Rewrites the configuration file from the nodes and the extra lines.
    pub fn write_config(&self) {
        std::fs::write(&self.config, self.config_with(&self.node_extra)).unwrap();
        let froms: std::collections::BTreeSet<&String> =
            self.links.keys().map(|(from, _)| from).collect();
        for from in froms {
            let mut extra = self.node_extra.clone();
            for ((f, to), link) in &self.links {
                if f == from {
                    let lines = extra.entry(to.clone()).or_default();
                    lines.push(format!("peer_advertise = \"{}\"", link.peer.addr));
                    lines.push(format!("http_advertise = \"{}\"", link.http.addr));
                }
            }
            std::fs::write(self.config_of(from), self.config_with(&extra)).unwrap();
        }
    }

    fn config_with(&self, node_extra: &BTreeMap<String, Vec<String>>) -> String {
        let mut text = config_text("test", &self.nodes);
        // An extra line setting a key the defaults set replaces the default.
        for line in &self.cluster_extra {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if let Some(default) = text.lines().find(|l| l.starts_with(&format!("{key} = "))) {
                    text = text.replacen(&format!("{default}\n"), "", 1);
                }
            }
        }
        let extra = self.cluster_extra.join("\n");
        text = text.replacen("[cluster]\n", &format!("[cluster]\n{extra}\n"), 1);
        for (node, lines) in node_extra {
            let anchor = format!("name = \"{node}\"\n");
            text = text.replacen(&anchor, &format!("{anchor}{}\n", lines.join("\n")), 1);
        }
        text
    }

    /// Adds a line to `[cluster]` (e.g. `retention_bytes = "256KiB"`).
    pub fn cluster_option(&mut self, line: &str) {
        self.cluster_extra.push(line.to_string());
        self.write_config();
    }

    /// Adds a line to a node's table (e.g. `window = "1MiB"`).
    pub fn node_option(&mut self, node: &str, line: &str) {
        self.node_extra
            .entry(node.to_string())
            .or_default()
            .push(line.to_string());
        self.write_config();
    }

    /// Starts `node` with `key=value` in its environment from its next start on (None:
    /// without it).
    pub fn node_env(&mut self, node: &str, key: &str, value: Option<&str>) {
        let vars = self.node_env.entry(node.to_string()).or_default();
        vars.retain(|(k, _)| k != key);
        if let Some(v) = value {
            vars.push((key.to_string(), v.to_string()));
        }
    }

    /// Removes every extra line of `node`'s table (back to the plain spare).
    pub fn clear_node_options(&mut self, node: &str) {
        self.node_extra.remove(node);
        self.write_config();
    }

    /// Takes `node` out of the quorums (`vote = false`): for tests whose primary must keep
    /// its write lease while that node is down, cut off or not started.
    pub fn non_voting(&mut self, node: &str) {
        self.node_option(node, "vote = false");
    }

    /// Routes the primary's link to `spare` through a fault proxy.
    pub fn proxy(&mut self, spare: &str) -> proxy::Proxy {
        let p = proxy::Proxy::start(&self.node(spare).peer);
        self.node_option(spare, &format!("peer_advertise = \"{}\"", p.addr));
        p
    }

    /// Adds a spare to the configuration (not started).
    pub fn add_spare(&mut self, name: &str) {
        self.nodes.push(spec(name, "spare"));
        self.write_config();
    }

    /// Removes a node from the configuration (its process keeps running until killed).
    pub fn remove_node(&mut self, name: &str) {
        let spec = self.node(name).clone();
        self.nodes.retain(|n| n.name != name);
        self.removed.push(spec);
        self.write_config();
    }

    /// Puts a node taken out by [`Cluster::remove_node`] back in the configuration.
    pub fn restore_node(&mut self, name: &str) {
        let spec = self.node(name).clone();
        self.removed.retain(|n| n.name != name);
        self.nodes.push(spec);
        self.write_config();
    }

    /// A running node's process id, for memory checks.
    pub fn pid(&self, name: &str) -> u32 {
        self.procs[name].id()
    }

    pub fn node(&self, name: &str) -> &NodeSpec {
        self.nodes
            .iter()
            .chain(&self.removed)
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn http(&self, name: &str) -> String {
        self.node(name).http.clone()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The node's log so far (stderr of every run of it).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(name)
    }

    /// Starts `spare run --node name` and waits until its API answers.
    pub fn start(&mut self, name: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .unwrap();
        let child = Command::new(bin())
            .args(["run", "--node", name, "--config"])
            .arg(self.config_of(name))
            .env("SPARE_LOG", "info")
            .envs(self.node_env.get(name).cloned().unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start spare");
        self.procs.insert(name.to_string(), child);
        let http = self.http(name);
        wait_until(&format!("{name} to answer on {http}"), || {
            if let Some(status) = self.procs.get_mut(name).unwrap().try_wait().unwrap() {
                panic!(
                    "{name} exited with {status} while starting:\n{}",
                    self.log(name)
                );
            }
            client::get(&http, "/v1/status", Duration::from_secs(1)).is_ok_and(|r| r.status == 200)
        });
    }

    pub fn start_all(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.start(&n);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.procs.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self, name: &str) -> bool {
        self.procs
            .get_mut(name)
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// POST /v1/execute on `node`.
    pub fn execute_on(&self, node: &str, body: Value) -> client::Reply {
        client::post(&self.http(node), "/v1/execute", &body, TIMEOUT).expect("execute request")
    }

    /// Executes on the primary and expects success; returns the commit's LSN.
    pub fn exec(&self, sql: &str, params: Value) -> u64 {
        let r = self.execute_on("main", json!({ "sql": sql, "params": params }));
        assert_eq!(r.status, 200, "{sql}: {}", r.body);
        r.body["lsn"].as_u64().expect("lsn")
    }

    /// Runs a query on `node` after it applied `min_lsn`; returns the rows.
    pub fn rows(&self, node: &str, sql: &str, min_lsn: u64) -> Vec<Value> {
        let r = client::post(
            &self.http(node),
            "/v1/query",
            &json!({ "sql": sql, "min_lsn": min_lsn }),
            TIMEOUT,
        )
        .expect("query request");
        assert_eq!(r.status, 200, "{node}: {sql}: {}", r.body);
        r.body["rows"].as_array().unwrap().clone()
    }

    pub fn status(&self, node: &str) -> Value {
        client::get(&self.http(node), "/v1/status", TIMEOUT)
            .expect("status")
            .body
    }

    /// The primary's view of `spare` (its entry in the primary's `spares`).
    pub fn spare_view(&self, spare: &str) -> Value {
        let st = self.status("main");
        st["spares"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == spare)
            .unwrap_or_else(|| panic!("main does not feed {spare}: {st}"))
            .clone()
    }

    pub fn applied(&self, node: &str) -> u64 {
        self.status(node)["applied_lsn"].as_u64().unwrap_or(0)
    }

    /// Waits until `spare` applied at least `lsn`.
    pub fn wait_applied(&self, spare: &str, lsn: u64) {
        wait_until(&format!("{spare} to apply LSN {lsn}"), || {
            client::get(&self.http(spare), "/v1/status", Duration::from_secs(2))
                .is_ok_and(|r| r.body["applied_lsn"].as_u64().unwrap_or(0) >= lsn)
        });
    }

    /// Runs `spare ARGS` (a shell command line after the binary, `| cat` allowed) under
    /// `script`, on a pseudo-terminal as an operator's shell would, in the cluster's
    /// directory; returns what the terminal showed, once it succeeded.
    pub fn cli_on_terminal(&self, args: &str) -> String {
        let out = Command::new("script")
            .args([
                "-q",
                "-e",
                "-c",
                &format!("'{}' {args}", bin()),
                "/dev/null",
            ])
            .env("SPARE_CONFIG", &self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run script (util-linux)");
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "spare {args}: {shown}");
        shown
    }

    /// Runs the CLI with this cluster's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .env("SPARE_CONFIG", &self.config)
            .output()
            .expect("run spare")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = self.log(&n.name);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of {}'s log ----", n.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn spec(name: &str, role: &'static str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        role,
        http: format!("127.0.0.1:{}", free_port()),
        peer: format!("127.0.0.1:{}", free_port()),
    }
}

/// The configuration text for `nodes`, with data under `data/<name>` beside it.
pub fn config_text(cluster: &str, nodes: &[NodeSpec]) -> String {
    let mut s = format!("[cluster]\nname = \"{cluster}\"\nsecret_file = \"cluster.secret\"\nheartbeat = \"200ms\"\nlease = \"2s\"\n");
    for n in nodes {
        s += &format!(
            "\n[[node]]\nname = \"{}\"\nrole = \"{}\"\npeer = \"{}\"\nhttp = \"{}\"\n",
            n.name, n.role, n.peer, n.http
        );
        if n.role != "monitor" {
            s += &format!("data_dir = \"data/{}\"\n", n.name);
        }
    }
    s
}

/// Every user table's rows on `node`, for comparing whole databases.
pub fn dump(c: &Cluster, node: &str, min_lsn: u64) -> Vec<(String, Vec<Value>)> {
    let tables = c.rows(node, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_spare%' ESCAPE '\\' ORDER BY name", min_lsn);
    tables
        .iter()
        .map(|t| {
            let name = t[0].as_str().unwrap().to_string();
            let rows = c.rows(
                node,
                &format!("SELECT * FROM \"{name}\" ORDER BY 1"),
                min_lsn,
            );
            (name, rows)
        })
        .collect()
}

/// Waits until every thread of process `pid` is stopped (state `T` in /proc).
pub fn wait_stopped(pid: u32) {
    wait_until(&format!("process {pid} to stop"), || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
        tasks.flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    });
}

/// Writes a secret file readable by its owner only, as an operator would.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Writers inserting `(id, 'load')` rows into `invoice` through a client that follows the
/// primary, until stopped or `max` passed; each keeps the ids acknowledged to it.
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WriteLoad {
    pub fn start(nodes: &[String], writers: u64, max: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..writers)
            .map(|w| {
                let (nodes, stop, acked) = (nodes.to_vec(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let client = client::Client::new(nodes);
                    let started = Instant::now();
                    let mut id = w * 1_000_000;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < max {
                        id += 1;
                        let body = json!({ "sql": "INSERT INTO invoice (id, customer) VALUES (?, 'load')", "params": [id] });
                        if client.execute(&body).is_ok() {
                            acked.lock().unwrap().push(id);
                        }
                    }
                })
            })
            .collect();
        WriteLoad {
            stop,
            acked,
            threads,
        }
    }

    /// Stops the writers; returns every id acknowledged.
    pub fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}
