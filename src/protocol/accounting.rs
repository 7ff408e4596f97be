//! Resource accounting messages: bytes moved per peer and purpose, the bytes this node
//! pays for, compute used by runs, and the resource snapshot the API shows.

use std::collections::BTreeMap;

use actix::prelude::*;
use libp2p::PeerId;
use serde::Serialize;
use uuid::Uuid;

use crate::messages::{BandwidthPurpose, ComputeUsage, Vibe};

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// Bytes moved with a peer.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BytesTransferred {
    pub peer: PeerId,
    pub purpose: BandwidthPurpose,
    pub direction: Direction,
    pub bytes: u64,
}

/// Bytes this node asked for and pays for: the logs and progress of a task it assigned to
/// `peer`, counted by the distributor only after it checked that `peer` is the task's
/// executor. Traffic a peer pushes unasked is counted in the totals, never paid.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BillableBytes {
    pub peer: PeerId,
    pub bytes: u64,
}

/// Compute a finished run used, measured from its process.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ComputeUsed {
    pub task_id: Uuid,
    /// The originator, for runs done for a peer.
    pub peer: Option<PeerId>,
    pub usage: ComputeUsage,
}

/// One point of the rate chart.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RatePoint {
    pub at_s: i64,
    pub upload_mbps: f64,
    pub download_mbps: f64,
}

/// Totals for one peer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PeerBytes {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What the panel and `/api/resources` show.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSnapshot {
    pub upload_mbps: f64,
    pub download_mbps: f64,
    pub bandwidth_limit_mbps: u32,
    pub bytes_in_today: u64,
    pub bytes_out_today: u64,
    pub bytes_by_purpose: BTreeMap<String, u64>,
    pub cpu_seconds_today: f64,
    pub memory_gb_seconds_today: f64,
    /// Compute given to peers today, priced at `compute_rate_per_cpu_hour`.
    pub compute_value_today: Vibe,
    /// Bandwidth given to peers today, priced at `bandwidth_rate_per_gb`.
    pub bandwidth_value_today: Vibe,
    pub peers: BTreeMap<String, PeerBytes>,
    pub history: Vec<RatePoint>,
}

/// Ask for the [`ResourceSnapshot`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "ResourceSnapshot")]
pub struct GetResources;
