//! What the roles say to the peer manager and hear from it: verified inbound messages,
//! sends and broadcasts, pings, the peer table and mesh status, subscriptions.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::identity::{NOISE_KEY_BYTES, NodeId};
use crate::messages::{APNMessage, Topic, VerifiedEnvelope, Vibe};

/// How a message reached us, or how we reach a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeerPath {
    /// A libp2p connection.
    Direct,
    /// The NATS relay.
    Relay,
}

/// State of the relay connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    /// No relay configured.
    Disabled,
    /// Configured, not connected (first attempt or reconnecting with backoff).
    Connecting,
    Connected,
}

/// One row of the peer table.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerInfo {
    pub peer_id: String,
    pub node_id: NodeId,
    pub capabilities: Vec<String>,
    pub executor_profiles: Vec<String>,
    pub compute_rate_per_cpu_hour: Option<Vibe>,
    pub min_task_reward: Option<Vibe>,
    pub max_concurrent_tasks: u32,
    pub free_slots: u32,
    /// Round-trip time from libp2p ping, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Frame bytes received from and sent to this peer.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The path last used with this peer.
    pub path: PeerPath,
    /// A libp2p connection is open now.
    pub connected: bool,
    /// An announcement from it was verified (capabilities are known).
    pub announced: bool,
    pub listen_addrs: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A verified inbound message, delivered to the role that owns its variant.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub envelope: Arc<VerifiedEnvelope>,
    pub path: PeerPath,
}

/// Send `message` to every peer (gossipsub, and the relay when connected).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), crate::mesh::MeshError>")]
pub struct Broadcast {
    pub topic: Topic,
    pub message: APNMessage,
}

/// Send `message` to one peer: direct when connected, else through the relay.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PeerPath, crate::mesh::MeshError>")]
pub struct SendTo {
    pub peer: libp2p::PeerId,
    pub message: APNMessage,
}

/// Measure the round trip of a `PingRequest`/`PingReply` pair through `SendTo`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<std::time::Duration, crate::mesh::MeshError>")]
pub struct Ping {
    pub peer: libp2p::PeerId,
}

/// The peer table.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<PeerInfo>")]
pub struct GetPeers;

/// This node's network status.
#[derive(Debug, Clone, Serialize)]
pub struct MeshStatus {
    pub node_id: NodeId,
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub relay: RelayState,
    pub relay_only: bool,
    /// Peers in the table.
    pub peers: usize,
}

/// Ask for [`MeshStatus`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "MeshStatus")]
pub struct GetMeshStatus;

/// Receive a copy of every verified inbound message (tests, tools).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<Inbound>);

/// Stop the transports (connections closed, relay drained) and the actor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The verified Noise static key a peer announced, if it has announced.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<[u8; NOISE_KEY_BYTES]>")]
pub struct GetPeerNoiseKey(pub PeerId);

/// Update the free slots announced to the mesh (sent by the executor when they change).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetFreeSlots(pub u32);
