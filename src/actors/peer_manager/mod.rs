//! `PeerManager`: the node's only door to the network.
//!
//! It owns the libp2p swarm (through the task `mesh::swarm` spawns: commands go in over a
//! bounded channel, events come back as a stream) and the NATS relay client (`mesh::relay`).
//! Every inbound frame is verified here before any role sees it: the stateless checks (the
//! Ed25519 signature above all) on the worker threads of `verify_pool`, one per core, then
//! the replay check on the actor (`messages::envelope::{check_frame, CheckedEnvelope::admit}`);
//! a bad one is dropped, counted by reason and logged at most once per source per minute. Verified messages go to the role that owns their variant (`Routes`), peer changes
//! to the panel hub.
//!
//! In: `Broadcast`, `SendTo`, `Ping`, `GetPeers`, `GetMeshStatus`, `Subscribe`, mesh events,
//! frames checked by the verification workers (`verify_pool::Checked`).
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
use crate::messages::envelope::{Audience, check_frame};
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

/// Messages a role must get even when its mailbox is full: an assignment, the end of a run
/// (and the chunks of a large result), payments and their receipts. Losing one costs money
/// or a task; their rate is bounded by the per-peer frame budget before they get here.
pub fn must_deliver(message: &APNMessage) -> bool {
    matches!(
        message,
        APNMessage::TaskAssigned(_)
            | APNMessage::TaskCancelled(_)
            | APNMessage::ExecutionStarted(_)
            | APNMessage::ExecutionCompleted(_)
            | APNMessage::ExecutionFailed(_)
            | APNMessage::ResultChunk(_)
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
    /// The libp2p swarm's command client and its events; `None` in relay-only mode.
    pub swarm: Option<(SwarmClient, EventReceiver)>,
    /// The NATS relay client and its events; `None` when no relay URL is configured.
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
/// After the free slots change the offer (none left, or some again), the announcement that
/// says so goes out this much later: at most one per pause, however busy a burst.
pub const OFFER_UPDATE_DELAY: Duration = Duration::from_millis(50);

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
    /// An announcement for a changed offer (free slots) is scheduled.
    offer_update_pending: bool,
    /// Frame budgets of the peers frames come from directly, checked before verification.
    frame_budgets: FrameRateLimiter<PeerId>,
    /// The signature verification workers; started with the actor. `None` before that, or
    /// if no worker thread could start: frames are then checked on the actor thread.
    verify_pool: Option<VerifyPool>,
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
            offer_update_pending: false,
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
            verify_pool: None,
            config,
        }
    }

    fn announcement(&self) -> APNMessage {
        let economics = &self.config.economics;
        APNMessage::NodeAnnouncement(NodeAnnouncement {
            node_id: self.identity.node_id().clone(),
            capabilities: self.config.node.announced_capabilities(),
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
                announced_at: None,
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
        // Before the early events: their frames go through the pool like every later one.
        match VerifyPool::start(
            PoolLimits::for_this_machine(),
            self.identity.peer_id(),
            self.limits,
        ) {
            Ok((pool, checked)) => {
                self.verify_pool = Some(pool);
                ctx.add_stream(ReceiverStream::new(checked));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no verification workers: frames are checked on the peer manager's thread")
            }
        }
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
            } => self.on_frame(frame, via, transport_peer, gossip, ctx),
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

mod handlers;
mod inbound;
#[cfg(test)]
mod tests;
pub mod verify_pool;

use verify_pool::{Checked, PoolLimits, VerifyPool};
