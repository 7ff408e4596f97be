//! The libp2p swarm task. It alone owns the `Swarm`; the peer manager talks to it through a
//! [`SwarmClient`] (bounded command channel, oneshot replies) and hears from it through a
//! bounded `MeshEvent` channel. One `select!` over swarm events, commands and shutdown.
//!
//! Protocols: TCP + Noise + Yamux; identify (addresses), ping (latency), mDNS (LAN
//! discovery, optional), gossipsub (the announce and tasks topics), request-response
//! `/apn/direct/1` (one frame per request, empty acknowledgement as response).
//!
//! A node dials only addresses a peer announced for itself: the bootstrap list, mDNS
//! answers, and the listen addresses in a peer's own signed `NodeAnnouncement` (which the
//! peer manager hands to [`SwarmClient::dial`]). There is no Kademlia: its lookups dial
//! whatever addresses other peers report for a third party, and libp2p-kad cannot turn its
//! automatic lookups off. Announcements flood the mesh over gossipsub, which is discovery
//! enough, and their addresses carry the author's signature.
//!
//! Gossip is validated before it is forwarded: gossipsub holds each message until the peer
//! manager has verified its envelope and answers through [`SwarmClient::report_validation`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, mdns, noise, ping,
    request_response, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::events::{EventReceiver, EventSender, mesh_event_queue};
pub use super::frame_codec::FrameCodec;
use super::{FrameVia, GossipReceipt, MeshError, MeshEvent, SWARM_COMMANDS_MAX};
use crate::identity::Identity;
use crate::messages::Topic;
use crate::messages::codec::FRAME_BYTES_MAX;

/// The direct-message protocol.
const DIRECT_PROTOCOL: StreamProtocol = StreamProtocol::new("/apn/direct/1");
/// Identify protocol version string.
const IDENTIFY_PROTOCOL: &str = "/apn/1";
/// How long a direct request may take before the sender falls back to the relay.
pub const DIRECT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections are kept this long (ping keeps live ones busy anyway).
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Interval between pings on each connection.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Most outstanding direct sends; beyond it a send fails fast with `Busy`.
const PENDING_DIRECT_MAX: usize = 4096;

/// The swarm's protocols.
#[derive(NetworkBehaviour)]
pub(crate) struct ApnBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    gossipsub: gossipsub::Behaviour,
    direct: request_response::Behaviour<FrameCodec>,
}

/// What the swarm task needs to start.
#[derive(Debug, Clone)]
pub struct SwarmSettings {
    /// Addresses to listen on; failing to listen on one stops the start.
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start; a failed dial is only logged.
    pub bootstrap: Vec<Multiaddr>,
    /// Run mDNS discovery on the LAN.
    pub mdns: bool,
}

enum SwarmCommand {
    Publish {
        topic: Topic,
        frame: Vec<u8>,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    SendDirect {
        peer: PeerId,
        frame: Vec<u8>,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Dial(PeerId, Vec<Multiaddr>),
    ReportValidation(GossipReceipt, gossipsub::MessageAcceptance),
    Shutdown(oneshot::Sender<()>),
}

/// The peer manager's handle on the swarm task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SwarmClient {
    commands: mpsc::Sender<SwarmCommand>,
}

impl std::fmt::Debug for SwarmCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwarmCommand::Publish { topic, frame, .. } => {
                write!(f, "Publish({topic:?}, {} bytes)", frame.len())
            }
            SwarmCommand::SendDirect { peer, frame, .. } => {
                write!(f, "SendDirect({peer}, {} bytes)", frame.len())
            }
            SwarmCommand::Dial(peer, _) => write!(f, "Dial({peer})"),
            SwarmCommand::ReportValidation(receipt, acceptance) => {
                write!(
                    f,
                    "ReportValidation({}, {acceptance:?})",
                    receipt.message_id
                )
            }
            SwarmCommand::Shutdown(_) => write!(f, "Shutdown"),
        }
    }
}

impl SwarmClient {
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), MeshError>>) -> SwarmCommand,
    ) -> Result<(), MeshError> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MeshError::Busy,
            mpsc::error::TrySendError::Closed(_) => MeshError::Closed,
        })?;
        answer.await.map_err(|_| MeshError::Closed)?
    }

    /// Publish a frame on a gossip topic.
    pub async fn publish(&self, topic: Topic, frame: Vec<u8>) -> Result<(), MeshError> {
        self.request(|reply| SwarmCommand::Publish {
            topic,
            frame,
            reply,
        })
        .await
    }

    /// Send a frame to a connected peer and wait for its acknowledgement.
    pub async fn send_direct(&self, peer: PeerId, frame: Vec<u8>) -> Result<(), MeshError> {
        self.request(|reply| SwarmCommand::SendDirect { peer, frame, reply })
            .await
    }

    /// Dial a peer at the given addresses (no-op when connected).
    pub fn dial(&self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if self
            .commands
            .try_send(SwarmCommand::Dial(peer, addresses))
            .is_err()
        {
            tracing::debug!(%peer, "swarm command queue full, dial skipped");
        }
    }

    /// Tell gossipsub whether the message behind `receipt` may be forwarded. When the
    /// command queue is full the message is simply not forwarded (gossipsub forgets it).
    pub fn report_validation(
        &self,
        receipt: GossipReceipt,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        if let Err(e) = self
            .commands
            .try_send(SwarmCommand::ReportValidation(receipt, acceptance))
        {
            tracing::debug!(error = %e, "swarm command queue full, gossip not forwarded");
        }
    }

    /// Stop the swarm task, closing its connections; waits at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(SwarmCommand::Shutdown(done))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(timeout, finished).await;
        }
    }
}

/// Build the swarm, start listening and dialling, and spawn its task on the current runtime.
/// Returns the client and the event stream. Listen failures are errors (the operator asked
/// for that address); bootstrap dial failures are only logged (peers come and go).
pub fn spawn_swarm(
    identity: &Identity,
    settings: SwarmSettings,
) -> Result<(SwarmClient, EventReceiver), MeshError> {
    let mut swarm = build_swarm(identity, settings.mdns)?;
    for topic in Topic::ALL {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossip_topic(topic))
            .map_err(|e| MeshError::SwarmStart(format!("subscribe {}: {e}", topic.name())))?;
    }
    for address in &settings.listen {
        swarm
            .listen_on(address.clone())
            .map_err(|e| MeshError::Listen {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
    }
    for address in &settings.bootstrap {
        if let Err(e) = swarm.dial(address.clone()) {
            tracing::warn!(%address, error = %e, "cannot dial bootstrap peer");
        }
    }
    let (command_sender, commands) = mpsc::channel(SWARM_COMMANDS_MAX);
    let (events, event_receiver) = mesh_event_queue();
    let event_loop = EventLoop {
        swarm,
        commands,
        events,
        pending_direct: HashMap::new(),
        connected: HashSet::new(),
    };
    tokio::spawn(event_loop.run());
    Ok((
        SwarmClient {
            commands: command_sender,
        },
        event_receiver,
    ))
}

fn build_swarm(identity: &Identity, enable_mdns: bool) -> Result<Swarm<ApnBehaviour>, MeshError> {
    let start_error = |e: &dyn std::fmt::Display| MeshError::SwarmStart(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start_error(&e))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossipsub_config = gossipsub::ConfigBuilder::default()
                // Envelopes are signed and checked by the peer manager; gossipsub's own
                // signatures additionally stop forwarders from forging the gossip author.
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(FRAME_BYTES_MAX + 4096)
                .heartbeat_interval(Duration::from_millis(500))
                // Forward nothing until the peer manager has verified the envelope.
                .validate_messages()
                // Dedupe by content: every envelope carries a unique msg_id.
                .message_id_fn(|message: &gossipsub::Message| {
                    use sha2::Digest;
                    gossipsub::MessageId::from(sha2::Sha256::digest(&message.data).to_vec())
                })
                .build()
                .map_err(|e| io::Error::other(e.to_string()))?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub_config,
            )
            .map_err(io::Error::other)?;
            let mdns = if enable_mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            Ok(ApnBehaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.to_string(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
                mdns: Toggle::from(mdns),
                gossipsub,
                direct: request_response::Behaviour::with_codec(
                    FrameCodec,
                    [(DIRECT_PROTOCOL, request_response::ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(DIRECT_REQUEST_TIMEOUT),
                ),
            })
        })
        .map_err(|e| start_error(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

fn gossip_topic(topic: Topic) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("apn/v1/{}", topic.name()))
}

fn topic_of(hash: &gossipsub::TopicHash) -> Option<Topic> {
    Topic::ALL
        .into_iter()
        .find(|topic| gossip_topic(*topic).hash() == *hash)
}

struct EventLoop {
    swarm: Swarm<ApnBehaviour>,
    commands: mpsc::Receiver<SwarmCommand>,
    events: EventSender,
    pending_direct:
        HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<(), MeshError>>>,
    connected: HashSet<PeerId>,
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(SwarmCommand::Shutdown(done)) => {
                        self.close_all();
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.handle_command(command),
                    // Every client is gone: the node is stopping.
                    None => {
                        self.close_all();
                        break;
                    }
                },
                event = self.swarm.select_next_some() => self.handle_event(event),
            }
        }
        tracing::debug!("swarm task stopped");
    }

    fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.connected.drain().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        for (_, reply) in self.pending_direct.drain() {
            let _ = reply.send(Err(MeshError::Closed));
        }
    }

    fn emit(&self, event: MeshEvent) {
        if let Err(e) = self.events.try_send(event) {
            // Full: the peer manager is behind. Dropping here keeps the swarm responsive;
            // the queue reports dropped frames to the peer manager, which counts them.
            tracing::warn!(error = %e, "mesh event queue full, event dropped");
        }
    }

    /// Forward (or not) a gossip message held for validation. Nothing happens when
    /// gossipsub no longer holds it (it expired).
    fn report_validation(
        &mut self,
        receipt: &GossipReceipt,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(
                &receipt.message_id,
                &receipt.propagation_source,
                acceptance,
            );
    }

    fn handle_command(&mut self, command: SwarmCommand) {
        match command {
            SwarmCommand::Publish {
                topic,
                frame,
                reply,
            } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(gossip_topic(topic), frame)
                    .map(|_| ())
                    .map_err(|e| match e {
                        gossipsub::PublishError::NoPeersSubscribedToTopic => {
                            MeshError::NoBroadcastPath
                        }
                        other => MeshError::Direct {
                            peer: *self.swarm.local_peer_id(),
                            reason: other.to_string(),
                        },
                    });
                let _ = reply.send(result);
            }
            SwarmCommand::SendDirect { peer, frame, reply } => {
                if !self.connected.contains(&peer) {
                    let _ = reply.send(Err(MeshError::NoPath(peer)));
                } else if self.pending_direct.len() >= PENDING_DIRECT_MAX {
                    let _ = reply.send(Err(MeshError::Busy));
                } else {
                    let id = self.swarm.behaviour_mut().direct.send_request(&peer, frame);
                    self.pending_direct.insert(id, reply);
                }
            }
            SwarmCommand::Dial(peer, addresses) => {
                if self.connected.contains(&peer) || peer == *self.swarm.local_peer_id() {
                    return;
                }
                let options = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addresses)
                    .build();
                if let Err(e) = self.swarm.dial(options) {
                    tracing::debug!(%peer, error = %e, "dial failed");
                }
            }
            SwarmCommand::ReportValidation(receipt, acceptance) => {
                self.report_validation(&receipt, acceptance)
            }
            SwarmCommand::Shutdown(_) => {}
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<ApnBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(MeshEvent::ListenAddr(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                self.connected.insert(peer_id);
                self.emit(MeshEvent::Connected(peer_id));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                self.emit(MeshEvent::Disconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(event) => self.handle_behaviour_event(event),
            _ => {}
        }
    }

    fn handle_behaviour_event(&mut self, event: ApnBehaviourEvent) {
        match event {
            ApnBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let receipt = GossipReceipt {
                    message_id,
                    propagation_source,
                };
                match topic_of(&message.topic) {
                    Some(topic) => self.emit(MeshEvent::Frame {
                        frame: message.data,
                        via: FrameVia::Gossip(topic),
                        transport_peer: Some(propagation_source),
                        gossip: Some(receipt),
                    }),
                    // A topic we never subscribed to: nobody should forward it.
                    None => self.report_validation(&receipt, gossipsub::MessageAcceptance::Reject),
                }
            }
            ApnBehaviourEvent::Direct(request_response::Event::Message {
                peer, message, ..
            }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        // Acknowledge receipt; verification happens in the peer manager.
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .direct
                            .send_response(channel, Vec::new());
                        self.emit(MeshEvent::Frame {
                            frame: request,
                            via: FrameVia::Direct,
                            transport_peer: Some(peer),
                            gossip: None,
                        });
                    }
                    request_response::Message::Response { request_id, .. } => {
                        if let Some(reply) = self.pending_direct.remove(&request_id) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
            }
            ApnBehaviourEvent::Direct(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                if let Some(reply) = self.pending_direct.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Direct {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            ApnBehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.emit(MeshEvent::Latency(peer, rtt));
            }
            ApnBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.emit(MeshEvent::PeerAddrs(peer_id, info.listen_addrs));
            }
            ApnBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, address) in found {
                    if !self.connected.contains(&peer) {
                        let _ = self.swarm.dial(address);
                    }
                }
            }
            _ => {}
        }
    }
}
