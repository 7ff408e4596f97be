//! `Bidder`: the market's bidding side. A `TaskDistributionRequest` from an allowed peer,
//! for a profile this node has, at a price within the reward, gets a `TaskBid` once the
//! executor reserved a slot for it. Which requests are answered at all (copies, the
//! per-peer rate, the live-bid bound) is the pure [`BidBook`]; what to bid is
//! [`market::decide_bid`]. This actor only carries out their answers.
//!
//! A request it will not answer with a bid, for a profile it runs, gets a
//! `TaskBidDeclined` instead ([`market::tells_refusal`]), so the originator's bid window
//! need not wait for this node; copies and rate-limited requests get nothing.
//!
//! In: `Inbound` (`TaskDistributionRequest`). Out: `ReserveSlot` to the executor, `SendTo`
//! (the bid, or the refusal) to the peer manager.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;

use crate::config::Config;
use crate::identity::Identity;
use crate::market::bidder::{BidBook, BidBookLimits, RESERVATION_GRACE, RequestRefused};
use crate::market::{self, BidderState};
use crate::messages::{
    APNMessage, DropReason, TaskBid, TaskBidDeclined, TaskDistributionRequest, VerifiedEnvelope,
};
use crate::metrics::NetMetrics;
use crate::protocol::execution::ReserveSlot;
use crate::protocol::mesh::{Inbound, SendTo};

/// Live bids remembered at most (each holds a reservation at the executor).
pub const BIDS_REMEMBERED_MAX: usize = 10_000;
/// Requesting peers whose request rate is tracked at most.
pub const RATE_LIMITED_PEERS_MAX: usize = 4_096;

/// Where the bidder's answers go.
pub struct BidderLinks {
    /// The executor, which holds a slot for each bid.
    pub reserve: Recipient<ReserveSlot>,
    /// The peer manager, which delivers the bid.
    pub send: Recipient<SendTo>,
}

/// The `Bidder` role.
pub struct Bidder {
    identity: Identity,
    config: Arc<Config>,
    metrics: Arc<NetMetrics>,
    links: BidderLinks,
    book: BidBook<libp2p::PeerId>,
    profiles: Vec<String>,
}

impl Bidder {
    /// A bidder for the profiles this node can run, its bid book limited by the `market` settings.
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        metrics: Arc<NetMetrics>,
        links: BidderLinks,
    ) -> Self {
        let limits = BidBookLimits {
            copies_window: Duration::from_millis(config.market.bid_window_ms),
            requests_per_peer_per_minute: config.market.requests_per_peer_per_minute,
            bids_remembered_max: BIDS_REMEMBERED_MAX,
            rate_limited_peers_max: RATE_LIMITED_PEERS_MAX,
        };
        Bidder {
            profiles: crate::agent_process::available_profiles(&config.executor),
            book: BidBook::new(limits),
            identity,
            config,
            metrics,
            links,
        }
    }

    fn on_request(
        &mut self,
        envelope: &VerifiedEnvelope,
        request: &TaskDistributionRequest,
        ctx: &mut Context<Self>,
    ) {
        let origin = envelope.from_peer;
        let now = Instant::now();
        match self.book.admit(request.task_id, origin, now) {
            Ok(()) => {}
            Err(RequestRefused::Copy) => return,
            Err(_) => {
                self.metrics.count_drop(DropReason::RateLimited);
                return;
            }
        }
        let unsandboxed = crate::sandbox::peer_runs_allowed(
            self.config.executor.sandbox,
            crate::sandbox::support(),
        )
        .err();
        let capabilities = self.config.node.announced_capabilities();
        let state = BidderState {
            unsandboxed: unsandboxed.as_deref(),
            profiles: &self.profiles,
            capabilities: &capabilities,
            // The executor's reservation below is the check that counts (it knows the
            // slots); its answer, the slots left, goes into the bid.
            free_slots: 1,
            compute_rate_per_cpu_hour: self.config.economics.compute_rate_per_cpu_hour,
            min_task_reward: self.config.economics.min_task_reward,
            accept: &self.config.accept,
            memory_mb: self.config.resources.max_memory_mb,
            compute_role: self.config.node.runs_peer_tasks(),
        };
        let price = match market::decide_bid(request, &origin.to_string(), &state) {
            Ok(price) => price,
            Err(reason) => {
                tracing::debug!(task_id = %request.task_id, %reason, "not bidding");
                if market::tells_refusal(&reason) {
                    decline(
                        &self.links.send,
                        origin,
                        request.task_id,
                        reason.to_string(),
                    );
                }
                return;
            }
        };
        let lifetime = Duration::from_millis(self.config.market.bid_window_ms) + RESERVATION_GRACE;
        let until = match self.book.record_bid(request.task_id, now, lifetime) {
            Ok(until) => until,
            Err(_) => {
                self.metrics.count_drop(DropReason::RateLimited);
                return;
            }
        };
        let bid = TaskBid {
            task_id: request.task_id,
            bidder: self.identity.node_id().clone(),
            price,
            estimated_duration_s: market::estimate_duration_s(request),
            capabilities,
            // The reservation's end: an assignment after it is refused.
            valid_until: Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default(),
            free_slots: None,
        };
        let reserve = self.links.reserve.clone();
        let send = self.links.send.clone();
        let task_id = request.task_id;
        let content_hash = request.content_hash.clone();
        ctx.spawn(
            async move {
                let free_slots = reserve
                    .send(ReserveSlot {
                        task_id,
                        until,
                        origin,
                        price,
                        content_hash,
                    })
                    .await
                    .ok()
                    .flatten();
                let reserved = free_slots.is_some();
                if reserved
                    && let Ok(Err(e)) = send
                        .send(SendTo {
                            peer: origin,
                            message: APNMessage::TaskBid(TaskBid { free_slots, ..bid }),
                        })
                        .await
                {
                    tracing::debug!(%task_id, error = %e, "bid not delivered");
                }
                if !reserved {
                    // Every slot is busy or reserved (or this peer holds its share): say
                    // so at once rather than leave the originator waiting out its window.
                    decline(&send, origin, task_id, market::NoBid::NoSlot.to_string());
                }
                reserved
            }
            .into_actor(self)
            .map(move |reserved, actor, _| {
                if !reserved {
                    actor.book.slot_refused(task_id);
                }
            }),
        );
    }
}

/// Tell `origin` this node will not bid for `task_id`. Fire and forget: a refusal that is
/// lost only makes the originator wait out its window, as before refusals existed.
fn decline(send: &Recipient<SendTo>, origin: libp2p::PeerId, task_id: uuid::Uuid, reason: String) {
    let mut reason = reason;
    if reason.len() > crate::messages::DECLINE_REASON_MAX {
        let mut cut = crate::messages::DECLINE_REASON_MAX;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    send.do_send(SendTo {
        peer: origin,
        message: APNMessage::TaskBidDeclined(TaskBidDeclined { task_id, reason }),
    });
}

impl Actor for Bidder {
    type Context = Context<Self>;
}

impl Handler<Inbound> for Bidder {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, ctx: &mut Self::Context) {
        match &inbound.envelope.message {
            APNMessage::TaskDistributionRequest(request) => {
                self.on_request(&inbound.envelope, request, ctx)
            }
            other => tracing::debug!(kind = other.kind(), "bidder ignores this message"),
        }
    }
}
