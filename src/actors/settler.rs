//! `SettlementEngine`: the ledger as an actor. A `SyncArbiter` with one thread, because
//! rusqlite blocks and one writer serialises settlement. Every message is one ledger
//! operation committed whole (see `ledger`).
//!
//! In: `GetBalance`, `GetHistory`, `HoldEscrow`, `ReleaseEscrow` (returns the signed
//! `VibeTransaction` for the payee), `RefundEscrow`, `RecordOutcome`, `GetReputation`,
//! `Inbound` (`VibeTransaction`s paid to this node), `Mint`.

use std::path::Path;

use actix::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::panel_hub::{PanelEvent, TransactionLogEntry, TransactionType};
use super::peer_manager::Inbound;
use crate::identity::{Identity, PUBLIC_KEY_BYTES};
use crate::ledger::{HistoryQuery, Ledger, LedgerError, TransferRecord};
use crate::messages::{APNMessage, TransactionReason, Vibe, VibeTransaction};

pub use crate::ledger::Outcome;

/// The settlement engine: one ledger, one writer.
pub struct SettlementEngine {
    ledger: Ledger,
    identity: Identity,
    panel: Option<Recipient<PanelEvent>>,
}

impl Actor for SettlementEngine {
    type Context = SyncContext<Self>;
}

/// Open the ledger, mint the initial balance on first creation, start the engine. Must be
/// called inside a running actix System.
pub fn start_settlement_engine(
    db_path: &Path,
    identity: Identity,
    initial_balance: Vibe,
    panel: Option<Recipient<PanelEvent>>,
) -> Result<Addr<SettlementEngine>, LedgerError> {
    if let Some(parent) = db_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            LedgerError::Invariant(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let mut ledger = Ledger::open(db_path, &identity.public_key())?;
    if initial_balance > Vibe::ZERO {
        // A fixed id per node: restarts never mint again.
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("initial-balance:{}", ledger.own_account()).as_bytes(),
        );
        let own = ledger.own_account().to_string();
        ledger.mint(id, &own, initial_balance)?;
    }
    ledger.check_invariants()?;
    let path = db_path.to_path_buf();
    let opened = std::sync::Mutex::new(Some(ledger));
    Ok(SyncArbiter::start(1, move || {
        // The arbiter calls this once (one thread); a restart of the thread reopens.
        let taken = opened.lock().ok().and_then(|mut slot| slot.take());
        let ledger = match taken {
            Some(ledger) => ledger,
            None => match Ledger::open(&path, &identity.public_key()) {
                Ok(ledger) => ledger,
                Err(e) => panic!("ledger {} cannot be reopened: {e}", path.display()),
            },
        };
        SettlementEngine {
            ledger,
            identity: identity.clone(),
            panel: panel.clone(),
        }
    }))
}

/// This node's balance and what it has in escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalanceSummary {
    pub balance: Vibe,
    pub escrowed: Vibe,
}

/// Ask for the [`BalanceSummary`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BalanceSummary, LedgerError>")]
pub struct GetBalance;

impl Handler<GetBalance> for SettlementEngine {
    type Result = Result<BalanceSummary, LedgerError>;

    fn handle(&mut self, _request: GetBalance, _ctx: &mut Self::Context) -> Self::Result {
        Ok(BalanceSummary {
            balance: self.ledger.own_balance()?,
            escrowed: self.ledger.escrowed()?,
        })
    }
}

/// Transfers, newest first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<TransferRecord>, LedgerError>")]
pub struct GetHistory(pub HistoryQuery);

impl Handler<GetHistory> for SettlementEngine {
    type Result = Result<Vec<TransferRecord>, LedgerError>;

    fn handle(&mut self, request: GetHistory, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.history(&request.0)
    }
}

/// Move `amount` from this node into escrow `task_id` (the escrow id). Overdraft is an error
/// and writes nothing.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct HoldEscrow {
    pub transfer_id: Uuid,
    pub task_id: Uuid,
    pub amount: Vibe,
}

impl Handler<HoldEscrow> for SettlementEngine {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, request: HoldEscrow, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger
            .hold(request.task_id, Some(request.transfer_id), request.amount)
            .map(|_| ())
    }
}

/// Pay escrow `task_id` to `payee` and return the signed transaction to send it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<VibeTransaction, LedgerError>")]
pub struct ReleaseEscrow {
    pub task_id: Uuid,
    pub payee: [u8; PUBLIC_KEY_BYTES],
    pub amount: Vibe,
}

impl Handler<ReleaseEscrow> for SettlementEngine {
    type Result = Result<VibeTransaction, LedgerError>;

    fn handle(&mut self, request: ReleaseEscrow, _ctx: &mut Self::Context) -> Self::Result {
        let amount = self.ledger.release(request.task_id, &request.payee)?;
        // The payment's id is the escrow's: the payee's ledger dedupes retries by it.
        Ok(VibeTransaction::signed_with_id(
            &self.identity,
            request.task_id,
            request.payee,
            amount,
            TransactionReason::TaskExecution,
            Some(request.task_id),
            chrono::Utc::now(),
        ))
    }
}

/// Pay a peer directly (bandwidth shared with this node) and return the signed transaction.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<VibeTransaction, LedgerError>")]
pub struct PayPeer {
    pub transfer_id: Uuid,
    pub payee: [u8; PUBLIC_KEY_BYTES],
    pub amount: Vibe,
    pub reason: TransactionReason,
}

impl Handler<PayPeer> for SettlementEngine {
    type Result = Result<VibeTransaction, LedgerError>;

    fn handle(&mut self, request: PayPeer, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.pay(
            request.transfer_id,
            &request.payee,
            request.amount,
            request.reason,
        )?;
        Ok(VibeTransaction::signed_with_id(
            &self.identity,
            request.transfer_id,
            request.payee,
            request.amount,
            request.reason,
            None,
            chrono::Utc::now(),
        ))
    }
}

/// Several ledger operations in one SQLite transaction, all or none.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct SettleBatch(pub Vec<crate::ledger::LedgerOp>);

impl Handler<SettleBatch> for SettlementEngine {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, request: SettleBatch, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.apply_batch(&request.0)
    }
}

/// Return escrow `task_id` to this node.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct RefundEscrow {
    pub task_id: Uuid,
}

impl Handler<RefundEscrow> for SettlementEngine {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, request: RefundEscrow, _ctx: &mut Self::Context) -> Self::Result {
        let result = self.ledger.refund(request.task_id).map(|_| ());
        if let Err(e) = &result {
            tracing::warn!(escrow = %request.task_id, error = %e, "refund refused");
        }
        result
    }
}

/// Count what a peer did with a task.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordOutcome {
    pub peer: [u8; PUBLIC_KEY_BYTES],
    pub outcome: Outcome,
}

impl Handler<RecordOutcome> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: RecordOutcome, _ctx: &mut Self::Context) {
        if let Err(e) = self.ledger.record_outcome(&request.peer, request.outcome) {
            tracing::warn!(error = %e, "reputation not recorded");
        }
    }
}

/// A peer's reputation in [0, 1].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<f64, LedgerError>")]
pub struct GetReputation {
    pub peer: [u8; PUBLIC_KEY_BYTES],
}

impl Handler<GetReputation> for SettlementEngine {
    type Result = Result<f64, LedgerError>;

    fn handle(&mut self, request: GetReputation, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.reputation(&request.peer)
    }
}

/// Record a payment to this node (also what `Inbound` does for `VibeTransaction`s).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, LedgerError>")]
pub struct RecordIncoming(pub VibeTransaction);

impl Handler<RecordIncoming> for SettlementEngine {
    type Result = Result<bool, LedgerError>;

    fn handle(&mut self, request: RecordIncoming, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger
            .record_incoming(&request.0, &self.identity.public_key())
    }
}

impl Handler<Inbound> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        if let APNMessage::VibeTransaction(transaction) = &inbound.envelope.message {
            // The envelope's signer must be the payer: a relayed copy of someone else's
            // payment is not this sender's to deliver.
            if transaction.from.as_slice() != inbound.envelope.from_key {
                tracing::warn!(from = %inbound.envelope.from_node, "payment delivered by a node that is not its payer");
                return;
            }
            match self
                .ledger
                .record_incoming(transaction, &self.identity.public_key())
            {
                Ok(true) => {
                    if let Some(panel) = &self.panel {
                        let entry = TransactionLogEntry::new(
                            TransactionType::VibeEarned,
                            transaction.task_id,
                            Some(inbound.envelope.from_node.to_string()),
                            Some(transaction.amount),
                            format!("earned from {}", inbound.envelope.from_node),
                        );
                        let _ = panel.try_send(PanelEvent::Transaction(entry));
                    }
                    tracing::info!(amount = %transaction.amount, from = %inbound.envelope.from_node, "payment received")
                }
                Ok(false) => tracing::debug!(tx = %transaction.tx_id, "payment already recorded"),
                Err(e) => {
                    tracing::warn!(from = %inbound.envelope.from_node, error = %e, "payment refused")
                }
            }
        }
    }
}
