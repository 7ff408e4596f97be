//! Execution messages: reserving a slot for a bid, running a task locally, cancelling
//! runs, a run's updates, and the execution stream events the relay keeps and streams.

use std::time::Instant;

use actix::prelude::*;
use libp2p::PeerId;
use serde::Serialize;
use uuid::Uuid;

use crate::market::{ExecutionResult, LogLine, TaskPayload};
use crate::messages::{ComputeUsage, ExecutionStage, Vibe};

/// Reserve a slot for a bid to `origin` at `price` until `until`; false when no slot is
/// free. The reservation is what admits the assignment that may follow.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct ReserveSlot {
    pub task_id: Uuid,
    pub until: Instant,
    pub origin: PeerId,
    pub price: Vibe,
    /// The request's `content_hash`: the task that comes must be the one bid on.
    pub content_hash: String,
}

/// Run one of this node's own tasks here. False when no slot is free.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct RunLocal {
    pub task_id: Uuid,
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
    pub active: u32,
    pub max: u32,
    pub completed_today: u64,
}

/// Ask for [`ExecutorStatus`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "ExecutorStatus")]
pub struct GetExecutorStatus;

/// What a run reports, in plaintext (sealed on the way for remote runs).
#[derive(Debug, Clone)]
pub enum ExecutionUpdate {
    Started {
        execution_id: Uuid,
    },
    Progress {
        stage: ExecutionStage,
        percent: u8,
        action: String,
    },
    Logs(Vec<LogLine>),
    Completed {
        result: ExecutionResult,
        usage: ComputeUsage,
    },
    Failed {
        stage: ExecutionStage,
        error: String,
        usage: ComputeUsage,
    },
}

/// An update of one of this node's own tasks running here.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct LocalExecution {
    pub task_id: Uuid,
    pub update: ExecutionUpdate,
}

/// One event of a task's execution, as subscribers see it.
#[derive(Debug, Clone, Serialize, Message)]
#[rtype(result = "()")]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecutionEvent {
    Started {
        task_id: Uuid,
        executor: String,
    },
    Progress {
        task_id: Uuid,
        stage: ExecutionStage,
        percent: u8,
        action: String,
    },
    Log {
        task_id: Uuid,
        line: LogLine,
    },
    Finished {
        task_id: Uuid,
        succeeded: bool,
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
    pub task_id: Uuid,
    pub subscriber: Recipient<ExecutionEvent>,
}

/// A task's stored log lines (oldest first).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<LogLine>")]
pub struct GetExecutionLogs(pub Uuid);
