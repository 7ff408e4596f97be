//! Resource accounting messages: bytes moved per peer and purpose, the bytes this node
//! pays for, compute used by runs, and the resource snapshot the API shows.

use std::collections::BTreeMap;

use actix::prelude::*;
use libp2p::PeerId;
use serde::Serialize;
use uuid::Uuid;

use crate::messages::{
    BandwidthContribution, BandwidthPurpose, ComputeContribution, ComputeUsage, Vibe,
    VibeTransaction,
};

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent to the peer.
    Out,
}

/// Bytes moved with a peer.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BytesTransferred {
    /// The peer at the other end of the connection.
    pub peer: PeerId,
    /// What the bytes carried (derived from the message variant).
    pub purpose: BandwidthPurpose,
    /// Whether the bytes were received or sent.
    pub direction: Direction,
    /// Size of the frame on the wire, in bytes.
    pub bytes: u64,
}

/// Bytes this node asked for and pays for: the logs and progress of a task it assigned to
/// `peer`, counted by the distributor only after it checked that `peer` is the task's
/// executor. Traffic a peer pushes unasked is counted in the totals, never paid.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BillableBytes {
    /// The executor of the assigned task, whom this node owes for the bytes.
    pub peer: PeerId,
    /// Bytes of that task's logs and progress received from `peer`.
    pub bytes: u64,
}

/// Compute a finished run used, measured from its process.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ComputeUsed {
    /// The task the run was for.
    pub task_id: Uuid,
    /// The originator, for runs done for a peer.
    pub peer: Option<PeerId>,
    /// What the run used, measured from its process.
    pub usage: ComputeUsage,
}

/// This node admitted a peer's task, paid from escrow `escrow_id`: when that escrow's
/// payment is credited, the accountant tells the originator what the run contributed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RunForPeer {
    /// The originator's task id.
    pub task_id: Uuid,
    /// The escrow paying for the run (`TaskAssigned::escrow_id`; the payment's `tx_id`).
    pub escrow_id: Uuid,
    /// The originator.
    pub origin: PeerId,
    /// The task's title, for the panel's entry.
    pub title: String,
}

/// A peer's payment was credited to this node for the first time (sent by the courier).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PaymentCredited {
    /// The payer, who signed the payment and the envelope that carried it.
    pub payer: PeerId,
    /// The payment as credited.
    pub transaction: VibeTransaction,
}

/// A contribution record from a peer that passed `accountant::contributions`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceivedContribution {
    /// A payer's record of the bandwidth this node carried for it.
    Bandwidth(BandwidthContribution),
    /// An executor's record of the compute it gave one of this node's tasks.
    Compute(ComputeContribution),
}

/// The verified contribution records received, oldest first (the most recent
/// `accountant::RECEIVED_MAX`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<ReceivedContribution>")]
pub struct GetContributions;

/// One point of the rate chart.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RatePoint {
    /// End of the sampling step, seconds since the Unix epoch.
    pub at_s: i64,
    /// Average upload rate over the last minute, in megabits per second.
    pub upload_mbps: f64,
    /// Average download rate over the last minute, in megabits per second.
    pub download_mbps: f64,
}

/// Totals for one peer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PeerBytes {
    /// Bytes received from the peer today (UTC).
    pub bytes_in: u64,
    /// Bytes sent to the peer today (UTC).
    pub bytes_out: u64,
}

/// What the panel and `/api/resources` show.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSnapshot {
    /// Upload rate over the last minute, in megabits per second.
    pub upload_mbps: f64,
    /// Download rate over the last minute, in megabits per second.
    pub download_mbps: f64,
    /// The configured bandwidth cap (`max_bandwidth_mbps`), in megabits per second.
    pub bandwidth_limit_mbps: u32,
    /// Bytes received from all peers since midnight UTC.
    pub bytes_in_today: u64,
    /// Bytes sent to all peers since midnight UTC.
    pub bytes_out_today: u64,
    /// Bytes moved today by purpose (`task_relay`, `log_stream`, `git_sync`).
    pub bytes_by_purpose: BTreeMap<String, u64>,
    /// CPU time of runs on this node since midnight UTC, in seconds.
    pub cpu_seconds_today: f64,
    /// Memory integrated over time of runs since midnight UTC, in GB·seconds.
    pub memory_gb_seconds_today: f64,
    /// Compute given to peers today, priced at `compute_rate_per_cpu_hour`.
    pub compute_value_today: Vibe,
    /// Bandwidth given to peers today, priced at `bandwidth_rate_per_gb`.
    pub bandwidth_value_today: Vibe,
    /// Bytes in and out today per peer, keyed by peer id (at most `PEERS_TRACKED_MAX`).
    pub peers: BTreeMap<String, PeerBytes>,
    /// Upload and download rates sampled every 5 s, oldest first (at most 120 points).
    pub history: Vec<RatePoint>,
}

/// Ask for the [`ResourceSnapshot`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "ResourceSnapshot")]
pub struct GetResources;
