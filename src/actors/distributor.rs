//! `TaskDistributor`: task attempts this node originated or bid on.
//!
//! The full market (bids, scoring, escrow, assignment, reassignment) lands with the task
//! market issue; until then it keeps the task table the API shows and refuses to create
//! attempts with `MarketError::Unavailable`, so callers see a clear reason.

use std::collections::BTreeMap;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::peer_manager::Inbound;
use crate::messages::{ExecutionStage, TaskRequirements, Vibe};

/// Where the caller wants a task to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    Local,
    Mesh,
    #[default]
    Auto,
}

/// Create a task attempt (from HTTP, CLI or tests).
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Uuid, MarketError>")]
pub struct CreateTaskAttempt {
    pub title: String,
    pub prompt: String,
    pub executor_profile: String,
    /// Path of the git repository on this node.
    pub repo_path: String,
    /// Commit or branch the agent starts from.
    #[serde(default = "default_base")]
    pub base: String,
    #[serde(default)]
    pub requirements: TaskRequirements,
    pub reward: Vibe,
    #[serde(default)]
    pub prefer: Prefer,
    /// Optional command run on the diff applied to a scratch checkout.
    #[serde(default)]
    pub verify_command: Option<String>,
}

fn default_base() -> String {
    "HEAD".to_string()
}

/// Why a task attempt could not be created or changed.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum MarketError {
    #[error("the task market is not available on this node yet")]
    Unavailable,
    #[error("no task with id {0}")]
    NotFound(Uuid),
    #[error("invalid task: {0}")]
    Invalid(String),
    #[error("balance too low: {needed} VIBE needed, {available} available")]
    InsufficientBalance { needed: Vibe, available: Vibe },
}

/// Lifecycle of a task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// A task attempt as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: Uuid,
    pub title: String,
    pub executor_profile: String,
    pub status: TaskStatus,
    pub reward: Vibe,
    /// Node id of the executor, `local` when it runs here.
    pub assigned_node: Option<String>,
    pub stage: Option<ExecutionStage>,
    pub progress_percent: u8,
    pub summary: Option<String>,
    pub diff: Option<String>,
    pub error: Option<String>,
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

/// The `TaskDistributor` role.
#[derive(Debug, Default)]
pub struct TaskDistributor {
    tasks: BTreeMap<Uuid, TaskView>,
    received: u64,
}

impl Actor for TaskDistributor {
    type Context = Context<Self>;
}

impl Handler<Inbound> for TaskDistributor {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        self.received += 1;
        tracing::debug!(kind = inbound.envelope.message.kind(), from = %inbound.envelope.from_node, "received");
    }
}

impl Handler<CreateTaskAttempt> for TaskDistributor {
    type Result = Result<Uuid, MarketError>;

    fn handle(&mut self, _request: CreateTaskAttempt, _ctx: &mut Self::Context) -> Self::Result {
        Err(MarketError::Unavailable)
    }
}

impl Handler<ListTasks> for TaskDistributor {
    type Result = MessageResult<ListTasks>;

    fn handle(&mut self, _request: ListTasks, _ctx: &mut Self::Context) -> Self::Result {
        let mut tasks: Vec<TaskView> = self.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        MessageResult(tasks)
    }
}

impl Handler<GetTask> for TaskDistributor {
    type Result = Option<TaskView>;

    fn handle(&mut self, request: GetTask, _ctx: &mut Self::Context) -> Self::Result {
        self.tasks.get(&request.0).cloned()
    }
}

impl Handler<CancelTask> for TaskDistributor {
    type Result = Result<TaskView, MarketError>;

    fn handle(&mut self, request: CancelTask, _ctx: &mut Self::Context) -> Self::Result {
        Err(MarketError::NotFound(request.0))
    }
}
