//! Execution messages: reserving a slot for a bid, running a task locally, cancelling
//! runs, a run's updates, and the execution stream events the relay keeps and streams.

use std::time::Instant;

use actix::prelude::*;
use libp2p::PeerId;
use serde::Serialize;
use uuid::Uuid;

use crate::market::{ExecutionResult, LogLine, TaskPayload};
use crate::messages::{ComputeUsage, ExecutionStage, Vibe};

/// Reserve a slot for a bid to `origin` at `price` until `until`. The answer is the number
/// of slots still free once it is held (the bid carries it), or `None` when no slot is
/// free. The reservation is what admits the assignment that may follow.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<u32>")]
pub struct ReserveSlot {
    /// The task bid on (the originator's `task_id`).
    pub task_id: Uuid,
    /// The reservation lapses at this instant unless the assignment arrives first.
    pub until: Instant,
    /// The originator the bid went to; only its assignment may claim the slot.
    pub origin: PeerId,
    /// The bid's price; the assignment must agree to it.
    pub price: Vibe,
    /// The request's `content_hash`: the task that comes must be the one bid on.
    pub content_hash: String,
}

/// Run one of this node's own tasks here. False when no slot is free.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct RunLocal {
    /// The task (this node is its originator).
    pub task_id: Uuid,
    /// What to run: prompt, profile, base commit and repository.
    pub payload: TaskPayload,
}

/// Stop a run (local cancel, or the originator gave up).
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct CancelRun(pub Uuid);

/// Stop every run (the node is shutting down).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct CancelAllRuns;

/// Slots and runs, for the resources view.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ExecutorStatus {
    /// Runs in progress on this node (local and for peers).
    pub active: u32,
    /// Slots in total (`max_concurrent_tasks`).
    pub max: u32,
    /// Runs finished since midnight UTC.
    pub completed_today: u64,
}

/// Ask for [`ExecutorStatus`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "ExecutorStatus")]
pub struct GetExecutorStatus;

/// What a run reports, in plaintext (sealed on the way for remote runs).
#[derive(Debug, Clone)]
pub enum ExecutionUpdate {
    /// The run began.
    Started {
        /// Chosen by the executor for this run.
        execution_id: Uuid,
    },
    /// Heartbeat with the run's stage and completion.
    Progress {
        /// The stage the run is in now.
        stage: ExecutionStage,
        /// Completion estimate, 0..=100.
        percent: u8,
        /// What the agent is doing now (may quote code).
        action: String,
        /// Workspace paths the run has changed so far (the agent's reports and the
        /// workspace watcher's), bounded as `ProgressAction::bounded` bounds them.
        files_modified: Vec<String>,
        /// Changed paths beyond those `files_modified` names.
        files_omitted: u64,
    },
    /// A batch of log lines from the agent's stdout and stderr.
    Logs(Vec<LogLine>),
    /// The run succeeded.
    Completed {
        /// Summary, files modified and diff.
        result: ExecutionResult,
        /// What the run used.
        usage: ComputeUsage,
    },
    /// The run failed (the agent errored, timed out or could not be set up).
    Failed {
        /// The stage the run was in.
        stage: ExecutionStage,
        /// What went wrong, readable by the user.
        error: String,
        /// What the run used before it stopped.
        usage: ComputeUsage,
    },
}

/// An update of one of this node's own tasks running here.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct LocalExecution {
    /// The task (this node is its originator).
    pub task_id: Uuid,
    /// What the run reported.
    pub update: ExecutionUpdate,
}

/// One event of a task's execution, as subscribers see it.
///
/// `task_attempt_id` is the id of the run attempt the event belongs to (the executor's
/// `execution_id`; a reassigned task has one per executor), `None` before any run started.
/// It travels on the wire already, as each execution message's `execution_id`.
#[derive(Debug, Clone, Serialize, Message)]
#[rtype(result = "()")]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecutionEvent {
    /// A run of the task began.
    Started {
        /// The task (the originator's `task_id`).
        task_id: Uuid,
        /// Node id of the executor, or `local` for a run on this node.
        executor: String,
        /// The run attempt that began.
        task_attempt_id: Option<Uuid>,
    },
    /// The run's stage and completion changed.
    Progress {
        /// The task (the originator's `task_id`).
        task_id: Uuid,
        /// The stage the run is in now.
        stage: ExecutionStage,
        /// Completion estimate, 0..=100.
        percent: u8,
        /// What the agent is doing now.
        action: String,
        /// Workspace paths the run has changed so far, as the executor last reported them.
        files_modified: Vec<String>,
        /// Changed paths beyond those `files_modified` names (the report was cut).
        files_omitted: u64,
        /// The run attempt reporting.
        task_attempt_id: Option<Uuid>,
    },
    /// One log line of the run.
    Log {
        /// The task (the originator's `task_id`).
        task_id: Uuid,
        /// The line, with its stream, `log_type` and time.
        line: LogLine,
        /// The run attempt the line is from.
        task_attempt_id: Option<Uuid>,
    },
    /// The task attempt ended: completed, failed or cancelled.
    Finished {
        /// The task (the originator's `task_id`).
        task_id: Uuid,
        /// True when the task completed with a result; false on failure or cancellation.
        succeeded: bool,
        /// The result's summary on success; otherwise the reason the user reads.
        detail: String,
    },
}

/// Store and fan out an event.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordUpdate(pub ExecutionEvent);

/// Receive a task's history, then its live events.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<ExecutionEvent>")]
pub struct SubscribeExecution {
    /// The task whose events to receive.
    pub task_id: Uuid,
    /// Receives each later event of the task.
    pub subscriber: Recipient<ExecutionEvent>,
}

/// A task's stored log lines (oldest first).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<LogLine>")]
pub struct GetExecutionLogs(pub Uuid);
