//! `TaskDistributor`: the task market's originating side (the bidding side is `Bidder`).
//!
//! `CreateTaskAttempt` runs locally when a slot is free, the profile is
//! here and the caller allows it; otherwise the distributor bundles the base commit,
//! broadcasts a `TaskDistributionRequest` (metadata only), collects `TaskBid`s for the bid
//! window (a price of zero or below `economics.min_task_reward` is refused on arrival),
//! ranks them (`market::rank_bids`), escrows the agreed price (no escrow, no assignment: an
//! escrow that cannot be held moves on to the next bid; an expired bid is skipped, and when
//! only expired ones are left the task is offered again) and sends `TaskAssigned` with the
//! task sealed to the winner's Noise key; the other bidders get a `TaskCancelled` that frees
//! the slot they reserved, and their bids are spent. An executor's refusal (`ExecutionFailed` with a
//! nil execution id) moves on at once, without touching its reputation.
//! It decrypts the execution stream, hands it to the `ExecutionRelay`, verifies the result
//! (signature, hash, paths, `git apply --check`, optional verify command), releases escrow
//! with a signed `VibeTransaction` and records the executor's reputation. On failure,
//! silence past the heartbeat timeout or a bad result it refunds, lowers the reputation
//! and moves to the next bid, up to `market.reassignments_max` times.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::executor::{RunLocal, TaskExecutor, available_profiles};
use super::executor_run::{ExecutionUpdate, LocalExecution};
use super::panel_hub::{PanelEvent, TransactionLogEntry, TransactionType};
use super::peer_manager::{Broadcast, GetPeerNoiseKey, GetPeers, Inbound, PeerManager, SendTo};
use super::relay::{ExecutionEvent, ExecutionRelay, RecordUpdate};
use super::settler::{
    GetReputation, HoldEscrow, JournalTask, LookupTask, Outcome, RecordOutcome, RefundEscrow,
    ReleaseEscrow, SettlementEngine,
};
use crate::config::Config;
use crate::identity::{self, Identity};
use crate::market::originator::{self, AssignmentClock, NextStep, Overdue, Tries};
use crate::market::{
    self, BidFacts, ExecutionResult, LogLine, ProgressAction, RepoDelivery, TaskPayload,
};
use crate::mesh::e2e::{self, E2eSession, PendingInitiator};
use crate::messages::{
    APNMessage, DropReason, ExecutionStage, RepoChunk, TaskAssigned, TaskBid, TaskCancelled,
    TaskDistributionRequest, TaskRequirements, Topic, VerifiedEnvelope, Vibe,
};
use crate::metrics::NetMetrics;
use crate::workspace;

/// Peers a task request is also sent to directly.
const DIRECT_OFFERS_MAX: usize = 64;
/// Task attempts kept in memory; the oldest finished ones are forgotten first.
pub const TASKS_KEPT_MAX: usize = 10_000;
pub use crate::market::REPO_CHUNK_BYTES;
/// How often assignments are checked for silence.
const HEARTBEAT_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Longest prompt accepted (it travels in one Noise handshake message with the task).
pub const PROMPT_BYTES_MAX: usize = 32 * 1024;
/// Longest title accepted.
pub const TITLE_CHARS_MAX: usize = 200;
/// Longest verify command.
const VERIFY_COMMAND_BYTES_MAX: usize = 4 * 1024;
/// How long a verify command may run.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the caller wants a task to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    Local,
    Mesh,
    #[default]
    Auto,
}

/// Create a task attempt (from HTTP, CLI or tests).
#[derive(Debug, Clone, Serialize, Deserialize, Message, utoipa::ToSchema)]
#[rtype(result = "Result<Uuid, MarketError>")]
#[serde(deny_unknown_fields)]
pub struct CreateTaskAttempt {
    #[serde(default)]
    pub title: String,
    /// What the agent is asked to do (not blank).
    #[schema(min_length = 1, pattern = r"\S")]
    pub prompt: String,
    /// An executor profile name such as `CLAUDE_CODE`.
    #[schema(pattern = "^[A-Za-z0-9_]{1,64}$")]
    pub executor_profile: String,
    /// Path of the git repository on this node.
    #[schema(min_length = 1)]
    pub repo_path: String,
    /// Commit or branch the agent starts from.
    #[serde(default = "default_base")]
    pub base: String,
    #[serde(default)]
    pub requirements: TaskRequirements,
    pub reward: Vibe,
    #[serde(default)]
    pub prefer: Prefer,
    /// Optional command (run with `sh -c`) on the diff applied to a scratch checkout; a
    /// non-zero exit rejects the result.
    #[serde(default)]
    pub verify_command: Option<String>,
}

impl CreateTaskAttempt {
    /// The checks that need nothing but the request: no repository, no node state. Split out
    /// of the distributor's validation so the HTTP body fuzz target runs exactly what a
    /// `POST /api/tasks` body goes through before the repository is looked at.
    pub fn check_fields(&self) -> Result<(), MarketError> {
        let invalid = |reason: String| MarketError::Invalid(reason);
        if self.prompt.trim().is_empty() {
            return Err(invalid("prompt is empty".into()));
        }
        if self.prompt.len() > PROMPT_BYTES_MAX {
            return Err(invalid(format!("prompt is over {PROMPT_BYTES_MAX} bytes")));
        }
        if self.title.chars().count() > TITLE_CHARS_MAX {
            return Err(invalid(format!(
                "title is over {TITLE_CHARS_MAX} characters"
            )));
        }
        if self.executor_profile.is_empty()
            || self.executor_profile.len() > 64
            || !self
                .executor_profile
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid(
                "executor_profile must be 1-64 letters, digits or _".into(),
            ));
        }
        if self.reward == Vibe::ZERO {
            return Err(invalid("reward must be above zero".into()));
        }
        if self
            .verify_command
            .as_ref()
            .is_some_and(|c| c.len() > VERIFY_COMMAND_BYTES_MAX)
        {
            return Err(invalid(format!(
                "verify_command is over {VERIFY_COMMAND_BYTES_MAX} bytes"
            )));
        }
        Ok(())
    }
}

fn default_base() -> String {
    "HEAD".to_string()
}

/// Why a task attempt could not be created or changed.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum MarketError {
    #[error("the task market is not available on this node")]
    Unavailable,
    #[error("no task with id {0}")]
    NotFound(Uuid),
    #[error("invalid task: {0}")]
    Invalid(String),
    #[error("balance too low: {needed} VIBE needed, {available} available")]
    InsufficientBalance { needed: Vibe, available: Vibe },
    #[error("cannot run locally: {0}")]
    NoLocalCapacity(String),
    #[error("the task already finished")]
    AlreadyFinished,
}

/// Lifecycle of a task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Bidding,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    /// Every status, for metrics.
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Pending,
        TaskStatus::Bidding,
        TaskStatus::Assigned,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// True once nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// A task attempt as the API shows it (and as the task journal keeps it).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub title: String,
    pub executor_profile: String,
    pub status: TaskStatus,
    pub reward: Vibe,
    /// What the executor is paid (the winning bid), once assigned.
    pub price: Option<Vibe>,
    /// Node id of the executor, `local` when it runs here.
    pub assigned_node: Option<String>,
    pub stage: Option<ExecutionStage>,
    pub progress_percent: u8,
    pub current_action: Option<String>,
    pub bids_received: usize,
    pub attempts: u32,
    pub summary: Option<String>,
    pub files_modified: Vec<String>,
    pub diff: Option<String>,
    pub error: Option<String>,
    /// VIBE paid to the executor.
    pub paid: Option<Vibe>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// All task attempts, newest first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<TaskView>")]
pub struct ListTasks;

/// One task attempt.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<TaskView>")]
pub struct GetTask(pub Uuid);

/// Cancel a task attempt.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<TaskView, MarketError>")]
pub struct CancelTask(pub Uuid);

struct Assignment {
    peer: PeerId,
    node_id: String,
    price: Vibe,
    escrow_id: Uuid,
    pending: Option<PendingInitiator>,
    session: Option<E2eSession>,
    /// Made when, last heard from when: see `originator::AssignmentClock::overdue`.
    clock: AssignmentClock,
}

struct OriginTask {
    view: TaskView,
    /// Bid windows held so far.
    bid_rounds: u32,
    request: CreateTaskAttempt,
    base_commit: String,
    bundle: Option<(PathBuf, u64)>,
    bids: Vec<(PeerId, TaskBid)>,
    ranked: VecDeque<PeerId>,
    assignment: Option<Assignment>,
    local: bool,
    last_failure: Option<String>,
    /// Bid rounds opened again because every remaining bid's reservation had run out.
    reoffers: u32,
}

/// The `TaskDistributor` role.
pub struct TaskDistributor {
    identity: Identity,
    config: Arc<Config>,
    metrics: Arc<NetMetrics>,
    peer_manager: Addr<PeerManager>,
    executor: Addr<TaskExecutor>,
    settler: Addr<SettlementEngine>,
    relay: Addr<ExecutionRelay>,
    panel: Recipient<PanelEvent>,
    tasks: HashMap<Uuid, OriginTask>,
    order: VecDeque<Uuid>,
    profiles: Vec<String>,
    /// Where the log and progress bytes of assigned executors are billed.
    billing: Option<Recipient<crate::actors::accountant::BillableBytes>>,
}

impl TaskDistributor {
    /// A distributor for this node.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        metrics: Arc<NetMetrics>,
        peer_manager: Addr<PeerManager>,
        executor: Addr<TaskExecutor>,
        settler: Addr<SettlementEngine>,
        relay: Addr<ExecutionRelay>,
        panel: Recipient<PanelEvent>,
    ) -> Self {
        TaskDistributor {
            panel,
            profiles: available_profiles(&config.executor),
            identity,
            config,
            metrics,
            peer_manager,
            executor,
            settler,
            relay,
            tasks: HashMap::new(),
            order: VecDeque::new(),
            billing: None,
        }
    }

    /// Bill the log and progress bytes of assigned executors to `billing` (the accountant).
    pub fn with_billing(
        mut self,
        billing: Recipient<crate::actors::accountant::BillableBytes>,
    ) -> Self {
        self.billing = Some(billing);
        self
    }

    fn validate(&self, request: &CreateTaskAttempt) -> Result<String, MarketError> {
        let invalid = |reason: String| MarketError::Invalid(reason);
        request.check_fields()?;
        let repo = PathBuf::from(&request.repo_path);
        if !repo.is_dir() {
            return Err(invalid(format!(
                "repo_path {} is not a directory",
                request.repo_path
            )));
        }
        workspace::resolve_commit(&repo, &request.base)
            .map_err(|e| invalid(format!("base {}: {e}", request.base)))
    }

    fn remember(&mut self, id: Uuid, task: OriginTask) {
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
            Ok(view) => self.settler.do_send(JournalTask {
                id,
                open: !task.view.status.is_final(),
                view,
            }),
            Err(e) => tracing::warn!(task_id = %id, error = %e, "task view not journaled"),
        }
    }

    fn log(
        &self,
        kind: TransactionType,
        id: Uuid,
        peer: Option<String>,
        amount: Option<Vibe>,
        detail: String,
    ) {
        let _ = self
            .panel
            .try_send(PanelEvent::Transaction(TransactionLogEntry::new(
                kind,
                Some(id),
                peer,
                amount,
                detail,
            )));
    }

    fn title(&self, id: Uuid) -> String {
        self.tasks
            .get(&id)
            .map(|t| t.view.title.clone())
            .unwrap_or_default()
    }

    fn event(&self, event: ExecutionEvent) {
        self.relay.do_send(RecordUpdate(event));
    }

    fn payload(task: &OriginTask) -> TaskPayload {
        TaskPayload {
            title: task.request.title.clone(),
            prompt: task.request.prompt.clone(),
            executor_profile: task.request.executor_profile.clone(),
            base_commit: task.base_commit.clone(),
            repo: match &task.bundle {
                Some((_, bytes)) => RepoDelivery::Bundle {
                    bytes: *bytes,
                    total_chunks: u32::try_from(market::bundle_chunks(*bytes)).unwrap_or(u32::MAX),
                },
                None => RepoDelivery::LocalPath(task.request.repo_path.clone()),
            },
            timeout_s: task.request.requirements.timeout_s,
        }
    }

    /// Fail the attempt for good, with a reason a user can read.
    fn fail(&mut self, id: Uuid, reason: String) {
        tracing::warn!(task_id = %id, %reason, "task attempt failed");
        if let Some(task) = self.tasks.get_mut(&id)
            && let Some((path, _)) = task.bundle.take()
        {
            let _ = std::fs::remove_file(path);
        }
        self.touch(id, |view| {
            view.status = TaskStatus::Failed;
            view.error = Some(reason.clone());
        });
        let executor = self
            .tasks
            .get(&id)
            .and_then(|t| t.view.assigned_node.clone());
        self.log(
            TransactionType::ExecutionFailed,
            id,
            executor,
            None,
            format!("{}: {reason}", self.title(id)),
        );
        self.event(ExecutionEvent::Finished {
            task_id: id,
            succeeded: false,
            detail: reason,
        });
    }

    fn start_mesh(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let repo = PathBuf::from(&task.request.repo_path);
        let commit = task.base_commit.clone();
        let bundle_path = self
            .config
            .node
            .data_dir
            .join("bundles")
            .join(format!("{id}.bundle"));
        let work = async move {
            tokio::task::spawn_blocking(move || {
                if let Some(parent) = bundle_path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                let bytes = workspace::create_bundle(&repo, &commit, &bundle_path)
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((bundle_path, bytes))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|result| result)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |bundle, actor, ctx| match bundle {
                    Ok(bundle) => {
                        if let Some(task) = actor.tasks.get_mut(&id) {
                            task.bundle = Some(bundle);
                        }
                        actor.broadcast_request(id, ctx);
                    }
                    Err(e) => actor.fail(id, format!("cannot bundle the repository: {e}")),
                }),
        );
    }

    fn broadcast_request(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let window = Duration::from_millis(self.config.market.bid_window_ms);
        let mut hasher = Sha256::new();
        hasher.update(task.request.prompt.as_bytes());
        hasher.update([0]);
        hasher.update(task.base_commit.as_bytes());
        let request = TaskDistributionRequest {
            task_id: id,
            executor_profile: task.request.executor_profile.clone(),
            requirements: task.request.requirements.clone(),
            reward: task.request.reward,
            content_hash: hex::encode(hasher.finalize()),
            bid_deadline: Utc::now() + chrono::Duration::from_std(window).unwrap_or_default(),
        };
        task.view.status = TaskStatus::Bidding;
        task.view.updated_at = Utc::now();
        // A new round: bids of an earlier one held slots that are gone by now.
        task.bids.clear();
        task.ranked.clear();
        let peer_manager = self.peer_manager.clone();
        let profile = request.executor_profile.clone();
        let message = APNMessage::TaskDistributionRequest(request);
        ctx.spawn(
            async move {
                // Also straight to the peers that announced the profile: gossip alone can
                // miss a peer whose subscription has not propagated yet (just connected,
                // or relay-only). Bidders answer a task id once, so the copies cost nothing.
                let peers = peer_manager.send(GetPeers).await.unwrap_or_default();
                let direct: Vec<PeerId> = peers
                    .iter()
                    .filter(|p| p.announced && p.executor_profiles.contains(&profile))
                    .filter_map(|p| p.peer_id.parse().ok())
                    .take(DIRECT_OFFERS_MAX)
                    .collect();
                let offered_directly = !direct.is_empty();
                for peer in direct {
                    if let Ok(Err(e)) = peer_manager
                        .send(SendTo {
                            peer,
                            message: message.clone(),
                        })
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "direct offer not delivered");
                    }
                }
                match peer_manager
                    .send(Broadcast {
                        topic: Topic::Tasks,
                        message,
                    })
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if !offered_directly => return Ok(Err(e)),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "gossip offer not sent; direct offers were")
                    }
                    Err(e) => return Err(e),
                }
                Ok(Ok(()))
            }
            .into_actor(self)
            .map(move |result, actor, ctx| match result {
                Ok(Ok(())) => {
                    let reward = actor.tasks.get(&id).map(|t| t.request.reward);
                    actor.log(
                        TransactionType::TaskDistributed,
                        id,
                        None,
                        reward,
                        format!("{} offered to the mesh", actor.title(id)),
                    );
                    ctx.run_later(window, move |actor, ctx| actor.close_bidding(id, ctx));
                }
                Ok(Err(e)) => actor.fail(id, format!("cannot offer the task to the mesh: {e}")),
                Err(e) => actor.fail(id, format!("peer manager gone: {e}")),
            }),
        );
    }

    fn close_bidding(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if task.view.status != TaskStatus::Bidding {
            return;
        }
        let bids = task.bids.clone();
        let reward = task.request.reward;
        let profile = task.request.executor_profile.clone();
        let minimum = self.config.economics.min_task_reward;
        let peer_manager = self.peer_manager.clone();
        let settler = self.settler.clone();
        let metrics = self.metrics.clone();
        let work = async move {
            let peers = peer_manager.send(GetPeers).await.unwrap_or_default();
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
                    Some(key) => settler
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
                    },
                ));
            }
            market::rank_bids(&judged, reward)
        };
        ctx.spawn(work.into_actor(self).map(move |ranked, actor, ctx| {
            let Some(task) = actor.tasks.get_mut(&id) else {
                return;
            };
            if task.view.status != TaskStatus::Bidding {
                return;
            }
            task.view.bids_received = task.bids.len();
                        if ranked.is_empty() {
                // Free slots come back as runs finish and reservations lapse: offer again a
                // few times before giving up.
                if task.bid_rounds < actor.config.market.bid_rounds_max {
                    task.bid_rounds += 1;
                    let pause = Duration::from_millis(actor.config.market.bid_window_ms);
                    ctx.run_later(pause, move |actor, ctx| actor.broadcast_request(id, ctx));
                    return;
                }
                let reason = format!(
                    "no node bid after {} round(s): nobody on the mesh runs profile {} for {} VIBE or less with a free slot",
                    task.bid_rounds, task.request.executor_profile, task.request.reward
                );
                actor.fail(id, reason);
                return;
            }
            task.ranked = ranked.into();
            actor.assign_next(id, ctx);
        }));
    }

    /// Give the task to the best remaining bidder: escrow, seal, record the assignment,
    /// send. The assignment is recorded before `TaskAssigned` leaves, so an executor's
    /// immediate refusal always finds it.
    fn assign_next(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let reassignments_max = self.config.market.reassignments_max;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if task.view.status.is_final() {
            return;
        }
        let tries = Tries {
            attempts: task.view.attempts,
            reoffers: task.reoffers,
        };
        let bids = &task.bids;
        let valid_until_of = |peer: &PeerId| {
            bids.iter()
                .find(|(p, _)| p == peer)
                .map(|(_, bid)| bid.valid_until)
        };
        let step = originator::next_step(
            &mut task.ranked,
            valid_until_of,
            tries,
            reassignments_max,
            Utc::now(),
        );
        let peer = match step {
            NextStep::Assign(peer) => peer,
            NextStep::OfferAgain { expired } => {
                // Every bid left had run out (the executor before them was slow to fail):
                // ask the mesh again instead of sending assignments the bidders would refuse.
                task.reoffers += 1;
                tracing::info!(task_id = %id, expired, "remaining bids expired; offering the task again");
                self.broadcast_request(id, ctx);
                return;
            }
            NextStep::GiveUp => {
                let reason = match &task.last_failure {
                    Some(last) => format!(
                        "gave up after {} attempt(s); last: {last}",
                        task.view.attempts
                    ),
                    None => "no bidder left".to_string(),
                };
                self.fail(id, reason);
                return;
            }
        };
        let Some((_, bid)) = task.bids.iter().find(|(p, _)| *p == peer) else {
            return;
        };
        let price = bid.price;
        let node_id = bid.bidder.to_string();
        let executor_node = bid.bidder.clone();
        task.view.attempts += 1;
        task.view.status = TaskStatus::Assigned;
        task.view.assigned_node = Some(node_id.clone());
        task.view.price = Some(price);
        task.view.updated_at = Utc::now();
        let escrow_id = Uuid::new_v4();
        let payload = Self::payload(task);
        let settler = self.settler.clone();
        let peer_manager = self.peer_manager.clone();
        let identity = self.identity.clone();
        let deadline =
            Utc::now() + chrono::Duration::seconds(self.config.market.heartbeat_timeout_s as i64);
        // First the escrow and the sealed task (`Err((escrow_held, reason))`).
        let prepare = {
            let node_id = node_id.clone();
            async move {
                settler
                    .send(HoldEscrow {
                        transfer_id: escrow_id,
                        task_id: escrow_id,
                        amount: price,
                    })
                    .await
                    .map_err(|e| (false, format!("ledger unavailable: {e}")))?
                    .map_err(|e| (false, format!("cannot escrow {price} VIBE: {e}")))?;
                let key = peer_manager
                    .send(GetPeerNoiseKey(peer))
                    .await
                    .ok()
                    .flatten()
                    .ok_or((
                        true,
                        format!("{node_id} never announced its encryption key"),
                    ))?;
                let plaintext =
                    crate::messages::codec::encode(&payload).map_err(|e| (true, e.to_string()))?;
                let (pending, handshake) = e2e::initiate(&identity, &key, &plaintext)
                    .map_err(|e| (true, e.to_string()))?;
                let message = APNMessage::TaskAssigned(TaskAssigned {
                    task_id: id,
                    executor: executor_node,
                    agreed_price: price,
                    escrow_id,
                    deadline,
                    noise_handshake: handshake.into(),
                });
                Ok::<_, (bool, String)>((pending, message))
            }
        };
        ctx.spawn(
            prepare
                .into_actor(self)
                .map(move |prepared, actor, ctx| match prepared {
                    Ok((pending, message)) => {
                        let Some(task) = actor.tasks.get_mut(&id) else {
                            actor.settler.do_send(RefundEscrow { task_id: escrow_id });
                            return;
                        };
                        task.assignment = Some(Assignment {
                            peer,
                            node_id,
                            price,
                            escrow_id,
                            pending: Some(pending),
                            session: None,
                            clock: AssignmentClock::new(Instant::now()),
                        });
                        actor.send_assignment(id, peer, escrow_id, message, ctx);
                    }
                    // Escrow failed: nothing is held. Another bid may be one this node can
                    // hold (a lower price), so move on rather than fail the task.
                    Err((false, reason)) => {
                        if let Some(task) = actor.tasks.get_mut(&id) {
                            task.last_failure = Some(reason);
                        }
                        actor.assign_next(id, ctx);
                    }
                    Err((true, reason)) => {
                        actor.settler.do_send(RefundEscrow { task_id: escrow_id });
                        if let Some(task) = actor.tasks.get_mut(&id) {
                            task.last_failure = Some(reason);
                        }
                        actor.assign_next(id, ctx);
                    }
                }),
        );
    }

    /// Send the recorded assignment; once it is delivered, give the losing bidders their
    /// slots back. Undeliverable: refund and move on to the next bid.
    fn send_assignment(
        &mut self,
        id: Uuid,
        peer: PeerId,
        escrow_id: Uuid,
        message: APNMessage,
        ctx: &mut Context<Self>,
    ) {
        let peer_manager = self.peer_manager.clone();
        let send = async move {
            peer_manager
                .send(SendTo { peer, message })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot reach the executor: {e}"))
        };
        ctx.spawn(send.into_actor(self).map(move |sent, actor, ctx| {
            let Some(task) = actor.tasks.get_mut(&id) else {
                return;
            };
            // Still this assignment? (A refusal may have moved the task on already.)
            let current = task
                .assignment
                .as_ref()
                .is_some_and(|a| a.escrow_id == escrow_id);
            match sent {
                Ok(_path) => {
                    if current {
                        tracing::info!(task_id = %id, executor = %peer, "task assigned");
                    }
                    // The other bidders hold a slot each for this task: give them back now.
                    // Their bids are spent; a reassignment offers the task again.
                    let now = Utc::now();
                    for (loser, bid) in task.bids.iter_mut().filter(|(p, _)| *p != peer) {
                        if bid.valid_until > now {
                            bid.valid_until = now;
                            actor.peer_manager.do_send(SendTo {
                                peer: *loser,
                                message: APNMessage::TaskCancelled(TaskCancelled {
                                    task_id: id,
                                    reason: "another bid won".into(),
                                }),
                            });
                        }
                    }
                }
                Err(reason) if current => actor.move_on(id, None, reason, ctx),
                Err(_) => {}
            }
        }));
    }

    /// The assigned executor failed, went silent or returned a bad result: refund, lower
    /// its reputation, try the next bid.
    fn reassign(&mut self, id: Uuid, outcome: Outcome, reason: String, ctx: &mut Context<Self>) {
        self.move_on(id, Some(outcome), reason, ctx);
    }

    /// Refund, record `outcome` (none for an executor that refused the assignment before
    /// running anything: its reputation is not at stake), tell the executor, try the next bid.
    fn move_on(
        &mut self,
        id: Uuid,
        outcome: Option<Outcome>,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(assignment) = task.assignment.take() else {
            return;
        };
        tracing::warn!(task_id = %id, executor = %assignment.node_id, %reason, "execution failed; refunding and reassigning");
        self.settler.do_send(RefundEscrow {
            task_id: assignment.escrow_id,
        });
        if let (Some(key), Some(outcome)) = (identity::public_key_of(&assignment.peer), outcome) {
            self.settler.do_send(RecordOutcome { peer: key, outcome });
        }
        let cancel = APNMessage::TaskCancelled(TaskCancelled {
            task_id: id,
            reason: reason.clone(),
        });
        self.peer_manager.do_send(SendTo {
            peer: assignment.peer,
            message: cancel,
        });
        task.last_failure = Some(format!("{}: {reason}", assignment.node_id));
        task.view.error = task.last_failure.clone();
        self.event(ExecutionEvent::Progress {
            task_id: id,
            stage: ExecutionStage::Setup,
            percent: 0,
            action: format!("reassigning: {reason}"),
        });
        self.assign_next(id, ctx);
    }

    /// End every assignment that went silent or ran past its deadline.
    fn check_heartbeats(&mut self, ctx: &mut Context<Self>) {
        let market = &self.config.market;
        let heartbeat_timeout = Duration::from_secs(market.heartbeat_timeout_s);
        let now = Instant::now();
        let overdue: Vec<(Uuid, Overdue)> = self
            .tasks
            .iter()
            .filter(|(_, task)| !task.view.status.is_final())
            .filter_map(|(id, task)| {
                let deadline = Duration::from_secs(market::assignment_deadline_s(
                    task.request.requirements.timeout_s,
                    market.run_deadline_s,
                    market.heartbeat_timeout_s,
                ));
                task.assignment
                    .as_ref()?
                    .clock
                    .overdue(now, heartbeat_timeout, deadline)
                    .map(|overdue| (*id, overdue))
            })
            .collect();
        for (id, overdue) in overdue {
            self.reassign(id, Outcome::TimedOut, overdue.to_string(), ctx);
        }
    }

    /// An execution message from the mesh: only the assigned executor may send it.
    fn on_execution_message(&mut self, envelope: &VerifiedEnvelope, ctx: &mut Context<Self>) {
        let task_id = match &envelope.message {
            APNMessage::ExecutionStarted(m) => m.task_id,
            APNMessage::ExecutionProgress(m) => m.task_id,
            APNMessage::ExecutionLogs(m) => m.task_id,
            APNMessage::ExecutionCompleted(m) => m.task_id,
            APNMessage::ExecutionFailed(m) => m.task_id,
            _ => return,
        };
        let authorised = self
            .tasks
            .get(&task_id)
            .and_then(|t| t.assignment.as_ref())
            .is_some_and(|a| a.peer == envelope.from_peer);
        if !authorised {
            self.metrics.count_drop(DropReason::Unauthorized);
            tracing::warn!(%task_id, from = %envelope.from_node, kind = envelope.message.kind(), "execution message from a node not assigned the task");
            return;
        }
        // Only now, from the executor this node assigned, is a log stream traffic it asked
        // for and pays for.
        if matches!(
            envelope.message,
            APNMessage::ExecutionLogs(_) | APNMessage::ExecutionProgress(_)
        ) && let Some(billing) = &self.billing
        {
            let _ = billing.try_send(crate::actors::accountant::BillableBytes {
                peer: envelope.from_peer,
                bytes: envelope.frame_bytes as u64,
            });
        }
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(assignment) = task.assignment.as_mut() else {
            return;
        };
        assignment.clock.heard(Instant::now());
        let decrypt_failed = |metrics: &NetMetrics| metrics.count_drop(DropReason::DecryptFailed);
        match &envelope.message {
            APNMessage::ExecutionStarted(started) => {
                let Some(pending) = assignment.pending.take() else {
                    return;
                };
                match pending.complete(&started.noise_handshake) {
                    Ok(session) => assignment.session = Some(session),
                    Err(e) => {
                        decrypt_failed(&self.metrics);
                        self.reassign(
                            task_id,
                            Outcome::BadResult,
                            format!("handshake failed: {e}"),
                            ctx,
                        );
                        return;
                    }
                }
                let executor = assignment.node_id.clone();
                task.view.status = TaskStatus::Running;
                task.view.updated_at = Utc::now();
                self.log(
                    TransactionType::ExecutionStarted,
                    task_id,
                    Some(executor.clone()),
                    None,
                    format!("{} running on {executor}", self.title(task_id)),
                );
                self.event(ExecutionEvent::Started { task_id, executor });
                self.send_bundle(task_id, ctx);
            }
            APNMessage::ExecutionProgress(progress) => {
                let action = match (&progress.current_action, &assignment.session) {
                    (Some(sealed), Some(session)) => match session.open(sealed) {
                        Ok(plain) => crate::messages::codec::decode::<ProgressAction>(
                            &plain,
                            crate::market::PROGRESS_ACTION_BYTES_MAX,
                        )
                        .map(|a| a.action)
                        .ok(),
                        Err(_) => {
                            decrypt_failed(&self.metrics);
                            None
                        }
                    },
                    _ => None,
                };
                self.on_update(
                    task_id,
                    ExecutionUpdate::Progress {
                        stage: progress.stage,
                        percent: progress.percent.min(100),
                        action: action.unwrap_or_default(),
                    },
                    ctx,
                );
            }
            APNMessage::ExecutionLogs(logs) => {
                let Some(session) = &assignment.session else {
                    return decrypt_failed(&self.metrics);
                };
                match session.open(&logs.lines).ok().and_then(|plain| {
                    crate::messages::codec::decode::<Vec<LogLine>>(
                        &plain,
                        crate::market::LOG_BATCH_BYTES_MAX,
                    )
                    .ok()
                }) {
                    Some(lines) => self.on_update(task_id, ExecutionUpdate::Logs(lines), ctx),
                    None => decrypt_failed(&self.metrics),
                }
            }
            APNMessage::ExecutionCompleted(completed) => {
                let Some(session) = &assignment.session else {
                    return decrypt_failed(&self.metrics);
                };
                let result = session.open(&completed.result).ok().and_then(|plain| {
                    crate::messages::codec::decode::<ExecutionResult>(
                        &plain,
                        crate::market::RESULT_BYTES_MAX,
                    )
                    .ok()
                });
                let Some(result) = result else {
                    decrypt_failed(&self.metrics);
                    self.reassign(
                        task_id,
                        Outcome::BadResult,
                        "result does not decrypt".into(),
                        ctx,
                    );
                    return;
                };
                let hash =
                    workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
                let signed = identity::verify_signature(
                    &envelope.from_key,
                    completed.result_hash.as_bytes(),
                    &completed.result_signature,
                );
                if hash != completed.result_hash || !signed {
                    self.reassign(
                        task_id,
                        Outcome::BadResult,
                        "result hash or signature does not verify".into(),
                        ctx,
                    );
                    return;
                }
                self.verify_and_settle(task_id, result, ctx);
            }
            APNMessage::ExecutionFailed(failed) => {
                // A run's failure is sealed; only a refusal before any session is clear.
                let (stage, error) = match (&failed.detail, &assignment.session) {
                    (None, _) => (failed.stage, failed.error.clone()),
                    (Some(sealed), Some(session)) => {
                        match session.open(sealed).ok().and_then(|plain| {
                            crate::messages::codec::decode::<crate::market::FailureDetail>(
                                &plain,
                                crate::market::FAILURE_DETAIL_BYTES_MAX,
                            )
                            .ok()
                        }) {
                            Some(detail) => (detail.stage, detail.error),
                            None => {
                                decrypt_failed(&self.metrics);
                                (failed.stage, "its failure does not decrypt".into())
                            }
                        }
                    }
                    (Some(_), None) => {
                        decrypt_failed(&self.metrics);
                        (failed.stage, "its failure came before its session".into())
                    }
                };
                let reason = format!("failed at {stage:?}: {error}");
                self.event(ExecutionEvent::Log {
                    task_id,
                    line: LogLine {
                        stream: "apn".into(),
                        line: reason.clone(),
                        at_ms: Utc::now().timestamp_millis(),
                    },
                });
                // A nil execution id: the executor refused the assignment and ran nothing.
                let outcome = (!failed.execution_id.is_nil()).then_some(Outcome::Failed);
                self.move_on(task_id, outcome, reason, ctx);
            }
            _ => {}
        }
    }

    fn send_bundle(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some((path, _)) = task.bundle.clone() else {
            return;
        };
        let Some(assignment) = task.assignment.as_mut() else {
            return;
        };
        let Some(session) = assignment.session.as_mut() else {
            return;
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.fail(id, format!("cannot read the bundle: {e}"));
                return;
            }
        };
        let total = u32::try_from(market::bundle_chunks(bytes.len() as u64)).unwrap_or(u32::MAX);
        let mut chunks = Vec::with_capacity(total as usize);
        for (index, part) in bytes.chunks(REPO_CHUNK_BYTES).enumerate() {
            match session.seal(part) {
                Ok(data) => chunks.push(APNMessage::RepoChunk(RepoChunk {
                    task_id: id,
                    index: index as u32,
                    total,
                    data,
                })),
                Err(e) => {
                    self.fail(id, format!("cannot encrypt the bundle: {e}"));
                    return;
                }
            }
        }
        let peer = assignment.peer;
        let peer_manager = self.peer_manager.clone();
        // Sent one after another: each waits for the previous one's acknowledgement.
        let work = async move {
            for message in chunks {
                peer_manager
                    .send(SendTo { peer, message })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        };
        ctx.spawn(work.into_actor(self).map(move |result, actor, ctx| {
            if let Err(e) = result {
                actor.reassign(
                    id,
                    Outcome::Failed,
                    format!("repository transfer failed: {e}"),
                    ctx,
                );
            }
        }));
    }

    fn verify_and_settle(&mut self, id: Uuid, result: ExecutionResult, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let repo = PathBuf::from(&task.request.repo_path);
        let base = task.base_commit.clone();
        let verify = task.request.verify_command.clone();
        let diff = result.diff.clone();
        let verify_sandbox = self.verify_sandbox();
        let check = tokio::task::spawn_blocking(move || {
            workspace::apply_check(&repo, &base, &diff)
                .map_err(|e| format!("diff does not apply: {e}"))?;
            if let Some(command) = verify {
                let limits = verify_sandbox?;
                let passed = workspace::apply_and_verify(
                    &repo,
                    &base,
                    &diff,
                    &command,
                    VERIFY_TIMEOUT,
                    limits,
                )
                .map_err(|e| format!("verify command could not run: {e}"))?;
                if !passed {
                    return Err("verify command failed on the result".to_string());
                }
            }
            Ok(())
        });
        ctx.spawn(check.into_actor(self).map(move |checked, actor, ctx| {
            let checked = checked.map_err(|e| e.to_string()).and_then(|r| r);
            match checked {
                Ok(()) => actor.settle(id, result, ctx),
                Err(reason) => actor.reassign(id, Outcome::BadResult, reason, ctx),
            }
        }));
    }

    /// The sandbox a verify command runs in: `Ok(None)` when the operator switched the
    /// sandbox off, `Err` when it is required and this kernel cannot provide it.
    fn verify_sandbox(&self) -> Result<Option<crate::sandbox::SandboxLimits>, String> {
        let mode = self.config.executor.sandbox;
        crate::sandbox::peer_runs_allowed(mode, crate::sandbox::support())
            .map_err(|reason| format!("verify command not run: {reason}"))?;
        Ok(
            crate::sandbox::sandboxes_runs(mode, crate::sandbox::support()).then(|| {
                crate::sandbox::SandboxLimits {
                    memory_bytes_max: self
                        .config
                        .resources
                        .max_memory_mb
                        .saturating_mul(1024 * 1024),
                    processes_max: self.config.resources.max_processes,
                    cpu_seconds_max: VERIFY_TIMEOUT.as_secs().saturating_add(60),
                }
            }),
        )
    }

    fn settle(&mut self, id: Uuid, result: ExecutionResult, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(assignment) = task.assignment.take() else {
            return;
        };
        let Some(payee) = identity::public_key_of(&assignment.peer) else {
            return;
        };
        let settler = self.settler.clone();
        let peer_manager = self.peer_manager.clone();
        let (peer, price, escrow_id) = (assignment.peer, assignment.price, assignment.escrow_id);
        let work = async move {
            let transaction = settler
                .send(ReleaseEscrow {
                    task_id: escrow_id,
                    payee,
                    amount: price,
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            settler.do_send(RecordOutcome {
                peer: payee,
                outcome: Outcome::Completed,
            });
            if let Err(e) = peer_manager
                .send(SendTo {
                    peer,
                    message: APNMessage::VibeTransaction(transaction),
                })
                .await
            {
                tracing::warn!(task_id = %id, error = %e, "payment record not delivered; the ledger entry stands");
            }
            Ok::<_, String>(())
        };
        task.view.summary = Some(result.summary.clone());
        task.view.files_modified = result.files_modified.clone();
        task.view.diff = Some(result.diff.clone());
        ctx.spawn(work.into_actor(self).map(move |paid, actor, _| {
            match paid {
                Ok(()) => {
                    if let Some(task) = actor.tasks.get_mut(&id) {
                        if let Some((path, _)) = task.bundle.take() {
                            let _ = std::fs::remove_file(path);
                        }
                        task.view.status = TaskStatus::Completed;
                        task.view.stage = Some(ExecutionStage::Done);
                        task.view.progress_percent = 100;
                        task.view.paid = Some(price);
                        task.view.error = None;
                        task.view.updated_at = Utc::now();
                        tracing::info!(task_id = %id, executor = %task.view.assigned_node.clone().unwrap_or_default(), %price, "task completed and paid");
                    }
                    actor.journal(id);
                                        let executor = actor.tasks.get(&id).and_then(|t| t.view.assigned_node.clone());
                    actor.log(TransactionType::ExecutionCompleted, id, executor.clone(), None, format!("{}: {}", actor.title(id), result.summary));
                    actor.log(TransactionType::VibeSpent, id, executor.clone(), Some(price), format!("paid {} for {}", executor.unwrap_or_default(), actor.title(id)));
                    actor.event(ExecutionEvent::Finished { task_id: id, succeeded: true, detail: result.summary });
                }
                Err(e) => actor.fail(id, format!("escrow release failed: {e}")),
            }
        }));
    }

    /// A decrypted (remote) or plaintext (local) update.
    fn on_update(&mut self, id: Uuid, update: ExecutionUpdate, ctx: &mut Context<Self>) {
        match update {
            ExecutionUpdate::Started { .. } => {
                self.touch(id, |view| view.status = TaskStatus::Running);
                self.log(
                    TransactionType::ExecutionStarted,
                    id,
                    Some("local".into()),
                    None,
                    format!("{} running on this node", self.title(id)),
                );
                self.event(ExecutionEvent::Started {
                    task_id: id,
                    executor: "local".into(),
                });
            }
            ExecutionUpdate::Progress {
                stage,
                percent,
                action,
            } => {
                let shown = action.clone();
                self.touch(id, |view| {
                    view.stage = Some(stage);
                    view.progress_percent = percent;
                    if !shown.is_empty() {
                        view.current_action = Some(shown);
                    }
                });
                self.event(ExecutionEvent::Progress {
                    task_id: id,
                    stage,
                    percent,
                    action,
                });
            }
            ExecutionUpdate::Logs(lines) => {
                for line in lines {
                    self.event(ExecutionEvent::Log { task_id: id, line });
                }
            }
            ExecutionUpdate::Completed { result, .. } => {
                // Only local runs arrive here complete; remote results go through
                // verification and settlement first.
                let summary = result.summary.clone();
                self.log(
                    TransactionType::ExecutionCompleted,
                    id,
                    Some("local".into()),
                    None,
                    format!("{}: {summary}", self.title(id)),
                );
                self.touch(id, |view| {
                    view.status = TaskStatus::Completed;
                    view.stage = Some(ExecutionStage::Done);
                    view.progress_percent = 100;
                    view.summary = Some(result.summary);
                    view.files_modified = result.files_modified;
                    view.diff = Some(result.diff);
                });
                self.event(ExecutionEvent::Finished {
                    task_id: id,
                    succeeded: true,
                    detail: summary,
                });
            }
            ExecutionUpdate::Failed { stage, error, .. } => {
                let _ = ctx;
                self.fail(id, format!("failed at {stage:?}: {error}"));
            }
        }
    }

    fn on_bid(&mut self, envelope: &VerifiedEnvelope, bid: &TaskBid) {
        let bids_max = self.config.market.bids_per_task_max;
        let Some(task) = self.tasks.get_mut(&bid.task_id) else {
            self.metrics.count_drop(DropReason::Unauthorized);
            return;
        };
        if bid.bidder != envelope.from_node {
            // A bid naming another node than its signer.
            self.metrics.count_drop(DropReason::Unauthorized);
            return;
        }
        if task.view.status != TaskStatus::Bidding
            || task.bids.iter().any(|(p, _)| *p == envelope.from_peer)
        {
            return;
        }
        if task.bids.len() >= bids_max {
            self.metrics.count_drop(DropReason::RateLimited);
            return;
        }
        if let Err(reason) =
            market::check_bid_price(bid.price, self.config.economics.min_task_reward)
        {
            // Refused where it arrives: it takes no place among the bids.
            self.metrics.count_drop(DropReason::BidBelowMinimum);
            tracing::warn!(task_id = %bid.task_id, from = %envelope.from_node, %reason, "bid refused");
            return;
        }
        task.bids.push((envelope.from_peer, bid.clone()));
        task.view.bids_received = task.bids.len();
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
            APNMessage::TaskBid(bid) => self.on_bid(&envelope, bid),
            _ => self.on_execution_message(&envelope, ctx),
        }
    }
}

impl Handler<LocalExecution> for TaskDistributor {
    type Result = ();

    fn handle(&mut self, local: LocalExecution, ctx: &mut Self::Context) {
        if self
            .tasks
            .get(&local.task_id)
            .is_some_and(|t| t.local && !t.view.status.is_final())
        {
            self.on_update(local.task_id, local.update, ctx);
        }
    }
}

impl Handler<CreateTaskAttempt> for TaskDistributor {
    type Result = ResponseActFuture<Self, Result<Uuid, MarketError>>;

    fn handle(&mut self, request: CreateTaskAttempt, _ctx: &mut Self::Context) -> Self::Result {
        let base_commit = match self.validate(&request) {
            Ok(commit) => commit,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
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
            diff: None,
            error: None,
            paid: None,
            created_at: now,
            updated_at: now,
        };
        let task = OriginTask {
            bid_rounds: 1,
            view,
            request,
            base_commit,
            bundle: None,
            bids: Vec::new(),
            ranked: VecDeque::new(),
            assignment: None,
            local: false,
            last_failure: None,
            reoffers: 0,
        };
        let payload = Self::payload(&task);
        tracing::info!(task_id = %id, profile = %task.request.executor_profile, reward = %task.request.reward, ?prefer, "task attempt created");
        self.remember(id, task);
        let executor = self.executor.clone();
        let try_local = prefer != Prefer::Mesh && profile_here;
        let work = async move {
            if try_local {
                executor
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
        let settler = self.settler.clone();
        Box::pin(
            async move {
                let journaled = settler.send(LookupTask(request.0)).await.ok()?.ok()??;
                journaled_view(&journaled)
            }
            .into_actor(self),
        )
    }
}

/// A journaled task as the API shows it: a task a restart cut short failed, with the reason.
pub fn journaled_view(journaled: &crate::ledger::JournaledTask) -> Option<TaskView> {
    let mut view: TaskView = serde_json::from_str(&journaled.view).ok()?;
    if let Some(reason) = &journaled.interrupted {
        view.status = TaskStatus::Failed;
        view.error = Some(reason.clone());
    }
    Some(view)
}

impl Handler<CancelTask> for TaskDistributor {
    type Result = Result<TaskView, MarketError>;

    fn handle(&mut self, request: CancelTask, _ctx: &mut Self::Context) -> Self::Result {
        let id = request.0;
        let task = self.tasks.get_mut(&id).ok_or(MarketError::NotFound(id))?;
        if task.view.status.is_final() {
            return Err(MarketError::AlreadyFinished);
        }
        if task.local {
            self.executor.do_send(super::executor::CancelRun(id));
        }
        if let Some(assignment) = task.assignment.take() {
            self.settler.do_send(RefundEscrow {
                task_id: assignment.escrow_id,
            });
            let message = APNMessage::TaskCancelled(TaskCancelled {
                task_id: id,
                reason: "cancelled by the user".into(),
            });
            self.peer_manager.do_send(SendTo {
                peer: assignment.peer,
                message,
            });
        }
        if let Some((path, _)) = task.bundle.take() {
            let _ = std::fs::remove_file(path);
        }
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
