//! The JSON API, the metrics and health endpoints, SSE execution logs and the panel files.
//!
//! This file holds the route table and the helpers the handlers share; the handlers live
//! by concern in `panel.rs`, `status.rs`, `ledger.rs`, `tasks.rs`, `sse.rs` and `metrics.rs`.

mod ledger;
mod metrics;
mod panel;
mod sse;
mod status;
mod tasks;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::Value;

use super::WebError;
use crate::protocol::ledger::GetBalance;
use crate::protocol::mesh::GetMeshStatus;
pub(super) use ledger::{__path_ledger, ledger};
pub(super) use metrics::{__path_metrics, metrics};
use panel::{app_js, index, style_css};
pub(super) use sse::{
    __path_execution_logs, __path_execution_raw_logs, execution_logs, execution_raw_logs,
};
pub(super) use status::{
    __path_healthz, __path_openapi_json, __path_peers, __path_resources, __path_status,
    __path_transactions, healthz, openapi_json, peers, peers_value, resources, resources_value,
    status, status_value, transactions, transactions_value,
};
pub(super) use tasks::{
    __path_cancel_task, __path_create_task, __path_get_task, __path_list_tasks, cancel_task,
    create_task, get_task, list_tasks, tasks_value,
};

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(resource("/", "GET").route(web::get().to(index)))
        .service(resource("/app.js", "GET").route(web::get().to(app_js)))
        .service(resource("/style.css", "GET").route(web::get().to(style_css)))
        .service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics)))
        .service(resource("/api/openapi.json", "GET").route(web::get().to(openapi_json)))
        .service(resource("/api/status", "GET").route(web::get().to(status)))
        .service(resource("/api/peers", "GET").route(web::get().to(peers)))
        .service(resource("/api/resources", "GET").route(web::get().to(resources)))
        .service(resource("/api/transactions", "GET").route(web::get().to(transactions)))
        .service(resource("/api/ledger", "GET").route(web::get().to(ledger)))
        .service(
            resource("/api/tasks", "GET, POST")
                .route(web::get().to(list_tasks))
                .route(web::post().to(create_task)),
        )
        .service(resource("/api/tasks/{id}", "GET").route(web::get().to(get_task)))
        .service(resource("/api/tasks/{id}/cancel", "POST").route(web::post().to(cancel_task)))
        .service(
            resource("/api/events/execution-processes/{id}/logs", "GET")
                .route(web::get().to(execution_logs)),
        )
        .service(
            resource("/api/execution-processes/{id}/raw-logs", "GET")
                .route(web::get().to(execution_raw_logs)),
        )
        .default_service(web::to(not_found));
}

/// A route whose other methods get 405 with an `Allow` header rather than 404.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(
        move |request: actix_web::HttpRequest| async move {
            use actix_web::ResponseError;
            let mut response = WebError::MethodNotAllowed {
                method: request.method().to_string(),
                allow,
            }
            .error_response();
            response.headers_mut().insert(
                actix_web::http::header::ALLOW,
                actix_web::http::header::HeaderValue::from_static(allow),
            );
            response
        },
    ))
}

fn gone<E: std::fmt::Display>(error: E) -> WebError {
    WebError::Unavailable {
        detail: format!("the node is shutting down: {error}"),
    }
}

async fn not_found(request: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    WebError::NotFound {
        what: format!("{} {}", request.method(), request.path()),
    }
    .error_response()
}

/// The node's network status and balance (for the status document and the metrics).
async fn mesh_and_balance(
    node: &crate::actors::node::NodeHandle,
) -> Result<
    (
        crate::actors::peer_manager::MeshStatus,
        crate::actors::settler::BalanceSummary,
    ),
    WebError,
> {
    let mesh = node.peer_manager.send(GetMeshStatus).await.map_err(gone)?;
    let balance = node
        .balance
        .send(GetBalance)
        .await
        .map_err(gone)?
        .map_err(|e| WebError::Internal {
            detail: e.to_string(),
        })?;
    Ok((mesh, balance))
}

fn to_value(value: impl Serialize) -> Result<Value, WebError> {
    serde_json::to_value(value).map_err(|e| WebError::Internal {
        detail: e.to_string(),
    })
}
