//! Who may call what. Loopback is not trust: a web page in the operator's browser (DNS
//! rebinding, or a plain cross-site form), another account on the machine and a reverse
//! proxy on the same host all reach a loopback listener. So every request is judged by
//! `decide`, in this order:
//!
//! 1. **Host** (every route, `/`, `/ws` and `/api/*` alike): it must be a name this node
//!    serves: `127.0.0.1`, `localhost`, `[::1]` and the bind address (each without a port or
//!    with the bound port) and the entries of `http.allowed_hosts` (`name` for any port,
//!    `name:port` for one). Else 421 `foreign_host`: a rebinding page sends its own name.
//! 2. **Origin** (on `/ws` and on every mutation), when the browser sends one: its
//!    `host[:port]` must equal the request's Host (scheme `http` or `https`). Else 403
//!    `foreign_origin`.
//! 3. **Token** (on `/ws`, on every mutation and on the login URL): `Authorization: Bearer
//!    <token>` or the panel's session cookie. Else 401 `missing_token` (nothing presented)
//!    or `bad_token` (something wrong presented).
//! 4. **Remote reads**: any other read from a client that is not loopback needs the token
//!    too unless `http.allow_remote_reads` is on (off by default). Else 403 `remote_read`.
//!
//! The client address is the TCP peer; `X-Forwarded-For` is read only when that peer is one
//! of `http.trusted_proxies`, and then the client is the rightmost address in the header that
//! is not a listed proxy (`client_address`): whatever a client writes into the header itself
//! sits to the left of what its proxy appended.
//!
//! The panel logs in the way local web UIs usually do (Jupyter is the model): the node logs
//! `http://<bind>/?token=<token>` once at start; `GET /?token=<token>` sets the session
//! cookie (`HttpOnly; SameSite=Strict; Path=/`, named after the port since cookies do not
//! separate ports, valued with a hash of the token rather than the token) and redirects to
//! `/`. A wrong token there is 401 `bad_token`.
//!
//! The decisions are pure functions with unit tests; `guard` is the middleware that gathers
//! a request's facts, applies `decide`, counts refusals (`apn_http_refused_total{reason}`)
//! and answers them as JSON `{error: <reason>, detail}`.

use std::net::{IpAddr, SocketAddr};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use sha2::{Digest, Sha256};

use super::{WebError, WebState};

/// Why a request was refused; each one is a label of `apn_http_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is not a name this node serves (DNS rebinding, a misrouted request).
    ForeignHost,
    /// `Origin` is not the Host on a mutation or a websocket upgrade (a cross-site page).
    ForeignOrigin,
    /// A call that needs the token came without one.
    MissingToken,
    /// A token or session cookie was presented and is wrong.
    BadToken,
    /// A read from another host while `http.allow_remote_reads` is off.
    RemoteRead,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Refusal; 5] = [
        Refusal::ForeignHost,
        Refusal::ForeignOrigin,
        Refusal::MissingToken,
        Refusal::BadToken,
        Refusal::RemoteRead,
    ];

    /// The metric label and the JSON `error` of the refusal.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ForeignHost => "foreign_host",
            Refusal::ForeignOrigin => "foreign_origin",
            Refusal::MissingToken => "missing_token",
            Refusal::BadToken => "bad_token",
            Refusal::RemoteRead => "remote_read",
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::ForeignOrigin | Refusal::RemoteRead => StatusCode::FORBIDDEN,
            Refusal::MissingToken | Refusal::BadToken => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A refusal with the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub reason: Refusal,
    pub detail: String,
}

fn deny(reason: Refusal, detail: impl Into<String>) -> Denial {
    Denial {
        reason,
        detail: detail.into(),
    }
}

/// True for methods that change state.
pub fn is_mutation(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// True when the client address is loopback.
pub fn client_is_loopback(address: Option<IpAddr>) -> bool {
    address.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// Constant-time equality of two secrets (the length is not secret).
fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Constant-time comparison of `Authorization: Bearer <token>` with the node's token.
pub fn token_matches(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    secret_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// The session cookie's name for a node on `port`: browsers send a host's cookies to every
/// port of it, so nodes on one host (`apn demo`) need names of their own.
pub fn cookie_name(port: u16) -> String {
    format!("apn_session_{port}")
}

/// The session cookie's value: a hash of the token, so the cookie is not the API token.
pub(crate) fn session_value(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"apn panel session v1\0");
    hasher.update(token.as_bytes());
    hex::encode(hasher.finalize())
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub(crate) fn cookie_value<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// The URL that logs a browser in: `http://<address>/?token=<token>` (an unspecified bind
/// address becomes the matching loopback address).
pub fn login_url(address: SocketAddr, token: &str) -> String {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/?token={token}",
        SocketAddr::new(ip, address.port())
    )
}

/// Split a `Host` value (or an `http.allowed_hosts` entry) into its lower-case name and its
/// port: `Example.org:8080` → (`example.org`, 8080), `[::1]` → (`::1`, none). `None` for
/// text that is no host (empty, spaces, a path, a bare IPv6 address, a bad port).
pub fn parse_host(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | ',' | '\\'))
    {
        return None;
    }
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        (inside.to_string(), port)
    } else {
        match text.split_once(':') {
            None => (text.to_string(), None),
            Some((name, port)) => {
                if name.is_empty() || port.contains(':') {
                    return None;
                }
                (name.to_string(), Some(port.parse::<u16>().ok()?))
            }
        }
    };
    Some((name.to_ascii_lowercase(), port))
}

/// What the node serves and whom it trusts: built once when the server starts.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// The bound port: the built-in names are served with it or without a port.
    pub port: u16,
    /// `127.0.0.1`, `localhost`, `::1` and the bind address.
    pub local_names: Vec<String>,
    /// `http.allowed_hosts`, parsed: a name with no port matches any port.
    pub allowed_hosts: Vec<(String, Option<u16>)>,
    /// `http.trusted_proxies`.
    pub trusted_proxies: Vec<IpAddr>,
    /// `http.allow_remote_reads`.
    pub allow_remote_reads: bool,
    /// The API token.
    pub token: String,
    /// The session cookie's name and value.
    pub cookie_name: String,
    pub session: String,
}

impl AccessPolicy {
    /// The policy of a server bound to `bound` with `http` settings and `token`.
    pub fn new(http: &crate::config::HttpConfig, bound: SocketAddr, token: String) -> Self {
        let mut local_names = vec!["127.0.0.1".to_string(), "localhost".into(), "::1".into()];
        let ip = bound.ip();
        if !ip.is_unspecified() && !local_names.contains(&ip.to_string()) {
            local_names.push(ip.to_string());
        }
        AccessPolicy {
            port: bound.port(),
            local_names,
            allowed_hosts: http
                .allowed_hosts
                .iter()
                .filter_map(|h| parse_host(h))
                .collect(),
            trusted_proxies: http.trusted_proxies.clone(),
            allow_remote_reads: http.allow_remote_reads,
            cookie_name: cookie_name(bound.port()),
            session: session_value(&token),
            token,
        }
    }

    /// True when `host` (a `Host` header value) names this node.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = parse_host(host) else {
            return false;
        };
        let local = self.local_names.contains(&name) && port.is_none_or(|p| p == self.port);
        local
            || self.allowed_hosts.iter().any(|(allowed, allowed_port)| {
                *allowed == name && (allowed_port.is_none() || *allowed_port == port)
            })
    }
}

/// True when `origin` (an `Origin` header) is absent or is `http(s)://<host>`, the request's
/// own Host; a default port (80, 443) may be written or left out on either side.
pub fn origin_matches(origin: Option<&str>, host: &str) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let (authority, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, 443)
    } else {
        return false; // `null`, `file://`, anything else
    };
    match (parse_host(authority), parse_host(host)) {
        (Some((origin_name, origin_port)), Some((host_name, host_port))) => {
            origin_name == host_name
                && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port)
        }
        _ => false,
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`[::1]:80`, `1.2.3.4:5`).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The client's address. `peer` is the TCP peer and `forwarded` the `X-Forwarded-For`
/// values in the order they arrived. The header counts only when the peer is a trusted
/// proxy; then the client is the rightmost entry that is not a trusted proxy (the leftmost
/// when all are). An entry that is not an address makes the client unknown (`None`), which
/// is never loopback.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded: &[&str],
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|p| p.to_canonical() == *ip);
    if !trusted(&peer) {
        return Some(peer);
    }
    let entries: Vec<&str> = forwarded
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Some(peer);
    }
    for entry in entries.iter().rev() {
        let ip = forwarded_ip(entry)?;
        if !trusted(&ip) {
            return Some(ip);
        }
    }
    entries.first().and_then(|e| forwarded_ip(e))
}

/// What `decide` needs to know about one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestFacts<'a> {
    /// A method that changes state.
    pub mutation: bool,
    /// `GET /ws`.
    pub websocket: bool,
    /// `?token=` on `GET /`: a login.
    pub login_token: Option<String>,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The value of this node's session cookie.
    pub session: Option<&'a str>,
    /// From `client_address`.
    pub client: Option<IpAddr>,
}

/// Whether a request carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    Valid,
    Wrong,
    Missing,
}

fn credentials(facts: &RequestFacts, policy: &AccessPolicy) -> Credentials {
    if let Some(token) = &facts.login_token {
        // A login is judged by its own token alone.
        return if secret_eq(token.as_bytes(), policy.token.as_bytes()) {
            Credentials::Valid
        } else {
            Credentials::Wrong
        };
    }
    let bearer = facts
        .authorization
        .map(|header| token_matches(Some(header), &policy.token));
    let cookie = facts
        .session
        .map(|value| secret_eq(value.as_bytes(), policy.session.as_bytes()));
    match (bearer, cookie) {
        (Some(true), _) | (_, Some(true)) => Credentials::Valid,
        (None, None) => Credentials::Missing,
        _ => Credentials::Wrong,
    }
}

const TOKEN_HINT: &str = "send `Authorization: Bearer <token>` (the token is api.token in the \
node's data dir; the CLI reads it with --data-dir or APN_TOKEN), or open the login URL the \
node logs at start in the browser";

/// Admit or refuse one request (see the module docs for the order of the checks).
pub(crate) fn decide(facts: &RequestFacts, policy: &AccessPolicy) -> Result<(), Denial> {
    let Some(host) = facts.host else {
        return Err(deny(Refusal::ForeignHost, "the request names no Host"));
    };
    if !policy.host_allowed(host) {
        return Err(deny(
            Refusal::ForeignHost,
            format!(
                "Host {host:?} is not a name this node serves (127.0.0.1, localhost, [::1], \
                 the bind address, http.allowed_hosts)"
            ),
        ));
    }
    let guarded = facts.mutation || facts.websocket;
    if guarded && !origin_matches(facts.origin, host) {
        return Err(deny(
            Refusal::ForeignOrigin,
            format!(
                "Origin {:?} is not this node (Host {host:?}): a page from another site may \
                 not call it",
                facts.origin.unwrap_or_default()
            ),
        ));
    }
    let presented = credentials(facts, policy);
    let what = if facts.login_token.is_some() {
        "the login URL's token is wrong".to_string()
    } else {
        format!("the token or session cookie is wrong; {TOKEN_HINT}")
    };
    if guarded || facts.login_token.is_some() {
        return match presented {
            Credentials::Valid => Ok(()),
            Credentials::Wrong => Err(deny(Refusal::BadToken, what)),
            Credentials::Missing => Err(deny(
                Refusal::MissingToken,
                format!("this call needs the node's API token, from loopback too; {TOKEN_HINT}"),
            )),
        };
    }
    if client_is_loopback(facts.client) || policy.allow_remote_reads {
        return Ok(());
    }
    match presented {
        Credentials::Valid => Ok(()),
        Credentials::Wrong => Err(deny(Refusal::BadToken, what)),
        Credentials::Missing => Err(deny(
            Refusal::RemoteRead,
            format!(
                "reads from {} need the token: reads from other hosts are off \
                 (http.allow_remote_reads)",
                facts
                    .client
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "an unknown address".into())
            ),
        )),
    }
}

/// The `token` query parameter of `GET /`, if any (an empty one counts as given).
fn login_token(request: &ServiceRequest) -> Option<String> {
    if request.method() != Method::GET || request.path() != "/" {
        return None;
    }
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()?;
    query.get("token").cloned()
}

/// The access middleware: gathers the facts, applies `decide`, counts and answers refusals.
pub(crate) async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = request.app_data::<web::Data<WebState>>().cloned() else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let policy = &state.policy;
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let authority = request.uri().authority().map(|a| a.as_str());
    let facts = RequestFacts {
        mutation: is_mutation(request.method()),
        websocket: request.path() == "/ws",
        login_token: login_token(&request),
        host: header("host").or(authority),
        origin: header("origin"),
        authorization: header("authorization"),
        session: cookie_value(header("cookie"), &policy.cookie_name),
        client: client_address(
            request.peer_addr().map(|a| a.ip()),
            &forwarded,
            &policy.trusted_proxies,
        ),
    };
    if let Err(denial) = decide(&facts, policy) {
        state.node.metrics.count_refusal(denial.reason);
        tracing::debug!(
            reason = denial.reason.label(),
            path = request.path(),
            client = ?facts.client,
            "HTTP request refused"
        );
        let response = WebError::Refused {
            reason: denial.reason,
            detail: denial.detail,
        }
        .error_response();
        return Ok(request.into_response(response).map_into_boxed_body());
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn policy(allowed: &[&str], proxies: &[&str]) -> AccessPolicy {
        let http = crate::config::HttpConfig {
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            trusted_proxies: proxies.iter().map(|p| ip(p)).collect(),
            ..Default::default()
        };
        AccessPolicy::new(&http, "127.0.0.1:8080".parse().unwrap(), "t".repeat(64))
    }

    fn facts<'a>(host: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            host: Some(host),
            client: Some(ip("127.0.0.1")),
            ..Default::default()
        }
    }

    fn refusal(result: Result<(), Denial>) -> Option<Refusal> {
        result.err().map(|d| d.reason)
    }

    #[test]
    fn simple_decisions() {
        assert!(is_mutation(&Method::POST) && !is_mutation(&Method::GET));
        assert!(client_is_loopback(Some(ip("127.0.0.1"))));
        assert!(client_is_loopback(Some(ip("::1"))));
        assert!(client_is_loopback(Some(ip("::ffff:127.0.0.1"))));
        assert!(!client_is_loopback(Some(ip("10.0.0.2"))));
        assert!(!client_is_loopback(None));
        assert!(token_matches(Some("Bearer abc"), "abc"));
        assert!(!token_matches(Some("Bearer abd"), "abc"));
        assert!(!token_matches(Some("Bearer ab"), "abc"));
        assert!(!token_matches(Some("abc"), "abc"));
        assert!(!token_matches(None, "abc"));
        assert_eq!(
            cookie_value(Some("a=1; apn_session_80=xy"), "apn_session_80"),
            Some("xy")
        );
        assert_eq!(
            cookie_value(Some("apn_session_8=xy"), "apn_session_80"),
            None
        );
        assert_eq!(cookie_value(None, "a"), None);
        assert_ne!(session_value("abc"), "abc");
        assert_eq!(session_value("abc"), session_value("abc"));
        assert_eq!(
            login_url("0.0.0.0:9000".parse().unwrap(), "tok"),
            "http://127.0.0.1:9000/?token=tok"
        );
        assert_eq!(
            login_url("[::1]:9000".parse().unwrap(), "tok"),
            "http://[::1]:9000/?token=tok"
        );
    }

    #[test]
    fn hosts_parse() {
        assert_eq!(
            parse_host("Example.ORG:80"),
            Some(("example.org".into(), Some(80)))
        );
        assert_eq!(parse_host("localhost"), Some(("localhost".into(), None)));
        assert_eq!(parse_host("[::1]:8080"), Some(("::1".into(), Some(8080))));
        assert_eq!(parse_host("[::1]"), Some(("::1".into(), None)));
        for bad in [
            "", "::1", "a b", "a/b", "a:", "a:99999", "[::1", "[x]:1", "u@h", "a:1:2",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_names_the_node_serves_are_hosts() {
        let policy = policy(&["panel.lan", "proxy.lan:8443"], &[]);
        for good in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:8080",
            "[::1]",
            "[::1]:8080",
            "panel.lan",
            "panel.lan:1234",
            "proxy.lan:8443",
        ] {
            assert!(policy.host_allowed(good), "{good}");
        }
        for bad in [
            "evil.test",
            "evil.test:8080",
            "localhost:9999",
            "127.0.0.1:80",
            "proxy.lan",
            "proxy.lan:8444",
            "localhost.evil.test",
            "127.0.0.2",
            "",
        ] {
            assert!(!policy.host_allowed(bad), "{bad}");
        }
        let bound = AccessPolicy::new(
            &Default::default(),
            "10.1.2.3:8080".parse().unwrap(),
            "t".into(),
        );
        assert!(bound.host_allowed("10.1.2.3:8080") && !bound.host_allowed("10.1.2.4:8080"));
        let any = AccessPolicy::new(
            &Default::default(),
            "0.0.0.0:8080".parse().unwrap(),
            "t".into(),
        );
        assert!(!any.host_allowed("0.0.0.0:8080"));
    }

    #[test]
    fn origins_match_the_host() {
        assert!(origin_matches(None, "localhost:8080"));
        assert!(origin_matches(
            Some("http://localhost:8080"),
            "localhost:8080"
        ));
        assert!(origin_matches(
            Some("http://LOCALHOST:8080"),
            "localhost:8080"
        ));
        assert!(origin_matches(Some("http://localhost"), "localhost:80"));
        assert!(origin_matches(Some("https://panel.lan"), "panel.lan:443"));
        assert!(origin_matches(Some("http://[::1]:8080"), "[::1]:8080"));
        assert!(!origin_matches(Some("http://evil.test"), "localhost:8080"));
        assert!(!origin_matches(
            Some("http://localhost:8081"),
            "localhost:8080"
        ));
        assert!(!origin_matches(Some("http://localhost"), "localhost:8080"));
        assert!(!origin_matches(Some("https://localhost"), "localhost:80"));
        assert!(!origin_matches(Some("null"), "localhost:8080"));
        assert!(!origin_matches(Some("file://"), "localhost"));
        assert!(!origin_matches(
            Some("http://localhost:8080/x"),
            "localhost:8080"
        ));
    }

    #[test]
    fn forwarded_for_counts_only_from_listed_proxies_rightmost_first() {
        let proxies = [ip("127.0.0.1"), ip("10.0.0.1")];
        let peer = Some(ip("127.0.0.1"));
        // Not from a proxy: the header is ignored.
        assert_eq!(
            client_address(Some(ip("192.0.2.7")), &["127.0.0.1"], &proxies),
            Some(ip("192.0.2.7"))
        );
        assert_eq!(client_address(peer, &["203.0.113.9"], &[]), peer);
        // From a proxy: the rightmost address that is no proxy.
        assert_eq!(
            client_address(peer, &["203.0.113.9"], &proxies),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(peer, &["127.0.0.2, 203.0.113.9, 10.0.0.1"], &proxies),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(peer, &["203.0.113.9", "198.51.100.4"], &proxies),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            client_address(peer, &["[2001:db8::1]:443"], &proxies),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client_address(peer, &["192.0.2.1:5000"], &proxies),
            Some(ip("192.0.2.1"))
        );
        // All proxies: the leftmost. No header: the proxy itself. Junk: unknown.
        assert_eq!(
            client_address(peer, &["10.0.0.1, 127.0.0.1"], &proxies),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(client_address(peer, &[], &proxies), peer);
        assert_eq!(client_address(peer, &[" , "], &proxies), peer);
        assert_eq!(client_address(peer, &["unknown, 10.0.0.1"], &proxies), None);
        assert_eq!(client_address(None, &["203.0.113.9"], &proxies), None);
        // A mapped IPv4 peer is the same proxy.
        assert_eq!(
            client_address(Some(ip("::ffff:127.0.0.1")), &["203.0.113.9"], &proxies),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn decisions_in_order() {
        let policy = policy(&[], &[]);
        let bearer = format!("Bearer {}", policy.token);
        // Host first, on reads too.
        assert_eq!(
            refusal(decide(&facts("evil.test"), &policy)),
            Some(Refusal::ForeignHost)
        );
        let mut no_host = facts("x");
        no_host.host = None;
        assert_eq!(
            refusal(decide(&no_host, &policy)),
            Some(Refusal::ForeignHost)
        );
        let mut post = facts("evil.test");
        post.mutation = true;
        post.authorization = Some(&bearer);
        assert_eq!(refusal(decide(&post, &policy)), Some(Refusal::ForeignHost));
        // Loopback reads need nothing.
        assert_eq!(decide(&facts("localhost:8080"), &policy), Ok(()));
        // Mutations: Origin, then the token.
        let mut post = facts("localhost:8080");
        post.mutation = true;
        assert_eq!(refusal(decide(&post, &policy)), Some(Refusal::MissingToken));
        post.authorization = Some("Bearer nope");
        assert_eq!(refusal(decide(&post, &policy)), Some(Refusal::BadToken));
        post.authorization = Some(&bearer);
        assert_eq!(decide(&post, &policy), Ok(()));
        post.origin = Some("http://evil.test");
        assert_eq!(
            refusal(decide(&post, &policy)),
            Some(Refusal::ForeignOrigin)
        );
        post.origin = Some("http://localhost:8080");
        assert_eq!(decide(&post, &policy), Ok(()));
        // The session cookie counts like the bearer token.
        let mut cookie = facts("localhost:8080");
        cookie.mutation = true;
        cookie.session = Some(&policy.session);
        assert_eq!(decide(&cookie, &policy), Ok(()));
        cookie.session = Some("forged");
        assert_eq!(refusal(decide(&cookie, &policy)), Some(Refusal::BadToken));
        // The websocket is guarded like a mutation.
        let mut ws = facts("127.0.0.1:8080");
        ws.websocket = true;
        assert_eq!(refusal(decide(&ws, &policy)), Some(Refusal::MissingToken));
        ws.session = Some(&policy.session);
        ws.origin = Some("http://evil.test");
        assert_eq!(refusal(decide(&ws, &policy)), Some(Refusal::ForeignOrigin));
        ws.origin = Some("http://127.0.0.1:8080");
        assert_eq!(decide(&ws, &policy), Ok(()));
        // Login: its own token decides.
        let mut login = facts("localhost");
        login.login_token = Some("wrong".into());
        login.session = Some(&policy.session);
        assert_eq!(refusal(decide(&login, &policy)), Some(Refusal::BadToken));
        login.login_token = Some(policy.token.clone());
        assert_eq!(decide(&login, &policy), Ok(()));
        // Remote reads: off by default, the token opens them.
        let mut remote = facts("localhost");
        remote.client = Some(ip("203.0.113.9"));
        let denial = decide(&remote, &policy).unwrap_err();
        assert_eq!(denial.reason, Refusal::RemoteRead);
        assert!(denial.detail.contains("203.0.113.9"), "{}", denial.detail);
        remote.client = None;
        assert_eq!(refusal(decide(&remote, &policy)), Some(Refusal::RemoteRead));
        remote.authorization = Some(&bearer);
        assert_eq!(decide(&remote, &policy), Ok(()));
        remote.authorization = Some("Bearer nope");
        assert_eq!(refusal(decide(&remote, &policy)), Some(Refusal::BadToken));
        let open = AccessPolicy {
            allow_remote_reads: true,
            ..policy.clone()
        };
        remote.authorization = None;
        assert_eq!(decide(&remote, &open), Ok(()));
    }
}
