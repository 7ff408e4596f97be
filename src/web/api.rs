//! The JSON API, the metrics and health endpoints, SSE execution logs and the panel files.

use actix::prelude::*;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::openapi::{
    ApiError, BandwidthDoc, ComputeDoc, Health, ResourcesDoc, SandboxDoc, StatusDoc, TaskCreated,
};
use super::{WebError, WebState};
use crate::actors::distributor::{
    CancelTask, CreateTaskAttempt, GetTask, ListTasks, MarketError, TaskStatus, TaskView,
};
use crate::actors::panel_hub::TRANSACTION_LOG_MAX;
use crate::messages::DropReason;
use crate::metrics::NetMetrics;
use crate::protocol::accounting::GetResources;
use crate::protocol::execution::GetExecutorStatus;
use crate::protocol::execution::{ExecutionEvent, SubscribeExecution};
use crate::protocol::ledger::GetBalance;
use crate::protocol::mesh::{GetMeshStatus, GetPeers, PeerInfo, RelayState};
use crate::protocol::panel::{GetHubStats, GetTransactions, TransactionLogEntry, TransactionType};

/// Events queued per SSE client before it is cut off.
const SSE_QUEUE_MAX: usize = 1024;
const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

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

/// The panel. With `?token=<token>` (the login URL the node logs at start; the access guard
/// has already refused a wrong token) it sets the session cookie and sends the browser to
/// the clean URL, so the token leaves the address bar and the history.
async fn index(request: actix_web::HttpRequest, state: web::Data<WebState>) -> HttpResponse {
    let policy = &state.policy;
    let logging_in =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned())
            .is_some_and(|token| {
                super::token_matches(Some(&format!("Bearer {token}")), &policy.token)
            });
    if logging_in {
        let cookie = actix_web::cookie::Cookie::build(&policy.cookie_name, &policy.session)
            .path("/")
            .http_only(true)
            .same_site(actix_web::cookie::SameSite::Strict)
            .finish();
        return HttpResponse::SeeOther()
            .cookie(cookie)
            .insert_header((actix_web::http::header::LOCATION, "/"))
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .finish();
    }
    // Without the session the page still loads (it holds no data), but it says how to log
    // in instead of knocking on `/ws` forever.
    let cookies = request
        .headers()
        .get(actix_web::http::header::COOKIE)
        .and_then(|v| v.to_str().ok());
    let logged_in = super::access::cookie_value(cookies, &policy.cookie_name)
        .is_some_and(|value| value == policy.session);
    let page = if logged_in {
        std::borrow::Cow::Borrowed(INDEX_HTML)
    } else {
        std::borrow::Cow::Owned(INDEX_HTML.replacen("<body>", "<body data-login=\"needed\">", 1))
    };
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(page.into_owned())
}

async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/javascript; charset=utf-8")
        .body(APP_JS)
}

async fn style_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE_CSS)
}

#[utoipa::path(get, path = "/healthz", tag = "node",
    responses((status = 200, description = "The node answers", body = Health)))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "node",
    responses((status = 200, description = "This description (OpenAPI 3.1)", body = Object)))]
pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document())
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
        .settler
        .send(GetBalance)
        .await
        .map_err(gone)?
        .map_err(|e| WebError::Internal {
            detail: e.to_string(),
        })?;
    Ok((mesh, balance))
}

/// The status document (also part of the websocket snapshot).
pub(super) async fn status_value(state: &WebState) -> Result<Value, WebError> {
    let node = &state.node;
    let (mesh, balance) = mesh_and_balance(node).await?;
    to_value(StatusDoc {
        node_id: mesh.node_id,
        peer_id: mesh.peer_id,
        uptime_s: (chrono::Utc::now() - node.started_at).num_seconds().max(0),
        peers: mesh.peers,
        relay: mesh.relay,
        relay_only: mesh.relay_only,
        balance: balance.balance,
        escrowed: balance.escrowed,
        listen_addrs: mesh.listen_addrs,
        version: env!("CARGO_PKG_VERSION").into(),
        sandbox: SandboxDoc::current(node.config.executor.sandbox),
    })
}

fn to_value(value: impl Serialize) -> Result<Value, WebError> {
    serde_json::to_value(value).map_err(|e| WebError::Internal {
        detail: e.to_string(),
    })
}

#[utoipa::path(get, path = "/api/status", tag = "node", responses(
    (status = 200, description = "Identity, mesh and balance", body = StatusDoc),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(super) async fn status(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(status_value(&state).await?))
}

pub(super) async fn peers_value(state: &WebState) -> Result<Value, WebError> {
    let peers = state.node.peer_manager.send(GetPeers).await.map_err(gone)?;
    to_value(peers)
}

#[utoipa::path(get, path = "/api/peers", tag = "mesh", responses(
    (status = 200, description = "The peer table", body = Vec<PeerInfo>),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(super) async fn peers(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(peers_value(&state).await?))
}

pub(super) async fn resources_value(state: &WebState) -> Result<Value, WebError> {
    let snapshot = state
        .node
        .accountant
        .send(GetResources)
        .await
        .map_err(gone)?;
    let compute = state
        .node
        .executor
        .send(GetExecutorStatus)
        .await
        .map_err(gone)?;
    to_value(ResourcesDoc {
        bandwidth: BandwidthDoc {
            upload_mbps: snapshot.upload_mbps,
            download_mbps: snapshot.download_mbps,
            limit_mbps: snapshot.bandwidth_limit_mbps,
            bytes_in_today: snapshot.bytes_in_today,
            bytes_out_today: snapshot.bytes_out_today,
            by_purpose: snapshot.bytes_by_purpose,
            value_today: snapshot.bandwidth_value_today,
            history: snapshot.history,
        },
        compute: ComputeDoc {
            active: compute.active,
            max: compute.max,
            completed_today: compute.completed_today,
            cpu_seconds_today: snapshot.cpu_seconds_today,
            memory_gb_seconds_today: snapshot.memory_gb_seconds_today,
            value_today: snapshot.compute_value_today,
        },
    })
}

#[utoipa::path(get, path = "/api/resources", tag = "mesh", responses(
    (status = 200, description = "Bandwidth and compute metered today", body = ResourcesDoc),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(super) async fn resources(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(resources_value(&state).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TransactionQuery {
    /// Entries to return, newest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only entries with a `seq` below this (paging).
    #[param(minimum = 0)]
    before: Option<i64>,
    /// Only entries of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<TransactionType>)]
    kind: Option<String>,
}

const TRANSACTION_TYPES: [TransactionType; 9] = [
    TransactionType::TaskDistributed,
    TransactionType::TaskReceived,
    TransactionType::ExecutionStarted,
    TransactionType::ExecutionCompleted,
    TransactionType::ExecutionFailed,
    TransactionType::BandwidthContributed,
    TransactionType::ComputeContributed,
    TransactionType::VibeEarned,
    TransactionType::VibeSpent,
];

pub(super) async fn transactions_value(
    state: &WebState,
    limit: usize,
    before: Option<u64>,
    kind: Option<String>,
) -> Result<Value, WebError> {
    let entries = state
        .node
        .panel_hub
        .send(GetTransactions {
            limit,
            before,
            kind,
        })
        .await
        .map_err(gone)?;
    to_value(entries)
}

#[utoipa::path(get, path = "/api/transactions", tag = "ledger", params(TransactionQuery), responses(
    (status = 200, description = "The transaction log, newest first", body = Vec<TransactionLogEntry>),
    (status = 400, description = "A bad query", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(super) async fn transactions(
    state: web::Data<WebState>,
    query: Result<web::Query<TransactionQuery>, actix_web::Error>,
) -> Result<HttpResponse, WebError> {
    let query = query.map_err(|e| WebError::BadRequest {
        detail: e.to_string(),
    })?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > TRANSACTION_LOG_MAX {
        return Err(WebError::BadRequest {
            detail: format!("limit must be between 1 and {TRANSACTION_LOG_MAX}"),
        });
    }
    if let Some(kind) = &query.kind
        && !TRANSACTION_TYPES.iter().any(|t| t.name() == kind)
    {
        let names: Vec<&str> = TRANSACTION_TYPES.iter().map(|t| t.name()).collect();
        return Err(WebError::BadRequest {
            detail: format!("unknown type {kind:?}; one of {}", names.join(", ")),
        });
    }
    let before = match query.before {
        Some(before) => Some(u64::try_from(before).map_err(|_| WebError::BadRequest {
            detail: "before must not be negative".into(),
        })?),
        None => None,
    };
    Ok(HttpResponse::Ok()
        .json(transactions_value(&state, limit, before, query.kind.clone()).await?))
}

pub(super) async fn tasks_value(state: &WebState) -> Result<Value, WebError> {
    let tasks = state.node.distributor.send(ListTasks).await.map_err(gone)?;
    to_value(tasks)
}

#[utoipa::path(get, path = "/api/tasks", tag = "tasks", responses(
    (status = 200, description = "Task attempts of this node, newest first", body = Vec<TaskView>),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(super) async fn list_tasks(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(tasks_value(&state).await?))
}

fn parse_id(text: &str) -> Result<Uuid, WebError> {
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
pub(super) async fn create_task(
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
pub(super) async fn get_task(
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
pub(super) async fn cancel_task(
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
pub(super) async fn execution_logs(
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

#[utoipa::path(get, path = "/metrics", tag = "node", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(super) async fn metrics(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    let node = &state.node;
    let (mesh, balance) = mesh_and_balance(node).await?;
    let tasks = node.distributor.send(ListTasks).await.map_err(gone)?;
    let hub = node.panel_hub.send(GetHubStats).await.map_err(gone)?;
    let net = &node.metrics;
    let mut text = String::new();
    let mut line = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            text.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    line(
        "apn_peers",
        "Peers in the peer table.",
        "gauge",
        vec![(String::new(), mesh.peers as f64)],
    );
    line(
        "apn_messages_in_total",
        "Verified inbound envelopes.",
        "counter",
        vec![(String::new(), NetMetrics::get(&net.messages_in) as f64)],
    );
    line(
        "apn_messages_out_total",
        "Envelopes sent (per path).",
        "counter",
        vec![(String::new(), NetMetrics::get(&net.messages_out) as f64)],
    );
    line(
        "apn_messages_dropped_total",
        "Inbound frames dropped, by reason.",
        "counter",
        DropReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.label()),
                    net.dropped(*r) as f64,
                )
            })
            .collect(),
    );
    line(
        "apn_role_drops_total",
        "Messages a role could not be handed (mailbox full, or the role stopped), by role.",
        "counter",
        crate::metrics::Role::ALL
            .iter()
            .flat_map(|role| {
                crate::metrics::SendFailure::ALL.iter().map(move |failure| {
                    (
                        format!(
                            "{{role=\"{}\",reason=\"{}\"}}",
                            role.label(),
                            failure.label()
                        ),
                        net.role_drops(*role, *failure) as f64,
                    )
                })
            })
            .collect(),
    );
    line(
        "apn_http_refused_total",
        "HTTP requests refused by the access rules, by reason.",
        "counter",
        crate::web::Refusal::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.label()),
                    net.refused(*r) as f64,
                )
            })
            .collect(),
    );
    line(
        "apn_bytes_in_total",
        "Frame bytes received.",
        "counter",
        vec![(String::new(), NetMetrics::get(&net.bytes_in) as f64)],
    );
    line(
        "apn_bytes_out_total",
        "Frame bytes sent.",
        "counter",
        vec![(String::new(), NetMetrics::get(&net.bytes_out) as f64)],
    );
    line(
        "apn_relay_reconnects_total",
        "Times the relay connection came back.",
        "counter",
        vec![(String::new(), NetMetrics::get(&net.relay_reconnects) as f64)],
    );
    line(
        "apn_send_failures_total",
        "Sends that failed on every path.",
        "counter",
        vec![(String::new(), NetMetrics::get(&net.send_failures) as f64)],
    );
    line(
        "apn_relay_state",
        "Relay connection state (1 for the current one).",
        "gauge",
        [
            RelayState::Disabled,
            RelayState::Connecting,
            RelayState::Connected,
        ]
        .iter()
        .map(|s| {
            (
                format!("{{state=\"{}\"}}", format!("{s:?}").to_lowercase()),
                f64::from(u8::from(*s == mesh.relay)),
            )
        })
        .collect(),
    );
    line(
        "apn_tasks",
        "Task attempts by state.",
        "gauge",
        TaskStatus::ALL
            .iter()
            .map(|s| {
                let count = tasks.iter().filter(|t| t.status == *s).count();
                (
                    format!("{{state=\"{}\"}}", format!("{s:?}").to_lowercase()),
                    count as f64,
                )
            })
            .collect(),
    );
    line(
        "apn_balance_vibe",
        "This node's balance.",
        "gauge",
        vec![(String::new(), balance.balance.as_f64())],
    );
    line(
        "apn_escrowed_vibe",
        "VIBE held in escrow.",
        "gauge",
        vec![(String::new(), balance.escrowed.as_f64())],
    );
    line(
        "apn_websocket_clients",
        "Connected panel clients.",
        "gauge",
        vec![(String::new(), hub.clients as f64)],
    );
    line(
        "apn_websocket_deltas_total",
        "Deltas queued to panel clients.",
        "counter",
        vec![(String::new(), hub.deltas_sent as f64)],
    );
    line(
        "apn_websocket_slow_clients_dropped_total",
        "Panel clients dropped for not keeping up.",
        "counter",
        vec![(String::new(), hub.slow_clients_dropped as f64)],
    );
    let sandbox = SandboxDoc::current(state.node.config.executor.sandbox);
    line(
        "apn_sandbox_available",
        "1 when this kernel can sandbox runs.",
        "gauge",
        vec![(String::new(), f64::from(u8::from(sandbox.available)))],
    );
    line(
        "apn_sandbox_peer_tasks_accepted",
        "1 when this node runs peers' tasks (sandboxed, or with the sandbox off).",
        "gauge",
        vec![(
            String::new(),
            f64::from(u8::from(sandbox.peer_tasks_accepted)),
        )],
    );
    line(
        "apn_sandbox_landlock_abi",
        "The kernel's Landlock ABI version (0: none).",
        "gauge",
        vec![(String::new(), f64::from(sandbox.landlock_abi))],
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}
