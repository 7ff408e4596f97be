//! A hostile peer built from the crate's own identity, envelope and transport: a raw libp2p
//! swarm that sends signed frames of its choosing to a victim node and reads what comes back.

use std::time::Duration;

use apn::actors::node::NodeHandle;
use apn::identity::Identity;
use apn::market::TaskPayload;
use apn::mesh::EventReceiver;
use apn::mesh::MeshEvent;
use apn::mesh::swarm::{SwarmClient, SwarmSettings, spawn_swarm};
use apn::messages::envelope::{EnvelopeLimits, ReplayCache, verify_frame};
use apn::messages::*;
use uuid::Uuid;

use super::{EVENT_TIMEOUT, has_peer, wait_until};

/// A signed frame carrying `message` from `identity` to the node `to`.
pub fn frame(identity: &Identity, to: &libp2p::PeerId, message: &APNMessage) -> Vec<u8> {
    Envelope::seal(
        identity,
        &Audience::peer(to),
        message,
        chrono::Utc::now().timestamp_millis(),
    )
    .expect("a message of ours encodes")
}

/// An attacker connected to one victim.
pub struct Attacker {
    pub identity: Identity,
    pub swarm: SwarmClient,
    pub events: EventReceiver,
    pub cache: ReplayCache,
    pub victim: libp2p::PeerId,
}

impl Attacker {
    /// A raw swarm with a fresh identity, connected to `victim`.
    pub async fn attach(victim: &NodeHandle) -> Attacker {
        let identity = Identity::ephemeral();
        let (swarm, events) = spawn_swarm(
            &identity,
            SwarmSettings {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("an address")],
                bootstrap: vec![victim.dial_address().expect("the victim listens")],
                mdns: false,
            },
        )
        .expect("the attacker's swarm starts");
        let peer_id = identity.peer_id().to_string();
        assert!(
            wait_until(EVENT_TIMEOUT, || has_peer(victim, &peer_id, |p| p
                .connected))
            .await,
            "the attacker never connected"
        );
        Attacker {
            identity,
            swarm,
            events,
            cache: ReplayCache::new(4096),
            victim: victim.identity.peer_id(),
        }
    }

    /// Send `message` to the victim, signed by the attacker.
    pub async fn send(&self, message: &APNMessage) {
        self.swarm
            .send_direct(self.victim, frame(&self.identity, &self.victim, message))
            .await
            .expect("the victim takes the frame");
    }

    /// Announce the attacker (with its real Noise key) offering `profiles`.
    pub async fn announce(&self, profiles: &[&str]) {
        self.send(&self.announcement(profiles)).await;
    }

    /// Announce (see `announce`) and wait until `victim` holds the announcement.
    pub async fn announce_to(&self, victim: &NodeHandle, profiles: &[&str]) {
        self.announce(profiles).await;
        let peer_id = self.identity.peer_id().to_string();
        assert!(
            wait_until(EVENT_TIMEOUT, || has_peer(victim, &peer_id, |p| p
                .announced))
            .await,
            "the victim never took the attacker's announcement"
        );
    }

    /// The attacker's own, correctly signed announcement (no listen addresses, so nobody
    /// dials it) offering `profiles`.
    pub fn announcement(&self, profiles: &[&str]) -> APNMessage {
        APNMessage::NodeAnnouncement(NodeAnnouncement {
            node_id: self.identity.node_id().clone(),
            capabilities: vec![],
            executor_profiles: profiles.iter().map(|p| p.to_string()).collect(),
            compute_rate_per_cpu_hour: Vibe::from_whole(1),
            min_task_reward: Vibe::from_whole(1),
            max_concurrent_tasks: 1,
            free_slots: 1,
            noise_static_key: serde_bytes::ByteBuf::from(self.identity.noise_public().to_vec()),
            noise_key_signature: serde_bytes::ByteBuf::from(self.identity.noise_binding().to_vec()),
            listen_addrs: vec![],
            relay_only: false,
            version: "evil".into(),
        })
    }

    /// The next verified message from the victim that `wanted` accepts, within `timeout`.
    pub async fn next_within(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&APNMessage) -> bool,
    ) -> Option<APNMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            if let MeshEvent::Frame { frame, via, .. } = event
                && let Ok(v) = verify_frame(
                    &frame,
                    chrono::Utc::now().timestamp_millis(),
                    &EnvelopeLimits::default(),
                    &mut self.cache,
                    &via.expected_audience(&self.identity.peer_id()),
                )
                && wanted(&v.message)
            {
                return Some(v.message);
            }
        }
    }

    /// The next verified message from the victim that `wanted` accepts (panics on timeout).
    pub async fn next(&mut self, wanted: impl Fn(&APNMessage) -> bool) -> APNMessage {
        self.next_within(EVENT_TIMEOUT, wanted)
            .await
            .expect("the expected message within the timeout")
    }

    /// Offer a SHELL task to the victim, committing to `task`'s content, and wait for its
    /// bid.
    pub async fn request_bid(&mut self, reward: Vibe, task: &TaskPayload) -> TaskBid {
        let task_id = Uuid::new_v4();
        self.send(&APNMessage::TaskDistributionRequest(
            TaskDistributionRequest {
                task_id,
                executor_profile: "SHELL".into(),
                requirements: Default::default(),
                reward,
                content_hash: apn::market::content_hash(&task.prompt, &task.base_commit),
                bid_deadline: chrono::Utc::now(),
            },
        ))
        .await;
        match self
            .next(|m| matches!(m, APNMessage::TaskBid(b) if b.task_id == task_id))
            .await
        {
            APNMessage::TaskBid(bid) => bid,
            _ => unreachable!("filtered to a bid"),
        }
    }

    /// A `TaskAssigned` to the victim carrying `payload` sealed to its Noise key.
    pub fn assignment(
        &self,
        victim: &NodeHandle,
        task_id: Uuid,
        price: Vibe,
        payload: &TaskPayload,
    ) -> APNMessage {
        self.assignment_with_handshake(victim, task_id, price, payload)
            .0
    }

    /// [`Attacker::assignment`], with the handshake to complete with the victim's answer.
    pub fn assignment_with_handshake(
        &self,
        victim: &NodeHandle,
        task_id: Uuid,
        price: Vibe,
        payload: &TaskPayload,
    ) -> (APNMessage, apn::mesh::e2e::PendingInitiator) {
        let plaintext = apn::messages::codec::encode(payload).expect("a payload encodes");
        let (pending, handshake) =
            apn::mesh::e2e::initiate(&self.identity, &victim.identity.noise_public(), &plaintext)
                .expect("a handshake");
        let message = APNMessage::TaskAssigned(TaskAssigned {
            task_id,
            executor: victim.identity.node_id().clone(),
            agreed_price: price,
            escrow_id: Uuid::new_v4(),
            deadline: chrono::Utc::now() + chrono::Duration::seconds(30),
            noise_handshake: handshake.into(),
        });
        (message, pending)
    }

    /// As a hostile executor: bid on the victim's task `task_id` (already offered), take
    /// the assignment, answer its handshake and report the run started; returns the run's
    /// end-to-end session and execution id once the victim shows the task running.
    pub async fn win_and_start(
        &mut self,
        victim: &NodeHandle,
        task_id: Uuid,
    ) -> (apn::mesh::e2e::E2eSession, Uuid) {
        self.next(|m| matches!(m, APNMessage::TaskDistributionRequest(r) if r.task_id == task_id))
            .await;
        self.send(&APNMessage::TaskBid(TaskBid {
            task_id,
            bidder: self.identity.node_id().clone(),
            price: Vibe::from_whole(2),
            estimated_duration_s: 1,
            capabilities: vec![],
            valid_until: chrono::Utc::now() + chrono::Duration::seconds(60),
            free_slots: Some(1),
        }))
        .await;
        let APNMessage::TaskAssigned(assigned) = self
            .next(|m| matches!(m, APNMessage::TaskAssigned(a) if a.task_id == task_id))
            .await
        else {
            unreachable!("filtered to an assignment");
        };
        let (_task, answer, session) = apn::mesh::e2e::respond(
            &self.identity,
            &victim.identity.noise_public(),
            &assigned.noise_handshake,
        )
        .expect("the victim's handshake answers");
        let execution_id = Uuid::new_v4();
        self.send(&APNMessage::ExecutionStarted(ExecutionStarted {
            task_id,
            execution_id,
            executor: self.identity.node_id().clone(),
            started_at: chrono::Utc::now(),
            noise_handshake: serde_bytes::ByteBuf::from(answer),
        }))
        .await;
        assert!(
            super::task_reaches(
                victim,
                task_id,
                apn::actors::distributor::TaskStatus::Running,
                EVENT_TIMEOUT
            )
            .await
        );
        (session, execution_id)
    }
}
