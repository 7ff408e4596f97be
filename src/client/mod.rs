//! A small blocking client for a running node's HTTP API, used by the CLI (`apn status`,
//! `apn peers`, `apn task …`) and `apn-soak`. It sends the node's API token as a bearer
//! token when it has one (`--data-dir` or `APN_TOKEN`); mutations need it, loopback included.
//! Answers come back as the API's own types (`StatusDoc`, `PeerInfo`, `TaskView`, …); a
//! refusal comes back as [`ClientError::Api`] with the node's JSON reason. [`ApiClient::get`]
//! still returns raw JSON, for callers that check the wire itself (the API tests).

mod sse;

pub use sse::{EVENT_BYTES_MAX, SseError, SseParser, StreamEvent, StreamLogLine};

use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::actors::distributor::{CreateTaskAttempt, TaskView};
use crate::actors::peer_manager::PeerInfo;
use crate::web::openapi::{StatusDoc, TaskCreated};

/// Default node address.
pub const DEFAULT_NODE_URL: &str = "http://127.0.0.1:8080";
/// File in the data dir that holds the API token.
pub const TOKEN_FILE: &str = "api.token";
/// A request that takes longer than this fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not get an answer (refused, reset, timed out).
    #[error("cannot reach the node at {url}: {reason}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// The transport error, e.g. connection refused or timed out after 30 s.
        reason: String,
    },
    /// The node answered with a non-2xx status; `error` and `detail` are its JSON reason
    /// (empty when the body had none).
    #[error("the node answered {status}: {error}: {detail}")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The API's machine-readable code, e.g. `unauthorized`.
        error: String,
        /// The API's sentence for a human.
        detail: String,
    },
    /// The answer could not be read, or is not JSON.
    #[error("the node's answer is not JSON: {0}")]
    BadResponse(String),
    /// An event stream broke off or carried something unreadable.
    #[error("the node's event stream: {0}")]
    Stream(String),
    /// The answer is JSON but not the shape the API promises for this call.
    #[error("the node's answer is not {expected}: {reason}")]
    Decode {
        /// What the call expected, e.g. `a status document`.
        expected: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
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

    /// `GET /api/status`: who the node is, its mesh and its balance.
    pub fn status(&self) -> Result<StatusDoc, ClientError> {
        self.get_as("/api/status", "a status document")
    }

    /// `GET /api/peers`: the peer table.
    pub fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        self.get_as("/api/peers", "a peer list")
    }

    /// `GET /api/tasks`: the node's task attempts, newest first.
    pub fn tasks(&self) -> Result<Vec<TaskView>, ClientError> {
        self.get_as("/api/tasks", "a task list")
    }

    /// `GET /api/tasks/{id}`. The id is passed as given: the node judges it (400 when it is
    /// not a task id, 404 when there is no such task).
    pub fn get_task(&self, id: &str) -> Result<TaskView, ClientError> {
        self.get_as(&format!("/api/tasks/{id}"), "a task")
    }

    /// `POST /api/tasks` (needs the token): the new task's id and its first view.
    pub fn create_task(&self, request: &CreateTaskAttempt) -> Result<TaskCreated, ClientError> {
        self.post_as("/api/tasks", request, "a created task")
    }

    /// `POST /api/tasks/{id}/cancel` (needs the token): the task, cancelled.
    pub fn cancel_task(&self, id: &str) -> Result<TaskView, ClientError> {
        let empty = serde_json::Map::new();
        self.post_as(&format!("/api/tasks/{id}/cancel"), &empty, "a task")
    }

    /// `GET /api/execution-processes/{id}/raw-logs` (server-sent events): calls `on_event`
    /// with each event of the task's run, its history first, and returns once the stream
    /// ends; `Ok(true)` when it ended with the task's `finished` event. The stream has no
    /// overall timeout (a run may last hours); the node ends it after `finished` and keeps
    /// it alive with comments meanwhile.
    pub fn execution_events(
        &self,
        id: &str,
        mut on_event: impl FnMut(&StreamEvent),
    ) -> Result<bool, ClientError> {
        let url = self.url(&format!("/api/execution-processes/{id}/raw-logs"));
        let request = self
            .with_token(self.agent.get(&url))
            .config()
            .timeout_global(None)
            .build();
        let response = request.call().map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let mut response = response;
            let body = response
                .body_mut()
                .read_to_vec()
                .map_err(|e| ClientError::BadResponse(e.to_string()))?;
            return decode::<Value>(status, &body, "an event stream").map(|_| false);
        }
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut parser = SseParser::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            // A line longer than an event may be is cut here, and the parser refuses it.
            let read = (&mut reader)
                .take(EVENT_BYTES_MAX as u64 + 16)
                .read_until(b'\n', &mut line)
                .map_err(|e| ClientError::Stream(e.to_string()))?;
            if read == 0 {
                return Ok(false);
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let Some(data) = parser
                .push_line(text)
                .map_err(|e| ClientError::Stream(e.to_string()))?
            else {
                continue;
            };
            let event: StreamEvent = serde_json::from_str(&data)
                .map_err(|e| ClientError::Stream(format!("an event is not JSON: {e}")))?;
            on_event(&event);
            if matches!(event, StreamEvent::Finished { .. }) {
                return Ok(true);
            }
        }
    }

    /// GET any resource as raw JSON, for callers that check the wire itself.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.get_as(path, "JSON")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn with_token<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    fn get_as<T: DeserializeOwned>(
        &self,
        path: &str,
        expected: &'static str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self.with_token(self.agent.get(&url)).call();
        finish(&url, response, expected)
    }

    fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        expected: &'static str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self.with_token(self.agent.post(&url)).send_json(body);
        finish(&url, response, expected)
    }
}

/// A field of an answer as the CLI prints it: a JSON string as it is (so an enum reads as
/// its wire name, `completed`), null as `-`, anything else as its JSON text.
pub fn json_text(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        Ok(Value::Null) | Err(_) => "-".to_string(),
        Ok(other) => other.to_string(),
    }
}

/// Reads an answer (bodies are limited to ureq's 10 MB, as `read_json` is) and decodes it.
fn finish<T: DeserializeOwned>(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    expected: &'static str,
) -> Result<T, ClientError> {
    let mut response = response.map_err(|e| ClientError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_vec()
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    decode(status, &body, expected)
}

/// An answer's status and body as the caller's type, or the node's reason for refusing.
fn decode<T: DeserializeOwned>(
    status: u16,
    body: &[u8],
    expected: &'static str,
) -> Result<T, ClientError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    if !(200..300).contains(&status) {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Err(ClientError::Api {
            status,
            error: text("error"),
            detail: text("detail"),
        });
    }
    serde_json::from_value(value).map_err(|e| ClientError::Decode {
        expected,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_nodes_json_reason() {
        let body = br#"{"error":"conflict","detail":"the task already finished"}"#;
        let error = decode::<TaskView>(409, body, "a task").unwrap_err();
        assert!(
            matches!(&error, ClientError::Api { status: 409, error, .. } if error == "conflict"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the node answered 409: conflict: the task already finished"
        );
    }

    #[test]
    fn a_refusal_without_a_reason_still_names_the_status() {
        let error = decode::<Value>(503, b"{}", "JSON").unwrap_err();
        assert_eq!(error.to_string(), "the node answered 503: : ");
    }

    #[test]
    fn a_body_that_is_not_json_or_not_the_type_is_a_decode_error() {
        let error = decode::<Value>(200, b"<html>", "JSON").unwrap_err();
        assert!(matches!(error, ClientError::BadResponse(_)), "{error:?}");
        let error = decode::<Vec<TaskView>>(200, br#"{"id":1}"#, "a task list").unwrap_err();
        assert!(
            matches!(
                &error,
                ClientError::Decode {
                    expected: "a task list",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("the node's answer is not a task list: ")
        );
    }

    #[test]
    fn json_text_reads_like_the_json() {
        use crate::actors::distributor::TaskStatus;
        assert_eq!(json_text(&TaskStatus::Completed), "completed");
        assert_eq!(json_text(&None::<String>), "-");
        assert_eq!(json_text(&42u64), "42");
        assert_eq!(json_text(&crate::messages::Vibe::from_whole(3)), "3");
    }

    #[test]
    fn a_node_that_is_not_there_is_unreachable() {
        let port = crate::harness::free_port().unwrap_or(1);
        let error = ApiClient::new(&format!("http://127.0.0.1:{port}/"), None)
            .status()
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Unreachable { url, .. } if url.ends_with(&format!("{port}/api/status"))),
            "{error:?}"
        );
    }
}
