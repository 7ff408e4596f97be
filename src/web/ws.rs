//! The panel's websocket (actix-ws): a full snapshot on connect, then the hub's typed deltas
//! and a status/resources refresh every few seconds. The session registers with the hub
//! before it builds the snapshot, so nothing that happens in between is lost. Heartbeat pings
//! detect dead clients.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::Message;
use futures::StreamExt;
use serde_json::json;

use super::api::{peers_value, resources_value, status_value, tasks_value, transactions_value};
use super::{WebError, WebState};
use crate::actors::panel_hub::{Connect, Disconnect};

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

async fn snapshot(state: &WebState) -> Result<String, WebError> {
    Ok(json!({
        "type": "snapshot",
        "status": status_value(state).await?,
        "peers": peers_value(state).await?,
        "resources": resources_value(state).await?,
        "transactions": transactions_value(state, SNAPSHOT_TRANSACTIONS, None, None).await?,
        "tasks": tasks_value(state).await?,
    })
    .to_string())
}

async fn refresh(state: &WebState) -> Result<String, WebError> {
    Ok(json!({
        "type": "refresh",
        "status": status_value(state).await?,
        "resources": resources_value(state).await?,
        "tasks": tasks_value(state).await?,
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
        match snapshot(&state).await {
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
                    if let Ok(text) = refresh(&state).await
                        && session.text(text).await.is_err() { break None }
                }
            }
        };
        hub.do_send(Disconnect(id));
        let _ = session.close(reason).await;
    });
    Ok(response)
}
