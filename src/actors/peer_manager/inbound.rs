//! Inbound frames: the budget check, envelope verification (the stateless checks on the
//! verification pool, then the replay check here), the peer table's update and the route to
//! the role that owns the message; announcements (their Noise key binding, and a dial to the
//! addresses the peer announced for itself).

use super::verify_pool::SubmitError;
use super::*;
use crate::mesh::GossipReceipt;
use crate::messages::envelope::CheckedEnvelope;

impl PeerManager {
    /// Take one inbound frame: the sender's frame budget, then the stateless checks on the
    /// verification pool (the answer comes back as a [`Checked`], handled below), or here on
    /// the actor when no pool runs.
    ///
    /// Gossip is pooled too: gossipsub holds each message until it is told (through
    /// `SwarmClient::report_validation`, a fire-and-forget command) whether to forward it,
    /// so the answer need not be given before this returns. It is given exactly once per
    /// gossip frame: here when the frame is refused before the pool, else when its result is
    /// back.
    pub(super) fn on_frame(
        &mut self,
        frame: Vec<u8>,
        via: FrameVia,
        transport_peer: Option<PeerId>,
        gossip: Option<GossipReceipt>,
        ctx: &mut Context<Self>,
    ) {
        NetMetrics::add(&self.metrics.bytes_in, frame.len() as u64);
        if let Some(peer) = transport_peer
            && !self.frame_budgets.allow(&peer, Instant::now())
        {
            self.metrics.count_drop(DropReason::RateLimited);
            self.log_drop(peer.to_string(), DropReason::RateLimited);
            self.report_gossip(gossip, Err(DropReason::RateLimited));
            return;
        }
        let Some(pool) = &mut self.verify_pool else {
            let expected = via.expected_audience(&self.identity.peer_id());
            let checked = check_frame(&frame, now_ms(), &self.limits, &expected);
            let judged = self.on_checked(checked, frame.len(), via, transport_peer, ctx);
            self.report_gossip(gossip, judged);
            return;
        };
        if let Err(refused) = pool.submit(frame, via, transport_peer, gossip) {
            // The sender's shard is behind: drop rather than queue without bound or wait on
            // this thread. An honest forwarder may hit this too, so gossip is ignored, not
            // rejected.
            let source = match &refused {
                SubmitError::Full { shard, .. } | SubmitError::Stopped { shard, .. } => {
                    format!("verification shard {shard}")
                }
            };
            self.metrics.count_drop(DropReason::QueueFull);
            self.log_drop(source, DropReason::QueueFull);
            self.report_gossip(refused.into_gossip(), Err(DropReason::QueueFull));
        }
    }

    /// Tell gossipsub what became of a gossip frame (no-op for other paths).
    fn report_gossip(&self, gossip: Option<GossipReceipt>, judged: Result<(), DropReason>) {
        if let (Some(receipt), Some(swarm)) = (gossip, &self.swarm) {
            swarm.report_validation(receipt, gossip_acceptance(judged));
        }
    }

    /// Finish a frame the stateless checks have judged: the replay check, then the peer
    /// table and the route to the role that owns the message. The answer (accepted, or
    /// dropped and why) tells gossipsub whether to forward it.
    pub(super) fn on_checked(
        &mut self,
        checked: Result<CheckedEnvelope, DropReason>,
        frame_bytes: usize,
        via: FrameVia,
        transport_peer: Option<PeerId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), DropReason> {
        let verified = match checked
            .and_then(|checked| checked.admit(now_ms(), &self.limits, &mut self.replay_cache))
        {
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
        let frame_bytes = frame_bytes as u64;
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
                    APNMessage::TaskBid(_) | APNMessage::TaskBidDeclined(_) => {
                        (&self.routes.distributor, Role::Distributor)
                    }
                    APNMessage::TaskAssigned(_)
                    | APNMessage::RepoChunk(_)
                    | APNMessage::TaskCancelled(_) => (&self.routes.executor, Role::Executor),
                    // The distributor holds the Noise session of each of its tasks, so it
                    // decrypts the stream and hands it to the execution relay.
                    APNMessage::ExecutionStarted(_)
                    | APNMessage::ExecutionProgress(_)
                    | APNMessage::ExecutionLogs(_)
                    | APNMessage::ExecutionCompleted(_)
                    | APNMessage::ExecutionFailed(_)
                    | APNMessage::ResultChunk(_) => (&self.routes.distributor, Role::Distributor),
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
            // Receipt time, not the signer's clock: a peer cannot stretch its offer's life.
            info.announced_at = Some(chrono::Utc::now());
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
}

impl StreamHandler<Checked> for PeerManager {
    fn handle(&mut self, checked: Checked, ctx: &mut Self::Context) {
        if let Some(pool) = &mut self.verify_pool {
            pool.release(&checked);
        }
        let Checked {
            result,
            frame_bytes,
            via,
            transport_peer,
            gossip,
            ..
        } = checked;
        let judged = self.on_checked(result, frame_bytes, via, transport_peer, ctx);
        self.report_gossip(gossip, judged);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // Every worker is gone (only when the actor is stopping and dropped the pool). The
        // default would stop the actor; it is stopping anyway, or must not be stopped by this.
        tracing::debug!("verification results stream ended");
    }
}
