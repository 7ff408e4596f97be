//! The Mesh Panel and the HTTP API (actix-web), served by every node.
//!
//! - `GET /` and the panel's files (compiled into the binary from `static/`), `GET /ws`
//!   (live state: a snapshot, then typed deltas; see `ws.rs`).
//! - JSON: `/api/status`, `/api/peers`, `/api/resources`, `/api/transactions`,
//!   `/api/tasks` (GET, POST), `/api/tasks/{id}`, `POST /api/tasks/{id}/cancel`,
//!   `/api/events/execution-processes/{id}/logs` and `/api/execution-processes/{id}/raw-logs`
//!   (SSE: history, then live, ending after the task finishes).
//! - `GET /metrics` (Prometheus text), `GET /healthz`, `GET /api/openapi.json` (the
//!   OpenAPI description, generated from the handlers; see `openapi.rs`).
//!
//! Errors are JSON `{error, detail}` with the matching status. Loopback is not trust: every
//! request must name a Host the node serves, and mutations and `/ws` need the API token
//! (`Authorization: Bearer <token>`, the token being `api.token` in the data dir, mode 0600)
//! or the panel's session cookie, and an `Origin`, when sent, equal to the Host; reads from
//! other hosts are off unless `http.allow_remote_reads`. The panel logs in through the URL
//! the node logs at start (`/?token=…`, which sets the cookie). Refusals carry their reason
//! as `error` and are counted in `/metrics`; `access/` has the rules. Bodies over
//! `http.body_bytes_max` get 413, malformed JSON 400 with the reason.

mod access;
mod api;
pub mod openapi;
mod ws;

use std::net::SocketAddr;
use std::path::Path;

use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use serde::Serialize;

use crate::actors::node::NodeHandle;

pub use access::{
    AccessPolicy, Refusal, client_address, client_is_loopback, cookie_name, is_mutation, login_url,
    origin_matches, parse_host, token_matches,
};

/// The file in the data dir that holds the API token.
pub const TOKEN_FILE: &str = crate::client::TOKEN_FILE;
/// HTTP worker threads (the API is light; actors do the work).
const HTTP_WORKERS: usize = 2;

/// An HTTP-layer error, rendered as JSON `{error, detail}`.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// 400 `bad_request`: a malformed body or parameter, or a task that cannot be run.
    #[error("{detail}")]
    BadRequest {
        /// What was wrong, in a sentence for the caller.
        detail: String,
    },
    /// Refused by the access policy (401, 403 or 421, code from the [`Refusal`]).
    #[error("{detail}")]
    Refused {
        /// Which check failed; decides the status and the `error` code.
        reason: Refusal,
        /// What to do about it, for the caller.
        detail: String,
    },
    /// 404 `not_found`.
    #[error("{what} not found")]
    NotFound {
        /// The missing thing, e.g. `task <id>`.
        what: String,
    },
    /// 413 `payload_too_large`: the body exceeds `http.body_bytes_max`.
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 503 `unavailable`: no capacity, or an actor is gone because the node is stopping.
    #[error("{detail}")]
    Unavailable {
        /// Why, for the caller.
        detail: String,
    },
    /// 409 `conflict`: the request clashes with state, e.g. the balance cannot cover the reward.
    #[error("{detail}")]
    Conflict {
        /// What clashed, for the caller.
        detail: String,
    },
    /// 405 `method_not_allowed` on a known path.
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The HTTP method the request used.
        method: String,
        /// The methods the path accepts, comma-separated (also the `Allow` header).
        allow: &'static str,
    },
    /// 500 `internal`: a bug or an unexpected failure inside the node.
    #[error("internal error: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
    /// Start-up only: the listener could not be bound (address in use, no permission).
    #[error("cannot start the HTTP server on {address}: {reason}")]
    Bind {
        /// The `http.bind` address tried.
        address: SocketAddr,
        /// The operating system's error.
        reason: String,
    },
    /// Start-up only: the API token file could not be read or written in the data dir.
    #[error("cannot create the API token: {0}")]
    Token(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: String,
}

impl WebError {
    fn code(&self) -> &'static str {
        match self {
            WebError::BadRequest { .. } => "bad_request",
            WebError::Refused { reason, .. } => reason.label(),
            WebError::NotFound { .. } => "not_found",
            WebError::TooLarge { .. } => "payload_too_large",
            WebError::Unavailable { .. } => "unavailable",
            WebError::Conflict { .. } => "conflict",
            WebError::MethodNotAllowed { .. } => "method_not_allowed",
            WebError::Internal { .. } | WebError::Bind { .. } | WebError::Token(_) => "internal",
        }
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            WebError::Refused { reason, .. } => reason.status(),
            WebError::NotFound { .. } => StatusCode::NOT_FOUND,
            WebError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Conflict { .. } => StatusCode::CONFLICT,
            WebError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.code(),
            detail: self.to_string(),
        })
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct WebState {
    /// The node's actor addresses, config and identity; handlers ask the actors.
    pub node: NodeHandle,
    /// Hosts, proxies, the token and the session cookie (see `access/`).
    pub policy: std::sync::Arc<AccessPolicy>,
}

/// Read the API token from the data dir, creating it (mode 0600) on first start.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, WebError> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 32 => return Ok(token.trim().to_string()),
        Ok(_) => {
            return Err(WebError::Token(format!(
                "{} is too short to be a token",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(WebError::Token(format!("{}: {e}", path.display()))),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    crate::identity::write_private_file(&path, token.as_bytes())
        .map_err(|e| WebError::Token(e.to_string()))?;
    Ok(token)
}

/// Start the server on the current actix System. Returns its handle and the bound address
/// (bind port 0 for an ephemeral port).
pub fn start_http(
    node: NodeHandle,
    bind: SocketAddr,
) -> Result<(actix_web::dev::ServerHandle, SocketAddr), WebError> {
    let token = load_or_create_token(&node.data_dir)?;
    let body_limit = node.config.http.body_bytes_max;
    // Bind first: the policy needs the bound port (bind port 0 picks one).
    let bind_error = |reason: String| WebError::Bind {
        address: bind,
        reason,
    };
    let listener = std::net::TcpListener::bind(bind).map_err(|e| bind_error(e.to_string()))?;
    let address = listener
        .local_addr()
        .map_err(|e| bind_error(e.to_string()))?;
    let login = login_url(address, &token);
    let policy = std::sync::Arc::new(AccessPolicy::new(&node.config.http, address, token));
    let state = WebState { node, policy };
    let server = HttpServer::new(move || {
        let json_config =
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(move |error, _request| {
                    let web_error = match &error {
                        actix_web::error::JsonPayloadError::Overflow { .. }
                        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                            WebError::TooLarge { limit: body_limit }
                        }
                        other => WebError::BadRequest {
                            detail: format!("invalid JSON body: {other}"),
                        },
                    };
                    actix_web::error::InternalError::from_response(
                        error,
                        web_error.error_response(),
                    )
                    .into()
                });
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(json_config)
            .app_data(web::PayloadConfig::new(body_limit))
            .wrap(actix_web::middleware::from_fn(access::guard))
            .configure(api::routes)
            .route("/ws", web::get().to(ws::websocket))
    })
    .workers(HTTP_WORKERS)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)
    .map_err(|e| bind_error(e.to_string()))?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    // Logged once: the URL that logs a browser in (it carries the token, as Jupyter's does).
    tracing::info!(%address, url = %login, "Mesh Panel listening; open the URL to log in");
    Ok((handle, address))
}
