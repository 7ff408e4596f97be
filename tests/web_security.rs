//! The web side of issue 13, attacked over real TCP against a real node on an ephemeral port:
//! a foreign `Host` (DNS rebinding), a foreign `Origin` on a mutation and on the websocket
//! upgrade, a loopback mutation without the token, a spoofed `X-Forwarded-For`, and the
//! panel's token URL that sets an HttpOnly, SameSite=Strict cookie. Every refusal is JSON
//! with a reason and is counted in `/metrics`.
//!
//! Requests are written by hand on a `TcpStream` so that the test, like an attacker, chooses
//! every header (`Host` included).
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// One answer: status, headers (lower-case names, in order) and the body as text.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// Send one HTTP/1.1 request with exactly these headers (plus `Connection: close` and, with a
/// body, `Content-Type` and `Content-Length`) and read the whole answer.
fn send(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = parse_head(head);
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A websocket upgrade request; only the answer's head is read (a 101 keeps the socket open).
fn upgrade(address: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = String::from(
        "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
        }
    }
    // A refusal has a body after the head; read what is already there.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    if let Ok(n) = stream.read(&mut buffer) {
        raw.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = parse_head(head);
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Blocking socket work runs off the actix thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

/// A node with its API on an ephemeral loopback port; `http` is extra TOML for `[http]`.
fn web_config(dir: &std::path::Path, http: &str) -> apn::config::Config {
    let mut config = test_config(dir);
    config.http.bind = "127.0.0.1:0".into();
    let mut value = toml::Value::try_from(&config).expect("config serialises");
    let extra: toml::Table = http.parse().expect("valid TOML");
    if let Some(section) = value.get_mut("http").and_then(|v| v.as_table_mut()) {
        section.extend(extra);
    }
    let text = toml::to_string(&value).expect("config serialises");
    apn::config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// The API token of a node (the file it created in its data dir).
fn token_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join(apn::web::TOKEN_FILE))
        .expect("the node created its token")
        .trim()
        .to_string()
}

/// A body the market accepts up to the repository check (no repository there: 400).
fn task_body(dir: &std::path::Path) -> String {
    json!({"prompt": "id > /tmp/pwned", "executor_profile": "SHELL",
        "repo_path": dir.display().to_string(), "reward": "1"})
    .to_string()
}

/// `apn_http_refused_total{reason="…"}` from `/metrics`.
fn refused(address: SocketAddr, reason: &str) -> u64 {
    let host = address.to_string();
    let answer = send(address, "GET", "/metrics", &[("Host", &host)], None);
    let prefix = format!("apn_http_refused_total{{reason=\"{reason}\"}} ");
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{}", answer.body))
}

#[actix_rt::test]
async fn foreign_host_and_origin_are_refused_and_the_token_is_needed_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(web_config(dir.path(), "")).await;
    let address = node.http_addr.unwrap();
    let token = token_of(dir.path());
    let body = task_body(dir.path());
    let answers = blocking(move || {
        let host = address.to_string();
        let bearer = format!("Bearer {token}");
        let origin = format!("http://{host}");
        let send_post =
            |headers: &[(&str, &str)]| send(address, "POST", "/api/tasks", headers, Some(&body));
        vec![
            // 0: the DNS-rebinding request of the issue: foreign Host and Origin, no token.
            send_post(&[("Host", "evil.test"), ("Origin", "http://evil.test")]),
            // 1: a foreign Host even with the token.
            send_post(&[("Host", "evil.test:8080"), ("Authorization", &bearer)]),
            // 2, 3, 4: reads with a foreign Host: the panel, the API, the websocket.
            send(address, "GET", "/", &[("Host", "evil.test")], None),
            send(
                address,
                "GET",
                "/api/status",
                &[("Host", "evil.test")],
                None,
            ),
            upgrade(address, &[("Host", "evil.test")]),
            // 5: our Host, a foreign Origin, the right token.
            send_post(&[
                ("Host", &host),
                ("Origin", "http://evil.test"),
                ("Authorization", &bearer),
            ]),
            // 6: loopback without a token.
            send_post(&[("Host", &host)]),
            // 7: loopback with a wrong token.
            send_post(&[("Host", &host), ("Authorization", "Bearer wrong")]),
            // 8: loopback with the token and our own Origin: reaches the market (400: the
            // data dir is no repository).
            send_post(&[
                ("Host", &host),
                ("Origin", &origin),
                ("Authorization", &bearer),
            ]),
            // 9: the names the node serves: localhost with the port, 127.0.0.1 without.
            send(
                address,
                "GET",
                "/api/status",
                &[("Host", "localhost")],
                None,
            ),
            send(
                address,
                "GET",
                "/api/status",
                &[("Host", &format!("localhost:{}", address.port()))],
                None,
            ),
            // 11: a websocket upgrade from a foreign Origin with the token.
            upgrade(
                address,
                &[
                    ("Host", &host),
                    ("Origin", "http://evil.test"),
                    ("Authorization", &bearer),
                ],
            ),
            // 12: a websocket upgrade with no token.
            upgrade(address, &[("Host", &host), ("Origin", &origin)]),
            // 13: a websocket upgrade from our own Origin with the token.
            upgrade(
                address,
                &[
                    ("Host", &host),
                    ("Origin", &origin),
                    ("Authorization", &bearer),
                ],
            ),
        ]
    })
    .await;
    let reason = |i: usize| answers[i].json()["error"].as_str().map(String::from);
    assert_eq!(answers[0].status, 421, "{:?}", answers[0]);
    assert_eq!(reason(0).as_deref(), Some("foreign_host"));
    assert_eq!(answers[1].status, 421, "{:?}", answers[1]);
    for i in [2, 3, 4] {
        assert_eq!(answers[i].status, 421, "{i}: {:?}", answers[i]);
        assert_eq!(reason(i).as_deref(), Some("foreign_host"), "{i}");
    }
    assert_eq!(answers[5].status, 403, "{:?}", answers[5]);
    assert_eq!(reason(5).as_deref(), Some("foreign_origin"));
    assert_eq!(answers[6].status, 401, "{:?}", answers[6]);
    assert_eq!(reason(6).as_deref(), Some("missing_token"));
    assert!(
        answers[6].json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("token"),
        "{:?}",
        answers[6]
    );
    assert_eq!(answers[7].status, 401, "{:?}", answers[7]);
    assert_eq!(reason(7).as_deref(), Some("bad_token"));
    assert_eq!(answers[8].status, 400, "{:?}", answers[8]);
    assert_eq!(answers[9].status, 200, "{:?}", answers[9]);
    assert_eq!(answers[10].status, 200, "{:?}", answers[10]);
    assert_eq!(answers[11].status, 403, "{:?}", answers[11]);
    assert_eq!(reason(11).as_deref(), Some("foreign_origin"));
    assert_eq!(answers[12].status, 401, "{:?}", answers[12]);
    assert_eq!(answers[13].status, 101, "{:?}", answers[13]);

    // Every refusal was counted by its reason.
    let counts = blocking(move || {
        [
            "foreign_host",
            "foreign_origin",
            "missing_token",
            "bad_token",
        ]
        .map(|r| refused(address, r))
    })
    .await;
    assert_eq!(
        counts,
        [5, 2, 2, 1],
        "foreign_host, foreign_origin, missing_token, bad_token"
    );
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_token_url_sets_a_strict_cookie_that_authorises_mutations_and_the_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(web_config(dir.path(), "")).await;
    let address = node.http_addr.unwrap();
    let token = token_of(dir.path());
    let body = task_body(dir.path());
    let (wrong, login, with_cookie, upgraded, without) = blocking(move || {
        let host = address.to_string();
        let wrong = send(address, "GET", "/?token=wrong", &[("Host", &host)], None);
        let login = send(
            address,
            "GET",
            &format!("/?token={token}"),
            &[("Host", &host)],
            None,
        );
        let cookie = login
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or("")
            .to_string();
        let origin = format!("http://{host}");
        let with_cookie = send(
            address,
            "POST",
            "/api/tasks",
            &[("Host", &host), ("Origin", &origin), ("Cookie", &cookie)],
            Some(&body),
        );
        let upgraded = upgrade(
            address,
            &[("Host", &host), ("Origin", &origin), ("Cookie", &cookie)],
        );
        let without = send(
            address,
            "POST",
            "/api/tasks",
            &[("Host", &host), ("Cookie", "apn_session=forged")],
            Some(&body),
        );
        (wrong, login, with_cookie, upgraded, without)
    })
    .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(wrong.json()["error"], "bad_token");
    assert!(wrong.header("set-cookie").is_none());

    assert_eq!(login.status, 303, "{login:?}");
    assert_eq!(login.header("location"), Some("/"));
    let cookie = login.header("set-cookie").expect("a cookie");
    let attributes: Vec<String> = cookie
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attributes.contains(&"httponly".into()), "{cookie}");
    assert!(attributes.contains(&"samesite=strict".into()), "{cookie}");
    assert!(attributes.contains(&"path=/".into()), "{cookie}");
    assert!(
        !cookie.contains(&token_of(dir.path())),
        "the cookie must not carry the API token itself: {cookie}"
    );

    // The cookie authorises a mutation (the market then refuses the non-repository: 400)
    // and the websocket; a forged one does not.
    assert_eq!(with_cookie.status, 400, "{with_cookie:?}");
    assert_eq!(upgraded.status, 101, "{upgraded:?}");
    assert_eq!(without.status, 401, "{without:?}");
    node.shutdown().await;
}

#[actix_rt::test]
async fn forwarded_for_is_read_only_from_listed_proxies_rightmost_first() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // No proxy listed: the header is anyone's to write, so it is ignored.
    let direct = node(web_config(dirs[0].path(), "")).await;
    // Loopback is the proxy in front of this one.
    let proxied = node(web_config(
        dirs[1].path(),
        "trusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let (direct_address, proxied_address) = (direct.http_addr.unwrap(), proxied.http_addr.unwrap());
    let answers = blocking(move || {
        let get = |address: SocketAddr, forwarded: &str| {
            let host = address.to_string();
            send(
                address,
                "GET",
                "/api/status",
                &[("Host", &host), ("X-Forwarded-For", forwarded)],
                None,
            )
        };
        vec![
            // 0: a spoofed remote address from a client that is no proxy: ignored, the
            // client is loopback and may read.
            get(direct_address, "203.0.113.9"),
            // 1: the proxy says the client is remote: remote reads are off by default.
            get(proxied_address, "203.0.113.9"),
            // 2: the client prepended a loopback address; the proxy appended the real one.
            // The rightmost address that is no proxy is the client.
            get(proxied_address, "127.0.0.2, 203.0.113.9"),
            // 3: the rightmost non-proxy address is loopback (127.0.0.1 is the proxy).
            get(proxied_address, "203.0.113.9, 127.0.0.2, 127.0.0.1"),
            // 4: no header from the proxy: the proxy itself is the client.
            send(
                proxied_address,
                "GET",
                "/api/status",
                &[("Host", &proxied_address.to_string())],
                None,
            ),
        ]
    })
    .await;
    assert_eq!(answers[0].status, 200, "{:?}", answers[0]);
    for i in [1, 2] {
        assert_eq!(answers[i].status, 403, "{i}: {:?}", answers[i]);
        assert_eq!(answers[i].json()["error"], "remote_read", "{i}");
        assert!(
            answers[i].json()["detail"]
                .as_str()
                .unwrap_or("")
                .contains("203.0.113.9"),
            "{i}: {:?}",
            answers[i]
        );
    }
    assert_eq!(answers[3].status, 200, "{:?}", answers[3]);
    assert_eq!(answers[4].status, 200, "{:?}", answers[4]);
    let count = blocking(move || refused(proxied_address, "remote_read")).await;
    assert_eq!(count, 2);
    direct.shutdown().await;
    proxied.shutdown().await;
}
