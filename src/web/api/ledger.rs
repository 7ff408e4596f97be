//! `GET /api/ledger`: this node's account where its settlement mode keeps it. In `local` mode
//! the node's own SQLite ledger (balance, escrowed, last transfers); in `jetstream` mode the
//! node's projection of the network ledger (balance, escrows paying and incoming, open
//! escrows, history with paging by stream sequence).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::gone;
use crate::config::SettlementMode;
use crate::ledger::{HistoryQuery, TransferRecord};
use crate::messages::Vibe;
use crate::network_ledger::projection::{HISTORY_LIMIT_MAX, ProjectionReport};
use crate::protocol::ledger::{GetBalance, GetHistory};
use crate::protocol::network_ledger::GetLedgerReport;
use crate::web::openapi::ApiError;
use crate::web::{WebError, WebState};

/// History rows when the query names no limit.
const DEFAULT_LIMIT: usize = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::web) struct LedgerQuery {
    /// History rows to return, newest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only rows below this stream sequence (paging; `jetstream` mode).
    #[param(minimum = 0)]
    before: Option<u64>,
}

/// The document, tagged by `mode`.
#[derive(Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
enum LedgerDoc {
    Local {
        label: &'static str,
        balance: Vibe,
        escrowed: Vibe,
        transfers: Vec<TransferRecord>,
    },
    Jetstream {
        label: &'static str,
        #[serde(flatten)]
        report: ProjectionReport,
    },
}

#[utoipa::path(get, path = "/api/ledger", tag = "ledger", params(LedgerQuery), responses(
    (status = 200, description = "This node's account: `mode` local (its own ledger) or jetstream (its projection of the network ledger)", body = Object),
    (status = 400, description = "A bad query", body = ApiError),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn ledger(
    state: web::Data<WebState>,
    query: Result<web::Query<LedgerQuery>, actix_web::Error>,
) -> Result<HttpResponse, WebError> {
    let query = query.map_err(|e| WebError::BadRequest {
        detail: e.to_string(),
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > HISTORY_LIMIT_MAX {
        return Err(WebError::BadRequest {
            detail: format!("limit must be between 1 and {HISTORY_LIMIT_MAX}"),
        });
    }
    let node = &state.node;
    let mode = node.config.settlement.mode;
    let document = match (&node.network_settler, mode) {
        (Some(network), SettlementMode::Jetstream) => LedgerDoc::Jetstream {
            label: mode.label(),
            report: network
                .send(GetLedgerReport {
                    before: query.before,
                    limit,
                })
                .await
                .map_err(gone)?
                .map_err(internal)?,
        },
        _ => {
            if query.before.is_some() {
                return Err(WebError::BadRequest {
                    detail: "before pages the network ledger's history; this node settles locally: use limit".into(),
                });
            }
            let balance = node
                .balance
                .send(GetBalance)
                .await
                .map_err(gone)?
                .map_err(internal)?;
            let transfers = node
                .settler
                .send(GetHistory(HistoryQuery {
                    limit,
                    ..HistoryQuery::default()
                }))
                .await
                .map_err(gone)?
                .map_err(internal)?;
            LedgerDoc::Local {
                label: mode.label(),
                balance: balance.balance,
                escrowed: balance.escrowed,
                transfers,
            }
        }
    };
    Ok(HttpResponse::Ok().json(document))
}

fn internal(error: impl std::fmt::Display) -> WebError {
    WebError::Internal {
        detail: error.to_string(),
    }
}
