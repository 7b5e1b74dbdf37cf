//! Route authorization is decided on the route the router dispatches, for every spelling of
//! its path: percent-encoded letters, doubled and trailing slashes. Each route's class (read,
//! row data, admin) asks for the token as docs/http-api.md says. Requests are written byte for byte
//! on a TCP socket, so no client library normalizes the path first.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Cluster;
use spare::client;

const TOKEN: &str = "routes-token-0123456789abcdef";

/// What a route needs with `api_token_reads = false`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Class {
    Read,
    Guarded,
}

/// Every route, with its method and class, on the node that serves it.
const ROUTES: &[(&str, &str, Class, &str)] = &[
    ("POST", "/v1/execute", Class::Guarded, "main"),
    ("POST", "/v1/query", Class::Read, "main"),
    ("GET", "/v1/status", Class::Read, "main"),
    ("GET", "/v1/cluster", Class::Read, "watch-1"),
    ("POST", "/v1/admin/reload", Class::Guarded, "main"),
    ("POST", "/v1/admin/promote", Class::Guarded, "watch-1"),
    ("POST", "/v1/admin/switchover", Class::Guarded, "watch-1"),
    ("POST", "/v1/admin/rejoin", Class::Guarded, "main"),
    ("POST", "/v1/admin/writes", Class::Guarded, "main"),
    ("GET", "/v1/admin/promotions", Class::Guarded, "watch-1"),
    ("GET", "/v1/log/summary", Class::Read, "main"),
    ("GET", "/v1/log", Class::Guarded, "main"),
    ("GET", "/v1/backup", Class::Guarded, "lan-1"),
    ("GET", "/v1/log/show?lsn=2", Class::Guarded, "lan-1"),
    ("POST", "/v1/admin/pause", Class::Guarded, "lan-1"),
    ("POST", "/v1/admin/resume", Class::Guarded, "lan-1"),
    ("POST", "/v1/admin/apply-until", Class::Guarded, "lan-1"),
    ("POST", "/v1/admin/verify/open", Class::Guarded, "lan-1"),
    ("POST", "/v1/admin/verify/hold", Class::Guarded, "main"),
    ("POST", "/v1/admin/verify/release", Class::Guarded, "lan-1"),
    (
        "GET",
        "/v1/admin/verify/digest?id=x",
        Class::Guarded,
        "lan-1",
    ),
    (
        "GET",
        "/v1/admin/verify/rows?id=x&table=t",
        Class::Guarded,
        "lan-1",
    ),
    (
        "POST",
        "/v1/admin/verify/close?id=x",
        Class::Guarded,
        "lan-1",
    ),
    ("GET", "/v1/events", Class::Read, "main"),
    ("GET", "/v1/history", Class::Read, "watch-1"),
    ("GET", "/metrics", Class::Read, "main"),
];

/// Sends `method path` as written, with `{}` as body; returns the status and the body.
fn raw(http: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("{method} {path} HTTP/1.1\r\nHost: spare\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n{auth}\r\n{{}}");
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status line in {text:?}"));
    (status, text)
}

/// Spellings of `path` that a router might still dispatch to it.
fn variants(path: &str) -> Vec<String> {
    let (route, query) = path.split_once('?').map_or((path, ""), |(r, q)| (r, q));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    // The last letter of the route, percent-encoded (upper and lower hex), and every
    // letter encoded.
    let last = route.rfind(|c: char| c.is_ascii_lowercase()).unwrap();
    let byte = route.as_bytes()[last];
    let encode_one = |hex: String| format!("{}{hex}{}", &route[..last], &route[last + 1..]);
    let all: String = route
        .chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("%{:02X}", c as u8)
            } else {
                c.to_string()
            }
        })
        .collect();
    let inner = route.rfind('/').unwrap();
    [
        route.to_string(),
        encode_one(format!("%{byte:02x}")),
        encode_one(format!("%{byte:02X}")),
        all,
        format!("/{route}"),
        format!("{}/{}", &route[..inner], &route[inner..]),
        format!("{route}/"),
        format!("{}%2F{}", &route[..inner], &route[inner + 1..]),
        format!("{}/./{}", &route[..inner], &route[inner + 1..]),
        route.to_ascii_uppercase(),
    ]
    .into_iter()
    .map(|v| format!("{v}{query}"))
    .collect()
}

#[test]
fn no_spelling_of_a_guarded_route_is_served_without_the_token() {
    let mut c = Cluster::new(1, true);
    common::write_secret(&c.dir.path().join("api.token"), &format!("{TOKEN}\n"));
    c.cluster_option("api_token_file = \"api.token\"");
    client::set_token(Some(TOKEN.into()));
    c.start_all();
    let lsn = c.exec(
        "CREATE TABLE secrets (id INTEGER PRIMARY KEY, card TEXT)",
        serde_json::json!([]),
    );
    c.exec(
        "INSERT INTO secrets VALUES (1, '4111-1111-1111-1111')",
        serde_json::json!([]),
    );
    c.wait_applied("lan-1", lsn + 1);
    c.exec("DELETE FROM secrets", serde_json::json!([]));
    let mut dispatched = 0;
    for &(method, path, class, node) in ROUTES {
        let http = c.http(node);
        for variant in variants(path) {
            let (status, text) = raw(&http, method, &variant, None);
            assert!(
                !text.contains("4111"),
                "{method} {variant} leaked row data without the token: {text}"
            );
            match class {
                Class::Guarded => {
                    assert!(
                        matches!(status, 401 | 404),
                        "{method} {variant} on {node} answered {status} without the token: {text}"
                    );
                    dispatched += usize::from(status == 401);
                }
                Class::Read => assert_ne!(status, 401, "{method} {variant} is a read: {text}"),
            }
        }
        // With the token, the route itself is reached.
        let (status, text) = raw(&http, method, path, Some(TOKEN));
        assert!(
            !matches!(status, 401 | 403 | 404 | 405),
            "{method} {path} with the token: {status} {text}"
        );
    }
    // The encoded spellings did reach the routes (and their checks), not only a 404.
    assert!(
        dispatched > ROUTES.len(),
        "{dispatched} guarded spellings dispatched"
    );
    // Other methods on a guarded route are checked too (HEAD carries no body back, but must
    // not run the route); the dashboard page itself is open.
    for &(_, path, class, node) in ROUTES {
        if class == Class::Guarded {
            let (status, text) = raw(&c.http(node), "HEAD", path, None);
            assert!(matches!(status, 401 | 404), "HEAD {path}: {status} {text}");
        }
    }
    let (status, _) = raw(&c.http("watch-1"), "GET", "/", None);
    assert_eq!(status, 200, "the dashboard page is open");
    // A wrong token is 403 on every guarded route.
    for &(method, path, class, node) in ROUTES {
        if class == Class::Guarded {
            let (status, _) = raw(&c.http(node), method, path, Some("wrong-token-0000000000"));
            assert_eq!(status, 403, "{method} {path} with a wrong token");
        }
    }
}
