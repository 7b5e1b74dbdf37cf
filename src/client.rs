//! A small blocking HTTP client for the node API, used by the command line and monitors.
//! Errors say which node could not be reached and what to check.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::status::{NodeStatus, Unread};

/// How long a status poll or CLI call waits for a node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to a node gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTPS to the nodes (`http_tls`): the client configuration trusting the cluster CA.
static HTTPS: std::sync::RwLock<Option<std::sync::Arc<rustls::ClientConfig>>> =
    std::sync::RwLock::new(None);

/// Makes every request of this process use HTTPS, trusting `tls` (set once at start).
pub fn set_https(tls: Option<std::sync::Arc<rustls::ClientConfig>>) {
    *HTTPS.write().expect("https lock") = tls;
}

/// An agent keeps connections alive across calls: reuse one for a stream of requests.
pub fn agent(timeout: Duration) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout(timeout);
    match HTTPS.read().expect("https lock").clone() {
        Some(tls) => builder.tls_config(tls).build(),
        None => builder.build(),
    }
}

/// The API token this process sends (`api_token_file`), set once at start.
static TOKEN: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Sets the token every request of this process carries.
pub fn set_token(token: Option<String>) {
    *TOKEN.write().expect("token lock") = token;
}

fn authorized(r: ureq::Request) -> ureq::Request {
    match TOKEN.read().expect("token lock").as_deref() {
        Some(t) => r.set("Authorization", &format!("Bearer {t}")),
        None => r,
    }
}

fn url(http: &str, path: &str) -> String {
    let scheme = if HTTPS.read().expect("https lock").is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{http}{path}")
}

/// Answer of a node: HTTP status and JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

fn finish(http: &str, r: std::result::Result<ureq::Response, ureq::Error>) -> Result<Reply> {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        // Not connected: nothing was sent, so nothing of a write ran.
        Err(ureq::Error::Transport(t))
            if matches!(
                t.kind(),
                ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
            ) =>
        {
            return Err(Error::NotTaken(format!(
                "cannot reach node at {http}: {t} (is it running? check `spare status`)"
            )));
        }
        // Connected, then lost: a write may or may not have run.
        Err(ureq::Error::Transport(t)) => {
            return Err(Error::Unavailable(format!(
                "lost the connection to node at {http}: {t}; a write sent may or may not have run: check before sending it again"
            )));
        }
    };
    let status = resp.status();
    let body: Value = resp.into_json().map_err(|e| {
        Error::InvalidData(format!(
            "node at {http} answered something that is not JSON: {e}"
        ))
    })?;
    Ok(Reply { status, body })
}

pub fn get(http: &str, path: &str, timeout: Duration) -> Result<Reply> {
    finish(
        http,
        authorized(agent(timeout).get(&url(http, path))).call(),
    )
}

pub fn post(http: &str, path: &str, body: &Value, timeout: Duration) -> Result<Reply> {
    finish(
        http,
        authorized(agent(timeout).post(&url(http, path))).send_json(body.clone()),
    )
}

/// Like [`post`], on a caller's agent (keeps the connection alive).
pub fn post_with(agent: &ureq::Agent, http: &str, path: &str, body: &Value) -> Result<Reply> {
    finish(
        http,
        authorized(agent.post(&url(http, path))).send_json(body.clone()),
    )
}

/// A node's `GET /v1/status`, typed, or why it is not known ([`Unread`]): it did not
/// answer, answered with an error (it is changing role, say), or answered a document this
/// version cannot read.
pub fn status_reply(http: &str, timeout: Duration) -> std::result::Result<NodeStatus, Unread> {
    let r = get(http, "/v1/status", timeout).map_err(|e| Unread::Silent(e.to_string()))?;
    read_status(http, r)
}

/// A `/v1/status` reply from `http` as a status document, or why it is not one.
pub fn read_status(http: &str, r: Reply) -> std::result::Result<NodeStatus, Unread> {
    if r.status != 200 {
        let message = r.body.get("message").and_then(|m| m.as_str()).unwrap_or("");
        return Err(Unread::Refused(format!(
            "{http} answered /v1/status with {}: {message}",
            r.status
        )));
    }
    serde_json::from_value(r.body).map_err(|e| {
        Unread::Unreadable(format!(
            "{http} answered /v1/status with a document this version cannot read: {e}"
        ))
    })
}

/// Like [`status_reply`], the reason in words.
pub fn status(http: &str, timeout: Duration) -> std::result::Result<NodeStatus, String> {
    status_reply(http, timeout).map_err(|u| u.to_string())
}

/// Like [`get`], on a caller's agent.
pub fn get_with(agent: &ureq::Agent, http: &str, path: &str) -> Result<Reply> {
    finish(http, authorized(agent.get(&url(http, path))).call())
}

/// Longest a download (a backup of a large database) may take.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Asks the node at `http` for the download `path`: returns the value of the response
/// header `header` and the body, still to be read (a node error is returned as its message).
pub fn fetch(http: &str, path: &str, header: &str) -> Result<(String, impl std::io::Read)> {
    let resp = match authorized(agent(DOWNLOAD_TIMEOUT).get(&url(http, path))).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            return Err(Error::Unavailable(format!(
                "{http}: {}",
                body["message"].as_str().unwrap_or("the node refused")
            )));
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(Error::Unavailable(format!(
                "cannot reach node at {http}: {t}"
            )))
        }
    };
    let value = resp.header(header).unwrap_or_default().to_string();
    Ok((value, resp.into_reader()))
}

/// Writes `body` into the new file `out` (never over an existing one) and syncs it.
pub fn save(mut body: impl std::io::Read, out: &std::path::Path) -> Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(Error::io(format!(
            "create {} (an existing file is never overwritten)",
            out.display()
        )))?;
    let written = std::io::copy(&mut body, &mut file)
        .and_then(|n| file.sync_all().map(|_| n))
        .map_err(Error::io(format!("write {}", out.display())))?;
    Ok(written)
}

/// How many "not the primary" answers a write follows before giving up (a promotion in
/// progress can move the primary once more while a write looks for it).
pub const MAX_REDIRECTS: usize = 3;

/// A client of the cluster that knows several nodes and finds the primary by itself: it
/// sends writes to the last primary it saw, follows "not the primary" answers (HTTP 421,
/// which name the primary), and tries the other nodes when one does not answer. No DNS
/// change is needed when the primary moves.
pub struct Client {
    nodes: Vec<String>,
    primary: std::sync::Mutex<Option<String>>,
    agent: ureq::Agent,
    /// How long a write refused before it ran is sent again (see [`Client::execute`]).
    retry_for: Duration,
}

/// How long a client keeps sending a write that every node refused before running it: a
/// switchover stops writes for well under a second, a promotion for about a lease.
pub const WRITE_RETRY_FOR: Duration = Duration::from_secs(15);
/// The pause between two rounds of such retries.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Client {
    /// A client of the nodes at these HTTP addresses (host:port), in the order to try them.
    pub fn new(nodes: impl IntoIterator<Item = String>) -> Self {
        Client {
            nodes: nodes.into_iter().collect(),
            primary: std::sync::Mutex::new(None),
            agent: agent(REQUEST_TIMEOUT),
            retry_for: WRITE_RETRY_FOR,
        }
    }

    /// Sends a write refused before it ran again for at most `d` (0: never).
    pub fn with_retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Sends `token` (the cluster's `api_token_file`) with every request of this process.
    pub fn with_token(self, token: &str) -> Self {
        set_token(Some(token.to_string()));
        self
    }

    /// A client of every data node of `config`, its primary first.
    pub fn from_config(config: &crate::config::ClusterConfig) -> Self {
        let mut nodes = vec![config.primary().http_advertise.clone()];
        nodes.extend(config.spares().map(|s| s.http_advertise.clone()));
        Client::new(nodes)
    }

    /// Runs a write (`{"sql", "params"}` or `{"batch": [...]}`) on the primary; returns its
    /// answer. SQL errors come back as `Error::Sql` / `Error::InvalidInput` with the node's
    /// message; `Error::Unavailable` when no node could be reached.
    pub fn execute(&self, body: &Value) -> Result<Value> {
        // A write refused before it ran (a switchover or promotion under way: no primary
        // takes writes for a moment) is sent again, for a bounded time; one whose fate is
        // unknown (it may have committed) is never resent.
        let started = std::time::Instant::now();
        loop {
            match self.execute_once(body) {
                Err(Error::NotTaken(why)) if started.elapsed() < self.retry_for => {
                    tracing::debug!(%why, "write refused before it ran; retrying");
                    *self.primary.lock().expect("primary lock") = None;
                    std::thread::sleep(WRITE_RETRY_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn execute_once(&self, body: &Value) -> Result<Value> {
        let mut candidates: Vec<String> = self
            .primary
            .lock()
            .expect("primary lock")
            .iter()
            .cloned()
            .collect();
        candidates.extend(self.nodes.iter().cloned());
        let mut last_error = None;
        for start in candidates {
            match self.execute_from(&start, body) {
                Ok(v) => return Ok(v),
                // Refused before it ran, or the node did not answer at all (nothing sent):
                // the next candidate may be the primary.
                Err(e @ Error::NotTaken(_)) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Unavailable("no node to send the write to".into())))
    }

    /// Sends the write to `http`, following redirects to the primary.
    fn execute_from(&self, http: &str, body: &Value) -> Result<Value> {
        let mut target = http.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let reply = post_with(&self.agent, &target, "/v1/execute", body)?;
            if reply.status == 421 {
                match reply.body["primary"]["http"].as_str() {
                    Some(next) if next != target => {
                        target = next.to_string();
                        continue;
                    }
                    _ => {
                        return Err(Error::Unavailable(format!(
                            "{target} is not the primary and names no other"
                        )))
                    }
                }
            }
            if reply.status == 200 {
                *self.primary.lock().expect("primary lock") = Some(target);
                return Ok(reply.body);
            }
            return Err(node_error(&target, &reply));
        }
        Err(Error::Unavailable(format!(
            "the primary could not be found after {MAX_REDIRECTS} redirects; check `spare status`"
        )))
    }

    /// The HTTP address of the node that is the primary now: the last one seen, else asked
    /// of each node in turn (a node that is not the primary names the one it follows).
    pub fn primary_http(&self) -> Result<String> {
        let known = self.primary.lock().expect("primary lock").clone();
        let mut tried = Vec::new();
        for http in known.iter().chain(&self.nodes) {
            let Ok(r) = get_with(&self.agent, http, "/v1/status") else {
                tried.push(format!("{http} (not answering)"));
                continue;
            };
            let target = match read_status(http, r).ok() {
                Some(NodeStatus::Primary(_)) => http.clone(),
                Some(NodeStatus::Spare(s) | NodeStatus::Fenced(s)) => s.primary.http,
                _ => continue,
            };
            if target == *http
                || get_with(&self.agent, &target, "/v1/status")
                    .ok()
                    .and_then(|r| read_status(&target, r).ok())
                    .is_some_and(|s| s.primary().is_some())
            {
                *self.primary.lock().expect("primary lock") = Some(target.clone());
                return Ok(target);
            }
            tried.push(format!("{target} (named primary, not answering as one)"));
        }
        Err(Error::Unavailable(format!(
            "no primary found (tried {}); check `spare status`, or name a node with --node",
            tried.join(", ")
        )))
    }

    /// Runs a read on `http` (a node's address).
    pub fn query(&self, http: &str, body: &Value) -> Result<Value> {
        let reply = post_with(&self.agent, http, "/v1/query", body)?;
        if reply.status == 200 {
            return Ok(reply.body);
        }
        Err(node_error(http, &reply))
    }
}

/// The node's JSON error as a library error, keeping its code's meaning.
fn node_error(http: &str, reply: &Reply) -> Error {
    let message = reply.body["message"]
        .as_str()
        .unwrap_or("no message")
        .to_string();
    match reply.body["error"].as_str() {
        Some("sql_error") => Error::Sql(message),
        Some("not_read_only") => Error::NotReadOnly,
        Some("not_allowed") => Error::NotAllowed(message),
        Some("time_limit") => Error::TimeLimit(message),
        Some("too_large") => Error::TooLarge(message),
        Some("busy") => Error::Busy(format!("{http}: {message}")),
        Some("unavailable") if reply.body["retry_safe"] == true => {
            Error::NotTaken(format!("{http}: {message}"))
        }
        Some("unavailable") => Error::Unavailable(format!("{http}: {message}")),
        _ if reply.status >= 500 => Error::Unavailable(format!("{http}: {message}")),
        _ => Error::InvalidInput(message),
    }
}
