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
    /// Connected to the NATS server.
    Connected,
}

/// One row of the peer table.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerInfo {
    /// The peer's libp2p peer id, as text.
    pub peer_id: String,
    /// Display name derived from the peer's public key.
    pub node_id: NodeId,
    /// Capability tags from its announcement (empty until it announces).
    pub capabilities: Vec<String>,
    /// Executor profiles it announced it can run.
    pub executor_profiles: Vec<String>,
    /// Its announced price per CPU-hour; `None` until it announces.
    pub compute_rate_per_cpu_hour: Option<Vibe>,
    /// The smallest reward it announced it will bid for; `None` until it announces.
    pub min_task_reward: Option<Vibe>,
    /// Task slots it announced in total (0 until it announces).
    pub max_concurrent_tasks: u32,
    /// Task slots free at its last announcement.
    pub free_slots: u32,
    /// Round-trip time from libp2p ping, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Frame bytes received from this peer.
    pub bytes_in: u64,
    /// Frame bytes sent to this peer.
    pub bytes_out: u64,
    /// The path last used with this peer.
    pub path: PeerPath,
    /// A libp2p connection is open now.
    pub connected: bool,
    /// An announcement from it was verified (capabilities are known).
    pub announced: bool,
    /// When its latest announcement was verified here: its offer (profiles, free slots,
    /// price) is as fresh as this (`market.offer_ttl_ms`).
    #[serde(default)]
    pub announced_at: Option<DateTime<Utc>>,
    /// Multiaddrs it listens on, from its announcement or from libp2p identify.
    pub listen_addrs: Vec<String>,
    /// When the peer entered the table.
    pub first_seen: DateTime<Utc>,
    /// When we last heard from it (a verified message or a libp2p ping).
    pub last_seen: DateTime<Utc>,
}

/// A verified inbound message, delivered to the role that owns its variant.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Inbound {
    /// The message, with its signature, freshness and replay checks passed.
    pub envelope: Arc<VerifiedEnvelope>,
    /// How the message reached us.
    pub path: PeerPath,
}

/// Send `message` to every peer (gossipsub, and the relay when connected).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), crate::mesh::MeshError>")]
pub struct Broadcast {
    /// The gossip topic (and relay subject suffix) to publish on.
    pub topic: Topic,
    /// The message to sign and publish.
    pub message: APNMessage,
}

/// Send `message` to one peer: direct when connected, else through the relay.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PeerPath, crate::mesh::MeshError>")]
pub struct SendTo {
    /// The recipient.
    pub peer: libp2p::PeerId,
    /// The message to sign and send.
    pub message: APNMessage,
}

/// Measure the round trip of a `PingRequest`/`PingReply` pair through `SendTo`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<std::time::Duration, crate::mesh::MeshError>")]
pub struct Ping {
    /// The peer to ping.
    pub peer: libp2p::PeerId,
}

/// The peer table.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<PeerInfo>")]
pub struct GetPeers;

/// This node's network status.
#[derive(Debug, Clone, Serialize)]
pub struct MeshStatus {
    /// This node's display name.
    pub node_id: NodeId,
    /// This node's libp2p peer id, as text.
    pub peer_id: String,
    /// Multiaddrs this node listens on.
    pub listen_addrs: Vec<String>,
    /// State of the relay connection.
    pub relay: RelayState,
    /// True when configured to talk only through the relay (no libp2p).
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
