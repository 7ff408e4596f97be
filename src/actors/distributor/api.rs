//! The distributor's API: the request that creates a task attempt, its checks, the view of
//! a task the HTTP API and CLI show (and the journal keeps), and the messages that read and
//! cancel one.

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::{ExecutionStage, TaskRequirements, Vibe};

/// Longest prompt accepted (it travels in one Noise handshake message with the task).
pub const PROMPT_BYTES_MAX: usize = 32 * 1024;
/// Longest title accepted.
pub const TITLE_CHARS_MAX: usize = 200;
/// Longest verify command.
const VERIFY_COMMAND_BYTES_MAX: usize = 4 * 1024;

/// Where the caller wants a task to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// Run only on this node; refused if the profile is missing here or no slot is free.
    Local,
    /// Always offer the task to the mesh, never run it here.
    Mesh,
    /// Run here when the profile is here and a slot is free, else offer it to the mesh.
    #[default]
    Auto,
}

/// Create a task attempt (from HTTP, CLI or tests).
#[derive(Debug, Clone, Serialize, Deserialize, Message, utoipa::ToSchema)]
#[rtype(result = "Result<Uuid, MarketError>")]
#[serde(deny_unknown_fields)]
pub struct CreateTaskAttempt {
    /// Short name for lists (at most `TITLE_CHARS_MAX` characters); when empty, the first 60
    /// characters of the prompt are shown.
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
    /// What the executing node must offer: capabilities, memory, run time limit.
    #[serde(default)]
    pub requirements: TaskRequirements,
    /// The most VIBE the creator will pay (above zero); bids above it are refused.
    pub reward: Vibe,
    /// Where the task may run (default: here if possible, else the mesh).
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
    /// The node has no task market to take the request (answered 503). The distributor
    /// itself never returns it.
    #[error("the task market is not available on this node")]
    Unavailable,
    /// No task with this id is in memory (cancel only looks there).
    #[error("no task with id {0}")]
    NotFound(Uuid),
    /// The request failed a check; the text says which.
    #[error("invalid task: {0}")]
    Invalid(String),
    /// The balance does not cover the reward (answered 409). The distributor itself never
    /// returns it.
    #[error("balance too low: {needed} VIBE needed, {available} available")]
    InsufficientBalance {
        /// VIBE the task needs.
        needed: Vibe,
        /// VIBE the balance holds.
        available: Vibe,
    },
    /// `Prefer::Local` was asked but the profile is not here or no slot is free.
    #[error("cannot run locally: {0}")]
    NoLocalCapacity(String),
    /// A cancel came after the task completed, failed or was cancelled.
    #[error("the task already finished")]
    AlreadyFinished,
}

/// Lifecycle of a task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Created: the repository is being bundled, or a local run has not started yet.
    Pending,
    /// Offered to the mesh: bids are collected, then ranked.
    Bidding,
    /// A bid won: its price is escrowed and the task is sent; the executor has not started.
    Assigned,
    /// The executor runs it (also while its result is verified and paid for).
    Running,
    /// The result was verified and the executor paid.
    Completed,
    /// Given up for good; `error` says why.
    Failed,
    /// Cancelled by the user.
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
    /// Random id given at creation; `GetTask` and `CancelTask` name the task by it.
    pub id: Uuid,
    /// The request's title, or the start of the prompt when it had none.
    pub title: String,
    /// Executor profile the task asks for.
    pub executor_profile: String,
    /// Where the attempt is in its life cycle.
    pub status: TaskStatus,
    /// The most the creator offered to pay, in VIBE.
    pub reward: Vibe,
    /// What the executor is paid (the winning bid), once assigned.
    pub price: Option<Vibe>,
    /// Node id of the executor, `local` when it runs here.
    pub assigned_node: Option<String>,
    /// Stage of the run last reported, once it reports progress.
    pub stage: Option<ExecutionStage>,
    /// Progress last reported, 0 to 100.
    pub progress_percent: u8,
    /// What the agent last said it was doing (empty reports do not clear it).
    pub current_action: Option<String>,
    /// Bids accepted in the current bid round.
    pub bids_received: usize,
    /// Executors assigned so far (1 for a local run).
    pub attempts: u32,
    /// The executor's summary of its work, once completed.
    pub summary: Option<String>,
    /// Paths the run changed: while it runs, those the executor reported so far (the
    /// agent's edits and its workspace watcher's `git status`); once completed, the
    /// result's.
    pub files_modified: Vec<String>,
    /// The run attempt in force (the executor's `execution_id`), once a run started.
    #[serde(default)]
    pub task_attempt_id: Option<Uuid>,
    /// The result's diff against the base commit, once completed.
    pub diff: Option<String>,
    /// Why the attempt failed or was cancelled.
    pub error: Option<String>,
    /// VIBE paid to the executor.
    pub paid: Option<Vibe>,
    /// When the attempt was created.
    pub created_at: DateTime<Utc>,
    /// When the view last changed.
    pub updated_at: DateTime<Utc>,
    /// When the task was first assigned to a mesh executor (its `TaskAssigned` sent,
    /// escrow held): with `created_at`, how long the market took to choose.
    #[serde(default)]
    pub assigned_at: Option<DateTime<Utc>>,
    /// When a mesh executor first reported `ExecutionStarted` for it.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// The first assignment came through the fast path: the executor's live offer matched
    /// and it accepted at once, with no bid window waited out (`market::offers`).
    #[serde(default)]
    pub via_offer: bool,
    /// Repository bytes (bundle plaintext) sent to executors for this task, all attempts:
    /// the whole history for an executor that had none of it, only the missing commits
    /// for one whose repository cache holds an earlier commit.
    #[serde(default)]
    pub repo_bytes_sent: u64,
    /// How long the last repository transfer took, from its first chunk sent to its last
    /// chunk acknowledged, in milliseconds.
    #[serde(default)]
    pub repo_transfer_ms: Option<f64>,
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

/// A journaled task as the API shows it: a task a restart cut short failed, with the reason.
pub fn journaled_view(journaled: &crate::ledger::JournaledTask) -> Option<TaskView> {
    let mut view: TaskView = serde_json::from_str(&journaled.view).ok()?;
    if let Some(reason) = &journaled.interrupted {
        view.status = TaskStatus::Failed;
        view.error = Some(reason.clone());
    }
    Some(view)
}
