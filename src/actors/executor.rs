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
