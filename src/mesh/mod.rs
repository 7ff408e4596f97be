//! Transport: the tasks that do network I/O for the `PeerManager`.
//!
//! - `swarm`: the libp2p swarm (TCP + Noise + Yamux; identify, ping, Kademlia, mDNS,
//!   gossipsub, request-response), driven by one task that alone owns the `Swarm`.
//! - `e2e`: Noise end-to-end encryption between originator and executor (pure).
//! - `relay`: the NATS relay client task (`apn.v1.broadcast.<topic>`, `apn.v1.node.<peer>`).
//! - `rate`: the per-peer frame budget checked before any signature (pure).
//! - `events`: the queue from a transport to the peer manager, bounded in events and bytes.
//!
//! Both take commands over a bounded channel and report `MeshEvent`s over another; neither
//! parses envelopes (the peer manager verifies every frame, and tells the swarm whether a
//! gossip message may be forwarded). Frames are opaque bytes here.

pub mod e2e;
pub mod events;
pub mod frame_codec;
pub mod rate;
pub mod relay;
pub mod swarm;

use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::{Multiaddr, PeerId};

use crate::messages::Topic;
use crate::messages::envelope::{Audience, DropReason};
use crate::protocol::mesh::RelayState;

pub use events::{EventReceiver, EventSender, MESH_EVENT_BYTES_MAX, MESH_EVENTS_MAX};

/// Commands queued to the swarm task before senders are told the mesh is busy.
pub const SWARM_COMMANDS_MAX: usize = 1024;
/// Commands queued to the relay task.
pub const RELAY_COMMANDS_MAX: usize = 1024;

/// A transport failure the caller can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeshError {
    #[error("cannot start the libp2p swarm: {0}")]
    SwarmStart(String),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("the transport is shutting down")]
    Closed,
    #[error("the transport queue is full")]
    Busy,
    #[error("no path to peer {0}: not connected and the relay is not connected")]
    NoPath(PeerId),
    #[error("direct send to {peer} failed: {reason}")]
    Direct { peer: PeerId, reason: String },
    #[error("relay publish failed: {0}")]
    Relay(String),
    #[error("cannot encode the message: {0}")]
    Encode(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("broadcast reached no path (no gossip peers and no relay)")]
    NoBroadcastPath,
}

/// What a transport task reports.
#[derive(Debug)]
pub enum MeshEvent {
    /// The swarm listens on a new address.
    ListenAddr(Multiaddr),
    /// A libp2p connection to a peer opened (first) or closed (last).
    Connected(PeerId),
    Disconnected(PeerId),
    /// Round-trip time to a connected peer from libp2p ping.
    Latency(PeerId, Duration),
    /// Addresses a peer says it listens on (identify).
    PeerAddrs(PeerId, Vec<Multiaddr>),
    /// A frame arrived. `transport_peer` is the peer that handed it to us (for gossip, the
    /// forwarder, not necessarily the author); `None` for relay frames. A gossip frame
    /// carries the receipt the swarm needs to forward it (or not) once it is judged.
    Frame {
        frame: Vec<u8>,
        via: FrameVia,
        transport_peer: Option<PeerId>,
        gossip: Option<GossipReceipt>,
    },
    /// Inbound frames the transport dropped because this queue was full (in events or
    /// bytes) since the last event.
    FramesDropped(u64),
    /// The relay connection changed state.
    Relay(RelayState),
}

/// Names a gossip message held by the swarm until the peer manager judges it: gossipsub
/// forwards nothing on its own (`validate_messages`), so junk stops at the first node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipReceipt {
    pub message_id: MessageId,
    pub propagation_source: PeerId,
}

/// What gossipsub does with a message the peer manager judged: forward what verified;
/// reject (and never forward) what no honest node could have sent (junk, a bad signature, a
/// message signed for another audience); ignore what an honest forwarder may pass on (a
/// replay, clock skew, a sender over its rate, or a refusal that is this node's business).
pub fn gossip_acceptance(judged: Result<(), DropReason>) -> MessageAcceptance {
    match judged {
        Ok(()) => MessageAcceptance::Accept,
        Err(
            DropReason::Oversized
            | DropReason::Malformed
            | DropReason::UnknownVersion
            | DropReason::BadSignature
            | DropReason::WrongRecipient,
        ) => MessageAcceptance::Reject,
        Err(_) => MessageAcceptance::Ignore,
    }
}

/// Which path a frame came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVia {
    Gossip(Topic),
    Direct,
    RelayBroadcast(Topic),
    RelayDirect,
}

impl FrameVia {
    /// True for relay paths.
    pub fn is_relay(self) -> bool {
        matches!(self, FrameVia::RelayBroadcast(_) | FrameVia::RelayDirect)
    }

    /// The audience a frame on this path must be signed for: the topic for a broadcast
    /// path, this node (`me`) for a direct one.
    pub fn expected_audience(self, me: &PeerId) -> Audience {
        match self {
            FrameVia::Gossip(topic) | FrameVia::RelayBroadcast(topic) => Audience::Topic(topic),
            FrameVia::Direct | FrameVia::RelayDirect => Audience::peer(me),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verified_gossip_is_forwarded_and_only_junk_is_rejected() {
        assert_eq!(gossip_acceptance(Ok(())), MessageAcceptance::Accept);
        for reason in DropReason::ALL {
            let expected = match reason {
                DropReason::Oversized
                | DropReason::Malformed
                | DropReason::UnknownVersion
                | DropReason::BadSignature
                | DropReason::WrongRecipient => MessageAcceptance::Reject,
                _ => MessageAcceptance::Ignore,
            };
            assert_eq!(gossip_acceptance(Err(reason)), expected, "{reason:?}");
        }
        // Nothing that failed is ever forwarded.
        assert!(
            DropReason::ALL
                .iter()
                .all(|r| gossip_acceptance(Err(*r)) != MessageAcceptance::Accept)
        );
    }
}
