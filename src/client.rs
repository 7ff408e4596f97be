//! A small blocking client for a running node's HTTP API, used by the CLI (`apn status`,
//! `apn peers`, `apn ledger`, `apn task …`). It sends the node's API token as a bearer token
//! when it has one (`--data-dir` or `APN_TOKEN`); mutations need it, loopback included. Responses are JSON values: the CLI prints a few
//! fields for people and passes the whole value through with `--json`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Default node address.
pub const DEFAULT_NODE_URL: &str = "http://127.0.0.1:8080";
/// File in the data dir that holds the API token.
pub const TOKEN_FILE: &str = "api.token";
/// A request that takes longer than this fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the node answered {status}: {error}: {detail}")]
    Api {
        status: u16,
        error: String,
        detail: String,
    },
    #[error("the node's answer is not JSON: {0}")]
    BadResponse(String),
}

/// A client for one node.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl ApiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) with an optional bearer token.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build();
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: config.into(),
        }
    }

    /// The token from `APN_TOKEN`, else from `<data_dir>/api.token`, else none (then only
    /// reads from loopback work: every mutation needs the token, loopback included).
    pub fn token_from(data_dir: Option<&Path>) -> Option<String> {
        if let Ok(token) = std::env::var("APN_TOKEN")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_string());
        }
        Self::token_in(data_dir?)
    }

    /// The token in `<data_dir>/api.token`, if the file is there and not empty.
    pub fn token_in(data_dir: &Path) -> Option<String> {
        std::fs::read_to_string(data_dir.join(TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(
        &self,
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let mut response = response.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let body: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Err(ClientError::Api {
            status,
            error: text("error"),
            detail: text("detail"),
        })
    }

    /// GET a JSON resource.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = self.url(path);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.finish(&url, request.call())
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = self.url(path);
        let mut request = self.agent.post(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.finish(&url, request.send_json(body))
    }
}
