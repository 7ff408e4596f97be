//! Panel messages: the deltas the roles publish for the Mesh Panel, the transaction log's
//! entries, and the hub's connection and query messages.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::execution::ExecutionEvent;
use super::mesh::{PeerInfo, RelayState};
use crate::messages::Vibe;
use crate::metrics::{NetMetrics, Role, try_send_counted};

/// The typed entries of the transaction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionType {
    /// One of this node's tasks was offered to the mesh.
    TaskDistributed,
    /// This node accepted a peer's task to run.
    TaskReceived,
    /// One of this node's tasks started running, here or on a peer.
    ExecutionStarted,
    /// One of this node's tasks completed (for a remote run, verified and paid).
    ExecutionCompleted,
    /// One of this node's tasks failed.
    ExecutionFailed,
    /// Bytes this node sent to peers since the last such entry.
    BandwidthContributed,
    /// This node finished running a peer's task; the entry values the CPU it used.
    ComputeContributed,
    /// A payment from a peer was credited to this node.
    VibeEarned,
    /// This node paid a peer (a task's price or a bandwidth share).
    VibeSpent,
}

/// One line of the transaction log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TransactionLogEntry {
    /// Increasing; `before=` pages by it.
    pub seq: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// When the entry was made.
    pub at: DateTime<Utc>,
    /// The task concerned, if any.
    pub task_id: Option<Uuid>,
    /// The other node, when there is one.
    pub peer: Option<String>,
    /// VIBE moved or valued, when the entry has an amount.
    pub amount: Option<Vibe>,
    /// A sentence for people ("Fix the login bug → apn_1a2b3c4d").
    pub detail: String,
}

/// Something the panel shows changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum PanelEvent {
    /// A peer appeared or changed (latency, bytes, capabilities, path).
    PeerUpdated(PeerInfo),
    /// A peer left the table (peer id).
    PeerRemoved(String),
    /// The relay connection changed state.
    RelayState(RelayState),
    /// A verified message arrived (kind, sender node id). Counted, not logged: the roles
    /// report what it meant as `Transaction`s.
    MessageReceived {
        /// The message's variant name.
        kind: &'static str,
        /// The sender's node id.
        from: String,
    },
    /// A transaction log entry.
    Transaction(TransactionLogEntry),
    /// Progress, a log line, start or end of one of this node's tasks.
    Execution(ExecutionEvent),
}

/// Register a websocket session: its id and its queue of JSON deltas. A delta is encoded
/// once and shared by every session (`ByteString` clones share the bytes).
#[derive(Debug, Message)]
#[rtype(result = "Option<(u64, mpsc::Receiver<bytestring::ByteString>)>")]
pub struct Connect;

/// A session ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Disconnect(pub u64);

/// Log entries, newest first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<TransactionLogEntry>")]
pub struct GetTransactions {
    /// The most entries to return (clamped to 1..=`TRANSACTION_LOG_MAX`).
    pub limit: usize,
    /// Only entries with `seq` below this.
    pub before: Option<u64>,
    /// Only entries of this type, by its snake_case name (e.g. `vibe_earned`).
    pub kind: Option<String>,
}

/// Hub figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HubStats {
    /// Websocket sessions open now.
    pub clients: usize,
    /// Deltas queued to sessions, one per session per delta.
    pub deltas_sent: u64,
    /// Sessions closed because their queue was full.
    pub slow_clients_dropped: u64,
    /// Verified inbound messages reported by the peer manager.
    pub messages_seen: u64,
}

/// Ask for [`HubStats`].
#[derive(Debug, Message)]
#[rtype(result = "HubStats")]
pub struct GetHubStats;

/// Where a role publishes panel deltas: the hub's mailbox is bounded, and a full hub loses
/// the delta (counted in `apn_role_drops_total{role="panel"}`), never stalls the role.
#[derive(Clone)]
pub struct PanelSender {
    hub: Recipient<PanelEvent>,
    metrics: Arc<NetMetrics>,
}

impl PanelSender {
    /// A sender to `hub` that counts lost deltas in `metrics`.
    pub fn new(hub: Recipient<PanelEvent>, metrics: Arc<NetMetrics>) -> Self {
        PanelSender { hub, metrics }
    }

    /// Hand `event` to the hub now, or count it lost.
    pub fn publish(&self, event: PanelEvent) {
        try_send_counted(&self.hub, event, &self.metrics, Role::Panel);
    }
}
