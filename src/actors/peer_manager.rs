//! `PeerManager`: the node's only door to the network.
//!
//! It owns the libp2p swarm (through the task `mesh::swarm` spawns: commands go in over a
//! bounded channel, events come back as a stream) and the NATS relay client (`mesh::relay`).
//! Every inbound frame is verified here (`messages::envelope::verify_frame`) before any role
//! sees it; a bad one is dropped, counted by reason and logged at most once per source per
//! minute. Verified messages go to the role that owns their variant (`Routes`), peer changes
//! to the panel hub.
//!
//! In: `Broadcast`, `SendTo`, `Ping`, `GetPeers`, `GetMeshStatus`, `Subscribe`, mesh events.
//! Out: `Inbound` to roles and subscribers, `PanelEvent` to the hub.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use libp2p::{Multiaddr, PeerId};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::identity::{self, Identity, NOISE_KEY_BYTES, NodeId};
use crate::mesh::rate::FrameRateLimiter;
use crate::mesh::relay::RelayClient;
use crate::mesh::swarm::SwarmClient;
use crate::mesh::{EventReceiver, FrameVia, MeshError, MeshEvent, gossip_acceptance};
use crate::messages::envelope::{Audience, verify_frame};
use crate::messages::{
    APNMessage, BandwidthPurpose, DropReason, Envelope, EnvelopeLimits, NodeAnnouncement,
    PingReply, PingRequest, ReplayCache, Topic, VerifiedEnvelope,
};
use crate::metrics::{NetMetrics, Role, try_send_counted};
use crate::protocol::accounting::{BytesTransferred, Direction};
use crate::protocol::panel::PanelEvent;

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::mesh::{
    Broadcast, GetMeshStatus, GetPeerNoiseKey, GetPeers, Inbound, MeshStatus, PeerInfo, PeerPath,
    Ping, RelayState, SendTo, SetFreeSlots, Shutdown, Subscribe,
};

/// Recipients of verified messages, by the role that owns each variant.
#[derive(Clone)]
pub struct Routes {
    /// Bids and the execution stream of this node's tasks.
    pub distributor: Recipient<Inbound>,
    /// Other nodes' task requests.
    pub bidder: Recipient<Inbound>,
    /// Assignments, repository chunks, cancellations.
    pub executor: Recipient<Inbound>,
    /// VIBE transactions and their receipts.
    pub payments: Recipient<Inbound>,
    /// Bandwidth and compute contributions.
    pub accountant: Recipient<Inbound>,
    /// Panel deltas.
    pub panel: Recipient<PanelEvent>,
    /// Byte counts per peer and purpose, for resource accounting.
    pub bytes: Recipient<BytesTransferred>,
}

/// Messages a role must get even when its mailbox is full: an assignment, the end of a run,
/// payments and their receipts. Losing one costs money or a task; their rate is bounded by
/// the per-peer frame budget before they get here.
pub fn must_deliver(message: &APNMessage) -> bool {
    matches!(
        message,
        APNMessage::TaskAssigned(_)
            | APNMessage::TaskCancelled(_)
            | APNMessage::ExecutionStarted(_)
            | APNMessage::ExecutionCompleted(_)
            | APNMessage::ExecutionFailed(_)
            | APNMessage::VibeTransaction(_)
            | APNMessage::PaymentReceipt(_)
    )
}

/// What a message's bytes count as in bandwidth accounting.
pub fn purpose_of(message: &APNMessage) -> BandwidthPurpose {
    match message {
        APNMessage::RepoChunk(_) => BandwidthPurpose::GitSync,
        APNMessage::ExecutionLogs(_) | APNMessage::ExecutionProgress(_) => {
            BandwidthPurpose::LogStream
        }
        _ => BandwidthPurpose::TaskRelay,
    }
}

/// Transports handed to the peer manager by the node (already started).
pub struct Transports {
    pub swarm: Option<(SwarmClient, EventReceiver)>,
    pub relay: Option<(RelayClient, EventReceiver)>,
    /// Addresses the swarm reported before the actor started.
    pub listen_addrs: Vec<Multiaddr>,
    /// Events that arrived while start-up waited for the listen address.
    pub early_events: Vec<MeshEvent>,
    /// Frames from an in-process source instead of a socket (benchmarks, fuzzing): they go
    /// through exactly the checks and routing of network frames.
    pub injected: Option<mpsc::Receiver<MeshEvent>>,
}

impl Transports {
    /// No network at all: only `injected` frames, if any.
    pub fn none() -> Self {
        Transports {
            swarm: None,
            relay: None,
            listen_addrs: Vec::new(),
            early_events: Vec::new(),
            injected: None,
        }
    }
}

/// A peer's frame budget holds this many seconds of its rate, for bursts.
const FRAME_BURST_SECONDS: u32 = 2;
/// Outstanding pings.
const PENDING_PINGS_MAX: usize = 1024;
/// How long a ping waits for its reply.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Drop reasons are logged once per source per this interval.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Sources remembered by the drop-log limiter.
const DROP_LOG_SOURCES_MAX: usize = 1024;
/// How often stale peers are removed.
const PEER_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// A peer is told our announcement again at most this often when it announces itself.
const ANNOUNCE_REPLY_INTERVAL: Duration = Duration::from_secs(10);
/// How long shutdown waits for each transport.
const TRANSPORT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

struct PeerEntry {
    info: PeerInfo,
    noise_static_key: Option<[u8; NOISE_KEY_BYTES]>,
    last_seen: Instant,
    announced_to_at: Option<Instant>,
}

/// The peer-table entry that may make room for a newcomer: one that never announced itself
/// and is not connected, the longest unheard first; none if every entry is a known peer.
pub fn peer_to_evict<K: Copy>(
    entries: impl Iterator<Item = (K, bool, bool, Instant)>,
) -> Option<K> {
    entries
        .filter(|(_, announced, connected, _)| !announced && !connected)
        .min_by_key(|(_, _, _, last_seen)| *last_seen)
        .map(|(key, ..)| key)
}

struct PendingPing {
    sent_at: Instant,
    reply: oneshot::Sender<Duration>,
}

/// The peer manager.
pub struct PeerManager {
    identity: Identity,
    config: Arc<Config>,
    metrics: Arc<NetMetrics>,
    limits: EnvelopeLimits,
    replay_cache: ReplayCache,
    peers: HashMap<PeerId, PeerEntry>,
    connected: HashSet<PeerId>,
    listen_addrs: Vec<Multiaddr>,
    relay_state: RelayState,
    /// The relay was connected at least once (a later connection counts as a reconnect).
    relay_connected_before: bool,
    swarm: Option<SwarmClient>,
    relay: Option<RelayClient>,
    pending_streams: Vec<BoxStream<'static, MeshEvent>>,
    early_events: Vec<MeshEvent>,
    routes: Routes,
    taps: Vec<Recipient<Inbound>>,
    pending_pings: HashMap<u64, PendingPing>,
    drop_log: HashMap<String, Instant>,
    profiles: Vec<String>,
    free_slots: u32,
    /// Frame budgets of the peers frames come from directly, checked before verification.
    frame_budgets: FrameRateLimiter<PeerId>,
}

impl PeerManager {
    /// A peer manager over already started transports.
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        metrics: Arc<NetMetrics>,
        transports: Transports,
        routes: Routes,
    ) -> Self {
        let limits = EnvelopeLimits {
            frame_bytes_max: crate::messages::codec::FRAME_BYTES_MAX,
            clock_skew_ms_max: (config.node.clock_skew_s as i64).saturating_mul(1000),
        };
        let mut pending_streams = Vec::new();
        let swarm = transports.swarm.map(|(client, events)| {
            pending_streams.push(events.boxed());
            client
        });
        let relay = transports.relay.map(|(client, events)| {
            pending_streams.push(events.boxed());
            client
        });
        pending_streams.extend(
            transports
                .injected
                .map(|events| ReceiverStream::new(events).boxed()),
        );
        let relay_state = if relay.is_some() {
            RelayState::Connecting
        } else {
            RelayState::Disabled
        };
        PeerManager {
            profiles: crate::agent_process::available_profiles(&config.executor),
            free_slots: config.resources.max_concurrent_tasks,
            identity,
            metrics,
            limits,
            replay_cache: ReplayCache::new(crate::messages::envelope::REPLAY_CACHE_ENTRIES_MAX),
            peers: HashMap::new(),
            connected: HashSet::new(),
            listen_addrs: transports.listen_addrs,
            relay_state,
            relay_connected_before: false,
            swarm,
            relay,
            pending_streams,
            early_events: transports.early_events,
            routes,
            taps: Vec::new(),
            pending_pings: HashMap::new(),
            drop_log: HashMap::new(),
            frame_budgets: FrameRateLimiter::new(
                config.node.frames_per_peer_per_second,
                FRAME_BURST_SECONDS,
                config.node.peers_max,
            ),
            config,
        }
    }

    fn announcement(&self) -> APNMessage {
        let economics = &self.config.economics;
        APNMessage::NodeAnnouncement(NodeAnnouncement {
            node_id: self.identity.node_id().clone(),
            capabilities: self.config.node.capabilities.clone(),
            executor_profiles: self.profiles.clone(),
            compute_rate_per_cpu_hour: economics.compute_rate_per_cpu_hour,
            min_task_reward: economics.min_task_reward,
            max_concurrent_tasks: self.config.resources.max_concurrent_tasks,
            free_slots: self.free_slots,
            noise_static_key: ByteBuf::from(self.identity.noise_public().to_vec()),
            noise_key_signature: ByteBuf::from(self.identity.noise_binding().to_vec()),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            relay_only: self.config.node.relay_only,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn seal(&self, to: &Audience, message: &APNMessage) -> Result<Vec<u8>, MeshError> {
        Envelope::seal(&self.identity, to, message, now_ms())
            .map_err(|e| MeshError::Encode(e.to_string()))
    }

    fn status(&self) -> MeshStatus {
        MeshStatus {
            node_id: self.identity.node_id().clone(),
            peer_id: self.identity.peer_id().to_string(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            relay: self.relay_state,
            relay_only: self.config.node.relay_only,
            peers: self.peers.len(),
        }
    }

    fn panel(&self, event: PanelEvent) {
        // The hub is bounded by its own mailbox; a full hub loses a delta, not the node.
        try_send_counted(&self.routes.panel, event, &self.metrics, Role::Panel);
    }

    fn entry(&mut self, peer: PeerId) -> Option<&mut PeerEntry> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.config.node.peers_max {
                // Fresh keys cost nothing: one that never announced itself and has no
                // connection makes room; a known peer is never dropped for a newcomer.
                let candidates = self.peers.iter().map(|(id, entry)| {
                    (
                        *id,
                        entry.info.announced,
                        entry.info.connected,
                        entry.last_seen,
                    )
                });
                match peer_to_evict(candidates) {
                    Some(evicted) => {
                        self.peers.remove(&evicted);
                        self.metrics.count_drop(DropReason::RateLimited);
                    }
                    None => {
                        self.metrics.count_drop(DropReason::RateLimited);
                        return None;
                    }
                }
            }
            let now = Utc::now();
            let node_id = identity::public_key_of(&peer)
                .map(|key| NodeId::from_public_key(&key))
                .unwrap_or_else(|| NodeId::from_public_key(&[0; 32]));
            let info = PeerInfo {
                peer_id: peer.to_string(),
                node_id,
                capabilities: Vec::new(),
                executor_profiles: Vec::new(),
                compute_rate_per_cpu_hour: None,
                min_task_reward: None,
                max_concurrent_tasks: 0,
                free_slots: 0,
                latency_ms: None,
                bytes_in: 0,
                bytes_out: 0,
                path: if self.connected.contains(&peer) {
                    PeerPath::Direct
                } else {
                    PeerPath::Relay
                },
                connected: self.connected.contains(&peer),
                announced: false,
                listen_addrs: Vec::new(),
                first_seen: now,
                last_seen: now,
            };
            self.peers.insert(
                peer,
                PeerEntry {
                    info,
                    noise_static_key: None,
                    last_seen: Instant::now(),
                    announced_to_at: None,
                },
            );
        }
        self.peers.get_mut(&peer)
    }

    fn publish_peer(&self, peer: &PeerId) {
        if let Some(entry) = self.peers.get(peer) {
            self.panel(PanelEvent::PeerUpdated(entry.info.clone()));
        }
    }

    fn log_drop(&mut self, source: String, reason: DropReason) {
        let now = Instant::now();
        let due = self
            .drop_log
            .get(&source)
            .is_none_or(|last| now.duration_since(*last) >= DROP_LOG_INTERVAL);
        if due {
            if self.drop_log.len() >= DROP_LOG_SOURCES_MAX {
                self.drop_log
                    .retain(|_, last| now.duration_since(*last) < DROP_LOG_INTERVAL);
                if self.drop_log.len() >= DROP_LOG_SOURCES_MAX {
                    self.drop_log.clear();
                }
            }
            self.drop_log.insert(source.clone(), now);
            tracing::warn!(%source, reason = reason.label(), "dropped inbound frame (logged once per source per minute)");
        }
    }

    fn send_announcement_to(&mut self, peer: PeerId, ctx: &mut Context<Self>) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.announced_to_at = Some(Instant::now());
        }
        let message = self.announcement();
        ctx.address().do_send(SendTo { peer, message });
    }

    fn broadcast_announcement(&self, ctx: &mut Context<Self>) {
        let message = self.announcement();
        let address = ctx.address();
        actix::spawn(async move {
            match address
                .send(Broadcast {
                    topic: Topic::Announce,
                    message,
                })
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "announcement not broadcast"),
                Err(e) => tracing::debug!(error = %e, "peer manager gone"),
            }
        });
    }

    /// Verify and route one inbound frame. The answer (accepted, or dropped and why) tells
    /// gossipsub whether to forward it.
    fn on_frame(
        &mut self,
        frame: Vec<u8>,
        via: FrameVia,
        transport_peer: Option<PeerId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), DropReason> {
        NetMetrics::add(&self.metrics.bytes_in, frame.len() as u64);
        if let Some(peer) = transport_peer
            && !self.frame_budgets.allow(&peer, Instant::now())
        {
            self.metrics.count_drop(DropReason::RateLimited);
            self.log_drop(peer.to_string(), DropReason::RateLimited);
            return Err(DropReason::RateLimited);
        }
        let expected = via.expected_audience(&self.identity.peer_id());
        let verified = match verify_frame(
            &frame,
            now_ms(),
            &self.limits,
            &mut self.replay_cache,
            &expected,
        ) {
            Ok(verified) => verified,
            Err(reason) => {
                self.metrics.count_drop(reason);
                let source = match transport_peer {
                    Some(peer) => peer.to_string(),
                    None => "relay".to_string(),
                };
                self.log_drop(source, reason);
                return Err(reason);
            }
        };
        let author = verified.from_peer;
        if author == self.identity.peer_id() {
            // Our own broadcast, echoed by the relay.
            return Ok(());
        }
        NetMetrics::add(&self.metrics.messages_in, 1);
        let path = if via.is_relay() {
            PeerPath::Relay
        } else {
            PeerPath::Direct
        };
        let frame_bytes = frame.len() as u64;
        try_send_counted(
            &self.routes.bytes,
            BytesTransferred {
                peer: transport_peer.unwrap_or(author),
                purpose: purpose_of(&verified.message),
                direction: Direction::In,
                bytes: frame_bytes,
            },
            &self.metrics,
            Role::Accountant,
        );
        let is_new = !self.peers.contains_key(&author);
        let Some(entry) = self.entry(author) else {
            return Err(DropReason::RateLimited);
        };
        entry.last_seen = Instant::now();
        entry.info.last_seen = Utc::now();
        entry.info.bytes_in += frame_bytes;
        let path_changed = entry.info.path != path;
        entry.info.path = path;
        if is_new || path_changed {
            self.publish_peer(&author);
        }
        let envelope = Arc::new(verified);
        match &envelope.message {
            APNMessage::NodeAnnouncement(announcement) => {
                self.on_announcement(&envelope, announcement.clone(), ctx)?;
            }
            APNMessage::PingRequest(ping) => {
                let message = APNMessage::PingReply(PingReply { nonce: ping.nonce });
                ctx.address().do_send(SendTo {
                    peer: author,
                    message,
                });
            }
            APNMessage::PingReply(reply) => {
                if let Some(pending) = self.pending_pings.remove(&reply.nonce) {
                    let _ = pending.reply.send(pending.sent_at.elapsed());
                }
            }
            message => {
                let (route, role) = match message {
                    APNMessage::TaskDistributionRequest(_) => (&self.routes.bidder, Role::Bidder),
                    APNMessage::TaskBid(_) => (&self.routes.distributor, Role::Distributor),
                    APNMessage::TaskAssigned(_)
                    | APNMessage::RepoChunk(_)
                    | APNMessage::TaskCancelled(_) => (&self.routes.executor, Role::Executor),
                    // The distributor holds the Noise session of each of its tasks, so it
                    // decrypts the stream and hands it to the execution relay.
                    APNMessage::ExecutionStarted(_)
                    | APNMessage::ExecutionProgress(_)
                    | APNMessage::ExecutionLogs(_)
                    | APNMessage::ExecutionCompleted(_)
                    | APNMessage::ExecutionFailed(_) => {
                        (&self.routes.distributor, Role::Distributor)
                    }
                    APNMessage::VibeTransaction(_) | APNMessage::PaymentReceipt(_) => {
                        (&self.routes.payments, Role::Payments)
                    }
                    _ => (&self.routes.accountant, Role::Accountant),
                };
                let inbound = Inbound {
                    envelope: envelope.clone(),
                    path,
                };
                if must_deliver(message) {
                    // Never refused for a full mailbox; the frame budget upstream bounds it.
                    route.do_send(inbound);
                } else if !try_send_counted(route, inbound, &self.metrics, role) {
                    self.metrics.count_drop(DropReason::RateLimited);
                    self.log_drop(format!("{author} -> busy role"), DropReason::RateLimited);
                }
                self.panel(PanelEvent::MessageReceived {
                    kind: envelope.message.kind(),
                    from: envelope.from_node.to_string(),
                });
            }
        }
        let inbound = Inbound { envelope, path };
        let metrics = &self.metrics;
        self.taps.retain(|tap| {
            try_send_counted(tap, inbound.clone(), metrics, Role::Taps) || tap.connected()
        });
        Ok(())
    }

    fn on_announcement(
        &mut self,
        envelope: &VerifiedEnvelope,
        announcement: NodeAnnouncement,
        ctx: &mut Context<Self>,
    ) -> Result<(), DropReason> {
        let author = envelope.from_peer;
        if announcement.node_id != envelope.from_node
            || !identity::verify_noise_binding(
                &envelope.from_key,
                &announcement.noise_static_key,
                &announcement.noise_key_signature,
            )
        {
            self.metrics.count_drop(DropReason::BadSignature);
            self.log_drop(author.to_string(), DropReason::BadSignature);
            return Err(DropReason::BadSignature);
        }
        let listen_addrs: Vec<Multiaddr> = announcement
            .listen_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let reply_due;
        {
            let Some(entry) = self.peers.get_mut(&author) else {
                return Ok(());
            };
            let info = &mut entry.info;
            info.capabilities = announcement.capabilities;
            info.executor_profiles = announcement.executor_profiles;
            info.compute_rate_per_cpu_hour = Some(announcement.compute_rate_per_cpu_hour);
            info.min_task_reward = Some(announcement.min_task_reward);
            info.max_concurrent_tasks = announcement.max_concurrent_tasks;
            info.free_slots = announcement.free_slots;
            info.listen_addrs = announcement.listen_addrs;
            info.announced = true;
            entry.noise_static_key = announcement.noise_static_key.as_slice().try_into().ok();
            reply_due = entry
                .announced_to_at
                .is_none_or(|at| at.elapsed() >= ANNOUNCE_REPLY_INTERVAL);
        }
        self.publish_peer(&author);
        if !self.connected.contains(&author)
            && !announcement.relay_only
            && !listen_addrs.is_empty()
            && let Some(swarm) = &self.swarm
        {
            swarm.dial(author, listen_addrs);
        }
        if reply_due {
            self.send_announcement_to(author, ctx);
        }
        Ok(())
    }

    fn sweep_peers(&mut self) {
        let timeout = Duration::from_secs(self.config.node.peer_timeout_s);
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer, entry)| {
                !self.connected.contains(peer) && entry.last_seen.elapsed() > timeout
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in stale {
            self.peers.remove(&peer);
            tracing::info!(%peer, "peer timed out");
            self.panel(PanelEvent::PeerRemoved(peer.to_string()));
        }
    }

    fn record_sent(&mut self, peer: PeerId, path: PeerPath, bytes: u64, purpose: BandwidthPurpose) {
        try_send_counted(
            &self.routes.bytes,
            BytesTransferred {
                peer,
                purpose,
                direction: Direction::Out,
                bytes,
            },
            &self.metrics,
            Role::Accountant,
        );
        NetMetrics::add(&self.metrics.messages_out, 1);
        NetMetrics::add(&self.metrics.bytes_out, bytes);
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.info.bytes_out += bytes;
            if entry.info.path != path {
                entry.info.path = path;
                self.publish_peer(&peer);
            }
        }
    }
}

/// Milliseconds since the Unix epoch, our clock.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Actor for PeerManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for event in std::mem::take(&mut self.early_events) {
            StreamHandler::handle(self, event, ctx);
        }
        for events in self.pending_streams.drain(..) {
            ctx.add_stream(events);
        }
        tracing::info!(
            node_id = %self.identity.node_id(),
            peer_id = %self.identity.peer_id(),
            listen = ?self.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            relay = ?self.relay_state,
            "peer manager started"
        );
        let interval = Duration::from_secs(self.config.node.announce_interval_s);
        ctx.run_interval(interval, |actor, ctx| actor.broadcast_announcement(ctx));
        ctx.run_interval(PEER_SWEEP_INTERVAL, |actor, _| actor.sweep_peers());
    }
}

impl StreamHandler<MeshEvent> for PeerManager {
    fn handle(&mut self, event: MeshEvent, ctx: &mut Self::Context) {
        match event {
            MeshEvent::Frame {
                frame,
                via,
                transport_peer,
                gossip,
            } => {
                let judged = self.on_frame(frame, via, transport_peer, ctx);
                if let (Some(receipt), Some(swarm)) = (gossip, &self.swarm) {
                    swarm.report_validation(receipt, gossip_acceptance(judged));
                }
            }
            MeshEvent::FramesDropped(frames) => {
                self.metrics.count_drops(DropReason::QueueFull, frames);
                self.log_drop("transport queue".to_string(), DropReason::QueueFull);
            }
            MeshEvent::ListenAddr(address) => {
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            MeshEvent::Connected(peer) => {
                self.connected.insert(peer);
                if let Some(entry) = self.entry(peer) {
                    entry.info.connected = true;
                    entry.info.path = PeerPath::Direct;
                    entry.last_seen = Instant::now();
                }
                self.publish_peer(&peer);
                tracing::info!(%peer, "connected");
                self.send_announcement_to(peer, ctx);
            }
            MeshEvent::Disconnected(peer) => {
                self.connected.remove(&peer);
                self.frame_budgets.forget(&peer);
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.info.connected = false;
                    entry.info.path = PeerPath::Relay;
                }
                tracing::info!(%peer, "disconnected");
                self.publish_peer(&peer);
            }
            MeshEvent::Latency(peer, rtt) => {
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.info.latency_ms = Some(rtt.as_secs_f64() * 1000.0);
                    entry.last_seen = Instant::now();
                    entry.info.last_seen = Utc::now();
                }
                self.publish_peer(&peer);
            }
            MeshEvent::PeerAddrs(peer, addresses) => {
                if let Some(entry) = self.peers.get_mut(&peer)
                    && entry.info.listen_addrs.is_empty()
                {
                    entry.info.listen_addrs = addresses.iter().map(|a| a.to_string()).collect();
                }
            }
            MeshEvent::Relay(state) => {
                if state == RelayState::Connected && self.relay_state != RelayState::Connected {
                    if self.relay_connected_before {
                        NetMetrics::add(&self.metrics.relay_reconnects, 1);
                    }
                    self.relay_connected_before = true;
                    self.relay_state = state;
                    // Tell relay peers we are here; they answer with their own announcement.
                    self.broadcast_announcement(ctx);
                } else {
                    self.relay_state = state;
                }
                self.panel(PanelEvent::RelayState(state));
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // A transport stream ended (its task stopped); the other may still run.
        tracing::debug!("a transport event stream ended");
    }
}

impl Handler<Broadcast> for PeerManager {
    type Result = ResponseActFuture<Self, Result<(), MeshError>>;

    fn handle(&mut self, request: Broadcast, _ctx: &mut Self::Context) -> Self::Result {
        let frame = match self.seal(&Audience::Topic(request.topic), &request.message) {
            Ok(frame) => frame,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let swarm = self.swarm.clone();
        let relay = self.relay.clone().filter(|relay| relay.is_connected());
        let topic = request.topic;
        let bytes = frame.len() as u64;
        let work = async move {
            let mut paths = 0u64;
            let mut last_error = MeshError::NoBroadcastPath;
            if let Some(swarm) = swarm {
                match swarm.publish(topic, frame.clone()).await {
                    Ok(()) => paths += 1,
                    Err(e) => last_error = e,
                }
            }
            if let Some(relay) = relay {
                match relay.broadcast(topic, frame).await {
                    Ok(()) => paths += 1,
                    Err(e) => last_error = e,
                }
            }
            if paths > 0 {
                Ok(paths)
            } else {
                Err(last_error)
            }
        };
        Box::pin(
            work.into_actor(self)
                .map(move |result, actor, _| match result {
                    Ok(paths) => {
                        NetMetrics::add(&actor.metrics.messages_out, paths);
                        NetMetrics::add(&actor.metrics.bytes_out, bytes * paths);
                        Ok(())
                    }
                    Err(e) => {
                        NetMetrics::add(&actor.metrics.send_failures, 1);
                        Err(e)
                    }
                }),
        )
    }
}

impl Handler<SendTo> for PeerManager {
    type Result = ResponseActFuture<Self, Result<PeerPath, MeshError>>;

    fn handle(&mut self, request: SendTo, _ctx: &mut Self::Context) -> Self::Result {
        let frame = match self.seal(&Audience::peer(&request.peer), &request.message) {
            Ok(frame) => frame,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let peer = request.peer;
        let purpose = purpose_of(&request.message);
        let direct = if self.connected.contains(&peer) {
            self.swarm.clone()
        } else {
            None
        };
        let relay = self.relay.clone();
        let bytes = frame.len() as u64;
        let work = async move {
            if let Some(swarm) = direct {
                match swarm.send_direct(peer, frame.clone()).await {
                    Ok(()) => return Ok(PeerPath::Direct),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "direct send failed, trying the relay")
                    }
                }
            }
            match relay {
                Some(relay) => relay.send_to(&peer, frame).await.map(|()| PeerPath::Relay),
                None => Err(MeshError::NoPath(peer)),
            }
        };
        Box::pin(work.into_actor(self).map(move |result, actor, _| {
            match &result {
                Ok(path) => actor.record_sent(peer, *path, bytes, purpose),
                Err(e) => {
                    NetMetrics::add(&actor.metrics.send_failures, 1);
                    tracing::debug!(%peer, error = %e, "send failed");
                }
            }
            result
        }))
    }
}

impl Handler<Ping> for PeerManager {
    type Result = ResponseActFuture<Self, Result<Duration, MeshError>>;

    fn handle(&mut self, request: Ping, ctx: &mut Self::Context) -> Self::Result {
        if self.pending_pings.len() >= PENDING_PINGS_MAX {
            return Box::pin(fut::ready(Err(MeshError::Busy)));
        }
        let nonce: u64 = rand::random();
        let (reply, answer) = oneshot::channel();
        self.pending_pings.insert(
            nonce,
            PendingPing {
                sent_at: Instant::now(),
                reply,
            },
        );
        let address = ctx.address();
        let work = async move {
            let message = APNMessage::PingRequest(PingRequest { nonce });
            address
                .send(SendTo {
                    peer: request.peer,
                    message,
                })
                .await
                .map_err(|_| MeshError::Closed)??;
            tokio::time::timeout(PING_TIMEOUT, answer)
                .await
                .map_err(|_| MeshError::Timeout(PING_TIMEOUT))?
                .map_err(|_| MeshError::Closed)
        };
        Box::pin(work.into_actor(self).map(move |result, actor, _| {
            actor.pending_pings.remove(&nonce);
            result
        }))
    }
}

impl Handler<GetPeers> for PeerManager {
    type Result = MessageResult<GetPeers>;

    fn handle(&mut self, _request: GetPeers, _ctx: &mut Self::Context) -> Self::Result {
        let mut peers: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|entry| entry.info.clone())
            .collect();
        peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        MessageResult(peers)
    }
}

impl Handler<GetMeshStatus> for PeerManager {
    type Result = MessageResult<GetMeshStatus>;

    fn handle(&mut self, _request: GetMeshStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<GetPeerNoiseKey> for PeerManager {
    type Result = Option<[u8; NOISE_KEY_BYTES]>;

    fn handle(&mut self, request: GetPeerNoiseKey, _ctx: &mut Self::Context) -> Self::Result {
        self.peers
            .get(&request.0)
            .and_then(|entry| entry.noise_static_key)
    }
}

impl Handler<SetFreeSlots> for PeerManager {
    type Result = ();

    fn handle(&mut self, request: SetFreeSlots, _ctx: &mut Self::Context) {
        self.free_slots = request.0;
    }
}

impl Handler<Subscribe> for PeerManager {
    type Result = ();

    fn handle(&mut self, request: Subscribe, _ctx: &mut Self::Context) {
        self.taps.push(request.0);
    }
}

impl Handler<Shutdown> for PeerManager {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _request: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let swarm = self.swarm.take();
        let relay = self.relay.take();
        let work = async move {
            if let Some(swarm) = swarm {
                swarm.shutdown(TRANSPORT_SHUTDOWN_TIMEOUT).await;
            }
            if let Some(relay) = relay {
                relay.shutdown(TRANSPORT_SHUTDOWN_TIMEOUT).await;
            }
        };
        Box::pin(work.into_actor(self).map(|(), _actor, ctx| ctx.stop()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_results_and_payments_are_never_dropped_for_a_full_mailbox() {
        let every = crate::messages::samples::every_variant(&Identity::ephemeral(), Utc::now());
        let must: Vec<&str> = every
            .iter()
            .filter(|m| must_deliver(m))
            .map(|m| m.kind())
            .collect();
        for kind in [
            "task_assigned",
            "task_cancelled",
            "execution_started",
            "execution_completed",
            "execution_failed",
            "vibe_transaction",
            "payment_receipt",
        ] {
            assert!(must.contains(&kind), "{kind} may be dropped");
        }
        // Streams and offers may be lost under load (and are counted when they are).
        for kind in [
            "execution_logs",
            "execution_progress",
            "task_distribution_request",
            "task_bid",
        ] {
            assert!(!must.contains(&kind), "{kind} bypasses the mailbox bound");
        }
    }

    #[test]
    fn only_unknown_unconnected_peers_make_room() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let entries = [
            ("announced", true, false, now),
            ("connected", false, true, now),
            ("fresh-old", false, false, now),
            ("fresh-new", false, false, later),
        ];
        assert_eq!(peer_to_evict(entries.into_iter()), Some("fresh-old"));
        assert_eq!(peer_to_evict(entries[..2].iter().copied()), None);
    }
}
