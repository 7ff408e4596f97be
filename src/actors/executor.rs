//! `TaskExecutor`: runs agent processes, for peers that assigned this node a task and for
//! this node's own tasks when it has a free slot.
//!
//! It owns the slots (`resources.max_concurrent_tasks`): a bid reserves one until the bid
//! expires or its originator withdraws it (`TaskCancelled` for a bid that lost; at most
//! `market.reservations_per_peer` for one requesting peer, so a stream of requests from one
//! key cannot hold them all), an assignment or a local run takes one until the run ends. Each run is a task of
//! its own (`executor_run.rs`) that checks the repository out into a fresh workspace, runs
//! the profile's command, streams progress and logs, and ends with the result or a failure.
//!
//! Admission (`market::admit_assignment`, `market::admit_payload`): a peer's `TaskAssigned`
//! is honoured only for a live reservation of a bid this node made, to that originator, at
//! the agreed price, once; and its repository must come as a bundle, never as a path on this
//! node's disk, that fits `resources.storage_gb` beside the workspaces and bundles already
//! there (`market::check_storage`). Anything else is refused before anything starts:
//! counted by reason in the metrics and answered at once with an `ExecutionFailed` whose
//! error says why, so the originator moves on without waiting for its heartbeat timeout.
//!
//! In: `Inbound` (`TaskAssigned`, `RepoChunk`, `TaskCancelled`), `ReserveSlot`, `RunLocal`,
//! `CancelLocal`, `GetExecutorStatus`. Out: `SendTo` through the peer manager (remote runs),
//! `LocalExecution` to the distributor (local runs), `SetFreeSlots` to the peer manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::executor_run::{self, RunContext, RunOrigin};
use crate::config::Config;
use crate::identity::Identity;
use crate::market::{self, AdmissionRefusal, LiveBid, TaskPayload};
use crate::messages::{
    APNMessage, ComputeUsage, DropReason, ExecutionFailed, ExecutionStage, RepoChunk,
};
use crate::metrics::NetMetrics;
use crate::protocol::accounting::ComputeUsed;
use crate::protocol::execution::LocalExecution;
use crate::protocol::ledger::RecordCounterparty;
use crate::protocol::mesh::{GetPeerNoiseKey, Inbound, SendTo, SetFreeSlots};
use crate::protocol::network_ledger::{CheckHold, CommitResult};
use crate::protocol::panel::{
    ExecutionDetails, PanelEvent, PanelSender, TransactionDetails, TransactionLogEntry,
};
use crate::workspace;

/// Repository chunks buffered per run before the sender is slowed down.
const CHUNKS_QUEUED_MAX: usize = 64;
pub use crate::market::bidder::RESERVATION_GRACE;

/// A slot held for a bid: until the assignment comes or `until` passes.
struct Reservation {
    bid: LiveBid<PeerId>,
    until: Instant,
}

struct Running {
    origin: Option<PeerId>,
    chunks: Option<mpsc::Sender<RepoChunk>>,
    cancel: CancellationToken,
    /// A peer's run: what the panel's entries about it say, and when it started.
    hosted: Option<(ExecutionDetails, Instant)>,
}

/// The `Recipient`s the executor talks to, wired in `actors/node.rs`.
pub struct ExecutorLinks {
    /// The peer manager: the execution stream and refusals, Noise keys, free slots.
    pub send: Recipient<SendTo>,
    /// Fetches an originator's announced Noise key, to open the task it sealed to this node.
    pub noise_key: Recipient<GetPeerNoiseKey>,
    /// Announces this node's free slots to the mesh whenever they change.
    pub free_slots: Recipient<SetFreeSlots>,
    /// The distributor, told how this node's own (local) runs go.
    pub local_updates: Recipient<LocalExecution>,
    /// The accountant, told the compute each run used.
    pub compute: Option<Recipient<ComputeUsed>>,
    /// The accountant, told of each peer's task admitted and the escrow paying for it, so
    /// it can report the run's compute to the originator once that escrow is paid.
    pub runs: Option<Recipient<crate::protocol::accounting::RunForPeer>>,
    /// The panel hub, told of each task taken from a peer.
    pub panel: Option<PanelSender>,
    /// The settlement engine, told of each peer whose task is admitted: the ledger accepts
    /// payments only from them.
    pub counterparties: Option<Recipient<RecordCounterparty>>,
    /// The network settler (settlement mode `jetstream`): the escrow is checked before a
    /// peer's run and the result committed before it is delivered. `None` in `local` mode.
    pub escrow: Option<EscrowLinks>,
}

/// The network settler's part in a peer's run.
#[derive(Clone)]
pub struct EscrowLinks {
    /// Checks the originator's escrow on the network ledger.
    pub check: Recipient<CheckHold>,
    /// Commits to the result's hash before it is delivered.
    pub commit: Recipient<CommitResult>,
}

/// The `TaskExecutor` role.
pub struct TaskExecutor {
    identity: Identity,
    config: Arc<Config>,
    metrics: Arc<NetMetrics>,
    links: ExecutorLinks,
    slots_max: u32,
    reservations: HashMap<Uuid, Reservation>,
    running: HashMap<Uuid, Running>,
    completed_today: u64,
    day: chrono::NaiveDate,
    /// Bytes the scratch dirs took at the last measure (with a storage cap only): at or
    /// over the cap, no bid reserves a slot. Measured at start, at each assignment and
    /// after each run.
    scratch_used: u64,
    /// Peers' tasks admitted (a `task_received` entry) whose run has not started yet: the
    /// panel's entries about each. At most one per live reservation.
    hosted: HashMap<Uuid, ExecutionDetails>,
    /// What this node has of its originators' repositories.
    repo_cache: Arc<workspace::RepoCache>,
}

impl TaskExecutor {
    /// Measure the scratch dirs off the actor's thread (with a storage cap only) and keep
    /// the figure for the bid-time check.
    /// Over the cap, the repository cache's least recently used entries go first.
    fn measure_scratch(&mut self, ctx: &mut Context<Self>) {
        let Some(cap) = self.config.resources.storage_cap_bytes() else {
            return;
        };
        let data_dir = self.config.node.data_dir.clone();
        let cache = self.repo_cache.clone();
        let measure = tokio::task::spawn_blocking(move || {
            let usage = crate::storage::scratch_usage(&data_dir);
            if cache.evict(usage.bytes, 0, cap) > 0 {
                crate::storage::scratch_usage(&data_dir)
            } else {
                usage
            }
        });
        ctx.spawn(measure.into_actor(self).map(|usage, actor, _| {
            if let Ok(usage) = usage {
                actor.scratch_used = usage.bytes;
            }
        }));
    }

    /// An executor with `resources.max_concurrent_tasks` slots, none reserved or running.
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        metrics: Arc<NetMetrics>,
        links: ExecutorLinks,
    ) -> Self {
        let repo_cache = workspace::RepoCache::open(
            &config
                .node
                .data_dir
                .join(crate::actors::node::REPO_CACHE_DIR),
        );
        TaskExecutor {
            repo_cache,
            slots_max: config.resources.max_concurrent_tasks,
            identity,
            config,
            metrics,
            links,
            reservations: HashMap::new(),
            running: HashMap::new(),
            completed_today: 0,
            day: chrono::Utc::now().date_naive(),
            scratch_used: 0,
            hosted: HashMap::new(),
        }
    }

    /// Tell the panel about a peer's run on this node.
    fn show_hosted(&self, details: TransactionDetails, description: String) {
        if let Some(panel) = &self.links.panel {
            panel.publish(PanelEvent::Transaction(TransactionLogEntry::new(
                details,
                description,
            )));
        }
    }

    fn free_slots(&mut self, excluding_reservation: Option<Uuid>) -> u32 {
        let now = Instant::now();
        // A claimed reservation is an admitted assignment being decrypted: it keeps its slot.
        self.reservations
            .retain(|_, r| r.until > now || r.bid.claimed);
        let reserved = self
            .reservations
            .keys()
            .filter(|task| Some(**task) != excluding_reservation)
            .count() as u32;
        self.slots_max
            .saturating_sub(self.running.len() as u32)
            .saturating_sub(reserved)
    }

    fn announce_slots(&mut self) {
        let free = self.free_slots(None);
        self.links.free_slots.do_send(SetFreeSlots(free));
    }

    fn start_run(
        &mut self,
        task_id: Uuid,
        origin: RunOrigin,
        payload: TaskPayload,
        commit: Option<(Uuid, Recipient<CommitResult>)>,
        ctx: &mut Context<Self>,
    ) {
        let cancel = CancellationToken::new();
        let (chunk_sender, chunk_receiver) = mpsc::channel(CHUNKS_QUEUED_MAX);
        let origin_peer = match &origin {
            RunOrigin::Remote { origin, .. } => Some(*origin),
            RunOrigin::Local { .. } => None,
        };
        self.reservations.remove(&task_id);
        let hosted = self.hosted.remove(&task_id).map(|details| {
            self.show_hosted(
                TransactionDetails::ExecutionStarted(details.clone()),
                format!(
                    "Execution started locally: {} from {}, Earning: ~{:.2} VIBE",
                    details.task_title,
                    details.origin_node.as_deref().unwrap_or("a peer"),
                    details.vibe_earned.map_or(0.0, |v| v.as_f64()),
                ),
            );
            (details, Instant::now())
        });
        self.running.insert(
            task_id,
            Running {
                origin: origin_peer,
                chunks: origin_peer.map(|_| chunk_sender),
                cancel: cancel.clone(),
                hosted,
            },
        );
        self.announce_slots();
        let run = RunContext {
            task_id,
            identity: self.identity.clone(),
            config: self.config.clone(),
            send: self.links.send.clone(),
            compute: self.links.compute.clone(),
            panel: self.links.panel.clone(),
            origin,
            payload,
            chunks: chunk_receiver,
            cancel,
            commit,
        };
        let address = ctx.address();
        actix::spawn(async move {
            let succeeded = executor_run::run(run).await;
            address.do_send(RunFinished { task_id, succeeded });
        });
    }

    /// Refuse an assignment: count it, and tell the originator at once why.
    fn refuse(&self, origin: PeerId, task_id: Uuid, reason: DropReason, detail: String) {
        refuse_assignment(
            &self.metrics,
            &self.links.send,
            origin,
            task_id,
            reason,
            detail,
        );
    }

    fn on_assigned(
        &mut self,
        inbound: &Inbound,
        assigned: &crate::messages::TaskAssigned,
        ctx: &mut Context<Self>,
    ) {
        let origin = inbound.envelope.from_peer;
        let task_id = assigned.task_id;
        if assigned.executor != *self.identity.node_id() {
            self.refuse(
                origin,
                task_id,
                DropReason::Unauthorized,
                format!("assigned to {}, not to this node", assigned.executor),
            );
            return;
        }
        if let Some(running) = self.running.get(&task_id) {
            if running.origin == Some(origin) {
                tracing::debug!(%task_id, "duplicate assignment ignored");
            } else {
                self.refuse(
                    origin,
                    task_id,
                    DropReason::UnsolicitedAssignment,
                    AdmissionRefusal::NoLiveBid.to_string(),
                );
            }
            return;
        }
        if !self.config.accept.allows(&origin.to_string()) {
            self.refuse(
                origin,
                task_id,
                DropReason::Unauthorized,
                "the accept policy refuses tasks from this peer".into(),
            );
            return;
        }
        // Expired reservations go first: a bid whose reservation ran out is not live.
        self.free_slots(None);
        let live = self.reservations.get(&task_id).map(|r| &r.bid);
        if let Err(refusal) = market::admit_assignment(live, &origin, assigned.agreed_price) {
            self.refuse(
                origin,
                task_id,
                DropReason::UnsolicitedAssignment,
                refusal.to_string(),
            );
            return;
        }
        if let Some(reservation) = self.reservations.get_mut(&task_id) {
            reservation.bid.claimed = true;
        }
        let handshake = assigned.noise_handshake.to_vec();
        let deadline = assigned.deadline;
        let escrow_check = (assigned.escrow_id, assigned.agreed_price);
        let noise_key = self.links.noise_key.clone();
        let identity = self.identity.clone();
        let metrics = self.metrics.clone();
        let storage_cap = self.config.resources.storage_cap_bytes();
        let data_dir = self.config.node.data_dir.clone();
        // The originator's Noise key comes from its signed announcement. With a storage cap,
        // the scratch dirs' usage is measured too, off the actor's thread.
        let work = async move {
            let key = noise_key.send(GetPeerNoiseKey(origin)).await.ok().flatten();
            let used = match storage_cap {
                Some(_) => {
                    tokio::task::spawn_blocking(move || crate::storage::scratch_usage(&data_dir))
                        .await
                        .ok()
                }
                None => None,
            };
            (key, used)
        };
        ctx.spawn(work.into_actor(self).map(move |(key, used), actor, ctx| {
            let bid_content_hash = actor
                .reservations
                .get(&task_id)
                .map(|r| r.bid.content_hash.clone())
                .unwrap_or_default();
            let admitted = key
                .ok_or((
                    DropReason::Unauthorized,
                    "the originator never announced its encryption key".to_string(),
                ))
                .and_then(|key| {
                    crate::mesh::e2e::respond_with(&identity, &key, &handshake)
                        .map_err(|e| (DropReason::DecryptFailed, format!("the task does not decrypt: {e}")))
                })
                .and_then(|(plaintext, responder)| {
                    <TaskPayload as crate::market::SealedPayload>::decode(&plaintext)
                        .map(|payload| (payload, responder))
                        .map_err(|e| (DropReason::Malformed, format!("the task is malformed: {e}")))
                })
                .and_then(|(payload, responder)| {
                    market::admit_payload(&payload, &bid_content_hash)
                        .map(|()| (payload, responder))
                        .map_err(|refusal| {
                            let reason = match refusal {
                                AdmissionRefusal::LocalPath => DropReason::LocalPathFromPeer,
                                AdmissionRefusal::ContentMismatch => DropReason::ContentMismatch,
                                _ => DropReason::Malformed,
                            };
                            (reason, refusal.to_string())
                        })
                })
                .and_then(|(payload, responder)| {
                    // The bundle's size is known only once its first chunk comes (it holds
                    // only what the cache lacks); then the run makes room for it or fails.
                    // Here the disk must not be over the cap already.
                    if let Some(usage) = used {
                        actor.scratch_used = usage.bytes;
                    }
                    let used = used.map_or(0, |usage| usage.bytes);
                    market::storage_room_for_bid(used, storage_cap)
                        .map(|()| (payload, responder))
                        .map_err(|refusal| (DropReason::StorageFull, refusal.to_string()))
                })
                .and_then(|(payload, responder)| {
                    // What the cache holds of this originator's repository goes back in the
                    // handshake answer: the bundle then carries only what it lacks.
                    let lease = match &payload.repo {
                        market::RepoDelivery::Bundle { root_commit } => Some(actor.repo_cache.lease(
                            &workspace::cache_key(&origin.to_bytes(), root_commit),
                        )),
                        market::RepoDelivery::LocalPath(_) => None,
                    };
                    let have = market::RepoHave {
                        commits: lease.as_ref().map(|l| l.have()).unwrap_or_default(),
                    };
                    crate::messages::codec::encode(&have)
                        .map_err(|e| e.to_string())
                        .and_then(|said| responder.answer(&said).map_err(|e| e.to_string()))
                        .map(|(answer, session)| (payload, answer, session, lease))
                        .map_err(|e| (DropReason::DecryptFailed, format!("cannot answer the handshake: {e}")))
                });
            let (payload, answer, session, lease) = match admitted {
                Ok(parts) => parts,
                Err((reason, detail)) => {
                    // The slot comes back: nothing runs for this assignment.
                    actor.reservations.remove(&task_id);
                    actor.announce_slots();
                    refuse_assignment(&metrics, &actor.links.send, origin, task_id, reason, detail);
                    return;
                }
            };
            tracing::info!(%task_id, %origin, profile = %payload.executor_profile, %deadline, "running a task for a peer");
            if let (Some(ledger), Some(peer)) = (&actor.links.counterparties, crate::identity::public_key_of(&origin)) {
                ledger.do_send(RecordCounterparty { peer });
            }
            if let Some(runs) = &actor.links.runs {
                runs.do_send(crate::protocol::accounting::RunForPeer {
                    task_id,
                    escrow_id: escrow_check.0,
                    origin,
                    title: payload.title.clone(),
                });
            }
            let origin = RunOrigin::Remote {
                origin,
                session: Box::new(session),
                handshake_answer: answer,
                cache: lease,
            };
            if let Some(panel) = &actor.links.panel {
                let origin_node = match &origin {
                    RunOrigin::Remote { origin, .. } => crate::identity::public_key_of(origin).map(|k| crate::identity::NodeId::from_public_key(&k).to_string()),
                    RunOrigin::Local { .. } => None,
                };
                let details = ExecutionDetails {
                    task_id,
                    task_title: payload.title.clone(),
                    executor_node: Some(actor.identity.node_id().to_string()),
                    origin_node,
                    vibe_earned: Some(escrow_check.1),
                    ..ExecutionDetails::default()
                };
                let description = format!(
                    "Task received: {} from {}, Earning: ~{:.2} VIBE",
                    payload.title,
                    details.origin_node.as_deref().unwrap_or("a peer"),
                    escrow_check.1.as_f64()
                );
                let entry = TransactionLogEntry::new(TransactionDetails::TaskReceived(details.clone()), description);
                panel.publish(PanelEvent::Transaction(entry));
                actor.hosted.insert(task_id, details);
            }
            match actor.links.escrow.clone() {
                None => actor.start_run(task_id, origin, payload, None, ctx),
                Some(escrow) => actor.check_escrow_then_run(task_id, origin, payload, escrow, escrow_check, ctx),
            }
        }));
    }

    /// Settlement mode `jetstream`: run only once the originator's escrow is on the network
    /// ledger as agreed; refuse the assignment (counted, answered at once) otherwise.
    fn check_escrow_then_run(
        &mut self,
        task_id: Uuid,
        origin: RunOrigin,
        payload: TaskPayload,
        escrow: EscrowLinks,
        (hold, price): (Uuid, crate::messages::Vibe),
        ctx: &mut Context<Self>,
    ) {
        let timeout_s = match payload.timeout_s {
            0 => self.config.executor.timeout_s,
            requested => requested.min(self.config.executor.timeout_s),
        };
        let run_ends_ms = chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(i64::try_from(timeout_s.saturating_mul(1000)).unwrap_or(i64::MAX));
        let check = escrow.check.send(CheckHold {
            hold,
            price,
            run_ends_ms,
        });
        ctx.spawn(check.into_actor(self).map(move |checked, actor, ctx| {
            let refusal = match checked {
                Ok(Ok(())) => None,
                Ok(Err(refusal)) => Some(refusal.to_string()),
                Err(e) => Some(format!("the network settler is unavailable: {e}")),
            };
            match (refusal, &origin) {
                (None, _) => {
                    actor.start_run(task_id, origin, payload, Some((hold, escrow.commit)), ctx)
                }
                (Some(detail), RunOrigin::Remote { origin: peer, .. }) => {
                    actor.reservations.remove(&task_id);
                    if let Some(details) = actor.hosted.remove(&task_id) {
                        let description = format!(
                            "Not run: {} from {}: {detail}",
                            details.task_title,
                            details.origin_node.as_deref().unwrap_or("a peer")
                        );
                        actor.show_hosted(
                            TransactionDetails::ExecutionFailed(ExecutionDetails {
                                vibe_earned: None,
                                error: Some(detail.clone()),
                                ..details
                            }),
                            description,
                        );
                    }
                    actor.announce_slots();
                    actor.refuse(*peer, task_id, DropReason::NoEscrow, detail);
                }
                (Some(detail), RunOrigin::Local { .. }) => {
                    tracing::warn!(%task_id, %detail, "escrow check on a local run");
                }
            }
        }));
    }
}

/// Count a refused assignment and answer the originator with an `ExecutionFailed` saying
/// why (no execution id: nothing ran).
fn refuse_assignment(
    metrics: &NetMetrics,
    send: &Recipient<SendTo>,
    origin: PeerId,
    task_id: Uuid,
    reason: DropReason,
    detail: String,
) {
    metrics.count_drop(reason);
    tracing::warn!(%task_id, %origin, reason = reason.label(), %detail, "assignment refused");
    send.do_send(SendTo {
        peer: origin,
        message: APNMessage::ExecutionFailed(ExecutionFailed {
            task_id,
            execution_id: Uuid::nil(),
            stage: ExecutionStage::Setup,
            error: format!("assignment refused: {detail}"),
            detail: None,
            usage: ComputeUsage::default(),
        }),
    });
}

impl Actor for TaskExecutor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.measure_scratch(ctx);
        ctx.run_interval(Duration::from_secs(5), |actor, _| {
            // Expired reservations free their slots.
            actor.announce_slots();
        });
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running_ {
        for running in self.running.values() {
            running.cancel.cancel();
        }
        Running_::Stop
    }
}

use actix::Running as Running_;

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::agent_process::{available_profiles, program_exists};
pub use crate::protocol::execution::{
    CancelAllRuns, CancelRun, ExecutorStatus, GetExecutorStatus, ReserveSlot, RunLocal,
};

impl Handler<Inbound> for TaskExecutor {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, ctx: &mut Self::Context) {
        match &inbound.envelope.message {
            APNMessage::TaskAssigned(assigned) => {
                let assigned = assigned.clone();
                self.on_assigned(&inbound, &assigned, ctx);
            }
            APNMessage::RepoChunk(chunk) => {
                let from = inbound.envelope.from_peer;
                match self.running.get(&chunk.task_id) {
                    Some(Running {
                        origin: Some(origin),
                        chunks: Some(chunks),
                        ..
                    }) if *origin == from => {
                        // A shape that cannot hold is counted here; the run, which gets it
                        // still, fails on it at once.
                        if market::check_bundle_shape(
                            chunk.bytes,
                            chunk.total,
                            executor_run::BUNDLE_BYTES_MAX,
                        )
                        .is_err()
                        {
                            self.metrics.count_drop(DropReason::BadChunkCount);
                        }
                        if chunks.try_send(chunk.clone()).is_err() {
                            self.metrics.count_drop(DropReason::RateLimited);
                        }
                    }
                    _ => self.metrics.count_drop(DropReason::Unauthorized),
                }
            }
            APNMessage::TaskCancelled(cancelled) => {
                let from = inbound.envelope.from_peer;
                let task_id = cancelled.task_id;
                match self.running.get(&task_id) {
                    Some(running) if running.origin == Some(from) => {
                        tracing::info!(%task_id, reason = %cancelled.reason, "originator cancelled the run");
                        running.cancel.cancel();
                    }
                    Some(_) => self.metrics.count_drop(DropReason::Unauthorized),
                    // A bid that lost: its reservation's slot comes back at once.
                    None => match self.reservations.get(&task_id) {
                        Some(r) if r.bid.origin == from && !r.bid.claimed => {
                            tracing::debug!(%task_id, reason = %cancelled.reason, "bid withdrawn by the originator");
                            self.reservations.remove(&task_id);
                            self.announce_slots();
                        }
                        _ => self.metrics.count_drop(DropReason::Unauthorized),
                    },
                }
            }
            other => tracing::debug!(kind = other.kind(), "executor ignores this message"),
        }
    }
}

impl Handler<ReserveSlot> for TaskExecutor {
    type Result = Option<u32>;

    fn handle(&mut self, request: ReserveSlot, _ctx: &mut Self::Context) -> Option<u32> {
        if self.running.contains_key(&request.task_id) {
            return None;
        }
        // Expired reservations go first (this also counts the free slots).
        let free = self.free_slots(None);
        if let Some(existing) = self.reservations.get_mut(&request.task_id) {
            // One bid per task: a second originator naming the same task id gets none; the
            // same bid again (a new round of the request) holds its slot longer.
            let same = existing.bid.origin == request.origin
                && existing.bid.price == request.price
                && existing.bid.content_hash == request.content_hash
                && !existing.bid.claimed;
            if !same {
                return None;
            }
            existing.until = existing.until.max(request.until);
            return Some(free);
        }
        let held = self
            .reservations
            .values()
            .filter(|r| r.bid.origin == request.origin && !r.bid.claimed)
            .count();
        let storage_cap = self.config.resources.storage_cap_bytes();
        if let Err(reason) = market::storage_room_for_bid(self.scratch_used, storage_cap) {
            tracing::info!(task_id = %request.task_id, %reason, "not bidding");
            return None;
        }
        match market::may_reserve(free, held, self.config.market.reservations_per_peer) {
            Ok(()) => {}
            Err(reason @ market::NoBid::PeerReservations { .. }) => {
                self.metrics.count_drop(DropReason::ReservationLimit);
                tracing::debug!(task_id = %request.task_id, origin = %request.origin, %reason, "no reservation");
                return None;
            }
            Err(_) => return None,
        }
        self.reservations.insert(
            request.task_id,
            Reservation {
                bid: LiveBid {
                    origin: request.origin,
                    price: request.price,
                    content_hash: request.content_hash.clone(),
                    claimed: false,
                },
                until: request.until,
            },
        );
        self.announce_slots();
        Some(free.saturating_sub(1))
    }
}

impl Handler<RunLocal> for TaskExecutor {
    type Result = bool;

    fn handle(&mut self, request: RunLocal, ctx: &mut Self::Context) -> bool {
        if self.free_slots(Some(request.task_id)) == 0 {
            return false;
        }
        let origin = RunOrigin::Local {
            distributor: self.links.local_updates.clone(),
        };
        self.start_run(request.task_id, origin, request.payload, None, ctx);
        true
    }
}

impl Handler<CancelRun> for TaskExecutor {
    type Result = bool;

    fn handle(&mut self, request: CancelRun, _ctx: &mut Self::Context) -> bool {
        match self.running.get(&request.0) {
            Some(running) => {
                running.cancel.cancel();
                true
            }
            None => false,
        }
    }
}

impl Handler<CancelAllRuns> for TaskExecutor {
    type Result = ();

    fn handle(&mut self, _request: CancelAllRuns, _ctx: &mut Self::Context) {
        for running in self.running.values() {
            running.cancel.cancel();
        }
    }
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
struct RunFinished {
    task_id: Uuid,
    succeeded: bool,
}

impl Handler<RunFinished> for TaskExecutor {
    type Result = ();

    fn handle(&mut self, finished: RunFinished, ctx: &mut Self::Context) {
        let hosted = self
            .running
            .remove(&finished.task_id)
            .and_then(|running| running.hosted);
        if let Some((details, started)) = hosted {
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let origin = details
                .origin_node
                .clone()
                .unwrap_or_else(|| "a peer".into());
            let title = details.task_title.clone();
            if finished.succeeded {
                let earned = details.vibe_earned.map_or(0.0, |v| v.as_f64());
                self.show_hosted(
                    TransactionDetails::ExecutionCompleted(ExecutionDetails {
                        execution_time_ms: Some(elapsed_ms),
                        ..details
                    }),
                    format!(
                        "Execution completed locally: {title} for {origin} in {:.1} s, Earning: {earned:.2} VIBE once the originator verifies it",
                        elapsed_ms as f64 / 1000.0
                    ),
                );
            } else {
                self.show_hosted(
                    TransactionDetails::ExecutionFailed(ExecutionDetails {
                        execution_time_ms: Some(elapsed_ms),
                        vibe_earned: None,
                        ..details
                    }),
                    format!(
                        "Execution failed locally: {title} for {origin} after {:.1} s",
                        elapsed_ms as f64 / 1000.0
                    ),
                );
            }
        }
        self.measure_scratch(ctx);
        let today = chrono::Utc::now().date_naive();
        if today != self.day {
            self.day = today;
            self.completed_today = 0;
        }
        if finished.succeeded {
            self.completed_today += 1;
        }
        self.announce_slots();
    }
}

impl Handler<GetExecutorStatus> for TaskExecutor {
    type Result = MessageResult<GetExecutorStatus>;

    fn handle(&mut self, _request: GetExecutorStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ExecutorStatus {
            active: self.running.len() as u32,
            max: self.slots_max,
            completed_today: self.completed_today,
        })
    }
}
