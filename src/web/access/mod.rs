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
//!
//! Here: the refusals, `decide` and `guard`. Host and Origin rules are in `hosts`, the token
//! and session cookie in `token`, the client address behind proxies in `client`.

mod client;
mod hosts;
mod token;

pub use client::{client_address, client_is_loopback};
pub use hosts::{AccessPolicy, origin_matches, parse_host};
pub(crate) use token::cookie_value;
pub use token::{cookie_name, login_url, token_matches};

use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::{WebError, WebState};
use token::secret_eq;

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

    pub(super) fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    pub(super) fn policy(allowed: &[&str], proxies: &[&str]) -> AccessPolicy {
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
