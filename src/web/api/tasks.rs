//! Task routes: list, create, get and cancel task attempts, with the distributor's errors
//! mapped to HTTP statuses.

use actix_web::{HttpResponse, web};
use serde_json::Value;
use uuid::Uuid;

use super::{gone, to_value};
use crate::actors::distributor::{
    CancelTask, CreateTaskAttempt, GetTask, ListTasks, MarketError, TaskView,
};
use crate::web::openapi::{ApiError, TaskCreated};
use crate::web::{WebError, WebState};

pub(in crate::web) async fn tasks_value(state: &WebState) -> Result<Value, WebError> {
    let tasks = state.node.distributor.send(ListTasks).await.map_err(gone)?;
    to_value(tasks)
}

#[utoipa::path(get, path = "/api/tasks", tag = "tasks", responses(
    (status = 200, description = "Task attempts of this node, newest first", body = Vec<TaskView>),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn list_tasks(
    state: web::Data<WebState>,
) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(tasks_value(&state).await?))
}

pub(super) fn parse_id(text: &str) -> Result<Uuid, WebError> {
    text.parse().map_err(|_| WebError::BadRequest {
        detail: format!("{text:?} is not a task id"),
    })
}

fn market_error(error: MarketError) -> WebError {
    match error {
        MarketError::NotFound(id) => WebError::NotFound {
            what: format!("task {id}"),
        },
        MarketError::Invalid(detail) => WebError::BadRequest { detail },
        MarketError::AlreadyFinished => WebError::Conflict {
            detail: error.to_string(),
        },
        MarketError::InsufficientBalance { .. } => WebError::Conflict {
            detail: error.to_string(),
        },
        MarketError::NoLocalCapacity(_) | MarketError::Unavailable => WebError::Unavailable {
            detail: error.to_string(),
        },
    }
}

#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = CreateTaskAttempt, responses(
    (status = 201, description = "The task attempt was created", body = TaskCreated),
    (status = 400, description = "A bad body or a task that cannot be run", body = ApiError),
    (status = 401, description = "No token or session cookie, or a wrong one (loopback included)", body = ApiError),
    (status = 403, description = "An `Origin` that is not this node", body = ApiError),
    (status = 409, description = "The balance does not cover the reward", body = ApiError),
    (status = 413, description = "The body is over `http.body_bytes_max`", body = ApiError),
    (status = 503, description = "No capacity, or the node is shutting down", body = ApiError)))]
pub(in crate::web) async fn create_task(
    state: web::Data<WebState>,
    body: web::Json<CreateTaskAttempt>,
) -> Result<HttpResponse, WebError> {
    let id = state
        .node
        .distributor
        .send(body.into_inner())
        .await
        .map_err(gone)?
        .map_err(market_error)?;
    let view = state
        .node
        .distributor
        .send(GetTask(id))
        .await
        .map_err(gone)?;
    Ok(HttpResponse::Created().json(TaskCreated { id, task: view }))
}

#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task id")), responses(
    (status = 200, description = "The task attempt", body = TaskView),
    (status = 400, description = "Not a task id", body = ApiError),
    (status = 404, description = "No such task", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn get_task(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let view = state
        .node
        .distributor
        .send(GetTask(id))
        .await
        .map_err(gone)?;
    view.map(|v| HttpResponse::Ok().json(v))
        .ok_or(WebError::NotFound {
            what: format!("task {id}"),
        })
}

#[utoipa::path(post, path = "/api/tasks/{id}/cancel", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task id")), responses(
    (status = 200, description = "The task attempt, cancelled", body = TaskView),
    (status = 400, description = "Not a task id", body = ApiError),
    (status = 401, description = "No token or session cookie, or a wrong one (loopback included)", body = ApiError),
    (status = 403, description = "An `Origin` that is not this node", body = ApiError),
    (status = 404, description = "No such task", body = ApiError),
    (status = 409, description = "The task already finished", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn cancel_task(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let view = state
        .node
        .distributor
        .send(CancelTask(id))
        .await
        .map_err(gone)?
        .map_err(market_error)?;
    Ok(HttpResponse::Ok().json(view))
}
