//! Carrying out what a task's state machine decided: each [`Effect`] is one send, ledger
//! call, timer or check, and what comes of it goes back to the machine as its next event
//! (naming the round or the escrow it belongs to, so a late answer changes nothing).

use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use libp2p::PeerId;
use uuid::Uuid;

use super::{
    REPO_ACK_TIMEOUT, REPO_CHUNK_BYTES, REPO_CHUNKS_IN_FLIGHT_MAX, REPO_CHUNKS_UNACKED_MAX, Sealed,
    TaskDistributor, TaskStatus,
};
use crate::identity::{self, NodeId};
use crate::ledger::Outcome;
use crate::market::log_order::LogOrder;
use crate::market::origin_task::{BidOffer, Effect, OriginTask, Phase};
use crate::market::{self, BidFacts};
use crate::mesh::e2e;
use crate::messages::{
    APNMessage, DECLINE_REASON_MAX, DropReason, ExecutionStage, RepoChunk, TaskAssigned,
    TaskBidDeclined, TaskCancelled, TaskDistributionRequest, Topic, VerifiedEnvelope, Vibe,
};
use crate::protocol::execution::ExecutionEvent;
use crate::protocol::ledger::{GetReputation, HoldEscrow, RecordOutcome, RefundEscrow};
use crate::protocol::mesh::{Broadcast, GetPeerNoiseKey, GetPeers, SendTo};
use crate::protocol::panel::{TaskDistributedDetails, TransactionDetails};
use crate::workspace;

/// The status the API shows for a phase that is not final.
fn status_of(phase: Phase) -> TaskStatus {
    match phase {
        Phase::Bundling => TaskStatus::Pending,
        Phase::Bidding | Phase::Judging => TaskStatus::Bidding,
        Phase::Escrowing | Phase::Assigned => TaskStatus::Assigned,
        Phase::Running | Phase::Verifying | Phase::Settling => TaskStatus::Running,
        Phase::Completed => TaskStatus::Completed,
        Phase::Failed => TaskStatus::Failed,
        Phase::Cancelled => TaskStatus::Cancelled,
    }
}

impl TaskDistributor {
    /// Give the task's state machine one event and carry out what it returns.
    pub(super) fn drive(
        &mut self,
        id: Uuid,
        ctx: &mut Context<Self>,
        event: impl FnOnce(&mut OriginTask<PeerId>) -> Vec<Effect<PeerId>>,
    ) {
        let Some(machine) = self.tasks.get_mut(&id).and_then(|t| t.mesh.as_mut()) else {
            return;
        };
        let effects = event(machine);
        self.sync_view(id);
        for effect in effects {
            self.carry_out(id, effect, ctx);
        }
    }

    /// The view follows the machine while the task is live (final states are set by the
    /// effect or handler that ends it, which also journals it).
    fn sync_view(&mut self, id: Uuid) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(machine) = &task.mesh else {
            return;
        };
        let view = &mut task.view;
        if !machine.phase().is_final() {
            view.status = status_of(machine.phase());
        }
        view.attempts = machine.attempts();
        view.bids_received = view.bids_received.max(machine.bids_received());
        if let Some((_, offer)) = machine.chosen() {
            view.assigned_node = Some(offer.node_id.clone());
            view.price = Some(offer.price);
        }
        let now = Utc::now();
        // The first time the machine is seen past these points: the view records what the
        // market cost (creation to assignment) and what the user waited (to the start).
        let phase = machine.phase();
        if matches!(phase, Phase::Assigned | Phase::Running) && view.assigned_at.is_none() {
            view.assigned_at = Some(now);
            view.via_offer = machine.via_offer();
        }
        if phase == Phase::Running {
            view.started_at.get_or_insert(now);
        }
        view.updated_at = now;
    }

    pub(super) fn carry_out(&mut self, id: Uuid, effect: Effect<PeerId>, ctx: &mut Context<Self>) {
        match effect {
            Effect::Offer { round } => self.offer(id, round, ctx),
            Effect::OfferTo { round, peer } => self.offer_to(id, round, peer, ctx),
            Effect::CloseBiddingAfter { round, after } => {
                ctx.run_later(after, move |actor, ctx| {
                    actor.drive(id, ctx, |task| task.close_bidding(round))
                });
            }
            Effect::OfferAgainAfter { round, after } => {
                ctx.run_later(after, move |actor, ctx| {
                    actor.drive(id, ctx, |task| task.offer_again(round))
                });
            }
            Effect::JudgeBids { round, bids } => self.judge(id, round, bids, ctx),
            Effect::HoldAndSeal {
                peer,
                price,
                escrow_id,
            } => {
                // Counted at the choice, so the next task judged (a burst judges many at
                // once) already sees it; an executor asked through its offer was counted
                // when it was asked.
                let via_offer = self
                    .tasks
                    .get(&id)
                    .and_then(|t| t.mesh.as_ref())
                    .is_some_and(|m| m.via_offer());
                if !via_offer {
                    self.recent.record(peer, Instant::now());
                }
                self.hold_and_seal(id, peer, price, escrow_id, ctx)
            }
            Effect::SendAssignment { peer, escrow_id } => {
                self.send_assignment(id, peer, escrow_id, ctx)
            }
            Effect::WithdrawBids { peers } => {
                for peer in peers {
                    self.tell_cancelled(id, peer, "another bid won".into());
                }
            }
            Effect::SendBundle { peer } => self.send_bundle(id, peer, ctx),
            Effect::Verify { escrow_id } => self.verify(id, escrow_id, ctx),
            Effect::Release {
                peer,
                price,
                escrow_id,
            } => self.release(id, peer, price, escrow_id, ctx),
            Effect::Refund { escrow_id } => {
                self.links
                    .refund
                    .do_send(RefundEscrow { task_id: escrow_id });
                if let Some(task) = self.tasks.get_mut(&id) {
                    if task
                        .sealed
                        .as_ref()
                        .is_some_and(|s| s.escrow_id == escrow_id)
                    {
                        task.sealed = None;
                    }
                    if task.outbox.as_ref().is_some_and(|(e, _)| *e == escrow_id) {
                        task.outbox = None;
                    }
                }
            }
            Effect::RecordOutcome { peer, outcome } => {
                if let Some(key) = identity::public_key_of(&peer) {
                    self.links
                        .outcome
                        .do_send(RecordOutcome { peer: key, outcome });
                }
            }
            Effect::CancelAssignment { peer, reason } => self.tell_cancelled(id, peer, reason),
            Effect::Reassigning { reason } => {
                tracing::warn!(task_id = %id, %reason, "execution failed; refunding and reassigning");
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.view.error = task
                        .mesh
                        .as_ref()
                        .and_then(|m| m.last_failure())
                        .map(str::to_string);
                    // The next executor starts from the base commit again.
                    task.view.files_modified.clear();
                    task.view.task_attempt_id = None;
                }
                self.event(ExecutionEvent::Progress {
                    task_id: id,
                    stage: ExecutionStage::Setup,
                    percent: 0,
                    action: format!("reassigning: {reason}"),
                    // The next executor starts from the base commit again.
                    files_modified: Vec::new(),
                    files_omitted: 0,
                    task_attempt_id: None,
                });
            }
            Effect::Failed { reason } => {
                let reason = match self.tasks.get(&id) {
                    Some(task) if reason.starts_with("no node bid") => format!(
                        "{reason}: nobody on the mesh runs profile {} for {} VIBE or less with a free slot",
                        task.request.executor_profile, task.request.reward
                    ),
                    _ => reason,
                };
                self.fail(id, reason);
            }
            Effect::Completed { price } => self.complete(id, price),
        }
    }

    /// A bidder says it will not bid for a task (`TaskBidDeclined`): one answer fewer to
    /// wait for. Only the machine decides whether it counts (an eligible executor of the
    /// current round); anything else changes nothing and costs a lookup.
    pub(super) fn on_decline(
        &mut self,
        envelope: &VerifiedEnvelope,
        declined: &TaskBidDeclined,
        ctx: &mut Context<Self>,
    ) {
        let task_id = declined.task_id;
        if self.tasks.get(&task_id).is_none_or(|t| t.mesh.is_none()) {
            self.metrics.count_drop(DropReason::Unauthorized);
            return;
        }
        let reason: String = declined.reason.chars().take(DECLINE_REASON_MAX).collect();
        tracing::debug!(%task_id, from = %envelope.from_node, %reason, "bid declined");
        let peer = envelope.from_peer;
        self.drive(task_id, ctx, |task| task.declined(peer));
    }

    /// The request bidders see for task `id`, its deadline one bid window from now.
    pub(super) fn request_of(&self, id: Uuid) -> Option<TaskDistributionRequest> {
        let task = self.tasks.get(&id)?;
        let window = Duration::from_millis(self.config.market.bid_window_ms);
        Some(TaskDistributionRequest {
            task_id: id,
            executor_profile: task.request.executor_profile.clone(),
            requirements: task.request.requirements.clone(),
            reward: task.request.reward,
            content_hash: market::content_hash(&task.request.prompt, &task.base_commit),
            bid_deadline: Utc::now() + chrono::Duration::from_std(window).unwrap_or_default(),
        })
    }

    /// The `task_distributed` entry of a round sent: to the mesh (`target_node` none), or
    /// to the one executor whose live offer matched.
    fn log_distributed(&mut self, id: Uuid, target_node: Option<String>) {
        let reward = self.tasks.get(&id).map(|t| t.request.reward);
        let title = self.title(id);
        let description = match &target_node {
            Some(node) => format!("{title} offered to {node} (its live offer)"),
            None => format!("{title} offered to the mesh"),
        };
        let details = TaskDistributedDetails {
            task_id: id,
            task_title: title,
            target_node,
            reward_vibe: reward,
        };
        self.log(TransactionDetails::TaskDistributed(details), description);
    }

    /// Send the request of round `round` to `peer` alone, whose live offer matched: no
    /// gossip, nobody else asked. Undelivered, the round is over at once with no answer
    /// (the machine then asks the mesh); delivered, the window waits for its one answer.
    fn offer_to(&mut self, id: Uuid, round: u32, peer: PeerId, ctx: &mut Context<Self>) {
        let Some(request) = self.request_of(id) else {
            return;
        };
        let send = self.links.send.clone();
        let message = APNMessage::TaskDistributionRequest(request);
        ctx.spawn(
            async move { send.send(SendTo { peer, message }).await }
                .into_actor(self)
                .map(move |sent, actor, ctx| match sent {
                    Ok(Ok(_)) => {
                        tracing::debug!(task_id = %id, %peer, "asked the executor of a live offer");
                        let target = crate::identity::public_key_of(&peer).map(|key| {
                            crate::identity::NodeId::from_public_key(&key).to_string()
                        });
                        actor.log_distributed(id, target);
                        actor.drive(id, ctx, |task| task.offered(round, vec![peer]));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(task_id = %id, %peer, error = %e, "offer request not delivered");
                        actor.drive(id, ctx, |task| task.declined(peer));
                        actor.drive(id, ctx, |task| task.offered(round, vec![peer]));
                    }
                    Err(e) => {
                        let reason = format!("peer manager gone: {e}");
                        actor.drive(id, ctx, |task| task.fail(reason));
                    }
                }),
        );
    }

    pub(super) fn tell_cancelled(&self, id: Uuid, peer: PeerId, reason: String) {
        self.links.send.do_send(SendTo {
            peer,
            message: APNMessage::TaskCancelled(TaskCancelled {
                task_id: id,
                reason,
            }),
        });
    }

    /// Send the request of bid round `round`: by gossip and the relay, and straight to the
    /// peers that announced the profile, in random order (gossip alone can miss a peer whose
    /// subscription has not propagated yet); those of them that announced a free slot are
    /// the eligible executors, and once each has bid or refused the window closes. Bidders
    /// answer a task id once per round, so copies cost nothing.
    fn offer(&mut self, id: Uuid, round: u32, ctx: &mut Context<Self>) {
        let Some(request) = self.request_of(id) else {
            return;
        };
        let (peers_of, send, broadcast) = (
            self.links.peers.clone(),
            self.links.send.clone(),
            self.links.broadcast.clone(),
        );
        let profile = request.executor_profile.clone();
        let message = APNMessage::TaskDistributionRequest(request);
        let work = async move {
            let peers = peers_of.send(GetPeers).await.unwrap_or_default();
            let mut direct: Vec<(PeerId, u32)> = peers
                .iter()
                .filter(|p| p.announced && p.executor_profiles.contains(&profile))
                .filter_map(|p| Some((p.peer_id.parse().ok()?, p.free_slots)))
                .collect();
            // In a new order each time: the window may close on the first bids in, and a
            // peer always offered last would never be among them.
            rand::seq::SliceRandom::shuffle(&mut direct[..], &mut rand::thread_rng());
            direct.truncate(super::DIRECT_OFFERS_MAX);
            // Those that announced a free slot are the ones worth waiting for; a busy one
            // is offered the task too (its announcement may be stale) but not waited for.
            let eligible: Vec<PeerId> = direct
                .iter()
                .filter(|(_, free_slots)| *free_slots > 0)
                .map(|(peer, _)| *peer)
                .collect();
            let offered_directly = !direct.is_empty();
            for (peer, _) in direct {
                if let Ok(Err(e)) = send
                    .send(SendTo {
                        peer,
                        message: message.clone(),
                    })
                    .await
                {
                    tracing::debug!(%peer, error = %e, "direct offer not delivered");
                }
            }
            match broadcast
                .send(Broadcast {
                    topic: Topic::Tasks,
                    message,
                })
                .await
            {
                Ok(Ok(())) => Ok(eligible),
                Ok(Err(e)) if !offered_directly => {
                    Err(format!("cannot offer the task to the mesh: {e}"))
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "gossip offer not sent; direct offers were");
                    Ok(eligible)
                }
                Err(e) => Err(format!("peer manager gone: {e}")),
            }
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |offered, actor, ctx| match offered {
                    Ok(eligible) => {
                        actor.log_distributed(id, None);
                        actor.drive(id, ctx, |task| task.offered(round, eligible));
                    }
                    Err(reason) => actor.drive(id, ctx, |task| task.fail(reason)),
                }),
        );
    }

    /// Check the bids of `round` against what the peer table knows of each bidder and rank
    /// them by price, time, reputation and latency; near-ties go to the executor given
    /// fewest tasks lately, then to the one with most free slots. The ranking happens back
    /// on the actor, so tasks judged one after another see each other's choices.
    fn judge(
        &mut self,
        id: Uuid,
        round: u32,
        bids: Vec<(PeerId, BidOffer)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let reward = task.request.reward;
        let profile = task.request.executor_profile.clone();
        let minimum = self.config.economics.min_task_reward;
        let peers_of = self.links.peers.clone();
        let reputation_of = self.links.reputation.clone();
        let metrics = self.metrics.clone();
        let work = async move {
            let peers = peers_of.send(GetPeers).await.unwrap_or_default();
            let mut judged = Vec::new();
            for (peer, bid) in bids {
                let info = peers.iter().find(|p| p.peer_id == peer.to_string());
                let profiles = info
                    .map(|p| p.executor_profiles.clone())
                    .unwrap_or_default();
                if let Err(reason) =
                    market::check_bid(bid.price, reward, minimum, &profile, &profiles)
                {
                    metrics.count_drop(match reason {
                        market::BadBid::Zero | market::BadBid::BelowMinimum { .. } => {
                            DropReason::BidBelowMinimum
                        }
                        _ => DropReason::Unauthorized,
                    });
                    tracing::warn!(%peer, %reason, "bid refused");
                    continue;
                }
                let reputation = match identity::public_key_of(&peer) {
                    Some(key) => reputation_of
                        .send(GetReputation { peer: key })
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .unwrap_or(0.5),
                    None => 0.0,
                };
                judged.push((
                    peer,
                    BidFacts {
                        price: bid.price,
                        estimated_duration_s: bid.estimated_duration_s,
                        reputation,
                        latency_ms: info.and_then(|p| p.latency_ms),
                        free_slots: bid.free_slots,
                    },
                ));
            }
            judged
        };
        ctx.spawn(work.into_actor(self).map(move |judged, actor, ctx| {
            let now = Instant::now();
            actor.recent.forget_old(now);
            let recent = &actor.recent;
            let ranked = market::rank_bids(&judged, reward, |peer| recent.count(peer, now));
            actor.drive(id, ctx, |task| task.judged(round, ranked, Utc::now()))
        }));
    }

    /// Hold the escrow and seal the task to `peer`'s Noise key; the sealed `TaskAssigned`
    /// waits in the outbox until the machine has recorded the assignment.
    fn hold_and_seal(
        &mut self,
        id: Uuid,
        peer: PeerId,
        price: Vibe,
        escrow_id: Uuid,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let Some((_, bid)) = task.mesh.as_ref().and_then(|m| m.chosen()) else {
            return;
        };
        let executor_node = bid.node_id.clone();
        let payload = Self::payload(task);
        let hold = self.links.hold.clone();
        let noise_key = self.links.noise_key.clone();
        let identity = self.identity.clone();
        let deadline =
            Utc::now() + chrono::Duration::seconds(self.config.market.heartbeat_timeout_s as i64);
        // On the network ledger the escrow outlives the longest the assignment may last, so
        // the executor's commit can land before it and be claimed after it.
        let hold_s = self
            .origin_limits(&task.request)
            .run_deadline
            .as_secs()
            .saturating_add(self.config.settlement.hold_grace_s)
            .min(crate::network_ledger::rules::MAX_HOLD_MS as u64 / 1000 - 1);
        let hold_deadline = Utc::now() + chrono::Duration::seconds(hold_s as i64);
        let payee = identity::public_key_of(&peer);
        // `Err((escrow_held, reason))`.
        let prepare = async move {
            hold.send(HoldEscrow {
                transfer_id: escrow_id,
                task_id: escrow_id,
                amount: price,
                payee,
                deadline: hold_deadline,
            })
            .await
            .map_err(|e| (false, format!("ledger unavailable: {e}")))?
            .map_err(|e| (false, format!("cannot escrow {price} VIBE: {e}")))?;
            let key = noise_key
                .send(GetPeerNoiseKey(peer))
                .await
                .ok()
                .flatten()
                .ok_or((
                    true,
                    format!("{executor_node} never announced its encryption key"),
                ))?;
            let plaintext =
                crate::messages::codec::encode(&payload).map_err(|e| (true, e.to_string()))?;
            let (pending, handshake) =
                e2e::initiate(&identity, &key, &plaintext).map_err(|e| (true, e.to_string()))?;
            // The bid's signer is the bidder (checked on arrival): its node id is its key's.
            let executor = identity::public_key_of(&peer)
                .map(|key| NodeId::from_public_key(&key))
                .ok_or((true, format!("{executor_node} has no Ed25519 key")))?;
            let message = APNMessage::TaskAssigned(TaskAssigned {
                task_id: id,
                executor,
                agreed_price: price,
                escrow_id,
                deadline,
                noise_handshake: handshake.into(),
            });
            Ok::<_, (bool, String)>((pending, message))
        };
        ctx.spawn(
            prepare
                .into_actor(self)
                .map(move |prepared, actor, ctx| match prepared {
                    Ok((pending, message)) => {
                        let Some(task) = actor.tasks.get_mut(&id) else {
                            actor
                                .links
                                .refund
                                .do_send(RefundEscrow { task_id: escrow_id });
                            return;
                        };
                        task.sealed = Some(Sealed {
                            escrow_id,
                            pending: Some(pending),
                            session: None,
                            logs: LogOrder::default(),
                            result_chunks: None,
                            repo_have: Vec::new(),
                            repo_acked: None,
                        });
                        task.outbox = Some((escrow_id, message));
                        actor.drive(id, ctx, |task| task.prepared(escrow_id, Instant::now()));
                    }
                    Err((false, reason)) => actor.drive(id, ctx, |task| {
                        task.escrow_failed(escrow_id, reason, Utc::now())
                    }),
                    Err((true, reason)) => actor.drive(id, ctx, |task| {
                        task.prepare_failed(escrow_id, reason, Utc::now())
                    }),
                }),
        );
    }

    fn send_assignment(
        &mut self,
        id: Uuid,
        peer: PeerId,
        escrow_id: Uuid,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some((_, message)) = task.outbox.take().filter(|(e, _)| *e == escrow_id) else {
            return;
        };
        let send = self.links.send.clone();
        let sending = async move {
            send.send(SendTo { peer, message })
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .map_err(|e| format!("cannot reach the executor: {e}"))
        };
        ctx.spawn(sending.into_actor(self).map(move |sent, actor, ctx| {
            if sent.is_ok() {
                tracing::info!(task_id = %id, executor = %peer, "task assigned");
            }
            actor.drive(id, ctx, |task| {
                task.assignment_sent(escrow_id, sent, Utc::now())
            })
        }));
    }

    /// Bundle what the executor lacks of the base commit (off the actor thread), then
    /// stream it: [`stream_bundle`] reads each chunk from disk as it goes.
    fn send_bundle(&mut self, id: Uuid, peer: PeerId, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(sealed) = task.current_sealed() else {
            return;
        };
        let have = std::mem::take(&mut sealed.repo_have);
        let escrow_id = sealed.escrow_id;
        let repo = std::path::PathBuf::from(&task.request.repo_path);
        let commit = task.base_commit.clone();
        let reference = market::bundle_reference(id);
        let path = self
            .config
            .node
            .data_dir
            .join("bundles")
            .join(format!("{id}-{escrow_id}.bundle"));
        let bundling = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                workspace::create_bundle_missing(&repo, &commit, &have, &reference, &path)
                    .map_err(|e| e.to_string())
            })
        };
        ctx.spawn(bundling.into_actor(self).map(move |bundled, actor, ctx| {
            let bytes = match bundled.map_err(|e| e.to_string()).and_then(|b| b) {
                Ok(bytes) => bytes.unwrap_or(0),
                Err(e) => {
                    workspace::remove_workspace(&path);
                    let reason = format!("cannot bundle the repository: {e}");
                    return actor.drive(id, ctx, |task| task.fail(reason));
                }
            };
            let chunks = market::bundle_chunks(bytes);
            let sealer = actor
                .tasks
                .get_mut(&id)
                .and_then(|t| t.current_sealed())
                .filter(|s| s.escrow_id == escrow_id)
                .and_then(|s| s.session.as_mut())
                .map(|session| session.reserve(chunks * e2e::segments_for(REPO_CHUNK_BYTES)));
            let sealer = match sealer {
                Some(Ok(sealer)) => sealer,
                // The assignment ended meanwhile: nothing to send.
                None => return workspace::remove_workspace(&path),
                Some(Err(e)) => {
                    workspace::remove_workspace(&path);
                    let reason = format!("cannot encrypt the bundle: {e}");
                    return actor.drive(id, ctx, |task| task.fail(reason));
                }
            };
            let (acked, acks) = tokio::sync::watch::channel(0u32);
            if let Some(sealed) = actor.tasks.get_mut(&id).and_then(|t| t.current_sealed()) {
                sealed.repo_acked = Some(acked);
            }
            tracing::debug!(task_id = %id, executor = %peer, bytes, chunks, "sending the repository");
            let transfer = BundleTransfer {
                task_id: id,
                peer,
                path: (bytes > 0).then(|| path.clone()),
                bytes,
                sealer,
                acks,
                send: actor.links.send.clone(),
            };
            let work = async move {
                let started = Instant::now();
                let sent = stream_bundle(transfer).await.map(|()| started.elapsed());
                // Off the actors' thread: unlinking a large file takes a while.
                let _ = tokio::task::spawn_blocking(move || workspace::remove_workspace(&path)).await;
                sent
            };
            ctx.spawn(work.into_actor(actor).map(move |result, actor, ctx| match result {
                Ok(elapsed) => {
                    if let Some(task) = actor.tasks.get_mut(&id) {
                        task.view.repo_bytes_sent += bytes;
                        task.view.repo_transfer_ms = Some(elapsed.as_secs_f64() * 1000.0);
                    }
                }
                Err(e) => {
                    let reason = format!("repository transfer failed: {e}");
                    actor.drive(id, ctx, |task| {
                        task.executor_gave_up(Some(Outcome::Failed), reason, Utc::now())
                    });
                }
            }));
        }));
    }

    /// Time passes for every task offered to the mesh.
    pub(super) fn check_heartbeats(&mut self, ctx: &mut Context<Self>) {
        let live: Vec<Uuid> = self
            .tasks
            .iter()
            .filter(|(_, task)| task.mesh.as_ref().is_some_and(|m| m.assignment().is_some()))
            .map(|(id, _)| *id)
            .collect();
        let (now, wall) = (Instant::now(), Utc::now());
        for id in live {
            self.drive(id, ctx, |task| task.tick(now, wall));
        }
    }
}

/// One repository transfer: the bundle on disk (none when the executor has it all), the
/// nonces reserved for it, and the executor's reports of what it has written.
struct BundleTransfer {
    task_id: Uuid,
    peer: PeerId,
    path: Option<std::path::PathBuf>,
    bytes: u64,
    sealer: e2e::NonceSealer,
    acks: tokio::sync::watch::Receiver<u32>,
    send: Recipient<SendTo>,
}

/// Send a bundle in sealed chunks: each read from disk and sealed on the blocking pool as
/// it goes (the bundle is never whole in memory, never read on the actor's thread), up to
/// [`REPO_CHUNKS_IN_FLIGHT_MAX`] awaiting the transport and at most
/// [`REPO_CHUNKS_UNACKED_MAX`] beyond what the executor reported written.
async fn stream_bundle(transfer: BundleTransfer) -> Result<(), String> {
    use futures::StreamExt;
    use std::os::unix::fs::FileExt;

    let BundleTransfer {
        task_id,
        peer,
        path,
        bytes,
        mut sealer,
        mut acks,
        send,
    } = transfer;
    let total = u32::try_from(market::bundle_chunks(bytes))
        .map_err(|_| format!("a bundle of {bytes} bytes has too many chunks"))?;
    let file = match &path {
        Some(path) => Some(std::sync::Arc::new(
            std::fs::File::open(path).map_err(|e| format!("cannot read the bundle: {e}"))?,
        )),
        None => None,
    };
    let mut in_flight = futures::stream::FuturesUnordered::new();
    for index in 0..total {
        while index >= acks.borrow().saturating_add(REPO_CHUNKS_UNACKED_MAX) {
            tokio::time::timeout(REPO_ACK_TIMEOUT, acks.changed())
                .await
                .map_err(|_| format!("the executor reported no progress for {REPO_ACK_TIMEOUT:?}"))?
                .map_err(|_| "the assignment ended".to_string())?;
        }
        let offset = u64::from(index) * REPO_CHUNK_BYTES as u64;
        let length = (bytes - offset).min(REPO_CHUNK_BYTES as u64) as usize;
        let file = file.clone();
        let (returned, data) = tokio::task::spawn_blocking(move || {
            let mut part = vec![0u8; length];
            if let Some(file) = file {
                file.read_exact_at(&mut part, offset)
                    .map_err(|e| format!("cannot read the bundle: {e}"))?;
            }
            let data = sealer
                .seal(&part)
                .map_err(|e| format!("cannot encrypt the bundle: {e}"))?;
            Ok::<_, String>((sealer, data))
        })
        .await
        .map_err(|e| e.to_string())??;
        sealer = returned;
        let message = APNMessage::RepoChunk(RepoChunk {
            task_id,
            index,
            total,
            bytes,
            data,
        });
        let send = send.clone();
        in_flight.push(async move {
            send.send(SendTo { peer, message })
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        if in_flight.len() >= REPO_CHUNKS_IN_FLIGHT_MAX
            && let Some(sent) = in_flight.next().await
        {
            sent?;
        }
    }
    while let Some(sent) = in_flight.next().await {
        sent?;
    }
    Ok(())
}
