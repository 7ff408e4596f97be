//! `ResourceAccounting`: placeholder until the ledger issue lands.

use actix::prelude::*;

use super::peer_manager::Inbound;

/// The `ResourceAccounting` role.
#[derive(Debug, Default)]
pub struct ResourceAccounting {
    received: u64,
}

impl Actor for ResourceAccounting {
    type Context = Context<Self>;
}

impl Handler<Inbound> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        self.received += 1;
        tracing::debug!(kind = inbound.envelope.message.kind(), from = %inbound.envelope.from_node, "received");
    }
}
