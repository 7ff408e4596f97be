//! `TaskExecutor`: started by the node; for now it receives the verified inbound messages of its
//! variants and records them. Its full behaviour lands with the task market.

use actix::prelude::*;

use super::peer_manager::Inbound;

/// The `TaskExecutor` role.
#[derive(Debug, Default)]
pub struct TaskExecutor {
    received: u64,
}

impl Actor for TaskExecutor {
    type Context = Context<Self>;
}

impl Handler<Inbound> for TaskExecutor {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        self.received += 1;
        tracing::debug!(kind = inbound.envelope.message.kind(), from = %inbound.envelope.from_node, "received");
    }
}

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

impl Handler<GetExecutorStatus> for TaskExecutor {
    type Result = MessageResult<GetExecutorStatus>;

    fn handle(&mut self, _request: GetExecutorStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ExecutorStatus::default())
    }
}
