//! `GET /api/events/execution-processes/{id}/logs` (and the seed's
//! `/api/execution-processes/{id}/raw-logs`): a task's execution events as server-sent
//! events, the history first, then live ones through a forwarding actor that ends the
//! stream of a client that does not keep up. The stream ends after the task's `finished`
//! event, so a client reads to its end; while nothing happens a comment line every
//! [`KEEP_ALIVE`] keeps proxies and idle timeouts from cutting it.

use actix::prelude::*;
use actix_web::{HttpResponse, web};

use super::gone;
use super::tasks::parse_id;
use crate::actors::distributor::GetTask;
use crate::protocol::execution::{ExecutionEvent, SubscribeExecution};
use crate::web::openapi::ApiError;
use crate::web::{WebError, WebState};

/// Events queued per SSE client before it is cut off.
const SSE_QUEUE_MAX: usize = 1024;
/// How long a stream stays silent before a keep-alive comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Forwards a task's execution events to one SSE client.
struct SseForwarder(tokio::sync::mpsc::Sender<ExecutionEvent>);

impl Actor for SseForwarder {
    type Context = Context<Self>;
}

impl Handler<ExecutionEvent> for SseForwarder {
    type Result = ();
    fn handle(&mut self, event: ExecutionEvent, ctx: &mut Self::Context) {
        // A client that does not keep up, or is gone, ends its stream.
        if self.0.try_send(event).is_err() {
            ctx.stop();
        }
    }
}

fn sse_frame(event: &ExecutionEvent) -> web::Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    web::Bytes::from(format!("data: {data}\n\n"))
}

/// The events to send, up to and including the task's `finished` event (the history may
/// already hold it), with a keep-alive comment after each silent [`KEEP_ALIVE`].
fn event_stream(
    history: Vec<ExecutionEvent>,
    live: tokio::sync::mpsc::Receiver<ExecutionEvent>,
) -> impl futures::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    struct State {
        history: std::vec::IntoIter<ExecutionEvent>,
        live: tokio::sync::mpsc::Receiver<ExecutionEvent>,
        done: bool,
    }
    let state = State {
        history: history.into_iter(),
        live,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let event = match state.history.next() {
            Some(event) => event,
            None => match tokio::time::timeout(KEEP_ALIVE, state.live.recv()).await {
                Ok(Some(event)) => event,
                // The forwarder stopped: the client fell behind or the node is going.
                Ok(None) => return None,
                Err(_) => return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), state)),
            },
        };
        state.done = matches!(event, ExecutionEvent::Finished { .. });
        Some((Ok(sse_frame(&event)), state))
    })
}

#[utoipa::path(get, path = "/api/events/execution-processes/{id}/logs", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task id")), responses(
    (status = 200, description = "Server-sent events: the history, then live events", content_type = "text/event-stream", body = String),
    (status = 400, description = "Not a task id", body = ApiError),
    (status = 404, description = "No such task", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn execution_logs(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    if state
        .node
        .distributor
        .send(GetTask(id))
        .await
        .map_err(gone)?
        .is_none()
    {
        return Err(WebError::NotFound {
            what: format!("task {id}"),
        });
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(SSE_QUEUE_MAX);
    let forwarder = SseForwarder(sender).start();
    let history = state
        .node
        .relay
        .send(SubscribeExecution {
            task_id: id,
            subscriber: forwarder.recipient(),
        })
        .await
        .map_err(gone)?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(event_stream(history, receiver)))
}

/// The same stream at the path the seed names for a process's raw logs.
#[utoipa::path(get, path = "/api/execution-processes/{id}/raw-logs", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task id")), responses(
    (status = 200, description = "Server-sent events: the history, then live events, ending after `finished`", content_type = "text/event-stream", body = String),
    (status = 400, description = "Not a task id", body = ApiError),
    (status = 404, description = "No such task", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn execution_raw_logs(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    execution_logs(state, id).await
}
