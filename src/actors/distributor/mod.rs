//! `TaskDistributor`: the task market's originating side (the bidding side is `Bidder`).
//!
//! `CreateTaskAttempt` runs locally when a slot is free, the profile is here and the caller
//! allows it. Otherwise the task is offered to the mesh, and its life cycle is the pure
//! state machine [`OriginTask`]: this actor feeds it events (a bid, the end of a bid
//! window, an answer from the ledger or the executor, the clock) and carries out the
//! effects it returns (`effects.rs`): broadcast the `TaskDistributionRequest` (metadata
//! only), close the bid window when enough bids are in or its time is up, rank the bids
//! (`market::rank_bids`, near-ties to the executor given fewest tasks lately), escrow the agreed price and send
//! `TaskAssigned` with the task sealed to the winner's Noise key, withdraw the losing
//! bids, send the repository, verify the result (signature, hash, paths, `git apply
//! --check`, optional verify command) and release the escrow with a signed
//! `VibeTransaction`, or refund, record the executor's reputation and move on to the next
//! bid. `stream.rs` takes bids and the execution stream: only the assigned executor may
//! send it; it is decrypted and handed to the `ExecutionRelay`. A result too large for
//! one frame arrives in `ResultChunk`s, collected per assignment under this node's
//! `executor.result_bytes_max` and checked against their announced hash off the actor
//! thread before the result is verified like an inline one.

mod api;
mod effects;
mod settle;
mod stream;

pub use api::*;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use libp2p::PeerId;
use uuid::Uuid;

use crate::agent_process::available_profiles;
use crate::config::Config;
use crate::identity::Identity;
use crate::market::log_order::LogOrder;
use crate::market::origin_task::{OriginLimits, OriginTask};
use crate::market::originator::RecentAssignments;
use crate::market::result_assembly::ResultAssembly;
use crate::market::{self, ExecutionResult, LogLine, RepoDelivery, TaskPayload};
use crate::mesh::e2e::{E2eSession, PendingInitiator};
use crate::messages::APNMessage;
use crate::metrics::NetMetrics;
use crate::protocol::accounting::BillableBytes;
use crate::protocol::execution::{
    CancelRun, ExecutionEvent, LocalExecution, RecordUpdate, RunLocal,
};
use crate::protocol::ledger::{
    GetReputation, HoldEscrow, JournalTask, LookupTask, RecordOutcome, RefundEscrow, ReleaseEscrow,
};
use crate::protocol::mesh::{Broadcast, GetPeerNoiseKey, GetPeers, Inbound, SendTo};
use crate::protocol::panel::{
    ExecutionDetails, PanelEvent, PanelSender, TransactionDetails, TransactionLogEntry,
};
use crate::workspace;

/// Peers a task request is also sent to directly.
const DIRECT_OFFERS_MAX: usize = 64;
/// Task attempts kept in memory; the oldest finished ones are forgotten first.
pub const TASKS_KEPT_MAX: usize = 10_000;
pub use crate::market::REPO_CHUNK_BYTES;
/// Repository chunks sent beyond what the executor reported written: with the reports'
/// spacing, within its queue of received chunks (64), so a fast sender never overruns a
/// slow disk.
pub const REPO_CHUNKS_UNACKED_MAX: u32 = 16;
/// Repository chunks awaiting the transport's acknowledgement at once.
const REPO_CHUNKS_IN_FLIGHT_MAX: usize = 8;
/// How long the bundle's sender waits for the executor to report progress.
const REPO_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How often assignments are checked for silence and deadlines.
const HEARTBEAT_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long a verify command may run.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(300);

/// The end-to-end state of one assignment, named by its escrow id: the Noise handshake
/// until the executor answers it, then the session.
struct Sealed {
    escrow_id: Uuid,
    pending: Option<PendingInitiator>,
    session: Option<E2eSession>,
    /// The run's log batches, back in the order they were sent.
    logs: LogOrder<Vec<LogLine>>,
    /// A large result's chunks collected so far (bounded by `executor.result_bytes_max`).
    result_chunks: Option<ResultAssembly>,
    /// Commits of the repository the executor said its cache holds (its handshake answer).
    repo_have: Vec<String>,
    /// Repository chunks the executor reported written: the bundle's sender keeps at most
    /// [`REPO_CHUNKS_UNACKED_MAX`] beyond it (flow control end to end).
    repo_acked: Option<tokio::sync::watch::Sender<u32>>,
}

/// A task attempt this node created.
struct TaskRecord {
    view: TaskView,
    request: CreateTaskAttempt,
    base_commit: String,
    /// The repository's root commit (its identity for the executor's cache), once the
    /// task goes to the mesh; `None` for a local run.
    repo_root: Option<String>,
    /// Runs on this node (no mesh life cycle).
    local: bool,
    /// The life cycle of a task offered to the mesh.
    mesh: Option<OriginTask<PeerId>>,
    /// The current assignment's Noise state.
    sealed: Option<Sealed>,
    /// `TaskAssigned`, sealed, until the assignment is recorded and it can be sent.
    outbox: Option<(Uuid, APNMessage)>,
    /// The result being verified and paid for.
    result: Option<ExecutionResult>,
    /// When the current run started (its `execution_started` entry), for the log's
    /// `execution_time_ms`.
    started: Option<std::time::Instant>,
}

impl TaskRecord {
    /// The Noise state of the assignment in force, if any.
    fn current_sealed(&mut self) -> Option<&mut Sealed> {
        let escrow_id = self.mesh.as_ref()?.assignment()?.escrow_id;
        self.sealed.as_mut().filter(|s| s.escrow_id == escrow_id)
    }
}

/// The `Recipient`s the distributor talks to, wired in `actors/node.rs`.
pub struct DistributorLinks {
    /// The peer manager: direct sends, broadcasts, the peer table, Noise keys.
    pub send: Recipient<SendTo>,
    /// Broadcasts the task request to every peer.
    pub broadcast: Recipient<Broadcast>,
    /// Reads the peer table: who gets direct offers, and which profiles a bidder has.
    pub peers: Recipient<GetPeers>,
    /// Fetches the winner's Noise key, to seal `TaskAssigned` to it.
    pub noise_key: Recipient<GetPeerNoiseKey>,
    /// The executor: runs on this node.
    pub run_local: Recipient<RunLocal>,
    /// Stops a local run when its task is cancelled.
    pub cancel_run: Recipient<CancelRun>,
    /// The settlement engine: escrow, reputation, the task journal.
    pub hold: Recipient<HoldEscrow>,
    /// Pays the escrow to the executor and signs the `VibeTransaction`.
    pub release: Recipient<ReleaseEscrow>,
    /// Returns an escrow to this node when its assignment fails or is dropped.
    pub refund: Recipient<RefundEscrow>,
    /// Records how an executor did, for its reputation.
    pub outcome: Recipient<RecordOutcome>,
    /// Reads a bidder's reputation for ranking bids.
    pub reputation: Recipient<GetReputation>,
    /// Writes a task's view to the journal at creation and at its final state.
    pub journal: Recipient<JournalTask>,
    /// Reads a journaled task that is no longer in memory.
    pub lookup: Recipient<LookupTask>,
    /// The execution relay: the stream of this node's tasks.
    pub stream: Recipient<RecordUpdate>,
    /// The panel hub.
    pub panel: PanelSender,
    /// The accountant: log and progress bytes of assigned executors are billed there.
    pub billing: Option<Recipient<BillableBytes>>,
}

/// The `TaskDistributor` role.
pub struct TaskDistributor {
    identity: Identity,
    config: Arc<Config>,
    metrics: Arc<NetMetrics>,
    links: DistributorLinks,
    tasks: HashMap<Uuid, TaskRecord>,
    order: VecDeque<Uuid>,
    profiles: Vec<String>,
    /// Tasks given to each executor lately: fewer wins a near-tie between bids.
    recent: RecentAssignments<PeerId>,
    /// Root commits of base commits seen: a commit id fixes its history, so its root never
    /// changes, and a task on a known commit asks git nothing before its request goes out.
    roots: HashMap<String, String>,
}

/// Base commits whose root commit is remembered; past it the memory starts again.
const ROOTS_KEPT_MAX: usize = 1024;

impl TaskDistributor {
    /// A distributor for this node.
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        metrics: Arc<NetMetrics>,
        links: DistributorLinks,
    ) -> Self {
        TaskDistributor {
            profiles: available_profiles(&config.executor),
            identity,
            config,
            metrics,
            links,
            tasks: HashMap::new(),
            order: VecDeque::new(),
            recent: RecentAssignments::default(),
            roots: HashMap::new(),
        }
    }

    /// The request's fields and repository directory; its base is resolved off the actor
    /// thread (git) by the caller.
    fn validate(request: &CreateTaskAttempt) -> Result<(), MarketError> {
        request.check_fields()?;
        if !PathBuf::from(&request.repo_path).is_dir() {
            return Err(MarketError::Invalid(format!(
                "repo_path {} is not a directory",
                request.repo_path
            )));
        }
        Ok(())
    }

    fn remember(&mut self, id: Uuid, task: TaskRecord) {
        if self.order.len() >= TASKS_KEPT_MAX
            && let Some(position) = self
                .order
                .iter()
                .position(|t| self.tasks.get(t).is_none_or(|t| t.view.status.is_final()))
            && let Some(old) = self.order.remove(position)
        {
            self.tasks.remove(&old);
        }
        self.order.push_back(id);
        self.tasks.insert(id, task);
        self.journal(id);
    }

    fn touch(&mut self, id: Uuid, change: impl FnOnce(&mut TaskView)) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let was_final = task.view.status.is_final();
        change(&mut task.view);
        task.view.updated_at = Utc::now();
        if task.view.status.is_final() != was_final {
            self.journal(id);
        }
    }

    /// Write the task's view to the ledger's journal: at creation and at its final state,
    /// so a restart can say what became of it (see `ledger::journal`).
    fn journal(&self, id: Uuid) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        match serde_json::to_string(&task.view) {
            Ok(view) => self.links.journal.do_send(JournalTask {
                id,
                open: !task.view.status.is_final(),
                view,
            }),
            Err(e) => tracing::warn!(task_id = %id, error = %e, "task view not journaled"),
        }
    }

    fn log(&self, details: TransactionDetails, description: String) {
        self.links
            .panel
            .publish(PanelEvent::Transaction(TransactionLogEntry::new(
                details,
                description,
            )));
    }

    /// The typed details of an execution entry of task `id`: its title, the executor, and
    /// how long it has run since it started.
    fn execution_details(&self, id: Uuid, executor: Option<String>) -> ExecutionDetails {
        let task = self.tasks.get(&id);
        ExecutionDetails {
            task_id: id,
            task_title: self.title(id),
            executor_node: executor,
            execution_time_ms: task
                .and_then(|t| t.started)
                .map(|started| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            ..ExecutionDetails::default()
        }
    }

    fn title(&self, id: Uuid) -> String {
        self.tasks
            .get(&id)
            .map(|t| t.view.title.clone())
            .unwrap_or_default()
    }

    fn event(&self, event: ExecutionEvent) {
        self.links.stream.do_send(RecordUpdate(event));
    }

    fn payload(task: &TaskRecord) -> TaskPayload {
        TaskPayload {
            title: task.request.title.clone(),
            prompt: task.request.prompt.clone(),
            executor_profile: task.request.executor_profile.clone(),
            base_commit: task.base_commit.clone(),
            repo: match &task.repo_root {
                Some(root) => RepoDelivery::Bundle {
                    root_commit: root.clone(),
                },
                None => RepoDelivery::LocalPath(task.request.repo_path.clone()),
            },
            timeout_s: task.request.requirements.timeout_s,
        }
    }

    /// Fail the attempt for good, with a reason a user can read.
    fn fail(&mut self, id: Uuid, reason: String) {
        tracing::warn!(task_id = %id, %reason, "task attempt failed");
        self.touch(id, |view| {
            view.status = TaskStatus::Failed;
            view.error = Some(reason.clone());
        });
        let executor = self
            .tasks
            .get(&id)
            .and_then(|t| t.view.assigned_node.clone());
        let details = ExecutionDetails {
            error: Some(reason.clone()),
            ..self.execution_details(id, executor)
        };
        self.log(
            TransactionDetails::ExecutionFailed(details),
            format!("{}: {reason}", self.title(id)),
        );
        self.event(ExecutionEvent::Finished {
            task_id: id,
            succeeded: false,
            detail: reason,
        });
    }

    /// The market settings a task offered to the mesh follows.
    fn origin_limits(&self, request: &CreateTaskAttempt) -> OriginLimits {
        let market = &self.config.market;
        OriginLimits {
            bid_window: Duration::from_millis(market.bid_window_ms),
            bid_rounds_max: market.bid_rounds_max,
            reassignments_max: market.reassignments_max,
            bids_per_task_max: market.bids_per_task_max,
            bids_enough: market.bids_enough,
            min_task_reward: self.config.economics.min_task_reward,
            heartbeat_timeout: Duration::from_secs(market.heartbeat_timeout_s),
            run_deadline: Duration::from_secs(market::assignment_deadline_s(
                request.requirements.timeout_s,
                market.run_deadline_s,
                market.heartbeat_timeout_s,
            )),
        }
    }

    /// Open the first round: ask the executor of the best live offer that matches the task
    /// alone (`market::offers`), or, with none, the whole mesh. The peer table is read
    /// once; the choice is made back on the actor, so a burst sees its own assignments.
    fn first_round(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let ttl = Duration::from_millis(self.config.market.offer_ttl_ms);
        if ttl.is_zero() {
            return self.drive(id, ctx, |task| task.bundled());
        }
        let peers_of = self.links.peers.clone();
        ctx.spawn(
            async move { peers_of.send(GetPeers).await.unwrap_or_default() }
                .into_actor(self)
                .map(move |peers, actor, ctx| {
                    let Some(request) = actor.request_of(id) else {
                        return;
                    };
                    let offers: Vec<market::offers::OfferFacts<PeerId>> = peers
                        .iter()
                        .filter(|p| p.announced)
                        .filter_map(|p| {
                            Some(market::offers::OfferFacts {
                                peer: p.peer_id.parse().ok()?,
                                profiles: p.executor_profiles.clone(),
                                capabilities: p.capabilities.clone(),
                                compute_rate_per_cpu_hour: p.compute_rate_per_cpu_hour?,
                                min_task_reward: p.min_task_reward?,
                                free_slots: p.free_slots,
                                announced_at: p.announced_at?,
                            })
                        })
                        .collect();
                    let now = std::time::Instant::now();
                    actor.recent.forget_old(now);
                    let recent = &actor.recent;
                    let picked = market::offers::pick_offer(
                        &offers,
                        &request,
                        actor.config.economics.min_task_reward,
                        ttl,
                        Utc::now(),
                        |peer| recent.count(peer, now),
                    );
                    match picked {
                        Some(peer) => {
                            // Counted when asked, not when its answer comes: the other
                            // tasks of a burst, picked meanwhile, must see it to spread.
                            actor.recent.record(peer, now);
                            actor.drive(id, ctx, |task| task.bundled_direct(peer))
                        }
                        None => actor.drive(id, ctx, |task| task.bundled()),
                    }
                }),
        );
    }

    /// Find the repository's identity (its root commit, off the actor thread), then open
    /// the first bid round. The bundle is made once the executor has said what it has.
    fn start_mesh(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(limits) = self.tasks.get(&id).map(|t| self.origin_limits(&t.request)) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.mesh = Some(OriginTask::new(limits));
        if let Some(root) = self.roots.get(&task.base_commit) {
            task.repo_root = Some(root.clone());
            return self.first_round(id, ctx);
        }
        let repo = PathBuf::from(&task.request.repo_path);
        let commit = task.base_commit.clone();
        let work = async move {
            tokio::task::spawn_blocking(move || {
                workspace::root_commit(&repo, &commit).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|result| result)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |root, actor, ctx| match root {
                    Ok(root) => {
                        if let Some(task) = actor.tasks.get_mut(&id) {
                            if actor.roots.len() >= ROOTS_KEPT_MAX {
                                actor.roots.clear();
                            }
                            actor.roots.insert(task.base_commit.clone(), root.clone());
                            task.repo_root = Some(root);
                        }
                        actor.first_round(id, ctx);
                    }
                    Err(e) => {
                        let reason = format!("cannot read the repository's history: {e}");
                        actor.drive(id, ctx, |task| task.fail(reason));
                    }
                }),
        );
    }
}

impl Actor for TaskDistributor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(HEARTBEAT_CHECK_INTERVAL, |actor, ctx| {
            actor.check_heartbeats(ctx)
        });
    }
}

impl Handler<Inbound> for TaskDistributor {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, ctx: &mut Self::Context) {
        let envelope = inbound.envelope;
        match &envelope.message {
            APNMessage::TaskBid(bid) => self.on_bid(&envelope, bid, ctx),
            APNMessage::TaskBidDeclined(declined) => self.on_decline(&envelope, declined, ctx),
            _ => self.on_execution_message(&envelope, ctx),
        }
    }
}

impl Handler<LocalExecution> for TaskDistributor {
    type Result = ();

    fn handle(&mut self, local: LocalExecution, _ctx: &mut Self::Context) {
        // A local run's first updates (its start) can arrive before the executor's answer
        // to `RunLocal` marks the task local: a task not (yet) on the mesh is this node's.
        if self
            .tasks
            .get(&local.task_id)
            .is_some_and(|t| (t.local || t.mesh.is_none()) && !t.view.status.is_final())
        {
            self.on_update(local.task_id, local.update);
        }
    }
}

impl Handler<CreateTaskAttempt> for TaskDistributor {
    type Result = ResponseActFuture<Self, Result<Uuid, MarketError>>;

    fn handle(&mut self, request: CreateTaskAttempt, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = Self::validate(&request) {
            return Box::pin(fut::ready(Err(e)));
        }
        let (repo, base) = (PathBuf::from(&request.repo_path), request.base.clone());
        let resolving =
            tokio::task::spawn_blocking(move || workspace::resolve_commit(&repo, &base));
        Box::pin(
            resolving
                .into_actor(self)
                .then(move |resolved, actor, _ctx| match resolved {
                    Ok(Ok(base_commit)) => actor.create(request, base_commit),
                    Ok(Err(e)) => Box::pin(fut::ready(Err(MarketError::Invalid(format!(
                        "base {}: {e}",
                        request.base
                    ))))),
                    Err(e) => Box::pin(fut::ready(Err(MarketError::Invalid(format!(
                        "base {}: {e}",
                        request.base
                    ))))),
                }),
        )
    }
}

impl TaskDistributor {
    /// Create the attempt for a valid request at `base_commit`: run it here when asked and
    /// a slot is free, else offer it to the mesh.
    fn create(
        &mut self,
        request: CreateTaskAttempt,
        base_commit: String,
    ) -> ResponseActFuture<Self, Result<Uuid, MarketError>> {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let profile_here = self.profiles.contains(&request.executor_profile);
        let prefer = request.prefer;
        if prefer == Prefer::Local && !profile_here {
            return Box::pin(fut::ready(Err(MarketError::NoLocalCapacity(format!(
                "profile {} is not available on this node",
                request.executor_profile
            )))));
        }
        let view = TaskView {
            id,
            title: if request.title.is_empty() {
                request.prompt.chars().take(60).collect()
            } else {
                request.title.clone()
            },
            executor_profile: request.executor_profile.clone(),
            status: TaskStatus::Pending,
            reward: request.reward,
            price: None,
            assigned_node: None,
            stage: None,
            progress_percent: 0,
            current_action: None,
            bids_received: 0,
            attempts: 0,
            summary: None,
            files_modified: Vec::new(),
            task_attempt_id: None,
            diff: None,
            error: None,
            paid: None,
            created_at: now,
            updated_at: now,
            assigned_at: None,
            started_at: None,
            via_offer: false,
            repo_bytes_sent: 0,
            repo_transfer_ms: None,
        };
        let task = TaskRecord {
            view,
            request,
            base_commit,
            repo_root: None,
            local: false,
            mesh: None,
            sealed: None,
            outbox: None,
            result: None,
            started: None,
        };
        let payload = Self::payload(&task);
        tracing::info!(task_id = %id, profile = %task.request.executor_profile, reward = %task.request.reward, ?prefer, "task attempt created");
        self.remember(id, task);
        let run_local = self.links.run_local.clone();
        let try_local = prefer != Prefer::Mesh && profile_here;
        let work = async move {
            if try_local {
                run_local
                    .send(RunLocal {
                        task_id: id,
                        payload,
                    })
                    .await
                    .unwrap_or(false)
            } else {
                false
            }
        };
        Box::pin(work.into_actor(self).map(move |ran_locally, actor, ctx| {
            if ran_locally {
                actor.touch(id, |view| {
                    view.assigned_node = Some("local".into());
                    view.attempts = 1;
                });
                if let Some(task) = actor.tasks.get_mut(&id) {
                    task.local = true;
                }
                return Ok(id);
            }
            if prefer == Prefer::Local {
                // Refused, not created: close its journal entry before forgetting it.
                actor.touch(id, |view| {
                    view.status = TaskStatus::Failed;
                    view.error = Some("no free slot on this node".into());
                });
                actor.tasks.remove(&id);
                return Err(MarketError::NoLocalCapacity(
                    "no free slot on this node".into(),
                ));
            }
            actor.start_mesh(id, ctx);
            Ok(id)
        }))
    }
}

impl Handler<ListTasks> for TaskDistributor {
    type Result = MessageResult<ListTasks>;

    fn handle(&mut self, _request: ListTasks, _ctx: &mut Self::Context) -> Self::Result {
        let mut tasks: Vec<TaskView> = self.tasks.values().map(|t| t.view.clone()).collect();
        tasks.sort_by_key(|task| std::cmp::Reverse(task.created_at));
        MessageResult(tasks)
    }
}

impl Handler<GetTask> for TaskDistributor {
    type Result = ResponseActFuture<Self, Option<TaskView>>;

    fn handle(&mut self, request: GetTask, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(task) = self.tasks.get(&request.0) {
            return Box::pin(fut::ready(Some(task.view.clone())));
        }
        // Not in memory: evicted, or from before a restart. The journal has the last view.
        let lookup = self.links.lookup.clone();
        Box::pin(
            async move {
                let journaled = lookup.send(LookupTask(request.0)).await.ok()?.ok()??;
                journaled_view(&journaled)
            }
            .into_actor(self),
        )
    }
}

impl Handler<CancelTask> for TaskDistributor {
    type Result = Result<TaskView, MarketError>;

    fn handle(&mut self, request: CancelTask, ctx: &mut Self::Context) -> Self::Result {
        let id = request.0;
        let task = self.tasks.get_mut(&id).ok_or(MarketError::NotFound(id))?;
        if task.view.status.is_final() {
            return Err(MarketError::AlreadyFinished);
        }
        if task.local {
            self.links.cancel_run.do_send(CancelRun(id));
        }
        let effects = task.mesh.as_mut().map(|m| m.cancel()).unwrap_or_default();
        for effect in effects {
            self.carry_out(id, effect, ctx);
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return Err(MarketError::NotFound(id));
        };
        task.view.status = TaskStatus::Cancelled;
        task.view.error = Some("cancelled by the user".into());
        task.view.updated_at = Utc::now();
        let view = task.view.clone();
        self.journal(id);
        self.event(ExecutionEvent::Finished {
            task_id: id,
            succeeded: false,
            detail: "cancelled".into(),
        });
        Ok(view)
    }
}
