//! `GET /metrics`: the node's counters and gauges in the Prometheus text format.

use actix_web::{HttpResponse, web};

use super::{gone, mesh_and_balance};
use crate::actors::distributor::{ListTasks, TaskStatus};
use crate::messages::DropReason;
use crate::metrics::NetMetrics;
use crate::protocol::ledger::GetWriteStats;
use crate::protocol::mesh::RelayState;
use crate::protocol::panel::GetHubStats;
use crate::web::openapi::{ApiError, SandboxDoc};
use crate::web::{WebError, WebState};

#[utoipa::path(get, path = "/metrics", tag = "node", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
    (status = 503, description = "The node is shutting down", body = ApiError)))]
pub(in crate::web) async fn metrics(state: web::Data<WebState>) -> Result<HttpResponse, WebError> {
    let node = &state.node;
    let (mesh, balance) = mesh_and_balance(node).await?;
    let tasks = node.distributor.send(ListTasks).await.map_err(gone)?;
    let hub = node.panel_hub.send(GetHubStats).await.map_err(gone)?;
    let ledger_writes = node.settler.send(GetWriteStats).await.map_err(gone)?;
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
        "apn_ledger_commits_total",
        "SQLite transactions the local ledger committed (each one fsync); with group commit, fewer than its writes.",
        "counter",
        vec![(String::new(), ledger_writes.commits as f64)],
    );
    line(
        "apn_ledger_writes_total",
        "Durable writes (holds, releases, refunds, payments, journal entries, incoming payments) those commits carried.",
        "counter",
        vec![(String::new(), ledger_writes.writes as f64)],
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
    line(
        "apn_transactions_unstored_total",
        "Transaction log entries not written to transactions.sqlite3 (the writer's queue was full).",
        "counter",
        vec![(String::new(), hub.transactions_unstored as f64)],
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
