//! `PanelHub`: the Mesh Panel's live side. Every role pushes `PanelEvent`s here; the hub
//! turns them into typed deltas for websocket sessions and keeps the transaction log (a
//! bounded ring of meaningful entries, never raw messages) for `/api/transactions` and
//! for the snapshot a new session gets.
//!
//! Sessions register with `Connect` and get a bounded queue of JSON deltas. A queue that is
//! full means the client does not keep up: the hub drops that session (its socket closes and
//! the page reconnects and starts from a fresh snapshot) instead of growing memory. The
//! number of sessions is limited.
//!
//! The log is also durable: with a store ([`PanelHub::with_store`]) every entry is handed to
//! the store's writer thread (`transaction_log.rs`, batched, never waited for), the ring is
//! filled from the store's newest entries at start and `seq` continues from the stored
//! ones; a page older than the ring is read from the store on tokio's blocking pool.
//! `FlushTransactions` answers once everything logged before it is on disk.
//!
//! Who sends what: the peer manager `PeerUpdated`, `PeerRemoved`, `RelayState`,
//! `MessageReceived`; the distributor, executor, settler and accountant `Transaction`; the
//! execution relay `Execution`.

use std::collections::{HashMap, VecDeque};

use actix::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;

use crate::transaction_log::{Opened, TransactionStore, TransactionStoreError};

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::panel::{
    BandwidthDetails, ComputeDetails, Connect, Disconnect, ExecutionDetails, FlushTransactions,
    GetHubStats, GetTransactions, HubStats, PanelEvent, TaskDistributedDetails, TransactionDetails,
    TransactionLogEntry, TransactionType, VibeEarnedDetails, VibeSpentDetails,
};

/// Transaction log entries kept.
pub const TRANSACTION_LOG_MAX: usize = 1000;
/// Deltas queued per websocket session before it counts as too slow.
pub const SESSION_QUEUE_MAX: usize = 256;

impl TransactionType {
    /// The name used in the API's `type=` filter.
    pub fn name(self) -> &'static str {
        match self {
            TransactionType::TaskDistributed => "task_distributed",
            TransactionType::TaskReceived => "task_received",
            TransactionType::ExecutionStarted => "execution_started",
            TransactionType::ExecutionCompleted => "execution_completed",
            TransactionType::ExecutionFailed => "execution_failed",
            TransactionType::BandwidthContributed => "bandwidth_contributed",
            TransactionType::ComputeContributed => "compute_contributed",
            TransactionType::VibeEarned => "vibe_earned",
            TransactionType::VibeSpent => "vibe_spent",
        }
    }
}

/// The `PanelHub` role.
#[derive(Debug, Default)]
pub struct PanelHub {
    clients_max: usize,
    sessions: HashMap<u64, mpsc::Sender<bytestring::ByteString>>,
    next_session: u64,
    log: VecDeque<TransactionLogEntry>,
    next_seq: u64,
    /// Entries older than the ring are in the store (the ring was full at some point).
    older_in_store: bool,
    store: Option<TransactionStore>,
    stats: HubStats,
}

impl PanelHub {
    /// A hub serving at most `websocket_clients_max` websocket clients.
    pub fn new(websocket_clients_max: usize) -> Self {
        PanelHub {
            clients_max: websocket_clients_max,
            ..PanelHub::default()
        }
    }

    /// A hub that also writes its log to `opened`'s store and continues from what it held.
    pub fn with_store(mut self, opened: Opened) -> Self {
        self.older_in_store = opened.recent.len() >= TRANSACTION_LOG_MAX;
        self.log = opened.recent.into_iter().collect();
        self.next_seq = opened.last_seq;
        self.store = Some(opened.store);
        self
    }

    fn push(&mut self, delta: serde_json::Value) {
        // Encoded once; each session's copy shares the bytes.
        let text = bytestring::ByteString::from(delta.to_string());
        let mut slow = Vec::new();
        for (id, sender) in &self.sessions {
            match sender.try_send(text.clone()) {
                Ok(()) => self.stats.deltas_sent += 1,
                Err(_) => slow.push(*id),
            }
        }
        for id in slow {
            // Dropping the sender closes the session's queue: it closes the socket and the
            // page reconnects to a fresh snapshot.
            self.sessions.remove(&id);
            self.stats.slow_clients_dropped += 1;
            tracing::debug!(session = id, "slow panel client dropped");
        }
        self.stats.clients = self.sessions.len();
    }
}

impl Actor for PanelHub {
    type Context = Context<Self>;
}

impl Handler<PanelEvent> for PanelHub {
    type Result = ();

    fn handle(&mut self, event: PanelEvent, _ctx: &mut Self::Context) {
        let delta = match event {
            PanelEvent::PeerUpdated(peer) => json!({ "type": "peer_updated", "peer": peer }),
            PanelEvent::PeerRemoved(peer_id) => {
                json!({ "type": "peer_removed", "peer_id": peer_id })
            }
            PanelEvent::RelayState(state) => json!({ "type": "relay", "state": state }),
            PanelEvent::MessageReceived { .. } => {
                self.stats.messages_seen += 1;
                return;
            }
            PanelEvent::Transaction(mut entry) => {
                self.next_seq += 1;
                entry.seq = self.next_seq;
                if self.log.len() >= TRANSACTION_LOG_MAX {
                    self.log.pop_front();
                    self.older_in_store = self.store.is_some();
                }
                self.log.push_back(entry.clone());
                if let Some(store) = &self.store
                    && !store.write(entry.clone())
                {
                    self.stats.transactions_unstored += 1;
                }
                json!({ "type": "transaction", "entry": entry })
            }
            PanelEvent::Execution(event) => json!({ "type": "execution", "event": event }),
        };
        self.push(delta);
    }
}

impl Handler<Connect> for PanelHub {
    type Result = Option<(u64, mpsc::Receiver<bytestring::ByteString>)>;

    fn handle(&mut self, _request: Connect, _ctx: &mut Self::Context) -> Self::Result {
        self.sessions.retain(|_, sender| !sender.is_closed());
        if self.sessions.len() >= self.clients_max.max(1) {
            return None;
        }
        self.next_session += 1;
        let (sender, receiver) = mpsc::channel(SESSION_QUEUE_MAX);
        self.sessions.insert(self.next_session, sender);
        self.stats.clients = self.sessions.len();
        Some((self.next_session, receiver))
    }
}

impl Handler<Disconnect> for PanelHub {
    type Result = ();

    fn handle(&mut self, request: Disconnect, _ctx: &mut Self::Context) {
        self.sessions.remove(&request.0);
        self.stats.clients = self.sessions.len();
    }
}

impl Handler<GetTransactions> for PanelHub {
    type Result = ResponseFuture<Result<Vec<TransactionLogEntry>, TransactionStoreError>>;

    fn handle(&mut self, request: GetTransactions, _ctx: &mut Self::Context) -> Self::Result {
        let limit = request.limit.clamp(1, TRANSACTION_LOG_MAX);
        let mut entries: Vec<TransactionLogEntry> = self
            .log
            .iter()
            .rev()
            .filter(|entry| request.before.is_none_or(|before| entry.seq < before))
            .filter(|entry| {
                request
                    .kind
                    .as_deref()
                    .is_none_or(|kind| entry.kind().name() == kind)
            })
            .take(limit)
            .cloned()
            .collect();
        // Older than the ring: the rest of the page comes from the store.
        let floor = self.log.front().map(|entry| entry.seq);
        let store = self.store.as_ref().map(|store| store.path().to_path_buf());
        let (Some(path), Some(floor), true) = (store, floor, self.older_in_store) else {
            return Box::pin(async move { Ok(entries) });
        };
        if entries.len() >= limit {
            return Box::pin(async move { Ok(entries) });
        }
        let before = request.before.map_or(floor, |before| before.min(floor));
        let wanted = limit - entries.len();
        Box::pin(async move {
            let older = tokio::task::spawn_blocking(move || {
                crate::transaction_log::read_page(
                    &path,
                    wanted,
                    Some(before),
                    request.kind.as_deref(),
                )
            })
            .await
            .map_err(|e| TransactionStoreError::Read(e.to_string()))??;
            entries.extend(older);
            Ok(entries)
        })
    }
}

impl Handler<FlushTransactions> for PanelHub {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _request: FlushTransactions, _ctx: &mut Self::Context) -> Self::Result {
        let flushed = self.store.as_ref().map(TransactionStore::flush);
        Box::pin(async move {
            if let Some(flushed) = flushed
                && flushed.await.is_err()
            {
                tracing::warn!("the transaction log writer stopped before the flush");
            }
        })
    }
}

impl Handler<GetHubStats> for PanelHub {
    type Result = MessageResult<GetHubStats>;

    fn handle(&mut self, _request: GetHubStats, _ctx: &mut Self::Context) -> Self::Result {
        self.sessions.retain(|_, sender| !sender.is_closed());
        self.stats.clients = self.sessions.len();
        MessageResult(self.stats)
    }
}
