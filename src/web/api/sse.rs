//! `GET /api/events/execution-processes/{id}/logs`: a task's execution events as
//! server-sent events, the history first, then live ones through a forwarding actor that
//! ends the stream of a client that does not keep up.

use actix::prelude::*;
use actix_web::{HttpResponse, web};
use futures::StreamExt;

use super::gone;
use super::tasks::parse_id;
use crate::actors::distributor::GetTask;
use crate::protocol::execution::{ExecutionEvent, SubscribeExecution};
use crate::web::openapi::ApiError;
use crate::web::{WebError, WebState};

/// Events queued per SSE client before it is cut off.
const SSE_QUEUE_MAX: usize = 1024;

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
    let history = futures::stream::iter(
        history
            .into_iter()
            .map(|e| Ok::<_, actix_web::Error>(sse_frame(&e))),
    );
    let live = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|e| Ok(sse_frame(&e)));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(history.chain(live)))
}
