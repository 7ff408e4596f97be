//! Panel messages: the deltas the roles publish for the Mesh Panel, the transaction log's
//! entries, and the hub's connection and query messages.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::execution::ExecutionEvent;
use super::mesh::{PeerInfo, RelayState};
use crate::messages::Vibe;
use crate::metrics::{NetMetrics, Role, try_send_counted};

/// The typed entries of the transaction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// One line of the transaction log, in the seed's `TransactionLog` shape: `id`, `timestamp`,
/// `type`, `details` (typed per type) and `description`, plus `seq` for `before=` paging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransactionLogEntry {
    /// Unique id of the entry.
    pub id: Uuid,
    /// Increasing, also across restarts; `before=` pages by it. Set by the hub.
    pub seq: u64,
    /// When the entry was made.
    pub timestamp: DateTime<Utc>,
    /// `type` and `details`: what happened, with the fields of its kind.
    #[serde(flatten)]
    pub details: TransactionDetails,
    /// A sentence for people ("Fix the login bug offered to the mesh").
    pub description: String,
}

/// What happened, with the typed fields the seed's dashboard reads; serialized as the
/// entry's `type` (snake_case) and `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "details", rename_all = "snake_case")]
pub enum TransactionDetails {
    /// One of this node's tasks was offered to the mesh.
    TaskDistributed(TaskDistributedDetails),
    /// This node accepted a peer's task to run (`origin_node`, expected `vibe_earned`).
    TaskReceived(ExecutionDetails),
    /// A task started running: one of this node's, here or on a peer, or a peer's task
    /// here (then with `origin_node`).
    ExecutionStarted(ExecutionDetails),
    /// A task completed (for this node's remote run: verified and paid).
    ExecutionCompleted(ExecutionDetails),
    /// A task failed.
    ExecutionFailed(ExecutionDetails),
    /// Bytes this node sent to peers since the last such entry.
    BandwidthContributed(BandwidthDetails),
    /// This node finished running a peer's task; the entry values the CPU it used.
    ComputeContributed(ComputeDetails),
    /// A payment from a peer was credited to this node.
    VibeEarned(VibeEarnedDetails),
    /// This node paid a peer (a task's price or a bandwidth share).
    VibeSpent(VibeSpentDetails),
}

/// `task_distributed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDistributedDetails {
    /// The task.
    pub task_id: Uuid,
    /// The task's title.
    pub task_title: String,
    /// The node offered the task, when it went to one node rather than to the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// The most the task pays, in VIBE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_vibe: Option<Vibe>,
}

/// `task_received` and `execution_started` / `_completed` / `_failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionDetails {
    /// The task.
    pub task_id: Uuid,
    /// The task's title.
    pub task_title: String,
    /// The node running it (`local` for an originator's own run on itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_node: Option<String>,
    /// The node whose task it is, on entries of runs this node does for a peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_node: Option<String>,
    /// How long the run took, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_time_ms: Option<u64>,
    /// How many files the result changes, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_modified: Option<u64>,
    /// What the originator paid for the run (originator's `execution_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vibe_paid: Option<Vibe>,
    /// What the executor earns for a peer's run: the agreed price (expected until the
    /// payment arrives, which a `vibe_earned` entry records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vibe_earned: Option<Vibe>,
    /// Why it failed (`execution_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `bandwidth_contributed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BandwidthDetails {
    /// Bytes sent.
    pub bytes: u64,
    /// What the bytes carried.
    pub purpose: String,
    /// The peer they went to, when one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_node: Option<String>,
    /// VIBE the peer actually paid for these bytes (the payment its signed
    /// `BandwidthContribution` names, checked against this node's ledger); never a local
    /// estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vibe_earned: Option<Vibe>,
}

/// `compute_contributed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComputeDetails {
    /// The peer's task that used the compute.
    pub task_id: Uuid,
    /// The task's title.
    pub task_title: String,
    /// The peer whose task it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_node: Option<String>,
    /// VIBE paid for the run: the escrow released to this node, once credited.
    pub vibe_earned: Vibe,
    /// CPU seconds the run used.
    pub cpu_seconds: f64,
    /// Memory the run held, in GB·s.
    pub memory_gb_seconds: f64,
}

/// `vibe_earned`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VibeEarnedDetails {
    /// VIBE credited to this node.
    pub vibe_earned: Vibe,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_node: Option<String>,
    /// The task paid for, when the payment is for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    /// What the payment is for (e.g. `task`, `bandwidth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// `vibe_spent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VibeSpentDetails {
    /// VIBE paid by this node.
    pub vibe_spent: Vibe,
    /// The payee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_node: Option<String>,
    /// The task paid for, when the payment is for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    /// What the payment is for (e.g. `task`, `bandwidth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl TransactionDetails {
    /// The entry's type.
    pub fn kind(&self) -> TransactionType {
        match self {
            TransactionDetails::TaskDistributed(_) => TransactionType::TaskDistributed,
            TransactionDetails::TaskReceived(_) => TransactionType::TaskReceived,
            TransactionDetails::ExecutionStarted(_) => TransactionType::ExecutionStarted,
            TransactionDetails::ExecutionCompleted(_) => TransactionType::ExecutionCompleted,
            TransactionDetails::ExecutionFailed(_) => TransactionType::ExecutionFailed,
            TransactionDetails::BandwidthContributed(_) => TransactionType::BandwidthContributed,
            TransactionDetails::ComputeContributed(_) => TransactionType::ComputeContributed,
            TransactionDetails::VibeEarned(_) => TransactionType::VibeEarned,
            TransactionDetails::VibeSpent(_) => TransactionType::VibeSpent,
        }
    }
}

impl TransactionLogEntry {
    /// An entry made now, with a fresh id; `seq` is set by the hub.
    pub fn new(details: TransactionDetails, description: impl Into<String>) -> Self {
        TransactionLogEntry {
            id: Uuid::new_v4(),
            seq: 0,
            timestamp: Utc::now(),
            details,
            description: description.into(),
        }
    }

    /// The entry's type.
    pub fn kind(&self) -> TransactionType {
        self.details.kind()
    }

    /// The VIBE the entry moves or promises, when it names one: a reward offered, a price
    /// paid, VIBE earned or spent.
    pub fn amount(&self) -> Option<Vibe> {
        match &self.details {
            TransactionDetails::TaskDistributed(d) => d.reward_vibe,
            TransactionDetails::TaskReceived(d)
            | TransactionDetails::ExecutionStarted(d)
            | TransactionDetails::ExecutionCompleted(d)
            | TransactionDetails::ExecutionFailed(d) => d.vibe_paid.or(d.vibe_earned),
            TransactionDetails::BandwidthContributed(d) => d.vibe_earned,
            TransactionDetails::ComputeContributed(d) => Some(d.vibe_earned),
            TransactionDetails::VibeEarned(d) => Some(d.vibe_earned),
            TransactionDetails::VibeSpent(d) => Some(d.vibe_spent),
        }
    }
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

/// Log entries, newest first: from the hub's ring, then (for older pages) from the store.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<TransactionLogEntry>, crate::transaction_log::TransactionStoreError>")]
pub struct GetTransactions {
    /// The most entries to return (clamped to 1..=`TRANSACTION_LOG_MAX`).
    pub limit: usize,
    /// Only entries with `seq` below this.
    pub before: Option<u64>,
    /// Only entries of this type, by its snake_case name (e.g. `vibe_earned`).
    pub kind: Option<String>,
}

/// Answers once every entry logged before it is on disk (at once without a store).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct FlushTransactions;

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
    /// Transaction log entries not written to disk because the writer's queue was full.
    pub transactions_unstored: u64,
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
