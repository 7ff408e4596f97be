//! The node's read-only documents: health, the OpenAPI description, status, peers,
//! resources and the transaction log. The `*_value` functions also feed the websocket
//! snapshot.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use super::{gone, mesh_and_balance, to_value};
use crate::actors::panel_hub::TRANSACTION_LOG_MAX;
use crate::protocol::accounting::GetResources;
use crate::protocol::execution::GetExecutorStatus;
use crate::protocol::mesh::{GetPeers, PeerInfo};
use crate::protocol::panel::{GetTransactions, TransactionLogEntry, TransactionType};
use crate::web::openapi::{
    ApiError, BandwidthDoc, ComputeDoc, Health, ResourcesDoc, SandboxDoc, StatusDoc,
};
use crate::web::{WebError, WebState};

#[utoipa::path(get, path = "/healthz", tag = "node",
    responses((status = 200, description = "The node answers", body = Health)))]
pub(in crate::web) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "node",
    responses((status = 200, description = "This description (OpenAPI 3.1)", body = Object)))]
pub(in crate::web) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::web::openapi::document())
}

/// The status document (also part of the websocket snapshot).
pub(in crate::web) async fn status_value(state: &WebState) -> Result<Value, WebError> {
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
        settlement: node.config.settlement.mode.label().into(),
        listen_addrs: mesh.listen_addrs,
        version: env!("CARGO_PKG_VERSION").into(),
        sandbox: SandboxDoc::current(node.config.executor.sandbox),
    })
}

#[utoipa::path(get, path = "/api/status", tag = "node", responses(
    (status = 200, description = "Identity, mesh and balance", body = StatusDoc),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn status(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(status_value(&state).await?))
}

pub(in crate::web) async fn peers_value(state: &WebState) -> Result<Value, WebError> {
    let peers = state.node.peer_manager.send(GetPeers).await.map_err(gone)?;
    to_value(peers)
}

#[utoipa::path(get, path = "/api/peers", tag = "mesh", responses(
    (status = 200, description = "The peer table", body = Vec<PeerInfo>),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn peers(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(peers_value(&state).await?))
}

pub(in crate::web) async fn resources_value(state: &WebState) -> Result<Value, WebError> {
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
pub(in crate::web) async fn resources(
    state: web::Data<WebState>,
) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::Ok().json(resources_value(&state).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::web) struct TransactionQuery {
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

pub(in crate::web) async fn transactions_value(
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
        .map_err(gone)?
        .map_err(|e| WebError::Internal {
            detail: e.to_string(),
        })?;
    to_value(entries)
}

#[utoipa::path(get, path = "/api/transactions", tag = "ledger", params(TransactionQuery), responses(
    (status = 200, description = "The transaction log, newest first", body = Vec<TransactionLogEntry>),
    (status = 400, description = "A bad query", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn transactions(
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
