//! `PanelHub`: placeholder until the panel issue lands. Receives `PanelEvent`s.

use actix::prelude::*;

use crate::actors::peer_manager::{PeerInfo, RelayState};

/// Something the panel shows changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum PanelEvent {
    /// A peer appeared or changed (latency, bytes, capabilities, path).
    PeerUpdated(PeerInfo),
    /// A peer left the table (peer id).
    PeerRemoved(String),
    /// The relay connection changed state.
    RelayState(RelayState),
    /// A verified message arrived (kind, sender node id); the hub turns meaningful ones into
    /// transaction log entries.
    MessageReceived { kind: &'static str, from: String },
}

/// The `PanelHub` role.
#[derive(Debug, Default)]
pub struct PanelHub {
    events: u64,
}

impl PanelHub {
    /// A hub serving at most `websocket_clients_max` websocket clients.
    pub fn new(websocket_clients_max: usize) -> Self {
        let _ = websocket_clients_max;
        PanelHub::default()
    }
}

impl Actor for PanelHub {
    type Context = Context<Self>;
}

impl Handler<PanelEvent> for PanelHub {
    type Result = ();

    fn handle(&mut self, _event: PanelEvent, _ctx: &mut Self::Context) {
        self.events += 1;
    }
}
