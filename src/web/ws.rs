//! The panel's websocket (actix-ws): a full snapshot on connect, then the hub's typed deltas
//! and a status/resources refresh every few seconds. The session registers with the hub
//! before it builds the snapshot, so nothing that happens in between is lost. Heartbeat pings
//! detect dead clients.
//!
//! Tasks travel without their diffs (a diff can be hundreds of KiB; the task says how big in
//! `diff_bytes`, and the panel fetches it on demand with `GET /api/tasks/{id}`), and a refresh
//! carries only the tasks that changed since this session last saw them (`tasks`) and the ids
//! of those gone (`removed`), not the whole list.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::Message;
use futures::StreamExt;
use serde_json::{Value, json};

use super::api::{peers_value, resources_value, status_value, tasks_value, transactions_value};
use super::{WebError, WebState};
use crate::protocol::panel::{Connect, Disconnect};

/// How often the server pings.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A client silent for this long is gone.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often status and resources are refreshed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Transaction log entries in the snapshot.
const SNAPSHOT_TRANSACTIONS: usize = 100;
/// Largest message accepted from a client (it only sends pings and closes).
const CLIENT_FRAME_BYTES_MAX: usize = 4 * 1024;

/// A task as the panel's list shows it: everything but the diff, whose size is
/// `diff_bytes` (0 when there is none).
pub(super) fn without_diff(mut task: Value) -> Value {
    if let Some(fields) = task.as_object_mut() {
        let bytes = fields
            .remove("diff")
            .and_then(|d| d.as_str().map(str::len))
            .unwrap_or(0);
        fields.insert("diff_bytes".into(), bytes.into());
    }
    task
}

/// What one session last sent of each task (by id, as JSON text without the diff).
#[derive(Debug, Default)]
pub(super) struct SentTasks(HashMap<String, String>);

impl SentTasks {
    /// The tasks of `list` that are new or changed since the last call, and the ids of the
    /// tasks no longer listed; remembers `list` for the next call.
    pub(super) fn deltas(&mut self, list: &Value) -> (Vec<Value>, Vec<String>) {
        let mut current = HashMap::new();
        let mut changed = Vec::new();
        for task in list.as_array().into_iter().flatten() {
            let task = without_diff(task.clone());
            let Some(id) = task.get("id").and_then(Value::as_str).map(String::from) else {
                continue;
            };
            let text = task.to_string();
            if self.0.get(&id) != Some(&text) {
                changed.push(task);
            }
            current.insert(id, text);
        }
        let mut removed: Vec<String> = self
            .0
            .keys()
            .filter(|id| !current.contains_key(*id))
            .cloned()
            .collect();
        removed.sort();
        self.0 = current;
        (changed, removed)
    }
}

async fn snapshot(state: &WebState, sent: &mut SentTasks) -> Result<String, WebError> {
    let (tasks, _) = sent.deltas(&tasks_value(state).await?);
    Ok(json!({
        "type": "snapshot",
        "status": status_value(state).await?,
        "peers": peers_value(state).await?,
        "resources": resources_value(state).await?,
        "transactions": transactions_value(state, SNAPSHOT_TRANSACTIONS, None, None).await?,
        "tasks": tasks,
    })
    .to_string())
}

async fn refresh(state: &WebState, sent: &mut SentTasks) -> Result<String, WebError> {
    let (tasks, removed) = sent.deltas(&tasks_value(state).await?);
    Ok(json!({
        "type": "refresh",
        "status": status_value(state).await?,
        "resources": resources_value(state).await?,
        "tasks": tasks,
        "removed": removed,
    })
    .to_string())
}

pub(super) async fn websocket(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebState>,
) -> Result<HttpResponse, actix_web::Error> {
    let hub = state.node.panel_hub.clone();
    let Some((id, mut deltas)) = hub.send(Connect).await.map_err(|e| WebError::Unavailable {
        detail: e.to_string(),
    })?
    else {
        return Err(WebError::Unavailable {
            detail: "too many panel clients".into(),
        }
        .into());
    };
    let (response, mut session, stream) = actix_ws::handle(&request, body)?;
    let mut stream = stream.max_frame_size(CLIENT_FRAME_BYTES_MAX);
    let state = state.get_ref().clone();
    actix_rt::spawn(async move {
        let mut sent = SentTasks::default();
        match snapshot(&state, &mut sent).await {
            Ok(text) => {
                if session.text(text).await.is_err() {
                    hub.do_send(Disconnect(id));
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "panel snapshot failed"),
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        let mut refresher = tokio::time::interval(REFRESH_INTERVAL);
        let mut last_heard = Instant::now();
        let reason = loop {
            tokio::select! {
                delta = deltas.recv() => match delta {
                    Some(text) => if session.text(text).await.is_err() { break None },
                    // The hub dropped this session: too slow. The page reconnects.
                    None => break Some(actix_ws::CloseReason { code: actix_ws::CloseCode::Again, description: Some("too slow; reconnect".into()) }),
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Ping(bytes))) => { last_heard = Instant::now(); if session.pong(&bytes).await.is_err() { break None } }
                    Some(Ok(Message::Pong(_))) => last_heard = Instant::now(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => last_heard = Instant::now(),
                },
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > CLIENT_TIMEOUT { break None }
                    if session.ping(b"").await.is_err() { break None }
                }
                _ = refresher.tick() => {
                    if let Ok(text) = refresh(&state, &mut sent).await
                        && session.text(text).await.is_err() { break None }
                }
            }
        };
        hub.do_send(Disconnect(id));
        let _ = session.close(reason).await;
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_tasks_travel_and_never_their_diffs() {
        let mut sent = SentTasks::default();
        let a = json!({"id": "a", "status": "running", "diff": null});
        let b = json!({"id": "b", "status": "completed", "diff": "x".repeat(1000)});
        let (changed, removed) = sent.deltas(&json!([a, b]));
        assert_eq!(changed.len(), 2);
        assert!(removed.is_empty());
        assert!(changed.iter().all(|t| t.get("diff").is_none()));
        assert_eq!(changed[0]["diff_bytes"], 0);
        assert_eq!(changed[1]["diff_bytes"], 1000);
        // Nothing changed: nothing travels.
        let (changed, removed) = sent.deltas(&json!([a, b]));
        assert!(changed.is_empty() && removed.is_empty());
        // One changed, one gone, one new.
        let a2 = json!({"id": "a", "status": "completed", "diff": "+x"});
        let c = json!({"id": "c", "status": "pending"});
        let (changed, removed) = sent.deltas(&json!([a2, c]));
        assert_eq!(
            changed.iter().map(|t| t["id"].clone()).collect::<Vec<_>>(),
            vec![json!("a"), json!("c")]
        );
        assert_eq!(removed, vec!["b".to_string()]);
        // Entries without an id are skipped.
        let (changed, _) = sent.deltas(&json!([{"status": "x"}]));
        assert!(changed.is_empty());
    }
}
