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
    /// Building the swarm or subscribing to a gossip topic failed at startup.
    #[error("cannot start the libp2p swarm: {0}")]
    SwarmStart(String),
    /// The swarm could not listen on a configured address at startup.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The multiaddr that was refused.
        address: String,
        /// libp2p's error, as text.
        reason: String,
    },
    /// The transport task has stopped, or dropped the request without answering.
    #[error("the transport is shutting down")]
    Closed,
    /// The command queue or the table of pending requests is full; try again later.
    #[error("the transport queue is full")]
    Busy,
    /// A direct send to a peer with no libp2p connection, and no relay to fall back on.
    #[error("no path to peer {0}: not connected and the relay is not connected")]
    NoPath(PeerId),
    /// A libp2p send failed (a direct request, or a gossip publish other than "no peers").
    #[error("direct send to {peer} failed: {reason}")]
    Direct {
        /// The recipient (this node's own id for a failed gossip publish).
        peer: PeerId,
        /// libp2p's error, as text.
        reason: String,
    },
    /// The NATS relay failed: not connected, bad credentials, connect, subscribe or publish.
    #[error("relay publish failed: {0}")]
    Relay(String),
    /// The message could not be sealed into a signed envelope.
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// A ping reply or a relay publish did not complete within the given time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A broadcast found no gossip peers on the topic and no connected relay.
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
    /// The last libp2p connection to a peer closed.
    Disconnected(PeerId),
    /// Round-trip time to a connected peer from libp2p ping.
    Latency(PeerId, Duration),
    /// Addresses a peer says it listens on (identify).
    PeerAddrs(PeerId, Vec<Multiaddr>),
    /// A frame arrived. `transport_peer` is the peer that handed it to us (for gossip, the
    /// forwarder, not necessarily the author); `None` for relay frames. A gossip frame
    /// carries the receipt the swarm needs to forward it (or not) once it is judged.
    Frame {
        /// The envelope bytes as received, not yet verified.
        frame: Vec<u8>,
        /// The path the frame came by.
        via: FrameVia,
        /// The libp2p peer that handed us the frame; `None` for the relay.
        transport_peer: Option<PeerId>,
        /// For a gossip frame, what the swarm needs to forward or reject it.
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
    /// Gossipsub's id for the message (a SHA-256 of its data).
    pub message_id: MessageId,
    /// The peer that forwarded the message to us.
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
    /// Gossipsub, on this topic.
    Gossip(Topic),
    /// A libp2p request-response sent straight to this node.
    Direct,
    /// The relay's broadcast subject for this topic.
    RelayBroadcast(Topic),
    /// The relay subject addressed to this node.
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
