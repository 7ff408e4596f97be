//! `TaskDistributor`: started by the node; for now it receives the verified inbound messages of its
//! variants and records them. Its full behaviour lands with the task market.

use actix::prelude::*;

use super::peer_manager::Inbound;

/// The `TaskDistributor` role.
#[derive(Debug, Default)]
pub struct TaskDistributor {
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
