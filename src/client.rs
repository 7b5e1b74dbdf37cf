//! A small blocking HTTP client for the node API, used by the command line and monitors.
//! Errors say which node could not be reached and what to check.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// How long a status poll or CLI call waits for a node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to a node gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An agent keeps connections alive across calls: reuse one for a stream of requests.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout(timeout)
        .build()
}

fn url(http: &str, path: &str) -> String {
    format!("http://{http}{path}")
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
        Err(ureq::Error::Transport(t)) => {
            return Err(Error::Unavailable(format!(
                "cannot reach node at {http}: {t} (is it running? check `spare status`)"
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
    finish(http, agent(timeout).get(&url(http, path)).call())
}

pub fn post(http: &str, path: &str, body: &Value, timeout: Duration) -> Result<Reply> {
    finish(
        http,
        agent(timeout)
            .post(&url(http, path))
            .send_json(body.clone()),
    )
}

/// Like [`post`], on a caller's agent (keeps the connection alive).
pub fn post_with(agent: &ureq::Agent, http: &str, path: &str, body: &Value) -> Result<Reply> {
    finish(http, agent.post(&url(http, path)).send_json(body.clone()))
}

/// Like [`get`], on a caller's agent.
pub fn get_with(agent: &ureq::Agent, http: &str, path: &str) -> Result<Reply> {
    finish(http, agent.get(&url(http, path)).call())
}
